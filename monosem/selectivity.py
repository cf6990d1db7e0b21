"""The reference study's selectivity score per unit, its table, the monosemantic pick and the per-layer summary lines."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, cast

import numpy as np
import pandas as pd
from torch import Tensor

from monosem.config import MonosemError
from monosem.dataset import CONCEPTS


def check_threshold(threshold: float) -> float:
    """Return ``threshold`` if it lies in [0, 1], else raise a MonosemError saying so."""
    if not (isinstance(threshold, (int, float)) and 0.0 <= float(threshold) <= 1.0):
        raise MonosemError(f"threshold must be a number in [0, 1] (the score is a fraction), got {threshold!r}")
    return float(threshold)


def class_means(acts: Tensor | np.ndarray, labels: np.ndarray, n_classes: int) -> np.ndarray:
    """Mean activation per class [n_classes, n_units] of ``acts`` [n, n_units] (one matmul)."""
    acts = np.asarray(acts, dtype=np.float64)
    onehot = np.zeros((n_classes, len(labels)))
    onehot[np.asarray(labels), np.arange(len(labels))] = 1.0
    counts = onehot.sum(1, keepdims=True)
    if (counts == 0).any():
        raise MonosemError(f"classes {np.flatnonzero(counts[:, 0] == 0).tolist()} have no examples")
    return onehot @ acts / counts


def selectivity_scores(means: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Reference score per unit = max concept mean / sum of concept means (0 where the sum is 0), and argmax.

    ``means`` [n_concepts, n_units] must be non-negative (ReLU features).
    """
    means = np.asarray(means, dtype=np.float64)
    if (means < 0).any():
        raise MonosemError("selectivity needs non-negative activations (ReLU features); split signed units into + and - parts")
    total = means.sum(0)
    score = np.divide(means.max(0), total, out=np.zeros(means.shape[1]), where=total > 0)
    return score, means.argmax(0)


def selectivity_table(feats: Tensor | np.ndarray, df: pd.DataFrame, live: np.ndarray | None = None, concepts: Sequence[str] = CONCEPTS) -> pd.DataFrame:
    """One row per feature: score, top_concept, mean_<concept> over the concept examples, and ``live``.

    ``feats`` [n_examples, n_features] are word-level feature activations aligned with ``df``.
    """
    feats = np.asarray(feats, dtype=np.float64)
    mask = df["is_concept"].to_numpy()
    labels = df.loc[mask, "concept"].map({c: i for i, c in enumerate(concepts)}).to_numpy()
    means = class_means(feats[mask], labels, len(concepts))
    score, top = selectivity_scores(means)
    table = pd.DataFrame({"feature": np.arange(feats.shape[1]), "score": score, "top_concept": np.asarray(concepts)[top]})
    table.loc[means.sum(0) == 0, "top_concept"] = ""
    for i, c in enumerate(concepts):
        table[f"mean_{c}"] = means[i]
    table["live"] = live if live is not None else (feats > 0).any(0)
    return table


def _score(table: pd.DataFrame) -> pd.Series:
    """The reference score column: ``score_reference`` of a unit table, ``score`` of a ``selectivity_table``."""
    return cast(pd.Series, table["score_reference"] if "score_reference" in table else table["score"])


def monosemantic(table: pd.DataFrame, threshold: float) -> pd.DataFrame:
    """Rows whose reference score exceeds ``threshold`` (the reference criterion), best first."""
    threshold = check_threshold(threshold)
    score = _score(table).to_numpy()
    above = np.flatnonzero(score > threshold)
    return table.iloc[above[np.argsort(-score[above], kind="stable")]]


def layer_summary(table: pd.DataFrame, threshold: float) -> dict[str, Any]:
    """The reference study's per-layer summary (units above the threshold, their indices, the mean score over all and
    live units) and, for a unit table (``monosem.scorecard.unit_table``), the final label's counts."""
    mono = monosemantic(table, threshold)
    live = table["live"].to_numpy()
    score = _score(table)
    out: dict[str, Any] = {
        "n_features": int(len(table)),
        "n_monosemantic": int(len(mono)),
        "monosemantic_indices": sorted(int(i) for i in mono["feature"]),
        "mean_selectivity": float(cast(float, score.mean())),
        "mean_selectivity_live": float(cast(float, score[live].mean())) if live.any() else 0.0,
        "n_dead": int((~live).sum()),
    }
    if "selective" in table:
        selective = table.loc[table["selective"].to_numpy()]
        out.update(n_selective=int(len(selective)), selective_indices=sorted(int(i) for i in selective["feature"]),
                   n_selective_by_concept={str(c): int(n) for c, n in selective["top_category"].value_counts().sort_index().items()},
                   n_control_top=int(np.sum(table["control_top"].to_numpy())),
                   n_selective_category_frames=int(np.sum(table["selective_category_frames"].to_numpy())))
        if "specific" in table:  # the label of monosem.specificity
            specific = table.loc[table["specific"].to_numpy().astype(bool)]
            out.update(n_specific=int(len(specific)),
                       n_specific_by_concept={str(c): int(n) for c, n in specific["concept"].value_counts().sort_index().items()})
        if "form_bound" in table:  # replicated with a concept on top, but on one surface form of its words only: not selective
            bound = table.loc[table["form_bound"].to_numpy().astype(bool)]
            out.update(n_form_bound=int(len(bound)),
                       n_form_bound_by_concept={str(c): int(n) for c, n in bound["top_category"].value_counts().sort_index().items()})
    return out


def summary_line(layer: int, s: dict) -> str:
    """'Layer 0: found N monosemantic features, indices [...], average selectivity ...' (the reference's shape), then the
    final label's count when the summary has it."""
    idx = s["monosemantic_indices"]
    shown = str(idx[:20])[:-1] + (", ...]" if len(idx) > 20 else "]")
    line = (f"Layer {layer}: found {s['n_monosemantic']} monosemantic features, indices {shown}, "
            f"average selectivity {s['mean_selectivity']:.3f} (live features: {s['mean_selectivity_live']:.3f}, dead: {s['n_dead']})")
    if "n_selective" in s:
        by_concept = ", ".join(f"{c} {n}" for c, n in s["n_selective_by_concept"].items()) or "none"
        line += (f"; final label: {s['n_selective']} selective ({by_concept}), {s['n_control_top']} with a control category on top, "
                 f"{s['n_selective_category_frames']} selective on the category frames")
        if "n_form_bound" in s:
            line += f", {s['n_form_bound']} bound to one surface form of their concept's words (not selective)"
    return line


def word_means(feats: Tensor | np.ndarray, df: pd.DataFrame) -> pd.DataFrame:
    """Mean feature activation per word over its sentences: [n_words, n_features], indexed by word."""
    words, labels = np.unique(df["word"].to_numpy(), return_inverse=True)
    return pd.DataFrame(class_means(feats, labels, len(words)), index=words)


def top_words(wm: pd.DataFrame, feature: int, k: int = 10) -> pd.Series:
    """The ``k`` words with the highest mean activation of ``feature``."""
    return cast(pd.Series, wm[feature]).sort_values(ascending=False).head(k)


def top_features(table: pd.DataFrame, k: int = 8, concepts: Sequence[str] = CONCEPTS) -> list[int]:
    """The ``k`` features to show for a layer: those labelled ``specific`` first (most sensitive first), then the earlier
    label ``selective`` (by held-out AUROC), then by reference score (ties: higher mean activation first); dead features never."""
    live = table.loc[table["live"].to_numpy()]
    act_cols = [f"mean_{c}" for c in concepts if f"mean_{c}" in live]
    order = live.assign(_spec=live["specific"].astype(bool) if "specific" in live else False,
                        _sens=live["sensitivity"].fillna(0) if "sensitivity" in live else 0.0,
                        _sel=live["selective"] if "selective" in live else False,
                        _effect=live["auroc_heldout"].fillna(0) if "auroc_heldout" in live else 0.0,
                        _score=_score(live), _act=live[act_cols].max(axis=1))
    return order.sort_values(["_spec", "_sens", "_sel", "_effect", "_score", "_act"], ascending=False).head(k)["feature"].astype(int).tolist()


def reference_pick(feats: Tensor | np.ndarray, k: int = 8) -> list[int]:
    """The reference study's pick: the ``k`` features with the highest variance across examples."""
    var = np.asarray(feats, dtype=np.float64).var(0)
    return np.argsort(-var, kind="stable")[:k].tolist()
