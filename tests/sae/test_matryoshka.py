"""The Matryoshka BatchTopK preset learns: reconstruction, about k features per token, nested prefixes, notebook 02's checks."""

import torch

from monosem.sae.train import TokenSource, sae_metrics, train_sae, untrained_sae


def test_matryoshka_learns_nested_prefixes_and_passes_the_notebook_checks(structured_data):
    x = structured_data(n=4000) * 7.0
    sae, hist, cfg = train_sae(x, "matryoshka", steps=400, batch_size=128, seed=0, progress=False, expansion=4, k=8)
    assert sae.architecture == "matryoshka_batchtopk" and sae.d_sae == 64 and sae.widths == (1, 4, 16, 64)
    first, last = hist[0], hist[-1]
    assert last["mse"] < 0.2 * first["mse"] and last["loss"] < 0.5 * first["loss"], (first, last)  # small prefixes cannot reconstruct all
    assert last["loss"] > last["mse"], "the loss sums every prefix's error, the full dictionary's (mse) is one of them"
    m = sae_metrics(sae, x)
    untrained = sae_metrics(untrained_sae(TokenSource.of(x), "matryoshka", expansion=4, k=8), x)
    assert m["fve"] > 0.6 and m["fve"] > untrained["fve"] + 0.3, (m, untrained)
    assert 0.5 * 8 <= m["l0"] <= 2 * 8, f"the learned threshold keeps about k = 8 features per token, got L0 = {m['l0']}"
    assert 0.25 * 8 <= untrained["l0"] <= 4 * 8, "the untrained SAE is calibrated to about k features per token too"
    assert torch.allclose(sae.W_dec.norm(dim=1) * cfg["input_scale"], torch.ones(64), atol=1e-4)  # unit norm before folding
    # what notebook 02 checks after training: its generic checks and the architecture's own L0 check
    assert m["fve"] > 0 and 0 <= m["dead_fraction"] <= 1 and m["l0"] <= m["d_sae"]
    assert sae.l0_problem(m["l0"]) is None
    # the nested prefixes: the first 16 latents alone reconstruct much of x, and they fire more often than the rest
    with torch.no_grad():
        f = sae.encode(x)
        prefix = f[:, :16] @ sae.W_dec[:16] + sae.b_dec
        fve_16 = 1 - (x - prefix).pow(2).sum() / (x - x.mean(0)).pow(2).sum()
    assert fve_16 > 0.5 * m["fve"], fve_16
    assert (f[:, :16] > 0).float().mean() > (f[:, 16:] > 0).float().mean(), "earlier prefixes hold the more frequent features"


def test_matryoshka_threshold_follows_the_kept_activations(structured_data):
    x = structured_data(n=2000) * 7.0
    sae, _, cfg = train_sae(x, "matryoshka", steps=60, batch_size=128, seed=0, progress=False, expansion=4, k=8)
    with torch.no_grad():  # on the training data (scaled as in training), the threshold sits near the batch's k·n-th activation
        pre = sae.pre_acts(x)
        kth = pre.relu().flatten().topk(8 * len(x)).values.min()
    assert torch.all(sae.threshold == sae.threshold[0]) and sae.threshold[0] > 0
    assert 0.5 * kth <= sae.threshold[0] <= 1.5 * kth, (float(sae.threshold[0]), float(kth))
