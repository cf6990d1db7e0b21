"""The run manifest: what notebook 01 made (model, layers, cache keys, corpus split) and ``open_run`` for notebooks 02-04.

Notebook 01 resolves the model, extracts the caches and writes ``<data>/runs/<asked>.json``.
Notebooks 02-04 call ``open_run(cfg)``, which reads it, checks that it was made with the settings
of ``cfg`` (a mismatch names notebook 01 to rerun) and opens the verified caches by their keys, so
no later notebook recomputes a key or the corpus split.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from monosem.cache import ActivationCache, open_cache
from monosem.config import CODE_VERSION, EXTERNAL_PRESET, MonosemError, RunConfig
from monosem.dataset import dataset_hash, load_concepts
from monosem.io import read_json, write_json
from monosem.model import ModelSpec, model_config
from monosem.paths import ModelPaths, manifest_path, model_paths
from monosem.sae.saelens import import_saes

RERUN_01 = "rerun notebooks/01_extract_activations.ipynb with the same settings"


@dataclass
class RunManifest:
    """What notebook 01 produced for one model asked for."""

    model: dict[str, Any]  # the ModelSpec
    layers: list[int]
    dtype: str
    dataset: str  # content hash of the concept dataset
    concept_cache: str  # cache keys
    background_cache: str
    background: dict[str, Any]  # source, tokens, n_eval (the corpus split)
    eval_texts: list[str]  # the held-out background texts (notebook 02's fidelity check)
    code_version: str = CODE_VERSION


def write_manifest(cfg: RunConfig, spec: ModelSpec, layers: list[int], df: pd.DataFrame, concepts: ActivationCache,
                   background: ActivationCache, eval_texts: list[str]) -> Path:
    """Record what notebook 01 made for ``cfg`` (atomically)."""
    manifest = RunManifest(spec.to_json(), list(layers), cfg.dtype, dataset_hash(df), concepts.key, background.key,
                           {"source": cfg.background, "tokens": cfg.background_tokens, "n_eval": cfg.n_eval_texts}, list(eval_texts))
    return write_json(manifest_path(cfg.data_path, cfg.model_asked), dataclasses.asdict(manifest))


@dataclass
class Run:
    """Everything notebooks 02-04 start from: config, model, folders, dataset, caches and the held-out texts."""

    cfg: RunConfig
    spec: ModelSpec
    paths: ModelPaths
    layers: list[int]
    df: pd.DataFrame
    concepts: ActivationCache  # the concept sentences' activations
    background: ActivationCache  # the background corpus's token activations (and texts)
    eval_texts: list[str]

    @property
    def caches(self) -> list[ActivationCache]:
        """The SAE training set: concept sentences and background corpus."""
        return [self.concepts, self.background]


def read_manifest(cfg: RunConfig) -> RunManifest:
    """The manifest notebook 01 wrote for ``cfg.model_asked``, or an error that says to run it."""
    path = manifest_path(cfg.data_path, cfg.model_asked)
    raw = read_json(path, "run manifest", "run notebooks/01_extract_activations.ipynb first")
    try:
        return RunManifest(**raw)
    except TypeError as exc:
        raise MonosemError(f"{path} is not a run manifest ({exc}); {RERUN_01}") from None


def open_run(cfg: RunConfig) -> Run:
    """Open notebook 01's run for ``cfg``: check that its settings match, load the dataset and the verified caches."""
    manifest = read_manifest(cfg)
    path = manifest_path(cfg.data_path, cfg.model_asked)
    wanted = {"layers (MONOSEM_LAYERS)": (list(cfg.layers), manifest.layers), "dtype (MONOSEM_DTYPE)": (cfg.dtype, manifest.dtype),
              "background corpus (MONOSEM_BACKGROUND, MONOSEM_BACKGROUND_TOKENS, MONOSEM_EVAL_TEXTS)":
                  ({"source": cfg.background, "tokens": cfg.background_tokens, "n_eval": cfg.n_eval_texts}, manifest.background),
              "code version": (CODE_VERSION, manifest.code_version)}
    for what, (now, then) in wanted.items():
        if now != then:
            raise MonosemError(f"notebook 01 ran with {what} = {then}, but this notebook has {now} ({path}); {RERUN_01}, or use its settings here")
    spec = ModelSpec(**manifest.model)
    df = load_concepts(cfg.concepts_path)
    if dataset_hash(df) != manifest.dataset:
        raise MonosemError(f"{cfg.concepts_path} changed since notebook 01 extracted its activations; {RERUN_01}")
    paths = model_paths(cfg.data_path, spec.used)
    return Run(cfg, spec, paths, list(manifest.layers), df, open_cache(paths, manifest.concept_cache), open_cache(paths, manifest.background_cache),
               list(manifest.eval_texts))


def analysed_saes(run: Run) -> tuple[list[int], list[str], str]:
    """(layers, presets, analysed preset) of notebooks 03-04: notebook 02's presets, or the SAEs of ``MONOSEM_SAE_SOURCE``
    imported as preset 'external' (their hook names decide the layers, which notebook 01 must have extracted)."""
    cfg = run.cfg
    if not cfg.sae_source:
        return list(run.layers), list(cfg.sae_presets), cfg.sae_preset
    model_cfg = model_config(run.spec)
    layers = import_saes(run.paths, run.spec, cfg.sae_source, model_cfg.hidden_size, model_cfg.num_hidden_layers, cfg.hf_hub_offline)
    missing = sorted(set(layers) - set(run.layers))
    if missing:
        raise MonosemError(f"the SAEs of {cfg.sae_source} read layers {missing}, which notebook 01 did not extract: add them to MONOSEM_LAYERS and rerun 01")
    return layers, [EXTERNAL_PRESET], EXTERNAL_PRESET
