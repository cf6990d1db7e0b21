"""Specificity on natural text: held-out corpus tokens with the concept lexicon's label of their word, and per unit the share
of its top-N activating tokens (and of its activation mass) that are words of its concept, against rate-matched random units.

The texts are held-out corpus texts (never used to train an SAE or to pick a unit). Each token gets the word it lies in
(letters, or digits) and that word's category in ``monosem.lexicon`` (a WordNet hyponym lexicon, not the evaluation
words); punctuation, special tokens and massive activations (``monosem.massive``) are left out. Per unit:

- ``top_precision[c]``: among the unit's ``top_n`` highest-activating tokens (with activation > 0), the share whose word is
  in category c's lexicon ([n_units, n_categories]); ``specificity_corpus`` is that share for the unit's own concept;
- ``mass_share[c]``: category c's share of the unit's activation mass on tokens at >= τ x its maximum;
- ``density_tokens``: the share of tokens on which the unit fires (>= τ x its maximum on these tokens, and > 0).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from monosem.activations import encode_examples, length_batches, pad_batch, run_layers
from monosem.dataset import CATEGORIES
from monosem.massive import massive_mask
from monosem.specificity import rate_cut

WORD = re.compile(r"[A-Za-z]+|\d+(?:[.,]\d+)?")
TOP_N = 20


@dataclass
class NaturalTokens:
    """Held-out text tokens: the word each lies in, its lexicon category, its text, and the residual and MLP activations per layer."""

    words: np.ndarray  # [n_tok] the word the token lies in ('' for none)
    label: np.ndarray  # [n_tok] category index of the word in the lexicon, -1 for none
    text: np.ndarray  # [n_tok] index of the text
    resid: dict[int, Tensor]  # {L: [n_tok, d_model]}
    mlp: dict[int, Tensor]  # {L: [n_tok, d_mlp]}

    @property
    def n_tokens(self) -> int:
        return len(self.words)


def _token_words(text: str, offsets: Sequence[tuple[int, int]]) -> list[str]:
    """The word (``WORD``) that each token's character span overlaps first, '' where none."""
    spans = [(m.start(), m.end(), m.group()) for m in WORD.finditer(text)]
    out, j = [], 0
    for a, b in offsets:
        while j < len(spans) and spans[j][1] <= a:
            j += 1
        out.append(spans[j][2] if j < len(spans) and spans[j][0] < b and b > a else "")
    return out


@torch.inference_mode()
def natural_tokens(model: nn.Module, tokenizer: Any, texts: Sequence[str], layers: Sequence[int], label_of: Callable[[str], int],
                   massive: dict[int, float] | None = None, max_length: int = 128, batch_size: int = 16) -> NaturalTokens:
    """Residual and MLP activations of every non-special token of ``texts`` at ``layers`` with its word and its category
    (``label_of(word)`` -> category index or -1), massive activations left out."""
    device = next(model.parameters()).device
    encoded = encode_examples(tokenizer, texts, max_length=max_length)
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    per_text: dict[int, tuple[list[str], dict[int, Tensor], dict[int, Tensor]]] = {}
    for batch in length_batches([len(e.ids) for e in encoded], batch_size):
        ids, attn, keep, _ = pad_batch(encoded, batch, pad_id)
        resid, neurons = run_layers(model, ids.to(device), attn.to(device), layers, mlp=True)
        drop = massive_mask({L: resid[L].float().cpu() for L in layers}, massive)  # [b, t]
        for r, i in enumerate(batch):
            e = encoded[i]
            positions = torch.nonzero(keep[r]).squeeze(1)
            words = _token_words(texts[i], [e.offsets[p] for p in positions.tolist()])
            ok = ~drop[r][positions]
            per_text[i] = ([w for w, k in zip(words, ok.tolist()) if k],
                           {L: resid[L][r, positions][ok].float().cpu() for L in layers},
                           {L: neurons[L][r, positions][ok].float().cpu() for L in layers})
    order = range(len(texts))
    words = np.asarray([w for i in order for w in per_text[i][0]], dtype=object)
    text = np.concatenate([np.full(len(per_text[i][0]), i) for i in order]) if texts else np.zeros(0, dtype=np.int64)
    resid_all = {L: torch.cat([per_text[i][1][L] for i in order]) for L in layers}
    mlp_all = {L: torch.cat([per_text[i][2][L] for i in order]) for L in layers}
    label = np.asarray([label_of(w) if w else -1 for w in words], dtype=np.int64)
    return NaturalTokens(words, label, text, resid_all, mlp_all)


def lexicon_labeller(lexicon: Any, categories: Sequence[str] = CATEGORIES) -> Callable[[str], int]:
    """``word -> index in categories`` (-1: no category) from a ``monosem.lexicon.Lexicon``'s ``label``."""
    index = {c: i for i, c in enumerate(categories)}
    return lambda word: index.get(lexicon.label(word) or "", -1)


def top_tokens(acts: Tensor, top_n: int = TOP_N) -> tuple[Tensor, Tensor]:
    """The ``top_n`` largest activations per unit and their token rows, each [top_n, n_units] (``acts`` [n_tok, n_units])."""
    k = min(top_n, acts.shape[0])
    return torch.topk(acts, k, dim=0)


def corpus_profile(acts: Tensor, label: np.ndarray, n_categories: int, top_n: int = TOP_N, fire_fraction: float = 0.05,
                   fire_rate: float | np.ndarray | None = None) -> dict[str, np.ndarray]:
    """Per unit of token activations ``acts`` [n_tok, n_units] (>= 0) with token categories ``label`` [n_tok]:
    top_precision [n_units, n_categories], mass_share [n_units, n_categories], density_tokens [n_units], n_top [n_units]
    (top tokens with activation > 0). ``fire_rate``: fire on that share of tokens, one for all units or one per unit
    (the density-matched threshold)."""
    acts = acts.float()
    values, rows = top_tokens(acts, top_n)
    positive = values > 0  # [k, n_units]
    top_label = torch.from_numpy(label)[rows]  # [k, n_units]
    n_top = positive.sum(0).numpy()
    precision = np.zeros((acts.shape[1], n_categories))
    for c in range(n_categories):
        precision[:, c] = ((top_label == c) & positive).sum(0).numpy()
    precision = np.divide(precision, n_top[:, None], out=np.full_like(precision, np.nan), where=n_top[:, None] > 0)
    if fire_rate is None:
        cut = fire_fraction * acts.max(0).values
    else:  # the k-th largest per unit, k = round(rate x n_tok) (one rate, or one per unit), as on the words
        cut = torch.from_numpy(rate_cut(acts.numpy(), fire_rate))
    fires = (acts >= cut[None, :]) & (acts > 0)
    mass = torch.where(fires, acts, torch.zeros(()))
    onehot = torch.from_numpy((label[None, :] == np.arange(n_categories)[:, None]).astype(np.float32))  # [n_cat, n_tok]
    by_category = (onehot @ mass).T.numpy().astype(np.float64)  # [n_units, n_cat]
    total = mass.sum(0).numpy().astype(np.float64)
    share = np.divide(by_category, total[:, None], out=np.full_like(by_category, np.nan), where=total[:, None] > 0)
    return {"top_precision": precision, "mass_share": share, "density_tokens": fires.float().mean(0).numpy().astype(np.float64), "n_top": n_top}


def matched_random_precision(precision: np.ndarray, density: np.ndarray, units: np.ndarray, concept: np.ndarray, exclude: np.ndarray,
                             n_match: int = 10) -> np.ndarray:
    """For each unit in ``units`` (with concept index ``concept``), the mean top-N precision for that concept of the
    ``n_match`` units of the same basis whose corpus firing rate is nearest its own (``exclude``: units not to draw, e.g.
    the specific ones) [len(units)]: what a random unit of the same density scores."""
    pool = np.flatnonzero(~exclude & ~np.isnan(precision[:, 0]))
    out = np.full(len(units), np.nan)
    if not len(pool):
        return out
    log_density = np.log(np.maximum(density, 1e-6))
    for j, (u, c) in enumerate(zip(units, concept)):
        nearest = pool[np.argsort(np.abs(log_density[pool] - log_density[u]), kind="stable")[:n_match]]
        out[j] = float(np.nanmean(precision[nearest, c]))
    return out
