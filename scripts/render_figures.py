"""Draw the saved figures (data/results/<model>/figures/*.plotly.json, written by the notebooks with
MONOSEM_SAVE_FIGURES=1) as PNG and SVG for papers; `make run` calls it after the notebooks.

    python scripts/render_figures.py                 # every data/results/*/figures folder (MONOSEM_DATA_DIR: its results/*/figures)
    python scripts/render_figures.py FOLDER [...]    # these folders
    python scripts/render_figures.py --readme        # docs/scorecard.png and docs/explorer.png for the README, from
                                                     # the newest data/results/<model>/summary.json and its tables

Only images that are missing or older than their figure are drawn, in one kaleido session (Chromium, no network).
Without Chrome or Chromium it says how to install one and exits with status 0: the HTML figures are there already.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

from monosem.config import MonosemError
from monosem.paths import ModelPaths
from monosem.results import read_selectivity_tables, render_figure_images, write_images

ROOT = Path(__file__).resolve().parents[1]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("folders", nargs="*", type=Path, help="figure folders (default: data/results/*/figures)")
    ap.add_argument("--readme", action="store_true", help="draw the README's pictures (docs/) from the newest run instead")
    args = ap.parse_args()
    if args.readme:
        return readme_images()
    folders = args.folders or sorted((data_folder() / "results").glob("*/figures"))
    for folder in folders:
        if not folder.is_dir():
            print(f"render_figures: {folder} is not a folder; run the notebooks with MONOSEM_SAVE_FIGURES=1 (make run does)", file=sys.stderr)
            return 1
        t0 = time.perf_counter()
        try:
            written = render_figure_images(folder)
        except MonosemError as exc:
            print(f"render_figures: no PNG/SVG: {exc}", file=sys.stderr)
            return 0
        print(f"{folder}: {len(written)} images in {time.perf_counter() - t0:.0f} s" if written else f"{folder}: images up to date")
    return 0


def data_folder() -> Path:
    """data/, or MONOSEM_DATA_DIR."""
    from monosem.config import RunConfig

    return RunConfig.from_env(root=ROOT).data_path


def readme_images() -> int:
    """docs/headline.png and docs/headline2.png (the paired SAE-vs-neurons answer on each word list), docs/scorecard.png (the
    bases compared) and docs/explorer.png (the selectivity explorer's histogram at its first layer and the run's threshold)
    from the newest summary.json and the analysed preset's tables."""
    import pandas as pd
    import plotly.graph_objects as go

    from monosem.viz.figures import fig_headline, fig_scorecard
    from monosem.viz.widgets import SelectivityExplorer

    summaries = sorted((data_folder() / "results").glob("*/summary.json"), key=lambda p: p.stat().st_mtime)
    if not summaries:
        print("render_figures --readme: no data/results/<model>/summary.json; run make run first", file=sys.stderr)
        return 1
    summary = json.loads(summaries[-1].read_text(encoding="utf-8"))
    mp = ModelPaths(summaries[-1].parents[2], summaries[-1].parent.name)
    preset, layers, name = summary["sae_preset"], [int(L) for L in summary["layers"]], summary["model_used"]
    scorecard = pd.DataFrame([{"basis": basis, "layer": int(L), **row} for basis, per_layer in summary["scorecard"].items() for L, row in per_layer.items()])
    explorer = SelectivityExplorer(read_selectivity_tables(mp, preset, layers), f"{name} ({preset} SAE)", summary["threshold"])
    docs = ROOT / "docs"
    docs.mkdir(exist_ok=True)
    figures = [(fig_scorecard(scorecard, name).to_dict(), docs / "scorecard.png"), (go.Figure(explorer.figure).to_dict(), docs / "explorer.png")]
    for i, (word_list, rows) in enumerate(summary.get("headline", {}).items()):  # the paired answer, per word list
        figures.append((fig_headline(pd.DataFrame(rows), f"{name} ({preset} SAE), {word_list}").to_dict(), docs / f"headline{'' if i == 0 else i + 1}.png"))
    written = write_images(figures, scale=1.5)
    print(f"README pictures from {summaries[-1]}: " + ", ".join(str(p.relative_to(ROOT)) for p in written))
    return 0


if __name__ == "__main__":
    sys.exit(main())
