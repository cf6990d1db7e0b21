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
SMALL = {"MONOSEM_MODEL": "bundled", "MONOSEM_SAE_STEPS": "150", "MONOSEM_SAE_EXPANSION": "2", "MONOSEM_BACKGROUND_TOKENS": "4000",
         "MONOSEM_PERMUTATIONS": "200", "MONOSEM_BOOTSTRAP": "200", "HF_HUB_OFFLINE": "1", "MONOSEM_ROOT": str(ROOT)}


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
    env = {**inherited, **SMALL, "MONOSEM_DATA_DIR": str(tmp / "data"), "JUPYTER_CONFIG_DIR": str(tmp / "config"),
           "JUPYTER_RUNTIME_DIR": str(tmp / "runtime"), "JUPYTERLAB_WORKSPACES_DIR": str(tmp / "workspaces")}
    cfg = RunConfig.from_env(env)  # what the notebooks' parameters cell will build
    paths = model_paths(cfg.data_path, resolve_model(cfg.model_asked, offline=cfg.hf_hub_offline).used)
    run_notebook("01_extract_activations", env, tmp / "executed")
    manifest = manifest_path(cfg.data_path, cfg.model_asked)
    assert manifest.is_file(), f"notebook 01 wrote no run manifest at {manifest}"
    run_notebook("02_train_sae", env, tmp / "executed")
    missing = [p for L in cfg.layers if not (p := paths.sae(L, cfg.sae_preset)).is_dir()]
    assert not missing, f"notebook 02 wrote no {cfg.sae_preset} SAE at {missing}"
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
           "--allow-root", "--LabApp.extension_manager=readonly"]
    log = open(tmp / "lab.log", "w")
    server = subprocess.Popen(cmd, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        url = f"http://127.0.0.1:{port}"
        for _ in range(120):
            try:
                urllib.request.urlopen(f"{url}/api/status?token={token}", timeout=2)
                break
            except OSError:
                if server.poll() is not None:
                    raise RuntimeError(f"JupyterLab exited: {(tmp / 'lab.log').read_text()[-2000:]}") from None
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


def explorer_state(page):
    """The explorer's count text and its figure's trace data, read from the DOM."""
    box = page.locator(".widget-vbox:has(.widget-slider)").filter(has=page.locator(".monosem-count")).first
    count = box.locator(".monosem-count").inner_text()
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
            page.locator(".jp-Notebook-ExecutionIndicator, .jp-Toolbar-kernelName").first.wait_for(timeout=60_000)
            page.locator(".lm-MenuBar-itemLabel", has_text="Run").first.click()
            page.locator(".lm-Menu-itemLabel", has_text="Run All Cells").first.click()
            try:
                page.locator(".monosem-count").first.wait_for(timeout=240_000)
            except Exception:
                page.screenshot(path=str(SHOTS / "failure.png"), full_page=True)
                raise
            page.locator(".widget-vbox:has(.widget-slider) .js-plotly-plot").first.wait_for(timeout=60_000)
            page.locator(".monosem-count").first.scroll_into_view_if_needed()
            page.wait_for_timeout(1000)
            page.screenshot(path=str(SHOTS / "01_explorer.png"))
            count0, data0 = explorer_state(page)

            assert count0.startswith(f"layer {cfg.layers[0]}, threshold {cfg.threshold:.2f}:"), count0
            move_slider(page, "threshold", "ArrowLeft", 25)  # 0.60 -> 0.35
            page.wait_for_function("c => document.querySelector('.monosem-count').innerText !== c", arg=count0, timeout=30_000)
            count1, data1 = explorer_state(page)
            page.screenshot(path=str(SHOTS / "02_threshold_moved.png"))
            assert "threshold 0.35" in count1 and count1 != count0, (count0, count1)
            n0, n1 = (int(c.split(": ")[1].split(" ")[0]) for c in (count0, count1))
            assert n1 > n0, f"a lower threshold must admit more features ({n0} -> {n1})"
            assert data1 != data0, "the figure's data did not change with the threshold"

            move_slider(page, "layer", "ArrowRight", 1)
            page.wait_for_function("c => document.querySelector('.monosem-count').innerText !== c", arg=count1, timeout=30_000)
            count2, data2 = explorer_state(page)
            page.screenshot(path=str(SHOTS / "03_layer_moved.png"))
            assert count2.startswith(f"layer {cfg.layers[1]},") and count2 != count1, (count1, count2)
            assert data2 != data1, "the figure's data did not change with the layer"
        finally:
            browser.close()
    # the last cell writes the per-feature tables of every trained preset (the kernel may still be finishing it)
    wanted = [lab.paths.selectivity_csv(p, L) for p in cfg.sae_presets for L in cfg.layers]
    deadline = time.monotonic() + 120
    while not all(p.is_file() for p in wanted) and time.monotonic() < deadline:
        time.sleep(1)
    missing = [str(p) for p in wanted if not p.is_file()]
    assert not missing, f"notebook 03 run in JupyterLab did not write {missing}"
    header = wanted[0].read_text().splitlines()[0].split(",")
    assert {"feature", "score", "top_concept", "q"} <= set(header), header
