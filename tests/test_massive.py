"""Massive activations (monosem.massive): one any-layer rule for the store, the SAEs' initialisation and the held-out metrics."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from monosem.massive import massive_mask, massive_rows, massive_thresholds
from monosem.sae.standard import StandardSAE
from monosem.sae.train import TokenSource, sae_metrics


class FakeCache:
    """An ActivationCache stand-in: token arrays per layer."""

    def __init__(self, arrays: dict[int, np.ndarray]):
        self.arrays = arrays

    def token_array(self, layer: int) -> np.ndarray:
        return self.arrays[layer]


def planted(seed=0, n=200, d=16):
    """Two caches whose layer-2 rows 3 and 150 (and only those) are 20x the typical norm; layer 0 has none."""
    rng = np.random.default_rng(seed)
    layer0, layer2 = rng.normal(size=(n, d)).astype(np.float32), rng.normal(size=(n, d)).astype(np.float32)
    layer2[[3, 150]] *= 20
    return [FakeCache({0: layer0[:100], 2: layer2[:100]}), FakeCache({0: layer0[100:], 2: layer2[100:]})], layer0, layer2


def test_a_token_massive_at_one_layer_is_massive_for_every_layer():
    caches, layer0, layer2 = planted()
    norms = {L: np.linalg.norm(a, axis=1) for L, a in ((0, layer0), (2, layer2))}
    thresholds = massive_thresholds(norms, 5.0)
    rows = massive_rows(caches, thresholds)
    assert rows.tolist() == [i in (3, 150) for i in range(200)]
    assert massive_rows(caches, None) is None and massive_thresholds(norms, 0) is None
    mask = massive_mask({0: torch.from_numpy(layer0).view(10, 20, 16), 2: torch.from_numpy(layer2).view(10, 20, 16)}, thresholds)
    assert mask.shape == (10, 20) and mask.flatten().nonzero().flatten().tolist() == [3, 150]
    kept = TokenSource.from_caches(caches, 0, rows)
    assert kept.n == 198 and torch.equal(kept.data, torch.from_numpy(np.delete(layer0, [3, 150], axis=0)))


@pytest.mark.parametrize("batch_size", [7, 64, 4096])
def test_metrics_without_massive_tokens_equal_metrics_on_the_kept_tokens(batch_size):
    caches, layer0, layer2 = planted(1)
    rows = massive_rows(caches, massive_thresholds({2: np.linalg.norm(layer2, axis=1)}, 5.0))
    sae = StandardSAE(16, 24, seed=0).eval()
    x = torch.from_numpy(layer2)
    got = sae_metrics(sae, x, batch_size, exclude=rows)
    kept = sae_metrics(sae, x[~torch.from_numpy(rows)], batch_size)
    everything = sae_metrics(sae, x, batch_size)
    for key in ("fve", "mse", "l0", "dead_fraction", "dense_fraction"):
        assert got[key] == pytest.approx(kept[key], rel=1e-5, abs=1e-7), key
    assert got["fve_all_tokens"] == pytest.approx(everything["fve"], rel=1e-5)
    assert got["n_massive"] == 2 and got["n_tokens"] == 198
    # the independent formula on the kept rows
    with torch.no_grad():
        xk = x[~torch.from_numpy(rows)].double()
        err = (xk - sae(xk.float())[0].double()).pow(2).sum()
        tot = (xk - xk.mean(0)).pow(2).sum()
    assert got["fve"] == pytest.approx(float(1 - err / tot), rel=1e-5)
