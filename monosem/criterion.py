"""The final label: a unit is *selective* for a concept when its top category among all 8 (controls included) is
that concept, and the top category chosen on half of the words is confirmed on the other half, in most random splits.

The data are word-level activations on the NEUTRAL frames (every neutral frame is used by all 8
categories, so no frame can carry a category; see scripts/make_concepts.py). For each of
``n_splits`` random halvings of each category's words:

- discovery: the unit's top category ``t`` is the argmax of the 8 category means on half D;
- confirmation, on the other half C only: ``t`` is again the argmax, and a one-sided Mann–Whitney
  test of t's words against the words of the runner-up category on C (the highest other category,
  controls included, so a control that ties or sits just below is caught) gives p < alpha. Each unit
  is tested on its own (``multiplicity="none"``, the default), so a unit's label depends on its own
  activations only, never on the other units of its basis; a null unit must pass in at least
  ``min_replication`` of the splits, which no null unit does (tests: 0 of 4,000). ``multiplicity="bh"``
  applies Benjamini–Hochberg across the basis's units per split instead; counts then depend on the
  basis's size and on its other units, which makes bases of different widths incomparable.

``replication`` is the share of splits in which the unit's overall top category is discovered and
confirmed: a split *stability* over the same words, not a probability of replicating on new words.
``auroc_heldout`` scores each split's discovery-half top category on the other half only. ``selective`` requires the top
category to be a concept, ``replication >= min_replication``, activity on at least ``min_active_words`` words, and a
``surface_form_balance`` of at least ``form_bound`` where the concept's words come in two surface forms (digits or
spelled-out numbers, -ed or other emotions, -ing or other actions): a unit that fires on one form only reads the form,
and is counted as ``form_bound`` instead. The word is the unit of every statistic.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd
from scipy.special import ndtr
from torch import Tensor

from monosem.config import RunConfig
from monosem.dataset import CATEGORIES, CONCEPTS, FORM_BOUND, SURFACE_FORMS, UNSPECIFIED
from monosem.specificity import split_halves  # noqa: F401  (re-exported: the word splits of both labels)
from monosem.stats import WordData, group_sums, word_data


@dataclass(frozen=True)
class Criterion:
    """The settings of the final label (their values are stated in every summary)."""

    n_splits: int = 20  # random halvings of each category's words
    alpha: float = 0.05  # level of the confirmation test on the held-out half
    min_replication: float = 0.9  # share of splits that must confirm the top category
    min_active_words: int = 5  # a unit active on fewer words is not a concept feature
    seed: int = 0
    form_bound: float = FORM_BOUND  # a unit whose surface_form_balance is below this reads a form of the words, not the concept
    multiplicity: str = "none"  # "none": each unit tested at alpha on its own; "bh": Benjamini-Hochberg across the basis's units per split

    @classmethod
    def from_config(cls, cfg: RunConfig) -> Criterion:
        """The criterion with the run's alpha, splits, replication level and seed."""
        return cls(n_splits=cfg.n_splits, alpha=cfg.alpha, min_replication=cfg.min_replication, seed=cfg.seed)

    def describe(self) -> dict[str, float | int | str | dict[str, str]]:
        """The settings as recorded in summary.json."""
        across = "BH across the basis's units per split" if self.multiplicity == "bh" else "each unit on its own (no correction across units)"
        return {**dataclasses.asdict(self), "frames": "neutral",
                "test": f"one-sided Mann-Whitney over held-out words, top category vs the runner-up category, {across}",
                "surface_forms": {c: name for c, (name, _) in SURFACE_FORMS.items()}}


def frame_rows(df: pd.DataFrame, kind: str = "neutral") -> np.ndarray:
    """Boolean mask [n_examples] of the rows the criterion uses: frame_kind ``kind``, or every row when the dataset
    does not mark frames (``unspecified``; the notebook then says the frames may carry the category)."""
    kinds = df["frame_kind"].to_numpy() if "frame_kind" in df else np.full(len(df), UNSPECIFIED)
    if (kinds == UNSPECIFIED).all():
        return np.ones(len(df), dtype=bool)
    return kinds == kind


def category_means(means: np.ndarray, category: np.ndarray, n_categories: int, rows: np.ndarray | None = None) -> np.ndarray:
    """Mean over words of each category [n_categories, n_units] of word means [n_words, n_units] (only ``rows`` if given)."""
    if rows is not None:
        means, category = means[rows], category[rows]
    out = np.zeros((n_categories, means.shape[1]))
    for c in range(n_categories):  # row sums per category: faster here than a one-hot matmul, which contends for BLAS threads
        members = category == c
        if members.any():
            out[c] = means[members].sum(0, dtype=np.float64) / members.sum()
    return out


def top_of(cat_means: np.ndarray) -> np.ndarray:
    """Argmax category per unit [n_units], -1 where the unit is silent (all means 0)."""
    top = cat_means.argmax(0)
    return np.where(cat_means.max(0) > 0, top, -1)


def mann_whitney_greater(values: np.ndarray, positive: np.ndarray, ranked: tuple[np.ndarray, np.ndarray] | None = None) -> tuple[np.ndarray, np.ndarray]:
    """One-sided Mann–Whitney test per unit that ``positive`` words exceed the others; returns (AUROC, p) [n_units].

    ``values`` [n_words, n_units]; ``positive`` [n_words, n_units] boolean (the positive class may differ per
    unit); ``ranked``: ``ranks_and_ties(values)`` if already computed. Average ranks for ties, the
    tie-corrected normal approximation with continuity correction (as ``scipy.stats.mannwhitneyu(...,
    alternative="greater", method="asymptotic")``); p = 1 where every value ties.
    """
    ranks, tie_sizes = ranked if ranked is not None else ranks_and_ties(values)
    auroc, p = _mann_whitney_from_ranks(ranks.T, tie_sizes.T, np.broadcast_to(positive, values.shape).T, np.full(values.shape[1], float(values.shape[0])))
    return auroc, p


def _mann_whitney_from_ranks(ranks: np.ndarray, tie_sizes: np.ndarray, positive: np.ndarray, n: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(AUROC, one-sided p) per unit from ranks, tie-group sizes and the positive class [n_units, n_values] (a unit's
    absent values: rank 0, tie size 1, not positive) and the number of values ``n`` [n_units] of each unit."""
    n = n.astype(np.float64)
    n1 = positive.sum(1).astype(np.float64)
    n2 = n - n1
    u = (ranks * positive).sum(1) - n1 * (n1 + 1) / 2
    ties = (tie_sizes**2 - 1).sum(1)  # = sum over tie groups of t^3 - t
    with np.errstate(divide="ignore", invalid="ignore"):  # n < 2 words: no test (var is NaN, p = 1)
        var = n1 * n2 / 12 * ((n + 1) - ties / (n * (n - 1)))
        auroc = np.where((n1 > 0) & (n2 > 0), u / (n1 * n2), np.nan)
        z = np.where(var > 0, (u - n1 * n2 / 2 - 0.5) / np.sqrt(np.where(var > 0, var, 1)), -np.inf)
    return auroc, 1 - ndtr(z)


def ranks_and_ties(values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Average ranks (1-based) within each column of ``values`` [n, units] and the size of each element's tie group.

    One sort per column, done on the transposed (contiguous) array: the same numbers as
    ``scipy.stats.rankdata(values, axis=0)`` and ``rankdata(.., 'max') - rankdata(.., 'min') + 1``.
    """
    rows = np.ascontiguousarray(values.T)  # [units, n]
    order = np.argsort(rows, axis=1, kind="stable")
    sorted_ranks, sorted_sizes = _sorted_ranks(np.take_along_axis(rows, order, 1))
    ranks, sizes = np.empty(rows.shape), np.empty(rows.shape)
    rows_index = np.arange(rows.shape[0])[:, None]
    ranks[rows_index, order] = sorted_ranks
    sizes[rows_index, order] = sorted_sizes
    return ranks.T, sizes.T


def _sorted_ranks(ordered: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Average ranks (1-based) and tie-group sizes of each row of ``ordered`` [units, n], whose rows are sorted ascending."""
    n = ordered.shape[1]
    position = np.broadcast_to(np.arange(n), ordered.shape)
    new_group = np.ones(ordered.shape, dtype=bool)
    new_group[:, 1:] = ordered[:, 1:] != ordered[:, :-1]
    start = np.maximum.accumulate(np.where(new_group, position, 0), axis=1)
    last = np.ones(ordered.shape, dtype=bool)
    last[:, :-1] = new_group[:, 1:]
    end = np.minimum.accumulate(np.where(last, position, n - 1)[:, ::-1], axis=1)[:, ::-1]
    return (start + end) / 2 + 1, (end - start + 1).astype(np.float64)


class _SortedColumns:
    """Each column of ``values`` [n, units] sorted once; the sorted rows of any subset of the n rows then come from a
    boolean gather (a subset keeps the global order), not a new sort. Ties keep the row order, as a stable sort would."""

    def __init__(self, values: np.ndarray) -> None:
        rows = np.ascontiguousarray(values.T)  # [units, n]
        self.order = np.argsort(rows, axis=1, kind="stable")
        self.ordered = np.take_along_axis(rows, self.order, 1)

    def mann_whitney_greater(self, subset: np.ndarray, label: np.ndarray, positive_label: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """``mann_whitney_greater`` on the rows in ``subset`` [n] (boolean) with, per unit, positive = rows whose
        ``label`` [n] equals ``positive_label`` [n_units]."""
        keep = subset[self.order]
        k, units = int(subset.sum()), self.order.shape[0]
        index = self.order[keep].reshape(units, k)  # the subset's rows, ascending per unit
        ranks, sizes = _sorted_ranks(self.ordered[keep].reshape(units, k))
        return _mann_whitney_from_ranks(ranks, sizes, label[index] == positive_label[:, None], np.full(units, float(k)))


def bh_qvalues(p: np.ndarray) -> np.ndarray:
    """Benjamini–Hochberg q-values of p-values [n] (monotone, capped at 1)."""
    p = np.asarray(p, dtype=np.float64)
    n = len(p)
    if n == 0:
        return p
    order = np.argsort(p)
    ranked = p[order] * n / np.arange(1, n + 1)
    q = np.minimum.accumulate(ranked[::-1])[::-1]
    out = np.empty(n)
    out[order] = np.minimum(q, 1.0)
    return out


@dataclass
class Replication:
    """Per unit: overall top category, replication, held-out AUROC; per split: discovered and confirmed [n_splits, n_units]."""

    top: np.ndarray  # [n_units] top category over all words, -1 if silent
    replication: np.ndarray  # [n_units]
    auroc_heldout: np.ndarray  # [n_units] mean over splits of the held-out AUROC of each split's discovery-half top category
    discovered: np.ndarray  # [n_splits, n_units] discovery top is a concept and significant on the discovery half
    confirmed: np.ndarray  # [n_splits, n_units] discovery top confirmed on the held-out half


def _versus_runner_up(values: np.ndarray, category: np.ndarray, top: np.ndarray, cat_means: np.ndarray, chunk: int = 1024) -> np.ndarray:
    """One-sided Mann–Whitney p per unit [n_units] of the words of category ``top[u]`` against the words of the runner-up
    category (the highest other category mean in ``cat_means`` [n_categories, n_units]) only: a control that ties with
    or sits just below the top category keeps it from being confirmed. p = 1 for silent units.

    Vectorised over units: each unit's two groups are gathered into one padded row and ranked by pairwise comparison
    (the groups are small: a category's held-out words), the same statistic as ``mann_whitney_greater`` on the two groups."""
    masked = cat_means.copy()
    valid = top >= 0
    masked[top[valid], np.flatnonzero(valid)] = -np.inf
    runner_up = masked.argmax(0)
    p = np.ones(values.shape[1])
    members = [np.flatnonzero(category == c) for c in range(cat_means.shape[0])]
    width = max((len(m) for m in members), default=0)
    index = np.full((len(members), width), -1)  # each category's rows, padded with -1
    for c, m in enumerate(members):
        index[c, : len(m)] = m
    units_all = np.flatnonzero(valid)
    for start in range(0, len(units_all), chunk):  # bounds the [units, 2w, 2w] comparisons
        units = units_all[start : start + chunk]
        rows = np.concatenate([index[top[units]], index[runner_up[units]]], 1)  # [u, 2w]
        present = rows >= 0
        x = values[np.where(present, rows, 0), units[:, None]]
        positive = present.copy()
        positive[:, width:] = False
        less = ((x[:, None, :] < x[:, :, None]) & present[:, None, :]).sum(2)
        tied = ((x[:, None, :] == x[:, :, None]) & present[:, None, :]).sum(2)  # includes the element itself
        ranks = np.where(present, less + (tied + 1) / 2, 0.0)
        _, p[units] = _mann_whitney_from_ranks(ranks, np.where(present, tied, 1.0), positive, present.sum(1))
    return p


def replicate(wd: WordData, n_categories: int, criterion: Criterion = Criterion()) -> Replication:
    """Discovery on half of each category's words, confirmation on the other half, over ``criterion.n_splits`` splits."""
    means = wd.means().astype(np.float64)
    n_cat = n_categories
    top = top_of(category_means(means, wd.category, n_cat))
    halves = split_halves(wd.category, criterion.n_splits, criterion.seed)
    n_units = means.shape[1]
    discovered = np.zeros((criterion.n_splits, n_units), dtype=bool)
    confirmed = np.zeros((criterion.n_splits, n_units), dtype=bool)
    replicated = np.zeros((criterion.n_splits, n_units), dtype=bool)
    aurocs = np.zeros((criterion.n_splits, n_units))
    columns = _SortedColumns(means)
    for s, half in enumerate(halves):
        t = top_of(category_means(means, wd.category, n_cat, half))
        for rows, is_discovery in ((half, True), (~half, False)):
            auroc, p = columns.mann_whitney_greater(rows, wd.category, t)
            if is_discovery:
                discovered[s] = (t >= 0) & (t < wd.n_concepts) & (p < criterion.alpha)
            else:
                held_means = category_means(means, wd.category, n_cat, rows)
                held_top = top_of(held_means)
                p_runner_up = _versus_runner_up(means[rows], wd.category[rows], t, held_means)
                q = bh_qvalues(p_runner_up) if criterion.multiplicity == "bh" else p_runner_up
                confirmed[s] = (t >= 0) & (held_top == t) & (q < criterion.alpha)
                aurocs[s] = np.where(t >= 0, auroc, np.nan)  # the discovery half's top category, scored on words it never saw
        replicated[s] = confirmed[s] & (t == top)
    scored = ~np.isnan(aurocs)  # silent units have no AUROC: NaN (no warnings.catch_warnings: not thread-safe, and bases run in threads)
    n_scored = scored.sum(0)
    auroc_heldout = np.divide(np.where(scored, aurocs, 0).sum(0), n_scored, out=np.full(aurocs.shape[1], np.nan), where=n_scored > 0)
    return Replication(top, replicated.mean(0), auroc_heldout, discovered, confirmed)


def selectivity_criterion(acts: Tensor | np.ndarray, df: pd.DataFrame, criterion: Criterion = Criterion(),
                          categories: Sequence[str] = CATEGORIES, concepts: Sequence[str] = CONCEPTS, kind: str = "neutral") -> tuple[pd.DataFrame, float]:
    """Per unit of word-level activations ``acts`` [n_examples, n_units] aligned with ``df``: the final label and its parts,
    and the basis's replication rate (see ``replication_rate``).

    Columns: top_category ('' if silent), replication, auroc_heldout, n_active_words, selective,
    control_top (replicated, but its top category is a control), form_bound (replicated with a concept on top, but
    on one surface form of its words: see ``surface_form_balance``), surface_form_balance, top_share (the top category's
    share of the summed positive category means: 1/8 for a unit that fires alike on all 8) and mean_<category> for all categories
    (mean over words of the word-level activation), on the rows of frame kind ``kind`` (see ``frame_rows``).
    """
    rows = frame_rows(df, kind)
    acts = np.asarray(acts, dtype=np.float32)
    wd = word_data(acts[rows], df.loc[rows], categories, concepts)
    means = wd.means().astype(np.float64)
    cat_means = category_means(means, wd.category, len(categories))
    n_active = (means > 0).sum(0)
    # units active on too few words cannot be selective: only the others go through the splits
    tested = np.flatnonzero(n_active >= criterion.min_active_words)
    top = top_of(cat_means)
    replication, auroc_heldout, rate = np.zeros(len(n_active)), np.full(len(n_active), np.nan), float("nan")
    if len(tested):
        rep = replicate(WordData(wd.words, wd.category, wd.counts, wd.sums[:, tested], wd.n_concepts), len(categories), criterion)
        replication[tested], auroc_heldout[tested], rate = rep.replication, rep.auroc_heldout, replication_rate(rep)
    names = np.asarray(list(categories) + [""])
    table = pd.DataFrame({"top_category": names[top], "replication": replication, "auroc_heldout": auroc_heldout, "n_active_words": n_active})
    replicated = (replication >= criterion.min_replication) & (n_active >= criterion.min_active_words)
    balance = surface_form_balance(acts, df, names[top], kind)
    form_bound = balance < criterion.form_bound  # NaN (no surface forms) is never bound
    table["selective"] = (top >= 0) & (top < len(concepts)) & replicated & ~form_bound
    table["control_top"] = (top >= len(concepts)) & replicated
    table["form_bound"] = (top >= 0) & (top < len(concepts)) & replicated & form_bound
    table["surface_form_balance"] = balance
    positive = np.clip(cat_means, 0, None)  # specificity: the top category's share of the (positive) category means
    table["top_share"] = np.divide(positive.max(0), positive.sum(0), out=np.zeros(positive.shape[1]), where=positive.sum(0) > 0)
    for i, c in enumerate(categories):
        table[f"mean_{c}"] = cat_means[i]
    return table, rate


def surface_form_balance(acts: np.ndarray, df: pd.DataFrame, top_category: np.ndarray, frame_kind: str = "neutral",
                         forms: dict[str, tuple[str, str]] = SURFACE_FORMS) -> np.ndarray:
    """Per unit whose top category has surface forms (``SURFACE_FORMS``: numbers in digits or spelled out, actions
    ending in -ing or not, emotions ending in -ed or not): min / max of the unit's mean activation over the category's words of each form (word-level
    means on ``frame_kind`` frames first). 1: both forms alike; 0: only one form. NaN for other units, for a category
    without words of both forms, and for a unit silent on both."""
    out = np.full(acts.shape[1], np.nan)
    rows = frame_rows(df, frame_kind)
    for concept, (_, pattern) in forms.items():
        units = np.flatnonzero(top_category == concept)
        mask = rows & (df["concept"] == concept).to_numpy()
        if not len(units) or not mask.any():
            continue
        words, inverse = np.unique(df["word"].to_numpy()[mask].astype(str), return_inverse=True)
        sums = group_sums(acts[mask][:, units], inverse, len(words))
        means = sums / np.bincount(inverse, minlength=len(words))[:, None]  # word-level means
        has_form = np.array([re.search(pattern, w) is not None for w in words])
        if has_form.all() or not has_form.any():
            continue
        a = np.clip(means[has_form].mean(0), 0, None)  # below zero counts as silent (MLP neurons, residual signs)
        b = np.clip(means[~has_form].mean(0), 0, None)
        hi = np.maximum(a, b)
        out[units] = np.where(hi > 0, np.minimum(a, b) / np.where(hi > 0, hi, 1), np.nan)
    return out


def replication_rate(rep: Replication) -> float:
    """Among (split, unit) pairs whose discovery-half top category is a concept and significant, the share confirmed on the held-out half."""
    n = rep.discovered.sum()
    return float((rep.discovered & rep.confirmed).sum() / n) if n else float("nan")
