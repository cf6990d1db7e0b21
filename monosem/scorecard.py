"""Per-unit tables and the per-basis scorecard: reference score with its CI, the final label, purity and k-sparse probing.

One row per unit (``unit_table``): the reference study's 4-concept score (``score_reference``,
with a basic bootstrap CI over words) next to the final label of ``monosem.criterion`` on the
neutral frames, the same label on the category frames (reported beside: frames there may carry
the category), and the mean per category. One row per basis and layer (``scorecard_row``) with the
keys of ``SCORECARD_KEYS``, so bases of any width compare fairly: fractions of *active* units,
replication on held-out words, purity against a label-shuffled null, and SAEBench-style k-sparse
probing on held-out words with the controls as negatives.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd
from torch import Tensor

from monosem.criterion import Criterion, frame_rows, selectivity_criterion, split_halves
from monosem.dataset import CATEGORIES, CONCEPTS
from monosem.paired import lemma_groups
from monosem.probes import probe_once
from monosem.selectivity import selectivity_table
from monosem.specificity import Specificity, unit_specificity
from monosem.stats import bootstrap_ci, word_data

SCORECARD_KEYS = ("n_units", "n_active", "n_selective", "fraction_selective_active", "replication_rate", "pure_units", "pure_units_null",
                  "probe_k1_auroc", "probe_k5_auroc", "n_control_top", "n_selective_category_frames", "n_above_threshold",
                  "fire_rate", "n_firing", "n_specific", "fraction_specific", "fraction_specific_shuffle", "specificity_median",
                  "specificity_median_shuffle", "sensitivity_median_specific", "separability_median", "density_words_median",
                  "density_tokens_median", "specificity_corpus_median_specific", "specificity_corpus_random_matched", "specificity_corpus_zero_share")
PURITY = 0.9  # share of a unit's activation mass in one category that makes it "pure"


def unit_table(acts: Tensor | np.ndarray, df: pd.DataFrame, live: np.ndarray | None = None, criterion: Criterion = Criterion(),
               n_boot: int = 1000, categories: Sequence[str] = CATEGORIES, concepts: Sequence[str] = CONCEPTS,
               specificity: Specificity = Specificity(), fire_rate: float | np.ndarray | None = None, category_frames: bool = True,
               selective_label: bool = True) -> tuple[pd.DataFrame, float]:
    """One row per unit of word-level activations ``acts`` [n_examples, n_units], and the basis's replication rate.

    Columns: feature, score_reference, ci_low, ci_high, top_concept_reference (the reference study's
    score over the 4 concepts on all sentences), then the final label on the neutral frames
    (top_category, selective, control_top, replication, auroc_heldout, n_active_words,
    mean_<category> for all categories), selective_category_frames and replication_category_frames
    (the same criterion on the category frames), live, causal_effect / causal_p (NaN until
    ``monosem.causal`` fills them for the features it tests), and the columns of ``monosem.specificity.unit_specificity``
    on the neutral frames (``fire_rate``: the rate-matched threshold of a dense basis); ``specificity_corpus`` and
    ``density_tokens`` are NaN until ``add_corpus_columns`` fills them from natural text. ``category_frames`` False: the
    category-frame label is not computed (NaN), to save time on baselines; ``selective_label`` False: neither is the earlier
    label's split confirmation (``replication`` and ``auroc_heldout`` NaN, nothing ``selective``; the means stay).
    """
    acts = np.asarray(acts, dtype=np.float32)
    reference = selectivity_table(acts, df, live, concepts)
    wd = word_data(acts, df, categories, concepts)
    ci_low, ci_high = bootstrap_ci(wd, n_boot, criterion.seed)
    final, rate = selectivity_criterion(acts, df, criterion if selective_label else _NO_SPLITS, categories, concepts, "neutral")
    if not selective_label:
        final[["replication", "auroc_heldout"]] = np.nan
        final[["selective", "control_top", "form_bound"]] = False
        rate = float("nan")
    on_category = (selectivity_criterion(acts, df, criterion, categories, concepts, "category")[0] if category_frames and selective_label
                   else pd.DataFrame({"selective": np.full(acts.shape[1], np.nan), "replication": np.full(acts.shape[1], np.nan)}))
    table = pd.DataFrame({"feature": reference["feature"], "score_reference": reference["score"], "ci_low": ci_low, "ci_high": ci_high,
                          "top_concept_reference": reference["top_concept"]})
    table = pd.concat([table, final], axis=1)
    table["selective_category_frames"] = on_category["selective"].to_numpy()
    table["replication_category_frames"] = on_category["replication"].to_numpy()
    table["live"] = reference["live"].to_numpy()
    table["causal_effect"] = np.nan
    table["causal_p"] = np.nan
    rows = frame_rows(df, "neutral")
    neutral = word_data(acts[rows], df.loc[rows], categories, concepts)
    groups = lemma_groups(neutral.words, neutral.category)  # a lemma's forms fall in the same half of every split
    spec = unit_specificity(neutral.means(), neutral.category, len(concepts), len(categories), specificity, fire_rate, groups, list(categories))
    for column in spec.columns:
        table[column] = spec[column].to_numpy()
    table["specificity_corpus"] = np.nan
    table["density_tokens"] = np.nan
    return table, rate


_NO_SPLITS = Criterion(min_active_words=10**9)  # tests no unit: the label's means and counts without its split confirmation


def add_corpus_columns(table: pd.DataFrame, profile: dict[str, np.ndarray], categories: Sequence[str] = CATEGORIES) -> np.ndarray:
    """Fill ``specificity_corpus`` (top-N precision for the unit's own category), ``mass_share_corpus`` and ``density_tokens``
    of a unit table from ``monosem.natural.corpus_profile``; returns each unit's category index [n_units] (-1: none)."""
    index = {c: i for i, c in enumerate(categories)}
    own = np.asarray([index.get(c, -1) for c in table["concept"]])
    units = np.arange(len(table))
    table["specificity_corpus"] = np.where(own >= 0, profile["top_precision"][units, np.maximum(own, 0)], np.nan)
    table["mass_share_corpus"] = np.where(own >= 0, profile["mass_share"][units, np.maximum(own, 0)], np.nan)
    table["density_tokens"] = profile["density_tokens"]
    return own


def pure_units(means: np.ndarray, category: np.ndarray, n_categories: int, min_active_words: int = 5, purity: float = PURITY) -> int:
    """Units with at least ``purity`` of their activation mass (summed word means [n_words, n_units]) in one category,
    active on at least ``min_active_words`` words."""
    onehot = (category[None, :] == np.arange(n_categories)[:, None]).astype(np.float64)
    mass = onehot @ means
    total = mass.sum(0)
    share = np.divide(mass.max(0), total, out=np.zeros_like(total), where=total > 0)
    return int(((share >= purity) & ((means > 0).sum(0) >= min_active_words)).sum())


def pure_units_null(means: np.ndarray, category: np.ndarray, n_categories: int, n_shuffles: int = 20, seed: int = 0, **kwargs: Any) -> float:
    """Mean ``pure_units`` count when category labels are shuffled across words (what chance gives)."""
    rng = np.random.default_rng(seed)
    return float(np.mean([pure_units(means, rng.permutation(category), n_categories, **kwargs) for _ in range(n_shuffles)]))


def k_sparse_probe_auroc(means: np.ndarray, category: np.ndarray, n_concepts: int, k: int, halves: np.ndarray) -> float:
    """SAEBench-style k-sparse probing (``monosem.probes.probe_once``, standard setting): per concept and split, the k units
    with the largest mean difference (concept words minus all other words, controls included) on the training half, a
    logistic probe on them (k = 1: the unit itself), its AUROC on the held-out words; the mean over concepts and splits.
    ``means`` [n_words, n_units]; ``halves`` [n_splits, n_words]."""
    return float(np.mean([probe_once(means, category, n_concepts, np.flatnonzero(h), np.flatnonzero(~h), k) for h in halves]))


def scorecard_row(table: pd.DataFrame, replication_rate: float, acts: Tensor | np.ndarray, df: pd.DataFrame, threshold: float,
                  criterion: Criterion = Criterion(), n_probe_splits: int = 5, categories: Sequence[str] = CATEGORIES,
                  concepts: Sequence[str] = CONCEPTS, specificity: Specificity = Specificity(), fire_rate: float | np.ndarray | None = None,
                  random_matched: np.ndarray | None = None, n_shuffles: int = 5) -> dict[str, float]:
    """The scorecard (``SCORECARD_KEYS``) of one basis at one layer, from its ``unit_table`` and its activations on the neutral frames.

    ``random_matched``: per specific unit, the corpus top-N precision of same-density random units of the basis
    (``monosem.natural.matched_random_precision``); the ``*_shuffle`` keys: the same label with the words' categories
    shuffled (``n_shuffles`` times), what chance gives at this basis's density."""
    rows = frame_rows(df, "neutral")
    wd = word_data(np.asarray(acts, dtype=np.float32)[rows], df.loc[rows], categories, concepts)
    means = wd.means().astype(np.float64)
    n_active = int(np.sum(table["n_active_words"].to_numpy() >= criterion.min_active_words))
    n_selective = int(np.sum(table["selective"].to_numpy()))
    halves = split_halves(wd.category, n_probe_splits, criterion.seed + 1)
    firing_units = table["n_fire_words"].to_numpy() >= specificity.min_fire_words
    specific = table["specific"].to_numpy().astype(bool)
    rng = np.random.default_rng(specificity.seed + 7)
    rates = fire_rate[firing_units] if isinstance(fire_rate, np.ndarray) else fire_rate
    shuffled = [unit_specificity(means[:, firing_units], rng.permutation(wd.category), len(concepts), len(categories), specificity, rates)
                for _ in range(n_shuffles if firing_units.any() else 0)]

    def median(column: str, mask: np.ndarray) -> float:
        values = table[column].to_numpy()[mask]
        values = values[~np.isnan(values)]
        return float(np.median(values)) if len(values) else float("nan")

    n_firing = int(firing_units.sum())
    corpus = table["specificity_corpus"].to_numpy(dtype=np.float64)[specific]  # the specific units' natural-text precision
    labelled, nan = bool(table["replication"].notna().any()), float("nan")  # the earlier label computed (unit_table's selective_label)
    return {
        "n_units": int(len(table)),
        "n_active": n_active,
        "n_selective": n_selective if labelled else nan,
        "fraction_selective_active": (n_selective / n_active if n_active else 0.0) if labelled else nan,
        "replication_rate": replication_rate,
        "pure_units": pure_units(means, wd.category, len(categories), criterion.min_active_words),
        "pure_units_null": pure_units_null(means, wd.category, len(categories), seed=criterion.seed, min_active_words=criterion.min_active_words),
        "probe_k1_auroc": k_sparse_probe_auroc(means, wd.category, len(concepts), 1, halves),
        "probe_k5_auroc": k_sparse_probe_auroc(means, wd.category, len(concepts), 5, halves),
        "n_control_top": int(np.sum(table["control_top"].to_numpy())) if labelled else nan,
        "n_selective_category_frames": float(np.sum(table["selective_category_frames"].to_numpy().astype(float))),  # NaN: not computed
        "n_above_threshold": int(np.sum(table["score_reference"].to_numpy() > threshold)),
        "fire_rate": float("nan") if fire_rate is None else float(np.median(fire_rate)),  # the median of per-unit rates
        "n_firing": n_firing,
        "n_specific": int(specific.sum()),
        "fraction_specific": float(specific.sum() / n_firing) if n_firing else 0.0,
        "fraction_specific_shuffle": float(np.mean([t["specific"].mean() for t in shuffled])) if shuffled else 0.0,
        "specificity_median": median("specificity_templates", firing_units),
        "specificity_median_shuffle": float(np.mean([t["specificity_templates"].median() for t in shuffled])) if shuffled else float("nan"),
        "sensitivity_median_specific": median("sensitivity", specific),
        "separability_median": median("separability", firing_units),
        "density_words_median": median("density_words", table["n_fire_words"].to_numpy() > 0),
        "density_tokens_median": median("density_tokens", table["density_tokens"].to_numpy() > 0),
        "specificity_corpus_median_specific": median("specificity_corpus", specific),
        "specificity_corpus_random_matched": float(np.nanmedian(random_matched)) if random_matched is not None and np.isfinite(random_matched).any()
        else float("nan"),
        "specificity_corpus_zero_share": float(np.mean(corpus[np.isfinite(corpus)] == 0)) if np.isfinite(corpus).any() else float("nan"),
    }


def category_mean_matrix(table: pd.DataFrame, categories: Sequence[str] = CATEGORIES) -> np.ndarray:
    """The mean_<category> columns of a unit table as [n_categories, n_units]."""
    return table[[f"mean_{c}" for c in categories]].to_numpy().T



def set_causal_columns(table: pd.DataFrame, effects: pd.DataFrame) -> None:
    """Fill ``causal_effect`` and ``causal_p`` of ``table`` (a unit table) for the features in ``effects`` (``monosem.causal.causal_effects``)."""
    by_feature = effects.set_index("feature")
    rows = table["feature"].isin(list(by_feature.index)).to_numpy()
    table.loc[rows, ["causal_effect", "causal_p"]] = by_feature.loc[table.loc[rows, "feature"], ["causal_effect", "causal_p"]].to_numpy()
