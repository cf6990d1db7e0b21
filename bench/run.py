"""Benchmarks, in one process, side by side with the tools researchers use instead.

    python bench/run.py            # full run (~25 min on 2 busy CPU cores), writes bench/RESULTS.md
    python bench/run.py --quick    # small sizes and few repeats, for a smoke test (RESULTS.md is only written with --out)

Measures on the GPT-2 Medium architecture with random weights (no download) and on the bundled
all-MiniLM-L6-v2: extraction tokens/s of this project against a full Hugging Face forward with all
hidden states, a Hugging Face forward through the first 4 blocks only, and TransformerLens
``run_with_cache(stop_at_layer=4)``; SAE training against SAELens (``bench/sae_training.py``: the l1
preset against ``StandardTrainingSAE``, sparse TopK and Matryoshka BatchTopK against ``TopKTrainingSAE`` and
``MatryoshkaBatchTopKTrainingSAE`` with the same start, batches and loss); text -> trained SAEs for layers 0-3
in one pass against SAELens's pipeline run once per layer (``bench/pipeline.py``); the share of the measured
fp32 matmul throughput; peak memory of extraction and of the streaming activation store at two corpus sizes;
slider-callback latency; the time of the statistics. Where a goal is not met, the report says where the time
goes (a profile). Absolute figures move between runs on a shared machine: compare the ratios.
"""

from __future__ import annotations

import argparse
import copy
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
from monosem.corpus import background_texts, wordnet_dir
from monosem.dataset import CATEGORIES, load_concepts
from monosem.model import get_blocks, load_model, resolve_model
from monosem.scorecard import unit_table
from monosem.testing import ROOT, random_gpt2_medium
from monosem.viz.widgets import SelectivityExplorer

sys.path.insert(0, str(Path(__file__).resolve().parent))  # bench/ itself, when imported from elsewhere
from pipeline import bench_pipeline  # noqa: E402
from report import OURS, write_report  # noqa: E402
from sae_training import bench_sparse, bench_standard, profile_step  # noqa: E402

LAYERS = [0, 1, 2, 3]
SECTIONS = ("extraction", "training", "pipeline", "memory", "widgets", "statistics")
SPARSE_SIZE = (576, 9216, 4096)  # d_in (the default model's d_model), d_sae (16 x d_model), batch


def previous_results(path: Path) -> dict:
    """The raw figures of the report at ``path`` (its JSON block), to keep the sections that are not measured again."""
    import json
    import re

    found = re.search(r"```json\n(.*?)\n```", path.read_text(encoding="utf-8"), re.S) if path.is_file() else None
    if not found:
        raise SystemExit(f"--only needs the raw figures of a previous full run in {path}; run python bench/run.py first")
    return json.loads(found.group(1))


def latest_make_runs() -> dict:
    """The newest `make run` record of the default model and of the GPT-2 Medium size (bench/make_run_times.json)."""
    import json

    records = json.loads((ROOT / "bench" / "make_run_times.json").read_text(encoding="utf-8"))
    newest = {}
    for key, prefix in (("default", "SmolLM2"), ("gpt2_medium", "GPT-2 Medium size")):
        rows = [r for r in records if r["model"].startswith(prefix) and r.get("how", "").startswith("bench/make_run_times.py")]
        if rows:
            newest[key] = rows[-1]
    return newest
BATCH, SEQ = 16, 64


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
    return random_gpt2_medium(seed=0)


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


def profile_extraction(model, tok, top: int = 10) -> list[dict]:
    """Where this project's extraction of BATCH x SEQ tokens spends its time (torch profiler, self CPU time per op)."""
    from torch.profiler import ProfilerActivity, profile

    texts = texts_of_length(tok, BATCH, SEQ)
    with tempfile.TemporaryDirectory() as tmp:
        extract_corpus_activations(model, tok, texts, LAYERS, batch_size=BATCH, progress=False, token_dir=Path(tmp))
        with profile(activities=[ProfilerActivity.CPU]) as prof:
            extract_corpus_activations(model, tok, texts, LAYERS, batch_size=BATCH, progress=False, token_dir=Path(tmp))
    events = sorted(prof.key_averages(), key=lambda e: e.self_cpu_time_total, reverse=True)
    total = sum(e.self_cpu_time_total for e in events)
    return [{"op": e.key, "ms": e.self_cpu_time_total / 1000, "share": e.self_cpu_time_total / total, "calls": e.count} for e in events[:top]]


def extraction_peak_rss(n_texts: int) -> float:
    """Peak RSS (MB, the kernel's VmHWM) of a fresh process that extracts ``n_texts`` background texts with the bundled model to disk."""
    code = f"""
import resource, sys, tempfile, os
from pathlib import Path
from monosem.activations import extract_corpus_activations
from monosem.corpus import background_texts, wordnet_dir
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
    """Median and max latency (ms) of the selectivity explorer's slider callbacks on precomputed unit tables
    (random values in the columns notebook 03's tables have: reference score, final label and its statistics)."""
    import pandas as pd

    rng = np.random.default_rng(0)
    tables = {}
    for L in range(n_layers):
        t = pd.DataFrame({"feature": np.arange(n_features), "score_reference": rng.random(n_features), "top_category": rng.choice(CATEGORIES, n_features),
                          "selective": rng.random(n_features) < 0.05, "replication": rng.random(n_features), "auroc_heldout": rng.random(n_features),
                          "live": True})
        for c in CATEGORIES:
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


def bench_statistics(n_units: int, n_layers: int = 4) -> dict:
    """Seconds for notebook 03's statistics (``unit_table``: reference score, bootstrap CI, the final label over 20
    held-out word splits on both frame kinds) of ``n_units`` units on each of ``n_layers`` layers, on the shipped
    concept dataset; and the functions that take the time (cProfile, cumulative)."""
    import cProfile
    import pstats

    df = load_concepts(ROOT / "data" / "concepts.csv")
    rng = np.random.default_rng(0)
    profiler = cProfile.Profile()
    t0 = time.perf_counter()
    for _ in range(n_layers):
        acts = (rng.exponential(size=(len(df), n_units)) * (rng.random((len(df), n_units)) < 0.05)).astype(np.float32)
        profiler.enable()
        unit_table(acts, df)
        profiler.disable()
    seconds = time.perf_counter() - t0
    stats = pstats.Stats(profiler)
    rows = [(f"{func[2]} ({Path(func[0]).name}:{func[1]})", entry[3]) for func, entry in stats.stats.items()  # type: ignore[attr-defined]
            if "monosem" in func[0] and func[2] != "unit_table"]
    top = sorted(rows, key=lambda r: -r[1])[:6]
    return {"units_per_layer": n_units, "layers": n_layers, "seconds": seconds, "profile": [{"function": f, "seconds": t} for f, t in top]}


def store_peak_rss(n_texts: int) -> tuple[int, float]:
    """Peak RSS (MB, VmHWM) of a fresh process in which the streaming activation store runs the bundled model once over
    ``n_texts`` corpus texts and serves their tokens for layers 0-3 (nothing written to disk); and the tokens the model ran."""
    code = f"""
import re
from monosem.corpus import background_texts, wordnet_dir
from monosem.model import load_model, resolve_model
from monosem.store import ActivationStore
spec = resolve_model('bundled'); model, tok = load_model(spec)
texts = (background_texts(400000, source='wordnet' if wordnet_dir() else 'pydoc') * 20)[:{n_texts}]
store = ActivationStore(model, tok, texts, [0, 1, 2, 3], batch_size=32, buffer_tokens=32768, seed=0)
for batch in store.batches(1024, 10**9):  # every token of one pass over the texts goes through the buffer
    if store.epochs > 1:
        break
print(store.tokens_run, int(re.search(r"VmHWM:\\s+(\\d+)", open("/proc/self/status").read()).group(1)) / 1024)
"""
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, env={**os.environ, "TQDM_DISABLE": "1"})
    n_tok, rss = out.stdout.strip().splitlines()[-1].split()
    return int(n_tok), float(rss)


def time_commands(targets: list[str]) -> dict:
    """Wall time of `make run` on the bundled model with cold caches in data/ (its results stay there, and the time is
    also recorded in bench/make_run_times.json), and/or of `make test` (set-up done)."""
    from make_run_times import notebook_seconds, save_record, slowest_cells, time_make_run

    out = {}
    for target in targets:
        if target == "run":
            record = save_record("all-MiniLM-L6-v2 (bundled)", time_make_run("bundled", ROOT / "data"), "timed by bench/run.py --commands run")
            executed = ROOT / "build" / "executed"
            out["make run"] = {"seconds": record["seconds"], "ok": record["ok"], "peak_rss_mb": record["peak_rss_mb"],
                               "notebook_seconds": notebook_seconds(executed), "slowest_cells": slowest_cells(executed)}
        else:
            t0 = time.perf_counter()
            proc = subprocess.run(["make", target], cwd=ROOT, capture_output=True, text=True)
            out[f"make {target}"] = {"seconds": time.perf_counter() - t0, "ok": proc.returncode == 0}
        print(f"make {target}: {out[f'make {target}']['seconds']:.0f} s, ok: {out[f'make {target}']['ok']}")
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="small sizes and few repeats (a smoke test); writes no report unless --out is given")
    ap.add_argument("--out", default=None, help="where to write the report (default: bench/RESULTS.md for a full run)")
    ap.add_argument("--only", nargs="+", choices=SECTIONS, help="measure only these sections; the others keep the figures of the previous bench/RESULTS.md")
    ap.add_argument("--commands", nargs="*", choices=["run", "test"], default=None, help="also time `make run` (caches cleared first) and/or `make test` (both when none is named)")
    args = ap.parse_args()
    quick = args.quick
    repeat = 2 if quick else 3
    torch.manual_seed(0)
    results = {"machine": f"{platform.machine()}, {os.cpu_count()} CPUs, torch {torch.__version__}, {torch.get_num_threads()} threads",
               "date": time.strftime("%Y-%m-%d %H:%M"), "quick": quick}
    print(results["machine"], flush=True)
    results["matmul_gflops"] = gflops = matmul_gflops()
    print(f"fp32 matmul: {gflops:.0f} GFLOP/s", flush=True)
    only = set(args.only or SECTIONS)
    if args.only:  # the other sections' figures are the previous report's (each section's ratios are measured in one run)
        previous = previous_results(ROOT / "bench" / "RESULTS.md")
        previous.pop("commands", None)  # the make run goals now come from bench/make_run_times.json
        keep = {"matmul_gflops_extraction": previous.get("matmul_gflops_extraction", previous["matmul_gflops"])} if "extraction" not in only else {}
        results = {**previous, **results, **keep, "only": sorted(only), "measured_at": {**previous.get("measured_at", {}), **{s: results["date"] for s in only}}}

    if "extraction" in only:
        extraction = []
        gpt2, gpt2_tok = gpt2_medium_random()
        extraction.append(bench_extraction("GPT-2 Medium (random weights)", gpt2, gpt2_tok, repeat))
        results["profile_extraction"] = profile_extraction(gpt2, gpt2_tok)
        del gpt2
        spec = resolve_model("bundled")
        mini, mini_tok = load_model(spec)
        extraction.append(bench_extraction("all-MiniLM-L6-v2 (bundled)", mini, mini_tok, repeat))
        results["extraction"] = extraction
        del mini

    if "training" in only:
        print("SAE training ...", flush=True)
        steps = 2 if quick else 5
        results["sae_training"] = [bench_standard(1024, 512, 4096, steps * 4), bench_standard(1024, 8192 if not quick else 2048, 4096, steps)]
        d_in, d_sae, batch = (576, 2304, 1024) if quick else SPARSE_SIZE  # the default model's d_model, 16 x d_model
        results["sparse_training"] = [bench_sparse("topk", d_in, d_sae, 32, batch, 2 if quick else 3, repeat=1 if quick else 2),
                                      bench_sparse("matryoshka", d_in, d_sae, 32, batch, 2 if quick else 3, repeat=1 if quick else 2)]
        results["profile_topk_step"] = profile_step("topk", d_in, d_sae, 32, batch)
        results["profile_matryoshka_step"] = profile_step("matryoshka", d_in, d_sae, 32, batch)

    if "pipeline" in only:
        print("text -> trained SAEs ...", flush=True)
        corpus = "wordnet" if wordnet_dir() else "pydoc"
        texts = background_texts(30_000 if quick else 120_000, source=corpus)
        pipe = dict(steps=2, batch=1024, buffer_tokens=4096) if quick else dict(steps=8, batch=4096, buffer_tokens=16384)
        model, tok = load_model(resolve_model("smollm2"))  # the default model offline (SmolLM2-135M-Instruct)
        results["pipeline"] = {**bench_pipeline(model, tok, texts, **pipe), "corpus": corpus}
        del model

    if "memory" in only:
        small = 400 if quick else 1000
        results["memory"] = [dict(zip(("tokens", "peak_rss_mb"), extraction_peak_rss(n))) for n in (small, 8 * small)]
        try:
            results["store_memory"] = [dict(zip(("tokens", "peak_rss_mb"), store_peak_rss(n))) for n in (small, 8 * small)]
        except subprocess.CalledProcessError as exc:
            results["store_memory"] = f"failed: {exc.stderr.strip().splitlines()[-1] if exc.stderr else exc}"
    if "widgets" in only:
        results["widgets"] = bench_widgets()
    if "statistics" in only:
        results["statistics"] = [bench_statistics(8192 if not quick else 1024), bench_statistics(512)]
    if args.commands is not None:
        results["commands"] = time_commands(args.commands or ["run", "test"])
    results["make_run_times"] = latest_make_runs()
    fidelity = ROOT / "bench" / "fidelity_error.json"  # written by bench/fidelity_error.py
    if fidelity.is_file():
        import json

        results["fidelity_error"] = json.loads(fidelity.read_text(encoding="utf-8"))
    out = args.out or (None if quick else str(ROOT / "bench" / "RESULTS.md"))
    write_report(results, Path(out) if out else None)


if __name__ == "__main__":
    main()
