"""GPU smoke test: times `make run` and a short budget sweep with the GPU defaults, and records both.

    python bench/gpu_smoke.py                 # on a machine with CUDA: make run (cold caches in data/), then a short sweep
    python bench/gpu_smoke.py --sweep-only    # the sweep alone (needs a finished make run)

With CUDA, `make run` picks the GPU training defaults (README "Training": 10M tokens per SAE, batch 4096) and the sweep
its GPU grid (monosem.sweep: widths 2-32 x d_model, 0.25M-64M tokens, batch 4096, every layer); this smoke test keeps
the sweep short (widths 4 and 16, 1M and 4M tokens, every layer) so that it fits a lent machine's minutes. The
make run row goes to bench/make_run_times.json (`make readme` shows it) and the sweep's figures to bench/gpu_smoke.json.
Without CUDA it stops with a message (it times nothing on a CPU).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SWEEP = ["--widths", "4", "16", "--tokens", "1000000", "4000000"]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sweep-only", action="store_true", help="time the short sweep only (make run has run)")
    args = ap.parse_args()
    import torch

    if not torch.cuda.is_available():
        print("bench/gpu_smoke.py: no CUDA device here; it times the GPU defaults only on a GPU machine", file=sys.stderr)
        return 2
    device = torch.cuda.get_device_name(0)
    out: dict = {"device": device, "date": time.strftime("%Y-%m-%d %H:%M"), "torch": torch.__version__}
    if not args.sweep_only:
        t0 = time.perf_counter()
        proc = subprocess.run([sys.executable, str(ROOT / "bench" / "make_run_times.py"), "--run", "default", "--in-data",
                               "--note", f"GPU smoke test on {device} (GPU defaults)"], cwd=ROOT)
        out["make_run"] = {"seconds": round(time.perf_counter() - t0, 1), "ok": proc.returncode == 0}
        if proc.returncode:
            print(json.dumps(out, indent=1))
            return 1
    with tempfile.TemporaryDirectory(prefix="gpu-sweep-") as tmp:
        t0 = time.perf_counter()
        proc = subprocess.run([sys.executable, str(ROOT / "bench" / "sweep.py"), *SWEEP, "--out", tmp], cwd=ROOT)
        out["sweep"] = {"args": SWEEP, "seconds": round(time.perf_counter() - t0, 1), "ok": proc.returncode == 0}
        record = Path(tmp) / "sweep.json"
        if record.is_file():
            out["sweep"]["record"] = json.loads(record.read_text(encoding="utf-8"))
        table = Path(tmp) / "sweep.csv"
        if table.is_file():
            out["sweep"]["csv"] = table.read_text(encoding="utf-8")
    (ROOT / "bench" / "gpu_smoke.json").write_text(json.dumps(out, indent=1) + "\n", encoding="utf-8")
    print(json.dumps({k: v for k, v in out.items() if k != "sweep"} | {"sweep seconds": out["sweep"]["seconds"]}, indent=1))
    return 0 if out["sweep"]["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
