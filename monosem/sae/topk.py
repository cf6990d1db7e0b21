"""The TopK SAE (OpenAI, 2024): k active features per token, unit-norm decoder rows, AuxK loss on dead features."""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from monosem.config import MonosemError
from monosem.sae.base import SAE, LossParts, TrainState


class TopKSAE(SAE):
    """encode = ReLU of the ``k`` largest pre-activations (SAELens's order), the rest 0."""

    architecture = "topk"
    sparsity_name = "aux"
    decoder_init_norm = 1.0

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

    def training_loss(self, x: Tensor, state: TrainState) -> LossParts:
        """Sparse decode (only the k active rows of W_dec are touched) plus AuxK while any feature is dead."""
        cfg = state.cfg
        pre = self.train_pre_acts(x)
        vals, idx = pre.topk(self.k, dim=-1, sorted=False)
        vals = vals.relu()
        x_hat = torch.nn.functional.embedding_bag(idx, self.W_dec, per_sample_weights=vals, mode="sum") + self.b_dec
        fired = torch.zeros(self.d_sae, device=x.device).index_fill_(0, idx[vals > 0], 1.0) > 0
        rec = (x_hat - x).pow(2).sum(-1).mean()
        sparsity = torch.zeros((), device=x.device)
        if state.any_dead:  # AuxK: the top aux_k dead features reconstruct the residual error
            aux_k = min(cfg.get("aux_k") or self.d_in // 2, self.d_sae)
            dead = state.since_fired > cfg["dead_steps"]
            aux_vals, aux_idx = pre.masked_fill(~dead, float("-inf")).topk(aux_k, dim=-1, sorted=False)
            aux_vals = aux_vals.relu().nan_to_num(0.0)
            e_hat = torch.nn.functional.embedding_bag(aux_idx, self.W_dec, per_sample_weights=aux_vals, mode="sum")
            sparsity = (e_hat - (x - x_hat).detach()).pow(2).sum(-1).mean()
        return LossParts(rec + cfg["aux_coef"] * sparsity, rec, sparsity, fired)

    @torch.no_grad()
    def after_step(self) -> None:
        self.W_dec.div_(self.W_dec.norm(dim=1, keepdim=True))
