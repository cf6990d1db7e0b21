import torch

from monosem.sae.standard import StandardSAE
from monosem.sae.topk import TopKSAE


def test_encode_decode_formula_and_shapes():
    sae = StandardSAE(6, 3, apply_b_dec_to_input=True, seed=0)
    x = torch.randn(5, 6)
    f = sae.encode(x)
    torch.testing.assert_close(f, torch.relu((x - sae.b_dec) @ sae.W_enc + sae.b_enc))
    torch.testing.assert_close(sae.decode(f), f @ sae.W_dec + sae.b_dec)
    assert sae.W_enc.shape == (6, 3) and sae.W_dec.shape == (3, 6)


def test_folding_the_scale_keeps_feature_activations():
    sae = TopKSAE(8, 5, apply_b_dec_to_input=True, seed=0, k=2)
    x = torch.randn(10, 8)
    f_scaled = sae.encode(x * 3.0)
    x_hat_scaled = sae.decode(f_scaled)
    sae.fold_input_scale(3.0)
    torch.testing.assert_close(sae.encode(x), f_scaled, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(sae.decode(sae.encode(x)), x_hat_scaled / 3.0, atol=1e-5, rtol=1e-5)
