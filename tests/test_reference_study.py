import re

import numpy as np
import pytest
import torch

from monosem.config import MonosemError
from monosem.dataset import CONCEPTS
from monosem.reference_study import (
    KEYWORDS,
    SENTENCE_CONCEPTS,
    SENTENCES,
    keyword_heatmap,
    keyword_rows,
    reference_run,
    sentence_means,
    train_reference_sae,
)
from monosem.sae.registry import make_sae

KEYWORD_CONCEPT = dict(zip(KEYWORDS, ["numbers"] * 4 + ["emotions"] * 3 + ["actions"] * 3 + ["colors"] * 3))
LINE = re.compile(r"^Layer \d+: found (\d+) monosemantic features, indices \[[\d, ]*\], average selectivity \d\.\d{3}$")


def test_sentences_match_the_reported_facts():
    assert len(SENTENCES) == 12 and SENTENCE_CONCEPTS == tuple(c for c in CONCEPTS for _ in range(3))
    found, lost = keyword_rows(SENTENCES, KEYWORDS, strip_punctuation=True)
    assert list(found) == list(KEYWORDS) and lost == {}
    for keyword, idx in found.items():  # every keyword sits in a sentence of its own concept
        assert {SENTENCE_CONCEPTS[i] for i in idx} == {KEYWORD_CONCEPT[keyword]}, keyword


def test_split_matching_loses_the_sentence_final_keywords():
    found, lost = keyword_rows(SENTENCES, KEYWORDS)
    assert lost == {"2024": "2024.", "angry": "angry.", "blue": "blue.", "red": "red."}
    assert len(found) == 9 and set(found) | set(lost) == set(KEYWORDS)
    assert [k for k in found if KEYWORD_CONCEPT[k] == "colors"] == ["green"]  # the only colour row


def test_keyword_rows_by_hand():
    sentences = ["a blue, car", "Blue sky", "it is blue", "red!"]
    found, lost = keyword_rows(sentences, ["blue", "red", "pink"])
    assert found == {"blue": [2]} and lost == {"red": "red!"}  # case-sensitive; 'pink' appears nowhere
    found, lost = keyword_rows(sentences, ["blue", "red", "pink"], strip_punctuation=True)
    assert found == {"blue": [0, 2], "red": [3]} and lost == {}


def _hidden_mean(model, ids, layer):
    out = model(input_ids=torch.tensor([ids]), output_hidden_states=True)
    return out.hidden_states[layer + 1][0]  # [seq, d_model]


@torch.no_grad()
def test_sentence_means_keep_position_zero_and_add_no_bos(gpt2_tiny):
    model, tok = gpt2_tiny
    means = sentence_means(model, tok, SENTENCES[:3], [0, 2])
    assert set(means) == {0, 2} and means[0].shape == (3, model.config.n_embd)
    for i, s in enumerate(SENTENCES[:3]):
        ids = tok(s)["input_ids"]
        assert ids[0] != tok.bos_token_id
        for L in (0, 2):
            hidden = _hidden_mean(model, ids, L)
            torch.testing.assert_close(means[L][i], hidden.mean(0))
            assert not torch.allclose(means[L][i], hidden[1:].mean(0), atol=1e-4), "position 0 must be in the mean"
            with_bos = _hidden_mean(model, [tok.bos_token_id] + ids, L)
            assert not torch.allclose(means[L][i], with_bos.mean(0), atol=1e-4), "no BOS may be prepended"


@torch.no_grad()
def test_sentence_means_keep_cls_and_sep(bundled):
    _, model, tok = bundled
    means = sentence_means(model, tok, SENTENCES[9:10], [1])
    ids = tok(SENTENCES[9])["input_ids"]
    assert ids[0] == tok.cls_token_id and ids[-1] == tok.sep_token_id
    hidden = _hidden_mean(model, ids, 1)
    torch.testing.assert_close(means[1][0], hidden.mean(0))
    assert not torch.allclose(means[1][0], hidden[1:-1].mean(0), atol=1e-4)


def _by_hand(means, steps, seed=0):
    """The reference SAE written out: d/2 ReLU features, MSE + 0.1 * mean|f|, Adam lr 1e-3, full batch."""
    sae = make_sae("standard", means.shape[1], means.shape[1] // 2, False, seed)
    params = [sae.W_enc, sae.b_enc, sae.W_dec, sae.b_dec]
    opt = torch.optim.Adam(params, lr=1e-3)
    for _ in range(steps):
        f = torch.relu(means @ sae.W_enc + sae.b_enc)
        loss = ((f @ sae.W_dec + sae.b_dec - means) ** 2).mean() + 0.1 * f.abs().mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
    return sae


def test_reference_sae_is_half_width_and_takes_exactly_ten_full_batch_steps():
    means = torch.randn(12, 64, generator=torch.Generator().manual_seed(1)) + 0.5
    sae, history = train_reference_sae(means, seed=0)
    assert sae.d_in == 64 and sae.d_sae == 32
    assert [h["step"] for h in history] == list(range(1, 11)) and history[-1]["loss"] < history[0]["loss"]
    for name in ("W_enc", "b_enc", "W_dec", "b_dec"):
        torch.testing.assert_close(getattr(sae, name), getattr(_by_hand(means, 10), name), rtol=1e-6, atol=1e-7)
    for steps in (9, 11):
        assert not torch.allclose(sae.W_dec, _by_hand(means, steps).W_dec, rtol=1e-6, atol=1e-7), steps
    with pytest.raises(MonosemError, match="steps"):
        train_reference_sae(means, steps=0)


def test_heatmap_rows_are_sentence_means_of_the_matched_keywords():
    feats = np.arange(12 * 4, dtype=float).reshape(12, 4)
    hm = keyword_heatmap(feats, {"a": [0, 2], "b": [5]}, [3, 1])
    assert hm.index.tolist() == ["a", "b"] and hm.columns.tolist() == [3, 1]
    np.testing.assert_allclose(hm.to_numpy(), [[(3 + 11) / 2, (1 + 9) / 2], [23, 21]])


def _check_run(result, layers, d_model):
    assert list(result.layers) == layers and len(result.lines) == len(layers)
    assert list(result.lost) == ["2024", "angry", "blue", "red"] and len(result.found_stripped) == 13
    for L, r in result.layers.items():
        assert r.sae.d_sae == d_model // 2 and len(r.history) == 10 and r.means.shape == (12, d_model)
        assert r.feats.shape == (12, d_model // 2) and (r.feats >= 0).all()
        scores = r.scores
        assert ((scores >= 0) & (scores <= 1)).all()
        match = LINE.match(r.line)
        assert match and r.line.startswith(f"Layer {L}: ")
        assert int(match.group(1)) == int((scores > 0.6).sum()) == r.summary["n_monosemantic"]
        var = r.feats.double().var(0, correction=0)
        assert len(r.top_features) == 8 and var[r.top_features].min() >= var.sort(descending=True).values[7]
        assert r.heatmap.shape == (9, 8) and r.heatmap.index.tolist() == list(result.found)
        assert "green" in r.heatmap.index and "blue" not in r.heatmap.index and r.heatmap_stripped.shape == (13, 8)
        np.testing.assert_allclose(r.heatmap.loc["green"].to_numpy(), r.feats[9, r.top_features].numpy(), rtol=1e-6)


def test_reference_run_on_tiny_gpt2_prints_nothing_and_is_seeded(gpt2_tiny, capfd):
    model, tok = gpt2_tiny
    capfd.readouterr()
    result = reference_run(model, tok, [0, 3])
    assert capfd.readouterr() == ("", "")
    _check_run(result, [0, 3], model.config.n_embd)
    again = reference_run(model, tok, [0, 3])
    assert again.lines == result.lines and torch.equal(again.layers[3].feats, result.layers[3].feats)
    other = reference_run(model, tok, [3], seed=1)
    assert not torch.equal(other.layers[3].sae.W_enc, result.layers[3].sae.W_enc)


def test_reference_run_on_the_bundled_model(bundled, capfd):
    _, model, tok = bundled
    capfd.readouterr()
    result = reference_run(model, tok, [0, 1, 2, 3])
    assert capfd.readouterr() == ("", "")
    _check_run(result, [0, 1, 2, 3], model.config.hidden_size)
