"""Word-level data and the bootstrap CI of the reference score: the word is the unit, a word's sentences move together.

``word_data`` sums each unit's sentence-level activations per word (the input of every word-level
statistic, here and in ``monosem.criterion``); ``bootstrap_ci`` resamples words within each concept,
vectorised over units and resamples (in chunks that bound the memory).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd
from torch import Tensor

from monosem.dataset import CATEGORIES, CONCEPTS


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
    sums = group_sums(acts, inverse, len(words))
    category = np.zeros(len(words), dtype=np.int64)
    category[inverse] = pd.Categorical(df["concept"], categories=list(categories)).codes
    return WordData(words, category, np.bincount(inverse).astype(np.float64), sums.astype(np.float32), len(concepts))


def group_sums(values: np.ndarray, group: np.ndarray, n_groups: int) -> np.ndarray:
    """Float64 sums of the rows of ``values`` [n, units] per ``group`` [n] (ints in [0, n_groups)) -> [n_groups, units].

    The rows are sorted by group (stably) and summed with one ``np.add.reduceat``: the sums of ``np.add.at`` up to
    float64 rounding (reduceat may add long groups in another order), at a fraction of its time."""
    out = np.zeros((n_groups, values.shape[1]), dtype=np.float64)
    if not len(group):
        return out
    order = np.argsort(group, kind="stable")
    ordered = group[order]
    starts = np.flatnonzero(np.r_[True, ordered[1:] != ordered[:-1]])
    out[ordered[starts]] = np.add.reduceat(values[order].astype(np.float64), starts, axis=0)
    return out


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
