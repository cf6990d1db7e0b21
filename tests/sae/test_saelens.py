"""The SAELens on-disk format: our folders load in SAELens, folders written by SAELens load here, imports, and notebooks 03-04 on them."""

import json
import os
import subprocess
import sys

import pytest
import torch
from safetensors.torch import load_file, save_file

from monosem.config import MonosemError
from monosem.model import resolve_model
from monosem.paths import model_paths
from monosem.sae.presets import PRESETS
from monosem.sae.saelens import check_saelens_roundtrip, hook_layer, import_saes, load_sae, sae_from_saelens, save_sae
from monosem.sae.standard import StandardSAE
from monosem.sae.train import train_sae
from monosem.testing import ROOT


@pytest.fixture
def sae_lens():
    return pytest.importorskip("sae_lens", reason="sae-lens is not installed (optional extra: pip install -e '.[saelens]')")


def saelens_sae(arch: str, d_in: int, d_sae: int, hook: str, seed: int = 0):
    """An SAE built and initialised by SAELens itself."""
    import sae_lens as sl

    torch.manual_seed(seed)
    meta = {"model_name": "all-MiniLM-L6-v2", "hook_name": hook}
    if arch == "standard":
        sae = sl.StandardSAE(sl.StandardSAEConfig(d_in=d_in, d_sae=d_sae, apply_b_dec_to_input=True))
    elif arch == "topk":
        sae = sl.TopKSAE(sl.TopKSAEConfig(d_in=d_in, d_sae=d_sae, k=8))
    else:
        sae = sl.JumpReLUSAE(sl.JumpReLUSAEConfig(d_in=d_in, d_sae=d_sae))
        with torch.no_grad():
            sae.threshold.uniform_(0.0, 0.05)
    for k, v in meta.items():
        setattr(sae.cfg.metadata, k, v)
    with torch.no_grad():
        sae.b_enc.normal_(0, 0.1)
    return sae


# -- our format ----------------------------------------------------------------------------------


def test_saelens_format_roundtrip_and_validation(tmp_path):
    sae = StandardSAE(8, 4, seed=0)
    folder = tmp_path / "layer_2"
    save_sae(sae, folder, "my-model", 2, training={"key": "k"})
    cfg = json.loads((folder / "cfg.json").read_text())
    assert cfg["architecture"] == "standard" and cfg["normalize_activations"] == "none"
    assert cfg["metadata"]["hook_name"] == "blocks.2.hook_resid_post" and cfg["metadata"]["sae_lens_version"] >= "6.0.0"
    w = load_file(folder / "sae_weights.safetensors")
    assert {k: tuple(v.shape) for k, v in w.items()} == {"W_enc": (8, 4), "b_enc": (4,), "W_dec": (4, 8), "b_dec": (8,)}
    loaded, cfg2 = load_sae(folder)
    x = torch.randn(3, 8)
    torch.testing.assert_close(loaded.encode(x), sae.encode(x))
    assert hook_layer(cfg2) == 2
    # wrong shapes, extra or missing tensors are clear errors: first the checksum written beside them catches any edit ...
    save_file({**w, "extra": torch.zeros(1)}, folder / "sae_weights.safetensors")
    with pytest.raises(MonosemError, match=r"sae_weights.safetensors is missing or corrupted .*checksums.json.*retrain"):
        load_sae(folder)
    # ... and a folder without checksums (as SAELens writes them) is checked tensor by tensor
    (folder / "checksums.json").unlink()
    with pytest.raises(MonosemError, match="expected exactly"):
        load_sae(folder)
    save_file({**w, "W_enc": torch.zeros(4, 8)}, folder / "sae_weights.safetensors")
    with pytest.raises(MonosemError, match=r"W_enc has shape \(4, 8\), expected \(8, 4\)"):
        load_sae(folder)
    with pytest.raises(MonosemError, match="run notebooks/02"):
        load_sae(tmp_path / "missing")


def test_sae_folder_with_a_missing_tensor(tmp_path):
    save_sae(StandardSAE(8, 4, seed=0), tmp_path / "s", "m", 0)
    (tmp_path / "s" / "checksums.json").unlink()  # as a folder SAELens wrote: checked tensor by tensor
    w = load_file(tmp_path / "s" / "sae_weights.safetensors")
    del w["b_dec"]
    save_file(w, tmp_path / "s" / "sae_weights.safetensors")
    with pytest.raises(MonosemError, match=r"expected exactly \['W_dec', 'W_enc', 'b_dec', 'b_enc'\]"):
        load_sae(tmp_path / "s")
    (tmp_path / "s" / "cfg.json").write_text("{not json")
    with pytest.raises(MonosemError, match="not a valid SAELens cfg.json"):
        load_sae(tmp_path / "s")


def test_a_failed_sae_write_keeps_the_previous_sae(tmp_path, monkeypatch):
    import monosem.sae.saelens

    folder = tmp_path / "layer_0"
    save_sae(StandardSAE(8, 4, seed=0), folder, "m", 0)
    before = (folder / "sae_weights.safetensors").read_bytes()

    def broken(*a, **k):
        raise OSError("disk full")

    monkeypatch.setattr(monosem.sae.saelens, "save_file", broken)
    with pytest.raises(OSError, match="disk full"):
        save_sae(StandardSAE(8, 4, seed=1), folder, "m", 0)
    assert (folder / "sae_weights.safetensors").read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["layer_0"]


def test_saved_sae_encodes_identically_in_saelens(tmp_path, sae_lens):
    for apply in (False, True):
        sae = StandardSAE(16, 8, apply_b_dec_to_input=apply, seed=3)
        save_sae(sae, tmp_path / f"s{apply}", "m", 1)
        theirs = sae_lens.SAE.load_from_disk(str(tmp_path / f"s{apply}"), device="cpu")
        x = torch.randn(20, 16) * 3
        with torch.no_grad():
            torch.testing.assert_close(theirs.encode(x), sae.encode(x), atol=1e-5, rtol=1e-5)
            torch.testing.assert_close(theirs.decode(theirs.encode(x)), sae(x)[0], atol=1e-5, rtol=1e-5)


SAELENS_CLASS = {"reference": "StandardSAE", "l1": "StandardSAE", "topk": "TopKSAE", "matryoshka": "JumpReLUSAE"}  # BatchTopK: saved as JumpReLU


@pytest.mark.parametrize("preset", sorted(SAELENS_CLASS))
def test_every_preset_encodes_identically_in_saelens(tmp_path, preset, sae_lens, structured_data):
    assert set(SAELENS_CLASS) == set(PRESETS), "every preset is checked here"
    x = structured_data(n=500) * 5.0
    sae, _, _ = train_sae(x, preset, steps=20, batch_size=64, seed=0, progress=False, **({} if preset == "reference" else {"expansion": 2}))
    save_sae(sae, tmp_path / preset, "m", 0)
    theirs = sae_lens.SAE.load_from_disk(str(tmp_path / preset), device="cpu")
    assert type(theirs).__name__ == SAELENS_CLASS[preset]
    with torch.no_grad():
        f = sae.encode(x)
        assert 0 < (f > 0).float().mean() < 1, "the test needs some features on and some off"
        torch.testing.assert_close(theirs.encode(x), f, atol=1e-4, rtol=1e-5)
        torch.testing.assert_close(theirs.decode(theirs.encode(x)), sae(x)[0], atol=1e-4, rtol=1e-5)
    ours, _ = load_sae(tmp_path / preset)
    assert type(ours) is type(sae) and ours.to_cfg() == sae.to_cfg(), "our own folder loads back as the class that trained it"
    assert check_saelens_roundtrip(tmp_path / preset, x).startswith(f"identical in SAELens {SAELENS_CLASS[preset]}")


# -- Matryoshka BatchTopK: saved as SAELens saves it for inference (jumprelu + training metadata) ------------


def saelens_matryoshka(d_in: int = 16, d_sae: int = 48, seed: int = 0, apply_b_dec: bool = True):
    """A MatryoshkaBatchTopKTrainingSAE from SAELens, with random weights, decoder rows of uneven norm (its default
    rescale_acts_by_decoder_norm folds them on export) and a nonzero topk_threshold."""
    import sae_lens as sl

    torch.manual_seed(seed)
    cfg = sl.MatryoshkaBatchTopKTrainingSAEConfig(d_in=d_in, d_sae=d_sae, k=4, matryoshka_widths=[6, 24, d_sae], apply_b_dec_to_input=apply_b_dec)
    sae = sl.MatryoshkaBatchTopKTrainingSAE(cfg)
    with torch.no_grad():
        sae.W_enc.normal_(0, 0.5)
        sae.b_enc.normal_(0, 0.2)
        sae.W_dec.copy_(torch.randn(d_sae, d_in) * torch.rand(d_sae, 1) * 2)
        sae.b_dec.normal_(0, 0.3)
        sae.topk_threshold.fill_(0.4)
    sae.cfg.metadata.hook_name = "blocks.2.hook_resid_post"
    return sae


@pytest.mark.parametrize("apply_b_dec", [False, True])
def test_matryoshka_folders_written_by_saelens_load_with_identical_encodings(tmp_path, sae_lens, apply_b_dec):
    from monosem.sae.matryoshka import MatryoshkaBatchTopKSAE

    theirs = saelens_matryoshka(apply_b_dec=apply_b_dec)
    theirs.save_inference_model(str(tmp_path / "inference"))  # what SAELens writes at the end of training
    theirs.save_model(str(tmp_path / "checkpoint"))  # a training checkpoint: architecture matryoshka_batchtopk, scalar topk_threshold
    reference = sae_lens.SAE.load_from_disk(str(tmp_path / "inference"), device="cpu")
    assert type(reference).__name__ == "JumpReLUSAE"
    x = torch.randn(200, 16) * 2
    with torch.no_grad():
        f_ref = reference.encode(x)
        x_ref = reference.decode(f_ref)
    assert 0 < (f_ref > 0).float().mean() < 0.5, "the threshold matters for this test"
    for folder in ("inference", "checkpoint"):
        ours, cfg = load_sae(tmp_path / folder)
        assert isinstance(ours, MatryoshkaBatchTopKSAE) and ours.widths == (6, 24, 48) and ours.k == 4 and hook_layer(cfg) == 2, folder
        with torch.no_grad():
            torch.testing.assert_close(ours.encode(x), f_ref, atol=1e-5, rtol=1e-5, msg=lambda m, folder=folder: f"{folder}: {m}")
            torch.testing.assert_close(ours.decode(ours.encode(x)), x_ref, atol=1e-5, rtol=1e-5)
    converted, _ = sae_from_saelens(theirs)  # a training SAE object, as its inference folder holds it
    torch.testing.assert_close(converted.encode(x), f_ref, atol=1e-5, rtol=1e-5)
    # and back: our folder of it loads in SAELens as the same JumpReLU SAE, with SAELens's metadata
    save_sae(converted, tmp_path / "ours", "m", 2)
    cfg = json.loads((tmp_path / "ours" / "cfg.json").read_text())
    assert cfg["architecture"] == "jumprelu" and cfg["metadata"]["training_architecture"] == "matryoshka_batchtopk"
    assert cfg["metadata"]["training_architecture_details"]["matryoshka_widths"] == [6, 24, 48]
    assert check_saelens_roundtrip(tmp_path / "ours", x).startswith("identical in SAELens JumpReLUSAE")


def test_a_damaged_matryoshka_checkpoint_is_a_clear_error(tmp_path, sae_lens):
    saelens_matryoshka().save_model(str(tmp_path / "c"))
    w = load_file(tmp_path / "c" / "sae_weights.safetensors")
    save_file({**w, "topk_threshold": torch.zeros(3, dtype=torch.float64)}, tmp_path / "c" / "sae_weights.safetensors")
    with pytest.raises(MonosemError, match="scalar topk_threshold"):
        load_sae(tmp_path / "c")


# -- SAEs made by SAELens itself -------------------------------------------------------------------


@pytest.mark.parametrize("arch", ["standard", "topk", "jumprelu"])
def test_folders_written_by_saelens_load_with_identical_encodings(tmp_path, arch, sae_lens):
    theirs = saelens_sae(arch, 16, 32, "blocks.1.hook_resid_post")
    theirs.save_model(str(tmp_path / arch))
    ours, cfg = load_sae(tmp_path / arch)
    assert ours.architecture == arch and hook_layer(cfg) == 1
    x = torch.randn(50, 16)
    with torch.no_grad():
        torch.testing.assert_close(ours.encode(x), theirs.encode(x), atol=1e-6, rtol=1e-6)
        torch.testing.assert_close(ours.decode(ours.encode(x)), theirs.decode(theirs.encode(x)), atol=1e-6, rtol=1e-6)
    converted, _ = sae_from_saelens(theirs)  # the path a pretrained release takes
    torch.testing.assert_close(converted.encode(x), ours.encode(x))


def test_import_checks_width_and_layer(tmp_path, data_dir, sae_lens):
    spec = resolve_model("bundled")
    mp = model_paths(data_dir, spec.used)
    saelens_sae("standard", 384, 64, "blocks.2.hook_resid_post").save_model(str(tmp_path / "a"))
    saelens_sae("topk", 384, 64, "blocks.4.hook_resid_pre").save_model(str(tmp_path / "b"))  # = after block 3
    assert import_saes(mp, spec, str(tmp_path), 384, 6) == [2, 3]
    assert load_sae(mp.sae(3, "external"))[0].architecture == "topk"
    saelens_sae("standard", 768, 64, "blocks.2.hook_resid_post").save_model(str(tmp_path / "wide"))
    with pytest.raises(MonosemError, match="d_in 768 but .* has d_model 384"):
        import_saes(mp, spec, str(tmp_path / "wide"), 384, 6)
    saelens_sae("standard", 384, 64, "blocks.9.hook_resid_post").save_model(str(tmp_path / "deep"))
    with pytest.raises(MonosemError, match="layer 9, outside"):
        import_saes(mp, spec, str(tmp_path / "deep"), 384, 6)
    saelens_sae("standard", 384, 64, "blocks.2.hook_mlp_out").save_model(str(tmp_path / "mlp"))
    with pytest.raises(MonosemError, match="not a residual-stream hook"):
        import_saes(mp, spec, str(tmp_path / "mlp"), 384, 6)
    (tmp_path / "empty").mkdir()
    with pytest.raises(MonosemError, match="holds no SAE"):
        import_saes(mp, spec, str(tmp_path / "empty"), 384, 6)


def run_notebook(name, env, out_dir):
    subprocess.run([sys.executable, "-m", "jupyter", "nbconvert", "--to", "notebook", "--execute", "--output-dir", str(out_dir),
                    str(ROOT / "notebooks" / f"{name}.ipynb")], env=env, check=True, capture_output=True, timeout=900)
    return json.loads((out_dir / f"{name}.ipynb").read_text())


def test_notebooks_03_and_04_analyse_a_saelens_folder(tmp_path, sae_lens):
    env = {**os.environ, "MONOSEM_DATA_DIR": str(tmp_path / "data"), "MONOSEM_LAYERS": "1,2", "MONOSEM_PERMUTATIONS": "100",
           "MONOSEM_BOOTSTRAP": "100", "MONOSEM_BACKGROUND_TOKENS": "3000"}
    run_notebook("01_extract_activations", env, tmp_path / "out")
    source = tmp_path / "from_saelens"
    saelens_sae("jumprelu", 384, 96, "blocks.1.hook_resid_post", seed=1).save_model(str(source / "l1"))
    saelens_sae("topk", 384, 96, "blocks.2.hook_resid_post", seed=2).save_model(str(source / "l2"))
    env["MONOSEM_SAE_SOURCE"] = str(source)
    run_notebook("03_selectivity", env, tmp_path / "out")
    nb4 = run_notebook("04_word_level_exploration", env, tmp_path / "out")
    results = tmp_path / "data" / "results" / "sentence-transformers--all-MiniLM-L6-v2"
    summary = json.loads((results / "summary.json").read_text())
    assert summary["sae_preset"] == "external" and summary["layers"] == [1, 2]
    assert set(summary["scorecard"]) >= {"SAE (external)", "residual ±", "MLP neurons", "untrained SAE (external)"}
    assert set(summary["scorecard"]["SAE (external)"]) == {"1", "2"}
    assert {p.name for p in (results / "external").iterdir()} >= {"selectivity_layer_1.csv", "selectivity_layer_2.csv"}
    exported = list((results / "features").glob("layer_2_feature_*.json"))
    assert exported and "top_contexts" in json.loads(exported[0].read_text())
    assert any("exported" in "".join(o.get("text", "")) for c in nb4["cells"] for o in c.get("outputs", []))
