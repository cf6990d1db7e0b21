"""The negative control: the analysed model's architecture with random weights (seeded, no download), its spec and caches.

A network that never learned a concept cannot have concept features, so the same extraction, SAE
training and criterion run on a random-weight copy of the model (issue 9, item 8) give the
false-positive level of the criterion. The copy is built from the real model's config under a fixed
seed (``AutoModel.from_config``): same architecture, same tokenizer, no weights downloaded. Its
``ModelSpec`` has its own name and revision, so its caches, SAEs and results never share a folder
or a key with the real model's.

Never pass a control spec to ``monosem.model.load_model``: its ``path`` is the real model's (for the
config and tokenizer), so that would load the real weights. Use ``load_random_model``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import pandas as pd
import torch
from torch import nn

from monosem.cache import ActivationCache, load_or_extract_concepts, load_or_extract_corpus
from monosem.config import MonosemError
from monosem.model import ModelSpec, load_tokenizer, model_config
from monosem.paths import ModelPaths, model_paths

RANDOM_PREFIX = "random-init"  # revisions of control specs start with it


def random_control_spec(spec: ModelSpec, seed: int) -> ModelSpec:
    """The spec of ``spec``'s random-weight control: name '<used> [random weights, seed <seed>]', revision
    'random-init:<seed>:<real revision>' (so its cache keys and folders differ from the real model's), same path."""
    if is_random_control(spec):
        raise MonosemError(f"{spec.used} is already a random-weight control; pass the real model's spec")
    return replace(spec, used=f"{spec.used} [random weights, seed {int(seed)}]", revision=f"{RANDOM_PREFIX}:{int(seed)}:{spec.revision}")


def is_random_control(spec: ModelSpec) -> bool:
    """True for a spec made by ``random_control_spec``."""
    return spec.revision.startswith(RANDOM_PREFIX + ":")


def load_random_model(spec: ModelSpec, seed: int, device: torch.device | str = "cpu") -> tuple[nn.Module, Any]:
    """The architecture of ``spec`` (real or control spec: the same config) with random weights and the real tokenizer.

    ``AutoModel.from_config`` on the real model's config, initialised under ``torch.manual_seed(seed)``
    (in a forked RNG, so the caller's random state is untouched), float32, eval mode. No weights are
    read or downloaded; the same seed gives the same bytes on the same machine.
    """
    from transformers import AutoModel

    config = model_config(spec)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(int(seed))
        model = AutoModel.from_config(config, dtype=torch.float32, trust_remote_code=False)
    model = model.to(device).eval()
    tokenizer = load_tokenizer(spec)
    if not getattr(tokenizer, "is_fast", False):
        raise MonosemError(f"{spec.used} has no fast tokenizer; word spans need offset mappings (tokenizer.json)")
    return model, tokenizer


def random_control_caches(mp_root_data: Path, spec: ModelSpec, df: pd.DataFrame, layers: Sequence[int], background_texts: Sequence[str],
                          seed: int = 0, batch_size: int = 32, device: torch.device | str = "cpu") -> tuple[ModelPaths, ActivationCache, ActivationCache]:
    """The control's folders and its concept and background activation caches (loaded if present, else extracted
    with the random-weight model), keyed like the real model's caches but under the control's name and revision.

    ``mp_root_data``: the data folder (``RunConfig.data_path``); ``spec``: the *real* model's spec;
    ``df``: the concept dataset; ``background_texts``: the background corpus. Returns
    (ModelPaths of the control, concept cache, background cache).
    """
    control = random_control_spec(spec, seed)
    mp = model_paths(Path(mp_root_data), control.used)
    model_and_tokenizer = load_random_model(spec, seed, device)  # always passed: without it the cache would load the real weights
    concepts = load_or_extract_concepts(mp, control, df, layers, batch_size, device, model_and_tokenizer=model_and_tokenizer)
    background = load_or_extract_corpus(mp, control, background_texts, layers, batch_size, device, model_and_tokenizer=model_and_tokenizer)
    return mp, concepts, background
