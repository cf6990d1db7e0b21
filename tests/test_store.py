"""The streaming activation store (monosem/store.py): one model pass, every token served once, layers aligned, shuffled, bounded, seeded."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from monosem.activations import extract_corpus_activations
from monosem.corpus import background_texts
from monosem.store import ActivationStore

LAYERS = [1, 3]


@pytest.fixture(scope="module")
def texts():
    return background_texts(3000, "pydoc", words_per_text=30)


@pytest.fixture(scope="module")
def reference(gpt2_tiny, texts):
    """Every token's activation at LAYERS, extracted the plain way (the rows the store must serve)."""
    model, tok = gpt2_tiny
    out = extract_corpus_activations(model, tok, texts, LAYERS, progress=False)
    return {L: torch.from_numpy(np.asarray(out[f"L{L}.tokens"])) for L in LAYERS}


def served(store: ActivationStore, batch_size: int, n_batches: int) -> dict[int, torch.Tensor]:
    batches = list(store.batches(batch_size, n_batches))
    assert len(batches) == n_batches and all(b[L].shape == (batch_size, store.d_model) for b in batches for L in LAYERS)
    return {L: torch.cat([b[L] for b in batches]) for L in LAYERS}


def canonical_ids(rows: torch.Tensor, reference: torch.Tensor) -> torch.Tensor:
    """For each row, the first reference row it equals (to 1e-5), or -1. Tokens with the same context (a text's first
    word after BOS) have identical activations, so rows are compared as a multiset of these ids."""
    close = torch.cdist(rows, reference, compute_mode="donot_use_mm_for_euclid_dist") < 1e-5
    return torch.where(close.any(1), close.float().argmax(1), torch.full((len(rows),), -1))


def test_one_pass_serves_every_token_once_with_the_layers_aligned(gpt2_tiny, texts, reference):
    model, tok = gpt2_tiny
    n_tokens = len(reference[LAYERS[0]])
    store = ActivationStore(model, tok, texts, LAYERS, batch_size=8, buffer_tokens=256, seed=0)
    out = served(store, 1, n_tokens)  # batch 1: exactly the corpus
    assert store.epochs == 1 and store.tokens_run == n_tokens
    ids = {L: canonical_ids(out[L], reference[L]) for L in LAYERS}
    expected = {L: canonical_ids(reference[L], reference[L]) for L in LAYERS}
    assert (ids[1] >= 0).all() and sorted(ids[1].tolist()) == sorted(expected[1].tolist()), "each token served exactly once"
    pairs = sorted(zip(ids[1].tolist(), ids[3].tolist()))
    assert pairs == sorted(zip(expected[1].tolist(), expected[3].tolist())), "a batch holds the same tokens at every layer"
    first = ids[1][:64]
    assert (first.diff().abs() > 1).float().mean() > 0.8, "consecutive tokens come from different places, not in corpus order"


def test_the_same_seed_serves_the_same_batches_and_another_seed_others(gpt2_tiny, texts):
    model, tok = gpt2_tiny
    a, b, c = (served(ActivationStore(model, tok, texts, LAYERS, buffer_tokens=300, seed=s), 32, 20) for s in (0, 0, 1))
    assert all(torch.equal(a[L], b[L]) for L in LAYERS)
    assert not torch.equal(a[1], c[1])


def test_more_tokens_than_the_corpus_runs_it_again_with_a_warning(gpt2_tiny, texts, reference):
    model, tok = gpt2_tiny
    n_tokens = len(reference[LAYERS[0]])
    store = ActivationStore(model, tok, texts[:10], LAYERS, buffer_tokens=128, seed=0)
    with pytest.warns(UserWarning, match="run again in a new order"):
        served(store, 64, 2 * n_tokens // 64)
    assert store.epochs >= 2


def test_the_model_runs_only_as_far_as_training_needs(gpt2_tiny, texts, reference):
    model, tok = gpt2_tiny
    store = ActivationStore(model, tok, texts, LAYERS, batch_size=4, buffer_tokens=512, seed=0)
    served(store, 64, 5)
    assert 320 <= store.tokens_run < 320 + 4 * 130, "the model stops once it has produced the tokens asked for"


def test_memory_is_bounded_by_the_buffer_not_the_corpus(gpt2_tiny, texts, monkeypatch):
    """The store allocates its buffers once, sized by buffer_tokens (plus one forward batch), whatever the corpus size."""
    model, tok = gpt2_tiny
    sizes = []
    real_empty = torch.empty

    def recording_empty(*shape, **kw):
        t = real_empty(*shape, **kw)
        sizes.append(t.numel())
        return t

    monkeypatch.setattr(torch, "empty", recording_empty)
    for corpus in (texts[:20], texts * 3):
        sizes.clear()
        store = ActivationStore(model, tok, corpus, LAYERS, batch_size=4, buffer_tokens=200, seed=0)
        served(store, 16, 30)
        assert max(sizes) == (200 + 4 * (128 + 2)) * store.d_model, sizes
