"""The SAE base class: SAELens parameter names and shapes, encode/decode, and the hooks each architecture fills in.

pre = (x - b_dec * apply_b_dec_to_input) @ W_enc + b_enc; encode = ``activate(pre)``;
decode = ``f @ W_dec + b_dec``. A subclass per architecture (``monosem.sae.standard``, ``topk``,
``jumprelu``, ``matryoshka``) owns its activation, its training loss and its extra SAELens config keys; nothing
else in the package switches on the architecture name.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, ClassVar

import torch
from torch import Tensor, nn

from monosem.config import MonosemError


@dataclass
class TrainState:
    """What a training step needs besides the batch: the step, the recipe and the dead-feature tracker."""

    step: int
    steps: int
    cfg: dict[str, Any]
    since_fired: Tensor  # [d_sae] steps since each feature last fired
    any_dead: bool = False  # refreshed every 25 steps, so the loop does not sync with the device each step


@dataclass
class LossParts:
    """One training step's loss, its reconstruction and sparsity parts, and which features fired [d_sae]."""

    loss: Tensor
    reconstruction: Tensor
    sparsity: Tensor
    fired: Tensor


class SAE(nn.Module):
    """A sparse autoencoder with SAELens's parameter names, shapes and encodings."""

    architecture: ClassVar[str] = ""
    sparsity_name: ClassVar[str] = "l1"  # name of the second loss term in the training history
    decoder_init_norm: ClassVar[float] = 0.1  # norm of the decoder rows of the tied initialisation
    extra_tensors: ClassVar[tuple[str, ...]] = ()
    saelens_architecture: ClassVar[str] = ""  # the architecture its SAELens folders declare when it differs (BatchTopK: jumprelu)
    preset_keys: ClassVar[tuple[str, ...]] = ()  # the preset settings its constructor takes (topk: k)

    def __init__(self, d_in: int, d_sae: int, apply_b_dec_to_input: bool = False, seed: int | None = None):
        super().__init__()
        gen = torch.Generator().manual_seed(seed) if seed is not None else None
        bound_enc, bound_dec = 1 / math.sqrt(d_in), 1 / math.sqrt(d_sae)  # nn.Linear's default init
        self.W_enc = nn.Parameter((torch.rand(d_in, d_sae, generator=gen) * 2 - 1) * bound_enc)
        self.b_enc = nn.Parameter((torch.rand(d_sae, generator=gen) * 2 - 1) * bound_enc)
        self.W_dec = nn.Parameter((torch.rand(d_sae, d_in, generator=gen) * 2 - 1) * bound_dec)
        self.b_dec = nn.Parameter((torch.rand(d_in, generator=gen) * 2 - 1) * bound_dec)
        self.apply_b_dec_to_input = apply_b_dec_to_input

    # -- construction and the SAELens format ---------------------------------------------------

    @classmethod
    def from_cfg(cls, cfg: dict[str, Any], seed: int | None = None) -> "SAE":
        """An SAE of this architecture shaped by a SAELens ``cfg.json`` dict (weights random until loaded)."""
        return cls(int(cfg["d_in"]), int(cfg["d_sae"]), bool(cfg.get("apply_b_dec_to_input", False)), seed)

    @classmethod
    def check_cfg(cls, cfg: dict[str, Any]) -> None:
        """Raise a MonosemError if ``cfg`` uses an option of this architecture that is not supported."""

    def cfg_extra(self) -> dict[str, Any]:
        """Architecture-specific keys of the SAELens ``cfg.json``."""
        return {}

    def to_cfg(self) -> dict[str, Any]:
        """The shape keys of the SAELens ``cfg.json`` plus this architecture's own."""
        return {"d_in": self.d_in, "d_sae": self.d_sae, "apply_b_dec_to_input": bool(self.apply_b_dec_to_input), "architecture": self.architecture,
                **self.cfg_extra()}

    def saelens_extra(self) -> tuple[dict[str, Any], dict[str, Any]]:
        """(top-level keys, metadata keys) this architecture adds to a SAELens ``cfg.json``; by default ``cfg_extra()``
        at the top level."""
        return self.cfg_extra(), {}

    @classmethod
    def from_saelens_weights(cls, cfg: dict[str, Any], weights: dict[str, Tensor]) -> dict[str, Tensor]:
        """The tensors of a SAELens folder of this architecture under this class's names and in its units (a SAELens
        training checkpoint may store them otherwise); by default unchanged."""
        return weights

    @classmethod
    def tensor_shapes(cls, d_in: int, d_sae: int) -> dict[str, tuple[int, ...]]:
        """The exact tensors (name -> shape) a SAELens folder of this architecture holds."""
        shapes: dict[str, tuple[int, ...]] = {"W_enc": (d_in, d_sae), "b_enc": (d_sae,), "W_dec": (d_sae, d_in), "b_dec": (d_in,)}
        return shapes | {name: (d_sae,) for name in cls.extra_tensors}

    def fresh_like(self, seed: int) -> "SAE":
        """An untrained SAE of the same architecture and shape (nn.Linear-style init)."""
        return type(self).from_cfg(self.to_cfg(), seed).eval()

    # -- encode and decode ------------------------------------------------------------------------

    @property
    def d_in(self) -> int:
        return self.W_enc.shape[0]

    @property
    def d_sae(self) -> int:
        return self.W_enc.shape[1]

    def pre_acts(self, x: Tensor) -> Tensor:
        """Encoder pre-activations [n, d_sae], computed in SAELens's order so TopK picks the same features bit for bit."""
        if self.apply_b_dec_to_input:
            x = x - self.b_dec
        return x @ self.W_enc + self.b_enc

    def train_pre_acts(self, x: Tensor) -> Tensor:
        """The same pre-activations for training, written ``x @ W_enc - b_dec @ W_enc + b_enc`` so the backward pass of
        b_dec costs a vector-matrix product instead of a second [n, d_in] x [d_in, d_sae] matmul."""
        pre = x @ self.W_enc + self.b_enc
        if self.apply_b_dec_to_input:
            pre = pre - self.b_dec @ self.W_enc
        return pre

    def activate(self, pre: Tensor) -> Tensor:
        """Feature activations [n, d_sae] from pre-activations [n, d_sae]."""
        raise NotImplementedError

    def encode(self, x: Tensor) -> Tensor:
        """Feature activations [n, d_sae] of inputs [n, d_in]."""
        return self.activate(self.pre_acts(x))

    def encode_features(self, x: Tensor, features: Tensor) -> Tensor:
        """Activations [n, len(features)] of the chosen features only (the full encode unless a subclass can do less)."""
        return self.encode(x)[:, features]

    def decode(self, f: Tensor) -> Tensor:
        """Reconstruction [n, d_in] of feature activations [n, d_sae]."""
        return f @ self.W_dec + self.b_dec

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        f = self.encode(x)
        return self.decode(f), f

    @torch.no_grad()
    def fold_input_scale(self, scale: float) -> None:
        """Turn an SAE trained on ``x * scale`` into one for raw ``x`` with identical feature activations."""
        self.W_enc.mul_(scale)
        self.W_dec.div_(scale)
        self.b_dec.div_(scale)

    def l0_problem(self, l0: float) -> str | None:
        """Why a mean L0 measured on data is impossible or implausible for this architecture, or None when it is fine."""
        return None

    # -- training ---------------------------------------------------------------------------------

    @torch.no_grad()
    def calibrate(self, x: Tensor) -> None:
        """Set data-dependent inference state from a sample of (scaled) training inputs [n, d_in] at initialisation
        (a BatchTopK threshold); by default nothing."""

    def training_loss(self, x: Tensor, state: TrainState) -> LossParts:
        """The loss of one batch [n, d_in] under this architecture's recipe."""
        raise MonosemError(f"{self.architecture} SAEs can be imported and analysed here, not trained; use one of the presets "
                           "(monosem.sae.presets.PRESETS)")

    @torch.no_grad()
    def after_step(self) -> None:
        """Constraints applied after each optimiser step (e.g. unit-norm decoder rows)."""
