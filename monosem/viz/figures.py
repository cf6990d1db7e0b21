"""The plotly figures of the series: loss curves, norms, Figure 1-3, preset comparison and the bases comparison."""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from monosem.dataset import CONCEPTS
from monosem.selectivity import check_threshold


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
    """Box plot of per-token residual-stream L2 norms per layer."""
    import plotly.graph_objects as go

    fig = go.Figure([go.Box(y=v, name=f"layer {L}", boxpoints=False) for L, v in norms.items()])
    fig.update_layout(title=f"{model_name}: residual-stream norm per token, by layer", yaxis_title="L2 norm", xaxis_title="layer")
    return fig


def selectivity_hist_data(scores: np.ndarray, threshold: float, bins: int = 20) -> dict[str, Any]:
    """Pure: histogram counts of scores in [0, 1] and the count above ``threshold``."""
    threshold = check_threshold(threshold)
    counts, edges = np.histogram(scores, bins=bins, range=(0, 1))
    return {"x": ((edges[:-1] + edges[1:]) / 2).tolist(), "y": counts.tolist(), "width": 1 / bins, "n_above": int((np.asarray(scores) > threshold).sum())}


def fig_selectivity(tables: dict[int, pd.DataFrame], threshold: float, model_name: str, alpha: float = 0.05):
    """Figure 1: distribution of selectivity scores per layer with the threshold line (significant units overlaid)."""
    from plotly.subplots import make_subplots

    layers = list(tables)
    fig = make_subplots(rows=1, cols=len(layers), subplot_titles=[f"layer {L}" for L in layers], shared_yaxes=True)
    for j, L in enumerate(layers, start=1):
        d = selectivity_hist_data(tables[L]["score"].to_numpy(), threshold)
        fig.add_bar(x=d["x"], y=d["y"], width=d["width"], name="all features", marker_color="#9ab", showlegend=j == 1, legendgroup="all", row=1, col=j)
        if "q" in tables[L]:
            ds = selectivity_hist_data(tables[L].loc[tables[L]["q"] < alpha, "score"].to_numpy(), threshold)
            fig.add_bar(x=ds["x"], y=ds["y"], width=ds["width"], name=f"q < {alpha:g}", marker_color="#c33", showlegend=j == 1, legendgroup="sig", row=1, col=j)
        fig.add_vline(x=threshold, line_dash="dash", line_color="black", row=1, col=j)  # pyright: ignore[reportArgumentType]
        fig.update_xaxes(title_text="score (max/sum of concept means)", range=[0, 1], row=1, col=j)
    fig.update_yaxes(title_text="number of features", row=1, col=1)
    fig.update_layout(barmode="overlay", title=f"Figure 1 - {model_name}: SAE feature selectivity per layer (threshold {threshold:g})")
    return fig


def fig_concept_means(tables: dict[int, pd.DataFrame], features: dict[int, list[int]], model_name: str):
    """Figure 3: mean activation per concept for the chosen features of each layer (grouped bars)."""
    from plotly.subplots import make_subplots

    layers = list(tables)
    fig = make_subplots(rows=len(layers), cols=1, subplot_titles=[f"layer {L}" for L in layers])
    colors = dict(zip(CONCEPTS, ("#1f77b4", "#d62728", "#2ca02c", "#ff7f0e")))
    for i, L in enumerate(layers, start=1):
        t = tables[L].set_index("feature").loc[features[L]] if features[L] else tables[L].iloc[:0].set_index("feature")
        for c in CONCEPTS:
            fig.add_bar(x=[f"f{f}" for f in t.index], y=t[f"mean_{c}"], name=c, marker_color=colors[c], legendgroup=c, showlegend=i == 1, row=i, col=1)
        fig.update_yaxes(title_text="mean activation", row=i, col=1)
    fig.update_layout(barmode="group", height=260 * len(layers), title=f"Figure 3 - {model_name}: mean activation per concept of the selected features")
    return fig


def fig_word_heatmap(wm: pd.DataFrame, features: list[int], words: list[str], model_name: str, layer: int, title: str = "Figure 2"):
    """Figure 2: heatmap of mean activation, features (rows) x words (columns)."""
    import plotly.graph_objects as go

    z = wm.loc[words, features].T.to_numpy()
    fig = go.Figure(go.Heatmap(z=z, x=words, y=[f"f{f}" for f in features], colorscale="Viridis", zmin=0, colorbar=dict(title="activation")))
    fig.update_layout(title=f"{title} - {model_name}, layer {layer}: mean SAE activation per word", xaxis_title="word", yaxis_title="feature")
    return fig


def fig_preset_comparison(metrics: pd.DataFrame, model_name: str):
    """Sparsity (L0) vs. reconstruction (FVE) per preset and layer; ``metrics`` has columns preset, layer, l0, fve."""
    import plotly.express as px

    fig = px.scatter(metrics, x="l0", y="fve", color="preset", symbol="preset", text="layer", log_x=True,
                     labels={"l0": "L0: active features per token (log scale)", "fve": "fraction of variance explained"})
    fig.update_traces(textposition="top center", marker_size=11)
    fig.update_layout(title=f"{model_name}: SAE presets, sparsity vs. reconstruction (labels: layer)")
    return fig


def fig_bases(counts: pd.DataFrame, model_name: str, threshold: float, alpha: float):
    """'Is it real?': fraction of units significantly monosemantic per basis and layer (grouped bars)."""
    import plotly.express as px

    fig = px.bar(counts, x="layer", y="fraction_significant", color="basis", barmode="group",
                 labels={"fraction_significant": f"fraction of units with score > {threshold:g} and q < {alpha:g}", "layer": "layer"})
    fig.update_layout(title=f"{model_name}: are SAE features more monosemantic than the model's own units?", yaxis_tickformat=".1%")
    fig.update_xaxes(type="category")
    return fig
