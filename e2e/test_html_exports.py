"""End-to-end: the HTML exports draw their figures and widgets with the network blocked, and executed notebooks are quiet.

A notebook with two figures through ``monosem.viz.figures`` (the renderer the notebooks use) and a selectivity explorer
whose threshold is moved after it is shown is executed and exported with ``monosem.viz.export`` (what ``make run``
does), then opened in Debian's chromium (Playwright) with every request that is not a local file aborted: no request may
be made, both figures and every widget must draw, and the explorer must show its final state. The same holds for each
``build/html/*.html`` that ``make run`` wrote (one plot per plotly output and per figure widget, every widget view drawn
and no plot empty), and those executed notebooks must have no stderr output. Run with ``make e2e`` (after ``make run``
for the checks of its exports).
"""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import nbformat
import pytest

ROOT = Path(__file__).resolve().parents[1]
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser") or "/usr/bin/chromium"
EXECUTED = sorted((ROOT / "build" / "executed").glob("0*.ipynb"))
PLOTLY = "application/vnd.plotly.v1+json"
VIEW = "application/vnd.jupyter.widget-view+json"

# What the page shows once loaded: each plot's traces, points (of its visible traces, arrays decoded) and title, the widget views drawn (the widget manager
# puts each view in a .widget-subarea just before its <script> tag) and the explorer's count line.
PAGE_STATE = """() => ({
  plots: [...document.querySelectorAll('.js-plotly-plot')].map(el => ({
    traces: (el.data || []).length,
    points: (el._fullData || []).filter(t => t.visible !== false).reduce((n, t) =>
      n + Math.max((t.x || []).length, (t.y || []).length, (t.z || []).length, (t.values || []).length), 0),
    title: ((el.layout || {}).title || {}).text || ''})),
  views: document.querySelectorAll('script[type="application/vnd.jupyter.widget-view+json"]').length,
  drawn: [...document.querySelectorAll('script[type="application/vnd.jupyter.widget-view+json"]')].filter(s =>
    s.previousElementSibling && s.previousElementSibling.classList.contains('widget-subarea') && s.previousElementSibling.childElementCount > 0).length,
  counts: [...document.querySelectorAll('.monosem-count')].map(el => el.textContent),
})"""


def open_offline(html: Path) -> dict:
    """What ``html`` shows in chromium with the network blocked (``PAGE_STATE``), with the requests that were blocked
    and the local files that failed to load."""
    from playwright.sync_api import sync_playwright

    if not Path(CHROMIUM).exists():
        pytest.fail(f"chromium not found at {CHROMIUM}: install Debian's package (apt-get install chromium) or run `make e2e`")
    blocked: list[str] = []
    failed: list[str] = []

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
            page.on("requestfailed", lambda r: failed.append(r.url) if r.url.startswith("file:") else None)
            page.goto(html.resolve().as_uri(), wait_until="load", timeout=120_000)
            page.wait_for_timeout(2000)
            views = page.locator(f'script[type="{VIEW}"]').count()
            if views:  # the widget manager draws after load: wait until every view is drawn (or time out and report)
                try:
                    page.wait_for_function(f"() => ({PAGE_STATE})().drawn >= {views}", timeout=60_000)
                except Exception:
                    pass
                page.wait_for_timeout(1000)
            return {**page.evaluate(PAGE_STATE), "blocked": blocked, "failed": failed}
        finally:
            browser.close()


def outputs_with(nb, mimetype: str) -> int:
    return sum(mimetype in o.get("data", {}) for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", []))


def figure_widgets(nb) -> int:
    """The plotly FigureWidgets in a notebook's saved widget state."""
    from monosem.viz.export import WIDGET_STATE

    state = nb.metadata.get("widgets", {}).get(WIDGET_STATE, {}).get("state", {})
    return sum(m.get("state", {}).get("_anywidget_id", "").endswith("FigureWidget") for m in state.values())


def widget_js() -> Path:
    from monosem.viz.export import FETCH_FIX, default_widget_js_dir, widget_js_ready

    if not widget_js_ready(default_widget_js_dir()):
        pytest.fail(f"the widget manager for offline exports is not in {default_widget_js_dir()}: {FETCH_FIX}")
    return default_widget_js_dir()


EXPLORER = """import numpy as np, pandas as pd
from monosem.viz.widgets import SelectivityExplorer
rng = np.random.default_rng(0)
def table(n):
    score = rng.random(n)
    return pd.DataFrame({"feature": np.arange(n), "score_reference": score, "selective": score > 0.9, "top_category": "colors",
                         "replication": 1.0, "auroc_heldout": 0.9, "live": True})
explorer = SelectivityExplorer({0: table(200), 1: table(300)}, "toy", 0.6)
explorer.widget"""


def test_figures_and_widgets_of_an_exported_notebook_draw_offline(tmp_path):
    from nbconvert.preprocessors import ExecutePreprocessor

    from monosem.viz.export import export_notebooks

    nb = nbformat.v4.new_notebook(cells=[
        nbformat.v4.new_code_cell("import plotly.graph_objects as go\nimport monosem.viz.figures\ngo.Figure(go.Bar(y=[1, 2, 3])).show()"),
        nbformat.v4.new_code_cell("go.Figure(go.Scatter(y=[3, 1, 2])).show()"),
        nbformat.v4.new_code_cell(EXPLORER),
        nbformat.v4.new_code_cell("explorer.layer.value, explorer.threshold.value = 1, 0.3\nprint(explorer.count, explorer.count_selective)"),
    ])
    ExecutePreprocessor(timeout=300, kernel_name="python3").preprocess(nb, {"metadata": {"path": str(ROOT)}})
    assert outputs_with(nb, PLOTLY) == 2 and figure_widgets(nb) == 1
    count, selective = nb.cells[3].outputs[0]["text"].split()
    nbformat.write(nb, tmp_path / "widgets.ipynb")
    (html,), offline = export_notebooks([tmp_path / "widgets.ipynb"], tmp_path / "html", widget_js())
    shown = open_offline(html)
    assert offline and shown["blocked"] == [] and shown["failed"] == [], f"requests: blocked {shown['blocked']}, failed {shown['failed']}"
    assert len(shown["plots"]) == 3, f"{len(shown['plots'])} of 3 plots (2 figures, 1 figure widget) drawn with the network blocked"
    assert shown["views"] == 1 and shown["drawn"] == 1, "the explorer widget is not drawn from its saved state"
    assert shown["counts"] == [f"layer 1, threshold 0.30: {count} features above the threshold (reference criterion); {selective} selective (final label)"]
    explorer_plot = shown["plots"][2]
    assert explorer_plot["points"] > 0 and f"{count} features above 0.30" in explorer_plot["title"], f"the explorer's figure is not its final state: {explorer_plot}"


@pytest.mark.parametrize("executed", EXECUTED, ids=[p.stem for p in EXECUTED])
def test_make_run_exports_draw_every_figure_and_widget_offline(executed):
    html = ROOT / "build" / "html" / f"{executed.stem}.html"
    if not html.exists():
        pytest.skip(f"{html} not written: run `make run`")
    nb = nbformat.read(executed, as_version=4)
    want_plots, want_views = outputs_with(nb, PLOTLY) + figure_widgets(nb), outputs_with(nb, VIEW)
    shown = open_offline(html)
    assert shown["blocked"] == [] and shown["failed"] == [], f"{html.name}: requests blocked {json.dumps(shown['blocked'][:5])}, failed {shown['failed'][:5]}"
    assert len(shown["plots"]) >= want_plots, f"{html.name}: {len(shown['plots'])} of {want_plots} plots drawn with the network blocked"
    assert shown["views"] == want_views and shown["drawn"] == want_views, f"{html.name}: {shown['drawn']} of {want_views} widgets drawn"
    empty = [p for p in shown["plots"] if p["points"] == 0]
    assert not empty, f"{html.name}: plots drawn without data: {empty}"


def test_the_explorer_of_the_export_counts_what_the_summary_counts():
    """The explorer in 03's HTML export, at the run's threshold and first layer, shows the summary's counts."""
    html = ROOT / "build" / "html" / "03_selectivity.html"
    runs = sorted((ROOT / "data" / "results").glob("*/summary.json"), key=lambda p: p.stat().st_mtime)
    if not html.exists() or not runs:
        pytest.skip("run `make run`")
    summary = json.loads(runs[-1].read_text(encoding="utf-8"))
    layer = str(min(int(L) for L in summary["per_layer"]))
    row = summary["per_layer"][layer]
    counts = open_offline(html)["counts"]
    assert len(counts) == 1, counts
    match = re.search(r"layer (\d+), threshold ([\d.]+): (\d+) features above .*?; (\d+) selective", counts[0])
    assert match, counts
    assert (match[1], float(match[2]), int(match[3]), int(match[4])) == (layer, summary["threshold"], row["n_monosemantic"], row["n_selective"])


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
