"""Where and how computation runs: the device, seeds, and the settings that make runs bit-reproducible."""

from __future__ import annotations

import os
import random
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from typing import TypeVar

import numpy as np
import torch

T = TypeVar("T")
R = TypeVar("R")


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


def default_workers(device: torch.device | str = "cpu") -> int:
    """Threads for work that splits into independent pieces (the SAEs of a batch, the unit tables of the bases): 2 on
    a CPU with 2+ cores, where one piece's many small ops use two cores only in part (two pieces at a time, one core
    each, are 1.1-1.2x faster: bench/run.py), 1 on a GPU (one stream does it all)."""
    return 2 if torch.device(device).type == "cpu" and (os.cpu_count() or 1) >= 2 else 1


@contextmanager
def torch_threads(n: int) -> Iterator[None]:
    """torch's intra-op thread count set to ``n`` inside the block, restored after."""
    before = torch.get_num_threads()
    torch.set_num_threads(max(1, n))
    try:
        yield
    finally:
        torch.set_num_threads(before)


def parallel_map(fn: Callable[[T], R], items: Iterable[T], workers: int) -> Iterator[R]:
    """``fn`` of each item, in order, computed by ``workers`` threads (each with its share of torch's intra-op threads:
    a thread takes the count in force when it first runs a torch op); serial when ``workers`` is 1."""
    if workers <= 1:
        yield from map(fn, items)
        return
    with torch_threads(torch.get_num_threads() // workers), ThreadPoolExecutor(workers) as pool:
        yield from pool.map(fn, items)
