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
from torch import Tensor

from monosem.cache import ActivationCache
from monosem.controls import random_control_caches
from monosem.criterion import Criterion, frame_rows
from monosem.dataset import CATEGORIES, CONCEPTS
from monosem.massive import massive_rows
from monosem.model import ModelSpec, mlp_signed
from monosem.natural import NaturalTokens, corpus_profile, matched_random_precision
from monosem.paired import BasisWords, lemma_groups, paired_comparison
from monosem.paths import ModelPaths
from monosem.runtime import default_workers, parallel_map
from monosem.sae.base import SAE
from monosem.sae.presets import PRESETS
from monosem.sae.saelens import load_sae
from monosem.sae.train import TokenSource, encode_all, train_sae, untrained_sae
from monosem.scorecard import SCORECARD_KEYS, add_corpus_columns, scorecard_row, unit_table
from monosem.specificity import Specificity, density_matched, matched_rates
from monosem.stats import word_data


class Basis:
    """A set of non-negative units whose word-level activations are scored."""

    name: str

    def activations(self, cache: ActivationCache, layer: int, pooling: str = "mean") -> tuple[np.ndarray, np.ndarray]:
        """Word-level activations [n_examples, n_units] of the concept dataset and which units are live [n_units]."""
        raise NotImplementedError

    def n_units(self, cache: ActivationCache, layer: int) -> int:
        """How many units this basis has at ``layer``."""
        return self.activations(cache, layer)[0].shape[1]

    def token_activations(self, natural: NaturalTokens, layer: int) -> Tensor | None:
        """The units' activations on held-out natural-text tokens [n_tok, n_units] (None where the basis has none)."""
        return None

    def fire_rate(self, layer: int) -> tuple[np.ndarray, np.ndarray] | None:
        """Another basis's per-unit densities (on the words, on the corpus tokens) whose distribution this basis's units are
        thresholded to match (``monosem.specificity.matched_rates``); None: its own τ x max rule."""
        return None

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
        """Encode, then pool: each token is encoded and the features are pooled over the word's tokens (as the MLP
        neurons, whose nonlinearity acts per token), never the SAE applied to a pooled residual."""
        feats = encode_all(self.sae(layer), cache.tokens(layer))  # [n_tokens, d_sae]
        live = (feats > 0).any(0).numpy()
        return pool_tokens(feats, cache, pooling).numpy(), live

    def n_units(self, cache: ActivationCache, layer: int) -> int:
        return self.sae(layer).d_sae

    def token_activations(self, natural: NaturalTokens, layer: int) -> Tensor | None:
        return encode_all(self.sae(layer), natural.resid[layer])


def pool_tokens(feats: Tensor, cache: ActivationCache, pooling: str = "mean") -> Tensor:
    """Word-level pooling [n_examples, n_units] of per-token values ``feats`` [n_tokens, n_units] of a concept cache:
    'mean' over the word's tokens, 'last' its last token, 'sentence' every token of the sentence."""
    example = cache.tensors["token_example"]
    rows = cache.tensors["token_in_word"] if pooling in ("mean", "last") else torch.ones(len(example), dtype=torch.bool)
    n = len(cache.word(cache.layers[0], "mean"))
    if pooling == "last":  # the last in-word token of each example
        index = torch.full((n,), -1, dtype=torch.long)
        index[example[rows]] = torch.nonzero(rows).squeeze(1)  # later tokens overwrite earlier ones
        return feats[index]
    sums = torch.zeros((n, feats.shape[1]), dtype=torch.float64).index_add_(0, example[rows], feats[rows].double())
    counts = torch.bincount(example[rows], minlength=n).clamp_min(1)
    return (sums / counts[:, None]).float()


def _split(x: Tensor) -> Tensor:
    """[n, d] -> [n, 2d]: the positive parts, then the negative parts."""
    return torch.cat([x.clamp(min=0), (-x).clamp(min=0)], 1)


class ResidualBasis(Basis):
    """Each residual-stream dimension split into its positive and negative part (2 * d_model units); ``rotation_seed``:
    the residual stream in a random rotation first (a basis the model has no reason to align with: a null)."""

    def __init__(self, rotation_seed: int | None = None):
        self.rotation_seed = rotation_seed
        self.name = "residual ±" if rotation_seed is None else "residual ± (random rotation)"
        self._rotations: dict[int, Tensor] = {}

    def _rotate(self, x: Tensor) -> Tensor:
        if self.rotation_seed is None:
            return x
        d = x.shape[1]
        if d not in self._rotations:
            g = torch.Generator().manual_seed(int(self.rotation_seed))
            q, r = torch.linalg.qr(torch.randn(d, d, generator=g, dtype=torch.float64))
            self._rotations[d] = (q * torch.sign(torch.diagonal(r))).float()  # Haar-distributed orthogonal matrix
        return x.float() @ self._rotations[d]

    def activations(self, cache: ActivationCache, layer: int, pooling: str = "mean") -> tuple[np.ndarray, np.ndarray]:
        acts = _split(self._rotate(cache.word(layer, pooling))).numpy()
        return acts, np.asarray((acts > 0).any(0), dtype=bool)

    def token_activations(self, natural: NaturalTokens, layer: int) -> Tensor | None:
        return _split(self._rotate(natural.resid[layer]))


class MLPBasis(Basis):
    """The MLP neurons of block L, the input of the MLP's output projection. GPT-2 / BERT (GELU): one unit per neuron,
    GELU's small negative part clipped at 0. A gated MLP (``signed``: Llama-style ``act(gate) * up``, as negative as
    positive): each neuron split into its positive and negative part (2 * d_mlp units), as the residual stream."""

    def __init__(self, signed: bool = False):
        self.signed = signed
        self.name = "MLP neurons ±" if signed else "MLP neurons"

    def activations(self, cache: ActivationCache, layer: int, pooling: str = "mean") -> tuple[np.ndarray, np.ndarray]:
        x = cache.mlp(layer, pooling)
        acts = (_split(x) if self.signed else x.clamp(min=0)).numpy()
        return acts, np.asarray((acts > 0).any(0), dtype=bool)

    def token_activations(self, natural: NaturalTokens, layer: int) -> Tensor | None:
        x = natural.mlp[layer]
        return _split(x) if self.signed else x.clamp(min=0)


@dataclass(eq=False, repr=False)
class RateMatched(Basis):
    """A dense basis whose units are thresholded so that the distribution of their firing rates, on the words and on
    the corpus tokens, is another basis's (per layer; ``monosem.specificity.matched_rates``): its density-matched null."""

    inner: Basis
    rates: dict[int, tuple[np.ndarray, np.ndarray]]  # layer -> (per-unit word densities, per-unit token densities) of the other basis
    of: str  # the name of the basis whose densities these are

    def __post_init__(self) -> None:
        self.name = f"{self.inner.name} @ {self.of} density"

    def activations(self, cache: ActivationCache, layer: int, pooling: str = "mean") -> tuple[np.ndarray, np.ndarray]:
        return self.inner.activations(cache, layer, pooling)

    def token_activations(self, natural: NaturalTokens, layer: int) -> Tensor | None:
        return self.inner.token_activations(natural, layer)

    def fire_rate(self, layer: int) -> tuple[np.ndarray, np.ndarray] | None:
        return self.rates[layer]


def basis_rates(tables: dict[int, pd.DataFrame]) -> dict[int, tuple[np.ndarray, np.ndarray]]:
    """Per layer, a basis's per-unit densities on the words and on the corpus tokens (from its unit tables; NaN as 0)."""
    return {layer: (np.nan_to_num(t["density_words"].to_numpy(dtype=np.float64)), np.nan_to_num(t["density_tokens"].to_numpy(dtype=np.float64)))
            for layer, t in tables.items()}


def trained_sae_basis(mp: ModelPaths, preset: str) -> SAEBasis:
    """The SAEs of ``preset`` saved by notebook 02 (or imported: preset 'external'); the reference study's preset is named
    a dense autoencoder wherever it appears (its L0 is most of its width)."""
    name = "SAE (reference, a dense autoencoder)" if preset == "reference" else f"SAE ({preset})"
    return SAEBasis(name, lambda layer: load_sae(mp.sae(layer, preset))[0], preset)


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
                   overrides: dict[str, dict[str, Any]] | None = None, mlp_signed: bool = False, massive: dict[int, float] | None = None,
                   untrained: Sequence[str] | None = None) -> list[Basis]:
    """Each trained preset, the residual stream, the MLP neurons (``mlp_signed``: a gated MLP's, split ±) and each preset's
    untrained SAE (with the preset's ``overrides``, so it has the trained SAE's width, initialised without the ``massive``
    activations as the trained one; ``untrained``: only these presets' untrained SAEs), in that order."""
    overrides = overrides or {}
    exclude = massive_rows(train_caches, massive)  # one mask for every untrained SAE
    return [*(trained_sae_basis(mp, p) for p in presets), ResidualBasis(), MLPBasis(mlp_signed),
            *(untrained_sae_basis(mp, p, train_caches, seed, exclude, **overrides.get(p, {})) for p in (presets if untrained is None else untrained))]


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
                  workers: int | None = None, specificity: Specificity = Specificity(), natural: NaturalTokens | None = None,
                  category_frames: bool = True, selective_label: bool = True) -> Comparison:
    """The unit table (reference score, final label, specificity and sensitivity) and the scorecard of every basis at every
    layer, on the same words; with ``natural``, each unit's specificity on held-out natural text and its density there.
    ``category_frames``: also label the trained SAEs on the category frames (a dataset with neutral frames only: False);
    ``selective_label`` False: skip the earlier label's split confirmation (its keys are NaN), to save time on nulls.

    The (basis, layer) pairs are independent: ``workers`` threads (default ``default_workers()``) compute them, and
    the tables are the same in any order."""
    from monosem.progress import Progress

    n_categories = len(CATEGORIES)

    def one(job: tuple[Basis, int]) -> tuple[pd.DataFrame, dict[str, Any]]:
        basis, L = job
        acts, live = basis.activations(cache, L, pooling)
        target = basis.fire_rate(L)
        tokens = basis.token_activations(natural, L) if natural is not None else None
        word_rate = token_rate = None
        if target is not None:  # per-unit rates whose distribution is the other basis's
            rows = frame_rows(df, "neutral")
            word_rate = density_matched(word_data(acts[rows], df.loc[rows]).means(), target[0], specificity.fire_fraction)
            if tokens is not None:
                token_density = ((tokens >= specificity.fire_fraction * tokens.max(0).values) & (tokens > 0)).float().mean(0).numpy()
                token_rate = matched_rates(token_density, target[1])
        trained = category_frames and isinstance(basis, SAEBasis) and basis.trained  # the category-frame label only for trained SAEs (time)
        table, rep_rate = unit_table(acts, df, live, criterion, n_boot, specificity=specificity, fire_rate=word_rate,
                                     category_frames=trained, selective_label=selective_label)
        matched = None
        if natural is not None and tokens is not None:
            profile = corpus_profile(tokens, natural.label, n_categories, fire_fraction=specificity.fire_fraction, fire_rate=token_rate)
            own = add_corpus_columns(table, profile)
            specific = table["specific"].to_numpy().astype(bool)
            units = np.flatnonzero(specific)
            matched = matched_random_precision(profile["top_precision"], profile["density_tokens"], units, own[units], specific)
        row = scorecard_row(table, rep_rate, acts, df, threshold, criterion, specificity=specificity, fire_rate=word_rate,
                            random_matched=matched)
        return table, {"basis": basis.name, "layer": L, **row}

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


def headline(sae_bases: Sequence[Basis], neurons: Basis, df: pd.DataFrame, cache: ActivationCache, layers: Sequence[int],
             rates: dict[int, tuple[np.ndarray, np.ndarray]], pooling: str = "mean", settings: Specificity = Specificity(), n_boot: int = 200,
             seed: int = 0, untrained: Basis | None = None) -> pd.DataFrame:
    """The paired answer per layer and metric (``monosem.paired``): the first of ``sae_bases`` (seed 0) against ``neurons``
    thresholded to the SAE's density distribution (``rates``), and against the ``untrained`` SAE of the same architecture
    and L0 (does training matter?), each with its paired CI over words, and the difference for every seed replicate in
    ``sae_bases`` (its min and max: the spread over training seeds). Columns: against, layer, metric, sae, other,
    difference, ci_low, ci_high, resampling, seed_min, seed_max, n_seeds."""
    rows = frame_rows(df, "neutral")
    out = []
    for L in layers:
        sae_words = []
        for basis in sae_bases:
            acts, _ = basis.activations(cache, L, pooling)
            sae_words.append(BasisWords.of(basis.name, word_data(acts[rows], df.loc[rows]).means(), settings))
        acts, _ = neurons.activations(cache, L, pooling)
        wd = word_data(acts[rows], df.loc[rows])
        groups = lemma_groups(wd.words, wd.category)
        others = [BasisWords.of(f"{neurons.name} @ SAE density", wd.means(), settings, density_matched(wd.means(), rates[L][0], settings.fire_fraction))]
        if untrained is not None:
            others.append(BasisWords.of(untrained.name, word_data(untrained.activations(cache, L, pooling)[0][rows], df.loc[rows]).means(), settings))
        for other in others:
            per_seed = [paired_comparison(a, other, wd.category, groups, len(CONCEPTS), len(CATEGORIES), settings, n_boot if i == 0 else 0, seed)
                        for i, a in enumerate(sae_words)]
            first = per_seed[0]
            diffs = np.stack([t["difference"].to_numpy() for t in per_seed])
            out.append(pd.DataFrame({"against": other.name, "layer": L, "metric": first["metric"], "sae": first.iloc[:, 1], "other": first.iloc[:, 2],
                                     "difference": first["difference"], "ci_low": first["ci_low"], "ci_high": first["ci_high"],
                                     "resampling": first["resampling"], "seed_min": diffs.min(0), "seed_max": diffs.max(0), "n_seeds": len(per_seed)}))
    return pd.concat(out, ignore_index=True)
