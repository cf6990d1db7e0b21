"""k-sparse probes and concept coverage on held-out words: the k = 1 probe in four settings with bootstrap CIs, k = 5 as a
sanity row, and the recall and precision of each concept's family of best specific units (k = 1, 2, 5).

Probe (SAEBench-style, Gurnee et al. 2023): on the discovery half of the words, the k units with the largest mean
difference (concept words minus the negatives); k = 1 scores the held-out words by that unit's activation, k = 5 by a
logistic probe on the 5 units; the score is the held-out AUROC, averaged over the 4 concepts. Settings:

- ``standard``: negatives = every other word (controls included);
- ``few words``: the unit chosen on ``FEW`` words per category only;
- ``other concepts``: negatives = the other concepts' words only (no control words), the harder contrast;
- ``natural text``: the unit chosen on all template words, scored on held-out natural-text tokens (its concept's
  lexicon words against every other word token; ``monosem.natural``).

Each CI: ``n_draws`` draws, each resampling every category's lemma groups with replacement and drawing one halving
(natural text: resampling the texts); percentile interval.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd

from monosem.criterion import mann_whitney_greater
from monosem.specificity import Specificity, category_counts, firing, split_halves

FEW = 5  # words per category in the "few words" setting
SETTINGS = ("standard", "few words", "other concepts")


def logistic_scores(x_train: np.ndarray, y_train: np.ndarray, x_test: np.ndarray, l2: float = 1e-2, iters: int = 25) -> np.ndarray:
    """Decision scores on ``x_test`` of an L2-regularised logistic regression fitted by Newton's method (features standardised)."""
    mu, sd = x_train.mean(0), x_train.std(0) + 1e-8
    xt = np.hstack([np.ones((len(x_train), 1)), (x_train - mu) / sd])
    w = np.zeros(xt.shape[1])
    reg = l2 * np.eye(len(w))
    reg[0, 0] = 0.0
    for _ in range(iters):
        p = 1 / (1 + np.exp(-np.clip(xt @ w, -30, 30)))
        grad = xt.T @ (p - y_train) + reg @ w
        hess = (xt * (p * (1 - p))[:, None]).T @ xt + reg + 1e-9 * np.eye(len(w))
        w -= np.linalg.solve(hess, grad)
    return np.hstack([np.ones((len(x_test), 1)), (x_test - mu) / sd]) @ w


def _auroc(scores: np.ndarray, positive: np.ndarray) -> float:
    """AUROC of ``scores`` [n] for ``positive`` [n] (NaN without both classes)."""
    if positive.all() or not positive.any():
        return float("nan")
    return float(mann_whitney_greater(scores[:, None], positive[:, None])[0][0])


def probe_once(means: np.ndarray, category: np.ndarray, n_concepts: int, train: np.ndarray, test: np.ndarray, k: int = 1,
               setting: str = "standard", rng: np.random.Generator | None = None) -> float:
    """Mean over concepts of the held-out AUROC of a k-sparse probe: ``train``/``test`` [n_words] are row indices (repeats
    allowed: bootstrap draws), ``means`` [n_words, n_units] word means."""
    aurocs = []
    for c in range(n_concepts):
        rows = train
        if setting == "few words":
            rng = rng or np.random.default_rng(0)
            rows = np.concatenate([rng.permutation(train[category[train] == g])[:FEW] for g in np.unique(category[train])])
        negatives_ok = (category < n_concepts) if setting == "other concepts" else np.ones(len(category), dtype=bool)
        y = category == c
        pos, neg = rows[y[rows]], rows[~y[rows] & negatives_ok[rows]]
        if not len(pos) or not len(neg):
            continue
        diff = means[pos].mean(0) - means[neg].mean(0)
        units = np.argsort(-diff, kind="stable")[:k]
        held = test[y[test] | negatives_ok[test]]
        if k == 1:
            scores = means[held, units[0]]
        else:
            fit = np.concatenate([pos, neg])
            scores = logistic_scores(means[fit][:, units], y[fit].astype(np.float64), means[held][:, units])
        aurocs.append(_auroc(scores, y[held]))
    return float(np.nanmean(aurocs)) if aurocs else float("nan")


def _resample(rng: np.random.Generator, category: np.ndarray, groups: np.ndarray) -> np.ndarray:
    """Row indices of a bootstrap draw: each category's lemma groups with replacement, a group's words together."""
    out = []
    for c in np.unique(category):
        members = np.unique(groups[category == c])
        for g in rng.choice(members, len(members)):
            out.append(np.flatnonzero((groups == g) & (category == c)))
    return np.concatenate(out)


def probe_table(means: np.ndarray, category: np.ndarray, groups: np.ndarray, n_concepts: int, n_draws: int = 100, seed: int = 0,
                n_splits: int = 10) -> pd.DataFrame:
    """One row per setting (``SETTINGS``, then k = 5 standard): the held-out AUROC averaged over ``n_splits`` halvings,
    and its bootstrap CI over words (``n_draws`` draws of lemma groups, one halving each). Columns: setting, k, auroc, ci_low, ci_high."""
    rng = np.random.default_rng(seed)
    halves = split_halves(category, n_splits, seed, groups)
    rows = []
    for setting, k in [(s, 1) for s in SETTINGS] + [("standard", 5)]:
        point = float(np.nanmean([probe_once(means, category, n_concepts, np.flatnonzero(h), np.flatnonzero(~h), k, setting, rng) for h in halves]))
        draws = []
        for _ in range(n_draws):
            drawn = _resample(rng, category, groups)
            discovery = split_halves(category, 1, int(rng.integers(2**31)), groups)[0]
            draws.append(probe_once(means, category, n_concepts, drawn[discovery[drawn]], drawn[~discovery[drawn]], k, setting, rng))
        lo, hi = np.nanpercentile(draws, [2.5, 97.5]) if draws else (np.nan, np.nan)
        rows.append({"setting": setting, "k": k, "auroc": point, "ci_low": float(lo), "ci_high": float(hi)})
    return pd.DataFrame(rows)


def natural_probe(means: np.ndarray, category: np.ndarray, n_concepts: int, token_acts: np.ndarray, token_label: np.ndarray,
                  token_text: np.ndarray, n_draws: int = 100, seed: int = 0) -> dict[str, Any]:
    """The k = 1 probe fitted on the template words and scored on natural text: per concept, the unit with the largest
    mean difference on all template words, its AUROC on the tokens of the concept's lexicon words against every other
    word token (``token_label`` >= 0 or -1 with a word); mean over concepts, with a bootstrap CI over texts."""
    units = [int(np.argmax(means[category == c].mean(0) - means[category != c].mean(0))) for c in range(n_concepts)]
    texts = np.unique(token_text)
    by_text = [np.flatnonzero(token_text == t) for t in texts]

    def score(rows: np.ndarray) -> float:
        return float(np.nanmean([_auroc(token_acts[rows, u], token_label[rows] == c) for c, u in enumerate(units)]))

    rng = np.random.default_rng(seed)
    point = score(np.arange(len(token_label)))
    draws = [score(np.concatenate([by_text[i] for i in rng.integers(0, len(texts), len(texts))])) for _ in range(n_draws)]
    lo, hi = np.nanpercentile(draws, [2.5, 97.5]) if draws else (np.nan, np.nan)
    return {"setting": "natural text", "k": 1, "auroc": point, "ci_low": float(lo), "ci_high": float(hi)}


def coverage_table(means: np.ndarray, category: np.ndarray, groups: np.ndarray, concepts: Sequence[str], n_categories: int,
                   settings: Specificity = Specificity(), fire_rate: float | np.ndarray | None = None, ks: Sequence[int] = (1, 2, 5),
                   n_splits: int = 10) -> pd.DataFrame:
    """Per concept and k: the held-out recall (share of the concept's words on which any of the k units fires) and
    precision (share of the words they fire on that are the concept's) of the union of the concept's k most sensitive
    specific units, chosen on the discovery half; means over ``n_splits`` halvings. Columns: concept, k, recall, precision."""
    fire = firing(means, settings.fire_fraction, fire_rate)
    halves = split_halves(category, n_splits, settings.seed, groups)
    out = {(c, k): ([], []) for c in range(len(concepts)) for k in ks}
    for half in halves:
        counts = category_counts(fire, category, n_categories, half.astype(np.float64))
        n_fire = counts.sum(0)
        for c in range(len(concepts)):
            spec = np.divide(counts[c], n_fire, out=np.zeros(len(n_fire)), where=n_fire > 0)
            candidates = np.flatnonzero((spec >= settings.level) & (counts.argmax(0) == c) & (counts[c] >= 1))
            ranked = candidates[np.argsort(-counts[c, candidates], kind="stable")]
            for k in ks:
                hit = fire[:, ranked[:k]].any(1) & ~half if len(ranked) else np.zeros(len(category), dtype=bool)
                held_c = ~half & (category == c)
                out[c, k][0].append((hit & held_c).sum() / max(held_c.sum(), 1))
                out[c, k][1].append((hit & held_c).sum() / hit.sum() if hit.any() else np.nan)
    return pd.DataFrame([{"concept": concepts[c], "k": k, "recall": float(np.mean(r)), "precision": float(np.nanmean(p)) if np.isfinite(p).any() else float("nan")}
                         for (c, k), (r, p) in out.items()])
