"""Causal effects of SAE features (monosem.causal): ablation at layer L on the tiny GPT-2 and the bundled encoder,
the permutation test over words, and the logit lens."""

import copy

import numpy as np
import pandas as pd
import pytest
import torch
from scipy.special import log_softmax

from monosem.activations import encode_examples, run_layers
from monosem.causal import ablation_output_change, causal_effects, concept_token_rank, logit_lens, word_first_tokens
from monosem.config import MonosemError
from monosem.dataset import CATEGORIES
from monosem.fidelity import lm_logits
from monosem.model import is_causal_lm
from monosem.sae.standard import StandardSAE
from monosem.testing import small_concepts, synthetic_activations

MODELS = ["gpt2_tiny", "bundled"]
LAYER = 1


def model_and_tokenizer(request, name):
    """(model, tokenizer) of a session fixture: the tiny GPT-2 or the bundled encoder."""
    value = request.getfixturevalue(name)
    return value if name == "gpt2_tiny" else value[1:]


def sentences_of(concepts, per_category=1, per_word=4, kind="neutral"):
    """Rows of the first ``per_category`` words of every category, ``per_word`` sentences each in frames of ``kind``."""
    rows = small_concepts(concepts, per_category)
    return rows[rows.frame_kind == kind].groupby("word", sort=False).head(per_word).reset_index(drop=True)


def random_sae(d, d_sae=4, seed=0):
    return StandardSAE(d, d_sae, seed=seed).eval()


def residual_scale(model, tok, sentences):
    """Mean norm of the residual stream at LAYER over the sentences' tokens."""
    enc = encode_examples(tok, sentences)
    ids = torch.nn.utils.rnn.pad_sequence([torch.tensor(e.ids) for e in enc], batch_first=True)
    attn = torch.nn.utils.rnn.pad_sequence([torch.ones(len(e.ids), dtype=torch.long) for e in enc], batch_first=True)
    h = run_layers(model, ids, attn, [LAYER])[0][LAYER]
    return h[attn.bool()].norm(dim=-1).mean().item()


# -- ablation_output_change -----------------------------------------------------------------------------------


@pytest.mark.parametrize("name", MODELS)
def test_a_silent_feature_or_a_zero_decoder_row_changes_nothing(request, name, concepts):
    model, tok = model_and_tokenizer(request, name)
    rows = sentences_of(concepts, per_word=2)
    d = model.config.hidden_size
    sae = random_sae(d)
    with torch.no_grad():
        sae.b_enc[0] = -1e6  # never fires
        sae.W_enc[:, 1:3] = 0.0
        sae.b_enc[1:3] = 1.0  # features 1 and 2 fire everywhere with activation 1
        sae.W_dec[1] = torch.randn(d, generator=torch.Generator().manual_seed(0)) * residual_scale(model, tok, rows.sentence[:4].tolist()) / d**0.5
        sae.W_dec[2] = 0.0  # fires, but writes nothing: the ablated forward runs and must reproduce the clean one bit for bit
    change = ablation_output_change(model, tok, sae, LAYER, rows.sentence.tolist(), [0, 1, 2], batch_size=8)
    assert change.shape == (len(rows), 3)
    assert (change[:, 0] == 0).all() and (change[:, 2] == 0).all(), "a no-op ablation must leave the output exactly as it was"
    assert (change[:, 1] > 1e-6).all(), "removing a direction of residual size at every token must change the output"
    table = causal_effects(change, rows, ["colors", "colors", "colors"], n_perm=200)
    assert table.causal_effect[0] == 0 and table.causal_p[0] == 1.0 and table.causal_p[2] == 1.0


@pytest.mark.parametrize("name", MODELS)
def test_the_change_is_quadratic_for_small_ablations(request, name, concepts):
    """KL and 1 - cos both grow with the square of a small edit; |delta|-like measures would grow linearly."""
    model, tok = model_and_tokenizer(request, name)
    sentences = sentences_of(concepts).sentence[:6].tolist()
    d = model.config.hidden_size
    sae = random_sae(d, 2)
    direction = torch.randn(d, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        sae.W_enc.zero_()
        sae.b_enc.fill_(1.0)
        sae.W_dec[0] = direction / direction.norm() * 1e-2 * residual_scale(model, tok, sentences)
        sae.W_dec[1] = 2 * sae.W_dec[0]
    change = ablation_output_change(model, tok, sae, LAYER, sentences, [0, 1])
    np.testing.assert_allclose(change[:, 1] / change[:, 0], 4.0, rtol=0.05)


def independent_change(model, tok, sae, layer, sentence, feature):
    """The same quantity for one sentence, written differently: no batching or padding, special positions found from
    the tokenizer's special ids, the edit h - f W_dec in float64 with a float64 copy of the SAE, the change in numpy."""
    ids = tok(sentence)["input_ids"]
    if is_causal_lm(model) and ids[0] != tok.bos_token_id:
        ids = [tok.bos_token_id] + ids
    ordinary = torch.tensor([i not in tok.all_special_ids for i in ids])
    sae64 = copy.deepcopy(sae).double()
    blocks = model.h if hasattr(model, "h") else model.encoder.layer

    def replace(module, args, output):
        h = output[0] if isinstance(output, tuple) else output
        x = h[0].double()  # [t, d]
        f = sae64.encode(x)[:, feature]  # [t]
        edited = torch.where(ordinary[:, None], x - f[:, None] * sae64.W_dec[feature], x).float()[None]
        return (edited,) + tuple(output[1:]) if isinstance(output, tuple) else edited

    with torch.no_grad():
        clean = model(input_ids=torch.tensor([ids])).last_hidden_state[0].double().numpy()
        handle = blocks[layer].register_forward_hook(replace)
        try:
            ablated = model(input_ids=torch.tensor([ids])).last_hidden_state[0].double().numpy()
        finally:
            handle.remove()
    keep = ordinary.numpy()
    clean, ablated = clean[keep], ablated[keep]
    if is_causal_lm(model):
        unembed = model.get_input_embeddings().weight.detach().double().numpy()
        log_p, log_q = log_softmax(clean @ unembed.T, axis=-1), log_softmax(ablated @ unembed.T, axis=-1)
        return float((np.exp(log_p) * (log_p - log_q)).sum(-1).mean())
    cos = (clean * ablated).sum(-1) / np.linalg.norm(clean, axis=-1) / np.linalg.norm(ablated, axis=-1)
    return float((1 - cos).mean())


@pytest.mark.parametrize("name", MODELS)
def test_the_ablation_matches_an_independent_recomputation(request, name, concepts):
    model, tok = model_and_tokenizer(request, name)
    rows = sentences_of(concepts)
    sentences = [rows.sentence[0], "Seven green apples fell from the old tree in the quiet garden today."]
    d = model.config.hidden_size
    sae = random_sae(d, 3, seed=1)
    scale = residual_scale(model, tok, sentences)
    with torch.no_grad():
        sae.W_enc.mul_(50.0 / scale)  # pre-activations of order 1: fires on some tokens only
        sae.b_enc.zero_()
        sae.W_dec.mul_(scale / sae.W_dec.norm(dim=1, keepdim=True))
    change = ablation_output_change(model, tok, sae, LAYER, sentences, [2, 0], batch_size=2)  # padded: lengths differ
    for s, sentence in enumerate(sentences):
        for j, feature in enumerate([2, 0]):
            expected = independent_change(model, tok, sae, LAYER, sentence, feature)
            assert expected > 1e-4, "the test needs a feature that changes the output"
            assert change[s, j] == pytest.approx(expected, rel=1e-5), f"sentence {s}, feature {feature}"


@pytest.mark.parametrize("name", MODELS)
def test_a_feature_of_one_category_has_its_causal_effect_there(request, name, concepts):
    """Give the colour words' tokens a shared embedding direction, read it with the encoder at LAYER, and ablate."""
    model, tok = model_and_tokenizer(request, name)
    model = copy.deepcopy(model)
    rows = sentences_of(concepts, per_category=3)
    enc = encode_examples(tok, rows.sentence.tolist(), list(zip(rows.word_start, rows.word_end)))
    is_colour = rows.concept.eq("colors").to_numpy()
    colour_tokens = sorted({i for e, c in zip(enc, is_colour) if c for i, w in zip(e.ids, e.in_word) if w})
    emb = model.get_input_embeddings().weight
    d = emb.shape[1]
    u = torch.randn(d, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        emb[colour_tokens] += 3 * emb.norm(dim=1).mean() * u / u.norm()
    ids = torch.nn.utils.rnn.pad_sequence([torch.tensor(e.ids) for e in enc], batch_first=True)
    attn = torch.nn.utils.rnn.pad_sequence([torch.ones(len(e.ids), dtype=torch.long) for e in enc], batch_first=True)
    kept = torch.nn.utils.rnn.pad_sequence([~torch.tensor(e.special) for e in enc], batch_first=True)
    target = torch.nn.utils.rnn.pad_sequence([torch.tensor(e.in_word) & bool(c) for e, c in zip(enc, is_colour)], batch_first=True)
    h = run_layers(model, ids, attn, [LAYER])[0][LAYER]
    w = h[target].mean(0) - h[kept & ~target].mean(0)
    on, off = h[target] @ w, h[kept & ~target] @ w
    assert on.min() > off.max(), "precondition: the colour-word tokens must be separable at LAYER"
    sae = random_sae(d, 2)
    with torch.no_grad():
        sae.W_enc[:, 0] = w
        sae.b_enc[0] = -(on.min() + off.max()) / 2  # fires on the colour words' tokens only
        sae.W_dec[0] = u / u.norm() * h[kept].norm(dim=-1).mean()
    change = ablation_output_change(model, tok, sae, LAYER, rows.sentence.tolist(), [0])[:, 0]
    assert (change[is_colour] > 0).all() and (change[~is_colour] == 0).all()
    table = causal_effects(np.stack([change, change], 1), rows, ["colors", "animals"], n_perm=1000)
    assert table.causal_effect[0] > 0 and table.causal_p[0] < 0.05
    assert table.causal_effect[1] < 0 and table.causal_p[1] > 0.5


def test_inputs_are_checked(gpt2_tiny):
    model, tok = gpt2_tiny
    sae = random_sae(model.config.hidden_size)
    with pytest.raises(MonosemError, match="outside the SAE"):
        ablation_output_change(model, tok, sae, LAYER, ["a b"], [4])
    with pytest.raises(MonosemError, match="valid: 0..5"):
        ablation_output_change(model, tok, sae, 6, ["a b"], [0])


# -- causal_effects ----------------------------------------------------------------------------------------------


def test_causal_effect_is_the_difference_of_word_means():
    df, acts = synthetic_activations(n_words=4, n_sent=3, n_units=5, seed=0)
    extra = df[df.word == "colors_0"]
    df = pd.concat([df, extra], ignore_index=True)  # colors_0 gets 6 sentences, and still counts as one word
    change = np.concatenate([acts, acts[extra.index] + 5.0]).astype(np.float64)
    top = ["colors", "numbers", "animals", "", "tools"]
    table = causal_effects(change, df, top, n_perm=100, features=[10, 11, 12, 13, 14])
    words = sorted(set(df.word))
    word_means = np.array([change[(df.word == w).to_numpy()].mean(0) for w in words])  # [n_words, n_features]
    category = np.array([df.concept[df.word == w].iloc[0] for w in words])
    for j, c in enumerate(top):
        if c:
            expected = word_means[category == c, j].mean() - word_means[category != c, j].mean()
            assert table.causal_effect[j] == pytest.approx(expected, rel=1e-12)
    assert table.feature.tolist() == [10, 11, 12, 13, 14] and np.isnan(table.causal_effect[3]) and np.isnan(table.causal_p[3])
    with pytest.raises(MonosemError, match="not among the categories"):
        causal_effects(change, df, ["colours"] * 5)


def test_causal_p_matches_the_exact_permutation_distribution():
    """Six words in three categories: all 90 label arrangements can be enumerated."""
    from itertools import permutations

    labels = np.array(["colors", "colors", "animals", "animals", "tools", "tools"])
    values = np.array([[0.9, 0.1], [0.4, 0.5], [0.5, 0.2], [0.1, 0.3], [0.2, 0.6], [0.0, 0.4]])
    df = pd.DataFrame({"word": [f"w{i}" for i in range(6)], "concept": labels})
    table = causal_effects(values, df, ["colors", "animals"], n_perm=20000, seed=3)
    arrangements = {tuple(p) for p in permutations(labels)}
    for j, c in enumerate(["colors", "animals"]):
        def effect(lab, c=c, j=j):
            return values[lab == c, j].mean() - values[lab != c, j].mean()

        exact = np.mean([effect(np.array(a)) >= effect(labels) - 1e-12 for a in arrangements])
        assert table.causal_p[j] == pytest.approx(exact, abs=0.01)


def test_causal_effects_detect_a_category_and_are_calibrated_under_the_null():
    df, acts = synthetic_activations(n_words=10, n_sent=3, n_units=2000, seed=1)  # word effects: a word's sentences correlate
    rng = np.random.default_rng(0)
    top = rng.choice(CATEGORIES, size=acts.shape[1])
    table = causal_effects(acts, df, top, n_perm=1000, seed=1)
    share = (table.causal_p < 0.05).mean()
    assert 0.03 <= share <= 0.07, f"type-I rate {share:.3f} at alpha 0.05 under an exchangeable null"
    boosted = acts[:, :20] + 2.0 * df.concept.eq("emotions").to_numpy()[:, None]
    hit = causal_effects(boosted, df, ["emotions"] * 20, n_perm=1000)
    assert (hit.causal_effect > 0).all() and (hit.causal_p < 0.05).all()


# -- the logit lens ----------------------------------------------------------------------------------------------


def test_logit_lens_finds_a_token_written_by_the_decoder(gpt2_tiny, concepts):
    model, tok = gpt2_tiny
    emb = model.get_input_embeddings().weight.detach()
    d = emb.shape[1]
    red = int(word_first_tokens(tok, ["red"])[0])
    words = small_concepts(concepts, per_category=5)
    colours = words[words.concept == "colors"].word.unique().tolist()
    sae = random_sae(d, 4)
    with torch.no_grad():
        sae.W_dec[0] = emb[red]
        sae.W_dec[1] = -emb[red]
        sae.W_dec[2] = emb[torch.as_tensor(word_first_tokens(tok, colours))].mean(0)
    for final_norm in (True, False):
        lens = logit_lens(model, sae, [0, 1], tok, k=5, final_norm=final_norm)
        assert lens[0]["feature"] == 0 and lens[0]["top_tokens"][0] == " red" and " red" in lens[1]["bottom_tokens"]
        assert lens[0]["top_scores"] == sorted(lens[0]["top_scores"], reverse=True) and len(lens[1]["bottom_scores"]) == 5
    rank = concept_token_rank(model, sae, [2, 2, 0], tok, words, ["colors", "animals", ""])
    assert rank[0] > 0.9 and rank[1] < 0.5 and np.isnan(rank[2])


def test_logit_lens_applies_the_final_layer_norm(gpt2_tiny):
    """A row along the all-ones direction is removed by the LayerNorm's centring: it writes nothing to the logits."""
    model, tok = gpt2_tiny
    d = model.config.hidden_size
    sae = random_sae(d, 1)
    with torch.no_grad():
        sae.W_dec[0] = 1.0
    assert logit_lens(model, sae, [0], tok, k=3)[0]["top_scores"] == pytest.approx([0.0] * 3, abs=1e-6)
    raw = lm_logits(model, sae.W_dec.detach())[0]
    assert logit_lens(model, sae, [0], tok, k=3, final_norm=False)[0]["top_scores"] == pytest.approx(raw.topk(3).values.tolist(), rel=1e-6)


def test_the_logit_lens_needs_a_causal_lm(bundled, concepts):
    _, model, tok = bundled
    sae = random_sae(model.config.hidden_size)
    assert np.isnan(concept_token_rank(model, sae, [0, 1], tok, concepts, ["colors", "numbers"])).all()
    with pytest.raises(MonosemError, match="defined only for causal LMs"):
        logit_lens(model, sae, [0], tok)
