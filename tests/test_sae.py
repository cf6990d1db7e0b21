import json

import pytest
import torch

import helpers as h


def test_encode_decode_formula_and_shapes():
    sae = h.SAE(6, 3, apply_b_dec_to_input=True, seed=0)
    x = torch.randn(5, 6)
    f = sae.encode(x)
    torch.testing.assert_close(f, torch.relu((x - sae.b_dec) @ sae.W_enc + sae.b_enc))
    torch.testing.assert_close(sae.decode(f), f @ sae.W_dec + sae.b_dec)
    assert sae.W_enc.shape == (6, 3) and sae.W_dec.shape == (3, 6)


def test_metrics_textbook_formulas():
    sae = h.SAE(4, 2, seed=0)
    with torch.no_grad():  # feature 0 always on, feature 1 never: x_hat = b_dec + f0 * W_dec[0]
        sae.W_enc.zero_(); sae.b_enc.copy_(torch.tensor([1.0, -1.0])); sae.W_dec.zero_(); sae.b_dec.zero_()
    x = torch.randn(50, 4)
    m = h.sae_metrics(sae, x, batch_size=7)
    assert m["l0"] == 1.0 and m["dead_fraction"] == 0.5 and m["n_dead"] == 1
    assert m["mse"] == pytest.approx(x.pow(2).mean().item(), rel=1e-5)
    assert m["fve"] == pytest.approx(1 - x.pow(2).sum().item() / (x - x.mean(0)).pow(2).sum().item(), abs=1e-6)


def test_reference_training_learns_and_is_seeded():
    g = torch.Generator().manual_seed(0)
    x = torch.relu(torch.randn(2000, 8, generator=g)) @ torch.randn(8, 16, generator=g)
    sae, hist, _ = h.train_sae(x, "reference", steps=400, batch_size=128, seed=1, progress=False)
    assert sae.d_sae == 8 and hist[-1]["loss"] < 0.5 * hist[0]["loss"]
    assert h.sae_metrics(sae, x)["fve"] > 0.5
    sae2, hist2, _ = h.train_sae(x, "reference", steps=400, batch_size=128, seed=1, progress=False)
    torch.testing.assert_close(sae.W_enc, sae2.W_enc)
    with pytest.raises(h.MonosemError, match="unknown SAE preset"):
        h.train_sae(x, "nope", steps=1)


def test_saelens_format_roundtrip_and_validation(tmp_path):
    sae = h.SAE(8, 4, seed=0)
    folder = tmp_path / "layer_2"
    h.save_sae(sae, folder, "my-model", 2, training={"key": "k"})
    cfg = json.loads((folder / "cfg.json").read_text())
    assert cfg["architecture"] == "standard" and cfg["normalize_activations"] == "none"
    assert cfg["metadata"]["hook_name"] == "blocks.2.hook_resid_post" and cfg["metadata"]["sae_lens_version"] >= "6.0.0"
    from safetensors.torch import load_file, save_file
    w = load_file(folder / "sae_weights.safetensors")
    assert {k: tuple(v.shape) for k, v in w.items()} == {"W_enc": (8, 4), "b_enc": (4,), "W_dec": (4, 8), "b_dec": (8,)}
    loaded, cfg2 = h.load_sae(folder)
    x = torch.randn(3, 8)
    torch.testing.assert_close(loaded.encode(x), sae.encode(x))
    assert h.hook_layer(cfg2) == 2
    # wrong shapes, extra or missing tensors are clear errors
    save_file({**w, "extra": torch.zeros(1)}, folder / "sae_weights.safetensors")
    with pytest.raises(h.MonosemError, match="expected exactly"):
        h.load_sae(folder)
    save_file({**w, "W_enc": torch.zeros(4, 8)}, folder / "sae_weights.safetensors")
    with pytest.raises(h.MonosemError, match=r"W_enc has shape \(4, 8\), expected \(8, 4\)"):
        h.load_sae(folder)
    with pytest.raises(h.MonosemError, match="run notebooks/02"):
        h.load_sae(tmp_path / "missing")


def test_saved_sae_encodes_identically_in_saelens(tmp_path):
    sae_lens = pytest.importorskip("sae_lens", reason="sae-lens is not installed (optional extra: pip install -e .[saelens])")
    for apply in (False, True):
        sae = h.SAE(16, 8, apply_b_dec_to_input=apply, seed=3)
        h.save_sae(sae, tmp_path / f"s{apply}", "m", 1)
        theirs = sae_lens.SAE.load_from_disk(str(tmp_path / f"s{apply}"), device="cpu")
        x = torch.randn(20, 16) * 3
        with torch.no_grad():
            torch.testing.assert_close(theirs.encode(x), sae.encode(x), atol=1e-5, rtol=1e-5)
            torch.testing.assert_close(theirs.decode(theirs.encode(x)), sae(x)[0], atol=1e-5, rtol=1e-5)


def test_train_or_load_skips_retraining(bundled, concepts, data_dir):
    spec, model, tok = bundled
    df = concepts[concepts.word.isin(["green", "seven", "dog"])].reset_index(drop=True)
    cache = h.load_or_extract(spec, df, [0], model_and_tokenizer=(model, tok))
    sae, rec = h.train_or_load_sae(spec, [cache], 0, steps=20, batch_size=16)
    assert (h.sae_folder(spec, 0) / "training.json").is_file() and len(rec["history"]) == 20
    sae2, rec2 = h.train_or_load_sae(spec, [cache], 0, steps=20, batch_size=16)
    assert rec2["key"] == rec["key"]
    torch.testing.assert_close(sae2.W_enc, sae.W_enc)
    _, rec3 = h.train_or_load_sae(spec, [cache], 0, steps=30, batch_size=16)
    assert rec3["key"] != rec["key"]


def structured_data(n=3000, d=16, seed=0):
    g = torch.Generator().manual_seed(seed)
    codes = torch.relu(torch.randn(n, 4 * d, generator=g) - 1.5)  # sparse non-negative codes
    return codes @ torch.randn(4 * d, d, generator=g) + 0.5  # offset: b_dec matters


@pytest.mark.parametrize("preset", ["l1", "topk"])
def test_presets_learn_and_fold_their_input_scale_exactly(preset):
    x = structured_data() * 7.0  # far from norm sqrt(d): the scale matters
    sae, hist, cfg = h.train_sae(x, preset, steps=300, batch_size=128, seed=0, progress=False, expansion=4, **({"k": 8} if preset == "topk" else {}))
    assert cfg["input_scale"] == pytest.approx(16 ** 0.5 / x.norm(dim=1).mean().item(), rel=1e-4)
    assert sae.d_sae == 64 and hist[-1]["mse"] < hist[0]["mse"]
    m = h.sae_metrics(sae, x)
    assert m["fve"] > 0.5
    if preset == "topk":
        assert m["l0"] == pytest.approx(8.0, abs=0.05) and m["l0"] <= 8 and sae.architecture == "topk"
        assert torch.allclose(sae.W_dec.norm(dim=1) * cfg["input_scale"], torch.ones(64), atol=1e-4)  # unit norm before folding


def test_folding_the_scale_keeps_feature_activations():
    sae = h.SAE(8, 5, apply_b_dec_to_input=True, seed=0, architecture="topk", k=2)
    x = torch.randn(10, 8)
    f_scaled = sae.encode(x * 3.0)
    x_hat_scaled = sae.decode(f_scaled)
    sae.fold_input_scale(3.0)
    torch.testing.assert_close(sae.encode(x), f_scaled, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(sae.decode(sae.encode(x)), x_hat_scaled / 3.0, atol=1e-5, rtol=1e-5)


def test_topk_keeps_fewer_dead_features_than_reference_on_offset_data():
    # activations far from the origin (as GPT-2's residual stream is): with nn.Linear init and no b_dec
    # centring many reference features never fire; TopK starts from b_dec = mean and AuxK revives the rest
    x = structured_data(n=4000, d=16, seed=2) + 8.0
    ref, _, _ = h.train_sae(x, "reference", steps=400, batch_size=128, seed=0, progress=False, expansion=4)
    topk, _, _ = h.train_sae(x, "topk", steps=400, batch_size=128, seed=0, progress=False, expansion=4, k=4, dead_steps=20)
    m_ref, m_topk = h.sae_metrics(ref, x), h.sae_metrics(topk, x)
    assert m_topk["l0"] == pytest.approx(4.0, abs=0.01)
    assert m_topk["dead_fraction"] < m_ref["dead_fraction"], (m_topk, m_ref)


def test_unknown_override_is_an_error():
    with pytest.raises(h.MonosemError, match="unknown setting"):
        h.train_sae(torch.randn(10, 4), "l1", steps=1, expansoin=2)


@pytest.mark.parametrize("preset", ["reference", "l1", "topk"])
def test_every_preset_encodes_identically_in_saelens(tmp_path, preset):
    sae_lens = pytest.importorskip("sae_lens", reason="sae-lens is not installed (optional extra: pip install -e .[saelens])")
    x = structured_data(n=500) * 5.0
    sae, _, _ = h.train_sae(x, preset, steps=20, batch_size=64, seed=0, progress=False, **({} if preset == "reference" else {"expansion": 2}))
    h.save_sae(sae, tmp_path / preset, "m", 0)
    theirs = sae_lens.SAE.load_from_disk(str(tmp_path / preset), device="cpu")
    assert type(theirs).__name__ == ("TopKSAE" if preset == "topk" else "StandardSAE")
    with torch.no_grad():
        torch.testing.assert_close(theirs.encode(x), sae.encode(x), atol=1e-4, rtol=1e-5)
        torch.testing.assert_close(theirs.decode(theirs.encode(x)), sae(x)[0], atol=1e-4, rtol=1e-5)


def perfect_sae(d):
    """relu(x) - relu(-x) = x: reconstructs every input exactly."""
    sae = h.SAE(d, 2 * d, seed=0)
    eye = torch.eye(d)
    with torch.no_grad():
        sae.W_enc.copy_(torch.cat([eye, -eye], 1)); sae.b_enc.zero_()
        sae.W_dec.copy_(torch.cat([eye, -eye], 0)); sae.b_dec.zero_()
    return sae


def test_fidelity_ce_loss_recovered_on_gpt2(gpt2_tiny):
    model, tok = gpt2_tiny
    texts = ["The cat sat on the mat.", "Seven green apples fell from the old tree today."]
    d = model.config.n_embd
    full = h.splice_fidelity(model, tok, texts, 1, perfect_sae(d), torch.zeros(d))
    assert full["kind"] == "ce_loss_recovered" and full["ce_recovered_zero"] == pytest.approx(1.0, abs=1e-4)
    assert full["ce_sae"] == pytest.approx(full["ce_clean"], abs=1e-4)
    zero = h.SAE(d, 4, seed=0)
    with torch.no_grad():
        zero.W_dec.zero_(); zero.b_dec.zero_()
    none = h.splice_fidelity(model, tok, texts, 1, zero, torch.zeros(d))
    assert none["ce_recovered_zero"] == pytest.approx(0.0, abs=1e-4)  # reconstructs nothing = zero ablation
    assert none["ce_recovered_mean"] == pytest.approx(0.0, abs=1e-4)  # the mean passed is 0: mean ablation = zero ablation


def test_fidelity_output_cosine_on_the_encoder(bundled):
    spec, model, tok = bundled
    d = model.config.hidden_size
    out = h.splice_fidelity(model, tok, ["She painted the door green."], 2, perfect_sae(d), torch.zeros(d))
    assert out["kind"] == "output_cosine" and out["cos_sae"] == pytest.approx(1.0, abs=1e-4) and out["cos_zero"] < 0.9
