"""Feature dashboards (Neuronpedia-like): top contexts with per-token shading, histogram, density, category means, statistics."""

from __future__ import annotations

import html
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, cast

import numpy as np
import pandas as pd
import torch

from monosem.cache import ActivationCache
from monosem.dataset import CATEGORIES, CONCEPTS
from monosem.paths import ModelPaths
from monosem.results import export_feature_json, export_feature_page
from monosem.sae.base import SAE
from monosem.stats import word_data
from monosem.viz.widgets import LayerFeatureWidget, figure_update


@torch.inference_mode()
def feature_token_acts(sae: SAE, arrays: Sequence[np.ndarray], features: Sequence[int], batch_size: int = 8192) -> np.ndarray:
    """Activations [n_tokens, len(features)] of the chosen features on the rows of ``arrays`` (concatenated).

    Uses the SAE's own ``encode_features`` (standard and jumprelu compute only the chosen encoder columns).
    """
    feats = torch.as_tensor(list(features), dtype=torch.long)
    out = []
    for arr in arrays:
        for i in range(0, len(arr), batch_size):
            x = torch.from_numpy(np.array(arr[i : i + batch_size], dtype=np.float32))  # a writable copy of the memory-mapped rows
            out.append(sae.encode_features(x, feats).numpy())
    return np.concatenate(out)


def token_strings(tokenizer: Any, ids: Sequence[int]) -> list[str]:
    """Each token id decoded on its own (GPT-2's leading spaces kept)."""
    return [tokenizer.decode([int(i)]) for i in ids]


def text_pieces(tokenizer: Any, text: str, ids: Sequence[int]) -> list[str]:
    """The original text cut at the tokens' character offsets, one piece per non-special token (each with the spacing
    before it), so the pieces read as the text (word pieces join into words: "ninety chairs", not "ninetychairs").
    Falls back to ``token_strings`` when the tokenizer's tokens of ``text`` are not ``ids``."""
    try:
        enc = tokenizer(text, return_offsets_mapping=True, return_special_tokens_mask=True, add_special_tokens=True)
    except (TypeError, ValueError, NotImplementedError):  # a tokenizer without offsets
        return token_strings(tokenizer, ids)
    keep = [i for i, special in enumerate(enc["special_tokens_mask"]) if not special]
    if [enc["input_ids"][i] for i in keep] != [int(i) for i in ids]:
        return token_strings(tokenizer, ids)
    pieces, end = [], 0
    for i in keep:
        lo, hi = enc["offset_mapping"][i]
        pieces.append(text[min(end, lo):hi])
        end = max(end, hi)
    if pieces:
        pieces[-1] += text[end:]
    return pieces


def dashboard_data(model_name: str, layer: int, feature: int, token_values: np.ndarray, sources: Sequence[tuple[str, ActivationCache, Sequence[str]]],
                   tokenizer: Any, df: pd.DataFrame, example_values: np.ndarray, stats: dict | None = None, n_contexts: int = 10, bins: int = 30,
                   n_quantiles: int = 4, per_quantile: int = 2) -> dict:
    """Everything the dashboard shows for one feature, as JSON-ready data (Neuronpedia-like fields).

    ``token_values`` [n_tokens]: the feature's activation on every token of ``sources`` (in order);
    ``sources``: (name, cache, texts) for the concept sentences and the background corpus;
    ``example_values`` [n_examples]: word-level activations aligned with ``df``.
    """
    spans, start = [], 0
    for name, cache, texts in sources:
        n = int(cache.tensors["token_id"].numel())
        spans.append((name, cache, texts, start, start + n))
        start += n
    def text_of(row: int) -> str:
        _, cache, texts, lo, _ = next(sp for sp in spans if sp[3] <= row < sp[4])
        return texts[int(cache.tensors["token_example"][row - lo])]

    def context(row: int) -> dict:
        name, cache, texts, lo, _ = next(sp for sp in spans if sp[3] <= row < sp[4])
        example = int(cache.tensors["token_example"][row - lo])
        rows = np.flatnonzero(cache.tensors["token_example"].numpy() == example)
        ids = cache.tensors["token_id"][rows].tolist()
        return {"source": name, "text": texts[example], "tokens": text_pieces(tokenizer, texts[example], ids),
                "values": [round(float(v), 4) for v in token_values[rows + lo]], "max_value": float(token_values[row])}

    contexts, seen = [], set()
    for row in np.argsort(-token_values, kind="stable"):
        if token_values[row] <= 0 or len(contexts) >= n_contexts:
            break
        text = text_of(int(row))
        if text not in seen:  # the same text from two examples (or two tokens of one) is shown once
            seen.add(text)
            contexts.append(context(int(row)))
    quantiles = []  # sae_vis-style: contexts sampled from intervals of the activation range, weakest first
    peak = float(token_values.max()) if len(token_values) else 0.0
    rng = np.random.default_rng(int(layer) * 100_003 + int(feature))
    for q in range(n_quantiles):
        lo_v, hi_v = peak * q / n_quantiles, peak * (q + 1) / n_quantiles
        rows = np.flatnonzero((token_values > lo_v) & (token_values <= hi_v))
        picked = []
        for row in rng.permutation(rows)[: 20 * per_quantile]:
            text = text_of(int(row))
            if text not in seen and len(picked) < per_quantile:
                seen.add(text)
                picked.append(context(int(row)))
        quantiles.append({"interval": [round(lo_v, 4), round(hi_v, 4)], "n_tokens": int(len(rows)), "contexts": picked})
    active = token_values[token_values > 0]
    counts, edges = np.histogram(active, bins=bins) if len(active) else (np.zeros(bins, int), np.linspace(0, 1, bins + 1))
    wd = word_data(example_values[:, None], df)
    wm = wd.means()[:, 0]
    category_means = {}
    for i, c in enumerate(CATEGORIES):
        vals = wm[wd.category == i]
        if len(vals):
            category_means[c] = {"mean": float(vals.mean()), "sem": float(vals.std(ddof=1) / np.sqrt(len(vals))) if len(vals) > 1 else 0.0, "n_words": int(len(vals))}
    return {"model": model_name, "layer": int(layer), "index": int(feature), "hook_name": f"blocks.{int(layer)}.hook_resid_post",
            "density": float(len(active) / max(1, len(token_values))), "n_tokens": int(len(token_values)),
            "histogram": {"bin_edges": [float(e) for e in edges], "counts": [int(c) for c in counts]},
            "top_contexts": contexts, "quantile_contexts": quantiles, "category_means": category_means,
            "stats": {k: (bool(v) if isinstance(v, (bool, np.bool_)) else float(v) if isinstance(v, (int, float, np.floating, np.integer)) else v)
                      for k, v in (stats or {}).items()}}


DENSE = 0.1  # a feature active on more than this share of tokens is flagged as dense


def _fmt_stat(v: Any) -> str:
    if isinstance(v, bool) or v is None:
        return html.escape(str(v))
    if isinstance(v, float):
        return "–" if np.isnan(v) else f"{v:,.0f}" if abs(v) >= 1000 else f"{v:.3g}"
    return html.escape(str(v))


def _context_rows(contexts: Sequence[dict], peak: float) -> str:
    rows = []
    for c in contexts:
        toks = "".join(f"<span title='{v:.3f}' style='background: rgba(220, 50, 30, {min(1.0, max(0.0, v / peak)):.2f})'>"
                       f"{html.escape(t)}</span>" for t, v in zip(c["tokens"], c["values"]))
        rows.append(f"<tr><td style='text-align:right'>{c['max_value']:.2f}</td><td>{html.escape(c['source'])}</td>"
                    f"<td style='white-space: pre-wrap'>{toks}</td></tr>")
    return "".join(rows)


def dashboard_html(data: dict) -> str:
    """HTML of a feature's dashboard: a title with a dense flag, the statistics as a table, the top contexts and contexts
    sampled across activation intervals, each token shaded by its activation (hover for the value). Every piece of
    text is HTML-escaped (a '<script>' shows as text)."""
    dense = data["density"] > DENSE
    flag = (f" <span style='background:#f59e0b;color:white;padding:1px 6px;border-radius:3px' title='active on more than "
            f"{DENSE:.0%} of tokens'>dense</span>") if dense else ""
    head = (f"<h4 style='margin:4px 0'>Layer {data['layer']}, feature {data['index']}{flag}</h4>"
            f"<div style='color:#555'>{html.escape(data['model'])}; active on {data['density']:.2%} of {data['n_tokens']:,} tokens</div>")
    stats = "".join(f"<tr><th style='text-align:left;padding-right:12px'>{html.escape(k)}</th><td>{_fmt_stat(v)}</td></tr>"
                    for k, v in data["stats"].items())
    table = f"<table style='font-size:12px;margin:6px 0'>{stats}</table>" if stats else ""
    peak = max([c["max_value"] for c in data["top_contexts"]] + [1e-9])
    header = "<tr><th>max</th><th>source</th><th style='text-align:left'>context (shade = activation)</th></tr>"
    body = f"<h5 style='margin:6px 0'>Top contexts</h5><table>{header}{_context_rows(data['top_contexts'], peak)}</table>"
    if "logits" in data:  # causal LMs: the tokens the decoder row promotes and suppresses (logit lens)
        lg = data["logits"]
        cells = "".join(f"<tr><td>{html.escape(repr(t))}</td><td>{v:+.2f}</td><td>{html.escape(repr(b))}</td><td>{w:+.2f}</td></tr>"
                        for t, v, b, w in zip(lg["top_tokens"], lg["top_scores"], lg["bottom_tokens"], lg["bottom_scores"]))
        body = (f"<h5 style='margin:6px 0'>Logits (decoder row through the unembedding)</h5><table style='font-size:12px'>"
                f"<tr><th>promoted</th><th></th><th>suppressed</th><th></th></tr>{cells}</table>") + body
    for q in data.get("quantile_contexts", []):
        if q["contexts"]:
            lo, hi = q["interval"]
            body += (f"<h5 style='margin:6px 0'>Activation {lo:.2f}-{hi:.2f} ({q['n_tokens']:,} tokens)</h5>"
                     f"<table>{_context_rows(q['contexts'], peak)}</table>")
    return f"<div style='max-width: 1100px'>{head}{table}{body}</div>"


def feature_page_html(data: dict) -> str:
    """A standalone HTML page of one feature: the dashboard and its figure, with plotly.js inlined (opens offline)."""
    figure = fig_dashboard(data).to_html(include_plotlyjs=True, full_html=False)
    title = html.escape(f"{data['model']}: layer {data['layer']}, feature {data['index']}")
    return (f"<!DOCTYPE html><html><head><meta charset='utf-8'><title>{title}</title></head>"
            f"<body style='font-family: sans-serif'>{dashboard_html(data)}{figure}</body></html>")


def fig_dashboard(data: dict):
    """Activation histogram (active tokens) and mean activation per category with standard errors over words."""
    from plotly.subplots import make_subplots

    fig = make_subplots(rows=1, cols=2, subplot_titles=["activation on active tokens", "mean per category (± s.e. over words)"])
    e = np.asarray(data["histogram"]["bin_edges"])
    fig.add_bar(x=(e[:-1] + e[1:]) / 2, y=data["histogram"]["counts"], width=np.diff(e), name="tokens", showlegend=False, row=1, col=1)
    cats = list(data["category_means"])
    fig.add_bar(x=cats, y=[data["category_means"][c]["mean"] for c in cats], error_y=dict(type="data", array=[data["category_means"][c]["sem"] for c in cats]),
                marker_color=["#c33" if c in CONCEPTS else "#999" for c in cats], showlegend=False, row=1, col=2)
    fig.update_xaxes(title_text="activation", row=1, col=1)
    fig.update_yaxes(title_text="tokens (log scale)", type="log", row=1, col=1)
    fig.update_yaxes(title_text="mean activation", row=1, col=2)
    fig.update_layout(title=dict(text=f"layer {data['layer']}, feature {data['index']}: density {data['density']:.2%}", font=dict(size=14)), height=330,
                      margin=dict(t=70))
    return fig


STAT_COLUMNS = ("score_reference", "ci_low", "ci_high", "top_category", "selective", "replication", "auroc_heldout", "n_active_words",
                "selective_category_frames", "surface_form_balance", "causal_effect", "causal_p")


def build_dashboards(model_name: str, features: dict[int, list[int]], saes: dict[int, SAE], sources_by_layer: dict[int, list[tuple[str, ActivationCache, Sequence[str]]]],
                     tokenizer: Any, df: pd.DataFrame, example_acts: dict[int, np.ndarray], tables: dict[int, pd.DataFrame],
                     model: Any = None) -> dict[int, dict[int, dict]]:
    """Precompute ``dashboard_data`` for the listed features of each layer (one encode pass per layer); with a causal LM
    ``model``, each also gets the top and bottom logits of its decoder row (``monosem.causal.logit_lens``)."""
    from monosem.causal import logit_lens
    from monosem.model import is_causal_lm

    out = {}
    for L, feats in features.items():
        values = feature_token_acts(saes[L], [c.token_array(L) for _, c, _ in sources_by_layer[L]], feats)
        stats = tables[L].set_index("feature")
        out[L] = {f: dashboard_data(model_name, L, f, values[:, j], sources_by_layer[L], tokenizer, df, example_acts[L][:, f],
                                    {k: stats.loc[f, k] for k in STAT_COLUMNS if k in stats}) for j, f in enumerate(feats)}
        if model is not None and is_causal_lm(model) and feats:
            for row in logit_lens(model, saes[L], feats, tokenizer, k=10):
                out[L][row.pop("feature")]["logits"] = row
    return out


class FeatureDashboard(LayerFeatureWidget):
    """``layer`` slider + ``feature`` selector over dashboards precomputed by ``dashboard_data``; with ``compute`` (layer,
    feature) -> data, any feature index can be shown ("feature #" + "show"). "export" writes the feature's JSON and its
    standalone HTML page."""

    def __init__(self, dashboards: dict[int, dict[int, dict]], paths: ModelPaths, compute: Callable[[int, int], dict] | None = None):
        import ipywidgets as W
        import plotly.graph_objects as go

        self.dashboards, self.paths, self.compute = dashboards, paths, compute
        self._selectors({L: list(d) for L, d in dashboards.items()})
        self.export = W.Button(description="export JSON + HTML", icon="download", layout=W.Layout(width="180px"))
        self.index = W.BoundedIntText(value=0, min=0, max=10**9, description="feature #", layout=W.Layout(width="180px"))
        self.show = W.Button(description="show", disabled=compute is None, layout=W.Layout(width="80px"))
        self.status = W.HTML()
        self.page = W.HTML()
        self.figure = go.FigureWidget()
        self.export.on_click(self._on_export)
        self.show.on_click(self._on_show)
        self.widget = W.VBox([W.HBox([self.layer, self.feature, self.index, self.show, self.export]), self.status, self.figure, self.page])
        self._on_change()

    @property
    def data(self) -> dict:
        return self.dashboards[self.layer.value][cast(int, self.feature.value)]

    def _render(self) -> None:
        fig = fig_dashboard(self.data)
        with figure_update(self.figure):
            self.figure.data = []
            self.figure.layout = fig.layout
            for tr in fig.data:
                self.figure.add_trace(tr)
        self.page.value = dashboard_html(self.data)

    def show_feature(self, layer: int, feature: int) -> dict:
        """Compute (once) and select the dashboard of any ``feature`` of ``layer``."""
        if self.compute is None:
            raise ValueError("this dashboard shows precomputed features only: pass compute=... to show any feature")
        if feature not in self.dashboards[layer]:
            self.dashboards[layer][feature] = self.compute(layer, feature)
            self._options[layer] = [*self._options[layer], feature]
        self.layer.value = layer
        self.feature.options = list(self._options[layer])
        self.feature.value = feature
        return self.dashboards[layer][feature]

    def _on_show(self, button: object = None) -> None:
        try:
            self.show_feature(self.layer.value, int(self.index.value))
            self.status.value = ""
        except (IndexError, KeyError, ValueError) as exc:
            self.status.value = f"<span style='color:#b91c1c'>{html.escape(str(exc))}</span>"

    def _on_export(self, button: object = None) -> Path:
        path = export_feature_json(self.paths, self.data)
        page = export_feature_page(self.paths, self.data, feature_page_html(self.data))
        self.status.value = f"saved {html.escape(str(path))} and {html.escape(str(page))}"
        return path
