"""Cross-cutting faults: no code path unpickles or runs remote code, and bad settings name their variable.

Faults of one module live beside that module's tests (cache: test_cache.py; SAE folders: sae/test_saelens.py;
paths: test_paths.py)."""

import pytest

from monosem.config import MonosemError, RunConfig
from monosem.testing import ROOT


def test_no_pickle_and_no_remote_code_anywhere():
    sources = [ROOT / "helpers.py", *(ROOT / "monosem").rglob("*.py"), *(ROOT / "notebooks").glob("*.ipynb"), *(ROOT / "notebooks").glob("*.py"),
               *(ROOT / "bench").glob("*.py")]
    assert len([p for p in sources if p.parent.name == "monosem"]) > 10 and len([p for p in sources if p.suffix == ".ipynb"]) == 4
    for path in sources:
        text = path.read_text()
        for bad in ("trust_remote_code=True", "torch.save(", "torch.load(", "import pickle", "allow_pickle=True"):
            assert bad not in text, f"{path.relative_to(ROOT)} uses {bad}"


def test_bad_environment_values_say_which_variable():
    with pytest.raises(MonosemError, match="MONOSEM_LAYERS='one,two' is invalid"):
        RunConfig.from_env({"MONOSEM_LAYERS": "one,two"})
    with pytest.raises(MonosemError, match="MONOSEM_SAE_TOKENS='many' is invalid"):
        RunConfig.from_env({"MONOSEM_SAE_TOKENS": "many"})
