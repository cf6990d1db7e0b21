"""monosem.progress: a bar leaves its final text in an executed notebook; outside a kernel it is tqdm; disabled, silent."""

from __future__ import annotations

import nbformat
from nbconvert.preprocessors import ExecutePreprocessor

from monosem.progress import Progress
from monosem.testing import ROOT


def test_iterates_and_counts_outside_a_kernel(capsys):
    bar = Progress(range(7), desc="work", unit="step")
    assert list(bar) == list(range(7))
    assert bar.n == 7 and "7/7" in bar.text()
    assert "work" in capsys.readouterr().err  # tqdm on stderr


def test_disabled_bar_is_silent_and_still_iterates(capsys):
    assert list(Progress(iter("abc"), total=3, disable=True)) == ["a", "b", "c"]
    assert capsys.readouterr().err == ""


def test_executed_notebook_keeps_the_final_state_of_the_bar():
    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(
        "from monosem.progress import Progress\nbar = Progress(total=40, desc='extract', unit='text', mininterval=0)\n"
        "for _ in range(40):\n    bar.update()\nbar.close()")])
    ExecutePreprocessor(timeout=120, kernel_name="python3").preprocess(nb, {"metadata": {"path": str(ROOT)}})
    outputs = nb.cells[0].outputs
    assert [o.output_type for o in outputs] == ["display_data"], outputs  # one display, updated in place; no stderr
    assert "extract: 100%" in outputs[0].data["text/plain"] and "40/40" in outputs[0].data["text/plain"]
    assert "40/40" in outputs[0].data["text/html"]
