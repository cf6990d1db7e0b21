"""Specificity and sensitivity of each unit on the template words, apart: when the unit fires, is it one category (and which),
and on how much of that category does it fire; its Jensen–Shannon separability, its density and the label ``specific``.

The data are word-level activations on the neutral frames (``monosem.stats.word_data``: each word's mean over its
sentences). A unit *fires* on a word when the word's activation is at least ``fire_fraction`` (τ) of the unit's
maximum over the words, and above 0. With that:

- ``specificity_templates`` = P(its category | the unit fires): of the words it fires on, the share of its top
  category (the category with the most firing words; ties: the larger summed activation);
- ``sensitivity`` = P(the unit fires | a word of its category): its firing words of that category / the category's words;
- ``separability`` = the Jensen–Shannon distance of the unit's 8 per-category activation histograms (equal weights,
  logarithm base 8, so 0: the same distribution in every category, 1: disjoint; bin 0 = silent, below τ·max, then
  ``N_BINS`` equal bins up to the maximum), after Fereidouni et al. 2025;
- ``density_words`` = share of the words it fires on; ``density_tokens`` (filled by the caller) = share of corpus tokens.

The label ``specific``: the top category is a concept, ``specificity_templates`` >= ``level`` (0.8), the unit fires on
at least ``min_fire_words`` words, a one-sided hypergeometric test of its firing words' category count gives p < alpha,
and it is confirmed on held-out words: over ``n_splits`` halvings of each category's words, the top category chosen on
one half is the same in at least ``min_replication`` of the splits and its specificity on the other half (threshold from
the discovery half) has a median >= ``level`` (splits where it fires on no held-out word are left out).

``fire_rate``: for a dense basis (residual stream, MLP neurons), each unit's threshold is instead set at the rank that
makes it fire on that share of the words (``matched_rates``: per unit, so that the basis's density distribution is the
sparse basis's): the dense basis is compared with the sparse one at the same density.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np
import pandas as pd
from scipy.stats import hypergeom

N_BINS = 10  # equal-width activation bins above τ·max in the separability histograms


@dataclass(frozen=True)
class Specificity:
    """The settings of the label ``specific`` (stated in every summary)."""

    fire_fraction: float = 0.05  # τ: a unit fires on a word at >= τ x its maximum over the words
    level: float = 0.8  # specificity (templates, all words and held-out) that makes a unit specific
    min_fire_words: int = 3  # a unit firing on fewer words is not labelled
    alpha: float = 0.05  # level of the hypergeometric test of the top category's count among the firing words
    n_splits: int = 20  # discovery / held-out halvings of each category's words
    min_replication: float = 0.9  # share of splits whose discovery-half top category is the unit's top category
    seed: int = 0

    def describe(self) -> dict[str, float | int | str]:
        """The settings as recorded in summary.json."""
        return {**asdict(self), "fires": "word-level activation >= fire_fraction x the unit's maximum over the words, and > 0"}


def rate_cut(values: np.ndarray, rate: float | np.ndarray) -> np.ndarray:
    """Per unit of ``values`` [n, n_units], the value at or above which it fires on a share ``rate`` (scalar or [n_units])
    of the rows: the k-th largest value, k = round(rate x n) (at least 1 for a positive rate; +inf for a rate of 0)."""
    n = values.shape[0]
    k = np.rint(np.broadcast_to(np.asarray(rate, dtype=np.float64), (values.shape[1],)) * n).astype(np.int64)
    k = np.where(np.asarray(rate) > 0, np.clip(k, 1, n), 0)
    ordered = -np.sort(-values, axis=0)  # descending per unit
    return np.where(k > 0, ordered[np.maximum(k - 1, 0), np.arange(values.shape[1])], np.inf)


def firing(means: np.ndarray, fire_fraction: float = 0.05, fire_rate: float | np.ndarray | None = None) -> np.ndarray:
    """Which words each unit fires on [n_words, n_units] (boolean) from word means [n_words, n_units].

    Default: at >= ``fire_fraction`` x the unit's maximum (and > 0). With ``fire_rate`` (a share of the words, one for
    all units or one per unit [n_units]): at or above the unit's value of that rank (and > 0), so each unit fires on
    about that share of the words (``matched_rates`` gives per-unit rates that match another basis's densities)."""
    means = np.asarray(means, dtype=np.float64)
    if fire_rate is not None:
        return (means >= rate_cut(means, fire_rate)[None, :]) & (means > 0)
    peak = means.max(0)
    return (means >= fire_fraction * peak[None, :]) & (peak[None, :] > 0) & (means > 0)


def matched_rates(natural_density: np.ndarray, target: np.ndarray) -> np.ndarray:
    """Per-unit firing rates [n_units] whose distribution is ``target`` [m] (another basis's per-unit densities), given to
    the units in the order of their own ``natural_density`` [n_units] (the τ x max rule): the densest unit gets the
    target's highest density. A dense basis thresholded so is matched to a sparse one in the whole density distribution,
    not only in its median."""
    n = len(natural_density)
    ranks = np.argsort(np.argsort(natural_density, kind="stable"), kind="stable")
    quantiles = ranks / max(n - 1, 1)
    return np.quantile(np.sort(np.asarray(target, dtype=np.float64)), quantiles, method="nearest")


def density_matched(means: np.ndarray, target: np.ndarray, fire_fraction: float = 0.05) -> np.ndarray:
    """Per-unit rates [n_units] for word means [n_words, n_units] whose distribution is ``target`` (``matched_rates`` on
    the units' own densities by the τ x max rule)."""
    return matched_rates(firing(means, fire_fraction).mean(0), target)


def category_counts(fire: np.ndarray, category: np.ndarray, n_categories: int, weights: np.ndarray | None = None) -> np.ndarray:
    """Per category, the firing words [n_categories, n_units] of ``fire`` [n_words, n_units] (boolean; or the summed values
    of a numeric array), each word counted ``weights`` [n_words] times (bootstrap multiplicities, masks; default once).

    Row selections and ``count_nonzero`` per category and weight level: an order of magnitude faster than a float matmul
    on a boolean matrix, which must first be converted."""
    out = np.zeros((n_categories, fire.shape[1]))
    levels = [(1.0, None)] if weights is None else [(float(k), weights == k) for k in np.unique(weights) if k != 0]
    is_bool = fire.dtype == bool
    for c in range(n_categories):
        in_c = category == c
        for k, at_level in levels:
            rows = in_c if at_level is None else in_c & at_level
            if rows.any():
                out[c] += k * (np.count_nonzero(fire[rows], axis=0) if is_bool else fire[rows].sum(0))
    return out


def top_category(counts: np.ndarray, mass: np.ndarray | None = None) -> np.ndarray:
    """The category with the most firing words per unit [n_units] (ties broken by ``mass`` [n_categories, n_units]), -1 if silent."""
    score = counts + (0 if mass is None else 1e-6 * mass / np.maximum(mass.max(0, keepdims=True), 1e-12))
    top = score.argmax(0)
    return np.where(counts.sum(0) > 0, top, -1)


def js_separability(means: np.ndarray, fire: np.ndarray, category: np.ndarray, n_categories: int, n_bins: int = N_BINS) -> np.ndarray:
    """Jensen–Shannon distance (base n_categories, in [0, 1]) of each unit's per-category activation histograms [n_units].

    Bin 0: silent words (not firing); bins 1..n_bins: equal widths from 0 to the unit's maximum. Equal category weights."""
    means = np.asarray(means, dtype=np.float64)
    peak = np.maximum(means.max(0), 1e-12)
    bins = np.where(fire, 1 + np.minimum((means / peak * n_bins).astype(np.int64), n_bins - 1), 0)  # [n_words, n_units]
    n_units = means.shape[1]
    hist = np.zeros((n_categories, n_bins + 1, n_units))
    for c in range(n_categories):
        rows = bins[category == c]
        for b in range(n_bins + 1):
            hist[c, b] = (rows == b).sum(0)
    hist /= np.maximum(hist.sum(1, keepdims=True), 1)
    mixture = hist.mean(0)

    def entropy(p: np.ndarray) -> np.ndarray:
        return -(np.where(p > 0, p * np.log(np.where(p > 0, p, 1)), 0)).sum(-2) / np.log(n_categories)

    divergence = entropy(mixture) - entropy(hist).mean(0)
    return np.sqrt(np.clip(divergence, 0, 1))


def _hypergeom_p(counts: np.ndarray, top: np.ndarray, category: np.ndarray) -> np.ndarray:
    """One-sided p [n_units] of at least the top category's firing count among the firing words, drawn at random."""
    n_words = len(category)
    sizes = np.bincount(category, minlength=counts.shape[0])
    n_fire = counts.sum(0)
    valid = top >= 0
    p = np.ones(counts.shape[1])
    t = top[valid]
    hits = counts[t, np.flatnonzero(valid)]
    p[valid] = hypergeom.sf(hits - 1, n_words, sizes[t], n_fire[valid])
    return p


def split_halves(category: np.ndarray, n_splits: int, seed: int = 0, groups: np.ndarray | None = None) -> np.ndarray:
    """Discovery masks [n_splits, n_words]: half of each category's words (``groups`` [n_words]: words of one lemma move together)."""
    rng = np.random.default_rng(seed)
    groups = np.arange(len(category)) if groups is None else np.asarray(groups)
    halves = np.zeros((n_splits, len(category)), dtype=bool)
    for c in np.unique(category):
        members = np.unique(groups[category == c])
        for s in range(n_splits):
            chosen = rng.permutation(members)[: len(members) // 2]
            halves[s] = halves[s] | ((category == c) & np.isin(groups, chosen))
    return halves


def unit_specificity(means: np.ndarray, category: np.ndarray, n_concepts: int, n_categories: int, settings: Specificity = Specificity(),
                     fire_rate: float | np.ndarray | None = None, groups: np.ndarray | None = None, names: list[str] | None = None) -> pd.DataFrame:
    """Per unit of word means [n_words, n_units] (``category`` [n_words], concepts first): the columns of the module docstring.

    Columns: concept (top category name, '' if silent), specific, specificity_templates, specificity_heldout, sensitivity,
    separability, density_words, n_fire_words, p_hypergeom, replication_specific (the last two held-out columns only for
    the units that pass every other part of the label, NaN elsewhere: the confirmation cannot change the others' label)."""
    means = np.asarray(means, dtype=np.float64)
    fire = firing(means, settings.fire_fraction, fire_rate)
    counts = category_counts(fire, category, n_categories)
    mass = category_counts(np.where(fire, means, 0.0), category, n_categories)
    top = top_category(counts, mass)
    n_fire = counts.sum(0)
    units = np.arange(means.shape[1])
    own = np.where(top >= 0, counts[np.maximum(top, 0), units], 0.0)
    sizes = np.bincount(category, minlength=n_categories).astype(np.float64)
    specificity = np.divide(own, n_fire, out=np.zeros_like(own), where=n_fire > 0)
    sensitivity = np.where(top >= 0, own / sizes[np.maximum(top, 0)], 0.0)
    p = _hypergeom_p(counts, top, category)
    candidate = (top >= 0) & (top < n_concepts) & (specificity >= settings.level) & (n_fire >= settings.min_fire_words) & (p < settings.alpha)
    heldout, replication = np.full(len(top), np.nan), np.full(len(top), np.nan)  # confirmed only where it can decide the label
    if candidate.any():
        rates = fire_rate[candidate] if isinstance(fire_rate, np.ndarray) else fire_rate
        heldout[candidate], replication[candidate] = _confirm(means[:, candidate], category, n_categories, top[candidate], settings, rates, groups)
    names_arr = np.asarray((names or [str(c) for c in range(n_categories)]) + [""])
    specific = candidate & (heldout >= settings.level) & (replication >= settings.min_replication)
    return pd.DataFrame({"concept": names_arr[top], "specific": specific, "specificity_templates": specificity, "specificity_heldout": heldout,
                         "sensitivity": sensitivity, "separability": js_separability(means, fire, category, n_categories),
                         "density_words": n_fire / len(category), "n_fire_words": n_fire.astype(np.int64), "p_hypergeom": p,
                         "replication_specific": replication})


def _confirm(means: np.ndarray, category: np.ndarray, n_categories: int, top: np.ndarray, settings: Specificity, fire_rate: float | np.ndarray | None,
             groups: np.ndarray | None) -> tuple[np.ndarray, np.ndarray]:
    """Median held-out specificity of the discovery-half top category, and the share of splits whose discovery top is ``top``."""
    halves = split_halves(category, settings.n_splits, settings.seed, groups)
    n_units = means.shape[1]
    held = np.full((settings.n_splits, n_units), np.nan)
    same = np.zeros((settings.n_splits, n_units), dtype=bool)
    units = np.arange(n_units)
    for s, half in enumerate(halves):
        fire_d = firing(means[half], settings.fire_fraction, fire_rate)
        counts_d = category_counts(fire_d, category[half], n_categories)
        top_d = top_category(counts_d, category_counts(np.where(fire_d, means[half], 0.0), category[half], n_categories))
        same[s] = (top_d == top) & (top >= 0)
        if fire_rate is None:  # the discovery half's threshold applied to the held-out words
            cut = settings.fire_fraction * means[half].max(0)
        else:
            cut = rate_cut(means[half], fire_rate)
        fire_h = (means[~half] >= cut[None, :]) & (means[~half] > 0)
        counts_h = category_counts(fire_h, category[~half], n_categories)
        total = counts_h.sum(0)
        hits = np.where(top_d >= 0, counts_h[np.maximum(top_d, 0), units], 0.0)
        held[s] = np.where(total > 0, hits / np.maximum(total, 1), np.nan)
    informative = ~np.isnan(held)
    median = np.full(n_units, 0.0)
    has = informative.any(0)
    median[has] = np.nanmedian(held[:, has], axis=0)
    return median, same.mean(0)


def concept_families(table: pd.DataFrame, word_means: pd.DataFrame, concept: str, k: int = 5, fire_fraction: float = 0.05,
                     max_words: int = 8) -> pd.DataFrame:
    """A concept's family: its ``k`` most sensitive units labelled specific (a unit table with ``specific``, ``concept``,
    ``sensitivity``, ``specificity_templates``), each with the words it fires on (``word_means`` [n_words, n_units]
    indexed by word, neutral frames; at >= ``fire_fraction`` x its maximum), strongest first."""
    mask = table["specific"].to_numpy().astype(bool) & (table["concept"].to_numpy() == concept)
    rows = table.loc[mask].sort_values(by=["sensitivity", "specificity_templates"], ascending=False, kind="stable").head(k)
    out = []
    for r in rows.to_dict(orient="records"):
        column = word_means[int(r["feature"])].to_numpy()
        fired = sorted(((float(v), str(w)) for w, v in zip(word_means.index, column) if v >= fire_fraction * column.max() and v > 0), reverse=True)
        out.append({"concept": concept, "feature": int(r["feature"]), "specificity": float(r["specificity_templates"]),
                    "sensitivity": float(r["sensitivity"]), "specificity_corpus": float(r.get("specificity_corpus", np.nan)),
                    "fires on": ", ".join(w for _, w in fired[:max_words]) + (f" (+{len(fired) - max_words})" if len(fired) > max_words else "")})
    return pd.DataFrame(out, columns=["concept", "feature", "specificity", "sensitivity", "specificity_corpus", "fires on"])


def pick_by_concept(table: pd.DataFrame, k: int, concepts: list[str] | tuple[str, ...], specific_only: bool = True) -> list[tuple[int, str]]:
    """Up to ``k`` (unit, concept) pairs of a unit table taken in turn from each concept (most sensitive first, then most
    specific), so a test of "the top units" is not four units of one concept; ``specific_only`` False: any unit whose
    top category is the concept (for a basis with few specific units), specific ones first."""
    queues = {}
    for c in concepts:
        keep = table["concept"].to_numpy() == c
        if specific_only:
            keep &= table["specific"].to_numpy().astype(bool)
        rows = table.loc[keep].assign(_s=table.loc[keep, "specific"].astype(bool))
        rows = rows.sort_values(by=["_s", "sensitivity", "specificity_templates"], ascending=False, kind="stable")
        queues[c] = [int(f) for f in rows["feature"]]
    out: list[tuple[int, str]] = []
    while len(out) < k and any(queues.values()):
        for c in concepts:
            if queues[c] and len(out) < k:
                out.append((queues[c].pop(0), c))
    return out
