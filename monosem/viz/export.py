"""Executed notebooks whose saved widget state draws, and their HTML exports that draw offline.

``execute_notebook`` runs a notebook as nbconvert does, but keeps the saved widget state consistent (nbclient keeps a
widget's binary buffer after a later update replaced the value that held it; the widget manager then fails to draw
any widget of the notebook). ``drop_stale_buffers`` repairs what other executors saved, as far as it can be told.

nbconvert's HTML loads require.js, the widget manager (``@jupyter-widgets/html-manager``), MathJax and third-party
widget code (``anywidget``, under plotly's ``FigureWidget``) from public CDNs, so offline the widgets of an export stay
blank. Here the export loads each from a folder ``widgets/`` beside the HTML files: require.js and the widget manager
come from the npm registry once (``fetch_widget_js``, run by ``make setup``, pinned versions), anywidget's AMD build
from the installed ``anywidget`` package (so it always matches the kernel's), and MathJax and mermaid are left out
(the notebooks have neither). The folder of exports then opens anywhere, with no request to the network.
"""

from __future__ import annotations

import json
import logging
import resource
import shutil
import subprocess
import sys
import tarfile
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from monosem.config import MonosemError
from monosem.io import atomic_dir, atomic_write_text

log = logging.getLogger(__name__)

# npm packages (name, exact version, the tarball's integrity as the registry lists it) and the files of each that an
# export needs (the widget manager's fonts are Font Awesome's, for button icons); html-manager 1.x is ipywidgets 8's.
WIDGET_JS_PACKAGES: tuple[tuple[str, str, str, tuple[str, ...]], ...] = (
    ("@jupyter-widgets/html-manager", "1.0.15", "sha512-5thBIV6ymNgmPVOHvzx+gGy8ZSKmSazhtGw4/c4xJDVzRhG9PTeQsRjF3FUTopvFi//SABeNz1yp47bCrJ3CQA==",
     ("dist/embed-amd.js", "dist/*.woff2", "dist/*.woff", "dist/*.ttf", "dist/*.eot", "dist/*.svg")),
    ("requirejs", "2.3.8", "sha512-7/cTSLOdYkNBNJcDMWf+luFvMriVm7eYxp4BcFCsAX0wF421Vyce5SXP17c+Jd5otXKGNehIonFlyQXSowL6Mw==", ("require.js",)),
)
ASSETS_FOLDER = "widgets"  # beside the HTML files; the exports refer to it by this relative name
TEMPLATE = Path(__file__).with_name("templates")
REQUIRED = ("require.js", "embed-amd.js")
FETCH_FIX = "run `make setup` (it needs npm: Debian's package `npm`, or Node.js from nodejs.org)"
WIDGET_STATE = "application/vnd.jupyter.widget-state+json"  # where a notebook's metadata keeps its widgets' saved state


def default_widget_js_dir() -> Path:
    """Where ``fetch_widget_js`` keeps the widget manager: ``<environment>/share/monosem/widgets`` (beside Jupyter's own data)."""
    return Path(sys.prefix) / "share" / "monosem" / "widgets"


def widget_js_ready(folder: Path) -> bool:
    """Whether ``folder`` holds the fetched widget manager at the pinned versions."""
    stamp = folder / "versions.json"
    try:
        return json.loads(stamp.read_text(encoding="utf-8")) == _pinned() and all((folder / f).is_file() for f in REQUIRED)
    except (OSError, ValueError):
        return False


def _pinned() -> dict[str, str]:
    return {name: version for name, version, _, _ in WIDGET_JS_PACKAGES}


def fetch_widget_js(folder: Path | None = None, npm: str = "npm") -> Path:
    """Download the pinned npm packages with ``npm pack`` (npm checks each tarball's integrity) and unpack the files an
    export needs into ``folder`` (default ``default_widget_js_dir()``), atomically; a no-op when they are there already."""
    folder = Path(folder or default_widget_js_dir())
    if widget_js_ready(folder):
        return folder
    if shutil.which(npm) is None:
        raise MonosemError(f"npm not found, so the widget manager for offline HTML exports cannot be fetched: {FETCH_FIX}")
    with tempfile.TemporaryDirectory(prefix="monosem-npm-") as tmp:
        specs = [f"{name}@{version}" for name, version, _, _ in WIDGET_JS_PACKAGES]
        done = subprocess.run([npm, "pack", "--json", "--pack-destination", tmp, *specs], capture_output=True, text=True, cwd=tmp)
        if done.returncode != 0:
            raise MonosemError(f"`npm pack {' '.join(specs)}` failed ({done.stderr.strip()[-500:]}); check that npm reaches its registry, then {FETCH_FIX}")
        try:
            packed = json.loads(done.stdout)
            if not isinstance(packed, list) or len(packed) != len(WIDGET_JS_PACKAGES):
                raise ValueError(f"it lists {len(packed) if isinstance(packed, list) else 'no'} packages, not {len(WIDGET_JS_PACKAGES)}")
            with atomic_dir(folder) as staging:
                for (name, version, integrity, patterns), entry in zip(WIDGET_JS_PACKAGES, packed):
                    if entry.get("integrity") != integrity:
                        raise MonosemError(f"{name}@{version} from the registry has integrity {entry.get('integrity')}, not the pinned {integrity}: "
                                           "refusing it; check your npm registry setting")
                    _unpack(Path(tmp) / entry["filename"], patterns, staging, name)
                (staging / "versions.json").write_text(json.dumps(_pinned(), indent=2), encoding="utf-8")
        except MonosemError:
            raise
        except (ValueError, KeyError, TypeError, OSError, tarfile.TarError) as exc:
            raise MonosemError(f"`npm pack {' '.join(specs)}` gave an answer that cannot be used ({exc}); {FETCH_FIX}") from None
    log.info("widget manager for offline HTML exports in %s", folder)
    return folder


def _unpack(tarball: Path, patterns: Sequence[str], dest: Path, name: str) -> None:
    """Copy the regular files of ``tarball`` (an npm package: ``package/...``) that match ``patterns`` into ``dest``, flat."""
    if not tarball.is_file():
        raise MonosemError(f"npm pack wrote no {tarball.name} for {name}; {FETCH_FIX}")
    with tarfile.open(tarball) as tar:
        found = 0
        for member in tar.getmembers():
            inner = Path(member.name).relative_to("package") if member.name.startswith("package/") else None
            if member.isfile() and inner is not None and any(inner.match(p) for p in patterns):
                source = tar.extractfile(member)
                assert source is not None
                (dest / inner.name).write_bytes(source.read())
                found += 1
    if not found:
        raise MonosemError(f"{name}'s tarball has none of {list(patterns)}: the pinned version changed its layout")


def anywidget_amd() -> Path:
    """The installed ``anywidget``'s AMD build (its classic-notebook extension), which the widget manager loads for
    anywidget-based widgets such as plotly's ``FigureWidget``."""
    from importlib.resources import files

    path = Path(str(files("anywidget") / "nbextension" / "index.js"))
    if not path.is_file():
        raise MonosemError(f"{path} not found: the installed anywidget has no AMD build; reinstall it (`make setup`)")
    return path


def copy_widget_js(source: Path, out_dir: Path) -> Path:
    """``out_dir/widgets``: the fetched widget manager and anywidget's AMD build, written atomically."""
    with atomic_dir(Path(out_dir) / ASSETS_FOLDER) as staging:
        for f in source.iterdir():
            if f.is_file():
                shutil.copyfile(f, staging / f.name)
        shutil.copyfile(anywidget_amd(), staging / "anywidget.js")
    return Path(out_dir) / ASSETS_FOLDER


def widget_state_executor(**settings: Any):
    """nbconvert's ``ExecutePreprocessor`` (``settings``: timeout, kernel_name, ...) whose saved widget state keeps no
    stale buffer: an update message replaces each top-level value it names whole, so the buffers stored under those
    names go with it. (nbclient keeps each buffer by its path until another buffer replaces it: after plotly's
    ``_py2js_addTraces`` message with numpy arrays, then ``None``, the widget manager fails to put the buffer back,
    "Cannot read properties of null", and draws none of the notebook's widgets.)"""
    from nbconvert.preprocessors import ExecutePreprocessor

    class WidgetStateExecutor(ExecutePreprocessor):
        def handle_comm_msg(self, outs, msg, cell_index):
            data = msg["content"]["data"]
            stored = self.widget_buffers.get(msg["content"]["comm_id"])
            if self.store_widget_state and stored and isinstance(data.get("state"), dict):
                for path in [p for p in stored if p[0] in data["state"]]:
                    del stored[path]
            super().handle_comm_msg(outs, msg, cell_index)

    return WidgetStateExecutor(**settings)


def execute_notebook(source: Path, out_dir: Path, timeout: int = 14400) -> Path:
    """Run ``source`` in a fresh kernel from its own folder (as ``jupyter nbconvert --execute`` does) and write
    ``out_dir/<name>.ipynb`` atomically, with the widgets' saved state (``widget_state_executor``); a failing cell
    raises nbclient's ``CellExecutionError`` and writes nothing."""
    import nbformat

    source = Path(source)
    if not source.is_file():
        raise MonosemError(f"notebook {source} not found; the series is notebooks/0*.ipynb")
    nb = nbformat.read(source, as_version=4)
    widget_state_executor(timeout=timeout).preprocess(nb, {"metadata": {"path": str(source.parent.resolve())}})
    # the largest resident memory of this process's finished children: the kernel (for bench/make_run_times.py)
    nb.metadata["monosem"] = {"kernel_peak_rss_mb": round(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024)}
    return atomic_write_text(Path(out_dir) / source.name, nbformat.writes(nb))


def drop_stale_buffers(nb: Any) -> int:
    """Remove the binary buffers of a notebook's saved widget state that can be told not to belong to it any more;
    returns how many. For notebooks run by another executor than ``execute_notebook`` (see ``widget_state_executor``
    for why they occur). A buffer belongs where its path, less the last key, leads to a dict that lacks that key or a
    list whose item there is ``None`` (the slot ipywidgets left for it); a stale buffer whose slot is still open (a
    dict key renamed) cannot be told apart and stays."""
    dropped = 0
    for model in nb.get("metadata", {}).get("widgets", {}).get(WIDGET_STATE, {}).get("state", {}).values():
        buffers = model.get("buffers")
        if not buffers:
            continue
        kept = [b for b in buffers if _buffer_slot_open(model.get("state", {}), b["path"])]
        dropped += len(buffers) - len(kept)
        if kept:
            model["buffers"] = kept
        else:
            del model["buffers"]
    return dropped


def _buffer_slot_open(state: Any, path: Sequence[Any]) -> bool:
    node = state
    for key in path[:-1]:
        if isinstance(node, dict) and key in node:
            node = node[key]
        elif isinstance(node, list) and isinstance(key, int) and 0 <= key < len(node):
            node = node[key]
        else:
            return False
    last = path[-1]
    if isinstance(node, dict):
        return last not in node
    return isinstance(node, list) and isinstance(last, int) and 0 <= last < len(node) and node[last] is None


def html_exporter(offline: bool):
    """nbconvert's HTMLExporter: with ``offline``, the ``monosem_offline`` template (every script from ``widgets/``, no
    MathJax or mermaid); without, nbconvert's lab template (widgets from its CDN)."""
    from nbconvert import HTMLExporter

    if not offline:
        return HTMLExporter()
    return HTMLExporter(extra_template_basedirs=[str(TEMPLATE)], template_name="monosem_offline",
                        require_js_url=f"{ASSETS_FOLDER}/require.js", widget_renderer_url=f"{ASSETS_FOLDER}/embed-amd.js")


def export_notebooks(executed: Sequence[Path], out_dir: Path, widget_js: Path | None = None) -> tuple[list[Path], bool]:
    """Write ``out_dir/<name>.html`` for each executed notebook (atomically) and, when the widget manager was fetched
    (``widget_js``, default ``default_widget_js_dir()``), ``out_dir/widgets/`` so that they draw offline. Returns the
    HTML paths and whether they are offline; without the widget manager they load it from nbconvert's CDN."""
    import nbformat

    widget_js = Path(widget_js or default_widget_js_dir())
    offline = widget_js_ready(widget_js)
    out_dir = Path(out_dir)
    missing = [str(p) for p in executed if not Path(p).is_file()]
    if missing:
        raise MonosemError(f"executed notebooks not found: {missing}; run `make run` (it executes them into build/executed/)")
    if offline:
        copy_widget_js(widget_js, out_dir)
    exporter = html_exporter(offline)
    written = []
    for path in map(Path, executed):
        nb = nbformat.read(path, as_version=4)
        if dropped := drop_stale_buffers(nb):
            log.info("%s: %d stale widget buffers dropped", path.name, dropped)
        body, _ = exporter.from_notebook_node(nb, resources={"widgets_folder": ASSETS_FOLDER, "metadata": {"name": path.stem}})
        written.append(atomic_write_text(out_dir / f"{path.stem}.html", body))
    return written, offline
