"""SAE training: the token stream, initialisation by preset, the Adam loop, metrics, and train-or-load with a keyed folder."""

from __future__ import annotations

import json
import logging
import math
import time
import warnings
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from monosem.cache import ActivationCache
from monosem.config import CODE_VERSION, MonosemError
from monosem.io import clean_stale_temp, file_lock, hash_json
from monosem.model import ModelSpec
from monosem.paths import ModelPaths
from monosem.sae.base import SAE, TrainState
from monosem.sae.presets import PRESETS
from monosem.sae.registry import make_sae, sae_class
from monosem.sae.saelens import load_sae, save_sae

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
    def from_caches(cls, caches: Sequence[ActivationCache], layer: int) -> "TokenSource":
        """The tokens of ``layer`` in every cache of ``caches`` (concept sentences, background corpus)."""
        return cls([c.token_array(layer) for c in caches])

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


def train_sae(acts: Tensor | TokenSource, preset: str = "reference", steps: int = 2000, batch_size: int = 256, seed: int = 0,
              progress: bool = True, device: torch.device | str = "cpu", **overrides: Any) -> tuple[SAE, list[dict], dict]:
    """Train an SAE on token activations [n_tokens, d_in] with Adam; returns it, the loss of every step and the config.

    The per-step work stays on the device: losses go into a preallocated tensor read back once at
    the end. With ``scale_inputs`` the SAE trains on inputs scaled to mean norm sqrt(d_in) and the
    scale is folded into the returned weights, so it encodes raw activations. The loss is the
    architecture's own (``SAE.training_loss``).
    """
    from tqdm.auto import tqdm

    if steps < 1 or batch_size < 1:
        raise MonosemError(f"training needs steps >= 1 and batch_size >= 1 (MONOSEM_SAE_STEPS, MONOSEM_SAE_BATCH), got {steps} and {batch_size}")
    source = TokenSource.of(acts)
    gen = torch.Generator().manual_seed(seed)
    sae, cfg = init_sae(source, preset, gen, seed, **overrides)
    scale = cfg.get("input_scale", 1.0)
    sae.to(device)
    opt = torch.optim.Adam(sae.parameters(), lr=cfg["lr"], fused=torch.device(device).type in ("cpu", "cuda"))  # one kernel, ~5x faster
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: _schedule(s, steps, cfg["lr_warmup"], cfg["lr_decay"]))
    state = TrainState(0, steps, cfg, torch.zeros(sae.d_sae, device=device))
    losses = torch.zeros(steps, 3, device=device)
    for step in tqdm(range(steps), desc=f"train SAE ({preset})", disable=not progress, mininterval=1):
        state.step = step
        x = source.rows(torch.randint(0, source.n, (batch_size,), generator=gen)).to(device) * scale
        parts = sae.training_loss(x, state)
        opt.zero_grad(set_to_none=True)
        parts.loss.backward()
        opt.step()
        sched.step()
        with torch.no_grad():
            sae.after_step()
            state.since_fired = torch.where(parts.fired, 0.0, state.since_fired + 1)
            losses[step] = torch.stack([parts.loss.detach(), parts.reconstruction.detach(), parts.sparsity.detach()])
        if "dead_steps" in cfg and step % 25 == 0:
            state.any_dead = bool((state.since_fired > cfg["dead_steps"]).any())
    sae.eval().cpu()
    if scale != 1.0:
        sae.fold_input_scale(scale)
    names = ("loss", "mse", sae.sparsity_name)
    history = [{"step": i + 1, **dict(zip(names, row))} for i, row in enumerate(losses.cpu().tolist())]
    return sae, history, cfg


def untrained_sae(source: TokenSource, preset: str = "reference", seed: int = 0, **overrides: Any) -> SAE:
    """The 'untrained SAE' baseline: the preset's initialisation for the data in ``source``, never trained
    (input scale folded in, like a trained one)."""
    sae, cfg = init_sae(source, preset, torch.Generator().manual_seed(seed), seed, **overrides)
    if cfg.get("input_scale", 1.0) != 1.0:
        sae.fold_input_scale(cfg["input_scale"])
    return sae.eval()


@torch.inference_mode()
def sae_metrics(sae: SAE, acts: Tensor | TokenSource, batch_size: int = 8192) -> dict[str, float]:
    """MSE, fraction of variance explained, L0, dead and dense fractions of ``sae`` on ``acts`` [n, d_in].

    fve = 1 - sum ||x - x_hat||^2 / sum ||x - mean(x)||^2 (the textbook formula; SAELens's eval
    reports another); dead: never active on ``acts``; dense: active on more than 10% of tokens.
    """
    source = TokenSource.of(acts)
    mean, _ = source.mean_and_norm()
    sq_err = sq_tot = active = 0.0
    fire_counts = torch.zeros(sae.d_sae)
    for x in source.chunks(batch_size):
        x_hat, f = sae(x)
        sq_err += (x - x_hat).pow(2).sum().item()
        sq_tot += (x - mean).pow(2).sum().item()
        fired = (f > 0).float()
        active += fired.sum().item()
        fire_counts += fired.sum(0)
    n = source.n
    density = fire_counts / n
    return {"mse": sq_err / (n * sae.d_in), "fve": 1 - sq_err / sq_tot, "l0": active / n, "dead_fraction": (density == 0).float().mean().item(),
            "dense_fraction": (density > 0.1).float().mean().item(), "n_dead": int((density == 0).sum()), "d_sae": sae.d_sae, "n_tokens": n}


@torch.inference_mode()
def encode_all(sae: SAE, acts: Tensor, batch_size: int = 8192) -> Tensor:
    """Feature activations [n, d_sae] of ``acts`` [n, d_in], computed in batches."""
    return torch.cat([sae.encode(acts[i : i + batch_size].float()) for i in range(0, len(acts), batch_size)])


def train_or_load_sae(mp: ModelPaths, spec: ModelSpec, caches: Sequence[ActivationCache], layer: int, preset: str = "reference", steps: int = 2000,
                      batch_size: int = 256, seed: int = 0, device: torch.device | str = "cpu", **overrides: Any) -> tuple[SAE, dict]:
    """The SAE of ``layer``: loaded when the saved one was trained on the same data and settings, else trained and saved.

    ``caches``: the activation caches whose tokens form the training set (concept sentences,
    background corpus). Returns the SAE and its ``training.json`` record (key, settings, history,
    metrics on the training tokens, seconds, tokens/s).
    """
    settings = {"preset": preset, "config": {**PRESETS.get(preset, {}), **overrides}, "steps": steps, "batch_size": batch_size, "seed": seed,
                "activations": [c.meta["key"] for c in caches], "layer": int(layer), "code_version": CODE_VERSION}
    key = hash_json(settings)
    folder = mp.sae(layer, preset)
    clean_stale_temp(folder.parent)
    with file_lock(folder):  # a second run on this data folder waits here, then loads what the first one trained
        return _load_or_train(folder, key, settings, spec, caches, layer, preset, steps, batch_size, seed, device, overrides)


def _load_or_train(folder: Path, key: str, settings: dict, spec: ModelSpec, caches: Sequence[ActivationCache], layer: int, preset: str, steps: int,
                   batch_size: int, seed: int, device: torch.device | str, overrides: dict[str, Any]) -> tuple[SAE, dict]:
    """The SAE in ``folder`` if its ``training.json`` has ``key``, else a newly trained one, saved only if its weights are finite."""
    record_path = folder / "training.json"
    if record_path.is_file():
        try:
            record = json.loads(record_path.read_text(encoding="utf-8"))
            if record.get("key") == key:
                sae, _ = load_sae(folder)
                log.info("layer %d: loaded the %s SAE trained with these settings from %s", layer, preset, folder)
                return sae, record
        except Exception as exc:  # an unreadable SAE is retrained, never trusted
            warnings.warn(f"SAE at {folder} is unreadable ({exc}); retraining it", stacklevel=2)
    source = TokenSource.from_caches(caches, layer)
    t0 = time.perf_counter()
    sae, history, cfg = train_sae(source, preset, steps, batch_size, seed, device=device, **overrides)
    seconds = time.perf_counter() - t0
    record = {"key": key, "settings": settings, "config": cfg, "history": history, "metrics": sae_metrics(sae, source),
              "seconds": round(seconds, 2), "tokens_per_second": round(steps * batch_size / seconds, 1)}
    save_sae(sae, folder, spec.used, layer, {"training_key": key, "preset": preset}, training=record)
    log.info("layer %d: trained the %s SAE in %.1f s -> %s", layer, preset, seconds, folder)
    return sae, record
