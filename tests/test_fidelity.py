import pytest
import torch

from monosem.fidelity import splice_fidelity
from monosem.sae.standard import StandardSAE


def perfect_sae(d):
    """relu(x) - relu(-x) = x: reconstructs every input exactly."""
    sae = StandardSAE(d, 2 * d, seed=0)
    eye = torch.eye(d)
    with torch.no_grad():
        sae.W_enc.copy_(torch.cat([eye, -eye], 1))
        sae.b_enc.zero_()
        sae.W_dec.copy_(torch.cat([eye, -eye], 0))
        sae.b_dec.zero_()
    return sae


def test_fidelity_ce_loss_recovered_on_gpt2(gpt2_tiny):
    model, tok = gpt2_tiny
    texts = ["The cat sat on the mat.", "Seven green apples fell from the old tree today."]
    d = model.config.n_embd
    full = splice_fidelity(model, tok, texts, 1, perfect_sae(d), torch.zeros(d))
    assert full["kind"] == "ce_loss_recovered" and full["ce_recovered_zero"] == pytest.approx(1.0, abs=1e-4)
    assert full["ce_sae"] == pytest.approx(full["ce_clean"], abs=1e-4)
    zero = StandardSAE(d, 4, seed=0)
    with torch.no_grad():
        zero.W_dec.zero_()
        zero.b_dec.zero_()
    none = splice_fidelity(model, tok, texts, 1, zero, torch.zeros(d))
    assert none["ce_recovered_zero"] == pytest.approx(0.0, abs=1e-4)  # reconstructs nothing = zero ablation
    assert none["ce_recovered_mean"] == pytest.approx(0.0, abs=1e-4)  # the mean passed is 0: mean ablation = zero ablation


def test_fidelity_output_cosine_on_the_encoder(bundled):
    spec, model, tok = bundled
    d = model.config.hidden_size
    out = splice_fidelity(model, tok, ["She painted the door green."], 2, perfect_sae(d), torch.zeros(d))
    assert out["kind"] == "output_cosine" and out["cos_sae"] == pytest.approx(1.0, abs=1e-4) and out["cos_zero"] < 0.9
