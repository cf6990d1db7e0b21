"""The Matryoshka BatchTopK SAE (Bussmann et al., 2025): nested dictionary prefixes, each trained to reconstruct alone.

Training: BatchTopK keeps the k·n largest positive pre-activations of the whole batch (n tokens; a token may
use more or fewer than k), and the loss sums the reconstruction error of every nested prefix of the dictionary
(latents ``[0, w)`` for each width ``w`` in ``widths``, the last being d_sae), plus AuxK on dead latents. The
first prefixes have to reconstruct on their own, so they learn general features and later latents do not absorb
them: the published answer to feature splitting and absorption. A running threshold (an average of each batch's
smallest kept activation) replaces the batch for inference.

Inference and the on-disk format follow SAELens (``MatryoshkaBatchTopKTrainingSAE.save_inference_model``): a
``jumprelu`` folder with that threshold for every latent, ``metadata.training_architecture =
"matryoshka_batchtopk"`` and the widths in ``metadata.training_architecture_details``. SAELens training
checkpoints (``architecture: "matryoshka_batchtopk"``, a scalar ``topk_threshold``) load too, converted as SAELens
converts them.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor

from monosem.config import MonosemError
from monosem.sae.base import LossParts, TrainState
from monosem.sae.jumprelu import JumpReLUSAE
from monosem.sae.sparse import argsort_distinct, auxk_loss, encoder_input, sparse_code

TRAINING_KEYS = ("k", "matryoshka_widths", "topk_threshold_lr")  # what SAELens keeps in metadata.training_architecture_details
FLOOR_OF_THRESHOLD = 0.75  # training: entries above 0.75 x the running threshold are BatchTopK's candidates (exact either way)


def batch_topk(pre: Tensor, k: float, floor: float = 0.0) -> tuple[Tensor, Tensor, Tensor]:
    """BatchTopK: the int(k·n) largest entries of ``pre`` [n, d_sae] over the whole batch, positive ones only, as
    (rows, cols, values) [m] in row-major order.

    Exact, without a top-k over all n·d_sae entries. With a ``floor`` > 0 (a guess below the batch's m-th largest
    entry, e.g. from the running threshold) the entries above it are the candidates, when there are at least m of
    them (then the m-th largest lies above the floor and every entry left out lies below it). Otherwise each row's 2k
    largest are candidates; a row whose candidates all clear the batch threshold may hide more, so its candidates
    widen (x4) and the selection is redone until no row is saturated (the threshold can only rise, so rows that were
    complete stay complete).
    """
    n, d_sae = pre.shape
    m = max(1, int(k * n))
    width = min(d_sae, 2 * math.ceil(k))
    with torch.no_grad():
        if floor > 0:
            flat = pre.flatten()
            above = (flat > floor).nonzero().squeeze(1)
            if above.numel() >= m:
                keys, top_v = _select(above, flat[above], m)
                return keys // d_sae, keys % d_sae, top_v
        cand_v, cand_i = pre.topk(width, dim=1, sorted=False)  # [n, width]
        values, rows, cols = cand_v.flatten(), torch.arange(n, device=pre.device).repeat_interleave(width), cand_i.flatten()
        row_min = cand_v.min(1).values
        complete = torch.full((n,), width == d_sae, device=pre.device)
        while True:
            top_v, top_j = values.topk(m, sorted=False)
            saturated = (row_min >= top_v.min()) & (row_min > 0) & ~complete
            widen = saturated.nonzero().squeeze(1)
            if widen.numel() == 0:
                break
            width = min(d_sae, 4 * width)  # only rows widened last time can be saturated now, so they all had the old width
            sub_v, sub_i = pre[widen].topk(width, dim=1, sorted=False)
            others = ~saturated[rows]
            values = torch.cat([values[others], sub_v.flatten()])
            rows = torch.cat([rows[others], widen.repeat_interleave(width)])
            cols = torch.cat([cols[others], sub_i.flatten()])
            row_min[widen] = sub_v.min(1).values
            complete[widen] = width == d_sae
        keys, top_v = _select(rows * d_sae + cols, values, m)  # the candidates hold every entry >= the m-th largest
        positive = top_v > 0
        keys, top_v = keys[positive], top_v[positive]
        return keys // d_sae, keys % d_sae, top_v


def _select(keys: Tensor, values: Tensor, m: int) -> tuple[Tensor, Tensor]:
    """The m largest of ``values`` [c] (which hold every entry at least as large as the m-th largest of the batch) with
    their ``keys`` (row-major flat indices), sorted by key. Ties at the m-th value go to the smallest keys, so the
    selection does not depend on which candidates a path gathered."""
    v_m = values.topk(m, sorted=False).values.min()
    above = (values > v_m).nonzero().squeeze(1)
    tied = (values == v_m).nonzero().squeeze(1)
    tied = tied[argsort_distinct(keys[tied])[: m - above.numel()]]
    chosen = torch.cat([above, tied])
    order = argsort_distinct(keys[chosen])
    return keys[chosen][order], values[chosen][order]


def widths_from_fractions(fractions: Sequence[float], d_sae: int) -> list[int]:
    """Prefix widths (strictly increasing, ending at d_sae) from fractions of d_sae, e.g. (1/64, 1/16, 1/4, 1)."""
    return sorted({max(1, min(d_sae, round(f * d_sae))) for f in fractions} | {d_sae})


class MatryoshkaBatchTopKSAE(JumpReLUSAE):
    """encode = JumpReLU with the threshold learned in training; training = BatchTopK with nested prefix losses."""

    architecture = "matryoshka_batchtopk"
    saelens_architecture = "jumprelu"
    sparsity_name = "aux"
    decoder_init_norm = 1.0
    preset_keys = ("k", "matryoshka_fractions", "topk_threshold_lr")

    def __init__(self, d_in: int, d_sae: int, apply_b_dec_to_input: bool = False, seed: int | None = None, k: float | None = None,
                 matryoshka_widths: Sequence[int] | None = None, topk_threshold_lr: float = 0.01):
        if isinstance(k, bool) or not isinstance(k, (int, float)) or not 0 < k <= d_sae:
            raise MonosemError(f"a matryoshka_batchtopk SAE needs a number 0 < k <= d_sae ({d_sae}), got k={k!r}")
        widths = [int(w) for w in (matryoshka_widths or [d_sae])]
        if widths[-1] != d_sae:  # as SAELens does: the whole dictionary is the last level
            widths.append(d_sae)
        if widths[0] <= 0 or any(a >= b for a, b in zip(widths, widths[1:])):
            raise MonosemError(f"matryoshka_widths must be positive and strictly increasing up to d_sae = {d_sae}, got {widths}")
        if not 0 < topk_threshold_lr <= 1:
            raise MonosemError(f"topk_threshold_lr must lie in (0, 1], got {topk_threshold_lr}")
        super().__init__(d_in, d_sae, apply_b_dec_to_input, seed)
        self.threshold.requires_grad_(False)  # set from the kept activations, not by the optimiser
        self.k = int(k) if float(k).is_integer() else float(k)
        self.widths = tuple(widths)
        self.topk_threshold_lr = float(topk_threshold_lr)

    # -- configuration and the SAELens format ------------------------------------------------------

    @classmethod
    def from_cfg(cls, cfg: dict[str, Any], seed: int | None = None) -> "MatryoshkaBatchTopKSAE":
        """From our own config (``to_cfg``), a preset (``matryoshka_fractions``), a SAELens inference ``cfg.json`` (keys in
        ``metadata.training_architecture_details``) or a SAELens training checkpoint (keys at the top level)."""
        metadata = cfg.get("metadata")
        details = metadata.get("training_architecture_details") if isinstance(metadata, dict) else None
        keys = {**(details if isinstance(details, dict) else {}), **{key: cfg[key] for key in TRAINING_KEYS if key in cfg}}
        d_sae = int(cfg["d_sae"])
        widths = keys.get("matryoshka_widths")
        if widths is None and "matryoshka_fractions" in cfg:
            widths = widths_from_fractions(cfg["matryoshka_fractions"], d_sae)
        if not isinstance(widths, (list, tuple)) or not all(isinstance(w, int) and not isinstance(w, bool) for w in widths):
            raise MonosemError(f"a matryoshka_batchtopk cfg.json needs a list of integer matryoshka_widths, got {widths!r}")
        return cls(int(cfg["d_in"]), d_sae, bool(cfg.get("apply_b_dec_to_input", False)), seed, keys.get("k"), widths,
                   float(keys.get("topk_threshold_lr", 0.01)))

    def cfg_extra(self) -> dict[str, Any]:
        return {"k": self.k, "matryoshka_widths": list(self.widths), "topk_threshold_lr": self.topk_threshold_lr}

    def saelens_extra(self) -> tuple[dict[str, Any], dict[str, Any]]:
        """As SAELens saves it for inference: no top-level keys; the training architecture and its keys in the metadata."""
        details = {**self.cfg_extra(), "rescale_acts_by_decoder_norm": False, "use_matryoshka_aux_loss": False}
        return {}, {"training_architecture": self.architecture, "training_architecture_details": details}

    @classmethod
    def from_saelens_weights(cls, cfg: dict[str, Any], weights: dict[str, Tensor]) -> dict[str, Tensor]:
        """A training checkpoint's scalar ``topk_threshold`` becomes the per-latent ``threshold``, and with
        ``rescale_acts_by_decoder_norm`` the decoder norms are folded into the encoder (SAELens's ``_fold_norm_topk``)."""
        if "topk_threshold" not in weights:
            return weights
        weights = dict(weights)
        topk_threshold = weights.pop("topk_threshold")
        if topk_threshold.numel() != 1 or not {"W_enc", "b_enc", "W_dec"} <= set(weights):
            raise MonosemError(f"a matryoshka_batchtopk checkpoint needs W_enc, b_enc, W_dec and a scalar topk_threshold, got {sorted(weights)} "
                               f"and topk_threshold of shape {tuple(topk_threshold.shape)}")
        b_enc = weights["b_enc"]
        weights["threshold"] = torch.ones_like(b_enc) * topk_threshold.item()
        if cfg.get("rescale_acts_by_decoder_norm"):
            norm = weights["W_dec"].norm(dim=-1).clamp(min=1e-8)
            weights["b_enc"] = b_enc * norm
            weights["W_dec"] = weights["W_dec"] / norm.unsqueeze(1)
            weights["W_enc"] = weights["W_enc"] * norm.unsqueeze(1).T
        return weights

    def l0_problem(self, l0: float) -> str | None:
        """The threshold keeps k latents per token on average over the training batches, not per token: L0 may lie
        above or below k, but not by a factor of 4 (then the threshold does not describe these tokens)."""
        if not self.k / 4 <= l0 <= 4 * self.k:
            return (f"a Matryoshka BatchTopK SAE with k = {self.k} should keep about k features per token, but L0 = {l0:.2f}: its threshold "
                    "does not describe these tokens; train on tokens like these, or longer")
        return None

    # -- training -----------------------------------------------------------------------------------

    @torch.no_grad()
    def calibrate(self, x: Tensor) -> None:
        """The threshold that BatchTopK on ``x`` implies (its smallest kept activation), so that an untrained SAE keeps
        about k latents per token like a trained one."""
        _, pre = encoder_input(self, x)
        values = batch_topk(pre, self.k)[2]
        self.threshold.fill_(values.min().item() if values.numel() else 0.0)

    def training_loss(self, x: Tensor, state: TrainState) -> LossParts:
        """Sum over the prefixes of ||x - x_hat_prefix||^2 (mean over tokens), plus AuxK while any latent is dead;
        sparse like TopK's (``monosem.sae.sparse``). Moves the threshold towards this batch's smallest kept activation."""
        cfg = state.cfg
        n, levels = x.shape[0], len(self.widths)
        x_in, pre = encoder_input(self, x)
        rows, cols, top = batch_topk(pre, self.k, FLOOR_OF_THRESHOLD * float(self.threshold[0]) if state.step else 0.0)
        level = torch.bucketize(cols, torch.tensor(self.widths[:-1], device=x.device), right=True)
        bag = rows * levels + level  # non-decreasing: entries are row-major and levels grow with the latent index
        parts = sparse_code(self, x_in, top, rows, cols, bag, n * levels).view(n, levels, self.d_in)  # each level's own part
        error = self.b_dec - x  # [n, d_in]: x_hat - x of the empty prefix; each level adds its part
        level_errors = []
        for part in parts.unbind(1):
            error = error + part
            level_errors.append(error.pow(2).sum(-1).mean())
        errors = torch.stack(level_errors)  # [levels]
        fired = torch.zeros(self.d_sae, device=x.device).index_fill_(0, cols, 1.0) > 0
        sparsity = torch.zeros((), device=x.device)
        if state.any_dead:
            aux_k = min(cfg.get("aux_k") or self.d_in // 2, self.d_sae)
            sparsity = auxk_loss(self, x_in, pre, -error.detach(), state.since_fired > cfg["dead_steps"], aux_k)
        with torch.no_grad():
            smallest = top.min() if top.numel() else torch.zeros((), device=x.device)
            if state.step == 0:
                self.threshold.fill_(smallest)
            else:
                self.threshold.mul_(1 - self.topk_threshold_lr).add_(smallest * self.topk_threshold_lr)
        return LossParts(errors.sum() + cfg["aux_coef"] * sparsity, errors[-1], sparsity, fired)

    @torch.no_grad()
    def after_step(self) -> None:
        self.W_dec.div_(self.W_dec.norm(dim=1, keepdim=True))
