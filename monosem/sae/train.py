"""SAE training: the plan (tokens, batch), initialisation by preset, the Adam loop fed from a tensor or the streaming store, metrics, and train-or-load by key."""

from __future__ import annotations

import json
import logging
import math
import time
import warnings
from collections.abc import Iterable, Iterator, Sequence
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from monosem.cache import ActivationCache
from monosem.config import CODE_VERSION, MonosemError
from monosem.io import clean_stale_temp, file_lock, hash_json
from monosem.massive import massive_rows
from monosem.model import ModelSpec
from monosem.paths import ModelPaths
from monosem.runtime import default_workers, parallel_map
from monosem.sae.base import SAE, TrainState
from monosem.sae.presets import PRESETS
from monosem.sae.registry import make_sae, sae_class
from monosem.sae.saelens import load_sae, save_sae
from monosem.store import ActivationStore

log = logging.getLogger(__name__)


class TokenSource:
    """Training tokens from one or more [n_i, d] arrays (memory maps of the cache), drawn in random batches.

    Small corpora are copied into RAM once; larger ones (over ``ram_limit`` bytes) stay on disk and
    each batch gathers its rows from the memory maps.
    """

    def __init__(self, arrays: Sequence[np.ndarray], ram_limit: int = 4 << 30):
        self.arrays = [a for a in arrays if len(a)]
        if not self.arrays:
            raise MonosemError("no training tokens; run notebook 01")
        self.d = self.arrays[0].shape[1]
        self.starts = np.cumsum([0] + [len(a) for a in self.arrays])
        self.n = int(self.starts[-1])
        self.in_ram = self.n * self.d * 4 <= ram_limit
        self.data = torch.from_numpy(np.concatenate([np.asarray(a, dtype=np.float32) for a in self.arrays])) if self.in_ram else None

    @classmethod
    def of(cls, acts: "Tensor | TokenSource") -> "TokenSource":
        """``acts`` itself if it is a TokenSource, else one over the tensor [n, d]."""
        if isinstance(acts, TokenSource):
            return acts
        return cls([acts.float().numpy()])

    @classmethod
    def from_caches(cls, caches: Sequence[ActivationCache], layer: int, exclude: np.ndarray | None = None) -> "TokenSource":
        """The tokens of ``layer`` in every cache of ``caches`` (concept sentences, background corpus), less the rows
        ``exclude`` [n_total] marks (``monosem.massive.massive_rows``; copied into memory then)."""
        arrays = [c.token_array(layer) for c in caches]
        if exclude is None:
            return cls(arrays)
        starts = np.cumsum([0] + [len(a) for a in arrays])
        return cls([np.asarray(a)[~exclude[lo:hi]] for a, lo, hi in zip(arrays, starts[:-1], starts[1:])])

    def rows(self, idx: Tensor) -> Tensor:
        """Rows ``idx`` [b] as a float32 tensor [b, d]."""
        if self.data is not None:
            return self.data[idx]
        idx_np = idx.numpy()
        out = np.empty((len(idx_np), self.d), dtype=np.float32)
        which = np.searchsorted(self.starts, idx_np, side="right") - 1
        for j, a in enumerate(self.arrays):
            sel = np.flatnonzero(which == j)
            if len(sel):
                order = np.argsort(idx_np[sel])
                out[sel[order]] = a[idx_np[sel][order] - self.starts[j]]
        return torch.from_numpy(out)

    def chunks(self, size: int = 8192) -> Iterable[Tensor]:
        """All rows in order, ``size`` at a time."""
        for i in range(0, self.n, size):
            yield self.rows(torch.arange(i, min(i + size, self.n)))

    def mean_and_norm(self) -> tuple[Tensor, float]:
        """Mean vector [d] and mean L2 norm of all rows."""
        total, norm = torch.zeros(self.d, dtype=torch.float64), 0.0
        for x in self.chunks():
            total += x.double().sum(0)
            norm += x.norm(dim=1).double().sum().item()
        return (total / self.n).float(), norm / self.n


def _schedule(step: int, steps: int, warmup: float, decay: float) -> float:
    """Linear warm-up over the first ``warmup`` fraction of steps, linear decay to 0 over the last ``decay``."""
    w, d = int(warmup * steps), int(decay * steps)
    if w and step < w:
        return (step + 1) / w
    if d and step >= steps - d:
        return max(0.0, (steps - step) / d)
    return 1.0


def init_sae(source: TokenSource, preset: str, gen: torch.Generator, seed: int = 0, **overrides: Any) -> tuple[SAE, dict]:
    """A freshly initialised SAE of ``preset`` for the data in ``source``, and the full config.

    With ``scale_inputs`` the config gets ``input_scale`` (sqrt(d_in) / mean norm); the SAE then
    expects inputs multiplied by it. Tied init: decoder rows are random directions (of the
    architecture's ``decoder_init_norm``) and the encoder their transpose; ``b_dec_init='mean'``
    puts b_dec at the data mean.
    """
    if preset not in PRESETS:
        raise MonosemError(f"unknown SAE preset {preset!r}; use one of {list(PRESETS)}")
    unknown = set(overrides) - set(PRESETS[preset])
    if unknown:
        raise MonosemError(f"unknown setting(s) {sorted(unknown)} for preset {preset!r}; valid: {sorted(PRESETS[preset])}")
    cfg = {**PRESETS[preset], **overrides}
    d_in = source.d
    d_sae = max(1, int(d_in * cfg["expansion"]))
    arch_kwargs = {key: cfg[key] for key in sae_class(cfg["architecture"]).preset_keys if key in cfg}
    sae = make_sae(cfg["architecture"], d_in, d_sae, cfg["apply_b_dec_to_input"], seed, **arch_kwargs)
    if cfg["scale_inputs"] or cfg["b_dec_init"] or cfg["init"] == "tied":
        mean, mean_norm = source.mean_and_norm()
        scale = math.sqrt(d_in) / mean_norm if cfg["scale_inputs"] else 1.0
        cfg["input_scale"] = scale
        with torch.no_grad():
            if cfg["init"] == "tied":
                W = torch.randn(d_sae, d_in, generator=gen)
                W = W / W.norm(dim=1, keepdim=True) * sae.decoder_init_norm
                sae.W_dec.copy_(W)
                sae.W_enc.copy_(W.T)
                sae.b_enc.zero_()
            if cfg["b_dec_init"] == "mean":
                sae.b_dec.copy_(mean * scale)
    sae.calibrate(source.rows(torch.arange(min(source.n, 4096))) * cfg.get("input_scale", 1.0))  # e.g. a BatchTopK threshold
    return sae, cfg


@dataclass(frozen=True)
class TrainingPlan:
    """How many tokens every SAE trains on, in which batches, and through how large a shuffle buffer."""

    train_tokens: int  # asked for; the SAEs see steps * batch_size >= train_tokens of them
    batch_size: int
    buffer_tokens: int
    why: str  # where the values came from (settings or the defaults for this model size and device)
    workers: int = 1  # threads that step the SAEs of a batch in parallel (``train_on_store``)

    @property
    def steps(self) -> int:
        return -(-self.train_tokens // self.batch_size)  # rounded up: every SAE sees at least train_tokens

    @property
    def tokens_per_sae(self) -> int:
        return self.steps * self.batch_size


# Defaults by device and model size: (device kinds, largest d_model, tokens per SAE, batch). README "Training" states them.
TRAINING_DEFAULTS: tuple[tuple[tuple[str, ...], int | None, int, int], ...] = (
    (("cuda", "mps"), None, 10_000_000, 4096),  # a GPU: 10M tokens, as SAE training runs in the field start at 1e7
    (("cpu",), 512, 1_000_000, 1024),  # all-MiniLM-L6-v2 (d_model 384) and models of its size
    (("cpu",), 768, 200_000, 1024),  # SmolLM2-135M (d_model 576), the offline default: make run in under 10 minutes on 2 cores (a small budget)
    (("cpu",), None, 250_000, 1024),  # GPT-2 Medium size on a CPU: a run that finishes on 2 cores (README "Training"); 245 steps
)
SIZE_EXAMPLES = {512: "all-MiniLM-L6-v2: 384", 768: "SmolLM2-135M: 576"}  # named in the README's table


def training_defaults_markdown() -> str:
    """The README's table of training defaults by device and model size (``TRAINING_DEFAULTS``; a test checks the README holds it)."""
    rows = ["| device | model size | tokens per SAE | batch (tokens per step) | steps |", "| --- | --- | --- | --- | --- |"]
    for kinds, max_d, tokens, batch in TRAINING_DEFAULTS:
        size = f"d_model <= {max_d} ({SIZE_EXAMPLES[max_d]})" if max_d else "larger (GPT-2 Medium: 1024)" if kinds == ("cpu",) else "any"
        device = "a GPU (" + " or ".join(kinds) + ")" if kinds != ("cpu",) else "the CPU"
        rows.append(f"| {device} | {size} | {tokens:,} | {batch:,} | {-(-tokens // batch):,} |")
    return "\n".join(rows)


def training_plan(train_tokens: int | None, batch_size: int | None, buffer_tokens: int, d_model: int, device: torch.device | str,
                  workers: int | None = None) -> TrainingPlan:
    """The plan from the settings (``MONOSEM_SAE_TOKENS``, ``MONOSEM_SAE_BATCH``, ``MONOSEM_SAE_WORKERS``; None = the
    default for ``d_model`` on ``device``)."""
    kind = torch.device(device).type
    rows = [row for row in TRAINING_DEFAULTS if (kind if kind in ("cuda", "mps") else "cpu") in row[0] and (row[1] is None or d_model <= row[1])]
    _, max_d, tokens, batch = rows[0]
    size = f"d_model <= {max_d}" if max_d is not None else f"d_model {d_model}"
    chosen = [name for name, value in (("MONOSEM_SAE_TOKENS", train_tokens), ("MONOSEM_SAE_BATCH", batch_size), ("MONOSEM_SAE_WORKERS", workers))
              if value is not None]
    why = f"defaults for {size} on {kind}" + (f", overridden by {' and '.join(chosen)}" if chosen else "")
    return TrainingPlan(train_tokens or tokens, batch_size or batch, buffer_tokens, why, workers or default_workers(device))


class SAETrainer:
    """One SAE in training: initialised for the data of ``init_source``, then fed one batch of raw activations at a time.

    Adam with the preset's warm-up and decay; the per-step work stays on the device (losses go into a
    preallocated tensor read back once in ``finish``). With ``scale_inputs`` the SAE trains on inputs
    scaled to mean norm sqrt(d_in), and ``finish`` folds the scale into the weights, so the returned
    SAE encodes raw activations. The loss is the architecture's own (``SAE.training_loss``).
    """

    def __init__(self, init_source: TokenSource, preset: str, steps: int, seed: int = 0, device: torch.device | str = "cpu",
                 gen: torch.Generator | None = None, **overrides: Any):
        self.gen = gen or torch.Generator().manual_seed(seed)
        self.preset, self.steps, self.device = preset, steps, device
        self.sae, self.cfg = init_sae(init_source, preset, self.gen, seed, **overrides)
        self.scale = self.cfg.get("input_scale", 1.0)
        self.sae.to(device)
        self.opt = torch.optim.Adam(self.sae.parameters(), lr=self.cfg["lr"], fused=torch.device(device).type in ("cpu", "cuda"))  # one kernel, ~5x faster
        cfg = self.cfg
        self.sched = torch.optim.lr_scheduler.LambdaLR(self.opt, lambda s: _schedule(s, steps, cfg["lr_warmup"], cfg["lr_decay"]))
        self.state = TrainState(0, steps, cfg, torch.zeros(self.sae.d_sae, device=device))
        self.losses = torch.zeros(steps, 3, device=device)
        self.seconds = 0.0

    def step(self, x: Tensor) -> None:
        """One optimiser step on raw activations ``x`` [batch, d_in]."""
        t0 = time.perf_counter()
        step = self.state.step
        if step >= self.steps:
            raise MonosemError(f"this {self.preset} SAE was planned for {self.steps} steps and has taken them all")
        parts = self.sae.training_loss(x * self.scale, self.state)
        self.opt.zero_grad(set_to_none=True)
        parts.loss.backward()
        self.opt.step()
        self.sched.step()
        with torch.no_grad():
            self.sae.after_step()
            self.state.since_fired = torch.where(parts.fired, 0.0, self.state.since_fired + 1)
            self.losses[step] = torch.stack([parts.loss.detach(), parts.reconstruction.detach(), parts.sparsity.detach()])
        if "dead_steps" in self.cfg and step % 25 == 0:
            self.state.any_dead = bool((self.state.since_fired > self.cfg["dead_steps"]).any())
        self.state.step = step + 1
        self.seconds += time.perf_counter() - t0

    def steps_on(self, batches: Sequence[Tensor]) -> None:
        """One optimiser step on each of ``batches`` in turn."""
        for x in batches:
            self.step(x)

    def finish(self) -> tuple[SAE, list[dict], dict]:
        """The trained SAE on the CPU (input scale folded in), the loss of every step and the full config."""
        if self.state.step != self.steps:
            raise MonosemError(f"this {self.preset} SAE took {self.state.step} of its {self.steps} steps; the activation store ran out")
        sae = self.sae.eval().cpu()
        if self.scale != 1.0:
            sae.fold_input_scale(self.scale)
        names = ("loss", "mse", sae.sparsity_name)
        history = [{"step": i + 1, **dict(zip(names, row))} for i, row in enumerate(self.losses.cpu().tolist())]
        return sae, history, self.cfg


def train_sae(acts: Tensor | TokenSource, preset: str = "reference", steps: int = 2000, batch_size: int = 256, seed: int = 0,
              progress: bool = True, device: torch.device | str = "cpu", **overrides: Any) -> tuple[SAE, list[dict], dict]:
    """Train an SAE on token activations [n_tokens, d_in] (batches drawn at random with replacement); returns it, the
    loss of every step and the config. See ``SAETrainer``; ``train_on_store`` trains from the streaming store instead."""
    from monosem.progress import Progress

    if steps < 1 or batch_size < 1:
        raise MonosemError(f"training needs steps >= 1 and batch_size >= 1 (MONOSEM_SAE_TOKENS, MONOSEM_SAE_BATCH), got {steps} and {batch_size}")
    source = TokenSource.of(acts)
    trainer = SAETrainer(source, preset, steps, seed, device, **overrides)
    for _ in Progress(range(steps), desc=f"train SAE ({preset})", disable=not progress, mininterval=1):
        trainer.step(source.rows(torch.randint(0, source.n, (batch_size,), generator=trainer.gen)).to(device))
    return trainer.finish()


def train_on_store(store: ActivationStore, trainers: dict[tuple[str, int], SAETrainer], batch_size: int, progress: bool = True,
                   workers: int = 1, group_bytes: int = 256 << 20) -> None:
    """Feed every trainer ({(preset, layer): trainer}, all planned for the same steps) from one pass of ``store``:
    each batch of a layer trains every preset of that layer.

    The batches come in groups (as many as fit in ``group_bytes``, at most 16): each trainer takes its steps on the
    whole group before the next trainer runs, so its weights and optimiser state stay in the cache. With ``workers`` > 1
    the trainers of a group run in that many threads (the slowest first), each thread with its share of torch's
    intra-op threads, while the model (which fills the store) keeps them all. Every trainer takes the same steps on the
    same batches in the same order as in a serial run; with one intra-op thread per worker its ops are those too."""
    from monosem.progress import Progress

    steps = {t.steps for t in trainers.values()}
    if len(steps) != 1:
        raise MonosemError(f"the SAEs trained in one pass must plan the same number of steps, got {sorted(steps)}")
    if workers < 1:
        raise MonosemError(f"training needs at least one worker thread (MONOSEM_SAE_WORKERS), got {workers}")
    n_steps = steps.pop()
    layers = sorted({layer for _, layer in trainers})
    group = max(1, min(16, group_bytes // max(1, batch_size * store.d_model * 4 * len(layers))))
    bar = Progress(total=n_steps, desc=f"train {len(trainers)} SAEs ({batch_size} tokens per step)", disable=not progress, mininterval=1)
    for batches in _groups(store.batches(batch_size, n_steps), group):  # the store (the model) runs here, with every thread
        jobs = [(trainer, [b[layer] for b in batches]) for (_, layer), trainer in sorted(trainers.items(), key=lambda item: -item[1].seconds)]
        list(parallel_map(lambda job: job[0].steps_on(job[1]), jobs, workers))  # each worker thread with its share of the threads
        bar.update(len(batches))
    bar.close()


def _groups(items: Iterator[dict[int, Tensor]], size: int) -> Iterator[list[dict[int, Tensor]]]:
    """Lists of up to ``size`` consecutive items."""
    chunk: list[dict[int, Tensor]] = []
    for item in items:
        chunk.append(item)
        if len(chunk) == size:
            yield chunk
            chunk = []
    if chunk:
        yield chunk


def loss_change_last10pct(history: Sequence[dict], key: str = "loss") -> float:
    """Relative change of the training loss over the last 10% of steps: (mean over the last 5% of steps - mean over
    the 5% of steps that end where the last 10% begin) / |the latter|. Near 0: training has levelled off; clearly
    negative: the loss is still falling."""
    losses = np.asarray([row[key] for row in history], dtype=np.float64)
    n = len(losses)
    w = max(1, round(0.05 * n))
    start = n - max(1, round(0.1 * n))
    before = losses[max(0, start - w) : start] if start > 0 else losses[:1]
    return float((losses[-w:].mean() - before.mean()) / abs(before.mean())) if before.mean() != 0 else float("nan")


def untrained_sae(source: TokenSource, preset: str = "reference", seed: int = 0, **overrides: Any) -> SAE:
    """The 'untrained SAE' baseline: the preset's initialisation for the data in ``source``, never trained
    (input scale folded in, like a trained one)."""
    sae, cfg = init_sae(source, preset, torch.Generator().manual_seed(seed), seed, **overrides)
    if cfg.get("input_scale", 1.0) != 1.0:
        sae.fold_input_scale(cfg["input_scale"])
    return sae.eval()


@torch.inference_mode()
def sae_metrics(sae: SAE, acts: Tensor | TokenSource, batch_size: int = 8192, exclude: np.ndarray | None = None) -> dict[str, float]:
    """MSE, fraction of variance explained, L0, dead and dense fractions of ``sae`` on ``acts`` [n, d_in].

    fve = 1 - sum ||x - x_hat||^2 / sum ||x - mean(x)||^2 (the textbook formula; SAELens's eval
    reports another); dead: never active on ``acts``; dense: active on more than 10% of tokens.
    With ``exclude`` [n] (the massive-activation tokens, ``monosem.massive.massive_rows``) every metric
    is computed on the other tokens, and ``fve_all_tokens`` is the FVE on every token (``n_massive`` were left out).
    """
    source = TokenSource.of(acts)
    keep_all = np.ones(source.n, dtype=bool) if exclude is None else ~np.asarray(exclude, dtype=bool)
    if len(keep_all) != source.n:
        raise MonosemError(f"the exclusion mask has {len(keep_all)} rows for {source.n} tokens; recompute it from the same caches")

    def chunks() -> Iterator[tuple[Tensor, Tensor]]:
        for i, x in zip(range(0, source.n, batch_size), source.chunks(batch_size)):
            yield x, torch.from_numpy(keep_all[i : i + len(x)])

    sums = torch.zeros(2, source.d, dtype=torch.float64)  # sums of x over kept tokens, over all tokens
    for x, ordinary in chunks():
        sums[0] += x[ordinary].double().sum(0)
        sums[1] += x.double().sum(0)
    n, n_all = int(keep_all.sum()), source.n
    if n == 0:
        raise MonosemError(f"every one of the {n_all} tokens is a massive activation; raise MONOSEM_MASSIVE_FACTOR (or set it to 0)")
    mean, mean_all = (sums[0] / n).float(), (sums[1] / n_all).float()
    sq_err = sq_tot = sq_err_all = sq_tot_all = active = 0.0
    fire_counts = torch.zeros(sae.d_sae)
    for x, ordinary in chunks():
        x_hat, f = sae(x)
        err = (x - x_hat).pow(2).sum(-1)
        sq_err += err[ordinary].sum().item()
        sq_tot += (x[ordinary] - mean).pow(2).sum().item()
        sq_err_all += err.sum().item()
        sq_tot_all += (x - mean_all).pow(2).sum().item()
        fired = (f[ordinary] > 0).float()
        active += fired.sum().item()
        fire_counts += fired.sum(0)
    density = fire_counts / n
    return {"mse": sq_err / (n * sae.d_in), "fve": 1 - sq_err / sq_tot, "fve_all_tokens": 1 - sq_err_all / sq_tot_all, "l0": active / n,
            "dead_fraction": (density == 0).float().mean().item(), "dense_fraction": (density > 0.1).float().mean().item(), "n_dead": int((density == 0).sum()),
            "d_sae": sae.d_sae, "n_tokens": n, "n_massive": n_all - n}


@torch.inference_mode()
def encode_all(sae: SAE, acts: Tensor, batch_size: int = 8192) -> Tensor:
    """Feature activations [n, d_sae] of ``acts`` [n, d_in], computed in batches."""
    return torch.cat([sae.encode(acts[i : i + batch_size].float()) for i in range(0, len(acts), batch_size)])


@dataclass(frozen=True)
class SAEJob:
    """One SAE of a run: its preset, layer, the run's overrides of the preset (``preset_overrides``) and its seed offset
    (0: the run's seed; k > 0: a replicate, saved as preset ``<preset>-seed<k>``)."""

    preset: str
    layer: int
    overrides: dict[str, Any] = field(default_factory=dict)
    seed_offset: int = 0

    @property
    def name(self) -> str:
        """The name it is saved and reported under: the preset, or ``<preset>-seed<k>`` for a replicate."""
        return seed_variant(self.preset, self.seed_offset)


def seed_variant(preset: str, offset: int) -> str:
    """The name of ``preset``'s replicate trained with seed offset ``offset`` (the preset itself for 0)."""
    return preset if offset == 0 else f"{preset}-seed{int(offset)}"


def _job_settings(job: SAEJob, plan: TrainingPlan, store: ActivationStore, init_caches: Sequence[ActivationCache], spec: ModelSpec,
                  seed: int) -> dict[str, Any]:
    """Everything that determines the SAE of ``job`` (its training key hashes this)."""
    return {"preset": job.preset, "config": {**PRESETS.get(job.preset, {}), **job.overrides}, "layer": int(job.layer), "seed": seed + job.seed_offset,
            "train_tokens": plan.tokens_per_sae, "batch_size": plan.batch_size, "stream": store.key_inputs(),
            "init_activations": [c.key for c in init_caches], "model_revision": spec.revision, "code_version": CODE_VERSION}


def _load_trained(folder: Path, key: str) -> tuple[SAE, dict] | None:
    """The SAE in ``folder`` if its ``training.json`` has ``key`` (an unreadable one is retrained, never trusted)."""
    record_path = folder / "training.json"
    if not record_path.is_file():
        return None
    try:
        record = json.loads(record_path.read_text(encoding="utf-8"))
        if record.get("key") == key:
            return load_sae(folder)[0], record
    except Exception as exc:
        warnings.warn(f"SAE at {folder} is unreadable ({exc}); retraining it", stacklevel=3)
    return None


def train_or_load_saes(mp: ModelPaths, spec: ModelSpec, jobs: Sequence[SAEJob], plan: TrainingPlan, store: ActivationStore,
                       init_caches: Sequence[ActivationCache], heldout: ActivationCache, corpus: str, seed: int = 0,
                       device: torch.device | str = "cpu", progress: bool = True) -> dict[tuple[str, int], tuple[SAE, dict]]:
    """The SAE of every job: loaded when the saved one was trained with the same settings, the rest trained together
    in one pass of ``store`` (the model runs once for all of them) and saved.

    ``init_caches``: the corpus sample whose mean and norm initialise the SAEs (and scale their inputs);
    ``heldout``: the held-out corpus texts' activations, on which FVE, L0 and the dead fraction are
    measured; ``corpus``: the corpus's name for the records. Returns {(preset, layer): (SAE, training.json record)}.
    """
    settings = {(j.name, j.layer): _job_settings(j, plan, store, init_caches, spec, seed) for j in jobs}
    folders = {(j.name, j.layer): mp.sae(j.layer, j.name) for j in jobs}
    for folder in set(f.parent for f in folders.values()):
        clean_stale_temp(folder)
    out: dict[tuple[str, int], tuple[SAE, dict]] = {}
    with ExitStack() as locks:  # a second run on this data folder waits here, then loads what the first one trained
        for folder in sorted(set(folders.values())):
            locks.enter_context(file_lock(folder))
        for job in jobs:
            jk = (job.name, job.layer)
            loaded = _load_trained(folders[jk], hash_json(settings[jk]))
            if loaded is not None:
                log.info("layer %d: loaded the %s SAE trained with these settings from %s", job.layer, job.name, folders[jk])
                out[jk] = loaded
        todo = [j for j in jobs if (j.name, j.layer) not in out]
        if not todo:
            return out
        init_massive = massive_rows(init_caches, store.massive)  # left out of the initialisation as of training (None: keep all)
        trainers = {(j.name, j.layer): SAETrainer(TokenSource.from_caches(init_caches, j.layer, init_massive), j.preset, plan.steps, seed + j.seed_offset, device,
                                                    **j.overrides) for j in todo}
        t0 = time.perf_counter()
        train_on_store(store, trainers, plan.batch_size, progress, plan.workers)
        wall = time.perf_counter() - t0
        failed = []
        heldout_massive = massive_rows([heldout], store.massive)  # one mask for every SAE's held-out metrics
        for jk, trainer in trainers.items():  # each SAE is saved on its own: one that cannot be saved never loses the others
            try:
                out[jk] = _finish_and_save(trainer, jk, settings[jk], folders[jk], plan, store, heldout, heldout_massive, corpus, spec, wall,
                                           len(trainers))
            except MonosemError as exc:
                failed.append(f"{jk[0]}, layer {jk[1]}: {exc}")
        if failed:
            raise MonosemError(f"{len(failed)} of {len(trainers)} SAEs could not be saved (the others are):\n" + "\n".join(failed))
    return out


def _finish_and_save(trainer: SAETrainer, jk: tuple[str, int], settings: dict[str, Any], folder: Path, plan: TrainingPlan, store: ActivationStore,
                     heldout: ActivationCache, heldout_massive: np.ndarray | None, corpus: str, spec: ModelSpec, wall: float, n_saes: int) -> tuple[SAE, dict]:
    """The trained SAE of ``trainer`` measured on the held-out tokens and saved with its ``training.json`` record."""
    sae, history, cfg = trainer.finish()
    metrics = sae_metrics(sae, TokenSource.from_caches([heldout], jk[1]), exclude=heldout_massive)
    key = hash_json(settings)
    record = {"key": key, "settings": settings, "config": cfg, "corpus": corpus, "train_tokens": plan.tokens_per_sae,
              "epochs": store.epochs, "metrics_on": f"{metrics['n_tokens']} held-out tokens", "metrics": metrics,
              "loss_change_last10pct": loss_change_last10pct(history), "history": history,
              "seconds": round(trainer.seconds, 2), "tokens_per_second": round(plan.tokens_per_sae / max(trainer.seconds, 1e-9), 1),
              "pass_seconds": round(wall, 2), "pass_model_seconds": round(store.model_seconds, 2), "pass_saes": n_saes}
    save_sae(sae, folder, spec.used, jk[1], {"training_key": key, "preset": jk[0], "corpus": corpus}, training=record)
    log.info("layer %d: trained the %s SAE (%.1f s of steps) -> %s", jk[1], jk[0], trainer.seconds, folder)
    return sae, record
