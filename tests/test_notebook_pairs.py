"""Each notebook is paired with a jupytext percent script, the two are in sync, and each has one parameters cell."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

jupytext = pytest.importorskip("jupytext")

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = sorted((ROOT / "notebooks").glob("0*.ipynb"))
SYNC = "run `jupytext --sync notebooks/*.ipynb`"


def cells(nb) -> list[tuple[str, str, tuple[str, ...]]]:
    return [(c.cell_type, c.source, tuple(c.metadata.get("tags", ()))) for c in nb.cells]


def test_there_are_notebooks():
    assert [p.name[:2] for p in NOTEBOOKS] == ["01", "02", "03", "04"]


def test_no_script_without_notebook():
    scripts = sorted((ROOT / "notebooks").glob("0*.py"))
    assert [p.with_suffix(".ipynb") for p in scripts] == NOTEBOOKS


@pytest.mark.parametrize("ipynb", NOTEBOOKS, ids=lambda p: p.stem)
def test_notebook_has_a_paired_percent_script(ipynb):
    script = ipynb.with_suffix(".py")
    assert script.is_file(), f"{ipynb.name} has no paired {script.name}; {SYNC}"
    formats = json.loads(ipynb.read_text(encoding="utf-8"))["metadata"].get("jupytext", {}).get("formats")
    assert formats == "ipynb,py:percent", f"{ipynb.name}: jupytext formats metadata is {formats!r}, expected 'ipynb,py:percent'; {SYNC}"
    head = script.read_text(encoding="utf-8")[:600]
    assert "formats: ipynb,py:percent" in head and "format_name: percent" in head, f"{script.name} lacks the jupytext percent header; {SYNC}"


@pytest.mark.parametrize("ipynb", NOTEBOOKS, ids=lambda p: p.stem)
def test_notebook_and_script_are_in_sync(ipynb):
    script = ipynb.with_suffix(".py")
    a, b = cells(jupytext.read(ipynb)), cells(jupytext.read(script))
    assert a, f"{ipynb.name} has no cells"
    for i, (x, y) in enumerate(zip(a, b)):
        assert x == y, f"{ipynb.name} and {script.name} differ at cell {i}:\n{x}\n!=\n{y}\n{SYNC}"
    assert len(a) == len(b), f"{ipynb.name} has {len(a)} cells, {script.name} {len(b)}; {SYNC}"


@pytest.mark.parametrize("ipynb", NOTEBOOKS, ids=lambda p: p.stem)
def test_one_parameters_cell_that_builds_the_config(ipynb):
    nb = jupytext.read(ipynb)
    params = [c for c in nb.cells if "parameters" in c.metadata.get("tags", ())]
    assert len(params) == 1, f"{ipynb.name} has {len(params)} cells tagged 'parameters', expected exactly 1"
    assert params[0].cell_type == "code"
    assert "RunConfig.from_env(" in params[0].source, f"the parameters cell of {ipynb.name} must build cfg = h.RunConfig.from_env(...)"
    later = [c.source for c in nb.cells[nb.cells.index(params[0]) + 1 :] if c.cell_type == "code"]
    assert not any("RunConfig.from_env(" in s for s in later), f"{ipynb.name} builds the config again after its parameters cell"
