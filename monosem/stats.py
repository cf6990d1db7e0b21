"""Statistics of the selectivity score with the word as the unit: permutation p, BH q, AUROC, bootstrap CI, held-out agreement.

A word's sentences are not independent, so every resampling moves whole words. All functions are
vectorised over units (and over permutations or resamples, in chunks that bound the memory).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd
from torch import Tensor

from monosem.dataset import CATEGORIES, CONCEPTS
from monosem.selectivity import selectivity_table


@dataclass
class WordData:
    """Per-word activation sums of every unit: the input of all statistics."""

    words: np.ndarray  # [n_words]
    category: np.ndarray  # [n_words] index into the categories (concepts first, then controls)
    counts: np.ndarray  # [n_words] sentences per word
    sums: np.ndarray  # [n_words, n_units] float32
    n_concepts: int = len(CONCEPTS)  # categories [0, n_concepts) are concepts, the rest controls

    @property
    def concept_rows(self) -> np.ndarray:
        return np.flatnonzero(self.category < self.n_concepts)

    def means(self) -> np.ndarray:
        """Mean activation per word [n_words, n_units]."""
        return self.sums / self.counts[:, None]


def word_data(acts: Tensor | np.ndarray, df: pd.DataFrame, categories: Sequence[str] = CATEGORIES, concepts: Sequence[str] = CONCEPTS) -> WordData:
    """Sum the example-level activations [n_examples, n_units] per word (``categories`` start with the ``concepts``)."""
    acts = np.asarray(acts, dtype=np.float32)
    words, inverse = np.unique(df["word"].to_numpy(), return_inverse=True)
    sums = np.zeros((len(words), acts.shape[1]), dtype=np.float64)
    np.add.at(sums, inverse, acts)
    category = np.zeros(len(words), dtype=np.int64)
    category[inverse] = pd.Categorical(df["concept"], categories=list(categories)).codes
    return WordData(words, category, np.bincount(inverse).astype(np.float64), sums.astype(np.float32), len(concepts))


def _scores_from_weights(weights: np.ndarray, sums: np.ndarray, counts: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Reference scores for many label assignments at once.

    ``weights`` [n_rep, n_concepts, n_words] says how often each word counts for each concept
    (one-hot labels, or bootstrap counts); returns scores [n_rep, n_units] and concept means
    [n_rep, n_concepts, n_units].
    """
    n_rep, n_c, n_w = weights.shape
    totals = (weights @ counts).reshape(n_rep, n_c, 1)
    means = (weights.reshape(n_rep * n_c, n_w) @ sums).reshape(n_rep, n_c, -1) / np.maximum(totals, 1e-12)
    total = means.sum(1)
    score = np.divide(means.max(1), total, out=np.zeros_like(total), where=total > 0)
    return score, means


def _onehot(labels: np.ndarray, n_classes: int) -> np.ndarray:
    """[n_rep, n_words] integer labels -> [n_rep, n_classes, n_words] float32 one-hot."""
    out = np.zeros((labels.shape[0], n_classes, labels.shape[1]), dtype=np.float32)
    np.put_along_axis(out, labels[:, None, :], 1.0, axis=1)
    return out


def permutation_pvalues(wd: WordData, n_perm: int = 1000, seed: int = 0, chunk: int = 250) -> np.ndarray:
    """p-value of each unit's reference score under shuffling concept labels across concept *words*.

    p = (1 + #{permutations with score >= observed}) / (1 + n_perm); vectorised over units and
    permutations (chunks of ``chunk`` permutations bound the memory).
    """
    rows = wd.concept_rows
    sums, counts, labels = wd.sums[rows], wd.counts[rows].astype(np.float32), wd.category[rows]
    observed, _ = _scores_from_weights(_onehot(labels[None], wd.n_concepts), sums, counts)
    rng = np.random.default_rng(seed)
    exceed = np.zeros(sums.shape[1], dtype=np.int64)
    for start in range(0, n_perm, chunk):
        n = min(chunk, n_perm - start)
        perm = rng.permuted(np.tile(labels, (n, 1)), axis=1)
        score, _ = _scores_from_weights(_onehot(perm, wd.n_concepts), sums, counts)
        exceed += (score >= observed - 1e-6).sum(0)
    return (1 + exceed) / (1 + n_perm)


def bh_qvalues(p: np.ndarray) -> np.ndarray:
    """Benjamini-Hochberg q-values of p-values (any shape)."""
    p = np.asarray(p, dtype=np.float64)
    flat = p.ravel()
    n = len(flat)
    order = np.argsort(flat)
    ranked = flat[order] * n / np.arange(1, n + 1)
    q = np.minimum.accumulate(ranked[::-1])[::-1]
    out = np.empty(n)
    out[order] = np.minimum(q, 1.0)
    return out.reshape(p.shape)


def selectivity_index(means: np.ndarray) -> np.ndarray:
    """Class-selectivity index (mu_max - mu_rest) / (mu_max + mu_rest) per unit; mu_rest = mean of the other concepts."""
    means = np.asarray(means, dtype=np.float64)
    mu_max = means.max(0)
    mu_rest = (means.sum(0) - mu_max) / (means.shape[0] - 1)
    denom = mu_max + mu_rest
    return np.divide(mu_max - mu_rest, denom, out=np.zeros_like(denom), where=denom > 0)


def auroc_top_concept(wd: WordData, top: np.ndarray) -> np.ndarray:
    """One-vs-rest AUROC of each unit's word-mean activation: words of its top concept vs. all other words (controls included)."""
    from scipy.stats import rankdata

    ranks = rankdata(wd.means(), axis=0)  # ties get average ranks
    onehot = (wd.category[None, :] == np.arange(wd.n_concepts)[:, None]).astype(np.float64)  # [C, n_words]
    rank_sums = (onehot @ ranks)[top, np.arange(len(top))]
    n_pos = onehot.sum(1)[top]
    n_neg = len(wd.words) - n_pos
    return (rank_sums - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg)


def bootstrap_ci(wd: WordData, n_boot: int = 1000, seed: int = 0, level: float = 0.95, chunk: int = 250,
                 method: str = "basic") -> tuple[np.ndarray, np.ndarray]:
    """Bootstrap CI of each unit's reference score, resampling words with replacement within each concept.

    ``method`` 'basic' (default; the reverse-percentile interval ``[2s - q_hi, 2s - q_lo]``, clipped to
    [0, 1]) or 'percentile'. The score is a maximum over concepts, so its bootstrap distribution sits
    above the estimate, and the estimate above the truth, near the floor 1/n_concepts: a percentile
    interval then never covers a true floor (a unit with equal concept means), while the basic interval
    does at close to the nominal rate (tests/test_stats.py measures it).
    """
    if method not in ("basic", "percentile"):
        raise ValueError(f"method must be 'basic' or 'percentile', got {method!r}")
    rows = wd.concept_rows
    sums, counts, labels = wd.sums[rows], wd.counts[rows].astype(np.float32), wd.category[rows]
    rng = np.random.default_rng(seed)
    scores = []
    for start in range(0, n_boot, chunk):
        n = min(chunk, n_boot - start)
        weights = np.zeros((n, wd.n_concepts, len(rows)), dtype=np.float32)
        for c in range(wd.n_concepts):
            members = np.flatnonzero(labels == c)
            draws = rng.integers(0, len(members), (n, len(members)))
            np.add.at(weights, (np.arange(n)[:, None], c, members[draws]), 1.0)  # pyright: ignore[reportArgumentType]
        scores.append(_scores_from_weights(weights, sums, counts)[0])
    scores = np.concatenate(scores)
    tail = (1 - level) / 2 * 100
    q_lo, q_hi = np.percentile(scores, tail, axis=0), np.percentile(scores, 100 - tail, axis=0)
    if method == "percentile":
        return q_lo, q_hi
    observed, _ = _scores_from_weights(_onehot(labels[None], wd.n_concepts), sums, counts)
    return np.clip(2 * observed[0] - q_hi, 0, 1), np.clip(2 * observed[0] - q_lo, 0, 1)


def heldout_agreement(wd: WordData, n_splits: int = 20, seed: int = 0) -> np.ndarray:
    """Per unit, the fraction of random half/half word splits (within each concept) on which the top concept
    found on one half is also the top concept on the other half (a silent half counts as disagreement)."""
    rows = wd.concept_rows
    sums, counts, labels = wd.sums[rows], wd.counts[rows].astype(np.float32), wd.category[rows]
    rng = np.random.default_rng(seed)
    half = np.zeros((n_splits, len(rows)), dtype=bool)
    for c in range(wd.n_concepts):
        members = np.flatnonzero(labels == c)
        for s in range(n_splits):
            half[s, rng.permutation(members)[: len(members) // 2]] = True
    onehot = _onehot(labels[None], wd.n_concepts)[0]  # [C, n_words]
    _, means_a = _scores_from_weights(onehot[None] * half[:, None, :], sums, counts)
    _, means_b = _scores_from_weights(onehot[None] * ~half[:, None, :], sums, counts)
    agree = (means_a.argmax(1) == means_b.argmax(1)) & (means_a.sum(1) > 0) & (means_b.sum(1) > 0)
    return agree.mean(0)


def feature_statistics(acts: Tensor | np.ndarray, df: pd.DataFrame, live: np.ndarray | None = None, n_perm: int = 1000,
                       n_boot: int = 1000, n_splits: int = 20, seed: int = 0, categories: Sequence[str] = CATEGORIES,
                       concepts: Sequence[str] = CONCEPTS) -> pd.DataFrame:
    """The per-unit table with the reference score and its statistics (all vectorised over units).

    Columns: feature, score, top_concept, mean_<concept>, live, selectivity_index, auroc, p,
    ci_low, ci_high, heldout_agreement. q-values are added over layers by ``add_qvalues``.
    """
    table = selectivity_table(acts, df, live, concepts)
    wd = word_data(acts, df, categories, concepts)
    means = table[[f"mean_{c}" for c in concepts]].to_numpy().T
    top = means.argmax(0)
    table["selectivity_index"] = selectivity_index(means)
    table["auroc"] = auroc_top_concept(wd, top)
    table["p"] = permutation_pvalues(wd, n_perm, seed)
    table["ci_low"], table["ci_high"] = bootstrap_ci(wd, n_boot, seed)
    table["heldout_agreement"] = heldout_agreement(wd, n_splits, seed)
    return table


def add_qvalues(tables: dict[int, pd.DataFrame]) -> dict[int, pd.DataFrame]:
    """Add BH q-values computed over all units of all layers in ``tables`` (one family)."""
    layers = list(tables)
    q = bh_qvalues(np.concatenate([tables[L]["p"].to_numpy() for L in layers]))
    start = 0
    for L in layers:
        n = len(tables[L])
        tables[L]["q"] = q[start : start + n]
        start += n
    return tables
