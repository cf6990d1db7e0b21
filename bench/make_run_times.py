"""Wall time and peak memory of `make run`, recorded in bench/make_run_times.json (the README's times block is made
from that file by `make readme`, so no time is typed in by hand).

    python bench/make_run_times.py --run default                       # times plain `make run` (no MODEL: offline, SmolLM2-135M) with an empty data folder
    python bench/make_run_times.py --run default --in-data             # the same with cold caches in data/, whose results then stay there (make report)
    python bench/make_run_times.py --run minilm                        # times `make run MODEL=minilm`
    python bench/make_run_times.py --run /path/to/gpt2-medium-folder   # any model folder or hub name
    python bench/make_run_times.py --run gpt2-medium-random            # the GPT-2 Medium architecture, random weights, real GPT-2 BPE (no download)
    python bench/make_run_times.py --from-time-log LOG --model NAME    # records a run timed with `/usr/bin/time -v make run ...`

Each record keeps the machine, the date, the model, the seconds, the peak RSS, whether it passed, the load average
before and after (this machine is shared: a high load means the time is an upper bound) and a note.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RECORDS = ROOT / "bench" / "make_run_times.json"


def machine() -> str:
    import torch

    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "no GPU"
    return f"{platform.machine()}, {os.cpu_count()} CPUs, {gpu}, torch {torch.__version__}"


CACHES = ("activations", "corpus", "runs", "saes", "results", "models")  # what make run writes under the data folder (models: SmolLM2 converted)


RANDOM_GPT2_MEDIUM = "gpt2-medium-random"


def save_random_gpt2_medium(folder: Path) -> Path:
    """The GPT-2 Medium architecture (24 blocks, d_model 1024, 16 heads) with random weights and the real GPT-2 BPE
    tokenizer, saved with ``save_pretrained`` in ``folder`` (what `make run MODEL=<folder>` loads)."""
    sys.path.insert(0, str(ROOT))
    from monosem.testing import random_gpt2_medium

    model, tok = random_gpt2_medium(seed=0)
    model.save_pretrained(folder, safe_serialization=True)
    tok.save_pretrained(folder)
    return folder


def time_make_run(model: str, data: Path | None = None) -> dict:
    """`make run MODEL=model` with cold caches: in a temporary data folder, or in ``data`` after its caches and results
    (``CACHES``) are removed, so that the run's results stay there."""
    import shutil

    load_before = os.getloadavg()[0]
    with tempfile.TemporaryDirectory(prefix="make-run-") as tmp:
        folder = Path(data or tmp)
        for sub in CACHES:
            shutil.rmtree(folder / sub, ignore_errors=True)
        env = {**os.environ, "MONOSEM_DATA_DIR": str(folder)}
        if model == RANDOM_GPT2_MEDIUM:  # built before the clock starts (a download stands in for it elsewhere)
            model = str(save_random_gpt2_medium(Path(tmp) / "gpt2-medium-random"))
        t0 = time.perf_counter()
        timer = ["/usr/bin/time", "-f", "peak-rss-kb %M"] if Path("/usr/bin/time").exists() else []  # make run's own peak, not the caller's other children
        proc = subprocess.run([*timer, "make", "run", f"MODEL={'' if model == 'default' else model}"], cwd=ROOT, env=env, capture_output=True, text=True)
        seconds = time.perf_counter() - t0
    peak = re.findall(r"peak-rss-kb (\d+)", proc.stderr)
    peak_mb = int(peak[-1]) / 1024 if peak else resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
    if proc.returncode:
        sys.stderr.write(proc.stdout[-3000:] + proc.stderr[-3000:])
    return {"seconds": round(seconds, 1), "peak_rss_mb": round(peak_mb), "ok": proc.returncode == 0,
            "load_before": round(load_before, 2), "load_after": round(os.getloadavg()[0], 2), "how": "bench/make_run_times.py --run"}


def parse_time_log(path: Path) -> dict:
    """Seconds, peak RSS and exit status from the output of `/usr/bin/time -v`."""
    text = path.read_text(encoding="utf-8", errors="replace")
    wall = re.search(r"Elapsed \(wall clock\) time \(h:mm:ss or m:ss\): ([\d:.]+)", text)
    rss = re.search(r"Maximum resident set size \(kbytes\): (\d+)", text)
    status = re.search(r"Exit status: (\d+)", text)
    cpu = re.search(r"Percent of CPU this job got: (\d+)%", text)
    if not (wall and rss and status):
        raise SystemExit(f"{path}: not the output of /usr/bin/time -v (no wall time, peak RSS or exit status)")
    seconds = 0.0
    for part in wall.group(1).split(":"):
        seconds = seconds * 60 + float(part)
    return {"seconds": round(seconds, 1), "peak_rss_mb": round(int(rss.group(1)) / 1024), "ok": status.group(1) == "0",
            **({"cpu_percent": int(cpu.group(1))} if cpu else {}), "how": f"/usr/bin/time -v make run, log {path.name}"}


def cell_seconds(path: Path) -> list[tuple[str, float]]:
    """(first source line, seconds) of each timed code cell of the executed notebook ``path`` (nbconvert's timestamps)."""
    from datetime import datetime

    cells = []
    for cell in json.loads(path.read_text(encoding="utf-8"))["cells"]:
        t = cell.get("metadata", {}).get("execution", {})
        if cell["cell_type"] == "code" and "iopub.execute_input" in t and "shell.execute_reply" in t:
            seconds = (datetime.fromisoformat(t["shell.execute_reply"].replace("Z", "+00:00"))
                       - datetime.fromisoformat(t["iopub.execute_input"].replace("Z", "+00:00"))).total_seconds()
            source = "".join(cell["source"]).strip().splitlines()
            cells.append((source[0][:90] if source else "", seconds))
    return cells


def notebook_seconds(executed: Path) -> dict[str, float]:
    """Seconds per executed notebook in ``executed`` (the sum over its code cells)."""
    return {path.stem: round(sum(sec for _, sec in cell_seconds(path)), 1) for path in sorted(executed.glob("0*.ipynb"))}


def notebook_peak_rss(executed: Path) -> dict[str, int]:
    """The kernel's peak RSS (MB) per executed notebook in ``executed``, as ``monosem.viz.export.execute_notebook`` records it."""
    out = {}
    for path in sorted(executed.glob("0*.ipynb")):
        peak = json.loads(path.read_text(encoding="utf-8")).get("metadata", {}).get("monosem", {}).get("kernel_peak_rss_mb")
        if peak is not None:
            out[path.stem] = int(peak)
    return out


def slowest_cells(executed: Path, n: int = 6) -> list[dict]:
    """The ``n`` code cells of the executed notebooks in ``executed`` that took longest: notebook, first line, seconds."""
    cells = [{"notebook": path.stem, "cell": line, "seconds": round(sec, 1)} for path in sorted(executed.glob("0*.ipynb")) for line, sec in cell_seconds(path)]
    return sorted(cells, key=lambda c: -c["seconds"])[:n]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--run", metavar="MODEL", help="time `make run MODEL=...` now ('default': no MODEL)")
    ap.add_argument("--in-data", action="store_true", help="with --run: cold caches in data/ (its caches and results are removed first, the run's stay)")
    ap.add_argument("--from-time-log", type=Path, metavar="LOG", help="record a run timed with /usr/bin/time -v")
    ap.add_argument("--model", help="with --from-time-log: the model the run used (a description, e.g. 'GPT-2 Medium size, random weights')")
    ap.add_argument("--note", default="", help="what else a reader should know (e.g. other jobs on the machine)")
    ap.add_argument("--executed", type=Path, help="with --from-time-log: the run's build/executed/ folder, for the seconds per notebook")
    args = ap.parse_args()
    if bool(args.run) == bool(args.from_time_log):
        ap.error("give exactly one of --run and --from-time-log")
    if args.from_time_log and not args.model:
        ap.error("--from-time-log needs --model")
    record = time_make_run(args.run, ROOT / "data" if args.in_data else None) if args.run else parse_time_log(args.from_time_log)
    executed = args.executed or (ROOT / "build" / "executed" if args.run else None)
    if executed is not None:
        record["notebook_seconds"] = notebook_seconds(executed)
        record["slowest_cells"] = slowest_cells(executed)
        record["notebook_peak_rss_mb"] = notebook_peak_rss(executed)
    labels = {RANDOM_GPT2_MEDIUM: "GPT-2 Medium size (24 layers, d_model 1024, random weights, real GPT-2 BPE), CPU defaults","bundled": "all-MiniLM-L6-v2 (bundled)", "minilm": "all-MiniLM-L6-v2 (MODEL=minilm)",
              "default": "SmolLM2-135M-Instruct (the offline default; Q4_1 dequantised to float32)"}
    label = args.model or labels.get(args.run, args.run)
    where = "cold caches in data/ (GGUF conversion included)" if args.in_data else "cold caches in a temporary data folder"
    record = save_record(label, record, args.note or (f"commit {commit()}, {where}" if args.run else ""))
    print(json.dumps(record, indent=1))
    return 0 if record["ok"] else 1


def commit() -> str:
    """The checked-out commit (short), with '+changes' when the working tree differs from it."""
    sha = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True).stdout.strip() or "unknown"
    dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=ROOT, capture_output=True, text=True).stdout.strip()
    return sha + ("+changes" if dirty else "")


def save_record(model: str, record: dict, note: str = "") -> dict:
    """Append a timing to ``bench/make_run_times.json`` with the model, the machine and the date."""
    record = {"model": model, "machine": machine(), "date": time.strftime("%Y-%m-%d %H:%M"), **record, "note": note}
    records = json.loads(RECORDS.read_text(encoding="utf-8")) if RECORDS.exists() else []
    records.append(record)
    RECORDS.write_text(json.dumps(records, indent=1) + "\n", encoding="utf-8")
    return record


if __name__ == "__main__":
    sys.exit(main())
