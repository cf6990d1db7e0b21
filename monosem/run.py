"""The run manifest: what notebook 01 made (model, layers, cache keys, the corpus) and ``open_run`` for notebooks 02-04.

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
from monosem.corpus import StoredCorpus, open_corpus
from monosem.dataset import dataset_hash, load_concepts
from monosem.fidelity import default_fidelity_texts
from monosem.io import read_json, write_json
from monosem.massive import massive_thresholds, norms_of_caches
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
    concept_cache: str  # activation cache keys: the concept sentences,
    background_cache: str  # a sample of the training corpus (dashboards, SAE initialisation, baselines),
    heldout_cache: str  # the held-out corpus texts (FVE, L0, dead fraction)
    background: dict[str, Any]  # the settings that chose the corpus: source asked for, cached tokens, held-out texts
    corpus: dict[str, Any]  # the corpus used: key (<data>/corpus/<key>/), spec, texts, tokens with this model's tokenizer
    code_version: str = CODE_VERSION


def background_settings(cfg: RunConfig) -> dict[str, Any]:
    """The settings of ``cfg`` that decide notebook 01's corpus and caches (notebooks 02-04 must have the same)."""
    return {"source": cfg.background, "tokens": cfg.background_tokens, "n_eval": cfg.n_eval_texts}


def write_manifest(cfg: RunConfig, spec: ModelSpec, layers: list[int], df: pd.DataFrame, concepts: ActivationCache, background: ActivationCache,
                   heldout: ActivationCache, corpus: StoredCorpus, corpus_tokens: int) -> Path:
    """Record what notebook 01 made for ``cfg`` (atomically); ``corpus_tokens``: the training texts' tokens with this model's tokenizer."""
    corpus_info = {"key": corpus.key, "spec": corpus.spec.to_json(), "title": corpus.spec.title, "n_train": corpus.meta["n_train"],
                   "n_heldout": corpus.meta["n_heldout"], "n_dropped": corpus.n_dropped, "train_tokens": int(corpus_tokens)}
    manifest = RunManifest(spec.to_json(), list(layers), cfg.dtype, dataset_hash(df), concepts.key, background.key, heldout.key,
                           background_settings(cfg), corpus_info)
    return write_json(manifest_path(cfg.data_path, cfg.model_asked), dataclasses.asdict(manifest))


@dataclass
class Run:
    """Everything notebooks 02-04 start from: config, model, folders, dataset, caches and the corpus."""

    cfg: RunConfig
    spec: ModelSpec
    paths: ModelPaths
    layers: list[int]
    df: pd.DataFrame
    concepts: ActivationCache  # the concept sentences' activations
    background: ActivationCache  # a sample of the training corpus: token activations and texts (dashboards)
    heldout: ActivationCache  # the held-out corpus texts' activations (never trained on)
    corpus: StoredCorpus  # the corpus: training texts (streamed by notebook 02) and held-out texts
    corpus_tokens: int  # training tokens of the corpus with this model's tokenizer

    @property
    def caches(self) -> list[ActivationCache]:
        """The data that initialises every SAE (mean, norm, input scale), trained or untrained: the corpus sample.
        The concept sentences are never training data."""
        return [self.background]

    @property
    def corpus_title(self) -> str:
        """The corpus's name for titles and summaries, e.g. 'WordNet 3.0 glosses'."""
        return self.corpus.spec.title

    def massive_norms(self) -> dict[int, float] | None:
        """Per layer, the norm above which a token is a massive activation: ``MONOSEM_MASSIVE_FACTOR`` x the median token
        norm of the corpus sample (``monosem.massive``); None when the factor is 0."""
        return massive_thresholds(norms_of_caches([self.background], self.layers), self.cfg.massive_factor)

    def fidelity_texts(self) -> list[str]:
        """The held-out texts of the downstream fidelity check: the first ``n_fidelity_texts`` of them (unset: by the
        model's depth, ``monosem.fidelity.default_fidelity_texts``)."""
        n = self.cfg.n_fidelity_texts or default_fidelity_texts(int(model_config(self.spec).num_hidden_layers))
        return self.corpus.heldout_texts()[:n]


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
              "background corpus (MONOSEM_BACKGROUND, MONOSEM_BACKGROUND_TOKENS, MONOSEM_EVAL_TEXTS)": (background_settings(cfg), manifest.background),
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
               open_cache(paths, manifest.heldout_cache), open_corpus(cfg.data_path, manifest.corpus["key"]), int(manifest.corpus["train_tokens"]))


def analysed_saes(run: Run) -> tuple[list[int], list[str], str]:
    """(layers, presets, analysed preset) of notebooks 03-04: notebook 02's presets, or the SAEs of ``MONOSEM_SAE_SOURCE``
    imported as preset 'external' (their hook names decide the layers, which notebook 01 must have extracted)."""
    cfg = run.cfg
    if not cfg.sae_source:
        return list(run.layers), list(cfg.sae_presets), cfg.analysed()
    model_cfg = model_config(run.spec)
    layers = import_saes(run.paths, run.spec, cfg.sae_source, model_cfg.hidden_size, model_cfg.num_hidden_layers, cfg.hf_hub_offline)
    missing = sorted(set(layers) - set(run.layers))
    if missing:
        raise MonosemError(f"the SAEs of {cfg.sae_source} read layers {missing}, which notebook 01 did not extract: add them to MONOSEM_LAYERS and rerun 01")
    return layers, [EXTERNAL_PRESET], EXTERNAL_PRESET
