"""Bit-reproducibility on the CPU: the same seed gives the same SAE bytes, statistics tables and summary.json."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from monosem.bases import SAEBasis, compare_bases
from monosem.config import RunConfig
from monosem.criterion import Criterion
from monosem.model import ModelSpec
from monosem.paths import model_paths
from monosem.results import build_summary, write_summary
from monosem.runtime import set_seed
from monosem.sae.saelens import save_sae
from monosem.sae.train import train_sae
from monosem.scorecard import unit_table
from monosem.testing import synthetic_activations

PRESETS = {"reference": {}, "l1": {"expansion": 2}, "topk": {"expansion": 2, "k": 4, "dead_steps": 10},
           "matryoshka": {"expansion": 2, "k": 4, "dead_steps": 10}}  # dead_steps: AuxK runs too
STEPS, BATCH = 60, 64


@pytest.fixture(autouse=True)
def restore_determinism():
    """set_seed switches torch to deterministic algorithms; put the process-wide setting back afterwards."""
    enabled, warn_only = torch.are_deterministic_algorithms_enabled(), torch.is_deterministic_algorithms_warn_only_enabled()
    yield
    torch.use_deterministic_algorithms(enabled, warn_only=warn_only)


@pytest.fixture(scope="module")
def tokens() -> torch.Tensor:
    """Sparse combinations of 24 random directions in 16 dimensions, plus a little noise."""
    g = torch.Generator().manual_seed(123)
    atoms = torch.randn(24, 16, generator=g)
    codes = torch.rand(1024, 24, generator=g) * (torch.rand(1024, 24, generator=g) < 0.15)
    return codes @ atoms + 0.05 * torch.randn(1024, 16, generator=g)


def train_and_save(tokens: torch.Tensor, preset: str, seed: int, folder: Path) -> bytes:
    set_seed(seed)
    sae, history, _ = train_sae(tokens, preset, steps=STEPS, batch_size=BATCH, seed=seed, progress=False, **PRESETS[preset])
    assert len(history) == STEPS and history[-1]["mse"] < history[0]["mse"], "the SAE should learn something"
    save_sae(sae, folder, "toy-model", 0, {"preset": preset})
    return (folder / "sae_weights.safetensors").read_bytes()


@pytest.mark.parametrize("preset", sorted(PRESETS))
def test_same_seed_same_sae_bytes(tokens, preset, tmp_path):
    first = train_and_save(tokens, preset, 0, tmp_path / "a")
    second = train_and_save(tokens, preset, 0, tmp_path / "b")
    assert first == second, f"two {preset} trainings with seed 0 wrote different sae_weights.safetensors"
    assert (tmp_path / "a" / "cfg.json").read_bytes() == (tmp_path / "b" / "cfg.json").read_bytes()
    other = train_and_save(tokens, preset, 1, tmp_path / "c")
    assert other != first, f"{preset} training ignores the seed"


def test_same_seed_same_statistics():
    df, acts = synthetic_activations(n_words=6, n_sent=3, n_units=40, selective=4, seed=0)
    set_seed(0)
    a, _ = unit_table(acts, df, criterion=Criterion(n_splits=10, min_active_words=2, seed=0), n_boot=60)
    set_seed(0)
    b, _ = unit_table(acts, df, criterion=Criterion(n_splits=10, min_active_words=2, seed=0), n_boot=60)
    assert a.equals(b)
    c, _ = unit_table(acts, df, criterion=Criterion(n_splits=10, min_active_words=2, seed=1), n_boot=60)
    assert not a.equals(c), "the statistics ignore the seed"
    same = ["score_reference", "top_concept_reference", "top_category", "n_active_words", "mean_colors"]
    assert a[same].equals(c[same]), "only the resampled and split columns depend on the seed"


class FixedSAEBasis(SAEBasis):
    """A trained-SAE basis whose word-level activations are fixed arrays per layer."""

    def __init__(self, preset: str, acts: dict):
        super().__init__(f"SAE ({preset})", lambda layer: None, preset)  # type: ignore[arg-type, return-value]
        self.acts = acts

    def activations(self, cache, layer, pooling="mean"):
        return self.acts[layer], (self.acts[layer] > 0).any(0)


def test_same_inputs_same_summary_bytes(tmp_path):
    df, a = synthetic_activations(n_words=5, n_sent=3, n_units=12, selective=3, seed=1)
    _, b = synthetic_activations(n_words=5, n_sent=3, n_units=12, seed=2)
    metrics = {p: {str(L): {"mse": 0.25, "fve": 0.5, "seconds": 3.5, "tokens_per_second": 99.0} for L in (0, 2)} for p in ("reference", "l1")}
    spec = ModelSpec("toy", "toy-model", "/nowhere", "rev")
    cfg = RunConfig.from_env(environ={}, layers=(0, 2), sae_presets=("reference", "l1"))
    written = []
    for run in ("a", "b"):
        set_seed(0)
        bases = [FixedSAEBasis("reference", {0: a, 2: b}), FixedSAEBasis("l1", {0: b, 2: a})]
        comparison = compare_bases(bases, df, None, [0, 2], progress=False, criterion=Criterion(n_splits=10), n_boot=40)  # type: ignore[arg-type]
        summary = build_summary(cfg, spec, [0, 2], ["reference", "l1"], comparison, metrics, Criterion.from_config(cfg))
        written.append(write_summary(model_paths(tmp_path / run, spec.used), summary).read_bytes())
    assert written[0] == written[1]
    assert b"seconds" not in written[0]


def test_one_pass_training_from_the_store_writes_the_same_bytes_twice(gpt2_tiny, tmp_path):
    """The streaming path (text order, shuffle buffer, every preset of a layer in one pass) is seeded end to end."""
    from monosem.cache import load_or_extract_corpus
    from monosem.corpus import background_texts
    from monosem.sae.train import SAEJob, train_or_load_saes, training_plan
    from monosem.store import ActivationStore

    model, tok = gpt2_tiny
    spec = ModelSpec("tiny", "tiny-gpt2", "/nowhere", "rev")
    texts = background_texts(4000, "pydoc", words_per_text=30)
    jobs = [SAEJob(p, 1, PRESETS[p]) for p in sorted(PRESETS)]
    written = []
    for run in ("a", "b", "c"):
        set_seed(0)
        mp = model_paths(tmp_path / run, spec.used)
        init = load_or_extract_corpus(mp, spec, texts[:15], [1], model_and_tokenizer=(model, tok))
        held = load_or_extract_corpus(mp, spec, texts[-8:], [1], model_and_tokenizer=(model, tok))
        seed = 1 if run == "c" else 0
        store = ActivationStore(model, tok, texts[15:-8], [1], batch_size=8, buffer_tokens=256, seed=seed)
        train_or_load_saes(mp, spec, jobs, training_plan(STEPS * BATCH, BATCH, 256, 64, "cpu"), store, [init], held, "pydoc", seed=seed, progress=False)
        written.append({p: (mp.sae(1, p) / "sae_weights.safetensors").read_bytes() for p in PRESETS})
    assert written[0] == written[1], "two one-pass trainings with seed 0 wrote different sae_weights.safetensors"
    assert all(written[2][p] != written[0][p] for p in PRESETS), "one-pass training ignores the seed"
