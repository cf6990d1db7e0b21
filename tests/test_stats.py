"""The word-level statistics of the reference score (monosem.stats) and the unit table's invariances."""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from monosem.criterion import Criterion
from monosem.scorecard import unit_table
from monosem.selectivity import selectivity_scores, selectivity_table
from monosem.stats import bootstrap_ci, group_sums, word_data
from monosem.testing import synthetic_activations


def test_bootstrap_ci_contains_the_estimate_and_separates_selective_units():
    df, acts = synthetic_activations(n_units=200, selective=50, seed=7)
    wd = word_data(acts, df)
    lo, hi = bootstrap_ci(wd, n_boot=300, seed=0)
    t = selectivity_table(acts, df)
    assert (lo <= hi).all() and ((lo <= t.score + 1e-9) & (t.score <= hi + 1e-9)).mean() > 0.9
    assert lo[:50].min() > hi[50:].mean(), "the boosted units' intervals should sit above the others'"
    p_lo, p_hi = bootstrap_ci(wd, n_boot=300, seed=0, method="percentile")
    np.testing.assert_allclose(lo, np.clip(2 * t.score - p_hi, 0, 1), atol=1e-6)
    with pytest.raises(ValueError, match="basic"):
        bootstrap_ci(wd, n_boot=10, method="bca")


def test_group_sums_equal_np_add_at_with_empty_and_unsorted_groups():
    rng = np.random.default_rng(2)
    values = rng.normal(size=(300, 17)).astype(np.float32)
    group = rng.integers(0, 40, 300)
    group[group == 7] = 8  # group 7 has no rows
    expected = np.zeros((41, 17))
    np.add.at(expected, group, values)
    np.testing.assert_allclose(group_sums(values, group, 41), expected, rtol=1e-12, atol=1e-12)
    assert group_sums(values[:0], group[:0], 3).shape == (3, 17)


def test_unit_table_runs_vectorised_on_many_units():
    df, acts = synthetic_activations(n_words=42, n_units=3072, seed=8)
    t, rate = unit_table(acts, df, criterion=Criterion(n_splits=10), n_boot=200)
    assert len(t) == 3072 and t.replication.between(0, 1).all() and 0 <= rate <= 1
    assert t.selective.mean() <= 0.05, "no real effect in this data"


# --- property-based tests ------------------------------------------------------------------------

nonneg = arrays(np.float64, st.tuples(st.just(4), st.integers(1, 12)), elements=st.floats(0, 1e3, allow_nan=False, allow_subnormal=False))


@given(nonneg)
def test_scores_lie_in_range_and_match_a_slow_reference(means):
    score, top = selectivity_scores(means)
    assert ((score == 0) | ((score >= 0.25 - 1e-12) & (score <= 1 + 1e-12))).all()
    for u in range(means.shape[1]):
        col = list(means[:, u])
        total = sum(col)
        assert score[u] == pytest.approx(max(col) / total if total > 0 else 0.0)


@settings(max_examples=15, deadline=None)
@given(st.integers(0, 2**31 - 1))
def test_the_unit_table_is_invariant_to_unit_order(seed):
    df, acts = synthetic_activations(n_words=6, n_units=9, selective=3, seed=seed % 1000)
    perm = np.random.default_rng(seed).permutation(9)
    criterion = Criterion(n_splits=10, min_active_words=2, seed=1)
    a, _ = unit_table(acts, df, criterion=criterion, n_boot=50)
    b, _ = unit_table(acts[:, perm], df, criterion=criterion, n_boot=50)
    cols = ["score_reference", "ci_low", "ci_high", "replication", "auroc_heldout", "n_active_words", "mean_colors", "mean_places"]
    np.testing.assert_allclose(b[cols].to_numpy(dtype=float), a[cols].to_numpy(dtype=float)[perm], rtol=1e-5, atol=1e-6)
    assert (b.selective.to_numpy() == a.selective.to_numpy()[perm]).all() and (b.top_category.to_numpy() == a.top_category.to_numpy()[perm]).all()
