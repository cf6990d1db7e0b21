"""The JumpReLU SAE (imported from SAELens releases and folders; analysed, not trained here)."""

from __future__ import annotations

import torch
from torch import Tensor, nn

from monosem.sae.base import SAE
from monosem.sae.standard import StandardSAE


class JumpReLUSAE(StandardSAE):
    """encode = relu(pre) * (pre > threshold), with a learned threshold per feature."""

    architecture = "jumprelu"
    extra_tensors = ("threshold",)
    threshold: nn.Parameter

    def __init__(self, d_in: int, d_sae: int, apply_b_dec_to_input: bool = False, seed: int | None = None):
        super().__init__(d_in, d_sae, apply_b_dec_to_input, seed)
        self.threshold = nn.Parameter(torch.zeros(d_sae))

    def activate(self, pre: Tensor) -> Tensor:
        return pre.relu() * (pre > self.threshold)

    def activate_subset(self, pre: Tensor, features: Tensor) -> Tensor:
        return pre.relu() * (pre > self.threshold[features])

    def fresh_like(self, seed: int) -> SAE:
        """An untrained SAE of the same shape that keeps this one's thresholds (they define the architecture)."""
        fresh = super().fresh_like(seed)
        assert isinstance(fresh, JumpReLUSAE)
        with torch.no_grad():
            fresh.threshold.copy_(self.threshold)
        return fresh

    training_loss = SAE.training_loss  # not trainable here
