"""How many held-out texts the downstream fidelity check needs: its error against a long reference, on the default run.

    python bench/fidelity_error.py [--reference 64] [--sizes 2 4 8 16]

For the analysed preset's SAE at every layer of the run (`make run` first), the CE loss recovered (or, for an encoder, the
output cosine) on the first n held-out texts, for each n of ``--sizes``, against the same on ``--reference`` texts; prints
a table and writes it to bench/fidelity_error.json (the absolute error per layer and n, and the seconds per text).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--reference", type=int, default=64, help="held-out texts of the reference value (default 64)")
    ap.add_argument("--sizes", type=int, nargs="+", default=[2, 4, 8, 16], help="the numbers of texts whose error is measured")
    args = ap.parse_args()

    import helpers as h
    from monosem.fidelity import default_fidelity_texts, splice_fidelity_many
    from monosem.model import model_config
    from monosem.sae.saelens import load_sae
    from monosem.sae.train import TokenSource

    cfg = h.RunConfig.from_env()
    run = h.open_run(cfg)
    model, tokenizer = h.load_model(run.spec, h.pick_device(cfg.device))
    preset = cfg.analysed()
    texts = run.corpus.heldout_texts()
    if len(texts) < args.reference:
        raise SystemExit(f"the run has {len(texts)} held-out texts, fewer than --reference {args.reference}")
    rows = []
    for L in run.layers:
        sae = load_sae(run.paths.sae(L, preset))[0]
        mean_act = TokenSource.from_caches(run.caches, L).mean_and_norm()[0]
        values = {}
        for n in sorted({*args.sizes, args.reference}):
            t0 = time.perf_counter()
            values[n] = splice_fidelity_many(model, tokenizer, texts[:n], L, {preset: sae}, mean_act)[preset]["fidelity"]
            if n == args.reference:
                per_text = (time.perf_counter() - t0) / n
        for n in args.sizes:
            rows.append({"layer": L, "texts": n, "fidelity": values[n], "reference": values[args.reference], "abs_error": abs(values[n] - values[args.reference])})
        print(f"layer {L}: " + ", ".join(f"{n} texts {values[n]:.4f}" for n in sorted(values)), flush=True)
    n_blocks = int(model_config(run.spec).num_hidden_layers)
    out = {"model": run.spec.used, "preset": preset, "reference_texts": args.reference, "default_texts": default_fidelity_texts(n_blocks),
           "seconds_per_text_all_saes_of_a_layer": round(per_text, 3), "rows": rows,
           "max_abs_error": {str(n): max(r["abs_error"] for r in rows if r["texts"] == n) for n in args.sizes}}
    (ROOT / "bench" / "fidelity_error.json").write_text(json.dumps(out, indent=1) + "\n", encoding="utf-8")
    print(json.dumps(out["max_abs_error"]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
