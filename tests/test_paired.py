"""The paired SAE-vs-neurons comparison (monosem.paired), the probes and coverage (monosem.probes) and the natural-text
profile (monosem.natural) on synthetic units whose answer is known."""

import numpy as np
import pytest
import torch

from monosem.natural import _token_words, corpus_profile, matched_random_precision
from monosem.paired import BasisWords, lemma_groups, paired_comparison
from monosem.probes import coverage_table, natural_probe, probe_table
from monosem.specificity import Specificity

N_CAT, N_CONCEPTS, PER = 8, 4, 42
CATEGORY = np.repeat(np.arange(N_CAT), PER)
GROUPS = np.arange(len(CATEGORY))
S = Specificity()


def _specific_basis(rng, n_units=200, k=6):
    """Units each firing on k words of one concept (plus a little noise on one other word)."""
    means = np.zeros((len(CATEGORY), n_units))
    for u in range(n_units):
        c = u % N_CONCEPTS
        means[rng.choice(np.flatnonzero(CATEGORY == c), k, replace=False), u] = rng.uniform(2, 4, k)
    return means


def _mixed_basis(rng, n_units=200, k=6):
    """Units each firing on k random words of any category: no concept."""
    means = np.zeros((len(CATEGORY), n_units))
    for u in range(n_units):
        means[rng.choice(len(CATEGORY), k, replace=False), u] = rng.uniform(2, 4, k)
    return means


def test_a_specific_basis_beats_a_mixed_one_of_the_same_density_with_a_ci_above_zero():
    rng = np.random.default_rng(0)
    a = BasisWords.of("specific", _specific_basis(rng), S)
    b = BasisWords.of("mixed", _mixed_basis(rng), S)
    table = paired_comparison(a, b, CATEGORY, GROUPS, N_CONCEPTS, N_CAT, S, n_boot=60, seed=1).set_index("metric")
    for metric in ("fraction_specific", "specificity", "sensitivity", "coverage_k5"):  # (a 6-word unit is a weak k = 1 probe either way)
        assert table.loc[metric, "difference"] > 0 and table.loc[metric, "ci_low"] > 0, table
    assert table.loc["specificity", "specific"] == pytest.approx(1.0)


def test_two_large_draws_of_the_same_kind_of_basis_have_a_ci_that_covers_zero():
    # the CI is over words: the units are what they are (their sampling is the seeds' spread), so the bases are large here
    rng = np.random.default_rng(2)
    a = BasisWords.of("a", _mixed_basis(rng, 1500), S)
    b = BasisWords.of("b", _mixed_basis(rng, 1500), S)
    table = paired_comparison(a, b, CATEGORY, GROUPS, N_CONCEPTS, N_CAT, S, n_boot=60, seed=3).set_index("metric")
    for metric in ("specificity", "probe_k1"):
        assert table.loc[metric, "ci_low"] <= 0 <= table.loc[metric, "ci_high"], table


def test_lemma_groups_join_a_verbs_forms_within_a_category_only():
    words = np.array(["running", "runs", "run", "writes", "writing", "red", "runs"])
    category = np.array([0, 0, 0, 0, 0, 1, 1])
    g = lemma_groups(words, category)
    assert g[0] == g[1] == g[2] and g[3] == g[4] and g[0] != g[3] and g[6] != g[1] and g[5] != g[6]


def test_probes_find_a_planted_unit_and_not_noise():
    rng = np.random.default_rng(4)
    noise = rng.normal(0, 1, (len(CATEGORY), 50))
    table = probe_table(noise, CATEGORY, GROUPS, N_CONCEPTS, n_draws=20, n_splits=4).set_index(["setting", "k"])
    assert abs(table.loc[("standard", 1), "auroc"] - 0.5) < 0.1
    planted = noise.copy()
    for c in range(N_CONCEPTS):
        planted[:, c] += 3 * (CATEGORY == c)
    table = probe_table(planted, CATEGORY, GROUPS, N_CONCEPTS, n_draws=20, n_splits=4).set_index(["setting", "k"])
    for setting in ("standard", "few words", "other concepts"):
        assert table.loc[(setting, 1), "auroc"] > 0.95 and table.loc[(setting, 1), "ci_low"] > 0.9


def test_coverage_counts_a_family_of_units_that_split_a_concept():
    means = np.zeros((len(CATEGORY), 3))
    colors = np.flatnonzero(CATEGORY == 3)
    for u, part in enumerate(np.array_split(colors, 3)):  # three units, each on a third of the colour words
        means[part, u] = 1.0
    table = coverage_table(means, CATEGORY, GROUPS, ["numbers", "emotions", "actions", "colors"], N_CAT, S, n_splits=6).set_index(["concept", "k"])
    assert table.loc[("colors", 1), "recall"] == pytest.approx(1 / 3, abs=0.1)
    assert table.loc[("colors", 5), "recall"] == pytest.approx(1.0) and table.loc[("colors", 5), "precision"] == pytest.approx(1.0)
    assert table.loc[("numbers", 5), "recall"] == 0


def test_corpus_profile_counts_the_top_tokens_of_each_category():
    label = np.array([0, 0, 1, -1, 1, 2, 0, -1])
    acts = torch.tensor([[5, 0], [4, 0], [3, 1], [0, 2], [0, 3], [0, 0], [1, 0], [0, 0]], dtype=torch.float32)
    p = corpus_profile(acts, label, 3, top_n=3)
    assert p["top_precision"][0].tolist() == pytest.approx([2 / 3, 1 / 3, 0])  # unit 0's top 3: two of category 0, one of 1
    assert p["top_precision"][1].tolist() == pytest.approx([0, 2 / 3, 0])  # unit 1's top 3: 3 (cat 1), 2 (none), 1 (cat 1)
    assert p["n_top"].tolist() == [3, 3]
    assert p["density_tokens"][0] == pytest.approx(4 / 8)  # >= 5% of 5: tokens 0, 1, 2, 6
    shares = matched_random_precision(p["top_precision"], p["density_tokens"], np.array([0]), np.array([0]), np.array([True, False]), 1)
    assert shares.tolist() == [0.0]  # the only other unit has precision 0 for category 0


def test_natural_probe_and_token_words():
    assert _token_words("Red, blue 42!", [(0, 3), (3, 4), (4, 9), (9, 12), (12, 13)]) == ["Red", "", "blue", "42", ""]
    rng = np.random.default_rng(5)
    means = rng.normal(0, 1, (len(CATEGORY), 10))
    means[:, 0] += 3 * (CATEGORY == 0)
    label = rng.integers(-1, 4, 400)
    acts = rng.normal(0, 1, (400, 10))
    acts[:, 0] += 3 * (label == 0)
    result = natural_probe(means, CATEGORY, 1, acts, label, np.repeat(np.arange(20), 20), n_draws=20)
    assert result["auroc"] > 0.9 and result["ci_low"] > 0.8
