"""The label ``specific`` and its parts (monosem.specificity) on synthetic units that should pass and fail it, and the
Jensen–Shannon separability against scipy."""

import numpy as np
import pytest
from scipy.spatial.distance import jensenshannon
from scipy.stats import entropy

from monosem.specificity import Specificity, firing, js_separability, unit_specificity

N_CAT, N_CONCEPTS, PER = 8, 4, 42
COLORS = 3  # the category index of colours among the 8
CATEGORY = np.repeat(np.arange(N_CAT), PER)


def _label(units: np.ndarray, **settings) -> "object":
    return unit_specificity(units, CATEGORY, N_CONCEPTS, N_CAT, Specificity(**settings))


def _sparse_unit(rng: np.random.Generator, k: int, category: int = COLORS, strength: float = 5.0) -> np.ndarray:
    unit = np.zeros(len(CATEGORY))
    members = np.flatnonzero(CATEGORY == category)
    unit[rng.choice(members, k, replace=False)] = strength * rng.uniform(0.8, 1.2, k)
    return unit


def test_a_unit_firing_on_8_colour_words_only_is_specific_with_low_sensitivity():
    rng = np.random.default_rng(0)
    units = np.stack([_sparse_unit(rng, 8) for _ in range(50)], 1)
    table = _label(units)
    assert table["specific"].all(), table.loc[~table["specific"]]
    assert (table["concept"] == "3").all() and (table["specificity_templates"] == 1).all()
    assert np.allclose(table["sensitivity"], 8 / PER) and np.allclose(table["density_words"], 8 / len(CATEGORY))


def test_a_dense_unit_with_a_small_consistent_concept_shift_is_not_specific():
    rng = np.random.default_rng(1)
    units = np.stack([rng.normal(1.0, 0.25, len(CATEGORY)).clip(0.01) + 0.3 * (CATEGORY == COLORS) for _ in range(50)], 1)
    table = _label(units)
    assert not table["specific"].any()
    assert (table["specificity_templates"] < 0.3).all() and (table["density_words"] > 0.9).all()


def test_a_unit_leaking_10_percent_to_one_control_word_is_specific_with_specificity_below_1():
    rng = np.random.default_rng(2)
    units = []
    for _ in range(50):
        unit = _sparse_unit(rng, 10)
        unit[rng.choice(np.flatnonzero(CATEGORY == 6))] = 0.5  # a control word at 10% of the strength
        units.append(unit)
    table = _label(np.stack(units, 1))
    assert table["specific"].all()
    assert np.allclose(table["specificity_templates"], 10 / 11)


def test_a_unit_of_a_control_category_is_specific_to_nothing_and_random_units_are_rarely_specific():
    rng = np.random.default_rng(3)
    control = np.stack([_sparse_unit(rng, 10, category=5) for _ in range(20)], 1)
    table = _label(control)
    assert not table["specific"].any() and (table["concept"] == "5").all() and (table["specificity_templates"] == 1).all()
    random_sparse = np.where(rng.random((len(CATEGORY), 2000)) < 0.03, rng.uniform(1, 5, (len(CATEGORY), 2000)), 0.0)
    assert _label(random_sparse)["specific"].mean() < 0.01


def test_units_firing_on_two_concepts_are_not_specific():
    rng = np.random.default_rng(4)
    units = np.stack([_sparse_unit(rng, 8) + _sparse_unit(rng, 8, category=0) for _ in range(30)], 1)
    table = _label(units)
    assert not table["specific"].any() and (table["specificity_templates"] <= 0.5 + 1e-9).all()


def test_rate_matched_firing_fires_on_the_asked_share_of_words():
    rng = np.random.default_rng(5)
    dense = rng.normal(0, 1, (len(CATEGORY), 40))
    fire = firing(dense, fire_rate=0.05)
    assert np.all(fire.sum(0) == round(0.05 * len(CATEGORY)))


def test_js_separability_equals_an_independent_computation():
    rng = np.random.default_rng(6)
    means = np.where(rng.random((len(CATEGORY), 30)) < 0.3, rng.gamma(2, 1, (len(CATEGORY), 30)), 0.0)
    means[:, 0] += 3 * (CATEGORY == 2)
    fire = firing(means, 0.05)
    got = js_separability(means, fire, CATEGORY, N_CAT, n_bins=10)
    for u in range(means.shape[1]):
        edges = np.linspace(0, means[:, u].max(), 11)
        hists = []
        for c in range(N_CAT):
            x = means[CATEGORY == c, u]
            on = fire[CATEGORY == c, u]
            h = np.r_[(~on).sum(), np.histogram(x[on], bins=edges)[0]]
            hists.append(h / h.sum())
        hists = np.array(hists)
        jsd = entropy(hists.mean(0), base=N_CAT) - np.mean([entropy(h, base=N_CAT) for h in hists])
        assert got[u] == pytest.approx(np.sqrt(max(jsd, 0)), abs=1e-9)
    # with two categories the generalised divergence is scipy's Jensen-Shannon distance (base 2)
    two = np.r_[np.zeros(PER), np.full(PER, 2.0)][:, None] * rng.uniform(0.5, 1, (2 * PER, 1))
    cat2 = np.repeat([0, 1], PER)
    f2 = firing(two, 0.05)
    d = js_separability(two, f2, cat2, 2, n_bins=10)[0]
    edges = np.linspace(0, two.max(), 11)
    h = [np.r_[(~f2[cat2 == c, 0]).sum(), np.histogram(two[cat2 == c, 0][f2[cat2 == c, 0]], bins=edges)[0]] for c in (0, 1)]
    assert d == pytest.approx(jensenshannon(h[0] / h[0].sum(), h[1] / h[1].sum(), base=2), abs=1e-9)


def test_concept_families_list_the_most_sensitive_specific_units_with_their_words():
    import pandas as pd

    from monosem.specificity import concept_families

    words = ["red", "blue", "green", "dog", "cat"]
    means = pd.DataFrame({0: [1.0, 0.9, 0.0, 0.0, 0.0], 1: [0.0, 0.0, 2.0, 0.0, 0.0], 2: [0.5, 0.5, 0.5, 0.0, 0.0]}, index=words)
    table = pd.DataFrame({"feature": [0, 1, 2], "specific": [True, True, False], "concept": ["colors", "colors", "colors"],
                          "sensitivity": [2 / 3, 1 / 3, 1.0], "specificity_templates": [1.0, 1.0, 1.0]})
    fam = concept_families(table, means, "colors")
    assert fam["feature"].tolist() == [0, 1] and fam["fires on"].tolist() == ["red, blue", "green"]  # not the unit that is not specific
    assert concept_families(table, means, "numbers").empty


def test_units_are_picked_in_turn_from_each_concept():
    import pandas as pd

    from monosem.specificity import pick_by_concept

    table = pd.DataFrame({"feature": range(6), "concept": ["numbers"] * 4 + ["colors", "colors"], "specific": [True, True, True, True, True, False],
                          "sensitivity": [0.9, 0.8, 0.7, 0.6, 0.5, 0.99], "specificity_templates": [1.0] * 6})
    assert pick_by_concept(table, 3, ["numbers", "colors"]) == [(0, "numbers"), (4, "colors"), (1, "numbers")]
    assert pick_by_concept(table, 10, ["colors"], specific_only=False) == [(4, "colors"), (5, "colors")]  # specific first


def test_density_matching_gives_the_dense_basis_the_sparse_basis_density_distribution():
    from monosem.specificity import density_matched, matched_rates

    rng = np.random.default_rng(7)
    target = np.r_[np.zeros(10), np.full(20, 0.02), np.full(10, 0.1)]
    dense = rng.normal(0, 1, (len(CATEGORY), 40)) + np.linspace(0, 2, 40)[None, :]  # later units denser by the τ x max rule
    rates = density_matched(dense, target)
    assert sorted(rates.tolist()) == sorted(target.tolist())
    fire = firing(dense, fire_rate=rates)
    assert sorted(fire.mean(0).round(3).tolist()) == sorted(np.round(np.rint(target * len(CATEGORY)) / len(CATEGORY), 3).tolist())
    assert matched_rates(np.array([0.5, 0.1, 0.9]), np.array([0.0, 0.01, 0.2])).tolist() == [0.01, 0.0, 0.2]  # rank order kept
