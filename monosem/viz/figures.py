"""The plotly figures of the series: loss curves, norms, Figure 1-3, preset comparison and the bases comparison."""

from __future__ import annotations

import re
from typing import Any

import numpy as np
import pandas as pd

from monosem.dataset import CATEGORIES
from monosem.selectivity import check_threshold

EXPORT_RENDERER = "plotly_mimetype+monosem_notebook"
MATHJAX_FROM_CDN = re.compile(r'<script src="https?://[^"]*mathjax[^"]*"></script>', re.I)


def _offline_notebook_renderer():
    """plotly's ``notebook`` renderer (plotly.js inlined once per notebook) without the MathJax script that it loads
    from a CDN beside every figure: the series' figures have no LaTeX, and an export must make no network request."""
    import plotly.io as pio
    from plotly.io._base_renderers import NotebookRenderer

    class OfflineNotebookRenderer(NotebookRenderer):
        def to_mimebundle(self, fig_dict):
            bundle = super().to_mimebundle(fig_dict)
            bundle["text/html"] = MATHJAX_FROM_CDN.sub("", bundle["text/html"])
            return bundle

    return OfflineNotebookRenderer(config=dict(pio.renderers["notebook"].config))


def use_export_renderer() -> None:
    """Make ``fig.show()`` emit the plotly JSON (JupyterLab draws it) *and* an HTML fallback, with plotly.js inlined once
    per notebook and no MathJax from a CDN, so that nbconvert's HTML exports show every figure with no request to the network."""
    import plotly.io as pio

    if "monosem_notebook" not in pio.renderers:
        pio.renderers["monosem_notebook"] = _offline_notebook_renderer()
    if pio.renderers.default != EXPORT_RENDERER:
        pio.renderers.default = EXPORT_RENDERER


use_export_renderer()


def fig_loss_curves(histories: dict[int, list[dict]], model_name: str):
    """Per-step training loss (total, MSE, L1 term) per layer, log y axis."""
    import plotly.graph_objects as go

    fig = go.Figure()
    for L, hist in histories.items():
        steps = [h["step"] for h in hist]
        fig.add_scatter(x=steps, y=[h["loss"] for h in hist], name=f"layer {L}: loss", mode="lines")
        fig.add_scatter(x=steps, y=[h["mse"] for h in hist], name=f"layer {L}: MSE", mode="lines", line=dict(dash="dot"))
    fig.update_layout(title=f"{model_name}: SAE training loss per step", xaxis_title="step", yaxis_title="loss (log scale)", yaxis_type="log")
    return fig


def fig_norms(norms: dict[int, np.ndarray], model_name: str):
    """Box plot of per-token residual-stream L2 norms per layer, with the outliers (beyond 1.5 IQR) drawn as points."""
    import plotly.graph_objects as go

    fig = go.Figure([go.Box(y=v, name=f"layer {L}", boxpoints="outliers", marker=dict(size=3)) for L, v in norms.items()])
    fig.update_layout(title=f"{model_name}: residual-stream norm per token, by layer", yaxis_title="L2 norm", xaxis_title="layer")
    return fig


def selectivity_hist_data(scores: np.ndarray, threshold: float, bins: int = 20) -> dict[str, Any]:
    """Pure: histogram counts of scores in [0, 1] and the count above ``threshold``."""
    threshold = check_threshold(threshold)
    counts, edges = np.histogram(scores, bins=bins, range=(0, 1))
    return {"x": ((edges[:-1] + edges[1:]) / 2).tolist(), "y": counts.tolist(), "width": 1 / bins, "n_above": int((np.asarray(scores) > threshold).sum())}


def fig_selectivity(tables: dict[int, pd.DataFrame], threshold: float, model_name: str):
    """Figure 1: distribution of the reference score per layer with the threshold line, selective units (final label) overlaid."""
    from plotly.subplots import make_subplots

    layers = list(tables)
    fig = make_subplots(rows=1, cols=len(layers), subplot_titles=[f"layer {L}" for L in layers], shared_yaxes=True, horizontal_spacing=0.03)
    for j, L in enumerate(layers, start=1):
        t = tables[L]
        d = selectivity_hist_data(t["score_reference"].to_numpy(), threshold)
        fig.add_bar(x=d["x"], y=d["y"], width=d["width"], name="all features", marker_color="#9ab", showlegend=j == 1, legendgroup="all", row=1, col=j)
        ds = selectivity_hist_data(t.loc[t["selective"].to_numpy(), "score_reference"].to_numpy(), threshold)
        fig.add_bar(x=ds["x"], y=ds["y"], width=ds["width"], name="selective (final label)", marker_color="#c33", showlegend=j == 1, legendgroup="sel",
                    row=1, col=j)
        fig.add_vline(x=threshold, line_dash="dash", line_color="black", row=1, col=j)  # pyright: ignore[reportArgumentType]
        fig.update_xaxes(range=[0, 1], row=1, col=j)
    fig.update_yaxes(type="log", row=1, col=1)  # shared: the few selective features stay visible next to bins of hundreds
    fig.update_yaxes(title_text="number of features (log scale)", row=1, col=1)
    fig.update_layout(barmode="overlay", title=f"Figure 1 - {model_name}: reference score per layer (dashed: threshold {threshold:g})",
                      legend=dict(orientation="h", y=-0.2))
    fig.add_annotation(text="reference score = max / sum of the 4 concept means", x=0.5, y=-0.12, xref="paper", yref="paper", showarrow=False)
    return fig


CATEGORY_COLORS = dict(zip(CATEGORIES, ("#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#c7c7c7", "#a5a5a5", "#8c8c8c", "#6b6b6b")))


def fig_concept_means(tables: dict[int, pd.DataFrame], features: dict[int, list[int]], model_name: str):
    """Figure 3: mean activation per category (4 concepts in colour, 4 controls in grey) of the chosen features of each layer."""
    from plotly.subplots import make_subplots

    layers = list(tables)
    fig = make_subplots(rows=len(layers), cols=1, subplot_titles=[f"layer {L}" for L in layers])
    for i, L in enumerate(layers, start=1):
        t = tables[L].set_index("feature").loc[features[L]] if features[L] else tables[L].iloc[:0].set_index("feature")
        for c in CATEGORIES:
            fig.add_bar(x=[f"f{f}" for f in t.index], y=t[f"mean_{c}"], name=c, marker_color=CATEGORY_COLORS[c], legendgroup=c, showlegend=i == 1, row=i, col=1)
        if not len(t):
            fig.add_annotation(text="no feature to show", xref=f"x{i if i > 1 else ''} domain", yref=f"y{i if i > 1 else ''} domain", x=0.5, y=0.5,
                               showarrow=False)
        fig.update_yaxes(title_text="mean activation", row=i, col=1)
    fig.update_layout(barmode="group", height=260 * len(layers),
                      title=f"Figure 3 - {model_name}: mean activation per category (neutral frames) of the top features")
    return fig


def fig_word_heatmap(wms: dict[int, pd.DataFrame], features: dict[int, list[int]], words: list[str], concept_of: Any, model_name: str,
                     title: str = "Figure 2"):
    """Figure 2: mean activation of each layer's top features (rows, best at the top) on ``words`` (columns, grouped by
    their category ``concept_of[word]`` in CATEGORIES order); one figure, a menu picks the layer."""
    import plotly.graph_objects as go

    order = sorted(words, key=lambda w: (CATEGORIES.index(concept_of[w]) if concept_of[w] in CATEGORIES else len(CATEGORIES), words.index(w)))
    x = [[concept_of[w] for w in order], order]  # a two-level axis: category, then word
    layers = list(wms)
    fig = go.Figure()
    for i, L in enumerate(layers):
        z = wms[L].loc[order, features[L]].T.to_numpy()
        fig.add_heatmap(z=z, x=x, y=[f"f{f}" for f in features[L]], colorscale="Viridis", zmin=0, colorbar=dict(title="activation"),
                        visible=i == 0, name=f"layer {L}", hovertemplate="%{x}<br>%{y}: %{z:.3f}<extra></extra>")
    buttons = [dict(label=f"layer {L}", method="update",
                    args=[{"visible": [j == i for j in range(len(layers))]}, {"title.text": f"{title} - {model_name}, layer {L}: mean SAE activation per word"}])
               for i, L in enumerate(layers)]
    fig.update_layout(title=f"{title} - {model_name}, layer {layers[0]}: mean SAE activation per word", xaxis_title="category / word",
                      yaxis=dict(title="feature (best first)", autorange="reversed", type="category"),
                      updatemenus=[dict(buttons=buttons, direction="down", x=1.0, xanchor="right", y=1.15, yanchor="top")] if len(layers) > 1 else [])
    return fig


def fig_preset_comparison(metrics: pd.DataFrame, model_name: str):
    """Sparsity (L0) vs. reconstruction (FVE) on held-out tokens per preset and layer; ``metrics`` has columns preset, layer, l0, fve_heldout."""
    import plotly.express as px

    fig = px.scatter(metrics, x="l0", y="fve_heldout", color="preset", symbol="preset", text="layer", log_x=True,
                     labels={"l0": "L0: active features per token (log scale)", "fve_heldout": "fraction of variance explained (held-out tokens)"})
    fig.update_traces(textposition="top center", marker_size=11)
    fig.update_layout(title=f"{model_name}: SAE presets, sparsity vs. reconstruction (labels: layer)")
    return fig


BASIS_COLORS = {"reference": "#d62728", "l1": "#ff7f0e", "topk": "#2ca02c", "matryoshka": "#9467bd", "residual": "#1f77b4", "mlp": "#17becf"}


def basis_style(name: str) -> dict[str, Any]:
    """Bar style of a scorecard basis: one colour per SAE preset or model unit; an untrained SAE in its preset's colour
    with stripes, the random-weight model's bases in their colour with crosses, faded."""
    lower = name.lower()
    kind = next((k for k in ("reference", "matryoshka", "topk", "l1") if f"({k})" in lower), "mlp" if "mlp" in lower else "residual")
    shape = "x" if "random-weight" in lower else "/" if "untrained" in lower else ""
    return {"marker_color": BASIS_COLORS[kind], "marker_pattern_shape": shape, "opacity": 0.55 if shape == "x" else 1.0}


def fig_scorecard(scorecard: pd.DataFrame, model_name: str):
    """'Is it real?': per basis and layer, the fraction of active units that are selective and the k=5 sparse-probe AUROC."""
    from plotly.subplots import make_subplots

    fig = make_subplots(rows=1, cols=2, subplot_titles=["selective units / active units (final label)", "5-sparse probe AUROC on held-out words"],
                        horizontal_spacing=0.08)
    for basis, rows in scorecard.groupby("basis", sort=False):
        layers = [str(L) for L in rows["layer"]]
        style = basis_style(str(basis))
        fig.add_bar(x=layers, y=rows["fraction_selective_active"], name=str(basis), legendgroup=str(basis), **style, row=1, col=1)
        fig.add_bar(x=layers, y=rows["probe_k5_auroc"], name=str(basis), legendgroup=str(basis), showlegend=False, **style, row=1, col=2)
    fig.update_xaxes(title_text="layer", type="category")
    fig.update_yaxes(tickformat=".1%", row=1, col=1)
    fig.update_yaxes(range=[0.5, 1], row=1, col=2)
    fig.update_layout(barmode="group", height=420, title=f"{model_name}: are SAE features more concept-selective than the model's own units?",
                      legend=dict(orientation="h", y=-0.25))
    return fig


def fig_headline(headline: pd.DataFrame, model_name: str):
    """The paired answer: per metric (a panel each), layer and comparison (``against``: a colour each), the SAE-minus-other
    difference with its 95% CI over words (error bars) and the range over training seeds (a band); the dashed line is no
    difference."""
    import plotly.graph_objects as go
    from plotly.subplots import make_subplots

    metrics = list(dict.fromkeys(headline["metric"]))
    against = list(dict.fromkeys(headline["against"])) if "against" in headline else [""]
    colours = ["#d62728", "#1f77b4", "#2ca02c", "#9467bd"]
    fig = make_subplots(rows=1, cols=len(metrics), subplot_titles=metrics, horizontal_spacing=0.05)
    for j, metric in enumerate(metrics, start=1):
        for i, other in enumerate(against):
            rows = headline[(headline["metric"] == metric) & ((headline["against"] == other) if "against" in headline else True)]
            x = rows["layer"].astype(float) + (i - (len(against) - 1) / 2) * 0.2
            colour = colours[i % len(colours)]
            fig.add_trace(go.Bar(x=x, y=rows["seed_max"] - rows["seed_min"], base=rows["seed_min"], width=0.12, marker_color=colour, opacity=0.25,
                                 name=f"range over seeds (vs {other})", showlegend=j == 1, legendgroup=f"seeds{i}"), row=1, col=j)
            fig.add_trace(go.Scatter(x=x, y=rows["difference"], mode="markers", marker=dict(color=colour, size=8),
                                     error_y=dict(type="data", symmetric=False, array=rows["ci_high"] - rows["difference"],
                                                  arrayminus=rows["difference"] - rows["ci_low"]),
                                     name=f"SAE − {other} (95% CI over words)", showlegend=j == 1, legendgroup=f"diff{i}"), row=1, col=j)
        fig.add_hline(y=0, line_dash="dash", line_color="black", row=1, col=j)  # pyright: ignore[reportArgumentType]
        fig.update_xaxes(title_text="layer", tickvals=sorted(set(headline["layer"])), row=1, col=j)
    fig.update_yaxes(title_text="difference (SAE − other basis)", row=1, col=1)
    fig.update_layout(title=f"{model_name}: are SAE features more monosemantic? (paired over words, per metric and layer)",
                      height=460, width=260 * len(metrics) + 160, barmode="overlay", legend=dict(orientation="h", y=-0.25))
    return fig


SWEEP_PANELS = (("fve_heldout", "held-out FVE", False), ("fraction_specific", "share specific", True), ("specificity", "mean specificity", True),
                ("sensitivity", "best sensitivity", True), ("coverage_k5", "coverage, k = 5", True), ("probe_k1", "k = 1 probe AUROC", True),
                ("specificity_corpus", "natural-text specificity", True), ("fidelity", "downstream fidelity", False))


def fig_sweep(table: pd.DataFrame, title: str, columns: int = 4):
    """The budget sweep (``monosem.sweep``): per panel, a metric against training tokens (log axis), one line per width;
    FVE and fidelity as they are (the dotted line: FVE 0.9), the others as the SAE-minus-neurons difference with its 95% CI
    (error bars; the dashed line: no difference). One block of panels per layer."""
    import plotly.graph_objects as go
    from plotly.subplots import make_subplots

    layers = sorted(set(table["layer"]))
    per_layer = -(-len(SWEEP_PANELS) // columns)
    titles = [f"{name}{' − neurons' if diff else ''}" + (f" (layer {L})" if len(layers) > 1 else "") for L in layers for _, name, diff in SWEEP_PANELS]
    fig = make_subplots(rows=per_layer * len(layers), cols=columns, subplot_titles=titles, horizontal_spacing=0.06, vertical_spacing=0.16 / len(layers))
    widths = sorted(set(table["width"]))
    colours = ["#9ecae1", "#4292c6", "#2171b5", "#08306b", "#000000"]
    for li, L in enumerate(layers):
        for p, (key, _, diff) in enumerate(SWEEP_PANELS):
            r, c = li * per_layer + p // columns + 1, p % columns + 1
            for i, w in enumerate(widths):
                rows = table.loc[(table["layer"] == L) & (table["width"] == w)].sort_values(by="train_tokens")
                y = rows[f"{key}_diff"] if diff else rows[key]
                error = dict(type="data", symmetric=False, array=rows[f"{key}_hi"] - y, arrayminus=y - rows[f"{key}_lo"]) if diff else None
                shift = 1 + 0.06 * (i - (len(widths) - 1) / 2)  # side by side, so the error bars do not hide each other
                fig.add_trace(go.Scatter(x=rows["train_tokens"] * shift, y=y, mode="lines+markers", error_y=error, marker=dict(color=colours[i % len(colours)]),
                                         line=dict(color=colours[i % len(colours)]), name=f"d_sae = {w:g} × d_model", legendgroup=f"w{w}",
                                         showlegend=li == 0 and p == 0), row=r, col=c)
            if diff:
                fig.add_hline(y=0, line_dash="dash", line_color="black", row=r, col=c)  # pyright: ignore[reportArgumentType]
            elif key == "fve_heldout":
                fig.add_hline(y=0.9, line_dash="dot", line_color="grey", row=r, col=c)  # pyright: ignore[reportArgumentType]
            fig.update_xaxes(type="log", title_text="training tokens", title_standoff=2, row=r, col=c)
    fig.update_layout(title=title, height=300 * per_layer * len(layers) + 140, width=290 * columns + 80, legend=dict(orientation="h", y=-0.12),
                      font=dict(size=11), margin=dict(t=90))
    return fig
