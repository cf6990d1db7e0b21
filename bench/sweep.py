"""The budget sweep (`make sweep`): the analysed preset at several widths x training-token budgets, one pass of the model
feeding every SAE, each point scored against the MLP neurons as notebook 03's headline (``monosem.sweep`` says how).

    python bench/sweep.py                                  # the device's defaults (CPU: widths 2-16 x d_model, 0.25M-8M tokens, the last layer)
    python bench/sweep.py --widths 2 4 --tokens 250000 1000000 --layers 3 --out /tmp/sweep

Needs notebook 01's run of the same settings (`make run`, or notebook 01 alone). Writes `sweep.csv` (one row per layer,
width and budget), `sweep.json` (the command, the commit, the machine, the plan, the times) and `sweep.png`/`sweep.html`
(the figure) under `--out` (default `docs/`); `make readme` (and `make sweep` after the sweep) turns the CSV into the README's sentences.
"""

from __future__ import annotations

import argparse
import platform
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))
from make_run_times import commit  # noqa: E402  (the checked-out commit, '+changes' when the tree differs)


def sweep_title(meta: dict) -> str:
    return f"{meta['model']}: {meta['plan']['preset']} SAE by width and training tokens (commit {meta['commit']})"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--widths", type=float, nargs="+", help="d_sae / d_model (default: 2 4 8 16 on the CPU, up to 32 on a GPU)")
    ap.add_argument("--tokens", type=int, nargs="+", help="training-token budgets (default: 0.25M to 8M on the CPU, to 64M on a GPU)")
    ap.add_argument("--layers", type=int, nargs="+", help="layers (default: the run's last layer on the CPU, all its layers on a GPU)")
    ap.add_argument("--corpus-tokens", type=int, help="run the model over only this many corpus tokens (a smoke test; default: the whole corpus)")
    ap.add_argument("--figure-only", action="store_true", help="redraw the figure from the sweep.csv and sweep.json in --out (no training)")
    ap.add_argument("--out", type=Path, default=ROOT / "docs", help="folder for sweep.csv, sweep.json and the figure (default: docs/)")
    args = ap.parse_args()

    import pandas as pd
    import torch

    import helpers as h
    from monosem.fidelity import splice_fidelity_many
    from monosem.massive import massive_rows
    from monosem.results import write_sweep
    from monosem.sae.train import TokenSource, loss_change_last10pct, sae_metrics, training_plan
    from monosem.store import ActivationStore
    from monosem.sweep import SweepScorer, one_pass, sweep_plan, train_sweep
    from monosem.viz.figures import fig_sweep

    if args.figure_only:
        from monosem.results import read_sweep

        found = read_sweep(args.out)
        if found is None:
            raise SystemExit(f"no sweep.csv and sweep.json in {args.out}: run make sweep first")
        table, meta = found
        paths = write_sweep(args.out, table, meta, fig_sweep(table, sweep_title(meta)))
        print("wrote " + ", ".join(str(p) for p in paths))
        return 0
    started = time.perf_counter()
    code = commit()  # the code that runs: taken now, as commits made during a long sweep do not change it
    cfg = h.RunConfig.from_env()
    run = h.open_run(cfg)
    device = h.pick_device(cfg.device)
    model, tokenizer = h.load_model(run.spec, device)
    d_model = int(model.config.hidden_size)
    make_run = training_plan(cfg.sae_train_tokens, cfg.sae_batch, cfg.sae_buffer_tokens, d_model, device, cfg.sae_workers)
    plan = sweep_plan(device, run.layers, make_run.batch_size, cfg.analysed(), cfg.sae_k, args.widths, args.tokens, args.layers)
    print(f"sweep ({plan.why}): {plan.preset}, widths {list(plan.widths)} x d_model {d_model}, budgets {[f'{t:,}' for t in plan.tokens]} tokens, "
          f"batch {plan.batch_size}, layers {list(plan.layers)}, warm-up {plan.warmup_steps} steps, decay over the last {plan.decay:.0%}", flush=True)

    t0 = time.perf_counter()
    store = ActivationStore(model, tokenizer, run.corpus.train_texts(), run.layers, cfg.batch_size, cfg.sae_buffer_tokens, cfg.seed, device,
                            massive=run.massive_norms())

    data = one_pass(store, plan.layers, max_tokens=args.corpus_tokens)
    model_seconds = time.perf_counter() - t0
    n_tokens = len(next(iter(data.values())))
    print(f"one pass of the model: {n_tokens:,} tokens per layer in {model_seconds:.0f} s ({store.tokens_massive:,} massive left out)", flush=True)

    init_massive = massive_rows(run.caches, run.massive_norms())
    init = {L: TokenSource.from_caches(run.caches, L, init_massive) for L in plan.layers}
    t0 = time.perf_counter()
    runs = train_sweep(plan, data, init, cfg.seed, device, workers=make_run.workers)
    train_seconds = time.perf_counter() - t0
    del data
    print(f"trained {len(runs) * len(plan.tokens)} SAEs in {train_seconds:.0f} s", flush=True)

    scorer = SweepScorer(run.df, run.concepts, h.natural_tokens(model, tokenizer, run.corpus.heldout_texts()[: cfg.n_natural_texts], list(plan.layers),
                                                                h.lexicon_labeller(h.load_lexicon()), run.massive_norms()),
                         h.MLPBasis(h.mlp_signed(run.spec)), h.Specificity(alpha=cfg.alpha, seed=cfg.seed), h.Criterion.from_config(cfg), cfg.pooling,
                         cfg.threshold, 200, cfg.n_bootstrap_paired, cfg.seed)
    heldout_massive = massive_rows([run.heldout], run.massive_norms())
    rows = []
    t0 = time.perf_counter()
    for L in plan.layers:
        saes = {(w, t): runs[L, w].finished[t] for w in plan.widths for t in plan.tokens}
        mean_act = TokenSource.from_caches(run.caches, L).mean_and_norm()[0]
        fidelity = splice_fidelity_many(model, tokenizer, run.fidelity_texts(), L, {f"{w}x {t}": s[0] for (w, t), s in saes.items()}, mean_act)
        heldout = TokenSource.from_caches([run.heldout], L)
        for (w, t), (sae, history, _) in saes.items():
            m = sae_metrics(sae, heldout, exclude=heldout_massive)
            scores = scorer.score(sae, L, f"SAE ({plan.preset}, {w:g}x, {t:,} tokens)")
            fid = fidelity[f"{w}x {t}"]
            rows.append({"layer": L, "width": w, "d_sae": sae.d_sae, "train_tokens": plan.steps(t) * plan.batch_size, "steps": plan.steps(t),
                         "epochs": plan.steps(t) * plan.batch_size / n_tokens, "fve_heldout": m["fve"], "l0": m["l0"], "dead_fraction": m["dead_fraction"],
                         "fidelity": fid["fidelity"], "fidelity_kind": fid["kind"], "loss_change_last10pct": loss_change_last10pct(history), **scores})
            print(f"layer {L}, {w:g}x, {t:>10,} tokens: FVE {m['fve']:.3f}, L0 {m['l0']:.1f}, dead {m['dead_fraction']:.1%}, "
                  f"fidelity {fid['fidelity']:.3f}; specific {scores['fraction_specific_sae']:.3f} vs {scores['fraction_specific_neurons']:.3f}", flush=True)
    score_seconds = time.perf_counter() - t0
    table = pd.DataFrame(rows)
    meta = {"command": "python bench/sweep.py " + " ".join(sys.argv[1:]) if sys.argv[1:] else "make sweep", "commit": code, "date": time.strftime("%Y-%m-%d %H:%M"),
            "machine": f"{platform.machine()}, {torch.get_num_threads()} threads, {device}, torch {torch.__version__}", "model": run.spec.used, "d_model": d_model,
            "corpus": run.corpus_title, "corpus_tokens_per_layer": n_tokens, "plan": {k: v for k, v in vars(plan).items()}, "warmup_steps": plan.warmup_steps,
            "seconds": {"model_pass": round(model_seconds, 1), "training": round(train_seconds, 1), "scoring": round(score_seconds, 1),
                        "total": round(time.perf_counter() - started, 1)},
            "training_seconds_per_width": {f"layer {L}, {w:g}x": round(r.total_seconds, 1) for (L, w), r in runs.items()}}
    fig = fig_sweep(table, sweep_title(meta))
    paths = write_sweep(args.out, table, meta, fig)
    print("wrote " + ", ".join(str(p) for p in paths))
    return 0


if __name__ == "__main__":
    sys.exit(main())
