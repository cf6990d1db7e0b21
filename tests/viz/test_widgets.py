import numpy as np
import pytest

from monosem.config import MonosemError
from monosem.criterion import Criterion
from monosem.scorecard import unit_table
from monosem.selectivity import top_words, word_means
from monosem.testing import toy_concepts
from monosem.viz.widgets import SelectivityExplorer, WordExplorer, explorer_view


@pytest.fixture
def tables():
    rng = np.random.default_rng(0)
    df = toy_concepts(20)  # enough words per category for the held-out test against the runner-up
    out = {}
    for L in (0, 1, 2):
        feats = rng.exponential(size=(len(df), 40)) * (rng.random((len(df), 40)) < 0.3 + 0.2 * L)
        feats[df.concept.eq("colors").to_numpy(), :3] += 5.0  # three colour units: selective
        out[L], _ = unit_table(feats, df, criterion=Criterion(n_splits=10, min_active_words=2), n_boot=50)
    return out


def test_explorer_view_is_pure_and_consistent(tables):
    v = explorer_view(tables, 1, 0.6)
    assert v["count"] == int((tables[1].score_reference > 0.6).sum()) == len(v["indices"])
    assert v["count_selective"] == int(tables[1].selective.sum()) >= 3
    assert sum(sum(d["y"]) for d in v["hists"].values()) == 40
    assert sum(v["hists"]["selective (final label)"]["y"]) == v["count_selective"]
    below = (tables[1].score_reference <= 0.6) & ~tables[1].selective
    assert sum(v["hists"]["at or below threshold, not selective"]["y"]) == int(below.sum())
    assert "selective (final label)" in v["html"] and f"{v['count']} features above the threshold" in v["html"]
    assert explorer_view(tables, 1, 0.6) == v
    with pytest.raises(MonosemError):
        explorer_view(tables, 7, 0.6)
    with pytest.raises(MonosemError):
        explorer_view(tables, 1, 1.2)


def test_threshold_and_layer_sliders_update_the_figure(tables):
    ex = SelectivityExplorer(tables, "toy-model", 0.6)
    assert ex.layer.description == "layer" and ex.threshold.description == "threshold"
    count0, title0, y0 = ex.count, ex.figure.layout.title.text, tuple(ex.figure.data[0].y)
    ex.threshold.value = 0.3
    assert ex.count == int((tables[0].score_reference > 0.3).sum()) and ex.count > count0 and ex.count_selective == int(tables[0].selective.sum())
    assert tuple(ex.figure.data[0].y) != y0  # fewer features at or below the lower threshold
    assert ex.figure.layout.shapes[0].x0 == 0.3 and ex.figure.layout.title.text != title0
    assert "0.30" in ex.listing.value
    y1 = tuple(ex.figure.data[0].y) + tuple(ex.figure.data[1].y)
    ex.layer.value = 2
    assert tuple(ex.figure.data[0].y) + tuple(ex.figure.data[1].y) != y1 and "layer 2" in ex.figure.layout.title.text
    assert ex.count == int((tables[2].score_reference > 0.3).sum())


def saved_figure(figure) -> dict:
    """The figure as a FigureWidget's saved widget state (HTML exports, "save widget state") draws it."""
    return {"data": figure._widget_data, "layout": figure._widget_layout}


def test_saved_widget_state_draws_the_figure_the_sliders_show(tables):
    """Slider edits reach the browser as messages that saved widget state drops; the explorer stores each edited
    figure in the widget's state, so an HTML export draws the bars and title of the final view, not empty bars."""
    ex = SelectivityExplorer(tables, "toy-model", 0.6)
    ex.layer.value, ex.threshold.value = 2, 0.35
    saved, v = saved_figure(ex.figure), explorer_view(tables, 2, 0.35)
    assert [list(t["y"]) for t in saved["data"]] == [d["y"] for d in v["hists"].values()]
    assert saved["layout"]["title"]["text"] == ex.figure.layout.title.text and "layer 2" in saved["layout"]["title"]["text"]
    assert saved["layout"]["shapes"][0]["x0"] == 0.35


def test_word_explorer_layer_and_feature(tables):
    df = toy_concepts()
    rng = np.random.default_rng(1)
    wms = {L: word_means(rng.random((len(df), 40)), df) for L in (0, 1)}
    ex = WordExplorer(wms, df, {0: [3, 5], 1: [7, 9]}, "toy-model")
    x0 = tuple(ex.figure.data[0].x)
    ex.feature.value = 5
    assert tuple(ex.figure.data[0].x) == tuple(top_words(wms[0], 5, 10).index) != x0
    ex.layer.value = 1
    assert ex.feature.value == 7 and "feature 7" in ex.figure.layout.title.text
    assert tuple(ex.figure.data[0].y) == pytest.approx(tuple(top_words(wms[1], 7, 10)))
    saved = saved_figure(ex.figure)
    assert list(saved["data"][0]["x"]) == list(top_words(wms[1], 7, 10).index) and "feature 7" in saved["layout"]["title"]["text"]


def test_one_count_of_selective_features_in_summary_lines_explorer_figure_1_and_findings(tables):
    """The same number of selective features per layer in the summary line, the explorer at the default threshold,
    Figure 1's red bars and the README's findings sentence."""
    from monosem.report import findings
    from monosem.results import Summary
    from monosem.selectivity import layer_summary, summary_line
    from monosem.viz.figures import fig_selectivity

    fig = fig_selectivity(tables, 0.6, "toy")
    red = [t for t in fig.data if t.name == "selective (final label)"]
    per_layer = {str(L): layer_summary(t, 0.6) for L, t in tables.items()}
    summary = Summary("toy", "toy", "", list(tables), 0.6, 0.05, "mean", "topk", 10, 10, 10, 0, Criterion().describe(), per_layer)
    sentences = "\n".join(findings(summary))
    for i, (L, t) in enumerate(tables.items()):
        n = int(t["selective"].sum())
        assert f"{n} selective" in summary_line(L, per_layer[str(L)])
        assert explorer_view(tables, L, 0.6)["count_selective"] == n
        assert int(sum(red[i].y)) == n
        line = next(x for x in sentences.splitlines() if x.startswith(f"Layer {L}, topk SAE (40 features, its training budget):"))
        assert f"; {n} 'selective';" in line


def test_figure_update_refuses_an_outer_batch_and_keeps_the_state_after_an_error():
    import plotly.graph_objects as go

    from monosem.viz.widgets import figure_update

    fig = go.FigureWidget(go.Bar(y=[1, 2]))
    with fig.batch_update(), pytest.raises(ValueError, match="batch_update"):
        with figure_update(fig):
            pass
    with pytest.raises(RuntimeError), figure_update(fig):
        fig.data[0].y = (5, 6, 7)
        raise RuntimeError("after an edit")
    assert list(saved_figure(fig)["data"][0]["y"]) == [5, 6, 7]  # plotly sent the edit; the saved state has it too
