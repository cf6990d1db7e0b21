"""monosem.viz.figures: what each figure shows, read from the figure object."""

from __future__ import annotations

import numpy as np
import pandas as pd

from monosem.viz.figures import fig_word_heatmap


def test_figure2_is_one_figure_with_a_layer_menu_best_feature_on_top_and_words_grouped_by_category():
    words = ["red", "seven", "happy", "7", "blue"]
    concept_of = {"red": "colors", "blue": "colors", "seven": "numbers", "7": "numbers", "happy": "emotions"}
    wms = {L: pd.DataFrame(np.arange(25, dtype=float).reshape(5, 5) + L, index=words, columns=[10, 11, 12, 13, 14]) for L in (0, 3)}
    top = {0: [12, 10], 3: [14, 11, 13]}
    fig = fig_word_heatmap(wms, top, words, concept_of, "tiny")
    assert [t.visible for t in fig.data] == [True, False]
    assert list(fig.data[1].y) == ["f14", "f11", "f13"] and fig.layout.yaxis.autorange == "reversed"  # ranked top-down
    categories, shown = (list(v) for v in fig.data[0].x)
    assert shown == ["seven", "7", "happy", "red", "blue"] and categories == ["numbers", "numbers", "emotions", "colors", "colors"]
    np.testing.assert_array_equal(fig.data[0].z[0], wms[0].loc[shown, 12].to_numpy())  # row f12 of layer 0, columns in the shown order
    buttons = fig.layout.updatemenus[0].buttons
    assert [b.label for b in buttons] == ["layer 0", "layer 3"] and buttons[1].args[0]["visible"] == [False, True]


def test_the_notebook_renderer_loads_nothing_from_the_network():
    """The HTML fallback of every figure (what nbconvert's exports show) has plotly's markup and no script from a CDN:
    plotly's notebook renderer adds MathJax from cdnjs beside every figure, which the series' renderer removes."""
    import re

    import plotly.graph_objects as go
    import plotly.io as pio

    import monosem.viz.figures as figures

    assert pio.renderers.default == figures.EXPORT_RENDERER
    fig = go.Figure(go.Bar(y=[1, 2]), layout_title_text="t").to_dict()
    assert re.search(r'<script src="https?://', pio.renderers["notebook"].to_mimebundle(fig)["text/html"]), "plotly no longer adds a CDN script: drop the renderer"
    html = pio.renderers["monosem_notebook"].to_mimebundle(fig)["text/html"]
    assert "plotly-graph-div" in html and not re.search(r"<script[^>]+src=[\"']?https?://", html)
