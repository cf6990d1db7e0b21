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
    assert m["fve"] == pytest.approx(1 - x.pow(2).sum().item() / (x - x.mean(0)).pow(2).sum().item(), rel=1e-5)


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
