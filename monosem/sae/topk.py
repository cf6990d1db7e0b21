"""The TopK SAE (OpenAI, 2024): k active features per token, unit-norm decoder rows, AuxK loss on dead features."""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from monosem.config import MonosemError
from monosem.sae.base import SAE, LossParts, TrainState
from monosem.sae.sparse import auxk_loss, encoder_input, sparse_code


class TopKSAE(SAE):
    """encode = ReLU of the ``k`` largest pre-activations (SAELens's order), the rest 0."""

    architecture = "topk"
    sparsity_name = "aux"
    decoder_init_norm = 1.0
    preset_keys = ("k",)

    def __init__(self, d_in: int, d_sae: int, apply_b_dec_to_input: bool = False, seed: int | None = None, k: int | None = None):
        if not (k and 0 < k <= d_sae):
            raise MonosemError(f"a topk SAE needs 0 < k <= d_sae ({d_sae}), got k={k}")
        super().__init__(d_in, d_sae, apply_b_dec_to_input, seed)
        self.k = int(k)

    @classmethod
    def from_cfg(cls, cfg: dict[str, Any], seed: int | None = None) -> "TopKSAE":
        k = cfg.get("k")
        if isinstance(k, bool) or not isinstance(k, int):
            raise MonosemError(f"a topk cfg.json needs an integer k, got {k!r}")
        return cls(int(cfg["d_in"]), int(cfg["d_sae"]), bool(cfg.get("apply_b_dec_to_input", False)), seed, k)

    @classmethod
    def check_cfg(cls, cfg: dict[str, Any]) -> None:
        if cfg.get("rescale_acts_by_decoder_norm"):
            raise MonosemError("topk with rescale_acts_by_decoder_norm is not supported")

    def cfg_extra(self) -> dict[str, Any]:
        return {"k": self.k, "rescale_acts_by_decoder_norm": False}

    def activate(self, pre: Tensor) -> Tensor:
        values, idx = pre.topk(self.k, dim=-1, sorted=False)
        return torch.zeros_like(pre).scatter(-1, idx, values.relu())

    def l0_problem(self, l0: float) -> str | None:
        """TopK keeps at most k features per token; fewer is fine (the ReLU drops non-positive pre-activations)."""
        if l0 > self.k + 1e-6:
            return f"a TopK SAE keeps at most k = {self.k} features per token, but L0 = {l0:.4f}"
        return None

    def training_loss(self, x: Tensor, state: TrainState) -> LossParts:
        """Sparse training (``monosem.sae.sparse``): only the k chosen latents of each token get encoder gradients, the
        decode reads only their rows of W_dec, and AuxK (while any feature is dead) computes the dead latents only."""
        cfg = state.cfg
        n = x.shape[0]
        x_in, pre = encoder_input(self, x)
        top, idx = pre.topk(self.k, dim=-1, sorted=False)
        rows = torch.arange(n, device=x.device).repeat_interleave(self.k)
        x_hat = sparse_code(self, x_in, top.flatten(), rows, idx.flatten()) + self.b_dec
        fired = torch.zeros(self.d_sae, device=x.device).index_fill_(0, idx[top > 0], 1.0) > 0
        rec = (x_hat - x).pow(2).sum(-1).mean()
        sparsity = torch.zeros((), device=x.device)
        if state.any_dead:  # AuxK: the top aux_k dead features reconstruct the residual error
            aux_k = min(cfg.get("aux_k") or self.d_in // 2, self.d_sae)
            sparsity = auxk_loss(self, x_in, pre, (x - x_hat).detach(), state.since_fired > cfg["dead_steps"], aux_k)
        return LossParts(rec + cfg["aux_coef"] * sparsity, rec, sparsity, fired)

    @torch.no_grad()
    def after_step(self) -> None:
        self.W_dec.div_(self.W_dec.norm(dim=1, keepdim=True))
