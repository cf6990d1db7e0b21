"""SAE training benchmarks against SAELens, run by ``bench/run.py``: the same initial weights, the same batches, ratios
measured back to back in one process.

- ``bench_standard``: this project's l1 preset against SAELens's ``StandardTrainingSAE`` step.
- ``bench_sparse``: the topk (sparse TopK) and matryoshka (sparse Matryoshka BatchTopK) presets against SAELens's
  ``TopKTrainingSAE`` / ``MatryoshkaBatchTopKTrainingSAE`` in their setting that trains on a CPU
  (``use_sparse_activations=False``: the sparse decode fails in backward there). Both sides start from this
  project's initialisation and see the same batches, and SAELens's decoder rows are put back to unit norm after
  each step as the preset does (``rescale_acts_by_decoder_norm=False``); its trainer's gradient clipping is left out.
  So both do the same arithmetic, and the losses after the same steps must agree (the "same loss" check).
- ``profile_step``: where the time of one training step of a preset goes (torch profiler, self time per op).
"""

from __future__ import annotations

import statistics
import time
from typing import Any

import torch

from monosem.sae.base import TrainState
from monosem.sae.train import TokenSource, init_sae, train_sae

SPARSE_PRESETS = {"topk": "TopKTrainingSAE", "matryoshka": "MatryoshkaBatchTopKTrainingSAE"}


def structured_tokens(n: int, d_in: int, seed: int = 0) -> torch.Tensor:
    """[n, d_in] tokens with something to learn: sparse non-negative codes over 4·d_in random directions, plus noise."""
    g = torch.Generator().manual_seed(seed)
    atoms = torch.randn(4 * d_in, d_in, generator=g) / d_in**0.5
    codes = torch.relu(torch.randn(n, 4 * d_in, generator=g) - 2.0)
    return codes @ atoms + 0.1 * torch.randn(n, d_in, generator=g)


def _ours_seconds_per_step(src: TokenSource, preset: str, steps: int, batch: int, overrides: dict) -> tuple[float, list[float]]:
    """Seconds per step of ``train_sae`` (initialisation excluded: (T(1 + steps) - T(1)) / steps) and the losses of the 1 + steps run."""
    t0 = time.perf_counter()
    train_sae(src, preset, steps=1, batch_size=batch, progress=False, **overrides)
    t1 = time.perf_counter()
    _, history, _ = train_sae(src, preset, steps=1 + steps, batch_size=batch, progress=False, **overrides)
    t2 = time.perf_counter()
    return ((t2 - t1) - (t1 - t0)) / steps, [row["loss"] for row in history]


def _saelens_sae(preset: str, cfg: dict, d_in: int, d_sae: int, widths: list[int] | None) -> Any:
    import sae_lens as sl

    common = dict(d_in=d_in, d_sae=d_sae, k=cfg["k"], apply_b_dec_to_input=cfg["apply_b_dec_to_input"], rescale_acts_by_decoder_norm=False,
                  use_sparse_activations=False, aux_loss_coefficient=cfg["aux_coef"], device="cpu", dtype="float32")
    if preset == "topk":
        return sl.TopKTrainingSAE(sl.TopKTrainingSAEConfig(**common))
    return sl.MatryoshkaBatchTopKTrainingSAE(sl.MatryoshkaBatchTopKTrainingSAEConfig(**common, matryoshka_widths=list(widths or [])))


def _saelens_seconds_per_step(src: TokenSource, preset: str, steps: int, batch: int, overrides: dict) -> tuple[float, list[float]]:
    """SAELens's training step from this project's initial weights on the batches ``train_sae`` draws: seconds per step
    (the first, warm-up step excluded) and the losses of all 1 + steps steps."""
    from sae_lens.saes.sae import TrainStepInput

    gen = torch.Generator().manual_seed(0)
    ours, cfg = init_sae(src, preset, gen, 0, **overrides)  # consumes the generator exactly as train_sae does
    sae = _saelens_sae(preset, cfg, ours.d_in, ours.d_sae, list(getattr(ours, "widths", [])))
    with torch.no_grad():
        for name in ("W_enc", "b_enc", "W_dec", "b_dec"):
            getattr(sae, name).copy_(getattr(ours, name))
    del ours
    opt = torch.optim.Adam(sae.parameters(), lr=cfg["lr"])  # SAELens's trainer: torch's Adam with its defaults
    scale = cfg.get("input_scale", 1.0)
    losses, times = [], []
    for i in range(1 + steps):
        t0 = time.perf_counter()
        x = src.rows(torch.randint(0, src.n, (batch,), generator=gen)) * scale
        out = sae.training_forward_pass(TrainStepInput(sae_in=x, coefficients={}, dead_neuron_mask=None, n_training_steps=i, is_logging_step=False))
        out.loss.backward()
        opt.step()
        opt.zero_grad()
        with torch.no_grad():
            sae.W_dec.div_(sae.W_dec.norm(dim=1, keepdim=True))
        losses.append(out.loss.item())
        times.append(time.perf_counter() - t0)
    return sum(times[1:]) / steps, losses


def bench_sparse(preset: str, d_in: int, d_sae: int, k: int, batch: int, steps: int, repeat: int = 2) -> dict:
    """Training tokens/s of ``preset`` (topk or matryoshka) and of its SAELens counterpart, interleaved ``repeat`` times
    (medians), and the losses of both after 1 + ``steps`` steps from the same start on the same batches."""
    src = TokenSource([structured_tokens(4 * batch, d_in).numpy()])
    overrides = dict(expansion=d_sae / d_in, k=k, lr_warmup=0.0, lr_decay=0.0)
    res: dict[str, Any] = {"preset": preset, "d_in": d_in, "d_sae": d_sae, "k": k, "batch": batch, "steps": steps}
    ours_t, theirs_t = [], []
    try:
        import sae_lens  # noqa: F401
    except ImportError as exc:
        res["SAELens"] = f"not installed ({exc})"
        ours_t.append(_ours_seconds_per_step(src, preset, steps, batch, overrides)[0])
        res["ours tokens/s"] = batch / statistics.median(ours_t)
        return res
    for _ in range(repeat):
        t, ours_losses = _ours_seconds_per_step(src, preset, steps, batch, overrides)
        ours_t.append(t)
        t, theirs_losses = _saelens_seconds_per_step(src, preset, steps, batch, overrides)
        theirs_t.append(t)
    res["ours tokens/s"] = batch / statistics.median(ours_t)
    res[f"SAELens {SPARSE_PRESETS[preset]} tokens/s"] = batch / statistics.median(theirs_t)
    res["seconds per step"] = {"ours": ours_t, "SAELens": theirs_t}
    res["losses"] = {"ours": ours_losses, "SAELens": theirs_losses}
    res["final loss rel. difference"] = abs(ours_losses[-1] - theirs_losses[-1]) / abs(theirs_losses[-1])
    res["loss fell by"] = 1 - ours_losses[-1] / ours_losses[0]
    return res


def bench_standard(d_in: int, d_sae: int, batch: int, steps: int) -> dict:
    """Training tokens/s: this project's l1 preset (standard SAE) vs. SAELens's StandardTrainingSAE step."""
    data = torch.randn(batch * 4, d_in)
    src = TokenSource([data.numpy()])
    expansion = d_sae / d_in
    t, _ = _ours_seconds_per_step(src, "l1", steps, batch, {"expansion": expansion})
    res: dict[str, Any] = {"d_in": d_in, "d_sae": d_sae, "batch": batch, "steps": steps, "ours (l1 preset, standard SAE)": batch / t,
                           "flops_per_token": 6 * 2 * d_in * d_sae}
    try:
        from sae_lens import StandardTrainingSAE, StandardTrainingSAEConfig
        from sae_lens.saes.sae import TrainStepInput
    except ImportError as exc:
        res["SAELens"] = f"not installed ({exc})"
        return res
    sae = StandardTrainingSAE(StandardTrainingSAEConfig(d_in=d_in, d_sae=d_sae, l1_coefficient=1.0, device="cpu", dtype="float32"))
    opt = torch.optim.Adam(sae.parameters(), lr=1e-4)
    gen = torch.Generator().manual_seed(0)
    since_fired = torch.zeros(d_sae)

    def step(i: int) -> None:  # SAELens's SAETrainer._train_step, without logging
        nonlocal since_fired
        x = data[torch.randint(0, len(data), (batch,), generator=gen)]
        out = sae.training_forward_pass(TrainStepInput(sae_in=x, coefficients={"l1": 1.0}, dead_neuron_mask=None, n_training_steps=i, is_logging_step=False))
        with torch.no_grad():
            did_fire = out.feature_acts.bool().float().sum(-2).bool()
            since_fired += 1
            since_fired[did_fire] = 0
        out.loss.backward()
        torch.nn.utils.clip_grad_norm_(sae.parameters(), 1.0)
        opt.step()
        opt.zero_grad()

    step(0)
    t0 = time.perf_counter()
    for i in range(steps):
        step(i + 1)
    res["SAELens StandardTrainingSAE step"] = steps * batch / (time.perf_counter() - t0)
    return res


def profile_step(preset: str, d_in: int, d_sae: int, k: int, batch: int, top: int = 12) -> list[dict]:
    """Where one training step of ``preset`` spends its time (loss, backward, Adam, after_step), by self CPU time per op."""
    from torch.profiler import ProfilerActivity, profile

    src = TokenSource([structured_tokens(2 * batch, d_in).numpy()])
    gen = torch.Generator().manual_seed(0)
    sae, cfg = init_sae(src, preset, gen, 0, expansion=d_sae / d_in, k=k)
    opt = torch.optim.Adam(sae.parameters(), lr=cfg["lr"], fused=True)
    state = TrainState(0, 10, cfg, torch.zeros(d_sae))
    x = src.rows(torch.arange(batch)) * cfg.get("input_scale", 1.0)

    def step() -> None:
        parts = sae.training_loss(x, state)
        opt.zero_grad(set_to_none=True)
        parts.loss.backward()
        opt.step()
        with torch.no_grad():
            sae.after_step()
        state.step += 1

    step()
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        step()
    events = sorted(prof.key_averages(), key=lambda e: e.self_cpu_time_total, reverse=True)
    total = sum(e.self_cpu_time_total for e in events)
    return [{"op": e.key, "ms": e.self_cpu_time_total / 1000, "share": e.self_cpu_time_total / total, "calls": e.count} for e in events[:top]]
