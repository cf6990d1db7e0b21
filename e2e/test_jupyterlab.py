"""End-to-end: JupyterLab in a real browser (Debian's chromium driven by Playwright).

Starts JupyterLab on 127.0.0.1 with a random port and token, opens notebooks/03_selectivity.ipynb,
runs all cells, moves the threshold slider and then the layer slider, and checks that the
monosemantic count and the plotly figure's data change, and that the notebook wrote its per-feature
tables (``<data>/results/<model>/<preset>/selectivity_layer_<L>.csv``). Screenshots go to build/e2e/.
Run with `make e2e`. Notebooks 01 and 02 run first, headless, with small settings, into a temporary
data folder: notebook 01 writes the caches and the run manifest ``<data>/runs/<model asked>.json``
that notebooks 02-04 open (``open_run``), notebook 02 the SAEs. The notebooks read their settings
from the ``MONOSEM_*`` variables (``RunConfig.from_env``); inherited ``MONOSEM_*`` variables are
dropped so that only the settings below apply.
"""

from __future__ import annotations

import dataclasses
import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path

import pytest

from monosem.config import RunConfig
from monosem.model import resolve_model
from monosem.paths import ModelPaths, manifest_path, model_paths

ROOT = Path(__file__).resolve().parents[1]
SHOTS = ROOT / "build" / "e2e"
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser") or "/usr/bin/chromium"
# small settings, by RunConfig field (each names its environment variable); OPTIONAL ones are set where this version has them
SMALL = {"model": "bundled", "sae_expansion": "2", "background_tokens": "4000", "n_permutations": "200", "n_bootstrap": "200",
         "hf_hub_offline": "1", "root": str(ROOT)}
OPTIONAL = {"sae_steps": "150", "sae_train_tokens": str(150 * 256), "random_control": "0"}  # SAE length in steps or in tokens; no negative control


def small_env() -> dict[str, str]:
    """``SMALL`` and the ``OPTIONAL`` settings RunConfig has, as environment variables."""
    env_of = {f.name: f.metadata["env"] for f in dataclasses.fields(RunConfig)}
    assert {"sae_steps", "sae_train_tokens"} & set(env_of), "RunConfig has no setting of the SAE training length"
    return {env_of[name]: value for name, value in {**SMALL, **OPTIONAL}.items() if name in SMALL or name in env_of}


# "Run All Cells" before the notebook's session has its kernel opens a "Select Kernel" dialog and runs nothing; the
# toolbar's execution indicator already reads "idle" by then, so ask the session itself (JupyterLab 4's SessionContext)
KERNEL_READY = """() => {
    const ctx = window.jupyterapp?.shell.currentWidget?.sessionContext;
    const kernel = ctx?.session?.kernel;
    return !!kernel && ctx.isReady && !ctx.hasNoKernel && kernel.connectionStatus === "connected" && kernel.status === "idle";
}"""
# every code cell has run (a cell's execution count is set when its reply arrives), or one has failed (which stops "Run All")
NOTEBOOK_DONE = """() => {
    const cells = (window.jupyterapp?.shell.currentWidget?.content?.widgets ?? []).filter(c => c.model.type === "code");
    if (!cells.length) return false;
    const failed = cells.some(c => c.model.outputs.toJSON().some(o => o.output_type === "error"));
    return failed || cells.every(c => c.model.executionCount !== null && c.model.executionState !== "running");
}"""
NOTEBOOK_ERRORS = """() => window.jupyterapp.shell.currentWidget.content.widgets.filter(c => c.model.type === "code")
    .flatMap(c => c.model.outputs.toJSON().filter(o => o.output_type === "error").map(o => `${o.ename}: ${o.evalue}`))"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class Lab:
    """A running JupyterLab, the settings its kernels see and the folders of the model they analyse."""

    url: str
    token: str
    cfg: RunConfig
    paths: ModelPaths


def run_notebook(name: str, env: dict[str, str], out: Path) -> None:
    """Execute notebooks/<name>.ipynb headless; on failure, fail with the end of nbconvert's output."""
    proc = subprocess.run([sys.executable, "-m", "jupyter", "nbconvert", "--to", "notebook", "--execute", "--output-dir", str(out),
                           str(ROOT / "notebooks" / f"{name}.ipynb")], env=env, capture_output=True, text=True)
    if proc.returncode != 0:
        pytest.fail(f"notebook {name} failed (exit {proc.returncode}):\n{(proc.stdout + proc.stderr)[-4000:]}")


@pytest.fixture(scope="module")
def lab(tmp_path_factory):
    """Caches, run manifest and SAEs from notebooks 01-02, then a JupyterLab server; yields a ``Lab``; always stops the server."""
    if not Path(CHROMIUM).exists():
        pytest.fail(f"chromium not found at {CHROMIUM}: install Debian's package (apt-get install chromium) or run `make e2e`")
    tmp = tmp_path_factory.mktemp("e2e")
    inherited = {k: v for k, v in os.environ.items() if not k.startswith("MONOSEM_")}
    env = {**inherited, **small_env(), "MONOSEM_DATA_DIR": str(tmp / "data"), "JUPYTER_CONFIG_DIR": str(tmp / "config"),
           "JUPYTER_RUNTIME_DIR": str(tmp / "runtime"), "JUPYTERLAB_WORKSPACES_DIR": str(tmp / "workspaces")}
    cfg = RunConfig.from_env(env)  # what the notebooks' parameters cell will build
    paths = model_paths(cfg.data_path, resolve_model(cfg.model_asked, offline=cfg.hf_hub_offline).used)
    run_notebook("01_extract_activations", env, tmp / "executed")
    manifest = manifest_path(cfg.data_path, cfg.model_asked)
    assert manifest.is_file(), f"notebook 01 wrote no run manifest at {manifest}"
    run_notebook("02_train_sae", env, tmp / "executed")
    missing = [str(p) for preset in cfg.sae_presets for L in cfg.layers if not (p := paths.sae(L, preset)).is_dir()]
    assert not missing, f"notebook 02 wrote no SAE at {missing}"
    # no announcements, news or update checks
    labconfig = tmp / "config" / "labconfig"
    labconfig.mkdir(parents=True)
    (labconfig / "page_config.json").write_text(json.dumps({"disabledExtensions": {"@jupyterlab/apputils-extension:announcements": True}}))
    # serve a copy of the notebooks: JupyterLab saves what it runs, and the tracked notebooks stay without outputs
    served = tmp / "lab"
    shutil.copytree(ROOT / "notebooks", served / "notebooks")
    port, token = free_port(), secrets.token_hex(16)
    cmd = [sys.executable, "-m", "jupyter", "lab", "--no-browser", "--ip=127.0.0.1", f"--port={port}", f"--IdentityProvider.token={token}",
           f"--ServerApp.root_dir={served}", "--LabApp.check_for_updates_class=jupyterlab.NeverCheckForUpdate", "--ServerApp.port_retries=0",
           "--allow-root", "--LabApp.extension_manager=readonly", "--LabApp.expose_app_in_browser=True"]  # window.jupyterapp: see KERNEL_READY
    SHOTS.mkdir(parents=True, exist_ok=True)
    log_path = SHOTS / "lab.log"  # the server's and kernels' output, kept for a failure's diagnosis
    log = open(log_path, "w")
    server = subprocess.Popen(cmd, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        url = f"http://127.0.0.1:{port}"
        for _ in range(120):
            try:
                urllib.request.urlopen(f"{url}/api/status?token={token}", timeout=2)
                break
            except OSError:
                if server.poll() is not None:
                    raise RuntimeError(f"JupyterLab exited: {log_path.read_text()[-2000:]}") from None
                time.sleep(0.5)
        else:
            raise RuntimeError("JupyterLab did not answer within 60 s")
        yield Lab(url, token, cfg, paths)
    finally:
        os.killpg(server.pid, signal.SIGTERM)
        try:
            server.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(server.pid, signal.SIGKILL)
        log.close()
        subprocess.run([sys.executable, "-m", "jupyter", "server", "stop", str(port)], env=env, capture_output=True)


def explorer_box(page):
    """The explorer's widget box: sliders, figure and listing."""
    return page.locator(".widget-vbox:has(.widget-slider)").filter(has=page.locator(".monosem-count")).first


def explorer_state(page):
    """The explorer's count text and its figure's trace data, read from the DOM."""
    box = explorer_box(page)
    count = box.locator(".monosem-count").text_content()  # not inner_text: JupyterLab skips rendering cells out of view
    data = box.locator(".js-plotly-plot").first.evaluate("el => JSON.stringify(el.data.map(t => [t.x, t.y]))")
    return count, data


def move_slider(page, label: str, key: str, times: int) -> None:
    """Focus the noUiSlider handle of the ipywidgets slider described ``label`` and press ``key``."""
    slider = page.locator(".widget-slider").filter(has=page.locator(f"label:text-is('{label}')")).first
    handle = slider.locator(".noUi-handle").first
    handle.click()
    for _ in range(times):
        handle.press(key)
    page.wait_for_timeout(300)


def test_sliders_update_count_and_figure_in_jupyterlab(lab):
    from playwright.sync_api import sync_playwright

    url, token, cfg = lab.url, lab.token, lab.cfg
    SHOTS.mkdir(parents=True, exist_ok=True)
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                                                                    "--disable-background-networking", "--disable-component-update", "--disable-sync"])
        try:
            page = browser.new_page(viewport={"width": 1400, "height": 1000})
            page.goto(f"{url}/lab/tree/notebooks/03_selectivity.ipynb?token={token}")
            page.locator(".jp-Notebook").first.wait_for(timeout=120_000)
            try:
                page.wait_for_function(KERNEL_READY, timeout=180_000)
                page.locator(".lm-MenuBar-itemLabel", has_text="Run").first.click()
                page.locator(".lm-Menu-itemLabel", has_text="Run All Cells").first.click()
                # slider changes reach the kernel only once the cells after the explorer have run: wait for all of them
                page.wait_for_function(NOTEBOOK_DONE, timeout=900_000, polling=1000)
            except Exception:
                page.screenshot(path=str(SHOTS / "failure.png"), full_page=True)
                raise
            errors = page.evaluate(NOTEBOOK_ERRORS)
            if errors:
                page.screenshot(path=str(SHOTS / "failure.png"), full_page=True)
                pytest.fail(f"notebook 03 failed in JupyterLab: {errors}")
            page.locator(".widget-vbox:has(.widget-slider) .js-plotly-plot").first.wait_for(timeout=60_000)
            page.wait_for_timeout(1000)
            explorer_box(page).screenshot(path=str(SHOTS / "01_explorer.png"))
            count0, data0 = explorer_state(page)

            assert count0.startswith(f"layer {cfg.layers[0]}, threshold {cfg.threshold:.2f}:"), count0
            move_slider(page, "threshold", "ArrowLeft", 25)  # 0.60 -> 0.35
            page.wait_for_function("c => document.querySelector('.monosem-count').textContent !== c", arg=count0, timeout=30_000)
            count1, data1 = explorer_state(page)
            explorer_box(page).screenshot(path=str(SHOTS / "02_threshold_moved.png"))
            assert "threshold 0.35" in count1 and count1 != count0, (count0, count1)
            n0, n1 = (int(c.split(": ")[1].split(" ")[0]) for c in (count0, count1))
            assert n1 > n0, f"a lower threshold must admit more features ({n0} -> {n1})"
            assert data1 != data0, "the figure's data did not change with the threshold"

            move_slider(page, "layer", "ArrowRight", 1)
            page.wait_for_function("c => document.querySelector('.monosem-count').textContent !== c", arg=count1, timeout=30_000)
            count2, data2 = explorer_state(page)
            explorer_box(page).screenshot(path=str(SHOTS / "03_layer_moved.png"))
            assert count2.startswith(f"layer {cfg.layers[1]},") and count2 != count1, (count1, count2)
            assert data2 != data1, "the figure's data did not change with the layer"
        finally:
            browser.close()
    # the notebook wrote one table per trained preset and layer, a row per feature
    wanted = [lab.paths.selectivity_csv(p, L) for p in cfg.sae_presets for L in cfg.layers]
    missing = [str(p) for p in wanted if not p.is_file()]
    assert not missing, f"notebook 03 run in JupyterLab did not write {missing}"
    lines = wanted[0].read_text().splitlines()
    header = lines[0].split(",")
    assert header[0] == "feature" and any(c.startswith("score") for c in header) and len(lines) > 2, (wanted[0], header, len(lines))
