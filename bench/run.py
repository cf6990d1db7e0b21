"""Benchmarks, in one process, side by side with the tools researchers use instead.

    python bench/run.py            # full run (~10 min on 2 CPU cores), writes bench/RESULTS.md
    python bench/run.py --quick    # fewer repeats and smaller SAE runs, for a smoke test

Measures on the GPT-2 Medium architecture with random weights (no download) and on the bundled
all-MiniLM-L6-v2: extraction tokens/s of this project against a full Hugging Face forward with all
hidden states, a Hugging Face forward through the first 4 blocks only, and TransformerLens
``run_with_cache(stop_at_layer=4)`` (when installed); SAE training tokens/s against SAELens's
``StandardTrainingSAE`` training step (when installed); the share of the measured fp32 matmul
throughput; peak memory of extraction at two corpus sizes; slider-callback latency; the time of
the statistics. Absolute figures move between runs on a shared machine: compare the ratios.
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from monosem.activations import encode_examples, extract_corpus_activations, pad_batch, run_layers
from monosem.corpus import background_texts
from monosem.dataset import CONCEPTS, load_concepts
from monosem.io import atomic_write_text
from monosem.model import get_blocks, load_model, resolve_model
from monosem.sae.train import TokenSource, train_sae
from monosem.stats import add_qvalues, feature_statistics
from monosem.testing import ROOT, random_gpt2
from monosem.viz.widgets import SelectivityExplorer

LAYERS = [0, 1, 2, 3]
BATCH, SEQ = 16, 64
OURS = "ours (extract_corpus_activations: tokenise, forward, write memmaps)"


def best_time(fn, repeat: int = 3, warmup: int = 1) -> float:
    """Median wall time of ``repeat`` calls of ``fn`` after ``warmup`` calls."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def matmul_gflops(repeat: int = 5) -> float:
    """Measured fp32 matmul throughput (GFLOP/s) on a GPT-2-Medium-MLP-sized product."""
    a, b = torch.randn(1024, 1024), torch.randn(1024, 4096)
    t = best_time(lambda: a @ b, repeat, 2)
    return 2 * 1024 * 1024 * 4096 / t / 1e9


def gpt2_medium_random():
    """GPT-2 Medium architecture with random weights and the real GPT-2 BPE tokenizer."""
    return random_gpt2(n_layer=24, n_embd=1024, n_head=16, n_positions=1024, seed=0)


def texts_of_length(tok, n: int, seq: int) -> list[str]:
    """``n`` background texts cut to exactly ``seq`` tokens each (BOS included), so every method sees the same tokens."""
    out = []
    for text in background_texts(n * seq * 4, words_per_text=120):
        ids = tok(text, add_special_tokens=False)["input_ids"]
        if len(ids) >= seq - 1:
            out.append(tok.decode(ids[: seq - 1]))
        if len(out) == n:
            return out
    raise RuntimeError("background corpus too small")


def flops_per_token(cfg, n_blocks: int, seq: int) -> float:
    """Forward FLOPs per token of ``n_blocks`` transformer blocks (dense matmuls + attention)."""
    d = cfg.hidden_size
    d_ff = getattr(cfg, "intermediate_size", None) or getattr(cfg, "n_inner", None) or 4 * d
    return n_blocks * (2 * (4 * d * d + 2 * d * d_ff) + 4 * seq * d)


def bench_extraction(name: str, model, tok, repeat: int) -> dict:
    """Tokens/s of this project's extraction and of the baselines on the same BATCH x SEQ tokens."""
    texts = texts_of_length(tok, BATCH, SEQ)
    enc = encode_examples(tok, texts)
    ids, attn, _, _ = pad_batch(enc, list(range(len(enc))), tok.pad_token_id or 0)
    n_tok = ids.numel()
    res = {"model": name, "tokens": n_tok, "shape": list(ids.shape)}
    with tempfile.TemporaryDirectory() as tmp:
        res[OURS] = n_tok / best_time(
            lambda: extract_corpus_activations(model, tok, texts, LAYERS, batch_size=BATCH, progress=False, token_dir=Path(tmp)), repeat)
    res["ours (forward to block 3 only)"] = n_tok / best_time(lambda: run_layers(model, ids, attn, LAYERS), repeat)

    @torch.inference_mode()
    def hf_full():
        return model(input_ids=ids, attention_mask=attn, output_hidden_states=True).hidden_states

    res["HF full forward, all hidden states"] = n_tok / best_time(hf_full, max(1, repeat - 1))
    blocks = get_blocks(model)
    first4 = copy.copy(model)  # shallow copy sharing weights, with only the first 4 blocks
    parent = first4.h if hasattr(first4, "h") else first4.encoder.layer
    trimmed = torch.nn.ModuleList(list(blocks)[:4])
    if hasattr(first4, "h"):
        first4.h = trimmed
    else:
        first4.encoder = copy.copy(model.encoder)
        first4.encoder.layer = trimmed
    del parent

    @torch.inference_mode()
    def hf_4():
        return first4(input_ids=ids, attention_mask=attn, output_hidden_states=True).hidden_states

    res["HF first 4 blocks, hidden states"] = n_tok / best_time(hf_4, repeat)
    if name.startswith("GPT-2"):
        try:
            from transformer_lens import HookedTransformer, HookedTransformerConfig

            cfg = HookedTransformerConfig(n_layers=24, d_model=1024, n_heads=16, d_head=64, d_mlp=4096, d_vocab=50257, n_ctx=1024,
                                          act_fn="gelu_new", normalization_type="LN", device="cpu", seed=0)
            tl = HookedTransformer(cfg).eval()
            names = [f"blocks.{L}.hook_resid_post" for L in LAYERS]

            @torch.inference_mode()
            def tl_run():
                return tl.run_with_cache(ids, stop_at_layer=4, names_filter=lambda n: n in names)

            res["TransformerLens run_with_cache(stop_at_layer=4)"] = n_tok / best_time(tl_run, repeat)
        except ImportError as exc:
            res["TransformerLens"] = f"not installed ({exc})"
    res["flops_per_token"] = flops_per_token(model.config, 4, SEQ)
    return res


def bench_sae_training(d_in: int, d_sae: int, batch: int, steps: int) -> dict:
    """Training tokens/s: this project's l1 preset (standard SAE) vs. SAELens's StandardTrainingSAE step."""
    data = torch.randn(batch * 4, d_in)
    src = TokenSource([data.numpy()])
    expansion = d_sae / d_in
    train_sae(src, "l1", steps=1, batch_size=batch, progress=False, expansion=expansion)  # warm-up
    t0 = time.perf_counter()
    train_sae(src, "l1", steps=steps, batch_size=batch, progress=False, expansion=expansion)
    ours = steps * batch / (time.perf_counter() - t0)
    res = {"d_in": d_in, "d_sae": d_sae, "batch": batch, "steps": steps, "ours (l1 preset, standard SAE)": ours,
           "flops_per_token": 6 * 2 * d_in * d_sae}
    try:
        from sae_lens import StandardTrainingSAE, StandardTrainingSAEConfig
        from sae_lens.saes.sae import TrainStepInput

        sae = StandardTrainingSAE(StandardTrainingSAEConfig(d_in=d_in, d_sae=d_sae, l1_coefficient=1.0, device="cpu", dtype="float32"))
        opt = torch.optim.Adam(sae.parameters(), lr=1e-4)
        gen = torch.Generator().manual_seed(0)
        since_fired = torch.zeros(d_sae)

        def step(i):  # SAELens's SAETrainer._train_step, without logging
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
    except ImportError as exc:
        res["SAELens"] = f"not installed ({exc})"
    return res


def extraction_peak_rss(n_texts: int) -> float:
    """Peak RSS (MB, the kernel's VmHWM) of a fresh process that extracts ``n_texts`` background texts with the bundled model to disk."""
    code = f"""
import resource, sys, tempfile, os
from pathlib import Path
from monosem.activations import extract_corpus_activations
from monosem.corpus import background_texts
from monosem.model import load_model, resolve_model
spec = resolve_model('bundled'); model, tok = load_model(spec)
texts = (background_texts(60000) * 100)[:{n_texts}]
with tempfile.TemporaryDirectory() as d:
    out = extract_corpus_activations(model, tok, texts, [0, 1, 2, 3], batch_size=32, progress=False, token_dir=Path(d))
    n = out['token_id'].numel()
import re
# VmHWM, not ru_maxrss: ru_maxrss survives exec, so a child would report its parent's (larger) peak
print(n, int(re.search(r"VmHWM:\\s+(\\d+)", open("/proc/self/status").read()).group(1)) / 1024)
"""
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, env={**os.environ, "TQDM_DISABLE": "1"})
    n_tok, rss = out.stdout.strip().splitlines()[-1].split()
    return int(n_tok), float(rss)


def bench_widgets(n_layers: int = 4, n_features: int = 8192) -> dict:
    """Median and max latency (ms) of the selectivity explorer's slider callbacks on precomputed tables."""
    import pandas as pd

    rng = np.random.default_rng(0)
    tables = {}
    for L in range(n_layers):
        t = pd.DataFrame({"feature": np.arange(n_features), "score": rng.random(n_features), "top_concept": rng.choice(CONCEPTS, n_features),
                          "q": rng.random(n_features), "heldout_agreement": rng.random(n_features), "live": True})
        for c in CONCEPTS:
            t[f"mean_{c}"] = rng.random(n_features)
        tables[L] = t
    ex = SelectivityExplorer(tables, "bench", 0.6)
    times = []
    for i in range(40):
        t0 = time.perf_counter()
        if i % 4 == 3:
            ex.layer.value = (ex.layer.value + 1) % n_layers
        else:
            ex.threshold.value = round(0.3 + 0.01 * i, 2)
        times.append((time.perf_counter() - t0) * 1000)
    return {"features_per_layer": n_features, "median_ms": statistics.median(times), "max_ms": max(times)}


def bench_statistics(n_units: int, n_layers: int = 4, n_perm: int = 1000) -> dict:
    """Seconds for the full statistics (score, index, AUROC, permutation p, bootstrap CI, held-out) of
    ``n_units`` units on each of ``n_layers`` layers, on the shipped concept dataset."""
    df = load_concepts(ROOT / "data" / "concepts.csv")
    rng = np.random.default_rng(0)
    t0 = time.perf_counter()
    tables = {}
    for L in range(n_layers):
        acts = (rng.exponential(size=(len(df), n_units)) * (rng.random((len(df), n_units)) < 0.05)).astype(np.float32)
        tables[L] = feature_statistics(acts, df, n_perm=n_perm, n_boot=1000)
    add_qvalues(tables)
    return {"units_per_layer": n_units, "layers": n_layers, "permutations": n_perm, "seconds": time.perf_counter() - t0}


def fmt(x) -> str:
    return f"{x:,.0f}" if isinstance(x, (int, float)) and abs(x) >= 100 else (f"{x:.3g}" if isinstance(x, float) else str(x))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="fewer repeats, smaller SAE runs")
    ap.add_argument("--out", default=str(ROOT / "bench" / "RESULTS.md"))
    ap.add_argument("--commands", action="store_true", help="also time `make run` (caches cleared first) and `make test` (~10 min more)")
    args = ap.parse_args()
    repeat = 2 if args.quick else 3
    torch.manual_seed(0)
    results = {"machine": f"{platform.machine()}, {os.cpu_count()} CPUs, torch {torch.__version__}, {torch.get_num_threads()} threads",
               "date": time.strftime("%Y-%m-%d %H:%M")}
    print(results["machine"])
    results["matmul_gflops"] = gflops = matmul_gflops()
    print(f"fp32 matmul: {gflops:.0f} GFLOP/s")

    extraction = []
    gpt2, gpt2_tok = gpt2_medium_random()
    extraction.append(bench_extraction("GPT-2 Medium (random weights)", gpt2, gpt2_tok, repeat))
    del gpt2
    spec = resolve_model("bundled")
    mini, mini_tok = load_model(spec)
    extraction.append(bench_extraction("all-MiniLM-L6-v2 (bundled)", mini, mini_tok, repeat))
    results["extraction"] = extraction

    steps = 2 if args.quick else 5
    results["sae_training"] = [bench_sae_training(1024, 512, 4096, steps * 4), bench_sae_training(1024, 8192, 4096, steps)]

    small = 400 if args.quick else 1000
    results["memory"] = [dict(zip(("tokens", "peak_rss_mb"), extraction_peak_rss(n))) for n in (small, 8 * small)]
    results["widgets"] = bench_widgets()
    results["statistics"] = [bench_statistics(8192), bench_statistics(512)]
    if args.commands:
        results["commands"] = time_commands()
    write_report(results, Path(args.out))


def time_commands() -> dict:
    """Wall time of `make run` on the bundled model with empty caches, and of `make test` (set-up done)."""
    import shutil

    out = {}
    for sub in ("activations", "runs", "saes", "results"):  # runs/: the run manifests of notebook 01, which point at the caches
        shutil.rmtree(ROOT / "data" / sub, ignore_errors=True)
    for target in ("run", "test"):
        t0 = time.perf_counter()
        proc = subprocess.run(["make", target, "MODEL=bundled"] if target == "run" else ["make", target], cwd=ROOT, capture_output=True, text=True)
        out[f"make {target}"] = {"seconds": time.perf_counter() - t0, "ok": proc.returncode == 0}
        print(f"make {target}: {out[f'make {target}']['seconds']:.0f} s, exit {proc.returncode}")
    return out


def ratio(a, b):
    return a / b if isinstance(a, float) and isinstance(b, float) and b > 0 else float("nan")


def write_report(r: dict, path: Path) -> None:
    """Print the table of ratios and write it, with the raw figures, to ``path``."""
    lines = ["# Benchmark results", "", f"`python bench/run.py` on {r['machine']}, {r['date']}. "
             "Absolute figures move between runs on this shared machine; the ratios are measured in one run.", "",
             f"Measured fp32 matmul throughput: **{r['matmul_gflops']:.0f} GFLOP/s**.", "",
             "## Extraction (residual stream after blocks 0-3, 16 x 64 tokens)", "",
             "| model | method | tokens/s | ours / method | % of matmul peak |", "|---|---|---|---|---|"]
    goals = []
    for e in r["extraction"]:
        ours = e[OURS]
        for k, v in e.items():
            if isinstance(v, float) and k != "flops_per_token":
                peak = v * e["flops_per_token"] / (r["matmul_gflops"] * 1e9)
                lines.append(f"| {e['model']} | {k} | {fmt(v)} | {ratio(ours, v):.2f}x | {peak:.0%} |")
            elif isinstance(v, str) and k.startswith("TransformerLens"):
                lines.append(f"| {e['model']} | {k} | {v} | | |")
        if e["model"].startswith("GPT-2"):
            tl = e.get("TransformerLens run_with_cache(stop_at_layer=4)")
            goals += [("extraction >= 1.3x TransformerLens stop_at_layer", ratio(ours, tl), 1.3),
                      ("extraction >= 1.1x HF first 4 blocks", ratio(ours, e["HF first 4 blocks, hidden states"]), 1.1),
                      ("extraction >= 5x HF full forward", ratio(ours, e["HF full forward, all hidden states"]), 5.0),
                      ("extraction >= 70% of matmul throughput", ours * e["flops_per_token"] / (r["matmul_gflops"] * 1e9), 0.7)]
    lines += ["", "## SAE training (d_in 1024, batch 4096)", "", "| d_sae | ours tokens/s | SAELens tokens/s | ours / SAELens | ours % of matmul peak |", "|---|---|---|---|---|"]
    for s in r["sae_training"]:
        ours, theirs = s["ours (l1 preset, standard SAE)"], s.get("SAELens StandardTrainingSAE step", s.get("SAELens"))
        peak = ours * s["flops_per_token"] / (r["matmul_gflops"] * 1e9)
        lines.append(f"| {s['d_sae']} | {fmt(ours)} | {fmt(theirs)} | {ratio(ours, theirs):.2f}x | {peak:.0%} |")
        goals.append((f"SAE training >= 1.0x SAELens at d_sae {s['d_sae']}", ratio(ours, theirs), 1.0))
    m = r["memory"]
    lines += ["", "## Extraction memory (bundled model, streamed to disk)", "", "| tokens | peak RSS (MB) |", "|---|---|"]
    lines += [f"| {fmt(x['tokens'])} | {x['peak_rss_mb']:.0f} |" for x in m]
    goals.append(("peak RSS at 8x the tokens within 1.2x", m[1]["peak_rss_mb"] / m[0]["peak_rss_mb"], 1.2))
    w = r["widgets"]
    lines += ["", "## Slider callbacks", "", f"Selectivity explorer, 4 layers x {w['features_per_layer']} features: median {w['median_ms']:.1f} ms, max {w['max_ms']:.1f} ms."]
    goals.append(("slider callback (max) under 50 ms", w["max_ms"], 50.0))
    lines += ["", "## Statistics (score, index, AUROC, 1,000 permutations, 1,000 bootstraps, held-out splits)", "", "| units per layer | layers | seconds |", "|---|---|---|"]
    lines += [f"| {s['units_per_layer']} | {s['layers']} | {s['seconds']:.1f} |" for s in r["statistics"]]
    goals.append(("statistics for 4 layers x 8192 units under 60 s", r["statistics"][0]["seconds"], 60.0))
    if "commands" in r:
        lines += ["", "## Commands (bundled model, 2 CPU cores)", "", "| command | seconds | passed |", "|---|---|---|"]
        lines += [f"| `{k}` | {v['seconds']:.0f} | {'yes' if v['ok'] else 'NO'} |" for k, v in r["commands"].items()]
        goals.append(("make run (empty caches) under 300 s", r["commands"]["make run"]["seconds"], 300.0))
        goals.append(("make test under 900 s", r["commands"]["make test"]["seconds"], 900.0))
    lines += ["", "## Goals", "", "| goal | measured | target | met |", "|---|---|---|---|"]
    for name, value, target in goals:
        lower_is_better = "under" in name or "within" in name
        met = value <= target if lower_is_better else value >= target
        shown = f"{value:.0%}" if "%" in name else f"{value:.2f}"
        lines.append(f"| {name} | {shown} | {target if '%' not in name else f'{target:.0%}'} | {'yes' if met else 'NO'} |")
    missed = [name for name, value, target in goals if name.startswith("extraction >= 1.") and not value >= target]
    if missed:
        lines += ["", "**Why the extraction ratios against the 4-block HF forward and TransformerLens can fall short:** "
                  "both run GPT-2 Medium's first four blocks with the same fp32 matmul kernels as ours (ours is the same "
                  "Hugging Face model, stopped after block 3), and the 4-block HF forward already reaches about 100% of the "
                  "measured matmul throughput, so there is no fp32 headroom; the profile of our extraction is ~83% `addmm`. "
                  "What would get there: a fused tanh-GELU (GPT-2's NewGELU costs ~9% in separate ops, but changes results "
                  "in the 1e-7 range), or bf16/int8 matmuls (AMX CPUs, GPUs), which change the activations."]
    lines += ["", "<details><summary>raw figures (JSON)</summary>", "", "```json", json.dumps(r, indent=1, default=float), "```", "</details>", ""]
    text = "\n".join(lines)
    print(text[: text.index("<details>")])
    atomic_write_text(path, text)
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
