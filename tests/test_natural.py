"""Natural-text tokens (monosem.natural) on the tiny GPT-2, encode-then-pool and the density-matched bases (monosem.bases),
seed replicates (monosem.sae.train) and the fixed analysed preset (monosem.config)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch

from monosem.bases import MLPBasis, RateMatched, ResidualBasis, SAEBasis, basis_rates, pool_tokens
from monosem.config import analysed_preset
from monosem.natural import natural_tokens
from monosem.sae.train import SAEJob, seed_variant


def test_natural_tokens_carry_their_word_and_its_category(gpt2_tiny):
    model, tokenizer = gpt2_tiny
    texts = ["The red fox ran to 42 green trees.", "Seven happy dogs."]
    labels = {"red": 3, "green": 3, "42": 0, "seven": 0, "happy": 1}
    nat = natural_tokens(model, tokenizer, texts, [0, 1], lambda w: labels.get(w.lower(), -1))
    assert nat.n_tokens == sum(len(tokenizer(t)["input_ids"]) for t in texts)  # every non-special token, the prepended one left out
    assert nat.resid[0].shape == (nat.n_tokens, model.config.hidden_size) and nat.mlp[1].shape[0] == nat.n_tokens
    words = list(nat.words)
    assert "red" in words and "42" in words and "" in words  # the full stop belongs to no word
    assert all(nat.label[i] == labels.get(w.lower(), -1) for i, w in enumerate(words) if w)
    assert nat.text.tolist() == sorted(nat.text.tolist())  # texts in order


def test_a_massive_token_is_left_out(gpt2_tiny):
    model, tokenizer = gpt2_tiny
    texts = ["The red fox ran home."]
    full = natural_tokens(model, tokenizer, texts, [0], lambda w: -1)
    norms = full.resid[0].norm(dim=1)
    cut = natural_tokens(model, tokenizer, texts, [0], lambda w: -1, massive={0: float(norms.max()) - 1e-3})
    assert cut.n_tokens == full.n_tokens - 1


class _Cache:
    """A concept cache of 3 examples with per-token activations, as ActivationCache holds them."""

    def __init__(self):
        self.layers = [0]
        self.tensors = {"token_example": torch.tensor([0, 0, 0, 1, 1, 2]), "token_in_word": torch.tensor([False, True, True, True, False, True])}
        self.tokens_ = torch.arange(12, dtype=torch.float32).reshape(6, 2)

    def word(self, layer, pooling="mean"):
        return torch.zeros(3, 2)

    def tokens(self, layer):
        return self.tokens_


def test_pool_tokens_means_the_words_tokens_and_takes_the_last():
    cache = _Cache()
    x = cache.tokens_
    mean = pool_tokens(x, cache, "mean")  # pyright: ignore[reportArgumentType]
    assert torch.allclose(mean[0], x[1:3].mean(0)) and torch.allclose(mean[1], x[3]) and torch.allclose(mean[2], x[5])
    assert torch.allclose(pool_tokens(x, cache, "last")[0], x[2])  # pyright: ignore[reportArgumentType]
    assert torch.allclose(pool_tokens(x, cache, "sentence")[1], x[3:5].mean(0))  # pyright: ignore[reportArgumentType]


def test_sae_features_are_encoded_per_token_then_pooled():
    class Relu:
        d_sae = 2

        def encode(self, x):
            return torch.relu(x - 4)

    cache = _Cache()
    basis = SAEBasis("toy", lambda layer: Relu())  # pyright: ignore[reportArgumentType]
    acts, live = basis.activations(cache, 0)  # pyright: ignore[reportArgumentType]
    x = cache.tokens_
    assert np.allclose(acts[0], torch.relu(x[1:3] - 4).mean(0).numpy())  # [0, 0.5]
    assert not np.allclose(acts[0], torch.relu(x[1:3].mean(0) - 4).numpy())  # pooling first would give [0, 0]
    assert live.tolist() == [True, True]


def test_a_random_rotation_keeps_norms_and_changes_the_basis():
    x = torch.randn(50, 8)
    rotated = ResidualBasis(rotation_seed=3)._rotate(x)
    assert torch.allclose(rotated.norm(dim=1), x.norm(dim=1), atol=1e-5) and not torch.allclose(rotated, x)
    assert torch.allclose(ResidualBasis(rotation_seed=3)._rotate(x), rotated)  # seeded


def test_rate_matched_bases_take_the_density_distribution_of_the_sae():
    tables = {0: pd.DataFrame({"density_words": [0.0, 0.01, 0.02, 0.03], "density_tokens": [0.0, 0.001, 0.002, np.nan]})}
    rates = basis_rates(tables)
    assert rates[0][0].tolist() == [0.0, 0.01, 0.02, 0.03] and rates[0][1].tolist() == pytest.approx([0.0, 0.001, 0.002, 0.0])  # NaN as 0
    matched = RateMatched(MLPBasis(True), rates, "SAE (topk)")
    assert matched.name == "MLP neurons ± @ SAE (topk) density" and matched.fire_rate(0) is rates[0] and MLPBasis().fire_rate(0) is None


def test_seed_replicates_have_their_own_name_and_seed():
    assert seed_variant("topk", 0) == "topk" and seed_variant("topk", 2) == "topk-seed2"
    assert SAEJob("topk", 1, {}, 2).name == "topk-seed2" and SAEJob("topk", 1).name == "topk"


def test_the_analysed_preset_is_fixed_in_advance():
    assert analysed_preset(["reference", "l1", "topk", "matryoshka"]) == "topk"
    assert analysed_preset(["reference", "matryoshka", "l1"]) == "matryoshka"
    assert analysed_preset(["reference"]) == "reference"
