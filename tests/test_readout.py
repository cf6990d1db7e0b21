"""Concept readout of residual edits (monosem.readout): the log-mass, the token ids, and each edit on the tiny GPT-2
(one SmolLM2 test for the Llama layout's MLP weight)."""

import numpy as np
import pandas as pd
import pytest
import torch

from monosem.activations import encode_examples, length_batches, pad_batch, run_layers
from monosem.config import MonosemError
from monosem.fidelity import lm_logits
from monosem.layouts import unembedding
from monosem.model import get_blocks
from monosem.readout import (
    READOUT_MAX_LENGTH,
    ablated_neurons,
    clean_readout,
    concept_edit_effects,
    concept_log_mass,
    concept_token_ids,
    kind_contrast,
    mlp_output_weight,
)
from monosem.sae.standard import StandardSAE

WORDS = {
    "colors": ["red", "blue", "green", "yellow", "purple", "orange", "pink", "brown"],
    "animals": ["dog", "cat", "horse", "cow", "sheep", "lion", "tiger", "fox"],
    "foods": ["bread", "cheese", "rice", "soup", "cake", "pie", "apple", "banana"],
}
TEXTS = ["The old man walked slowly along the river and looked at the boats.",
         "In the morning she opened the window and listened to the rain on the roof.",
         "They built a small house near the forest."]
LAYER = 1


def kept_batch(tok, texts):
    """Padded ids, attention mask and keep mask [b, t] of ``texts`` as the readout's clean run builds them (one batch, rows by length)."""
    enc = encode_examples(tok, texts, max_length=READOUT_MAX_LENGTH)
    return pad_batch(enc, length_batches([len(e.ids) for e in enc], len(texts))[0], tok.pad_token_id)[:3]


def block_output(model, layer, ids, attn):
    """Block ``layer``'s output [b, t, d] of one forward (with whatever hooks are open)."""
    return run_layers(model, ids, attn, [layer])[0][layer]


def firing_sae(model, tok, texts, d_sae=3, seed=1):
    """A ReLU SAE whose features fire on some positions only (pre-activations of order 1) and write rows of residual size."""
    ids, attn, keep = kept_batch(tok, texts)
    h = block_output(model, LAYER, ids, attn)[keep]
    scale = h.norm(dim=-1).mean()
    sae = StandardSAE(model.config.hidden_size, d_sae, seed=seed).eval()
    with torch.no_grad():
        sae.W_enc.mul_(30.0 / scale)
        sae.b_enc.zero_()
        sae.W_dec.mul_(scale / sae.W_dec.norm(dim=1, keepdim=True))
    return sae, h


def test_concept_log_mass_is_the_log_of_the_summed_softmax():
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(6, 50, generator=g) * 4
    ids = {"a": torch.tensor([1, 2, 3]), "b": torch.tensor([10]), "c": torch.arange(20, 35)}
    p = torch.softmax(logits.double(), -1)
    direct = torch.stack([p[:, v].sum(-1).log() for v in ids.values()], -1)
    torch.testing.assert_close(concept_log_mass(logits, ids).double(), direct, rtol=0, atol=1e-5)
    far = logits.clone()
    far[:, 10] = -300.0  # e^-300 underflows in a float32 softmax: the log-mass must stay finite
    mass = concept_log_mass(far, ids)
    assert torch.isfinite(mass).all() and (mass[:, 1] < -250).all()
    torch.testing.assert_close(concept_log_mass(logits + 50.0, ids), concept_log_mass(logits, ids), rtol=0, atol=1e-4)


def test_concept_token_ids_keep_whole_words_owned_by_one_concept(gpt2_tiny):
    _, tok = gpt2_tiny
    ids = concept_token_ids(tok, {"colors": ["red", "beige", "blue"], "tools": ["saw", "drill"], "both": ["red", "rice"]})
    names = {c: set(tok.convert_ids_to_tokens(v.tolist())) for c, v in ids.items()}
    assert names["colors"] == {"Ġblue", "ĠBlue"}, "' red' belongs to two concepts and ' beige' is two tokens (' be' + 'ige')"
    assert names["tools"] == {"Ġdrill", "ĠDrill"}, "' saw' is mostly the past of 'see' and is left out by default"
    assert names["both"] == {"Ġrice", "ĠRice"}
    fragments = concept_token_ids(tok, {"colors": ["beige"]}, whole_words=False)
    assert tok.convert_ids_to_tokens(fragments["colors"].tolist()) == ["Ġbe", "ĠBe"]
    with pytest.raises(MonosemError, match=r"\['colors', 'both'\] have no token"):
        concept_token_ids(tok, {"colors": ["red", "beige"], "both": ["red"], "foods": ["rice"]})


def test_steering_along_a_concept_unembedding_raises_that_concept_and_a_random_direction_does_much_less(gpt2_tiny):
    """At the last block, the mean unembedding row of a concept's ids is the direction the logits read most as that concept."""
    model, tok = gpt2_tiny
    ids = concept_token_ids(tok, WORDS)
    last = len(get_blocks(model)) - 1
    emb = unembedding(model).detach()
    sae = StandardSAE(model.config.hidden_size, 3, seed=0).eval()
    with torch.no_grad():
        sae.b_enc.fill_(-1e6)  # never fires: only the steering rows move anything
        for i, concept in enumerate(WORDS):
            sae.W_dec[i] = emb[ids[concept]].mean(0)
    clean = clean_readout(model, tok, TEXTS, [last], ids)
    batch = clean.batches[0]
    with torch.inference_mode():  # the blocked log-normaliser of the readout gives the log-mass of the whole logit rows
        final = model(input_ids=batch.ids, attention_mask=batch.attn).last_hidden_state[batch.keep]
        torch.testing.assert_close(batch.log_mass, concept_log_mass(lm_logits(model, final), ids), rtol=0, atol=1e-4)
    alpha = float(clean.residual_norms(last).median())
    table = concept_edit_effects(model, tok, last, TEXTS, sae, [0, 1, 2], list(WORDS), [], [], ids, n_random=3, clean=clean, steer_norm=alpha)
    steer = table[table.edit == "steer"].set_index("kind")
    concept_rows = steer.loc["SAE feature"]
    np.testing.assert_allclose(concept_rows.mean_norm, alpha, rtol=1e-6)
    assert (concept_rows.n_positions == sum(int(b.keep.sum()) for b in clean.batches)).all()
    for _, row in concept_rows.iterrows():
        deltas = {c: row[f"delta[{c}]"] for c in WORDS}
        assert row.delta_own > 0.1 and max(deltas, key=lambda c: deltas[c]) == row.concept, f"steering towards {row.concept}: {deltas}"
    random_rows = steer.loc["random direction"]
    assert (random_rows.concept.to_numpy() == concept_rows.concept.to_numpy()).all(), "random direction j takes the concept of feature j"
    assert concept_rows.specificity_effect.min() > 3 * random_rows.specificity_effect.abs().max()
    np.testing.assert_allclose(concept_rows.specificity_effect, (concept_rows.delta_own - concept_rows.delta_other) / alpha, rtol=1e-12)


def test_an_edit_that_is_zero_everywhere_changes_nothing(gpt2_tiny):
    model, tok = gpt2_tiny
    ids = concept_token_ids(tok, WORDS)
    d = model.config.hidden_size
    sae = StandardSAE(d, 3, seed=0).eval()
    with torch.no_grad():
        sae.b_enc[0] = -1e6  # never fires
        sae.W_enc[:, 1:] = 0.0
        sae.b_enc[1:] = 1.0  # features 1 and 2 fire everywhere with activation 1
        sae.W_dec[2] = 0.0  # fires, but writes nothing
    table = concept_edit_effects(model, tok, LAYER, TEXTS, sae, [0, 1, 2], ["colors", "animals", "foods"], [], [], ids, n_random=3)
    ablate = table.loc[table.edit == "ablate"]
    delta_columns = ["delta_own", "delta_other"] + [c for c in table.columns if c.startswith("delta[")]
    silent = ablate.loc[ablate.matched_unit.isin([0, 2])]  # the two features and the random directions that copy their norms
    assert len(silent) == 4 and (silent.n_positions == 0).all() and (silent.mean_norm == 0).all()
    assert (silent[delta_columns].to_numpy() == 0).all(), "an edit that is zero everywhere must leave every log-mass exactly as it was"
    assert silent.specificity_effect.isna().all()
    moving = ablate.loc[ablate.matched_unit == 1]
    assert (moving.n_positions > 0).all() and (moving[["delta[colors]", "delta[animals]", "delta[foods]"]].abs().to_numpy() > 0).all()
    steer_of_zero_row = table.loc[(table.edit == "steer") & (table.unit == 2)]
    assert steer_of_zero_row.n_positions.item() == 0, "a zero decoder row gives no steering direction"


def test_neuron_ablation_removes_exactly_the_neurons_write_and_its_norm_is_reported(gpt2_tiny):
    model, tok = gpt2_tiny
    ids, attn, keep = kept_batch(tok, TEXTS)
    neuron = 5
    clean_resid, clean_neurons = run_layers(model, ids, attn, [LAYER], mlp=True)
    w = model.h[LAYER].mlp.c_proj.weight.detach()[neuron]  # GPT-2's Conv1D: weight [d_mlp, d_model], row n is what neuron n writes
    torch.testing.assert_close(mlp_output_weight(model, LAYER)[:, neuron], w)
    with ablated_neurons(model, LAYER, torch.full((len(TEXTS),), neuron), keep):
        ablated = block_output(model, LAYER, ids, attn)
    a = clean_neurons[LAYER][..., neuron]  # [b, t]
    change = ablated - clean_resid[LAYER]
    torch.testing.assert_close(change[keep], -a[keep, None] * w, rtol=1e-4, atol=1e-6)
    assert (change[~keep] == 0).all(), "special and padding positions must be untouched"
    with ablated_neurons(model, LAYER, torch.tensor([neuron, -1, neuron]), keep):
        partial = block_output(model, LAYER, ids, attn)
    assert (partial[1] == clean_resid[LAYER][1]).all(), "neuron -1 leaves its row alone"

    table = concept_edit_effects(model, tok, LAYER, TEXTS, None, [], [], [neuron], ["foods"], concept_token_ids(tok, WORDS), n_random=1)
    row = table[(table.kind == "MLP neuron") & (table.edit == "ablate")].iloc[0]
    active = keep & (a != 0)
    assert row.n_positions == int(active.sum())
    assert row.mean_norm == pytest.approx(float((a[active].abs() * w.norm()).mean()), rel=1e-5)
    random_row = table[(table.kind == "random direction") & (table.edit == "ablate")].iloc[0]
    assert random_row.matched_unit == neuron and random_row.mean_norm == pytest.approx(row.mean_norm, rel=1e-5)


def test_a_random_ablation_has_its_reference_edits_norms_and_a_fixed_direction(gpt2_tiny):
    model, tok = gpt2_tiny
    sae, h = firing_sae(model, tok, TEXTS[:2])
    f = sae.encode(h)[:, 0].detach()
    assert 0 < (f > 0).sum() < len(f), "the test needs a feature that fires on some positions only"
    ids, attn, keep = kept_batch(tok, TEXTS[:2])
    seen = []

    def record(module, args, output):
        seen.append(output.detach().clone())

    handle = get_blocks(model)[LAYER].register_forward_hook(record)  # registered first: sees the output before the edit
    after = get_blocks(model)[LAYER + 1].register_forward_pre_hook(lambda module, args: seen.append(args[0].detach().clone()))
    try:
        clean = clean_readout(model, tok, TEXTS[:2], [LAYER], concept_token_ids(tok, WORDS))
        seen.clear()
        # batch_size 1: one edited forward per edit, in edit order (feature ablation, random ablation, then the two steerings)
        table = concept_edit_effects(model, tok, LAYER, TEXTS[:2], sae, [0], ["colors"], [], [], concept_token_ids(tok, WORDS), n_random=1,
                                     batch_size=1, clean=clean)
    finally:
        handle.remove()
        after.remove()
    ablate = table[table.edit == "ablate"].set_index("kind")
    expected = float((f[f > 0] * sae.W_dec[0].detach().norm()).mean())
    assert ablate.loc["SAE feature"].mean_norm == pytest.approx(expected, rel=1e-5)
    assert ablate.loc["random direction"].mean_norm == pytest.approx(ablate.loc["SAE feature"].mean_norm, rel=1e-5)
    assert ablate.loc["random direction"].n_positions == ablate.loc["SAE feature"].n_positions == int((f > 0).sum())
    f_grid = f.new_zeros(keep.shape).masked_scatter(keep, f)  # [b, t]
    rows_fired = [r for r in range(2) if (f_grid[r] > 0).any()]
    before, edited = seen[2], seen[3]  # the second edited forward: the random ablation, over the rows where the feature fires
    assert len(seen) == 2 * 4 and len(before) == len(rows_fired)
    directions = []
    for k, r in enumerate(rows_fired):
        edit = edited[k] - before[k]  # [t, d]
        fired = f_grid[r] > 0
        torch.testing.assert_close(edit.norm(dim=-1)[fired], f_grid[r][fired] * sae.W_dec[0].norm().detach(), rtol=1e-4, atol=1e-6)
        assert (edit[~fired] == 0).all()
        directions.append(-edit[fired] / edit[fired].norm(dim=-1, keepdim=True))
    directions = torch.cat(directions)
    torch.testing.assert_close(directions, directions[:1].expand_as(directions), rtol=0, atol=1e-4)
    assert directions[0] @ sae.W_dec[0].detach() / sae.W_dec[0].norm() < 0.9, "the random direction is not the feature's"


def test_kind_contrast_finds_a_shifted_kind_and_leaves_out_silent_units():
    rng = np.random.default_rng(0)
    shift = {"SAE feature": 1.0, "MLP neuron": 0.0, "random direction": 0.0}
    table = pd.DataFrame([{"edit": edit, "kind": kind, "specificity_effect": shift[kind] + rng.normal(0, 0.3)}
                          for edit in ("ablate", "steer") for kind in shift for _ in range(8)])
    table.loc[0, "specificity_effect"] = np.nan  # a silent SAE feature
    out = kind_contrast(table, n_resamples=2000).set_index(["edit", "kind_a", "kind_b"])
    sae_vs_neuron = out.loc[("ablate", "SAE feature", "MLP neuron")]
    a = table.specificity_effect[1:8].mean()
    b = table.specificity_effect[8:16].mean()
    assert sae_vs_neuron.n_a == 7 and sae_vs_neuron.difference == pytest.approx(a - b, rel=1e-12)
    assert 0 < sae_vs_neuron.ci_low < sae_vs_neuron.difference < sae_vs_neuron.ci_high and sae_vs_neuron.p < 0.01
    null = out.loc[("steer", "MLP neuron", "random direction")]
    assert null.ci_low < 0 < null.ci_high and null.p > 0.05


def test_the_readout_needs_a_causal_lm(bundled):
    _, model, tok = bundled
    with pytest.raises(MonosemError, match="needs a causal LM"):
        concept_edit_effects(model, tok, LAYER, TEXTS, None, [], [], [0], ["colors"], {"colors": torch.tensor([1])})
    with pytest.raises(MonosemError, match="needs a causal LM"):
        clean_readout(model, tok, TEXTS, [LAYER], {"colors": torch.tensor([1])})


def test_inputs_are_checked(gpt2_tiny):
    model, tok = gpt2_tiny
    ids = concept_token_ids(tok, WORDS)
    sae = StandardSAE(model.config.hidden_size, 3, seed=0).eval()
    with pytest.raises(MonosemError, match="outside 0..2"):
        concept_edit_effects(model, tok, LAYER, TEXTS, sae, [3], ["colors"], [], [], ids)
    with pytest.raises(MonosemError, match="one concept per unit"):
        concept_edit_effects(model, tok, LAYER, TEXTS, sae, [0], ["shapes"], [], [], ids)
    with pytest.raises(MonosemError, match="clean readout was made for other"):
        concept_edit_effects(model, tok, LAYER, TEXTS, sae, [0], ["colors"], [], [], ids, clean=clean_readout(model, tok, TEXTS[:1], [LAYER], ids))
    with pytest.raises(MonosemError, match="outside the vocabulary"):
        clean_readout(model, tok, TEXTS, [LAYER], {"colors": torch.tensor([10**7])})


def test_smollm2_neuron_ablation_reads_the_linear_down_projection(smollm2):
    """SmolLM2 (Llama layout): the MLP output projection is an nn.Linear [d_model, d_mlp]; its digits follow a bare ' ' token."""
    _, model, tok = smollm2
    ids, attn, keep = kept_batch(tok, ["The cat sat on the mat."])
    neuron = 7
    clean_resid, clean_neurons = run_layers(model, ids, attn, [0], mlp=True)
    with ablated_neurons(model, 0, torch.tensor([neuron]), keep):
        ablated = block_output(model, 0, ids, attn)
    w = model.layers[0].mlp.down_proj.weight.detach()[:, neuron]
    torch.testing.assert_close(mlp_output_weight(model, 0)[:, neuron], w)
    torch.testing.assert_close((ablated - clean_resid[0])[keep], -clean_neurons[0][..., neuron][keep, None] * w, rtol=1e-4, atol=1e-5)
    numbers = concept_token_ids(tok, {"numbers": ["seven", "30", "7"], "animals": ["cat"]})["numbers"]
    assert {tok.decode([i]) for i in numbers.tolist()} == {" seven", " Seven"}, "' 30' and ' 7' start with a bare ' ' token"
