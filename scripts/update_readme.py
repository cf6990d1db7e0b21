"""Rewrite the generated blocks of README.md: the settings table (from ``monosem.config.RunConfig``), the training defaults
(``monosem.sae.train.TRAINING_DEFAULTS``) and, given a
run's summary.json, the findings block (from ``monosem.report.readme_findings``); the speed goals are copied from
``bench/RESULTS.md`` (written by ``bench/run.py``) and the run times from ``bench/make_run_times.json`` (written by
``bench/make_run_times.py``), so that no benchmark figure is typed in by hand.

    python scripts/update_readme.py                                   # rewrite the settings table
    python scripts/update_readme.py --findings data/results/<model>/summary.json   # and the findings of that run
    python scripts/update_readme.py --check                           # exit 1 if the settings table is out of date
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from pathlib import Path

from monosem.config import RunConfig, settings_table_markdown
from monosem.report import readme_findings, sweep_markdown
from monosem.results import Summary, read_sweep
from monosem.sae.train import training_defaults_markdown, training_plan

README = Path(__file__).resolve().parents[1] / "README.md"
BENCH_RESULTS = README.parent / "bench" / "RESULTS.md"


def bench_goals_markdown(path: Path = BENCH_RESULTS) -> str:
    """The machine line and the "## Goals" table of ``bench/RESULTS.md``, as they stand."""
    lines = path.read_text(encoding="utf-8").splitlines()
    machine = next(line for line in lines if line.startswith("`python bench/run.py"))
    start = lines.index("## Goals") + 2
    end = next((i for i in range(start, len(lines)) if not lines[i].startswith("|")), len(lines))
    return "\n".join([f"From `bench/RESULTS.md` ({machine.split(' on ', 1)[1].split('. ')[0]}):", "", *lines[start:end]])


RUN_TIMES = README.parent / "bench" / "make_run_times.json"


def run_times_markdown(path: Path = RUN_TIMES) -> str:
    """The newest record per model of ``bench/make_run_times.json`` (written by ``bench/make_run_times.py``; older ones stay
    there as history) as a table."""
    records = json.loads(path.read_text(encoding="utf-8")) if path.exists() else []
    newest = {r["model"]: r for r in records}  # later records replace earlier ones of the same model
    rows = ["| model | machine | date | `make run` wall time | peak RSS | passed | load average before / after | note |",
            "| --- | --- | --- | --- | --- | --- | --- | --- |"]
    for r in newest.values():
        load = (f"{r['load_before']} / {r['load_after']}" if "load_before" in r else "not recorded") + (
            f"; the run got {r['cpu_percent']}% CPU of {100 * int(m.group(1))}%" if "cpu_percent" in r and (m := re.search(r"(\d+) CPUs", r["machine"])) else "")
        per_notebook = "; ".join(f"{name.split('_')[0]} {sec / 60:.1f} min" for name, sec in r.get("notebook_seconds", {}).items())
        rows.append(f"| {r['model']} | {r['machine']} | {r['date']} | {r['seconds'] / 60:.1f} min" + (f" ({per_notebook})" if per_notebook else "")
                    + f" | {r['peak_rss_mb'] / 1024:.1f} GiB | {'yes' if r['ok'] else '**no**'} | {load} | {r.get('note', '')} |")
    return "\n".join(rows) if newest else "No run timed yet: `python bench/make_run_times.py --run bundled`."


DOCS = README.parent / "docs"


def sweep_block() -> str:
    """The budget sweep's sentences and tables from the committed ``docs/sweep.csv`` and ``docs/sweep.json``, against make
    run's budget on the CPU for the default model (``monosem.sae.train.TRAINING_DEFAULTS``)."""
    found = read_sweep(DOCS)
    table, meta = found if found else (None, None)
    d_model = int(round(table["d_sae"].iloc[0] / table["width"].iloc[0])) if table is not None and len(table) else 576
    plan = training_plan(None, None, 0, d_model, "cpu")
    return sweep_markdown(table, meta, RunConfig().sae_expansion, plan.tokens_per_sae)


BLOCKS = {"settings": settings_table_markdown, "sweep": sweep_block, "training-defaults": training_defaults_markdown, "speed-goals": bench_goals_markdown,
          "run-times": run_times_markdown}


def render(text: str, blocks: dict | None = None) -> str:
    """``text`` with every ``<!-- NAME:start -->...<!-- NAME:end -->`` block of ``blocks`` regenerated."""
    for name, make in (blocks or BLOCKS).items():
        pattern = re.compile(rf"(<!-- {name}:start -->\n)(?:.*?\n)?(<!-- {name}:end -->)", re.S)
        if not pattern.search(text):
            raise SystemExit(f"README.md has no <!-- {name}:start --> ... <!-- {name}:end --> block")
        block = make()
        text = pattern.sub(lambda m, block=block: m.group(1) + block + "\n" + m.group(2), text)
    return text


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="only check that README.md is up to date")
    parser.add_argument("--findings", type=Path, help="a run's summary.json: regenerate the findings block from it")
    args = parser.parse_args()
    old = README.read_text(encoding="utf-8")
    blocks = dict(BLOCKS)
    if args.findings:
        summary = Summary(**json.loads(args.findings.read_text(encoding="utf-8")))
        blocks["findings"] = lambda: readme_findings(summary)
    new = render(old, blocks)
    if args.check:
        if new != old:
            print("README.md is out of date: run `python scripts/update_readme.py`", file=sys.stderr)
            return 1
        return 0
    README.write_text(new, encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
