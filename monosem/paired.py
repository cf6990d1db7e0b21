"""The headline comparison, paired: SAE features against the model's own neurons on the same resampled words, per metric,
with a bootstrap CI of the difference; coverage of each concept by its best specific units (feature families) and the
k = 1 probe.

Every bootstrap draw resamples each category's lemma groups with replacement (a lemma's forms, e.g. *runs* and
*running*, move together) and recomputes both bases' metrics on the same draw, so the CI is of the paired difference.
Firing is decided once per word (``monosem.specificity.firing``: τ x max, or the rate-matched threshold); a draw only
reweights words. Within a draw the label ``specific`` is the full-data rule without its split confirmation (the top
category is a concept, specificity >= level, enough firing words, hypergeometric p < alpha); the k = 1 probe and the
coverage use one random discovery / held-out halving of the drawn words per draw.

Metrics (each a number per basis):
- ``fraction_specific``: specific units / units firing on >= ``min_fire_words`` words;
- ``specificity``: mean specificity of the firing units;
- ``sensitivity``: mean over concepts of the largest sensitivity among the concept's specific units (0 for a concept
  without one);
- ``coverage_k5``: mean over concepts of the held-out recall of the union of its 5 most sensitive specific units
  (chosen on the discovery half), so a concept split into several features is covered by its family;
- ``probe_k1``: mean over concepts of the held-out AUROC of the single unit with the largest discovery-half mean
  difference (concept words against all other words, controls included).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
from scipy.stats import hypergeom

from monosem.criterion import mann_whitney_greater
from monosem.specificity import Specificity, category_counts, firing, split_halves

METRICS = ("fraction_specific", "specificity", "sensitivity", "coverage_k5", "probe_k1")


@dataclass
class BasisWords:
    """One basis at one layer on the words: word means [n_words, n_units] and which words each unit fires on."""

    name: str
    means: np.ndarray  # [n_words, n_units]
    fire: np.ndarray  # [n_words, n_units] bool

    @classmethod
    def of(cls, name: str, means: np.ndarray, settings: Specificity, fire_rate: float | np.ndarray | None = None) -> BasisWords:
        """The basis's firing from its word means (``fire_rate``: the rate-matched threshold)."""
        return cls(name, np.asarray(means, dtype=np.float64), firing(means, settings.fire_fraction, fire_rate))


LABEL_METRICS = METRICS[:3]  # resampled by half-sampling (see ``paired_comparison``)


def _label_metrics(b: BasisWords, category: np.ndarray, weights: np.ndarray, n_concepts: int, n_categories: int,
                   settings: Specificity) -> dict[str, float]:
    """fraction_specific, specificity, sensitivity on the words with ``weights`` [n_words] > 0 (each counted once)."""
    drawn = (weights > 0).astype(np.float64)
    counts = category_counts(b.fire, category, n_categories, drawn)  # [n_cat, n_units]
    sizes = np.array([drawn[category == c].sum() for c in range(n_categories)])
    n_fire = counts.sum(0)
    top = np.where(n_fire > 0, counts.argmax(0), -1)
    units = np.arange(counts.shape[1])
    own = np.where(top >= 0, counts[np.maximum(top, 0), units], 0.0)
    spec = np.divide(own, n_fire, out=np.zeros_like(own), where=n_fire > 0)
    sens = np.where(top >= 0, own / np.maximum(sizes[np.maximum(top, 0)], 1), 0.0)
    firing_units = n_fire >= settings.min_fire_words
    p = np.ones(len(top))
    ok = firing_units & (top >= 0)
    p[ok] = hypergeom.sf(own[ok] - 1, int(drawn.sum()), sizes[top[ok]], n_fire[ok])
    specific = firing_units & (top >= 0) & (top < n_concepts) & (spec >= settings.level) & (p < settings.alpha)
    best = [float(sens[specific & (top == c)].max()) if (specific & (top == c)).any() else 0.0 for c in range(n_concepts)]
    return {"fraction_specific": float(specific.sum() / max(firing_units.sum(), 1)),
            "specificity": float(np.mean(spec[firing_units])) if firing_units.any() else float("nan"),
            "sensitivity": float(np.mean(best))}


def _family_metrics(b: BasisWords, category: np.ndarray, weights: np.ndarray, half: np.ndarray, n_concepts: int, n_categories: int,
                    settings: Specificity) -> dict[str, float]:
    """coverage_k5 and probe_k1 on words weighted by ``weights`` [n_words] (bootstrap multiplicities), ``half`` the discovery words."""
    train, test = half & (weights > 0), ~half & (weights > 0)
    counts_d = category_counts(b.fire, category, n_categories, weights * train)
    nd = counts_d.sum(0)
    top_d = counts_d.argmax(0)
    rows = np.repeat(np.flatnonzero(test), weights[test].astype(np.int64))
    wt = weights * train
    sums = category_counts(b.means, category, n_categories, wt)  # [n_cat, n_units] weighted activation sums on the discovery words
    sizes = np.array([wt[category == c].sum() for c in range(n_categories)])
    recalls, aurocs = [], []
    for c in range(n_concepts):
        y = category == c
        # coverage: the 5 most sensitive specific units of concept c on the discovery words, their union on the held-out words
        spec_d = np.divide(counts_d[c], nd, out=np.zeros(len(nd)), where=nd > 0)
        candidates = np.flatnonzero((spec_d >= settings.level) & (counts_d[c] >= 1) & (top_d == c))
        chosen = candidates[np.argsort(-counts_d[c, candidates], kind="stable")[:5]]
        held = test & y
        hit = b.fire[:, chosen].any(1) if len(chosen) else np.zeros(len(y), dtype=bool)
        recalls.append(float((weights * (held & hit)).sum() / max((weights * held).sum(), 1e-12)))
        # the k = 1 probe: the unit with the largest discovery mean difference, its AUROC on the held-out words
        rest = sizes.sum() - sizes[c]
        diff = sums[c] / max(sizes[c], 1e-12) - (sums.sum(0) - sums[c]) / max(rest, 1e-12)
        unit = int(np.argmax(diff))
        auroc, _ = mann_whitney_greater(b.means[rows, unit][:, None], y[rows][:, None])
        aurocs.append(float(auroc[0]))
    return {"coverage_k5": float(np.mean(recalls)), "probe_k1": float(np.nanmean(aurocs))}


def _draw_groups(rng: np.random.Generator, category: np.ndarray, groups: np.ndarray, replace: bool) -> np.ndarray:
    """Word weights [n_words]: each category's lemma groups drawn with replacement (bootstrap) or half of them without (half-sample)."""
    weights = np.zeros(len(category))
    for c in np.unique(category):
        members = np.unique(groups[category == c])
        picked = rng.choice(members, len(members)) if replace else rng.permutation(members)[: len(members) // 2]
        picked, times = np.unique(picked, return_counts=True)
        for g, t in zip(picked, times):
            weights[(groups == g) & (category == c)] += t
    return weights


def paired_comparison(a: BasisWords, b: BasisWords, category: np.ndarray, groups: np.ndarray, n_concepts: int, n_categories: int,
                      settings: Specificity = Specificity(), n_boot: int = 200, seed: int = 0, level: float = 0.95, n_splits: int = 10) -> pd.DataFrame:
    """Per metric (rows: METRICS): ``a``'s and ``b``'s value on all words (coverage and probe: the mean over ``n_splits``
    halvings), their difference a - b, and its paired CI over words (lemma ``groups`` [n_words] drawn within categories;
    ``n_boot`` draws).

    coverage_k5 and probe_k1: percentile bootstrap. The label's metrics count each firing word once and a duplicated word
    would inflate a unit's specificity, so they use half-sampling instead: half of each category's lemma groups without
    replacement, whose spread matches the full sample's (McCarthy 1969); the interval is the half-sample quantiles of
    the difference moved to centre on the full-data difference."""
    rng = np.random.default_rng(seed)
    full = np.ones(len(category))
    halves = split_halves(category, n_splits, seed, groups)

    def point(x: BasisWords) -> dict[str, float]:
        family = [_family_metrics(x, category, full, h, n_concepts, n_categories, settings) for h in halves]
        return {**_label_metrics(x, category, full, n_concepts, n_categories, settings),
                **{m: float(np.mean([f[m] for f in family])) for m in METRICS[3:]}}

    point_a, point_b = point(a), point(b)
    draws = []
    for _ in range(n_boot):
        halfsample = _draw_groups(rng, category, groups, replace=False)
        boot = _draw_groups(rng, category, groups, replace=True)
        half = split_halves(category, 1, int(rng.integers(2**31)), groups)[0]
        la, lb = (_label_metrics(x, category, halfsample, n_concepts, n_categories, settings) for x in (a, b))
        fa, fb = (_family_metrics(x, category, boot, half, n_concepts, n_categories, settings) for x in (a, b))
        draws.append({**{m: la[m] - lb[m] for m in LABEL_METRICS}, **{m: fa[m] - fb[m] for m in METRICS[3:]}})
    values = {m: np.asarray([d[m] for d in draws], dtype=np.float64) for m in METRICS}
    tail = (1 - level) / 2
    diff = {m: point_a[m] - point_b[m] for m in METRICS}
    shift = {m: diff[m] - float(np.median(values[m])) if m in LABEL_METRICS and n_boot else 0.0 for m in METRICS}
    lows = {m: float(np.quantile(values[m], tail)) + shift[m] if n_boot else float("nan") for m in METRICS}
    highs = {m: float(np.quantile(values[m], 1 - tail)) + shift[m] if n_boot else float("nan") for m in METRICS}
    return pd.DataFrame({"metric": list(METRICS), a.name: [point_a[m] for m in METRICS], b.name: [point_b[m] for m in METRICS],
                         "difference": [diff[m] for m in METRICS], "ci_low": [lows[m] for m in METRICS], "ci_high": [highs[m] for m in METRICS],
                         "resampling": ["half-sampling" if m in LABEL_METRICS else "bootstrap" for m in METRICS]})


def _stems(word: str) -> set[str]:
    """A word and its candidate stems: -s, -es, -ing (with a doubled consonant or a dropped e)."""
    w = word.lower()
    out = {w}
    if w.endswith("s") and len(w) > 3:
        out |= {w[:-1], w[:-2] if w.endswith("es") else w[:-1]}
    if w.endswith("ing") and len(w) > 5:
        stem = w[:-3]
        out |= {stem, stem + "e"} | ({stem[:-1]} if len(stem) > 2 and stem[-1] == stem[-2] else set())
    return out


def lemma_groups(words: np.ndarray | list[str], category: np.ndarray) -> np.ndarray:
    """A group id per word [n_words]: words of one category sharing a stem (*runs*, *running*) get the same id, so they are
    drawn together."""
    parent = list(range(len(words)))

    def root(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    seen: dict[tuple[int, str], int] = {}
    for i, w in enumerate(words):
        for stem in _stems(str(w)):
            key = (int(category[i]), stem)
            if key in seen:
                parent[root(i)] = root(seen[key])
            else:
                seen[key] = i
    return np.asarray([root(i) for i in range(len(words))])
