import pytest
import torch

from monosem.cache import load_or_extract_concepts
from monosem.config import MonosemError
from monosem.paths import model_paths
from monosem.sae.standard import StandardSAE
from monosem.sae.train import sae_metrics, train_or_load_sae, train_sae


def test_metrics_textbook_formulas():
    sae = StandardSAE(4, 2, seed=0)
    with torch.no_grad():  # feature 0 always on, feature 1 never: x_hat = b_dec + f0 * W_dec[0]
        sae.W_enc.zero_()
        sae.b_enc.copy_(torch.tensor([1.0, -1.0]))
        sae.W_dec.zero_()
        sae.b_dec.zero_()
    x = torch.randn(50, 4)
    m = sae_metrics(sae, x, batch_size=7)
    assert m["l0"] == 1.0 and m["dead_fraction"] == 0.5 and m["n_dead"] == 1
    assert m["mse"] == pytest.approx(x.pow(2).mean().item(), rel=1e-5)
    assert m["fve"] == pytest.approx(1 - x.pow(2).sum().item() / (x - x.mean(0)).pow(2).sum().item(), abs=1e-6)


def test_reference_training_learns_and_is_seeded():
    g = torch.Generator().manual_seed(0)
    x = torch.relu(torch.randn(2000, 8, generator=g)) @ torch.randn(8, 16, generator=g)
    sae, hist, _ = train_sae(x, "reference", steps=400, batch_size=128, seed=1, progress=False)
    assert sae.d_sae == 8 and hist[-1]["loss"] < 0.5 * hist[0]["loss"]
    assert sae_metrics(sae, x)["fve"] > 0.5
    sae2, hist2, _ = train_sae(x, "reference", steps=400, batch_size=128, seed=1, progress=False)
    torch.testing.assert_close(sae.W_enc, sae2.W_enc)
    with pytest.raises(MonosemError, match="unknown SAE preset"):
        train_sae(x, "nope", steps=1)


def test_train_or_load_skips_retraining(bundled, concepts, data_dir):
    spec, model, tok = bundled
    mp = model_paths(data_dir, spec.used)
    df = concepts[concepts.word.isin(["green", "seven", "dog"])].reset_index(drop=True)
    cache = load_or_extract_concepts(mp, spec, df, [0], model_and_tokenizer=(model, tok))
    sae, rec = train_or_load_sae(mp, spec, [cache], 0, steps=20, batch_size=16)
    assert (mp.sae(0) / "training.json").is_file() and len(rec["history"]) == 20
    sae2, rec2 = train_or_load_sae(mp, spec, [cache], 0, steps=20, batch_size=16)
    assert rec2["key"] == rec["key"]
    torch.testing.assert_close(sae2.W_enc, sae.W_enc)
    _, rec3 = train_or_load_sae(mp, spec, [cache], 0, steps=30, batch_size=16)
    assert rec3["key"] != rec["key"]


@pytest.mark.parametrize("preset", ["l1", "topk"])
def test_presets_learn_and_fold_their_input_scale_exactly(preset, structured_data):
    x = structured_data() * 7.0  # far from norm sqrt(d): the scale matters
    sae, hist, cfg = train_sae(x, preset, steps=300, batch_size=128, seed=0, progress=False, expansion=4, **({"k": 8} if preset == "topk" else {}))
    assert cfg["input_scale"] == pytest.approx(16 ** 0.5 / x.norm(dim=1).mean().item(), rel=1e-4)
    assert sae.d_sae == 64 and hist[-1]["mse"] < hist[0]["mse"]
    m = sae_metrics(sae, x)
    assert m["fve"] > 0.5
    if preset == "topk":
        assert m["l0"] == pytest.approx(8.0, abs=0.05) and m["l0"] <= 8 and sae.architecture == "topk"
        assert torch.allclose(sae.W_dec.norm(dim=1) * cfg["input_scale"], torch.ones(64), atol=1e-4)  # unit norm before folding


def test_topk_keeps_fewer_dead_features_than_reference_on_offset_data(structured_data):
    # activations far from the origin (as GPT-2's residual stream is): with nn.Linear init and no b_dec
    # centring many reference features never fire; TopK starts from b_dec = mean and AuxK revives the rest
    x = structured_data(n=4000, d=16, seed=2) + 8.0
    ref, _, _ = train_sae(x, "reference", steps=400, batch_size=128, seed=0, progress=False, expansion=4)
    topk, _, _ = train_sae(x, "topk", steps=400, batch_size=128, seed=0, progress=False, expansion=4, k=4, dead_steps=20)
    m_ref, m_topk = sae_metrics(ref, x), sae_metrics(topk, x)
    assert m_topk["l0"] == pytest.approx(4.0, abs=0.01)
    assert m_topk["dead_fraction"] < m_ref["dead_fraction"], (m_topk, m_ref)


def test_unknown_override_is_an_error():
    with pytest.raises(MonosemError, match="unknown setting"):
        train_sae(torch.randn(10, 4), "l1", steps=1, expansoin=2)
