"""Where and how computation runs: the device, seeds, and the settings that make runs bit-reproducible."""

from __future__ import annotations

import random

import numpy as np
import torch


def pick_device(name: str | None = None) -> torch.device:
    """``name`` if given (validated by RunConfig), else CUDA, then MPS, then CPU."""
    if name:
        return torch.device(name)
    if torch.cuda.is_available():
        return torch.device("cuda")
    if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
        return torch.device("mps")
    return torch.device("cpu")


def set_seed(seed: int) -> int:
    """Seed torch, numpy and Python's RNG and ask torch for deterministic algorithms; returns ``seed``.

    With the same seed, data and thread count, training on the CPU gives the same bytes run to run.
    """
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    torch.use_deterministic_algorithms(True, warn_only=True)
    return seed
