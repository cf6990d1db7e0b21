"""Per-unit tables and the per-basis scorecard of monosem.scorecard: the bootstrap CI of the reference score, pure
units against their label-shuffled null, k-sparse probes, the scorecard row and the unit table's columns.

Data are synthetic and crossed like data/concepts.csv: every word in 4 neutral frames shared by all 8 categories,
and 3 frames written for its category (``frame_kind`` neutral / category).
"""

import numpy as np
import pandas as pd
import pytest

from monosem.criterion import Criterion, split_halves
from monosem.dataset import CATEGORIES, CONCEPTS
from monosem.scorecard import SCORECARD_KEYS, k_sparse_probe_auroc, pure_units, pure_units_null, scorecard_row, unit_table
from monosem.selectivity import selectivity_table
from monosem.stats import bootstrap_ci, word_data

N_WORDS = 24  # per category


def crossed_frames(n_words: int = N_WORDS) -> pd.DataFrame:
    """8 categories x ``n_words`` words x (4 neutral frames shared by all categories + 3 frames of the word's category)."""
    rows = []
    for c in CATEGORIES:
        for w in range(n_words):
            word = f"{c}_{w}"
            rows += [(c, word, f"neutral frame {f} says {word}.", f"neutral_{f}", "neutral") for f in range(1, 5)]
            rows += [(c, word, f"{c} frame {f} says {word}.", f"{c}_{f}", "category") for f in range(1, 4)]
    df = pd.DataFrame(rows, columns=["concept", "word", "sentence", "frame", "frame_kind"])
    df["is_concept"] = df["concept"].isin(CONCEPTS)
    return df


def activations(df: pd.DataFrame, n_units: int, seed: int, category_frame_sd: float = 1.0, boost: dict[str, float] | None = None) -> np.ndarray:
    """ReLU(word effect + frame effect + sentence noise + ``boost`` of a category's words on every frame) [n_rows, n_units].

    Without ``boost`` no category differs in expectation except through its category frames (``category_frame_sd``).
    """
    rng = np.random.default_rng(seed)
    _, word = np.unique(df["word"].to_numpy(), return_inverse=True)
    _, frame = np.unique(df["frame"].to_numpy(), return_inverse=True)
    frame_sd = np.where(df.drop_duplicates("frame").sort_values("frame")["frame_kind"].eq("category"), category_frame_sd, 1.0)
    pre = rng.normal(size=(word.max() + 1, n_units))[word] + (frame_sd[:, None] * rng.normal(size=(len(frame_sd), n_units)))[frame]
    pre += 0.3 * rng.normal(size=(len(df), n_units))
    for c, size in (boost or {}).items():
        pre += size * df["concept"].eq(c).to_numpy()[:, None]
    return np.maximum(pre, 0).astype(np.float32)


# --- 1. bootstrap CI of the reference score -----------------------------------------------------------------


def test_basic_bootstrap_ci_covers_a_true_floor_score_and_the_percentile_interval_does_not():
    df = crossed_frames()
    # equal concept means on every frame (category frames with no effect): every unit's true reference score is 0.25
    acts = activations(df, 1000, seed=0, category_frame_sd=0.0)
    wd = word_data(acts, df)
    score = selectivity_table(acts, df)["score"].to_numpy()
    basic = bootstrap_ci(wd, n_boot=1000, seed=1)
    percentile = bootstrap_ci(wd, n_boot=1000, seed=1, method="percentile")
    np.testing.assert_array_equal(bootstrap_ci(wd, n_boot=1000, seed=1, method="basic")[0], basic[0])  # basic is the default
    coverage = {name: float(((lo <= 0.25) & (0.25 <= hi)).mean()) for name, (lo, hi) in (("basic", basic), ("percentile", percentile))}
    # 1000 independent units: the binomial SD of a 0.95 coverage is 0.007 (measured: basic 0.926, percentile 0.0)
    assert coverage["basic"] >= 0.88, coverage
    assert coverage["percentile"] <= 0.2, coverage
    for lo, hi in (basic, percentile):
        assert (lo <= hi).all() and (lo >= 0).all() and (hi <= 1).all()
        assert ((lo <= score + 1e-6) & (score <= hi + 1e-6)).mean() >= 0.9, "the interval should contain the point estimate for most units"


# --- 2. pure units ---------------------------------------------------------------------------------------------


def test_pure_units_by_hand():
    category = np.repeat(np.arange(len(CATEGORIES)), 6)
    colors, numbers, places = (np.flatnonzero(category == CATEGORIES.index(c)) for c in ("colors", "numbers", "places"))
    means = np.zeros((len(category), 5))
    means[colors, 0], means[numbers[0], 0] = 1.0, 0.5  # 6 / 6.5 = 92% in colors, active on 7 words: pure
    means[colors[:3], 1] = 1.0  # 100% in colors but active on 3 words only: not pure
    means[colors[:5], 2], means[numbers[0], 2] = 1.0, 0.6  # 5 / 5.6 = 89%: not pure
    means[places[:5], 3] = 2.0  # 100% in a control, on 5 words: pure (purity is over all 8 categories)
    # unit 4 is silent
    assert pure_units(means, category, len(CATEGORIES)) == 2
    assert pure_units(means, category, len(CATEGORIES), min_active_words=3) == 3


def sparse_units(category: np.ndarray, n_units: int, rng: np.random.Generator) -> np.ndarray:
    """Word means [n_words, n_units] of units active on 5-8 random words (no category structure)."""
    means = np.zeros((len(category), n_units))
    for u in range(n_units):
        k = rng.integers(5, 9)
        means[rng.choice(len(category), k, replace=False), u] = rng.exponential(size=k)
    return means


def test_pure_units_against_the_label_shuffled_null():
    rng = np.random.default_rng(0)
    category = np.repeat(np.arange(len(CATEGORIES)), N_WORDS)
    means = sparse_units(category, 2000, rng)
    observed, null = pure_units(means, category, len(CATEGORIES)), pure_units_null(means, category, len(CATEGORIES), seed=1)
    assert observed <= 40 and null <= 40, (observed, null)  # both small (< 2% of the units)
    assert abs(observed - null) <= 3 * np.sqrt(null) + 1, f"no category structure, yet observed {observed} vs null {null:.1f}"
    for u in range(50):  # plant 50 pure units, each active on 8 words of one category
        means[:, u] = 0
        members = rng.choice(np.flatnonzero(category == u % len(CATEGORIES)), 8, replace=False)
        means[members, u] = 0.5 + rng.exponential(size=8)
    observed, null = pure_units(means, category, len(CATEGORIES)), pure_units_null(means, category, len(CATEGORIES), seed=1)
    assert observed >= 50 and observed >= null + 40, f"planted 50 pure units: observed {observed}, null {null:.1f}"


# --- 3. k-sparse probes ------------------------------------------------------------------------------------------


def test_k_sparse_probe_auroc():
    rng = np.random.default_rng(0)
    category = np.repeat(np.arange(len(CATEGORIES)), N_WORDS)
    halves = split_halves(category, 5, seed=1)
    n_concepts = len(CONCEPTS)
    noise = rng.normal(size=(len(category), 100))
    for k in (1, 5):
        assert abs(k_sparse_probe_auroc(noise, category, n_concepts, k, halves) - 0.5) <= 0.1, f"k={k} on pure noise"
    separating = noise.copy()
    for c in range(n_concepts):  # one unit per concept separates its words from all others, controls included
        separating[:, 10 + c] = 3.0 * (category == c) + 0.1 * rng.normal(size=len(category))
    for k in (1, 5):
        assert k_sparse_probe_auroc(separating, category, n_concepts, k, halves) >= 0.95, f"k={k} with one separating unit"
    # the controls are negatives: a unit that fires as much on a control as on its concept does not separate it
    confused = noise.copy()
    for c in range(n_concepts):
        confused[:, 10 + c] = 3.0 * ((category == c) | (category == c + n_concepts)) + 0.1 * rng.normal(size=len(category))
    assert k_sparse_probe_auroc(confused, category, n_concepts, 1, halves) < 0.95
    spread = noise.copy()
    for c in range(n_concepts):  # the signal spread over 5 weak units per concept
        spread[:, 20 + 5 * c : 25 + 5 * c] += 0.8 * (category == c)[:, None]
    k1, k5 = (k_sparse_probe_auroc(spread, category, n_concepts, k, halves) for k in (1, 5))
    assert k5 >= k1 + 0.05, f"k=5 ({k5:.3f}) should beat k=1 ({k1:.3f}) when the signal is spread over 5 units"


# --- 4-5. the unit table and the scorecard row ---------------------------------------------------------------------


@pytest.fixture(scope="module")
def study():
    """200 null units with frame structure, 20 colors units, 10 places units, 10 silent units, and their unit table."""
    df = crossed_frames()
    acts = np.hstack([activations(df, 200, seed=2), activations(df, 20, seed=3, boost={"colors": 2.5}),
                      activations(df, 10, seed=4, boost={"places": 2.5}), np.zeros((len(df), 10), dtype=np.float32)])
    table, rate = unit_table(acts, df, n_boot=100, criterion=Criterion())
    return df, acts, table, rate


def test_unit_table_columns_and_values(study):
    df, acts, table, _ = study
    expected = (["feature", "score_reference", "ci_low", "ci_high", "top_concept_reference", "top_category", "replication", "auroc_heldout",
                 "n_active_words", "selective", "control_top", "form_bound", "surface_form_balance", "top_share"] + [f"mean_{c}" for c in CATEGORIES]
                + ["selective_category_frames", "replication_category_frames", "live", "causal_effect", "causal_p"]
                + ["concept", "specific", "specificity_templates", "specificity_heldout", "sensitivity", "separability", "density_words",
                   "n_fire_words", "p_hypergeom", "replication_specific", "specificity_corpus", "density_tokens"])
    assert list(table.columns) == expected
    assert len(table) == acts.shape[1] and table["feature"].tolist() == list(range(acts.shape[1]))
    np.testing.assert_array_equal(table["score_reference"].to_numpy(), selectivity_table(acts, df)["score"].to_numpy())
    # mean_<category>: mean over words of the per-word mean, on the neutral rows only (a slow pandas recomputation)
    neutral = df["frame_kind"].eq("neutral").to_numpy()
    frame = pd.DataFrame(acts[neutral].astype(np.float64)).assign(word=df.loc[neutral, "word"].to_numpy(), concept=df.loc[neutral, "concept"].to_numpy())
    per_category = frame.groupby(["concept", "word"]).mean().groupby(level="concept").mean()
    for c in CATEGORIES:
        np.testing.assert_allclose(table[f"mean_{c}"].to_numpy(), per_category.loc[c].to_numpy(), rtol=1e-5, atol=1e-7, err_msg=f"mean_{c}")
    assert ((table["ci_low"] <= table["ci_high"]) & table["ci_low"].between(0, 1) & table["ci_high"].between(0, 1)).all()
    assert table["causal_effect"].isna().all() and table["causal_p"].isna().all()
    assert table["live"].tolist() == [True] * 230 + [False] * 10
    # the planted units: colors ones selective, places ones control_top, silent ones neither
    assert table["selective"].iloc[200:220].all() and (table["top_category"].iloc[200:220] == "colors").all()
    assert table["control_top"].iloc[220:230].all() and not table["selective"].iloc[220:230].any()
    assert (table["top_category"].iloc[230:] == "").all() and (table["n_active_words"].iloc[230:] == 0).all()


def test_scorecard_row_keys_and_consistency(study):
    df, acts, table, rate = study
    threshold = float(table["score_reference"].iloc[205])  # a threshold equal to a unit's score does not count that unit
    row = scorecard_row(table, rate, acts, df, threshold)
    assert tuple(row) == SCORECARD_KEYS
    assert row["n_units"] == len(table) == 240
    assert row["n_active"] == int((table["n_active_words"] >= Criterion().min_active_words).sum())
    assert row["n_selective"] == int(table["selective"].sum()) >= 20
    assert 0 < row["n_selective"] <= row["n_active"] <= row["n_units"] - 10
    assert row["fraction_selective_active"] == pytest.approx(row["n_selective"] / row["n_active"])
    assert row["replication_rate"] == rate
    assert row["n_above_threshold"] == int((table["score_reference"] > threshold).sum())
    assert 0 < row["n_above_threshold"] < int((table["score_reference"] >= threshold).sum())
    assert row["n_control_top"] == int(table["control_top"].sum()) >= 10
    assert row["n_selective_category_frames"] == int(table["selective_category_frames"].sum())
    neutral = df["frame_kind"].eq("neutral").to_numpy()
    wd = word_data(acts[neutral], df.loc[neutral])
    assert row["pure_units"] == pure_units(wd.means().astype(np.float64), wd.category, len(CATEGORIES))
    assert 0 <= row["pure_units_null"] <= row["n_units"]
    assert 0.5 < row["probe_k1_auroc"] <= 1 and 0.5 < row["probe_k5_auroc"] <= 1

