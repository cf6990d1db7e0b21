"""HTML exports: every script from the local widgets/ folder (no CDN), the fallback without it, and fetching the widget
manager with npm (integrity checked, nothing half-written). The browser check is in e2e/test_html_exports.py."""

from __future__ import annotations

import base64
import hashlib
import io
import json
import re
import stat
import sys
import tarfile
from pathlib import Path

import nbformat
import pytest

from monosem.config import MonosemError
from monosem.viz import export
from monosem.viz.export import ASSETS_FOLDER, WIDGET_STATE, drop_stale_buffers, export_notebooks, fetch_widget_js, widget_js_ready

VIEW = "application/vnd.jupyter.widget-view+json"


def widget_notebook(path: Path) -> Path:
    """An executed notebook with one widget (saved state and a view output) and a plotly figure, as nbclient saves it."""
    model = {"model_name": "HTMLModel", "model_module": "@jupyter-widgets/controls", "model_module_version": "2.0.0",
             "state": {"value": "<b>7 selective</b>"}}
    cell = nbformat.v4.new_code_cell("w", execution_count=1, outputs=[
        nbformat.v4.new_output("display_data", data={VIEW: {"version_major": 2, "version_minor": 0, "model_id": "m1"}, "text/plain": "HTML()"}),
    ])
    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_markdown_cell("# t"), cell])
    nb.metadata["widgets"] = {WIDGET_STATE: {"version_major": 2, "version_minor": 0, "state": {"m1": model}}}
    nbformat.write(nb, path)
    return path


def fake_widget_js(folder: Path) -> Path:
    folder.mkdir()
    for name in ("require.js", "embed-amd.js", "fa.woff2"):
        (folder / name).write_text(f"/* {name} */")
    (folder / "versions.json").write_text(json.dumps(export._pinned()))
    return folder


def script_sources(page: str) -> list[str]:
    """Every URL the page loads a script from: <script src> and the widget manager that it adds when it loads."""
    return re.findall(r'<script src="([^"]*)"', page) + re.findall(r"var widgetRendererSrc = '([^']*)'", page)


def test_offline_export_loads_every_script_from_the_widgets_folder(tmp_path):
    nb = widget_notebook(tmp_path / "01_x.ipynb")
    out = tmp_path / "html"
    written, offline = export_notebooks([nb], out, fake_widget_js(tmp_path / "js"))
    page = written[0].read_text(encoding="utf-8")
    assert offline and written == [out / "01_x.html"]
    sources = script_sources(page)
    assert f"{ASSETS_FOLDER}/require.js" in sources and f"{ASSETS_FOLDER}/embed-amd.js" in sources
    assert not [s for s in sources if "//" in s], f"scripts from the network: {sources}"
    assert "mathjax" not in page.lower().split("<body")[0], "MathJax is loaded from a CDN"
    assert f'"anywidget": "{ASSETS_FOLDER}/anywidget"' in page  # plotly's FigureWidget needs anywidget's AMD build
    assert "7 selective" in page and WIDGET_STATE in page  # the saved state travels with the page
    shipped = {p.name for p in (out / ASSETS_FOLDER).iterdir()}
    assert {"require.js", "embed-amd.js", "fa.woff2", "anywidget.js"} <= shipped
    assert (out / ASSETS_FOLDER / "anywidget.js").read_text(encoding="utf-8").rstrip().endswith('define(["@jupyter-widgets/base"], widget_default);')
    assert stat.S_IMODE(written[0].stat().st_mode) & 0o044 == 0o044, "exports are readable by others (umask)"


def test_without_the_widget_manager_the_export_says_it_uses_the_cdn(tmp_path):
    nb = widget_notebook(tmp_path / "01_x.ipynb")
    written, offline = export_notebooks([nb], tmp_path / "html", tmp_path / "nothing-here")
    assert not offline and not (tmp_path / "html" / ASSETS_FOLDER).exists()
    assert any(s.startswith("https://") for s in script_sources(written[0].read_text(encoding="utf-8")))


def test_a_missing_notebook_is_an_error_that_names_it_and_writes_nothing(tmp_path):
    with pytest.raises(MonosemError, match="make run"):
        export_notebooks([tmp_path / "nope.ipynb"], tmp_path / "html", fake_widget_js(tmp_path / "js"))
    assert not (tmp_path / "html").exists()


def test_widget_js_ready_needs_the_pinned_versions(tmp_path):
    folder = fake_widget_js(tmp_path / "js")
    assert widget_js_ready(folder)
    (folder / "versions.json").write_text(json.dumps({"@jupyter-widgets/html-manager": "0.0.1", "requirejs": "2.3.8"}))
    assert not widget_js_ready(folder)
    assert not widget_js_ready(tmp_path / "absent")


# -- fetching with npm: a stand-in npm that packs tarballs like the registry's --------------------------------------


def tarball(path: Path, files: dict[str, str]) -> str:
    """Write an npm-style tarball (package/...) and return its integrity string."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        for name, text in files.items():
            data = text.encode()
            info = tarfile.TarInfo(f"package/{name}")
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    path.write_bytes(buf.getvalue())
    return "sha512-" + base64.b64encode(hashlib.sha512(buf.getvalue()).digest()).decode()


@pytest.fixture
def fake_npm(tmp_path, monkeypatch):
    """A stand-in ``npm pack --json --pack-destination DIR`` that copies prepared tarballs; returns its path and the
    pinned packages it serves (name, version, integrity, patterns)."""
    store = tmp_path / "registry"
    store.mkdir()
    manager = tarball(store / "html-manager.tgz", {"dist/embed-amd.js": "/* amd */", "dist/abc.woff2": "font", "dist/embed.js.map": "map",
                                                   "README.md": "readme"})
    requirejs = tarball(store / "requirejs.tgz", {"require.js": "/* require */", "bin/r.js": "r"})
    packages = (("@jupyter-widgets/html-manager", "1.0.15", manager, ("dist/embed-amd.js", "dist/*.woff2")), ("requirejs", "2.3.8", requirejs, ("require.js",)))
    monkeypatch.setattr(export, "WIDGET_JS_PACKAGES", packages)
    npm = tmp_path / "npm"
    listing = json.dumps([{"filename": "html-manager.tgz", "integrity": manager}, {"filename": "requirejs.tgz", "integrity": requirejs}])
    npm.write_text(f"""#!{sys.executable}
import shutil, sys
dest = sys.argv[sys.argv.index("--pack-destination") + 1]
for name in ("html-manager.tgz", "requirejs.tgz"):
    shutil.copy({str(store)!r} + "/" + name, dest)
print({listing!r})
""")
    npm.chmod(0o755)
    return str(npm), packages


def test_fetch_unpacks_only_the_files_an_export_needs(tmp_path, fake_npm):
    npm, _ = fake_npm
    folder = fetch_widget_js(tmp_path / "widgets", npm=npm)
    assert sorted(p.name for p in folder.iterdir()) == ["abc.woff2", "embed-amd.js", "require.js", "versions.json"]
    assert widget_js_ready(folder) and (folder / "require.js").read_text() == "/* require */"
    assert fetch_widget_js(folder, npm="/no/such/npm") == folder  # there already: npm is not needed


def test_fetch_refuses_a_tarball_whose_integrity_is_not_the_pinned_one(tmp_path, fake_npm, monkeypatch):
    npm, packages = fake_npm
    tampered = ((*packages[0][:2], "sha512-AAAA", packages[0][3]), packages[1])
    monkeypatch.setattr(export, "WIDGET_JS_PACKAGES", tampered)
    with pytest.raises(MonosemError, match="integrity"):
        fetch_widget_js(tmp_path / "widgets", npm=npm)
    assert not (tmp_path / "widgets").exists() and not list(tmp_path.glob(".widgets*")), "half-written folder left behind"


def test_fetch_without_npm_says_how_to_get_it(tmp_path):
    with pytest.raises(MonosemError, match="npm"):
        fetch_widget_js(tmp_path / "widgets", npm="/no/such/npm")
    assert not (tmp_path / "widgets").exists()


def test_stale_widget_buffers_are_dropped_and_live_ones_kept():
    """nbclient keeps a buffer after a later update replaced the value that held it; the export drops exactly those."""
    state = {"_py2js_addTraces": None, "_widget_data": [{"x": {"dtype": "float64", "shape": [3]}, "y": [1, 2, 3]}], "_widget_layout": {}}
    buffers = [{"path": ["_py2js_addTraces", "trace_data", 0, "x", "buffer"], "data": "AAAA", "encoding": "base64"},  # value now None
               {"path": ["_widget_data", 0, "x", "buffer"], "data": "AAAA", "encoding": "base64"},  # fills the open slot
               {"path": ["_widget_data", 0, "y", "buffer"], "data": "AAAA", "encoding": "base64"},  # y is a list now
               {"path": ["_widget_data", 3, "x", "buffer"], "data": "AAAA", "encoding": "base64"}]  # no trace 3
    nb = nbformat.v4.new_notebook()
    nb.metadata["widgets"] = {WIDGET_STATE: {"state": {"fig": {"state": state, "buffers": buffers}, "other": {"state": {"value": 1}}}}}
    assert drop_stale_buffers(nb) == 3
    assert nb.metadata["widgets"][WIDGET_STATE]["state"]["fig"]["buffers"] == [buffers[1]]
    nb.metadata["widgets"][WIDGET_STATE]["state"]["fig"]["state"]["_widget_data"][0]["x"]["buffer"] = "filled"  # a filled slot is not open
    assert drop_stale_buffers(nb) == 1 and "buffers" not in nb.metadata["widgets"][WIDGET_STATE]["state"]["fig"]


BUFFERS_NOTEBOOK = """import anywidget, numpy as np, plotly.graph_objects as go, traitlets
class Blobs(anywidget.AnyWidget):
    _esm = "export default { render() {} }"
    data = traitlets.List().tag(sync=True)
    blob = traitlets.Dict().tag(sync=True)
w = Blobs()
display(w)
w.data = [b"ab", b"cd"]
w.blob = {"a": b"x"}
w.blob = {"b": b"yyy"}  # replaces the dict whole: the buffer of "a" is stale
fig = go.FigureWidget()
display(fig)
fig.add_trace(go.Bar(x=np.arange(3.0), y=np.ones(3)))  # _py2js_addTraces with numpy buffers, then None"""


def saved_buffer_paths(nb) -> dict[str, list]:
    state = nb.metadata["widgets"][WIDGET_STATE]["state"]
    return {m["model_name"] + ":" + m["state"].get("_anywidget_id", ""): sorted(map(tuple, (b["path"] for b in m.get("buffers", [])))) for m in state.values()
            if m.get("buffers")}


def test_execute_notebook_saves_no_stale_widget_buffers(tmp_path):
    """Executed as make run does, a notebook keeps exactly the buffers of its widgets' final state; nbconvert's own
    executor keeps stale ones (the reason for widget_state_executor), which drop_stale_buffers removes where it can."""
    from nbconvert.preprocessors import ExecutePreprocessor

    from monosem.viz.export import execute_notebook

    source = tmp_path / "nb" / "01_buffers.ipynb"
    source.parent.mkdir()
    nbformat.write(nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(BUFFERS_NOTEBOOK)]), source)
    ours = nbformat.read(execute_notebook(source, tmp_path / "executed", timeout=120), as_version=4)
    assert not [o for o in ours.cells[0].outputs if o.get("name") == "stderr" or o.output_type == "error"], ours.cells[0].outputs
    paths = saved_buffer_paths(ours)
    blobs = next(v for k, v in paths.items() if k.endswith("Blobs"))
    figure = next(v for k, v in paths.items() if k.endswith("FigureWidget"))
    assert blobs == [("blob", "b"), ("data", 0), ("data", 1)]
    assert figure and all(p[0] != "_py2js_addTraces" for p in figure), figure
    assert drop_stale_buffers(ours) == 0  # nothing left to repair, and the list slots (None) are kept

    stock = nbformat.read(source, as_version=4)
    ExecutePreprocessor(timeout=120).preprocess(stock, {"metadata": {"path": str(source.parent)}})
    stale = saved_buffer_paths(stock)
    assert any(p[0] == "_py2js_addTraces" for v in stale.values() for p in v), "nbclient no longer keeps stale buffers: drop the workaround"
    assert drop_stale_buffers(stock) >= 2  # the two addTraces arrays; the renamed dict key ("a") cannot be told apart


def test_execute_notebook_of_a_failing_cell_writes_nothing(tmp_path):
    from nbclient.exceptions import CellExecutionError

    from monosem.viz.export import execute_notebook

    source = tmp_path / "01_fails.ipynb"
    nbformat.write(nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell("raise RuntimeError('boom')")]), source)
    with pytest.raises(CellExecutionError, match="boom"):
        execute_notebook(source, tmp_path / "executed", timeout=60)
    assert not (tmp_path / "executed").exists() or not list((tmp_path / "executed").iterdir())
    with pytest.raises(MonosemError, match="not found"):
        execute_notebook(tmp_path / "nope.ipynb", tmp_path / "executed")


@pytest.mark.parametrize("answer", ["not json", "[]", '[{"filename": "missing.tgz"}, {}]'])
def test_fetch_with_an_unusable_npm_answer_is_an_error_that_writes_nothing(tmp_path, answer):
    npm = tmp_path / "npm"
    npm.write_text(f"#!/bin/sh\necho '{answer}'\n")
    npm.chmod(0o755)
    with pytest.raises(MonosemError, match="npm"):
        fetch_widget_js(tmp_path / "widgets", npm=str(npm))
    assert not (tmp_path / "widgets").exists() and not list(tmp_path.glob(".widgets*"))


def test_a_corrupt_tarball_is_an_error_that_writes_nothing(tmp_path, fake_npm):
    npm, _ = fake_npm
    (tmp_path / "registry" / "requirejs.tgz").write_bytes(b"not a tarball")
    with pytest.raises(MonosemError, match="cannot be used"):
        fetch_widget_js(tmp_path / "widgets", npm=npm)
    assert not (tmp_path / "widgets").exists() and not list(tmp_path.glob(".widgets*"))
