"""Causal effect of SAE features: ablating a feature's decoder contribution at layer L, the output change per sentence,
its concentration on the feature's top category (permutation test over words), and the decoder's logit lens.

Ablation: a forward hook on block L subtracts ``f_i(h) * W_dec[i]`` from the residual stream at every
non-special, non-padding position (the layer convention of ``monosem.activations``: block L's output).
``f_i`` is the SAE's activation of feature i on the *clean* residual, which the ablated run shares up to
block L. What changes at the output is measured per sentence, over the same positions:

- causal LM: the mean over positions of KL(p_clean || p_ablated) of the next-token distributions
  (logits through the tied embedding, ``fidelity.lm_logits``), in nats;
- encoder: the mean over positions of 1 - cos(final hidden clean, final hidden ablated).

The logit lens reads a decoder row as a direct write to the logits, ``LN_f(W_dec[i]) @ W_U.T``: it ignores
the blocks after L and exists only for causal LMs (an encoder's base model has no unembedding).
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd
import torch
from torch import Tensor, nn

from monosem.activations import encode_examples, length_batches, pad_batch
from monosem.config import MonosemError
from monosem.dataset import CATEGORIES
from monosem.fidelity import lm_logits
from monosem.layouts import final_norm
from monosem.model import check_layers, get_blocks, is_causal_lm
from monosem.sae.base import SAE
from monosem.stats import group_sums

KL_CHUNK = 256  # positions per float64 log-softmax over the vocabulary (bounds memory: 256 x 50257 x 8 bytes)


def _feature_ids(features: Sequence[int] | np.ndarray | Tensor, d_sae: int) -> Tensor:
    """Feature indices as a long tensor [n_features], each in [0, d_sae), else a MonosemError."""
    if isinstance(features, Tensor):
        features = features.cpu().numpy()
    ids = torch.as_tensor(np.asarray(features, dtype=np.int64).reshape(-1))
    bad = ids[(ids < 0) | (ids >= d_sae)].tolist()
    if bad:
        raise MonosemError(f"features {bad[:5]} are outside the SAE (valid: 0..{d_sae - 1})")
    return ids


def _clean_reference(model: nn.Module, causal: bool, clean: Tensor) -> Tensor:
    """What the change is measured against, from clean final hidden states [n, d_model], in float64: next-token
    log-probabilities [n, vocab] of a causal LM, unit vectors [n, d_model] of an encoder."""
    if not causal:
        return torch.nn.functional.normalize(clean.double(), dim=-1)
    return torch.cat([torch.log_softmax(lm_logits(model, clean[i : i + KL_CHUNK]).double(), -1) for i in range(0, len(clean), KL_CHUNK)])


def _output_change(model: nn.Module, causal: bool, reference: Tensor, ablated: Tensor) -> Tensor:
    """Change per position [n] from the clean ``reference`` (``_clean_reference``) to ablated final hidden states [n, d_model].

    Causal LM: KL(p_clean || p_ablated) of the next-token distributions. Encoder: 1 - cos, computed as
    ``|u - v|^2 / 2`` of the unit vectors (the same number without cancellation: exactly 0 when equal).
    """
    if not causal:
        return 0.5 * (reference - torch.nn.functional.normalize(ablated.double(), dim=-1)).pow(2).sum(-1)
    out = torch.zeros(len(ablated), dtype=torch.float64, device=ablated.device)
    for start in range(0, len(ablated), KL_CHUNK):
        rows = slice(start, start + KL_CHUNK)
        log_p, log_q = reference[rows], torch.log_softmax(lm_logits(model, ablated[rows]).double(), -1)  # [chunk, vocab]
        out[rows] = (log_p.exp() * (log_p - log_q)).sum(-1).clamp_min(0.0)
    return out


@torch.inference_mode()
def ablation_output_change(model: nn.Module, tokenizer: Any, sae: SAE, layer: int, sentences: Sequence[str],
                           features: Sequence[int] | np.ndarray | Tensor, batch_size: int = 32) -> np.ndarray:
    """Output change per sentence when each feature's decoder contribution is removed at block ``layer``: [n_sentences, n_features].

    For feature i the hook replaces block ``layer``'s output h [batch, seq, d_model] by
    ``h - f_i(h) * W_dec[i]`` at non-special, non-padding positions (special tokens and padding are
    untouched, as in ``splice_fidelity``); ``f_i`` is ``sae.encode_features`` on the clean run. The
    change is averaged over the same positions (see the module docstring: KL in nats for a causal LM,
    1 - cos for an encoder). One clean forward per batch; one ablated forward per feature and batch,
    over the batch's sentences on which the feature fires (elsewhere the ablation is the identity and
    the change is exactly 0).
    """
    blocks = get_blocks(model)
    check_layers([layer], len(blocks), type(model).__name__)
    device = next(model.parameters()).device
    if next(sae.parameters()).device != device:
        sae = copy.deepcopy(sae).to(device)
    feats = _feature_ids(features, sae.d_sae).to(device)
    directions = sae.W_dec[feats].float()  # [n_features, d_model]
    causal = is_causal_lm(model)
    encoded = encode_examples(tokenizer, sentences)
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    change = np.zeros((len(sentences), len(feats)), dtype=np.float64)
    state: dict[str, Any] = {"feature": None}

    def hook(module: nn.Module, args: Any, output: Any) -> Any:
        h = output[0] if isinstance(output, tuple) else output  # [b, t, d]
        keep = state["keep"]  # [b, t] non-special, non-padding
        if state["feature"] is None:  # the clean run: the features' activations on the kept positions
            state["acts"] = sae.encode_features(h[keep].float(), feats)  # [n_kept, n_features]
            return output
        j, rows = state["feature"], state["rows"]
        edited = h.clone()
        sub_keep = keep[rows]
        delta = state["acts"][state["kept_rows"], j, None] * directions[j]  # [n_kept of rows, d]
        edited[sub_keep] = (h[sub_keep].float() - delta).to(h.dtype)
        return (edited,) + tuple(output[1:]) if isinstance(output, tuple) else edited

    handle = blocks[layer].register_forward_hook(hook)
    try:
        for batch in length_batches([len(e.ids) for e in encoded], batch_size):
            ids, attn, keep, _ = (t.to(device) for t in pad_batch(encoded, batch, pad_id))
            state.update(feature=None, keep=keep)
            clean = model(input_ids=ids, attention_mask=attn, use_cache=False).last_hidden_state  # [b, t, d]
            acts = state["acts"]  # [n_kept, n_features]
            reference = _clean_reference(model, causal, clean[keep])  # [n_kept, vocab or d]
            kept_row = torch.nonzero(keep)[:, 0]  # [n_kept] the batch row of each kept position
            for j in range(len(feats)):
                rows = torch.unique(kept_row[acts[:, j] != 0])  # [n_rows] sorted: the sentences on which feature j fires
                if len(rows) == 0:
                    continue
                sub_keep = keep[rows]
                state.update(feature=j, rows=rows, kept_rows=torch.isin(kept_row, rows))
                ablated = model(input_ids=ids[rows], attention_mask=attn[rows], use_cache=False).last_hidden_state
                per_position = _output_change(model, causal, reference[state["kept_rows"]], ablated[sub_keep])  # [n_kept of rows]
                local = torch.nonzero(sub_keep)[:, 0]
                sums = torch.zeros(len(rows), dtype=torch.float64, device=device).index_add_(0, local, per_position)
                means = (sums / sub_keep.sum(1).clamp_min(1)).cpu().numpy()
                change[np.asarray(batch)[rows.cpu().numpy()], j] = means
    finally:
        handle.remove()
    return change


def _top_indices(top_category: Sequence[str] | np.ndarray, categories: Sequence[str]) -> np.ndarray:
    """Index of each feature's top category in ``categories`` [n_features]; -1 for a silent feature ('' or None)."""
    index = {c: i for i, c in enumerate(categories)}
    names = [("" if c is None or (isinstance(c, float) and np.isnan(c)) else str(c)) for c in top_category]
    unknown = sorted({c for c in names if c and c not in index})
    if unknown:
        raise MonosemError(f"top categories {unknown} are not among the categories {list(categories)}")
    return np.array([index.get(c, -1) for c in names], dtype=np.int64)


def causal_effects(change: np.ndarray, df_rows: pd.DataFrame, top_category: Sequence[str] | np.ndarray, categories: Sequence[str] = CATEGORIES,
                   n_perm: int = 1000, seed: int = 0, features: Sequence[int] | np.ndarray | None = None, chunk: int = 250) -> pd.DataFrame:
    """Per feature: how much more its ablation changes the output on its top category's words than on all other words.

    ``change`` [n_sentences, n_features] (from ``ablation_output_change``) is aligned with the rows of
    ``df_rows`` (columns ``word``, ``concept``). The word is the unit: a word's sentences are averaged
    first. ``causal_effect`` = mean over the top category's words - mean over all other words (controls
    included); ``causal_p`` = one-sided permutation p of that difference under shuffling category labels
    across words, ``(1 + #{perm >= observed}) / (1 + n_perm)`` (chunks of ``chunk`` permutations bound
    the memory). A silent feature (top category '' or None) gets NaN. Columns: feature, top_category,
    causal_effect, causal_p; ``features`` names the rows (default 0..n_features-1).
    """
    change = np.asarray(change, dtype=np.float64)
    if change.ndim != 2 or change.shape[0] != len(df_rows) or change.shape[1] != len(top_category):
        raise MonosemError(f"change has shape {change.shape}; expected [{len(df_rows)} sentences, {len(top_category)} features] "
                           "(one row per row of df_rows, one column per top category)")
    words, inverse = np.unique(df_rows["word"].to_numpy(), return_inverse=True)
    codes = pd.Categorical(df_rows["concept"], categories=list(categories)).codes.astype(np.int64)
    if (codes < 0).any():
        raise MonosemError(f"df_rows has categories {sorted(set(df_rows['concept'][codes < 0]))} outside {list(categories)}")
    word_category = np.zeros(len(words), dtype=np.int64)
    word_category[inverse] = codes
    if (word_category[inverse] != codes).any():
        raise MonosemError("a word appears under several categories in df_rows; a word must belong to one category")
    sums = group_sums(np.asarray(change), inverse, len(words))
    word_means = sums / np.bincount(inverse)[:, None]  # [n_words, n_features]
    top = _top_indices(top_category, categories)
    n_top = np.bincount(word_category, minlength=len(categories))[np.maximum(top, 0)]
    valid = (top >= 0) & (n_top > 0) & (n_top < len(words))
    totals = word_means.sum(0)
    tolerance = 1e-9 * np.abs(word_means).max(0, initial=0.0)

    def effects(labels: np.ndarray) -> np.ndarray:
        """Effect of every feature under label assignments [n_rep, n_words] -> [n_rep, n_features]."""
        top_sums = np.zeros((labels.shape[0], change.shape[1]))
        for c in np.unique(top[valid]):
            cols = np.flatnonzero(valid & (top == c))
            top_sums[:, cols] = (labels == c).astype(np.float64) @ word_means[:, cols]
        rest = np.maximum(len(words) - n_top, 1)
        return top_sums / np.maximum(n_top, 1) - (totals - top_sums) / rest

    observed = effects(word_category[None])[0]
    rng = np.random.default_rng(seed)
    exceed = np.zeros(change.shape[1], dtype=np.int64)
    for start in range(0, n_perm, chunk):
        perm = rng.permuted(np.tile(word_category, (min(chunk, n_perm - start), 1)), axis=1)
        exceed += (effects(perm) >= observed - tolerance).sum(0)
    p = (1 + exceed) / (1 + n_perm)
    names = np.asarray(list(categories) + [""], dtype=object)[top]
    return pd.DataFrame({"feature": np.arange(change.shape[1]) if features is None else np.asarray(features),
                         "top_category": names, "causal_effect": np.where(valid, observed, np.nan), "causal_p": np.where(valid, p, np.nan)})


def _final_norm(model: nn.Module) -> tuple[Tensor, bool] | None:
    """The gain [d_model] of the norm applied before the unembedding (``monosem.layouts.final_norm``: GPT-2 ``ln_f``,
    Llama ``norm``) and whether it centres (LayerNorm: yes, RMSNorm: no); None when the model has none."""
    norm = final_norm(model)
    weight = getattr(norm, "weight", None)
    if norm is None or not isinstance(weight, Tensor):
        return None
    return weight, isinstance(norm, nn.LayerNorm)


@torch.inference_mode()
def logit_lens_scores(model: nn.Module, sae: SAE, features: Sequence[int] | np.ndarray | Tensor, final_norm: bool = True) -> Tensor:
    """Direct logit effect of each decoder row, ``LN_f(W_dec[i]) @ W_U.T``: [n_features, vocab] (causal LMs only).

    With ``final_norm``, the final norm's linear part is applied to the row: centring (LayerNorm, not
    RMSNorm) and the gain. The norm's scale 1/sigma is treated as a constant, as TransformerLens's
    ``fold_ln`` does: it is a positive factor per position, which scales a row's scores but does not
    reorder them. The norm's bias adds the same logits for every feature and is left out. Without
    ``final_norm``: the raw ``W_dec[i] @ W_U.T``.
    """
    if not is_causal_lm(model):
        raise MonosemError(f"{type(model).__name__} is an encoder: its base model has no unembedding, so the logit lens "
                           "is defined only for causal LMs (concept_token_rank returns NaN for encoders)")
    feats = _feature_ids(features, sae.d_sae)
    device = next(model.parameters()).device
    rows = sae.W_dec.detach()[feats.to(sae.W_dec.device)].to(device).float()  # [n_features, d_model]
    norm = _final_norm(model) if final_norm else None
    if norm is not None:
        gain, centres = norm
        if centres:
            rows = rows - rows.mean(-1, keepdim=True)
        rows = rows * gain.float()
    return lm_logits(model, rows.to(next(model.parameters()).dtype)).float()


def logit_lens(model: nn.Module, sae: SAE, features: Sequence[int] | np.ndarray | Tensor, tokenizer: Any, k: int = 10,
               final_norm: bool = True) -> list[dict[str, Any]]:
    """Per feature, the ``k`` tokens its decoder row promotes most and least (see ``logit_lens_scores``; causal LMs only).

    Each dict: feature, top_tokens, top_scores, bottom_tokens, bottom_scores (tokens decoded, e.g. ' red',
    best first; bottom_tokens most negative first).
    """
    scores = logit_lens_scores(model, sae, features, final_norm).cpu()  # [n_features, vocab]
    top = scores.topk(k, dim=-1)
    bottom = scores.topk(k, dim=-1, largest=False)
    out = []
    for row, feature in enumerate(_feature_ids(features, sae.d_sae).tolist()):
        out.append({"feature": int(feature),
                    "top_tokens": [tokenizer.decode([t]) for t in top.indices[row].tolist()], "top_scores": top.values[row].tolist(),
                    "bottom_tokens": [tokenizer.decode([t]) for t in bottom.indices[row].tolist()], "bottom_scores": bottom.values[row].tolist()})
    return out


def word_first_tokens(tokenizer: Any, words: Sequence[str]) -> np.ndarray:
    """Token id of each word's first token as it is spelled mid-sentence (after a space) [n_words].

    The token is found by the tokenizer's offsets: the first token that covers a character of the word
    itself. GPT-2 spells ' green' and ' 30' as one token each; SmolLM2 splits ' 30' into ' ', '3', '0',
    and the word's first token is then '3', not the bare space.
    """
    enc = tokenizer([" " + w for w in words], add_special_tokens=False, return_offsets_mapping=True)
    out = []
    for w, ids, offsets in zip(words, enc["input_ids"], enc["offset_mapping"]):
        inside = [i for i, (a, b) in zip(ids, offsets) if b > 1 and a < 1 + len(w)]
        if not inside:
            raise MonosemError(f"no token of {' ' + w!r} covers the word's characters; the tokenizer's offsets look wrong")
        out.append(inside[0])
    return np.array(out, dtype=np.int64)


def shared_first_tokens(tokenizer: Any, words: Sequence[str], n_examples: int = 4) -> dict[str, Any]:
    """How many of ``words`` share their first token (``word_first_tokens``) with another word, which ties their
    logit-lens scores: {n_words, n_sharing, examples: ["'3': 30, 300, 3", ...] (the largest groups first)}."""
    unique = list(dict.fromkeys(words))
    groups: dict[int, list[str]] = {}
    for word, token in zip(unique, word_first_tokens(tokenizer, unique).tolist()):
        groups.setdefault(int(token), []).append(word)
    shared = sorted((g for g in groups.items() if len(g[1]) > 1), key=lambda g: -len(g[1]))
    return {"n_words": len(unique), "n_sharing": sum(len(ws) for _, ws in shared),
            "examples": [f"{tokenizer.decode([t])!r}: {', '.join(ws)}" for t, ws in shared[:n_examples]]}


def concept_token_rank(model: nn.Module, sae: SAE, features: Sequence[int] | np.ndarray | Tensor, tokenizer: Any, df: pd.DataFrame,
                       top_category: Sequence[str] | np.ndarray, categories: Sequence[str] = CATEGORIES, final_norm: bool = True) -> np.ndarray:
    """Per feature, the AUROC of the logit-lens scores of its top category's words against all other words: [n_features].

    A word's score is that of its first token (``word_first_tokens``); the words are the unique words
    of ``df`` (columns word, concept), controls included among the negatives. 1: the decoder row
    promotes the concept's words above every other word; 0.5: no preference. NaN for an encoder (its
    base model has no unembedding) and for a silent feature (top category '' or None).
    """
    top = _top_indices(top_category, categories)
    out = np.full(len(top), np.nan)
    if not is_causal_lm(model):
        return out
    from scipy.stats import rankdata

    vocab = df.drop_duplicates("word")
    word_category = pd.Categorical(vocab["concept"], categories=list(categories)).codes
    token_scores = logit_lens_scores(model, sae, features, final_norm)[:, torch.as_tensor(word_first_tokens(tokenizer, vocab["word"].tolist()))]
    ranks = rankdata(token_scores.cpu().double().numpy(), axis=1)  # [n_features, n_words], ties get average ranks
    for row, c in enumerate(top):
        positive = word_category == c
        n_pos, n_neg = positive.sum(), (~positive).sum()
        if c >= 0 and n_pos and n_neg:
            out[row] = (ranks[row, positive].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg)
    return out
