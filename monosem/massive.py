"""Massive activations: ordinary tokens whose residual norm is many times the layer's median, found, reported and left out.

Some models write a huge vector into the residual stream at a few ordinary tokens (Sun et al. 2024,
"Massive activations in large language models"): in SmolLM2-135M, from block 2 on, the bare-space
token and many occurrences of " the" have norms up to about 10x the median and carry a large share of
the summed squared norm (notebook 01 shows it per layer). An SAE trained on them spends its capacity on those few directions, and an FVE that includes
them mostly measures how well they are reconstructed. The project's choice, as SAELens leaves out
special tokens: a token whose norm exceeds ``factor`` x the layer's median token norm (on the corpus
sample) at *any* analysed layer is left out of SAE training at every layer (so a batch holds the same
tokens at every layer) and of the SAEs' initialisation (mean and input scale), and FVE, L0 and the dead
fraction are measured without them (``fve``, with the same any-layer rule), FVE also with them
(``fve_all_tokens``). The rule is per occurrence: a token type can be massive in some contexts and not
in others (SmolLM2's " the"), and notebook 01 shows how many occurrences of each type it removes.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd
import torch
from torch import Tensor


def token_norms(tokens: np.ndarray | Tensor, chunk: int = 65536) -> np.ndarray:
    """Euclidean norm of each row of ``tokens`` [n, d] -> [n] (in chunks, so a memory map is read piecewise)."""
    out = np.empty(len(tokens), dtype=np.float64)
    for i in range(0, len(tokens), chunk):
        out[i : i + chunk] = np.linalg.norm(np.asarray(tokens[i : i + chunk], dtype=np.float32), axis=1)
    return out


def massive_thresholds(norms: dict[int, np.ndarray], factor: float) -> dict[int, float] | None:
    """Per layer, the norm above which a token is massive: ``factor`` x the median of ``norms[L]`` [n]; None when ``factor`` is 0."""
    if not factor:
        return None
    return {int(L): float(factor * np.median(n)) for L, n in norms.items()}


def massive_mask(acts: dict[int, Tensor], thresholds: dict[int, float] | None) -> Tensor:
    """Which tokens are massive at any layer of ``acts`` ({L: [..., d_model]}) -> [...] bool (all False without thresholds)."""
    first = next(iter(acts.values()))
    mask = torch.zeros(first.shape[:-1], dtype=torch.bool, device=first.device)
    for L, x in acts.items():
        if thresholds and L in thresholds:
            mask |= x.norm(dim=-1) > thresholds[L]
    return mask


def massive_report(norms: dict[int, np.ndarray], token_ids: np.ndarray, tokenizer: Any, thresholds: dict[int, float], top: int = 4) -> pd.DataFrame:
    """Per layer: the threshold, the share of tokens above it, their share of the summed squared norm and the commonest
    such tokens (decoded, with how many of their occurrences are above it). ``norms[L]`` [n] and ``token_ids`` [n] describe the same tokens."""
    rows = []
    for L, n in norms.items():
        over = n > thresholds[L]
        common = Counter(np.asarray(token_ids)[over].tolist()).most_common(top)
        occurrences = Counter(np.asarray(token_ids)[np.isin(token_ids, [t for t, _ in common])].tolist())
        rows.append({"layer": L, "median norm": float(np.median(n)), "threshold": thresholds[L], "share of tokens": float(over.mean()),
                     "share of squared norm": float((n[over] ** 2).sum() / max((n**2).sum(), 1e-30)),
                     "commonest massive tokens (flagged / occurrences)": ", ".join(f"{tokenizer.decode([t])!r} ({c} / {occurrences[t]})"
                                                                                   for t, c in common) or "none"})
    return pd.DataFrame(rows).set_index("layer")


def massive_rows(caches: Sequence[Any], thresholds: dict[int, float] | None) -> np.ndarray | None:
    """Which tokens of ``caches`` (in order) are massive at any layer of ``thresholds`` -> [n_total] bool; None without thresholds.
    The same rule as the activation store's, so the SAEs' initialisation and held-out metrics leave out what training left out."""
    if not thresholds:
        return None
    norms = norms_of_caches(caches, list(thresholds))
    return np.any([norms[L] > t for L, t in thresholds.items()], axis=0)


def norms_of_caches(caches: Sequence[Any], layers: Sequence[int]) -> dict[int, np.ndarray]:
    """Token norms per layer over ``caches`` (ActivationCache: ``token_array(L)`` [n, d]) -> {L: [n_total]}."""
    return {int(L): np.concatenate([token_norms(c.token_array(L)) for c in caches]) for L in layers}
