"""The budget sweep (``make sweep``): does the SAE-against-neurons answer change with the SAE's width and training tokens?

Each point is one SAE of the analysed preset at one width x token budget on one layer. All points of a layer train on
one stream: a single pass of the model over the corpus keeps the layer's ordinary tokens (massive activations left out
by the any-layer rule, as in training) in memory as float16, and every epoch serves them in a new random order, the
same batches to every SAE.

Budgets share their training by warm-up-stable-decay (WSD; Hägele et al., 2024, "Scaling Laws and Compute-Optimal
Training Beyond Fixed Training Durations"): per width, one run at a constant learning rate after a fixed warm-up, and
for each budget B a branch forked at the start of B's decay (the preset's last 20% of B's steps) that decays linearly
to 0 at B. A branch takes exactly the steps, learning rates and batches of an SAE trained for B alone with that warm-up
(``tests/test_sweep.py`` checks the weights are identical), at the cost of 1.2x the largest budget instead of the sum
of all budgets. The warm-up is 5% of the smallest budget's steps for every budget (``make run`` warms up over 5% of
its own steps).

Each trained point is scored as notebook 03 scores the analysed SAE: held-out FVE, L0, dead fraction, the downstream
fidelity, and ``monosem.bases.headline`` against the MLP neurons thresholded to the SAE's density distribution (paired
CIs over words), plus the natural-text specificity of the specific units of both (CI: bootstrap over units).
"""

from __future__ import annotations

import copy
import math
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd
import torch
from torch import Tensor

from monosem.config import MonosemError
from monosem.sae.base import SAE
from monosem.sae.presets import PRESETS, preset_overrides
from monosem.sae.train import SAETrainer, TokenSource, _schedule
from monosem.store import ActivationStore

CPU_WIDTHS = (2, 4, 8, 16)  # d_sae / d_model
CPU_TOKENS = (250_000, 500_000, 1_000_000, 2_000_000, 4_000_000, 8_000_000)
GPU_WIDTHS = (2, 4, 8, 16, 32)
GPU_TOKENS = tuple(250_000 * 2**i for i in range(9))  # 0.25M .. 64M
WARMUP = 0.05  # of the smallest budget's steps, for every budget
HEADLINE_METRICS = ("fraction_specific", "specificity", "sensitivity", "coverage_k5", "probe_k1")  # monosem.paired.METRICS


@dataclass(frozen=True)
class SweepPlan:
    """The grid: widths (x d_model), token budgets, the batch (tokens per step) and the layers; ``why`` says whose defaults."""

    widths: tuple[float, ...]
    tokens: tuple[int, ...]
    batch_size: int
    layers: tuple[int, ...]
    preset: str
    k: int
    why: str

    def steps(self, tokens: int) -> int:
        return -(-tokens // self.batch_size)

    @property
    def warmup_steps(self) -> int:
        return int(WARMUP * self.steps(min(self.tokens)))

    @property
    def decay(self) -> float:
        return float(PRESETS[self.preset]["lr_decay"])

    def branch_step(self, tokens: int) -> int:
        """The step at which the budget's branch leaves the constant-rate run (its decay starts there, as in ``_schedule``)."""
        steps = self.steps(tokens)
        return steps - int(self.decay * steps)


def sweep_plan(device: torch.device | str, run_layers: Sequence[int], batch_size: int, preset: str, k: int, widths: Sequence[float] | None = None,
               tokens: Sequence[int] | None = None, layers: Sequence[int] | None = None) -> SweepPlan:
    """The grid for ``device``: on a GPU widths 2-32 x d_model, 0.25M-64M tokens, batch 4096 and every layer of the run; on
    the CPU widths 2-16, 0.25M-8M tokens, ``batch_size`` (make run's batch for this model) and the run's last layer.
    ``widths``, ``tokens`` and ``layers`` override."""
    gpu = torch.device(device).type in ("cuda", "mps")
    if preset not in PRESETS or not PRESETS[preset].get("lr_decay", 0) > 0 or "l1_warmup" in PRESETS[preset]:
        raise MonosemError(f"the sweep's budget branches are exact for the k-sparse presets (topk, matryoshka), got {preset!r} (l1's penalty warms "
                           "up over the planned steps, so a branch would not be the SAE trained alone); set MONOSEM_SAE_PRESET")
    plan = SweepPlan(tuple(widths or (GPU_WIDTHS if gpu else CPU_WIDTHS)), tuple(sorted(tokens or (GPU_TOKENS if gpu else CPU_TOKENS))),
                     4096 if gpu else batch_size, tuple(layers if layers is not None else (run_layers if gpu else run_layers[-1:])), preset, k,
                     ("GPU" if gpu else "CPU") + " defaults" + (" with overrides" if widths or tokens or layers is not None else ""))
    if any(t < plan.batch_size * 20 for t in plan.tokens):
        raise MonosemError(f"every budget needs at least 20 steps of {plan.batch_size} tokens; got budgets {list(plan.tokens)}")
    missing = sorted(set(plan.layers) - set(run_layers))
    if missing:
        raise MonosemError(f"layers {missing} were not extracted by notebook 01 (its layers: {list(run_layers)}); set MONOSEM_LAYERS and run make run")
    return plan


def one_pass(store: ActivationStore, layers: Sequence[int], dtype: torch.dtype = torch.float16, max_tokens: int | None = None) -> dict[int, Tensor]:
    """One pass of the model over the store's texts (or its first ``max_tokens`` tokens, for a smoke test): every ordinary
    token's residual stream at ``layers`` ({layer: [n, d]}, in ``dtype`` on the CPU). The store judges massive activations
    at all its layers."""
    import warnings

    parts: dict[int, list[Tensor]] = {L: [] for L in layers}
    source = store.model_batches()
    n = 0
    with warnings.catch_warnings():  # the store warns when it starts a second pass: here that only ends the loop
        warnings.filterwarnings("ignore", message="the corpus .* is smaller than the training tokens")
        for acts in source:
            if store.epochs > 1 or (max_tokens is not None and n >= max_tokens):  # the second pass has begun, or enough
                break
            for L in layers:
                part = acts[L].to("cpu", dtype)
                if not torch.isfinite(part).all():
                    raise MonosemError(f"layer {L}: activations overflow {dtype} (massive activations kept?); set MONOSEM_MASSIVE_FACTOR, "
                                       "or pass a wider dtype")
                parts[L].append(part)
            n += len(acts[layers[0]])
    source.close()
    return {L: torch.cat(p) for L, p in parts.items()}


def epoch_batches(n: int, batch_size: int, n_batches: int, seed: int) -> Iterator[Tensor]:
    """``n_batches`` batches of row indices into ``n`` rows: each epoch a new permutation (its last partial batch dropped)."""
    if n < batch_size:
        raise MonosemError(f"the corpus has {n} tokens at this layer, fewer than one batch of {batch_size}")
    gen = torch.Generator().manual_seed(seed)
    served = 0
    while True:
        perm = torch.randperm(n, generator=gen)
        for lo in range(0, n - batch_size + 1, batch_size):
            if served == n_batches:
                return
            yield perm[lo : lo + batch_size]
            served += 1


def fork(trainer: SAETrainer, steps: int, warmup_steps: int, decay: float) -> SAETrainer:
    """A copy of ``trainer`` as it is now (weights, Adam's state, dead-feature tracker), planned for ``steps`` steps in all
    with the schedule warm-up ``warmup_steps`` then decay over the last ``decay`` of them."""
    twin = copy.deepcopy(trainer)
    done = trainer.state.step
    if done > steps:
        raise MonosemError(f"cannot fork a run of {done} steps into one of {steps}")
    cfg = {**trainer.cfg, "lr_warmup": (warmup_steps + 0.5) / steps, "lr_decay": decay}
    twin.cfg, twin.steps = cfg, steps
    twin.state.cfg, twin.state.steps = cfg, steps
    twin.sched = torch.optim.lr_scheduler.LambdaLR(twin.opt, lambda s: _schedule(s, steps, cfg["lr_warmup"], cfg["lr_decay"]), last_epoch=done - 1)
    twin.losses = torch.zeros(steps, 3, device=trainer.losses.device)
    twin.losses[:done] = trainer.losses[:done]
    twin.seconds = 0.0  # its own steps from here on
    return twin


@dataclass
class WidthRun:
    """One width at one layer: the constant-rate run and the branches of every budget (WSD)."""

    plan: SweepPlan
    main: SAETrainer
    branches: dict[int, SAETrainer] = field(default_factory=dict)  # budget (tokens) -> its branch, while it trains
    finished: dict[int, tuple[SAE, list[dict], dict]] = field(default_factory=dict)  # budget -> (SAE, loss history, config)
    seconds: float = 0.0

    @classmethod
    def start(cls, plan: SweepPlan, init_source: TokenSource, width: float, seed: int, device: torch.device | str) -> WidthRun:
        steps = plan.steps(max(plan.tokens))
        main = SAETrainer(init_source, plan.preset, steps, seed, device, **preset_overrides(plan.preset, float(width), plan.k),
                          lr_warmup=(plan.warmup_steps + 0.5) / steps, lr_decay=0.0)
        return cls(plan, main)

    def steps_on(self, batches: Sequence[Tensor]) -> None:
        """One step of every live trainer on each batch in turn, forking each budget's branch at its step."""
        last_fork = max(self.plan.branch_step(t) for t in self.plan.tokens)
        for x in batches:
            s = self.main.state.step
            for tokens in self.plan.tokens:
                if self.plan.branch_step(tokens) == s:
                    self.branches[tokens] = fork(self.main, self.plan.steps(tokens), self.plan.warmup_steps, self.plan.decay)
            if s < last_fork:
                self.main.step(x)
            else:
                self.main.state.step += 1  # the constant-rate run is no longer needed: only count the batch
            for tokens, trainer in list(self.branches.items()):
                trainer.step(x)
                if trainer.state.step == trainer.steps:
                    self.seconds += trainer.seconds
                    self.finished[tokens] = trainer.finish()
                    del self.branches[tokens]

    @property
    def total_seconds(self) -> float:
        return self.seconds + self.main.seconds


def train_sweep(plan: SweepPlan, data: dict[int, Tensor], init: dict[int, TokenSource], seed: int, device: torch.device | str,
                workers: int = 1, group: int = 16, progress: bool = True) -> dict[tuple[int, float], WidthRun]:
    """Every width at every layer of ``plan`` trained on ``data`` ({layer: [n, d] tokens}), the same batches for all;
    ``init`` ({layer: source}) initialises the SAEs. Returns {(layer, width): its run, with ``finished`` per budget}."""
    from monosem.progress import Progress
    from monosem.runtime import parallel_map

    n_batches = plan.steps(max(plan.tokens))
    runs = {(L, w): WidthRun.start(plan, init[L], w, seed, device) for L in plan.layers for w in plan.widths}
    n = min(len(x) for x in data.values())
    order = epoch_batches(n, plan.batch_size, n_batches, seed)
    bar = Progress(total=n_batches, desc=f"train {len(runs)} widths x {len(plan.tokens)} budgets", disable=not progress, mininterval=5)
    while True:
        idx = [i for _, i in zip(range(group), order)]
        if not idx:
            break
        batches = {L: [data[L][i].to(device, torch.float32) for i in idx] for L in plan.layers}
        jobs = [(r, batches[key[0]]) for key, r in sorted(runs.items(), key=lambda item: -item[1].total_seconds)]  # the slowest first
        list(parallel_map(lambda job: job[0].steps_on(job[1]), jobs, workers))
        bar.update(len(idx))
    bar.close()
    unfinished = [(key, t) for key, r in runs.items() for t in plan.tokens if t not in r.finished]
    if unfinished:
        raise MonosemError(f"{len(unfinished)} sweep points did not finish training: {unfinished[:4]}")
    return runs


MIN_UNITS = 5  # specific units each side needs for a natural-text CI


def natural_difference(sae_table: pd.DataFrame, other_table: pd.DataFrame, n_boot: int = 1000, seed: int = 0) -> dict[str, float]:
    """Median natural-text specificity (``specificity_corpus``, notebook 03's statistic) of each table's specific units,
    their counts, the difference and a 95% bootstrap CI of it (units resampled within each table, not paired: the two
    bases' specific units differ). Top-20 precision takes the values k/20, so medians tie and a CI can end on the
    difference itself; the CI is NaN where a side has fewer than ``MIN_UNITS`` specific units."""
    values = [t.loc[t["specific"].astype(bool), "specificity_corpus"].dropna().to_numpy(dtype=float) for t in (sae_table, other_table)]
    out = {"sae": float(np.median(values[0])) if len(values[0]) else math.nan, "other": float(np.median(values[1])) if len(values[1]) else math.nan,
           "n_sae": float(len(values[0])), "n_other": float(len(values[1]))}
    out["difference"] = out["sae"] - out["other"]
    if min(len(values[0]), len(values[1])) < MIN_UNITS:
        return {**out, "ci_low": math.nan, "ci_high": math.nan}
    rng = np.random.default_rng(seed)
    draws = [np.median(rng.choice(v, (n_boot, len(v)), replace=True), axis=1) for v in values]
    lo, hi = np.quantile(draws[0] - draws[1], [0.025, 0.975])
    return {**out, "ci_low": float(lo), "ci_high": float(hi)}


def flatten_headline(answer: pd.DataFrame) -> dict[str, float]:
    """One row of the headline table's SAE-against-neurons rows: ``<metric>_sae``, ``_neurons``, ``_diff``, ``_lo``, ``_hi``."""
    out: dict[str, float] = {}
    for r in answer.to_dict(orient="records"):
        m = str(r["metric"])
        out.update({f"{m}_sae": float(r["sae"]), f"{m}_neurons": float(r["other"]), f"{m}_diff": float(r["difference"]), f"{m}_lo": float(r["ci_low"]),
                    f"{m}_hi": float(r["ci_high"])})
    return out


def verdicts(table: pd.DataFrame, metrics: Sequence[str]) -> pd.DataFrame:
    """Per metric, at how many points the SAE-minus-neurons CI lies above 0, below 0, or contains it, and whether that
    verdict is the same at every point (``stable``)."""
    rows = []
    for m in metrics:
        lo, hi = table[f"{m}_lo"].to_numpy(dtype=float), table[f"{m}_hi"].to_numpy(dtype=float)
        ok = ~(np.isnan(lo) | np.isnan(hi))
        above, below = int((lo[ok] > 0).sum()), int((hi[ok] < 0).sum())
        rows.append({"metric": m, "points": int(ok.sum()), "above": above, "below": below, "neither": int(ok.sum()) - above - below,
                     "stable": int(ok.sum()) > 0 and max(above, below, int(ok.sum()) - above - below) == int(ok.sum())})
    return pd.DataFrame(rows)


@dataclass
class SweepScorer:
    """What scoring a sweep point needs, built once: notebook 03's words, natural text, label settings and neurons."""

    df: pd.DataFrame
    concepts: Any  # ActivationCache of the concept words
    natural: Any  # monosem.natural.NaturalTokens
    neurons: Any  # monosem.bases.MLPBasis
    specificity: Any  # monosem.specificity.Specificity
    criterion: Any  # monosem.criterion.Criterion
    pooling: str = "mean"
    threshold: float = 0.6
    n_boot: int = 200
    n_boot_paired: int = 200
    seed: int = 0

    def score(self, sae: SAE, layer: int, name: str) -> dict[str, float]:
        """The headline against the neurons at ``sae``'s density (paired CIs over words), and natural-text specificity."""
        from monosem.bases import RateMatched, SAEBasis, basis_rates, compare_bases, headline

        basis = SAEBasis(name, {layer: sae}.__getitem__, "sweep")
        common = dict(pooling=self.pooling, threshold=self.threshold, criterion=self.criterion, n_boot=self.n_boot, progress=False, workers=1,
                      specificity=self.specificity, natural=self.natural, category_frames=False, selective_label=False)
        own = compare_bases([basis], self.df, self.concepts, [layer], **common)  # type: ignore[arg-type]
        rates = basis_rates(own.tables[basis])
        null = RateMatched(self.neurons, rates, name)
        other = compare_bases([null], self.df, self.concepts, [layer], **common)  # type: ignore[arg-type]
        answer = headline([basis], self.neurons, self.df, self.concepts, [layer], rates, self.pooling, self.specificity, self.n_boot_paired, self.seed)
        nat = natural_difference(own.tables[basis][layer], other.tables[null][layer], 1000, self.seed)
        card = own.scorecard.iloc[0]
        return {**flatten_headline(answer), **{f"specificity_corpus_{k}": v for k, v in
                                              {"sae": nat["sae"], "neurons": nat["other"], "diff": nat["difference"], "lo": nat["ci_low"], "hi": nat["ci_high"],
                                               "n_sae": nat["n_sae"], "n_neurons": nat["n_other"]}.items()},
                "n_specific": float(card["n_specific"]), "density_words_median": float(card["density_words_median"])}
