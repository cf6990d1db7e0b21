"""The activation cache: keyed by a content hash, written atomically, verified by SHA-256 on every load.

A cache folder ``<data>/activations/<model>/<key>/`` holds ``tokens_L<L>.npy`` (every non-special
token, memory-mappable), ``pooled.safetensors`` (word-level poolings, MLP neurons, the token index),
``texts.json`` (corpus caches: the texts) and ``meta.json`` (the key, its inputs, checksums).
"""

from __future__ import annotations

import json
import logging
import time
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from safetensors.torch import load_file, save_file
from torch import Tensor, nn

from monosem.activations import extract_concept_activations, extract_corpus_activations
from monosem.config import CODE_VERSION, POOLINGS, MonosemError
from monosem.dataset import dataset_hash
from monosem.io import atomic_dir, clean_stale_temp, file_lock, hash_json, read_json, sha256_file
from monosem.model import ModelSpec, load_model
from monosem.paths import ModelPaths

log = logging.getLogger(__name__)


def _key(spec: ModelSpec, layers: Sequence[int], data: str, pooled: bool, dtype: str) -> tuple[str, dict]:
    inputs = {
        "model": spec.used,
        "revision": spec.revision,
        "layers": sorted(int(L) for L in layers),
        "data": data,
        "poolings": list(POOLINGS) if pooled else [],
        "mlp": pooled,
        "dtype": dtype,
        "prepend_bos": True,
        "code_version": CODE_VERSION,
    }
    return hash_json(inputs), inputs


def concept_key(spec: ModelSpec, df: pd.DataFrame, layers: Sequence[int], dtype: str = "float32") -> tuple[str, dict]:
    """Cache key (hash) of the concept dataset's activations and the inputs it hashes."""
    return _key(spec, layers, dataset_hash(df), True, dtype)


def corpus_key(spec: ModelSpec, texts: Sequence[str], layers: Sequence[int], dtype: str = "float32") -> tuple[str, dict]:
    """Cache key (hash) of a text corpus's token activations and the inputs it hashes."""
    return _key(spec, layers, "texts:" + hash_json(list(texts)), False, dtype)


@dataclass
class ActivationCache:
    """Cached activations of one model/data/layer set (see ``monosem.activations`` for the tensors)."""

    folder: Path
    meta: dict
    tensors: dict[str, Tensor]

    @property
    def key(self) -> str:
        return self.meta["key"]

    @property
    def layers(self) -> list[int]:
        return self.meta["key_inputs"]["layers"]

    @property
    def n_tokens(self) -> int:
        return int(self.meta["n_tokens"])

    def texts(self) -> list[str]:
        """The texts of a corpus cache, in order (``texts.json``)."""
        return read_json(self.folder / "texts.json", "corpus texts", "rerun notebooks/01_extract_activations.ipynb")

    def word(self, layer: int, pooling: str = "mean") -> Tensor:
        """Word-level residual activations [n_examples, d_model], pooling 'mean' (default), 'last' or 'sentence'."""
        return self._pooled(layer, pooling, "")

    def mlp(self, layer: int, pooling: str = "mean") -> Tensor:
        """Word-level MLP post-activations of block ``layer`` [n_examples, d_mlp]."""
        return self._pooled(layer, pooling, "mlp.")

    def _pooled(self, layer: int, pooling: str, prefix: str) -> Tensor:
        if pooling not in POOLINGS:
            raise MonosemError(f"unknown pooling {pooling!r}; use one of {POOLINGS}")
        self._check_layer(layer)
        key = f"L{layer}.{prefix}{pooling}"
        if key not in self.tensors:
            raise MonosemError(f"this cache ({self.folder}) has no {key}: it holds a text corpus, not the concept dataset")
        return self.tensors[key]

    def token_array(self, layer: int) -> np.ndarray:
        """Every non-special token's activation [n_tokens, d_model] as a read-only memory map."""
        self._check_layer(layer)
        return np.load(self.folder / f"tokens_L{layer}.npy", mmap_mode="r")

    def tokens(self, layer: int) -> Tensor:
        """Every non-special token's activation [n_tokens, d_model] in memory, float32 (the SAE training set)."""
        return torch.from_numpy(np.asarray(self.token_array(layer), dtype=np.float32).copy())

    def _check_layer(self, layer: int) -> None:
        if layer not in self.layers:
            raise MonosemError(f"layer {layer} is not in this cache (layers {self.layers}); add it to MONOSEM_LAYERS and rerun notebook 01")


def _verify_cache(folder: Path) -> dict:
    """meta.json of a cache folder after checking every file's SHA-256 against it; raises on mismatch."""
    fix = "rerun notebooks/01_extract_activations.ipynb to rebuild it"
    meta = read_json(folder / "meta.json", "cache metadata", fix)
    if not isinstance(meta, dict) or meta.get("key") != folder.name or hash_json(meta.get("key_inputs")) != folder.name:
        raise MonosemError(f"{folder / 'meta.json'} does not match its folder's key; {fix}")
    listed: dict[str, str] = meta["sha256"] if isinstance(meta.get("sha256"), dict) else {}
    present = {p.name for p in folder.iterdir() if p.name != "meta.json"}
    if not listed or set(listed) != present:
        raise MonosemError(f"{folder / 'meta.json'} lists checksums for {sorted(listed)} but the folder holds {sorted(present)}; "
                           f"every file needs one; {fix}")
    for name, digest in listed.items():
        p = folder / name
        if not p.is_file() or sha256_file(p) != digest:
            raise MonosemError(f"{p} is missing or corrupted (checksum mismatch); {fix}")
    return meta


def open_cache(mp: ModelPaths, key: str) -> ActivationCache:
    """The verified cache ``key`` of this model, or an error that says which notebook makes it."""
    folder = mp.activations / key
    if not folder.is_dir():
        raise MonosemError(f"no activation cache at {folder}; run notebooks/01_extract_activations.ipynb first (with the same settings)")
    meta = _verify_cache(folder)
    return ActivationCache(folder, meta, load_file(folder / "pooled.safetensors"))


def _load_or_build(mp: ModelPaths, key: str, inputs: dict, n_examples: int, build: Callable[[Path], dict[str, Any]], d_model: Callable[[], int],
                   extra_files: dict[str, str] | None = None) -> ActivationCache:
    """Open the cache ``key`` if it is intact, else run ``build(tmp_folder)`` and write the folder atomically."""
    base = mp.activations
    clean_stale_temp(base)
    folder = base / key
    with file_lock(folder):  # a second run on this data folder waits here, then loads what the first one wrote
        if folder.is_dir():
            try:
                cache = open_cache(mp, key)
                log.info("loaded cached activations from %s", folder)
                return cache
            except Exception as exc:  # a damaged cache is recomputed, never trusted
                warnings.warn(f"activation cache {folder} is damaged ({exc}); recomputing it", stacklevel=2)
        _build(folder, key, inputs, n_examples, build, d_model, extra_files)
    return open_cache(mp, key)


def _build(folder: Path, key: str, inputs: dict, n_examples: int, build: Callable[[Path], dict[str, Any]], d_model: Callable[[], int],
           extra_files: dict[str, str] | None) -> None:
    """Run ``build`` into a temp folder, add the texts, checksums and meta.json, and rename it to ``folder``."""
    with atomic_dir(folder) as tmp:
        t0 = time.perf_counter()
        out = build(tmp)
        seconds = time.perf_counter() - t0
        save_file({k: v.contiguous() for k, v in out.items() if isinstance(v, Tensor)}, tmp / "pooled.safetensors")
        del out  # close the memory maps before hashing
        for name, text in (extra_files or {}).items():
            (tmp / name).write_text(text, encoding="utf-8")
        files = {p.name: sha256_file(p) for p in sorted(tmp.iterdir())}
        n_tokens = int(np.load(tmp / f"tokens_L{inputs['layers'][0]}.npy", mmap_mode="r").shape[0])
        meta = {"key": key, "key_inputs": inputs, "sha256": files, "n_examples": n_examples, "n_tokens": n_tokens, "d_model": d_model(),
                "seconds": round(seconds, 2), "tokens_per_second": round(n_tokens / seconds, 1)}
        (tmp / "meta.json").write_text(json.dumps(meta, indent=2), encoding="utf-8")
    log.info("extracted %d tokens in %.1f s -> %s", n_tokens, seconds, folder)


def _hidden_size(model: nn.Module) -> int:
    config: Any = model.config
    return int(config.hidden_size)


def load_or_extract_concepts(mp: ModelPaths, spec: ModelSpec, df: pd.DataFrame, layers: Sequence[int], batch_size: int = 32,
                             device: torch.device | str = "cpu", model_and_tokenizer: tuple[nn.Module, Any] | None = None) -> ActivationCache:
    """The concept dataset's activation cache: loaded if present and intact, else extracted and written atomically."""
    key, inputs = concept_key(spec, df, layers)
    loaded: list[nn.Module] = []

    def build(tmp: Path) -> dict[str, Any]:
        model, tokenizer = model_and_tokenizer or load_model(spec, device)
        loaded.append(model)
        return extract_concept_activations(model, tokenizer, df, layers, batch_size, device, token_dir=tmp)

    return _load_or_build(mp, key, inputs, len(df), build, lambda: _hidden_size(loaded[0]))


def load_or_extract_corpus(mp: ModelPaths, spec: ModelSpec, texts: Sequence[str], layers: Sequence[int], batch_size: int = 32,
                           device: torch.device | str = "cpu", model_and_tokenizer: tuple[nn.Module, Any] | None = None,
                           dtype: str = "float32") -> ActivationCache:
    """A text corpus's token activation cache (with its texts): loaded if present and intact, else extracted."""
    texts = list(texts)
    key, inputs = corpus_key(spec, texts, layers, dtype)
    loaded: list[nn.Module] = []

    def build(tmp: Path) -> dict[str, Any]:
        model, tokenizer = model_and_tokenizer or load_model(spec, device)
        loaded.append(model)
        return extract_corpus_activations(model, tokenizer, texts, layers, batch_size, device, token_dir=tmp, dtype=dtype)

    return _load_or_build(mp, key, inputs, len(texts), build, lambda: _hidden_size(loaded[0]), {"texts.json": json.dumps(texts)})
