"""Concept readout of residual edits: how editing a unit's direction at block L moves a causal LM's next-token probability mass on each concept's words.

A *unit* is an SAE feature (decoder row ``W_dec[i]``), an MLP neuron of block L (its output weight
column ``w_n``, the direction it writes per unit of activation) or a random direction (a fixed random
unit vector, seeded). Every edit changes block L's output h (the residual stream of
``monosem.activations``) at the non-special, non-padding positions of the texts (the convention of
``monosem.causal``); special tokens and padding are never touched:

- **ablate** an SAE feature: ``h - f_i(h) * W_dec[i]``, ``f_i`` the SAE's activation on the clean h;
- **ablate** an MLP neuron: its activation is set to 0 at the input of block L's MLP output
  projection, which changes h by exactly ``-a_n * w_n``;
- **ablate** a random direction r: ``h - ||e_ref|| * r`` with ``e_ref`` the ablation edit of the
  unit it is matched with, position by position (same positions, same norms);
- **steer**: ``h + alpha * u`` at every position, u the unit's direction normalised to norm 1
  (``W_dec[i] / ||W_dec[i]||``, ``w_n / ||w_n||``, r) and alpha one norm for every unit of the layer
  (``steer_norm``; default ``STEER_FRACTION`` of the median residual norm at that layer on these texts).
  Steering adds the direction the unit writes when its activation is positive.

The readout: at a position t the next-token log-mass of concept c is ``m_c(t) = log sum_{v in ids_c} p(v | text up
to t)`` (``concept_log_mass``; ``ids_c`` from ``concept_token_ids``). An edit's outcome is, for every concept,
``delta_c = mean over P of (m_c(t) edited - m_c(t) clean)`` in nats, where P are the positions at which the edit
is non-zero (ablations: where the unit is active; steering: every position); later positions, which an edit
also reaches through attention, are not read. ``mean_norm`` = mean over P of the edit's norm ``||e(t)||``.
An edit that is zero everywhere is not run: n_positions 0, every delta exactly 0, per-norm values NaN.

Signs: removing a concept feature should *lower* its concept's mass (``delta_own < 0``); steering along
it should raise it (``delta_own > 0``). ``specificity_effect = (delta_own - delta_other) / mean_norm``,
with ``delta_other`` the mean of delta_c over the other concepts: nats of own-concept log-mass per unit
of edit norm beyond what the edit does to the other concepts. A random direction takes the concept of
the unit it is matched with, so its row is that unit's same-norm null.
"""

from __future__ import annotations

import copy
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
import torch
from torch import Tensor, nn

from monosem.activations import encode_examples, length_batches, pad_batch
from monosem.config import MonosemError
from monosem.layouts import mlp_out_projection, unembedding
from monosem.model import check_layers, get_blocks, is_causal_lm
from monosem.sae.base import SAE

READOUT_MAX_LENGTH = 24  # tokens per text, the prepended separator included (cost: one forward of the texts per edit; bench/readout_time.py)
READOUT_BATCH = 16  # texts per clean forward, and rows per edited forward (edits on a few texts share a forward)
STEER_FRACTION = 0.25  # default steering norm, a fraction of the median residual norm at the layer (the response is not linear in it: compare at one norm)
LOGIT_CHUNK = 512  # positions per unembedding pass
VOCAB_BLOCK = 4096  # tokens per block of the log-normaliser ([512, 4096] float32 logits: 8 MB)
AMBIGUOUS_WORDS: tuple[str, ...] = ("saw", "content", "tense", "bear")  # concept words whose commonest sense is another word (past of see, ...)
KINDS: tuple[str, ...] = ("SAE feature", "MLP neuron", "random direction")


def _check_causal(model: nn.Module) -> None:
    """A MonosemError unless ``model`` is a causal LM (the readout reads its next-token probabilities)."""
    if not is_causal_lm(model):
        raise MonosemError(f"{type(model).__name__} is an encoder: the concept readout reads next-token probabilities, so it needs a causal LM "
                           "(GPT-2, Llama-style, GPT-NeoX); for an encoder use monosem.causal.ablation_output_change")


def concept_token_ids(tokenizer: Any, words_by_concept: Mapping[str, Sequence[str]], whole_words: bool = True,
                      exclude: Sequence[str] = AMBIGUOUS_WORDS) -> dict[str, Tensor]:
    """Per concept, the token ids [n_ids] with which a next-token prediction of one of its words starts.

    Candidates are the first tokens of ``' ' + word`` and ``' ' + word.capitalize()`` (mid-sentence
    spelling of a GPT-2 / Llama BPE). With ``whole_words`` (default) a candidate is kept only when it
    is the whole word: a first fragment of a longer word is mostly another word or a common piece
    (GPT-2: ' be' of beige, ' bad' of badger, ' Car' of Carrot, ' S' of Sausage; SmolLM2: ' To' of Tofu,
    ' On' of Onion, and the bare ' ' before its digits). Always dropped: blank tokens, the words in
    ``exclude`` (default ``AMBIGUOUS_WORDS``: ' saw' is mostly the past of 'see'), and ids that belong
    to two or more concepts. A concept left without ids is a MonosemError.
    """
    skip = {w.casefold() for w in exclude}
    found: dict[str, set[int]] = {}
    for concept, words in words_by_concept.items():
        ids: set[int] = set()
        for word in words:
            if word.casefold() in skip:
                continue
            for spelled in dict.fromkeys((" " + word, " " + word.capitalize())):
                tokens = tokenizer(spelled, add_special_tokens=False)["input_ids"]
                if tokens and (len(tokens) == 1 or not whole_words) and tokenizer.decode(tokens[:1]).strip():
                    ids.add(int(tokens[0]))
        found[concept] = ids
    owners: dict[int, int] = {}
    for ids in found.values():
        for i in ids:
            owners[i] = owners.get(i, 0) + 1
    out = {c: torch.tensor(sorted(i for i in ids if owners[i] == 1), dtype=torch.long) for c, ids in found.items()}
    empty = [c for c, ids in out.items() if len(ids) == 0]
    if empty:
        raise MonosemError(f"concepts {empty} have no token that starts one of their words and belongs to them alone; "
                           "give them words the tokenizer spells as one token after a space (or pass whole_words=False)")
    return out


def concept_log_mass(logits: Tensor, ids: Mapping[str, Tensor]) -> Tensor:
    """Log next-token probability mass on each concept's ids, ``logsumexp(logits[:, ids_c]) - logsumexp(logits)``: [n, n_concepts] (float32)."""
    logits = logits.float()  # [n, vocab]
    total = logits.logsumexp(-1)  # [n]
    return torch.stack([logits[:, c.to(logits.device)].logsumexp(-1) for c in ids.values()], -1) - total[:, None]


def _hidden_log_mass(model: nn.Module, hidden: Tensor, ids: Mapping[str, Tensor]) -> Tensor:
    """``concept_log_mass`` of final hidden states [n, d_model] through the unembedding (``fidelity.lm_logits``): [n, n_concepts].

    The same numbers without the [n, vocab] logit matrix: the log-normaliser is accumulated over
    blocks of ``VOCAB_BLOCK`` tokens, which stay in the CPU's cache (a third faster than whole rows).
    """
    weight = unembedding(model)  # [vocab, d_model]
    all_ids = torch.cat(list(ids.values())).to(hidden.device)
    sizes = [len(v) for v in ids.values()]
    parts = []
    for start in range(0, len(hidden), LOGIT_CHUNK):
        x = hidden[start : start + LOGIT_CHUNK]  # [chunk, d_model]
        blocks = [(x @ weight[v : v + VOCAB_BLOCK].T).float().logsumexp(-1) for v in range(0, weight.shape[0], VOCAB_BLOCK)]
        total = torch.stack(blocks, -1).logsumexp(-1)  # [chunk]
        chosen = (x @ weight[all_ids].T).float().split(sizes, -1)  # per concept [chunk, n_ids]
        parts.append(torch.stack([c.logsumexp(-1) for c in chosen], -1) - total[:, None])
    return torch.cat(parts) if parts else torch.zeros(0, len(ids), device=hidden.device)


def mlp_output_weight(model: nn.Module, layer: int) -> Tensor:
    """Block ``layer``'s MLP output weight as [d_model, d_mlp]: column n is what neuron n writes per unit of activation."""
    from transformers.pytorch_utils import Conv1D

    projection = mlp_out_projection(model, get_blocks(model)[layer])
    if isinstance(projection, nn.Linear):  # Llama down_proj, GPT-NeoX dense_4h_to_h: weight [d_model, d_mlp]
        return projection.weight
    if isinstance(projection, Conv1D):  # GPT-2 c_proj: y = x @ weight + bias, weight [d_mlp, d_model]
        return projection.weight.T
    raise MonosemError(f"block {layer}'s MLP output projection is a {type(projection).__name__}; the readout knows nn.Linear and "
                       "transformers' Conv1D: add its weight layout to monosem.readout.mlp_output_weight")


@contextmanager
def ablated_neurons(model: nn.Module, layer: int, neurons: Tensor, keep: Tensor) -> Iterator[None]:
    """While open, the model's forward sets MLP neuron ``neurons[r]`` of block ``layer`` to 0 in batch row r at the kept
    positions ``keep`` [b, t] (``neurons`` [b] long; -1: row r untouched), at the input of the MLP output projection."""
    rows = torch.nonzero(neurons >= 0)[:, 0]
    columns = neurons[rows]

    def zero(module: nn.Module, args: Any) -> Any:
        x = args[0].clone()  # [b, t, d_mlp]
        x[rows, :, columns] = torch.where(keep[rows], torch.zeros((), dtype=x.dtype, device=x.device), x[rows, :, columns])
        return (x,) + tuple(args[1:])

    handle = mlp_out_projection(model, get_blocks(model)[layer]).register_forward_pre_hook(zero) if len(rows) else None
    try:
        yield
    finally:
        if handle is not None:
            handle.remove()


@contextmanager
def added_to_residual(model: nn.Module, layer: int, edit: Tensor) -> Iterator[None]:
    """While open, the model's forward adds ``edit`` [b, t, d_model] to block ``layer``'s output."""

    def add(module: nn.Module, args: Any, output: Any) -> Any:
        h = output[0] if isinstance(output, tuple) else output
        edited = (h.float() + edit).to(h.dtype)
        return (edited,) + tuple(output[1:]) if isinstance(output, tuple) else edited

    handle = get_blocks(model)[layer].register_forward_hook(add)
    try:
        yield
    finally:
        handle.remove()


@dataclass
class _Batch:
    """One clean forward: padded ids, attention and keep masks [b, t], and per kept position (row-major order) the block
    outputs and MLP neurons of each layer ({L: [n_kept, d_model]}, {L: [n_kept, d_mlp]}) and the concept log-masses."""

    ids: Tensor
    attn: Tensor
    keep: Tensor
    resid: dict[int, Tensor]
    neurons: dict[int, Tensor]
    log_mass: Tensor  # [n_kept, n_concepts]


@dataclass
class CleanReadout:
    """The clean run that every edit is compared with: the texts' batches and the state read at each layer."""

    texts: tuple[str, ...]
    concepts: tuple[str, ...]
    layers: tuple[int, ...]
    max_length: int
    ids: dict[str, Tensor]
    batches: list[_Batch]

    def residual_norms(self, layer: int) -> Tensor:
        """Norm of block ``layer``'s output at every kept position of every text [n_kept_total]."""
        return torch.cat([b.resid[layer].norm(dim=-1) for b in self.batches])


@torch.inference_mode()
def clean_readout(model: nn.Module, tokenizer: Any, texts: Sequence[str], layers: Sequence[int], ids: Mapping[str, Tensor],
                  max_length: int = READOUT_MAX_LENGTH, batch_size: int = READOUT_BATCH) -> CleanReadout:
    """One clean forward per batch of ``texts`` (cut at ``max_length`` tokens) reading, at every kept position, block outputs and
    MLP neurons of ``layers`` and the concept log-masses; ``concept_edit_effects`` of any of these layers can share it."""
    _check_causal(model)
    blocks = get_blocks(model)
    layers = check_layers(layers, len(blocks), type(model).__name__)
    if len(texts) == 0:
        raise MonosemError("the concept readout needs texts: pass a few held-out corpus texts (16 to 32)")
    vocab = unembedding(model).shape[0]
    device = next(model.parameters()).device
    ids = {c: torch.as_tensor(v, dtype=torch.long).to(device) for c, v in ids.items()}
    bad = [c for c, v in ids.items() if len(v) == 0 or int(v.min()) < 0 or int(v.max()) >= vocab]
    if bad or not ids:
        raise MonosemError(f"concept ids of {bad or 'no concept'} are empty or outside the vocabulary (0..{vocab - 1}); build them with concept_token_ids")
    encoded = encode_examples(tokenizer, texts, max_length=max_length)
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    state: dict[str, Any] = {}

    def read_block(layer: int):
        def fn(module: nn.Module, args: Any, output: Any) -> None:
            h = output[0] if isinstance(output, tuple) else output
            state["resid"][layer] = h[state["keep"]].float()

        return fn

    def read_neurons(layer: int):
        def fn(module: nn.Module, args: Any) -> None:
            state["neurons"][layer] = args[0][state["keep"]].float()

        return fn

    handles = [blocks[L].register_forward_hook(read_block(L)) for L in layers]
    handles += [mlp_out_projection(model, blocks[L]).register_forward_pre_hook(read_neurons(L)) for L in layers]
    batches = []
    try:
        for batch in length_batches([len(e.ids) for e in encoded], batch_size):
            input_ids, attn, keep, _ = (t.to(device) for t in pad_batch(encoded, batch, pad_id))
            state.update(keep=keep, resid={}, neurons={})
            hidden = model(input_ids=input_ids, attention_mask=attn, use_cache=False).last_hidden_state  # [b, t, d]
            batches.append(_Batch(input_ids, attn, keep, state["resid"], state["neurons"], _hidden_log_mass(model, hidden[keep], ids)))
    finally:
        for handle in handles:
            handle.remove()
    if sum(int(b.keep.sum()) for b in batches) == 0:
        raise MonosemError("the readout texts have no ordinary token (only special tokens); pass natural texts")
    return CleanReadout(tuple(texts), tuple(ids), tuple(layers), max_length, ids, batches)


@dataclass(frozen=True)
class _Edit:
    """One edit: which unit, its concept, its direction u [d_model] (norm 1, or 0 for a unit that writes nothing) and,
    for a neuron ablation, the neuron zeroed (-1 otherwise)."""

    kind: str
    edit: str
    unit: int
    matched_unit: int
    concept: str
    direction: Tensor
    neuron: int = -1


def _unit_ids(units: Sequence[int] | np.ndarray | Tensor, size: int, what: str) -> list[int]:
    """Unit indices as ints, each in [0, size), else a MonosemError."""
    values = [int(u) for u in (units.tolist() if isinstance(units, (Tensor, np.ndarray)) else units)]
    bad = [u for u in values if not 0 <= u < size]
    if bad:
        raise MonosemError(f"{what} {bad[:5]} are outside 0..{size - 1}")
    return values


def _unit_directions(weights: Tensor) -> tuple[Tensor, Tensor]:
    """Rows [n, d] as (unit directions [n, d], norms [n]); a zero row keeps direction 0."""
    norms = weights.norm(dim=-1)
    return weights / torch.where(norms > 0, norms, torch.ones_like(norms))[:, None], norms


def _pack_forward(model: nn.Module, layer: int, batch: _Batch, items: list[tuple[int, Tensor, Tensor]], edits: list[_Edit]) -> list[Tensor]:
    """One edited forward over the rows of several edits of one batch; per item (edit index, rows [n_rows], coefficient
    grid [b, t]) the final hidden states [n_P, d_model] at its positions P (non-zero edit), in row-major order."""
    rows = torch.cat([r for _, r, _ in items])
    keep = batch.keep[rows]
    add = torch.zeros(*keep.shape, edits[0].direction.shape[0], device=keep.device)  # [B, t, d]
    neurons = torch.full((len(rows),), -1, dtype=torch.long, device=keep.device)
    start = 0
    for j, r, grid in items:
        if edits[j].neuron >= 0:
            neurons[start : start + len(r)] = edits[j].neuron
        else:
            add[start : start + len(r)] = grid[r][..., None] * edits[j].direction
        start += len(r)
    with ablated_neurons(model, layer, neurons, keep), added_to_residual(model, layer, add):
        hidden = model(input_ids=batch.ids[rows], attention_mask=batch.attn[rows], use_cache=False).last_hidden_state
    out, start = [], 0
    for _, r, grid in items:
        out.append(hidden[start : start + len(r)][grid[r] != 0])
        start += len(r)
    return out


@torch.inference_mode()
def concept_edit_effects(model: nn.Module, tokenizer: Any, layer: int, texts: Sequence[str], sae: SAE | None,
                         features: Sequence[int] | np.ndarray | Tensor, feature_concepts: Sequence[str],
                         neurons: Sequence[int] | np.ndarray | Tensor, neuron_concepts: Sequence[str], ids: Mapping[str, Tensor],
                         n_random: int = 4, seed: int = 0, steer_norm: float | None = None, steer_fraction: float = STEER_FRACTION,
                         batch_size: int = READOUT_BATCH, max_length: int = READOUT_MAX_LENGTH, clean: CleanReadout | None = None) -> pd.DataFrame:
    """Ablate and steer each SAE feature, MLP neuron and random direction at block ``layer`` and read the concept log-masses: one row per edit.

    ``feature_concepts`` / ``neuron_concepts``: each unit's claimed concept (a key of ``ids``). Random
    direction j (``n_random`` of them, seeded by ``seed``, the same at every layer) is matched with SAE
    feature ``features[j % n_features]`` (with neuron ``neurons[j % n_neurons]`` when no features are
    given): its ablation copies that unit's per-position edit norms, and it takes that unit's concept.
    ``steer_norm``: alpha of every steering edit (None: ``steer_fraction`` x the median residual norm at
    the layer). ``clean``: a ``clean_readout`` of these texts, ids and layer to share among layers
    (None: computed here). Columns: layer, kind, edit, unit (-1 for random), matched_unit, concept,
    n_positions, mean_norm, delta_own, delta_other, delta_own_per_norm, delta_other_per_norm,
    specificity_effect and ``delta[<concept>]`` for every concept (the module docstring defines them).
    """
    _check_causal(model)
    check_layers([layer], len(get_blocks(model)), type(model).__name__)
    if clean is None:
        clean = clean_readout(model, tokenizer, texts, [layer], ids, max_length, batch_size)
    elif clean.texts != tuple(texts) or clean.concepts != tuple(ids) or layer not in clean.layers or clean.max_length != max_length:
        raise MonosemError(f"the clean readout was made for other texts, concepts, layers ({list(clean.layers)}) or max_length ({clean.max_length}); "
                           f"make it with clean_readout(model, tokenizer, texts, layers, ids, max_length) for layer {layer}")
    device = next(model.parameters()).device
    concepts = list(clean.concepts)
    w_out = mlp_output_weight(model, layer).detach().float()  # [d_model, d_mlp]
    d_model, d_mlp = w_out.shape
    feats = _unit_ids(features, sae.d_sae if sae is not None else 0, "SAE features")
    neus = _unit_ids(neurons, d_mlp, f"MLP neurons of block {layer}")
    for units, claimed, what in ((feats, feature_concepts, "feature_concepts"), (neus, neuron_concepts, "neuron_concepts")):
        if len(claimed) != len(units) or set(claimed) - set(concepts):
            raise MonosemError(f"{what} must name one concept per unit ({len(units)}), each among {concepts}; got {list(claimed)}")
    matched = [(KINDS[0], f, c) for f, c in zip(feats, feature_concepts)] or [(KINDS[1], n, c) for n, c in zip(neus, neuron_concepts)]
    if n_random and not matched:
        raise MonosemError("random directions are matched with SAE features or MLP neurons: pass some, or n_random=0")
    if sae is not None and next(sae.parameters()).device != device:
        sae = copy.deepcopy(sae).to(device)
    feat_dirs, feat_norms = _unit_directions(sae.W_dec.detach()[feats].float() if sae is not None else torch.zeros(0, d_model, device=device))
    neu_dirs, neu_norms = _unit_directions(w_out[:, neus].T)
    gen = torch.Generator().manual_seed(seed)
    random_dirs = _unit_directions(torch.randn(n_random, d_model, generator=gen))[0].to(device)
    alpha = float(steer_norm) if steer_norm is not None else steer_fraction * float(clean.residual_norms(layer).median())
    if not alpha > 0:
        raise MonosemError(f"the steering norm must be positive, got {alpha}; pass steer_norm > 0")

    units = ([(KINDS[0], f, f, c, feat_dirs[i], -1) for i, (f, c) in enumerate(zip(feats, feature_concepts))]
             + [(KINDS[1], n, n, c, neu_dirs[i], n) for i, (n, c) in enumerate(zip(neus, neuron_concepts))]
             + [(KINDS[2], -1, matched[j % len(matched)][1], matched[j % len(matched)][2], random_dirs[j], -1) for j in range(n_random)])
    edits = [_Edit(kind, "ablate", unit, ref, concept, direction, neuron) for kind, unit, ref, concept, direction, neuron in units]
    edits += [_Edit(kind, "steer", unit, ref, concept, direction) for kind, unit, ref, concept, direction, _ in units]
    n_feats = len(feats)
    match_column = [j % len(matched) + (0 if matched[0][0] == KINDS[0] else n_feats) for j in range(n_random)] if matched else []
    has_direction = torch.stack([e.direction.norm() > 0 for e in edits]).float() if edits else torch.zeros(0, device=device)

    sums = torch.zeros(len(edits), len(concepts), dtype=torch.float64, device=device)
    counts = torch.zeros(len(edits), dtype=torch.float64, device=device)
    norm_sums = torch.zeros(len(edits), dtype=torch.float64, device=device)
    for batch in clean.batches:
        h, a = batch.resid[layer], batch.neurons[layer]  # [n_kept, d_model], [n_kept, d_mlp]
        acts = sae.encode_features(h, torch.tensor(feats, device=device)) if sae is not None and n_feats else h.new_zeros(len(h), 0)
        ablate = torch.cat([-acts * feat_norms, -a[:, neus] * neu_norms], 1)  # [n_kept, n_feats + n_neus]: coefficient of the unit direction
        ablate = torch.cat([ablate, -ablate[:, match_column].abs()], 1)
        coef = torch.cat([ablate, torch.full_like(ablate, alpha)], 1) * has_direction  # [n_kept, n_edits]; 0 where the edit is 0
        norm_sums += coef.abs().double().sum(0)
        counts += (coef != 0).double().sum(0)
        kept_row = torch.nonzero(batch.keep)[:, 0]
        items = []
        for j in torch.nonzero((coef != 0).any(0))[:, 0].tolist():
            grid = torch.zeros(batch.keep.shape, device=device)
            grid[batch.keep] = coef[:, j]
            items.append((j, torch.unique(kept_row[coef[:, j] != 0]), grid))
        clean_grid = torch.zeros(*batch.keep.shape, len(concepts), device=device)
        clean_grid[batch.keep] = batch.log_mass
        pack: list[tuple[int, Tensor, Tensor]] = []
        for k, item in enumerate(items):
            pack.append(item)
            if k + 1 == len(items) or sum(len(r) for _, r, _ in pack) + len(items[k + 1][1]) > batch_size:
                hidden = _pack_forward(model, layer, batch, pack, edits)
                edited = _hidden_log_mass(model, torch.cat(hidden), clean.ids).split([len(x) for x in hidden])
                for (j, _, grid), log_mass in zip(pack, edited):
                    sums[j] += (log_mass - clean_grid[grid != 0]).double().sum(0)
                pack = []
    return _effects_table(layer, edits, concepts, sums, counts, norm_sums)


def _effects_table(layer: int, edits: list[_Edit], concepts: list[str], sums: Tensor, counts: Tensor, norm_sums: Tensor) -> pd.DataFrame:
    """The tidy table of ``concept_edit_effects`` from per-edit sums over positions ([n_edits, n_concepts], [n_edits], [n_edits])."""
    n = counts.cpu().numpy()
    with np.errstate(invalid="ignore", divide="ignore"):
        delta = np.where(n[:, None] > 0, sums.cpu().numpy() / np.maximum(n, 1)[:, None], 0.0)  # [n_edits, n_concepts]
        mean_norm = np.where(n > 0, norm_sums.cpu().numpy() / np.maximum(n, 1), 0.0)
        own_index = np.array([concepts.index(e.concept) for e in edits], dtype=np.int64)
        own = delta[np.arange(len(edits)), own_index]
        other = (delta.sum(1) - own) / max(len(concepts) - 1, 1) if len(concepts) > 1 else np.full(len(edits), np.nan)
        per_norm = np.where(mean_norm > 0, 1.0 / np.where(mean_norm > 0, mean_norm, 1.0), np.nan)
    table = pd.DataFrame({"layer": layer, "kind": [e.kind for e in edits], "edit": [e.edit for e in edits],
                          "unit": [e.unit for e in edits], "matched_unit": [e.matched_unit for e in edits], "concept": [e.concept for e in edits],
                          "n_positions": n.astype(np.int64), "mean_norm": mean_norm, "delta_own": own, "delta_other": other,
                          "delta_own_per_norm": own * per_norm, "delta_other_per_norm": other * per_norm, "specificity_effect": (own - other) * per_norm})
    for c, concept in enumerate(concepts):
        table[f"delta[{concept}]"] = delta[:, c]
    return table


def kind_contrast(effects: pd.DataFrame, column: str = "specificity_effect", n_resamples: int = 2000, seed: int = 0) -> pd.DataFrame:
    """Per edit and pair of kinds, how the mean of ``column`` over units differs (first kind - second), rows of ``concept_edit_effects``.

    Each row of ``effects`` (any layers, pooled) is one unit; rows where ``column`` is NaN (silent units)
    are left out. ``ci_low``/``ci_high``: the 2.5 and 97.5 percentiles of the difference with units
    resampled with replacement within each kind; ``p``: two-sided permutation p of the difference under
    shuffling the kind labels of the two kinds' units, ``(1 + #{|perm| >= |observed|}) / (1 + n_resamples)``.
    Columns: edit, kind_a, kind_b, n_a, n_b, mean_a, mean_b, difference, ci_low, ci_high, p.
    """
    rng = np.random.default_rng(seed)
    rows = []
    for edit in ("ablate", "steer"):
        for i, kind_a in enumerate(KINDS):
            for kind_b in KINDS[i + 1 :]:
                a = effects.loc[(effects.edit == edit) & (effects.kind == kind_a), column].dropna().to_numpy(np.float64)
                b = effects.loc[(effects.edit == edit) & (effects.kind == kind_b), column].dropna().to_numpy(np.float64)
                row = {"edit": edit, "kind_a": kind_a, "kind_b": kind_b, "n_a": len(a), "n_b": len(b), "mean_a": np.nan, "mean_b": np.nan,
                       "difference": np.nan, "ci_low": np.nan, "ci_high": np.nan, "p": np.nan}
                if len(a) and len(b):
                    observed = a.mean() - b.mean()
                    boot = rng.choice(a, (n_resamples, len(a))).mean(1) - rng.choice(b, (n_resamples, len(b))).mean(1)
                    pooled = rng.permuted(np.tile(np.concatenate([a, b]), (n_resamples, 1)), axis=1)
                    perm = pooled[:, : len(a)].mean(1) - pooled[:, len(a) :].mean(1)
                    tolerance = 1e-12 * max(np.abs(pooled).max(), 1e-300)
                    row.update(mean_a=a.mean(), mean_b=b.mean(), difference=observed, ci_low=np.percentile(boot, 2.5), ci_high=np.percentile(boot, 97.5),
                               p=(1 + int((np.abs(perm) >= abs(observed) - tolerance).sum())) / (1 + n_resamples))
                rows.append(row)
    return pd.DataFrame(rows)
