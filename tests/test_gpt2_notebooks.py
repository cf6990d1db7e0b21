"""The GPT-2 path end to end: all four notebooks run on a tiny random GPT-2 saved with save_pretrained, with the real GPT-2 BPE."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from monosem.corpus import wordnet_dir
from monosem.testing import ROOT, random_gpt2

NOTEBOOKS = ("01_extract_activations", "02_train_sae", "03_selectivity", "04_word_level_exploration")
SAE_METRICS_KEYS = {"train_tokens", "corpus", "fve_heldout", "l0", "dead_fraction", "fidelity", "loss_change_last10pct"}


@pytest.fixture(scope="module")
def gpt2_folder(tmp_path_factory):
    """A 6-block GPT-2 (d_model 64) with random weights and the real GPT-2 BPE tokenizer, as a model folder."""
    folder = tmp_path_factory.mktemp("tiny-gpt2") / "tiny-gpt2"
    model, tok = random_gpt2(n_layer=6, n_embd=64, n_head=4, n_positions=256, seed=0)
    model.save_pretrained(folder)
    tok.save_pretrained(folder)
    return folder


def test_all_four_notebooks_run_on_a_tiny_gpt2_with_the_real_bpe(gpt2_folder, tmp_path):
    data = tmp_path / "data"
    env = {**os.environ, "MONOSEM_MODEL": str(gpt2_folder), "MONOSEM_DATA_DIR": str(data), "MONOSEM_LAYERS": "0,2",
           "MONOSEM_SAE_TOKENS": "10240", "MONOSEM_SAE_BATCH": "256", "MONOSEM_SAE_EXPANSION": "2", "MONOSEM_SAE_K": "8",
           "MONOSEM_BACKGROUND_TOKENS": "3000", "MONOSEM_EVAL_TEXTS": "24", "MONOSEM_FIDELITY_TEXTS": "6", "MONOSEM_PERMUTATIONS": "50",
           "MONOSEM_BOOTSTRAP": "50", "MONOSEM_TOP_K": "3"}
    for name in NOTEBOOKS:
        proc = subprocess.run([sys.executable, "-m", "jupyter", "nbconvert", "--to", "notebook", "--execute", "--output-dir", str(tmp_path / "out"),
                               str(ROOT / "notebooks" / f"{name}.ipynb")], env=env, capture_output=True, text=True, timeout=900)
        assert proc.returncode == 0, f"{name} failed on the tiny GPT-2:\n{proc.stderr[-4000:]}"
    results = data / "results" / "tiny-gpt2"
    metrics = json.loads((results / "sae_metrics.json").read_text())
    corpus = "WordNet 3.0 glosses" if wordnet_dir() is not None else "Python docs (pydoc)"
    assert metrics["model_used"] == "tiny-gpt2" and metrics["corpus"] == corpus
    for preset, per_layer in metrics["per_preset"].items():
        assert set(per_layer) == {"0", "2"}, preset
        for layer, entry in per_layer.items():
            assert SAE_METRICS_KEYS <= set(entry), (preset, layer, SAE_METRICS_KEYS - set(entry))
            assert entry["corpus"] == corpus and entry["train_tokens"] == 10240 and entry["kind"] == "ce_loss_recovered"
            assert entry["heldout_tokens"] > 1000 and isinstance(entry["warnings"], list)
    training = json.loads((data / "saes" / "tiny-gpt2" / "topk" / "layer_2" / "training.json").read_text())
    assert training["corpus"] == corpus and training["settings"]["train_tokens"] == 10240
    summary = json.loads((results / "summary.json").read_text())
    assert summary["model_used"] == "tiny-gpt2" and summary["layers"] == [0, 2]
    assert list((results / "features").glob("layer_2_feature_*.json")), "notebook 04 exported the dashboards"
    # the negative control (a random-weight copy of this GPT-2) is in the scorecard with few units labelled specific
    control = {b: v for b, v in summary["scorecard"].items() if b.startswith("random-weight model")}
    assert len(control) == 3, sorted(summary["scorecard"])
    for basis, by_layer in control.items():
        assert set(by_layer) == {"0", "2"}, basis
        for layer, row in by_layer.items():
            assert row["n_active"] > 0 and row["fraction_specific"] <= summary["alpha"], (basis, layer, row)
    assert set(summary["headline"]) == {"first word list", "second word list"} and summary["probes"] and summary["coverage"]
