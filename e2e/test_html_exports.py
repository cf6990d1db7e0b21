"""End-to-end: the HTML exports show their figures with the network blocked, and executed notebooks are quiet.

A notebook that shows two figures through ``monosem.viz.figures`` (the renderer the notebooks use) is executed and
exported with nbconvert, then opened in Debian's chromium (Playwright) with every request that is not a local file
aborted: both figures must be drawn. The same count is checked on each ``build/html/*.html`` that ``make run`` wrote
(one plot per plotly output of the executed notebook in ``build/executed/``), and those executed notebooks must have
no stderr output. Run with ``make e2e`` (after ``make run`` for the checks of its exports).
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import nbformat
import pytest

ROOT = Path(__file__).resolve().parents[1]
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser") or "/usr/bin/chromium"
EXECUTED = sorted((ROOT / "build" / "executed").glob("0*.ipynb"))
PLOTLY = "application/vnd.plotly.v1+json"


def plotly_outputs(nb) -> int:
    return sum(PLOTLY in o.get("data", {}) for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", []))


def plots_drawn_offline(html: Path) -> tuple[int, list[str]]:
    """(the number of drawn plotly plots, the blocked requests) of ``html`` opened in chromium with the network blocked."""
    from playwright.sync_api import sync_playwright

    if not Path(CHROMIUM).exists():
        pytest.fail(f"chromium not found at {CHROMIUM}: install Debian's package (apt-get install chromium) or run `make e2e`")
    blocked: list[str] = []

    def route(r):
        if r.request.url.startswith(("file:", "data:", "blob:")):
            r.continue_()
        else:
            blocked.append(r.request.url)
            r.abort()

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox", "--disable-gpu", "--no-first-run"])
        try:
            page = browser.new_page()
            page.route("**/*", route)
            page.goto(html.resolve().as_uri(), wait_until="load", timeout=120_000)
            page.wait_for_timeout(2000)
            return page.locator(".js-plotly-plot").count(), blocked
        finally:
            browser.close()


def export_html(nb, path: Path) -> Path:
    from nbconvert import HTMLExporter

    body, _ = HTMLExporter().from_notebook_node(nb)
    path.write_text(body, encoding="utf-8")
    return path


def test_figures_of_an_exported_notebook_draw_offline(tmp_path):
    from nbconvert.preprocessors import ExecutePreprocessor

    nb = nbformat.v4.new_notebook(cells=[
        nbformat.v4.new_code_cell("import plotly.graph_objects as go\nimport monosem.viz.figures\ngo.Figure(go.Bar(y=[1, 2, 3])).show()"),
        nbformat.v4.new_code_cell("go.Figure(go.Scatter(y=[3, 1, 2])).show()"),
    ])
    ExecutePreprocessor(timeout=300, kernel_name="python3").preprocess(nb, {"metadata": {"path": str(ROOT)}})
    assert plotly_outputs(nb) == 2
    drawn, blocked = plots_drawn_offline(export_html(nb, tmp_path / "figures.html"))
    assert drawn == 2, f"{drawn} of 2 figures drawn with the network blocked; blocked requests: {blocked}"


@pytest.mark.parametrize("executed", EXECUTED, ids=[p.stem for p in EXECUTED])
def test_make_run_exports_draw_every_figure_offline(executed):
    html = ROOT / "build" / "html" / f"{executed.stem}.html"
    if not html.exists():
        pytest.skip(f"{html} not written: run `make run`")
    want = plotly_outputs(nbformat.read(executed, as_version=4))
    drawn, blocked = plots_drawn_offline(html)
    assert drawn >= want, f"{html.name}: {drawn} of {want} figures drawn with the network blocked; blocked: {json.dumps(blocked[:5])}"


@pytest.mark.parametrize("executed", EXECUTED, ids=[p.stem for p in EXECUTED])
def test_executed_notebooks_have_no_stderr_output(executed):
    nb = nbformat.read(executed, as_version=4)
    noisy = [(i, o.get("text", "")[:200]) for i, c in enumerate(nb.cells) if c.cell_type == "code"
             for o in c.get("outputs", []) if o.output_type == "stream" and o.get("name") == "stderr"]
    assert not noisy, f"{executed.name}: stderr output in cells {noisy}"


def test_readme_findings_are_what_make_report_writes_from_this_run():
    """After `make run` + `make report`, the README's findings block is exactly what the script writes from the run's
    summary.json (a stale or hand-edited block fails)."""
    import re

    from monosem.report import readme_findings
    from monosem.results import Summary

    runs = sorted((ROOT / "data" / "results").glob("*/summary.json"), key=lambda p: p.stat().st_mtime)
    if not runs:
        pytest.skip("no data/results/<model>/summary.json: run `make run`")
    block = re.search(r"<!-- findings:start -->\n(.*?)\n<!-- findings:end -->", (ROOT / "README.md").read_text(encoding="utf-8"), re.S)
    assert block, "README.md has no findings block"
    want = readme_findings(Summary(**json.loads(runs[-1].read_text(encoding="utf-8"))))
    assert block.group(1) == want, f"README.md's findings differ from {runs[-1]}: run `make report`"


def test_make_run_draws_every_saved_figure_as_png_and_svg():
    """After `make run`, every figure it saved (its plotly JSON) has an up-to-date PNG and SVG beside it."""
    from monosem.results import FIGURE_SPEC, figures_to_render

    folders = sorted((ROOT / "data" / "results").glob("*/figures"))
    specs = [p for f in folders for p in f.glob(f"*{FIGURE_SPEC}")]
    if not specs:
        pytest.skip("no saved figures in data/results/<model>/figures: run `make run`")
    for folder in folders:
        assert figures_to_render(folder) == [], f"{folder}: figures without an up-to-date PNG/SVG: run scripts/render_figures.py"
    png = specs[0].with_name(specs[0].name[: -len(FIGURE_SPEC)] + ".png")
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
