"""Bases of units to score: trained SAEs, the residual stream (±), the MLP neurons and untrained SAEs, compared on the same words.

A basis is an object with a ``name`` (shown in tables and figures) and ``activations(cache, layer,
pooling)`` -> word-level activations [n_examples, n_units] (non-negative) and which units are live.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

from monosem.cache import ActivationCache
from monosem.controls import random_control_caches
from monosem.criterion import Criterion
from monosem.massive import massive_rows
from monosem.model import ModelSpec, mlp_signed
from monosem.paths import ModelPaths
from monosem.runtime import default_workers, parallel_map
from monosem.sae.base import SAE
from monosem.sae.presets import PRESETS
from monosem.sae.saelens import load_sae
from monosem.sae.train import TokenSource, encode_all, train_sae, untrained_sae
from monosem.scorecard import SCORECARD_KEYS, scorecard_row, unit_table


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
    """The MLP neurons of block L, the input of the MLP's output projection. GPT-2 / BERT (GELU): one unit per neuron,
    GELU's small negative part clipped at 0. A gated MLP (``signed``: Llama-style ``act(gate) * up``, as negative as
    positive): each neuron split into its positive and negative part (2 * d_mlp units), as the residual stream."""

    def __init__(self, signed: bool = False):
        self.signed = signed
        self.name = "MLP neurons ±" if signed else "MLP neurons"

    def activations(self, cache: ActivationCache, layer: int, pooling: str = "mean") -> tuple[np.ndarray, np.ndarray]:
        x = cache.mlp(layer, pooling)
        acts = (torch.cat([x.clamp(min=0), (-x).clamp(min=0)], 1) if self.signed else x.clamp(min=0)).numpy()
        return acts, np.asarray((acts > 0).any(0), dtype=bool)


def trained_sae_basis(mp: ModelPaths, preset: str) -> SAEBasis:
    """The SAEs of ``preset`` saved by notebook 02 (or imported: preset 'external')."""
    return SAEBasis(f"SAE ({preset})", lambda layer: load_sae(mp.sae(layer, preset))[0], preset)


def untrained_sae_basis(mp: ModelPaths, preset: str, train_caches: Sequence[ActivationCache], seed: int = 0, exclude: np.ndarray | None = None,
                        **overrides: Any) -> SAEBasis:
    """The preset's initialisation (with the run's ``overrides``: the same width and k as the trained SAE) on
    ``train_caches``' tokens less the rows ``exclude`` marks (the massive activations, ``monosem.massive.massive_rows``,
    as in training), never trained; for an SAE made elsewhere, a fresh SAE of its architecture and shape."""

    def build(layer: int) -> SAE:
        if preset in PRESETS:
            source = TokenSource.from_caches(train_caches, layer, exclude)
            return untrained_sae(source, preset, seed=seed + 1000 + layer, **overrides)
        return load_sae(mp.sae(layer, preset))[0].fresh_like(seed + 1000 + layer)

    return SAEBasis(f"untrained SAE ({preset})", build, preset, trained=False)


def standard_bases(mp: ModelPaths, presets: Sequence[str], train_caches: Sequence[ActivationCache], seed: int = 0,
                   overrides: dict[str, dict[str, Any]] | None = None, mlp_signed: bool = False, massive: dict[int, float] | None = None) -> list[Basis]:
    """Each trained preset, the residual stream, the MLP neurons (``mlp_signed``: a gated MLP's, split ±) and each preset's
    untrained SAE (with the preset's ``overrides``, so it has the trained SAE's width, initialised without the ``massive``
    activations as the trained one), in that order."""
    overrides = overrides or {}
    exclude = massive_rows(train_caches, massive)  # one mask for every untrained SAE
    return [*(trained_sae_basis(mp, p) for p in presets), ResidualBasis(), MLPBasis(mlp_signed),
            *(untrained_sae_basis(mp, p, train_caches, seed, exclude, **overrides.get(p, {})) for p in presets)]


@dataclass
class Comparison:
    """The unit table of every basis at every layer ({basis: {layer: table}}) and their scorecard, one row per basis and layer."""

    tables: dict[Basis, dict[int, pd.DataFrame]]
    scorecard: pd.DataFrame  # columns: basis, layer, then monosem.scorecard.SCORECARD_KEYS

    def merged(self, other: Comparison) -> Comparison:
        """This comparison and ``other`` (further bases on the same words) as one."""
        return Comparison({**self.tables, **other.tables}, pd.concat([self.scorecard, other.scorecard], ignore_index=True))

    def of(self, name: str) -> dict[int, pd.DataFrame]:
        """The tables of the basis called ``name``."""
        for basis, tables in self.tables.items():
            if basis.name == name:
                return tables
        raise KeyError(f"no basis {name!r}; bases: {[b.name for b in self.tables]}")

    def sae(self, preset: str) -> dict[int, pd.DataFrame]:
        """The tables of the trained SAEs of ``preset``."""
        return self.tables[self._trained(preset)]

    def sae_of(self, preset: str, layer: int) -> SAE:
        """The trained SAE of ``preset`` at ``layer`` (the one the tables describe)."""
        return self._trained(preset).sae(layer)

    def _trained(self, preset: str) -> SAEBasis:
        return next(b for b in self.tables if isinstance(b, SAEBasis) and b.trained and b.preset == preset)

    def scorecard_json(self) -> dict[str, dict[str, dict[str, float]]]:
        """{basis: {layer: {key: value}}} for summary.json."""
        out: dict[str, dict[str, dict[str, float]]] = {}
        for row in self.scorecard.to_dict(orient="records"):
            out.setdefault(str(row["basis"]), {})[str(row["layer"])] = {k: row[k] for k in SCORECARD_KEYS}
        return out


def compare_bases(bases: Sequence[Basis], df: pd.DataFrame, cache: ActivationCache, layers: Sequence[int], pooling: str = "mean",
                  threshold: float = 0.6, criterion: Criterion = Criterion(), n_boot: int = 1000, progress: bool = True,
                  workers: int | None = None) -> Comparison:
    """The unit table (reference score and final label) and the scorecard of every basis at every layer, on the same words.

    The (basis, layer) pairs are independent: ``workers`` threads (default ``default_workers()``) compute them, and
    the tables are the same in any order."""
    from monosem.progress import Progress

    def one(job: tuple[Basis, int]) -> tuple[pd.DataFrame, dict[str, Any]]:
        basis, L = job
        acts, live = basis.activations(cache, L, pooling)
        table, rate = unit_table(acts, df, live, criterion, n_boot)
        return table, {"basis": basis.name, "layer": L, **scorecard_row(table, rate, acts, df, threshold, criterion)}

    jobs = [(basis, L) for basis in bases for L in layers]
    tables: dict[Basis, dict[int, pd.DataFrame]] = {basis: {} for basis in bases}
    rows = []
    bar = Progress(total=len(jobs), desc="statistics per basis and layer", disable=not progress)
    for (basis, L), (table, row) in zip(jobs, parallel_map(one, jobs, default_workers() if workers is None else workers)):
        tables[basis][L] = table
        rows.append(row)
        bar.update()
    bar.close()
    return Comparison(tables, pd.DataFrame(rows, columns=["basis", "layer", *SCORECARD_KEYS]))


@dataclass(eq=False, repr=False)
class OnCache(Basis):
    """A basis read from another model's cache (the random-weight control), under its own name."""

    name: str
    inner: Basis
    cache: ActivationCache

    def activations(self, cache: ActivationCache, layer: int, pooling: str = "mean") -> tuple[np.ndarray, np.ndarray]:
        """The inner basis's activations on this basis's own cache (``cache`` is ignored)."""
        return self.inner.activations(self.cache, layer, pooling)


CONTROL_NAME = "random-weight model"


def random_control_bases(data: Path, spec: ModelSpec, df: pd.DataFrame, layers: Sequence[int], background_texts: Sequence[str], preset: str,
                         steps: int, batch_size: int, seed: int = 0, device: torch.device | str = "cpu", **overrides: Any) -> list[Basis]:
    """The negative control's bases: the model's architecture with random weights (``monosem.controls``) through the
    same extraction, an SAE of ``preset`` trained for ``steps`` x ``batch_size`` tokens of the corpus sample (never the
    concept sentences, as for the real SAEs), and its residual and MLP units."""
    _, concepts, background = random_control_caches(data, spec, df, layers, background_texts, seed, device=device)
    mlp = MLPBasis(mlp_signed(spec))
    saes = {L: train_sae(TokenSource.from_caches([background], L), preset, steps, batch_size, seed, progress=False, device=device, **overrides)[0]
            for L in layers}
    return [OnCache(f"{CONTROL_NAME}: SAE ({preset})", SAEBasis(f"SAE ({preset})", saes.__getitem__, preset), concepts),
            OnCache(f"{CONTROL_NAME}: residual ±", ResidualBasis(), concepts), OnCache(f"{CONTROL_NAME}: {mlp.name}", mlp, concepts)]


def best_preset(scorecard: pd.DataFrame, presets: Sequence[str], exclude: Sequence[str] = ("reference",)) -> str:
    """The trained preset with the largest mean share of selective units among active units over layers (the reference
    study's preset is left out unless it is the only one): the default analysed preset."""
    candidates = [p for p in presets if p not in exclude] or list(presets)
    means = {p: float(scorecard.loc[scorecard["basis"] == f"SAE ({p})", "fraction_selective_active"].mean()) for p in candidates}
    return max(candidates, key=lambda p: (means[p], -candidates.index(p)))
