"""The standard (ReLU) SAE and its L1 training loss, as in the reference study and Anthropic's April 2024 recipe."""

from __future__ import annotations

import torch
from torch import Tensor

from monosem.sae.base import SAE, LossParts, TrainState
from monosem.sae.sparse import sparse_acts, sparse_decode

SPARSE_BELOW = 0.05  # share of positive pre-activations below which the L1 step runs sparse


class StandardSAE(SAE):
    """encode = relu(pre); loss = reconstruction + L1 (optionally weighted by decoder row norms, with a warm-up)."""

    architecture = "standard"

    def activate(self, pre: Tensor) -> Tensor:
        return pre.relu()

    def encode_features(self, x: Tensor, features: Tensor) -> Tensor:
        """Only the chosen encoder columns are computed."""
        return self.activate_subset(self.pre_acts_subset(x, features), features)

    def pre_acts_subset(self, x: Tensor, features: Tensor) -> Tensor:
        """Pre-activations [n, len(features)] of the chosen features."""
        pre = x @ self.W_enc[:, features] + self.b_enc[features]
        if self.apply_b_dec_to_input:
            pre = pre - self.b_dec @ self.W_enc[:, features]
        return pre

    def activate_subset(self, pre: Tensor, features: Tensor) -> Tensor:
        return pre.relu()

    def training_loss(self, x: Tensor, state: TrainState) -> LossParts:
        """Reconstruction + L1. While at most ``SPARSE_BELOW`` of the pre-activations are positive (a trained L1 SAE
        fires on a few percent of its latents), only the active latents carry the graph (``monosem.sae.sparse``): the
        same loss and gradients as dense autograd, without the dense [n, d_in] x [d_in, d_sae] matmuls of the backward
        pass and the decode."""
        cfg = state.cfg
        pre = self.train_pre_acts(x)
        if (pre > 0).sum() <= SPARSE_BELOW * pre.numel():  # the graph of the dense pre-activations is dropped unused
            return self._sparse_loss(x, x - self.b_dec if self.apply_b_dec_to_input else x, pre.detach(), state)
        f = self.activate(pre)
        fired = (f > 0).any(0)
        rec = self._reconstruction(self.decode(f), x, cfg)
        sparsity = (f * self.W_dec.norm(dim=1)).sum(-1).mean() if cfg["l1_decoder_norm"] else f.abs().mean()
        return LossParts(rec + self._l1_coef(state) * sparsity, rec, sparsity, fired)

    @staticmethod
    def _reconstruction(x_hat: Tensor, x: Tensor, cfg: dict) -> Tensor:
        err = (x_hat - x).pow(2)
        return err.mean() if cfg["mse"] == "mean" else err.sum(-1).mean()

    @staticmethod
    def _l1_coef(state: TrainState) -> float:
        cfg = state.cfg
        return cfg["l1"] * min(1.0, (state.step + 1) / max(1, int(cfg["l1_warmup"] * state.steps)))

    def _sparse_loss(self, x: Tensor, x_in: Tensor, pre: Tensor, state: TrainState) -> LossParts:
        cfg = state.cfg
        n = x.shape[0]
        rows, cols = (pre > 0).nonzero(as_tuple=True)  # row-major
        acts = sparse_acts(self, x_in, pre[rows, cols], rows, cols)
        rec = self._reconstruction(sparse_decode(self, acts, rows, cols, n) + self.b_dec, x, cfg)
        weights = self.W_dec.norm(dim=1)[cols] if cfg["l1_decoder_norm"] else None
        if weights is not None:
            sparsity = (acts * weights).sum() / n
        else:
            sparsity = acts.sum() / pre.numel()  # mean |f| over all n x d_sae entries (the inactive ones are 0)
        fired = torch.zeros(self.d_sae, device=x.device).index_fill_(0, cols, 1.0) > 0
        return LossParts(rec + self._l1_coef(state) * sparsity, rec, sparsity, fired)
