"""Execute notebooks and write their HTML exports, with figures and widgets drawn offline; `make run` calls it for
each notebook of the series, and `make setup` calls it with --fetch.

    python scripts/export_html.py --execute notebooks/03_selectivity.ipynb   # -> build/executed/, then build/html/
    python scripts/export_html.py                          # export build/executed/0*.ipynb -> build/html/
    python scripts/export_html.py NB.ipynb [...] [--out DIR]
    python scripts/export_html.py --fetch                  # fetch the widget manager (npm, pinned versions) once

--execute runs each notebook as `jupyter nbconvert --execute` does (fresh kernel, from the notebook's folder) but keeps
the saved widget state drawable (monosem.viz.export.widget_state_executor); a failing cell stops with status 1 and
writes nothing. The exports load require.js, the widget manager and anywidget from build/html/widgets/, so the folder
opens anywhere with no network. Without the fetched widget manager (no npm) they load it from nbconvert's CDN, and this
says how to fix it; --fetch without npm says the same and exits with status 0 (the figures of the exports need nothing).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from nbclient.exceptions import CellExecutionError

from monosem.config import MonosemError
from monosem.viz.export import FETCH_FIX, default_widget_js_dir, execute_notebook, export_notebooks, fetch_widget_js, widget_js_ready

ROOT = Path(__file__).resolve().parents[1]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("notebooks", nargs="*", type=Path, help="notebooks to export (default: build/executed/0*.ipynb); with --execute, to run first")
    ap.add_argument("--execute", action="store_true", help="run the notebooks first, into --executed")
    ap.add_argument("--executed", type=Path, default=ROOT / "build" / "executed", help="folder of the executed notebooks (default: build/executed)")
    ap.add_argument("--timeout", type=int, default=14400, help="seconds a cell may run with --execute (default 14400)")
    ap.add_argument("--out", type=Path, default=ROOT / "build" / "html", help="folder of the HTML files (default: build/html)")
    ap.add_argument("--fetch", action="store_true", help="fetch the widget manager for offline exports and exit")
    args = ap.parse_args()
    if args.fetch:
        if widget_js_ready(default_widget_js_dir()):
            return 0
        try:
            print(f"widget manager for offline HTML exports: {fetch_widget_js()}")
        except MonosemError as exc:
            print(f"export_html --fetch: {exc}; until then the widgets of the HTML exports load from a CDN", file=sys.stderr)
        return 0
    if args.execute and not args.notebooks:
        print("export_html --execute: name the notebooks to run (e.g. notebooks/01_extract_activations.ipynb)", file=sys.stderr)
        return 1
    notebooks = args.notebooks or sorted(args.executed.glob("0*.ipynb"))
    if not notebooks:
        print(f"export_html: no executed notebooks in {args.executed}; run `make run`", file=sys.stderr)
        return 1
    try:
        if args.execute:
            notebooks = [execute_notebook(nb, args.executed, timeout=args.timeout) for nb in notebooks]
            print("executed " + ", ".join(str(p) for p in notebooks))
        written, offline = export_notebooks(notebooks, args.out)
    except MonosemError as exc:
        print(f"export_html: {exc}", file=sys.stderr)
        return 1
    except CellExecutionError as exc:  # a failing cell: the message shows the cell and its traceback
        print(f"export_html: {exc}", file=sys.stderr)
        return 1
    for path in written:
        print(f"wrote {path}" + ("" if offline else " (widgets load from a CDN: no network, no widgets)"))
    if not offline:
        print(f"export_html: the widget manager for offline exports is missing: {FETCH_FIX}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
