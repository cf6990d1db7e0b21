"""The notebook widgets (selectivity explorer, word explorer, layer/feature selectors); callbacks only call pure view functions."""

from __future__ import annotations

import html
from collections.abc import Iterator
from contextlib import contextmanager
from copy import deepcopy
from typing import Any, cast

import pandas as pd

from monosem.config import MonosemError
from monosem.selectivity import check_threshold, monosemantic, top_words
from monosem.viz.figures import selectivity_hist_data


@contextmanager
def figure_update(figure: Any) -> Iterator[Any]:
    """Batch the edits of a plotly ``FigureWidget``, then store the edited figure in the widget's own state, as plotly
    does when a figure widget is displayed alone. Edits reach the browser as messages that saved widget state does not
    keep, so without this an HTML export (or "save widget state") would draw a figure inside a box of widgets as it
    was when first shown: empty bars, no title. Not inside another ``batch_update`` (its edits are sent at its end)."""
    if getattr(figure, "_in_batch_mode", False):
        raise ValueError("figure_update inside figure.batch_update(): its edits are sent when the outer batch ends; "
                         "use figure_update alone")
    try:
        with figure.batch_update():
            yield figure
    finally:  # plotly sends the edits made before an exception too
        figure._widget_data = deepcopy(figure._data)
        figure._widget_layout = deepcopy(figure._layout_obj._props)


def explorer_view(tables: dict[int, pd.DataFrame], layer: int, threshold: float, max_listed: int = 30) -> dict[str, Any]:
    """Pure: what the selectivity explorer shows for ``layer`` and ``threshold``: stacked histograms of the reference
    score for units at or below the threshold, above it but not selective, and selective (the final label, which
    does not depend on the threshold); the count above the threshold (reference criterion), the selective count,
    and the list of units above the threshold."""
    if layer not in tables:
        raise MonosemError(f"layer {layer} has no results (layers {list(tables)})")
    threshold = check_threshold(threshold)
    t = tables[layer]
    mono = monosemantic(t, threshold)
    score = t["score_reference"].to_numpy()
    selective = t["selective"].to_numpy()
    groups = {"at or below threshold, not selective": (score <= threshold) & ~selective, "above threshold, not selective": (score > threshold) & ~selective,
              "selective (final label)": selective}
    hists = {name: selectivity_hist_data(score[mask], threshold) for name, mask in groups.items()}
    cols = "<th>feature</th><th>reference score</th><th>top category (8)</th><th>selective</th><th>replication</th><th>held-out AUROC</th>"
    rows = "".join(
        f"<tr><td>{int(r['feature'])}</td><td>{r['score_reference']:.3f}</td><td>{html.escape(str(r['top_category']))}</td>"
        f"<td>{'yes' if r['selective'] else 'no'}</td><td>{r['replication']:.2f}</td><td>{r['auroc_heldout']:.2f}</td></tr>"
        for r in mono.head(max_listed).to_dict(orient="records"))
    n_selective = int(selective.sum())
    head = (f"<b class='monosem-count'>layer {layer}, threshold {threshold:.2f}: {len(mono)} features above the threshold (reference criterion); "
            f"{n_selective} selective (final label)</b>")
    return {
        "hists": hists,
        "count": len(mono),
        "count_selective": n_selective,
        "indices": mono["feature"].astype(int).tolist(),
        "html": f"{head}<table><tr>{cols}</tr>{rows}</table>" + (f"<i>... {len(mono) - max_listed} more</i>" if len(mono) > max_listed else ""),
    }


class SelectivityExplorer:
    """Sliders ``layer`` and ``threshold`` over precomputed tables; callbacks only call ``explorer_view``."""

    COLORS = ("#bbb", "#69c", "#c33")

    def __init__(self, tables: dict[int, pd.DataFrame], model_name: str, threshold: float = 0.6):
        import ipywidgets as W
        import plotly.graph_objects as go

        self.tables, self.model_name = tables, model_name
        layers = sorted(tables)
        self.layer = W.SelectionSlider(options=layers, value=layers[0], description="layer", continuous_update=False)
        self.threshold = W.FloatSlider(value=check_threshold(threshold), min=0.0, max=1.0, step=0.01, description="threshold", continuous_update=False)
        names = list(explorer_view(tables, layers[0], threshold)["hists"])
        self.figure = go.FigureWidget([go.Bar(x=[], y=[], name=n, marker_color=c) for n, c in zip(names, self.COLORS)])
        self.figure.update_layout(barmode="stack", xaxis_title="reference score (max/sum of the 4 concept means)", yaxis_title="number of features", xaxis_range=[0, 1],
                                  height=380, width=950, legend=dict(orientation="h", y=-0.25), title_font_size=13,
                                  shapes=[dict(type="line", x0=0, x1=0, y0=0, y1=1, yref="paper", line=dict(color="black", dash="dash"))])
        self.listing = W.HTML()
        self.layer.observe(self._on_change, names="value")
        self.threshold.observe(self._on_change, names="value")
        self.widget = W.VBox([W.HBox([self.layer, self.threshold]), self.figure, self.listing])
        self._on_change()

    def _on_change(self, change=None) -> None:
        v = explorer_view(self.tables, self.layer.value, self.threshold.value)
        with figure_update(self.figure):
            traces: Any = self.figure.data
            for trace, d in zip(traces, v["hists"].values()):
                trace.x, trace.y, trace.width = d["x"], d["y"], d["width"]
            layout: Any = self.figure.layout
            layout.shapes[0].x0 = layout.shapes[0].x1 = self.threshold.value
            self.figure.layout.title = (f"{self.model_name}, layer {self.layer.value}:<br>{v['count']} features above {self.threshold.value:.2f} "
                                        f"(reference criterion), {v['count_selective']} selective (final label)")  # two lines: never cut
        self.listing.value = v["html"]
        self.count, self.count_selective = v["count"], v["count_selective"]


def word_explorer_view(wms: dict[int, pd.DataFrame], df: pd.DataFrame, layer: int, feature: int, k: int = 10) -> dict[str, Any]:
    """Pure: the top words of ``feature`` at ``layer`` with values, and each word's best sentence."""
    if layer not in wms:
        raise MonosemError(f"layer {layer} has no results (layers {list(wms)})")
    wm = wms[layer]
    if not 0 <= feature < wm.shape[1]:
        raise MonosemError(f"feature {feature} is outside 0..{wm.shape[1] - 1}")
    top = top_words(wm, feature, k)
    first = df.drop_duplicates("word")
    concept_of = dict(zip(first["word"], first["concept"]))
    first_sentence = dict(zip(first["word"], first["sentence"]))
    rows = "".join(f"<tr><td>{html.escape(str(w))}</td><td>{html.escape(concept_of[w])}</td><td>{v:.3f}</td><td>{html.escape(first_sentence[w])}</td></tr>"
                   for w, v in top.items())
    return {"words": top.index.tolist(), "values": top.to_numpy().tolist(), "concepts": [concept_of[w] for w in top.index],
            "html": f"<table><tr><th>word</th><th>category</th><th>mean activation</th><th>example sentence</th></tr>{rows}</table>"}


class LayerFeatureWidget:
    """A ``layer`` slider and a ``feature`` selector whose options depend on the layer; subclasses draw in ``_render``."""

    def _selectors(self, options: dict[int, list[int]]) -> None:
        import ipywidgets as W

        self._options = options
        layers = sorted(options)
        self.layer = W.SelectionSlider(options=layers, value=layers[0], description="layer", continuous_update=False)
        self.feature = W.Dropdown(options=list(options[layers[0]]), description="feature")
        self.layer.observe(self._on_layer, names="value")
        self.feature.observe(self._on_change, names="value")

    def _on_layer(self, change=None) -> None:
        self.feature.options = list(self._options[self.layer.value])  # resets the value, which may call _on_change
        self._on_change()

    def _on_change(self, change=None) -> None:
        if self.feature.value is not None:
            self._render()

    def _render(self) -> None:
        raise NotImplementedError


class WordExplorer(LayerFeatureWidget):
    """A ``layer`` slider and a ``feature`` selector showing the feature's top words and sentences."""

    def __init__(self, wms: dict[int, pd.DataFrame], df: pd.DataFrame, features: dict[int, list[int]], model_name: str):
        import ipywidgets as W
        import plotly.graph_objects as go

        self.wms, self.df, self.model_name = wms, df, model_name
        self._selectors(features)
        self.figure = go.FigureWidget(go.Bar(x=[], y=[]))
        self.figure.update_layout(xaxis_title="word", yaxis_title="mean activation", height=320)
        self.listing = W.HTML()
        self.widget = W.VBox([W.HBox([self.layer, self.feature]), self.figure, self.listing])
        self._on_change()

    def _render(self) -> None:
        v = word_explorer_view(self.wms, self.df, self.layer.value, int(cast(int, self.feature.value)))
        with figure_update(self.figure):
            self.figure.data[0].x, self.figure.data[0].y = v["words"], v["values"]
            self.figure.data[0].hovertext = v["concepts"]
            self.figure.layout.title = f"{self.model_name}, layer {self.layer.value}, feature {self.feature.value}: top words"
        self.listing.value = v["html"]
