import numpy as np
import pytest

from monosem.config import MonosemError
from monosem.selectivity import check_threshold, layer_summary, reference_pick, selectivity_scores, selectivity_table, summary_line, top_words, word_means
from monosem.testing import toy_concepts


def test_reference_score_by_hand():
    means = np.array([[1.0, 0.0, 1.0], [0.0, 0.0, 1.0], [0.0, 0.0, 1.0], [3.0, 0.0, 1.0]])  # [concepts, units]
    score, top = selectivity_scores(means)
    np.testing.assert_allclose(score, [0.75, 0.0, 0.25])
    assert top[0] == 3
    with pytest.raises(MonosemError, match="non-negative"):
        selectivity_scores(-means)


def test_table_uses_only_concepts_and_controls_are_ignored():
    df = toy_concepts()
    feats = np.zeros((len(df), 3))
    feats[df.concept.eq("colors").to_numpy(), 0] = 2.0          # colors only
    feats[df.is_concept.to_numpy(), 1] = 1.0                    # every concept equally
    feats[~df.is_concept.to_numpy(), 2] = 5.0                   # controls only: no concept mean
    t = selectivity_table(feats, df)
    assert t.score.tolist() == [1.0, 0.25, 0.0]
    assert t.top_concept.tolist() == ["colors", "numbers", ""]
    assert t.mean_colors[0] == 2.0 and t.live.tolist() == [True, True, True]
    s = layer_summary(t, 0.6)
    assert s["n_monosemantic"] == 1 and s["monosemantic_indices"] == [0]
    assert s["mean_selectivity"] == pytest.approx(1.25 / 3)
    t2 = selectivity_table(feats, df, live=np.array([True, True, False]))
    s2 = layer_summary(t2, 0.6)
    assert s2["n_dead"] == 1 and s2["mean_selectivity_live"] == pytest.approx(0.625)
    assert summary_line(3, s).startswith("Layer 3: found 1 monosemantic features, indices [0], average selectivity 0.417")


def test_word_means_and_pickers():
    df = toy_concepts()
    feats = np.arange(len(df) * 2, dtype=float).reshape(-1, 2)
    wm = word_means(feats, df)
    assert wm.shape == (df.word.nunique(), 2) and wm.loc["colors2", 0] == feats[df.word.eq("colors2").to_numpy(), 0].mean()
    assert top_words(wm, 1, 1).index[0] == "places2"  # the last rows
    assert reference_pick(np.array([[0, 0, 1.0], [0, 5, 1.0]]), 2) == [1, 0]


def test_threshold_outside_unit_interval():
    for bad in (-0.1, 1.5, "0.6", float("nan")):
        with pytest.raises(MonosemError, match=r"\[0, 1\]"):
            check_threshold(bad)
