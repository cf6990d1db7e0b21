"""Downstream fidelity: splice an SAE's reconstruction into layer L and measure what survives at the model's output."""

from __future__ import annotations

import copy
from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor, nn

from monosem.activations import encode_examples, length_batches, pad_batch
from monosem.layouts import unembedding
from monosem.model import get_blocks, is_causal_lm
from monosem.sae.base import SAE

FIDELITY_TEXTS = ((12, 32), (None, 8))  # (largest number of blocks, held-out texts): the check runs every block of the model


def default_fidelity_texts(n_blocks: int) -> int:
    """Held-out texts of the fidelity check when ``MONOSEM_FIDELITY_TEXTS`` is unset (``FIDELITY_TEXTS``)."""
    return next(n for most, n in FIDELITY_TEXTS if most is None or n_blocks <= most)


def lm_logits(model: Any, hidden: Tensor) -> Tensor:
    """Logits of a base causal LM (a transformers model) from its final hidden states through its unembedding
    (``monosem.layouts.unembedding``: the LM head of an untied model, else the tied input embedding)."""
    return hidden @ unembedding(model).T


def splice_fidelity(model: nn.Module, tokenizer: Any, texts: Sequence[str], layer: int, sae: SAE, mean_act: Tensor,
                    batch_size: int = 16, max_length: int = 128) -> dict[str, Any]:
    """How much of the model's output survives replacing layer ``layer``'s residual stream by the SAE reconstruction
    (``splice_fidelity_many`` for one SAE)."""
    return splice_fidelity_many(model, tokenizer, texts, layer, {"sae": sae}, mean_act, batch_size, max_length)["sae"]


@torch.inference_mode()
def splice_fidelity_many(model: nn.Module, tokenizer: Any, texts: Sequence[str], layer: int, saes: dict[str, SAE], mean_act: Tensor,
                         batch_size: int = 16, max_length: int = 128) -> dict[str, dict[str, Any]]:
    """For each SAE of ``saes`` ({name: SAE}, all of layer ``layer``): how much of the model's output survives replacing
    the layer's residual stream by its reconstruction. The clean run and the two ablations are computed once for all.

    Special and padding positions are left untouched. Causal LM: next-token CE loss clean / SAE /
    zero-ablated / mean-ablated and the CE loss recovered ``(CE_abl - CE_sae) / (CE_abl - CE_clean)``
    against both ablations. Encoder: mean cosine similarity of the final-layer output with and
    without the splice (and for the two ablations, as a floor).
    """
    blocks = get_blocks(model)
    device = next(model.parameters()).device
    on_device = {name: copy.deepcopy(sae).to(device) for name, sae in saes.items()}
    mean_act = mean_act.to(device)
    enc = encode_examples(tokenizer, texts, None, max_length=max_length)
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    causal = is_causal_lm(model)
    mode: dict[str, str | None] = {"replace": None}
    keep_mask: dict[str, Tensor] = {}

    def hook(module, args, output):
        h = output[0] if isinstance(output, tuple) else output
        kind = mode["replace"]
        if kind is None:
            return output
        flat = h.reshape(-1, h.shape[-1])
        if kind == "zero":
            new = torch.zeros_like(flat)
        elif kind == "mean":
            new = mean_act.to(h.dtype).expand_as(flat)
        else:
            sae = on_device[kind]
            new = sae.decode(sae.encode(flat.float())).to(h.dtype)
        m = keep_mask["m"].reshape(-1, 1)
        h2 = torch.where(m, new, flat).reshape(h.shape)
        return (h2,) + tuple(output[1:]) if isinstance(output, tuple) else h2

    handle = blocks[layer].register_forward_hook(hook)
    runs = ["clean", "zero", "mean", *(f"sae:{name}" for name in saes)]
    sums = {k: 0.0 for k in runs}
    count = 0.0
    try:
        for batch in length_batches([len(e.ids) for e in enc], batch_size):
            ids, attn, keep, _ = (t.to(device) for t in pad_batch(enc, batch, pad_id))
            keep_mask["m"] = keep
            outs = {}
            for kind in runs:
                mode["replace"] = None if kind == "clean" else kind.removeprefix("sae:")
                outs[kind] = model(input_ids=ids, attention_mask=attn).last_hidden_state
            if causal:
                target_ok = keep[:, 1:] & attn[:, 1:].bool()
                for kind, hidden in outs.items():
                    logits = lm_logits(model, hidden[:, :-1])
                    ce = torch.nn.functional.cross_entropy(logits.transpose(1, 2), ids[:, 1:], reduction="none")
                    sums[kind] += ce[target_ok].sum().item()
                count += target_ok.sum().item()
            else:
                for kind, hidden in outs.items():
                    sums[kind] += torch.nn.functional.cosine_similarity(hidden[keep], outs["clean"][keep], dim=-1).sum().item()
                count += keep.sum().item()
    finally:
        handle.remove()
    avg = {k: v / count for k, v in sums.items()}
    out: dict[str, dict[str, Any]] = {}
    for name in saes:
        a = {"clean": avg["clean"], "zero": avg["zero"], "mean": avg["mean"], "sae": avg[f"sae:{name}"]}
        if causal:
            rec = {abl: (a[abl] - a["sae"]) / (a[abl] - a["clean"]) if a[abl] != a["clean"] else float("nan") for abl in ("zero", "mean")}
            out[name] = {"kind": "ce_loss_recovered", "ce_clean": a["clean"], "ce_sae": a["sae"], "ce_zero": a["zero"], "ce_mean": a["mean"],
                         "ce_recovered_zero": rec["zero"], "ce_recovered_mean": rec["mean"], "fidelity": rec["zero"]}
        else:
            out[name] = {"kind": "output_cosine", "cos_sae": a["sae"], "cos_zero": a["zero"], "cos_mean": a["mean"], "fidelity": a["sae"]}
    return out
