"""Feature dashboards (Neuronpedia-like): top contexts with per-token shading, histogram, density, category means, statistics."""

from __future__ import annotations

import html
from collections.abc import Sequence
from pathlib import Path
from typing import Any, cast

import numpy as np
import pandas as pd
import torch

from monosem.cache import ActivationCache
from monosem.dataset import CATEGORIES, CONCEPTS
from monosem.paths import ModelPaths
from monosem.results import export_feature_json
from monosem.sae.base import SAE
from monosem.stats import word_data
from monosem.viz.widgets import LayerFeatureWidget


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


def dashboard_data(model_name: str, layer: int, feature: int, token_values: np.ndarray, sources: Sequence[tuple[str, ActivationCache, Sequence[str]]],
                   tokenizer: Any, df: pd.DataFrame, example_values: np.ndarray, stats: dict | None = None, n_contexts: int = 10, bins: int = 30) -> dict:
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
    contexts, seen = [], set()
    for row in np.argsort(-token_values, kind="stable"):
        if token_values[row] <= 0 or len(contexts) >= n_contexts:
            break
        name, cache, texts, lo, _ = next(sp for sp in spans if sp[3] <= row < sp[4])
        example = int(cache.tensors["token_example"][row - lo])
        if (name, example) in seen:
            continue
        seen.add((name, example))
        rows = np.flatnonzero(cache.tensors["token_example"].numpy() == example)
        ids = cache.tensors["token_id"][rows].tolist()
        contexts.append({"source": name, "text": texts[example], "tokens": token_strings(tokenizer, ids),
                         "values": [round(float(v), 4) for v in token_values[rows + lo]], "max_value": float(token_values[row])})
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
            "top_contexts": contexts, "category_means": category_means,
            "stats": {k: (float(v) if isinstance(v, (int, float, np.floating, np.integer)) and not isinstance(v, bool) else v) for k, v in (stats or {}).items()}}


def dashboard_html(data: dict) -> str:
    """HTML of a feature's dashboard: header with statistics and the top contexts with each token
    shaded by its activation. Every piece of text is HTML-escaped (a '<script>' shows as text)."""
    st = data["stats"]
    shown = ", ".join(f"{k} = {v:.3g}" if isinstance(v, float) else f"{k} = {html.escape(str(v))}" for k, v in st.items())
    head = (f"<h4>{html.escape(data['model'])}, layer {data['layer']}, feature {data['index']}</h4>"
            f"<p>density {data['density']:.2%} of {data['n_tokens']:,} tokens; {shown}</p>")
    rows = []
    for c in data["top_contexts"]:
        peak = max(c["max_value"], 1e-9)
        toks = "".join(f"<span title='{v:.3f}' style='background: rgba(220, 50, 30, {min(1.0, max(0.0, v / peak)):.2f})'>"
                       f"{html.escape(t)}</span>" for t, v in zip(c["tokens"], c["values"]))
        rows.append(f"<tr><td>{c['max_value']:.2f}</td><td>{html.escape(c['source'])}</td><td style='font-family: monospace'>{toks}</td></tr>")
    return head + "<table><tr><th>max</th><th>source</th><th>context (shade = activation)</th></tr>" + "".join(rows) + "</table>"


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
    fig.update_yaxes(title_text="tokens", row=1, col=1)
    fig.update_yaxes(title_text="mean activation", row=1, col=2)
    fig.update_layout(title=f"{data['model']}, layer {data['layer']}, feature {data['index']}: density {data['density']:.2%}", height=330)
    return fig


STAT_COLUMNS = ("score_reference", "ci_low", "ci_high", "top_category", "selective", "replication", "auroc_heldout", "n_active_words",
                "selective_category_frames", "surface_form_balance", "causal_effect", "causal_p")


def build_dashboards(model_name: str, features: dict[int, list[int]], saes: dict[int, SAE], sources_by_layer: dict[int, list[tuple[str, ActivationCache, Sequence[str]]]],
                     tokenizer: Any, df: pd.DataFrame, example_acts: dict[int, np.ndarray], tables: dict[int, pd.DataFrame]) -> dict[int, dict[int, dict]]:
    """Precompute ``dashboard_data`` for the listed features of each layer (one encode pass per layer)."""
    out = {}
    for L, feats in features.items():
        values = feature_token_acts(saes[L], [c.token_array(L) for _, c, _ in sources_by_layer[L]], feats)
        stats = tables[L].set_index("feature")
        out[L] = {f: dashboard_data(model_name, L, f, values[:, j], sources_by_layer[L], tokenizer, df, example_acts[L][:, f],
                                    {k: stats.loc[f, k] for k in STAT_COLUMNS if k in stats}) for j, f in enumerate(feats)}
    return out


class FeatureDashboard(LayerFeatureWidget):
    """``layer`` slider + ``feature`` selector + export button over dashboards precomputed by ``dashboard_data``."""

    def __init__(self, dashboards: dict[int, dict[int, dict]], paths: ModelPaths):
        import ipywidgets as W
        import plotly.graph_objects as go

        self.dashboards, self.paths = dashboards, paths
        self._selectors({L: list(d) for L, d in dashboards.items()})
        self.export = W.Button(description="export JSON", icon="download")
        self.status = W.HTML()
        self.page = W.HTML()
        self.figure = go.FigureWidget()
        self.export.on_click(self._on_export)
        self.widget = W.VBox([W.HBox([self.layer, self.feature, self.export]), self.status, self.figure, self.page])
        self._on_change()

    @property
    def data(self) -> dict:
        return self.dashboards[self.layer.value][cast(int, self.feature.value)]

    def _render(self) -> None:
        fig = fig_dashboard(self.data)
        with self.figure.batch_update():
            self.figure.data = []
            self.figure.layout = fig.layout
            for tr in fig.data:
                self.figure.add_trace(tr)
        self.page.value = dashboard_html(self.data)

    def _on_export(self, button: object = None) -> Path:
        path = export_feature_json(self.paths, self.data)
        self.status.value = f"saved {html.escape(str(path))}"
        return path
