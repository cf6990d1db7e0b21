"""The standard (ReLU) SAE and its L1 training loss, as in the reference study and Anthropic's April 2024 recipe."""

from __future__ import annotations

from torch import Tensor

from monosem.sae.base import SAE, LossParts, TrainState


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
        cfg = state.cfg
        f = self.activate(self.train_pre_acts(x))
        x_hat = self.decode(f)
        fired = (f > 0).any(0)
        err = (x_hat - x).pow(2)
        rec = err.mean() if cfg["mse"] == "mean" else err.sum(-1).mean()
        sparsity = (f * self.W_dec.norm(dim=1)).sum(-1).mean() if cfg["l1_decoder_norm"] else f.abs().mean()
        l1_coef = cfg["l1"] * min(1.0, (state.step + 1) / max(1, int(cfg["l1_warmup"] * state.steps)))
        return LossParts(rec + l1_coef * sparsity, rec, sparsity, fired)
