"""The selectivity statistics: calibration under the null, agreement with slow reference implementations."""

import itertools

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from monosem.dataset import CONCEPTS
from monosem.selectivity import selectivity_scores, selectivity_table
from monosem.stats import auroc_top_concept, bh_qvalues, bootstrap_ci, feature_statistics, heldout_agreement, permutation_pvalues, selectivity_index, word_data
from monosem.testing import synthetic_activations


def test_permutation_test_is_calibrated_on_shuffled_labels():
    # real concept signal in the data, then the concept labels shuffled across words: nothing is real any more
    df, acts = synthetic_activations(selective=300, seed=1)
    rng = np.random.default_rng(2)
    words = df.drop_duplicates("word")[["word", "concept"]]
    concept_words = words[words.concept.isin(CONCEPTS)]
    shuffled = dict(zip(concept_words.word, rng.permutation(concept_words.concept.to_numpy())))
    df_null = df.assign(concept=df.word.map(shuffled).fillna(df.concept))
    p = permutation_pvalues(word_data(acts, df_null), n_perm=500, seed=3)
    frac = (p < 0.05).mean()
    assert 0.025 < frac < 0.085, f"{frac:.3f} of null units significant at alpha=0.05"
    # BH keeps the false discoveries near zero under the global null
    assert (bh_qvalues(p) < 0.05).mean() < 0.01
    # and with the true labels the boosted units are found
    p_true = permutation_pvalues(word_data(acts, df), n_perm=500, seed=3)
    assert (p_true[:300] < 0.05).mean() > 0.95


def test_sentence_level_shuffling_would_not_be_calibrated():
    # why labels are shuffled across words: a sentence-level shuffle ignores that a word's sentences are
    # alike and calls far more than alpha of the null units significant
    df, acts = synthetic_activations(seed=4, word_effect=2.0)
    wd_sent = word_data(acts, df.assign(word=[f"{w}#{i}" for i, w in enumerate(df.word)]))  # each sentence its own "word"
    p_sentence = permutation_pvalues(wd_sent, n_perm=300, seed=5)
    p_word = permutation_pvalues(word_data(acts, df), n_perm=300, seed=5)
    assert (p_sentence < 0.05).mean() > 2 * (p_word < 0.05).mean()


def slow_bh(p):
    n = len(p)
    q = np.empty(n)
    order = np.argsort(p)
    for rank, i in enumerate(order, start=1):
        q[i] = min(1.0, min(p[j] * n / r for r, j in enumerate(order, start=1) if r >= rank))
    return q


def test_bh_matches_the_textbook_procedure():
    p = np.random.default_rng(0).random(60) ** 2
    np.testing.assert_allclose(bh_qvalues(p), slow_bh(p))


def test_auroc_matches_pairwise_counting():
    df, acts = synthetic_activations(n_words=6, n_units=12, selective=4, seed=6)
    wd = word_data(acts, df)
    top = np.random.default_rng(1).integers(0, 4, 12)
    got = auroc_top_concept(wd, top)
    wm = wd.means()
    for u in range(12):
        pos, neg = wm[wd.category == top[u], u], wm[wd.category != top[u], u]
        pairs = [(a > b) + 0.5 * (a == b) for a, b in itertools.product(pos, neg)]
        assert got[u] == pytest.approx(np.mean(pairs))


def test_bootstrap_ci_and_heldout_agreement():
    df, acts = synthetic_activations(n_units=200, selective=50, seed=7)
    wd = word_data(acts, df)
    lo, hi = bootstrap_ci(wd, n_boot=300, seed=0)
    t = selectivity_table(acts, df)
    assert (lo <= hi).all() and ((lo <= t.score + 1e-9) & (t.score <= hi + 1e-9)).mean() > 0.9
    agree = heldout_agreement(wd, n_splits=20, seed=0)
    assert agree[:50].mean() > 0.95 and agree[50:].mean() < 0.5


def test_selectivity_index_by_hand():
    means = np.array([[3.0, 1.0, 0.0], [1.0, 1.0, 0.0], [1.0, 1.0, 0.0], [1.0, 1.0, 0.0]])
    np.testing.assert_allclose(selectivity_index(means), [0.5, 0.0, 0.0])


def test_statistics_run_vectorised_on_many_units():
    df, acts = synthetic_activations(n_words=42, n_units=3072, seed=8)
    t = feature_statistics(acts, df, n_perm=1000, n_boot=1000)
    assert len(t) == 3072 and t.p.between(0, 1).all() and set(t.columns) >= {"selectivity_index", "auroc", "p", "ci_low", "ci_high", "heldout_agreement"}


# --- property-based tests of the selectivity functions -------------------------------------------

nonneg = arrays(np.float64, st.tuples(st.just(4), st.integers(1, 12)), elements=st.floats(0, 1e3, allow_nan=False, allow_subnormal=False))


@given(nonneg)
def test_scores_lie_in_range_and_match_a_slow_reference(means):
    score, top = selectivity_scores(means)
    assert ((score == 0) | ((score >= 0.25 - 1e-12) & (score <= 1 + 1e-12))).all()
    for u in range(means.shape[1]):
        col = list(means[:, u])
        total = sum(col)
        assert score[u] == pytest.approx(max(col) / total if total > 0 else 0.0)


@settings(max_examples=25, deadline=None)
@given(st.integers(0, 2**31 - 1))
def test_statistics_are_invariant_to_feature_order(seed):
    df, acts = synthetic_activations(n_words=5, n_units=9, selective=3, seed=seed % 1000)
    perm = np.random.default_rng(seed).permutation(9)
    a = feature_statistics(acts, df, n_perm=50, n_boot=50, n_splits=5, seed=1)
    b = feature_statistics(acts[:, perm], df, n_perm=50, n_boot=50, n_splits=5, seed=1)
    cols = ["score", "selectivity_index", "auroc", "p", "ci_low", "ci_high", "heldout_agreement"]
    np.testing.assert_allclose(b[cols].to_numpy(), a[cols].to_numpy()[perm], rtol=1e-5, atol=1e-6)
