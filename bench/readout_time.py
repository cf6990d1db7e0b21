"""Time of the concept readout (monosem.readout) as the causal section of the notebooks runs it: one clean forward, then per layer
ablate and steer 4 SAE features, 4 MLP neurons and 4 random directions (24 edits).

    python bench/readout_time.py                       # SmolLM2-135M-Instruct, layers 0-3, 16 WordNet texts of 24 tokens
    python bench/readout_time.py --texts 16 --max-length 64 --pack-rows 32

The SAE is a random-weight TopK SAE (d_sae 2304, k 32); its features are the 4 that fire on the most positions, so every
ablation runs on every text (the slowest case: a concept feature that fires on a few texts shares forwards). Prints the
seconds of the clean run, of each layer and in total, and the number of edited forwards and rows.
"""

from __future__ import annotations

import argparse
import itertools
import time
from pathlib import Path
from typing import Any

import torch

from monosem.config import RunConfig
from monosem.corpus import chunk_texts, corpus_paragraphs, resolve_corpus
from monosem.dataset import CATEGORIES, load_concepts
from monosem.model import get_blocks, load_model, resolve_model
from monosem.readout import READOUT_BATCH, READOUT_MAX_LENGTH, clean_readout, concept_edit_effects, concept_token_ids
from monosem.sae.topk import TopKSAE
from monosem.testing import ROOT


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="smollm2", help="as MODEL of make run (default: smollm2)")
    ap.add_argument("--models-dir", type=Path, default=None, help="where SmolLM2's converted folder is (default: <data>/models)")
    ap.add_argument("--layers", default="0,1,2,3")
    ap.add_argument("--texts", type=int, default=16)
    ap.add_argument("--max-length", type=int, default=READOUT_MAX_LENGTH)
    ap.add_argument("--pack-rows", type=int, default=READOUT_BATCH, help="rows per edited forward (a multiple of --texts batches several edits)")
    ap.add_argument("--units", type=int, default=4, help="SAE features, MLP neurons and random directions per layer (each)")
    ap.add_argument("--repeat", type=int, default=1, help="runs of each layer; the fastest counts (on a shared machine, 2 or 3)")
    args = ap.parse_args()
    torch.manual_seed(0)
    spec = resolve_model(args.model, True, args.models_dir or RunConfig.from_env().data_path / "models")
    model, tok = load_model(spec)
    layers = [int(x) for x in args.layers.split(",")]
    texts = list(itertools.islice(chunk_texts(corpus_paragraphs(resolve_corpus("wordnet", offline=True))), 0, 50 * args.texts, 50))
    concepts = load_concepts(ROOT / "data" / "concepts.csv")
    ids = concept_token_ids(tok, concepts.groupby("concept", sort=False)["word"].unique().to_dict())
    config: Any = model.config
    d_model = int(config.hidden_size)
    sae = TopKSAE(d_model, 4 * d_model, seed=0, k=32).eval()
    calls = {"forwards": 0, "rows": 0}

    def count(module, args, kwargs):
        calls["forwards"] += 1
        calls["rows"] += int(kwargs["input_ids"].shape[0])

    handle = model.register_forward_pre_hook(count, with_kwargs=True)
    n_threads = torch.get_num_threads()
    print(f"{spec.used}: {len(get_blocks(model))} blocks, {n_threads} threads; {len(texts)} texts cut at {args.max_length} tokens; "
          f"layers {layers}; {args.units} units of each kind; {args.pack_rows} rows per edited forward")
    start, cpu_start = time.perf_counter(), time.process_time()
    clean = clean_readout(model, tok, texts, layers, ids, args.max_length, READOUT_BATCH)
    t_clean = time.perf_counter() - start
    n_kept = sum(int(b.keep.sum()) for b in clean.batches)
    print(f"clean run: {t_clean:.1f} s ({n_kept} kept positions, {calls['forwards']} forward)")
    batch = clean.batches[0]
    bare, cpu_bare = [], time.process_time()
    for _ in range(3):  # what one plain forward of a batch costs now (the machine may be shared): the unit the edits are counted in
        t0 = time.perf_counter()
        with torch.inference_mode():
            model(input_ids=batch.ids, attention_mask=batch.attn, use_cache=False)
        bare.append(time.perf_counter() - t0)
    cpu_bare = time.process_time() - cpu_bare
    print(f"one plain forward of {tuple(batch.ids.shape)} tokens: {min(bare):.2f} s (best of 3)")
    calls.update(forwards=0, rows=0)
    per_layer = []
    for layer in layers:
        resid = torch.cat([b.resid[layer] for b in clean.batches])
        fires = (sae.encode(resid) > 0).sum(0)
        features = fires.topk(args.units).indices.tolist()
        neurons = torch.randperm(int(clean.batches[0].neurons[layer].shape[1]), generator=torch.Generator().manual_seed(layer))[: args.units].tolist()
        claimed = [CATEGORIES[i % len(CATEGORIES)] for i in range(args.units)]
        runs = []
        for _ in range(args.repeat):
            before, t0 = dict(calls), time.perf_counter()
            table = concept_edit_effects(model, tok, layer, texts, sae, features, claimed, neurons, claimed, ids, n_random=args.units,
                                         batch_size=args.pack_rows, max_length=args.max_length, clean=clean)
            runs.append(time.perf_counter() - t0)
        per_layer.append(min(runs))
        print(f"layer {layer}: {min(runs):.1f} s (runs: {', '.join(f'{r:.1f}' for r in runs)}), {len(table)} edits, "
              f"{calls['forwards'] - before['forwards']} edited forwards over {calls['rows'] - before['rows']} rows; "
              f"features fire on {fires[features].tolist()} of {len(resid)} positions")
    handle.remove()
    total = t_clean + sum(per_layer)
    cpu = (time.process_time() - cpu_start - cpu_bare) / args.repeat  # process CPU seconds of one readout (all threads)
    print(f"total: {total:.1f} s (clean {t_clean:.1f} s + layers {' + '.join(f'{s:.1f}' for s in per_layer)}) = {total / min(bare):.0f} plain forwards; "
          f"{cpu:.1f} CPU-seconds per run; load average {open('/proc/loadavg').read().split()[0]} (other processes slow it down)")


if __name__ == "__main__":
    main()
