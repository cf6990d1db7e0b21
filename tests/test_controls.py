import hashlib
import socket
from typing import Any

import pytest
import torch

import monosem.cache
from monosem.activations import extract_concept_activations
from monosem.cache import concept_key, load_or_extract_concepts
from monosem.config import MonosemError
from monosem.controls import is_random_control, load_random_model, random_control_caches, random_control_spec
from monosem.model import load_model, resolve_model
from monosem.paths import model_paths
from monosem.testing import random_gpt2, small_concepts

BACKGROUND = ["The river ran past the old mill and into the valley below.", "Prices rose again in the spring, and the shops stayed open late."]


@pytest.fixture
def no_network(monkeypatch):
    """Any socket connection fails (HF_HUB_OFFLINE=1 is set by conftest as well)."""

    def refuse(*args, **kwargs):
        raise AssertionError("the random-weight control must not touch the network")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)


@pytest.fixture(scope="module")
def tiny_folder(tmp_path_factory):
    """A tiny GPT-2 (random weights, seed 7) and the real GPT-2 BPE saved with save_pretrained: the 'real' model."""
    folder = tmp_path_factory.mktemp("models") / "tiny-gpt2"
    model, tok = random_gpt2(n_layer=4, n_embd=64, n_head=4, n_positions=128, seed=7)
    model.save_pretrained(folder)
    tok.save_pretrained(folder)
    return folder


def _digest(model):
    digest = hashlib.sha256()
    for name, tensor in model.state_dict().items():
        digest.update(name.encode())
        digest.update(tensor.contiguous().numpy().tobytes())
    return digest.hexdigest()


def _config(model: Any) -> dict:
    return model.config.to_dict()


def _weights_differ(a, b):
    sa, sb = a.state_dict(), b.state_dict()
    assert sa.keys() == sb.keys() and all(sa[k].shape == sb[k].shape for k in sa)
    matrices = [k for k in sa if sa[k].ndim >= 2]
    return bool(matrices) and all(not torch.equal(sa[k], sb[k]) for k in matrices)


def test_control_spec_has_its_own_name_revision_and_folders(tmp_path, tiny_folder, concepts):
    spec = resolve_model(str(tiny_folder))
    control = random_control_spec(spec, 3)
    assert control.used == "tiny-gpt2 [random weights, seed 3]" and control.path == spec.path and control.asked == spec.asked
    assert control.revision == f"random-init:3:{spec.revision}" and is_random_control(control) and not is_random_control(spec)
    assert control.slug != spec.slug and random_control_spec(spec, 4).slug != control.slug
    assert model_paths(tmp_path, control.used).activations != model_paths(tmp_path, spec.used).activations
    df = small_concepts(concepts, 1)
    assert concept_key(control, df, [0])[0] != concept_key(spec, df, [0])[0]
    with pytest.raises(MonosemError, match="already a random-weight control"):
        random_control_spec(control, 3)


def test_random_tiny_gpt2_is_seeded_bytes_and_leaves_the_callers_rng_alone(tiny_folder, no_network):
    spec = resolve_model(str(tiny_folder))
    real, _ = load_model(spec)
    rng = torch.get_rng_state()
    a, tok = load_random_model(spec, 0)
    assert torch.equal(torch.get_rng_state(), rng)
    b, _ = load_random_model(random_control_spec(spec, 0), 0)  # a control spec names the same config
    c, _ = load_random_model(spec, 1)
    assert _digest(a) == _digest(b) and _digest(a) != _digest(c)
    assert type(a) is type(real) and _config(a) == _config(real) and not a.training
    assert all(p.dtype == torch.float32 for p in a.parameters())
    assert _weights_differ(a, real) and _weights_differ(a, c)
    assert tok(" green")["input_ids"] == [4077]  # the real GPT-2 BPE
    # the tiny 'real' model is itself GPT2Model(config) under manual_seed(7): the control at seed 7 is that network
    assert _digest(load_random_model(spec, 7)[0]) == _digest(real)


def test_random_bundled_model_has_the_real_architecture_not_its_weights(bundled, no_network):
    spec, real, real_tok = bundled
    model, tok = load_random_model(spec, 0)
    assert type(model) is type(real) and _config(model) == _config(real)
    assert _weights_differ(model, real)
    assert tok("blue sky")["input_ids"] == real_tok("blue sky")["input_ids"]


def test_control_caches_are_keyed_apart_reused_and_hold_random_activations(tmp_path, tiny_folder, no_network, monkeypatch, concepts):
    spec = resolve_model(str(tiny_folder))
    df = small_concepts(concepts, 1)
    data = tmp_path / "data"
    mp, cached, background = random_control_caches(data, spec, df, [0, 2], BACKGROUND, seed=0, batch_size=16)
    control = random_control_spec(spec, 0)
    assert mp == model_paths(data, control.used) and cached.folder.parent == background.folder.parent == mp.activations
    assert cached.meta["key_inputs"]["model"] == control.used and cached.meta["key_inputs"]["revision"] == control.revision
    assert background.texts() == BACKGROUND and background.layers == [0, 2]
    real_mp = model_paths(data, spec.used)
    real = load_or_extract_concepts(real_mp, spec, df, [0, 2], 16, model_and_tokenizer=load_model(spec))
    assert real.folder.parent != cached.folder.parent and real.key != cached.key
    direct = extract_concept_activations(*load_random_model(spec, 0), df, [0], progress=False, mlp=False)
    torch.testing.assert_close(cached.word(0), direct["L0.mean"])  # the cache holds the random model's activations
    assert not torch.allclose(cached.word(0), real.word(0))

    def no_extraction(*args, **kwargs):
        raise AssertionError("the control's caches should have been reused")

    monkeypatch.setattr(monosem.cache, "extract_concept_activations", no_extraction)
    monkeypatch.setattr(monosem.cache, "extract_corpus_activations", no_extraction)
    _, again, again_bg = random_control_caches(data, spec, df, [0, 2], BACKGROUND, seed=0, batch_size=16)
    assert again.folder == cached.folder and again_bg.folder == background.folder
    with pytest.raises(AssertionError, match="reused"):  # another seed is another control: new caches
        random_control_caches(data, spec, df, [0, 2], BACKGROUND, seed=1, batch_size=16)


def test_control_caches_of_the_bundled_model(tmp_path, bundled, no_network, concepts):
    spec, real, real_tok = bundled
    df = small_concepts(concepts, 1).head(16)
    mp, cached, background = random_control_caches(tmp_path / "data", spec, df, [0, 1], BACKGROUND[:1], seed=0, batch_size=16)
    assert mp.slug == "sentence-transformers--all-MiniLM-L6-v2--random--weights--seed--0"
    assert cached.word(1).shape == (16, real.config.hidden_size) and background.n_tokens > 0
    real_acts = extract_concept_activations(real, real_tok, df, [1], progress=False, mlp=False)
    assert not torch.allclose(cached.word(1), real_acts["L1.mean"])  # not the real weights' activations
