"""Bases of units to score: trained SAEs, the residual stream (±), the MLP neurons and untrained SAEs, compared on the same words.

A basis is an object with a ``name`` (shown in tables and figures) and ``activations(cache, layer,
pooling)`` -> word-level activations [n_examples, n_units] (non-negative) and which units are live.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
import torch

from monosem.cache import ActivationCache
from monosem.paths import ModelPaths
from monosem.sae.base import SAE
from monosem.sae.presets import PRESETS
from monosem.sae.saelens import load_sae
from monosem.sae.train import TokenSource, encode_all, untrained_sae
from monosem.selectivity import layer_summary
from monosem.stats import add_qvalues, feature_statistics


class Basis:
    """A set of non-negative units whose word-level activations are scored."""

    name: str

    def activations(self, cache: ActivationCache, layer: int, pooling: str = "mean") -> tuple[np.ndarray, np.ndarray]:
        """Word-level activations [n_examples, n_units] of the concept dataset and which units are live [n_units]."""
        raise NotImplementedError

    def n_units(self, cache: ActivationCache, layer: int) -> int:
        """How many units this basis has at ``layer``."""
        return self.activations(cache, layer)[0].shape[1]

    def __repr__(self) -> str:
        return f"<basis {self.name}>"


@dataclass(eq=False, repr=False)
class SAEBasis(Basis):
    """The features of one SAE per layer; a feature is live when it fires on a token of the dataset."""

    name: str
    sae_at: Callable[[int], SAE]  # layer -> SAE
    preset: str = ""
    trained: bool = True
    _saes: dict[int, SAE] = field(default_factory=dict)

    def sae(self, layer: int) -> SAE:
        """The SAE of ``layer`` (built or loaded once)."""
        if layer not in self._saes:
            self._saes[layer] = self.sae_at(layer)
        return self._saes[layer]

    def activations(self, cache: ActivationCache, layer: int, pooling: str = "mean") -> tuple[np.ndarray, np.ndarray]:
        sae = self.sae(layer)
        live = (encode_all(sae, cache.tokens(layer)) > 0).any(0).numpy()
        return encode_all(sae, cache.word(layer, pooling)).numpy(), live

    def n_units(self, cache: ActivationCache, layer: int) -> int:
        return self.sae(layer).d_sae


class ResidualBasis(Basis):
    """Each residual-stream dimension split into its positive and negative part (2 * d_model units)."""

    name = "residual ±"

    def activations(self, cache: ActivationCache, layer: int, pooling: str = "mean") -> tuple[np.ndarray, np.ndarray]:
        x = cache.word(layer, pooling)
        acts = torch.cat([x.clamp(min=0), (-x).clamp(min=0)], 1).numpy()
        return acts, np.asarray((acts > 0).any(0), dtype=bool)


class MLPBasis(Basis):
    """The MLP neurons of block L (post-activation; GELU's small negative part clipped at 0)."""

    name = "MLP neurons"

    def activations(self, cache: ActivationCache, layer: int, pooling: str = "mean") -> tuple[np.ndarray, np.ndarray]:
        acts = cache.mlp(layer, pooling).clamp(min=0).numpy()
        return acts, np.asarray((acts > 0).any(0), dtype=bool)


def trained_sae_basis(mp: ModelPaths, preset: str) -> SAEBasis:
    """The SAEs of ``preset`` saved by notebook 02 (or imported: preset 'external')."""
    return SAEBasis(f"SAE ({preset})", lambda layer: load_sae(mp.sae(layer, preset))[0], preset)


def untrained_sae_basis(mp: ModelPaths, preset: str, train_caches: Sequence[ActivationCache], seed: int = 0) -> SAEBasis:
    """The preset's initialisation on ``train_caches``' tokens, never trained; for an SAE made elsewhere, a fresh SAE
    of its architecture and shape."""

    def build(layer: int) -> SAE:
        if preset in PRESETS:
            return untrained_sae(TokenSource.from_caches(train_caches, layer), preset, seed=seed + 1000 + layer)
        return load_sae(mp.sae(layer, preset))[0].fresh_like(seed + 1000 + layer)

    return SAEBasis(f"untrained SAE ({preset})", build, preset, trained=False)


def standard_bases(mp: ModelPaths, presets: Sequence[str], train_caches: Sequence[ActivationCache], seed: int = 0) -> list[Basis]:
    """Each trained preset, the residual stream, the MLP neurons and each preset's untrained SAE, in that order."""
    return [*(trained_sae_basis(mp, p) for p in presets), ResidualBasis(), MLPBasis(), *(untrained_sae_basis(mp, p, train_caches, seed) for p in presets)]


@dataclass
class Comparison:
    """The statistics tables of every basis ({basis: {layer: table}}) and a long table of counts per layer and basis."""

    tables: dict[Basis, dict[int, pd.DataFrame]]
    counts: pd.DataFrame

    def of(self, name: str) -> dict[int, pd.DataFrame]:
        """The tables of the basis called ``name``."""
        for basis, tables in self.tables.items():
            if basis.name == name:
                return tables
        raise KeyError(f"no basis {name!r}; bases: {[b.name for b in self.tables]}")

    def sae(self, preset: str) -> dict[int, pd.DataFrame]:
        """The tables of the trained SAEs of ``preset``."""
        return next(t for b, t in self.tables.items() if isinstance(b, SAEBasis) and b.trained and b.preset == preset)


def compare_bases(bases: Sequence[Basis], df: pd.DataFrame, cache: ActivationCache, layers: Sequence[int], pooling: str = "mean",
                  threshold: float = 0.6, alpha: float = 0.05, seed: int = 0, progress: bool = True, **stat_kwargs) -> Comparison:
    """The same selectivity statistics for every basis, on the same words; q-values over all layers of one basis."""
    from tqdm.auto import tqdm

    tables: dict[Basis, dict[int, pd.DataFrame]] = {}
    for basis in tqdm(bases, desc="statistics per basis", disable=not progress):
        tables[basis] = {}
        for L in layers:
            acts, live = basis.activations(cache, L, pooling)
            tables[basis][L] = feature_statistics(acts, df, live, seed=seed, **stat_kwargs)
        add_qvalues(tables[basis])
    rows = []
    for basis, by_layer in tables.items():
        for L, t in by_layer.items():
            s = layer_summary(t, threshold, alpha)
            rows.append({"layer": L, "basis": basis.name, "n_units": s["n_features"], "n_live": s["n_features"] - s["n_dead"],
                         "n_reference": s["n_monosemantic"], "n_significant": s["n_significant"], "fraction_significant": s["fraction_significant"],
                         "heldout_agreement_significant": s["heldout_agreement_significant"]})
    return Comparison(tables, pd.DataFrame(rows))
