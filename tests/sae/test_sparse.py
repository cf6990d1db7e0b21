"""Sparse TopK / BatchTopK training: the same loss and gradients as dense autograd (to 1e-5), without the dense encoder matmul."""

from __future__ import annotations

import pytest
import torch
from torch.utils._python_dispatch import TorchDispatchMode

from monosem.sae.base import TrainState
from monosem.sae.matryoshka import MatryoshkaBatchTopKSAE, batch_topk
from monosem.sae.topk import TopKSAE

N, D_IN, D_SAE, K, AUX_K = 48, 12, 40, 4, 6
PARAMS = ("W_enc", "b_enc", "W_dec", "b_dec")


def randomise(sae, seed: int = 0):
    """Random (untied) weights and biases of some size, so that every gradient term matters."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name in PARAMS:
            p = getattr(sae, name)
            p.copy_(torch.randn(p.shape, generator=g) * (0.5 if name.startswith("b") else 1.0))
    return sae


def data(seed: int = 1, n: int = N) -> torch.Tensor:
    return torch.randn(n, D_IN, generator=torch.Generator().manual_seed(seed)) * 2


def state_with_dead(n_dead: int) -> TrainState:
    """A TrainState in which the first ``n_dead`` latents have not fired for longer than dead_steps (AuxK runs)."""
    since = torch.zeros(D_SAE)
    since[:n_dead] = 50.0
    cfg = {"aux_coef": 0.3, "aux_k": AUX_K, "dead_steps": 10}
    return TrainState(3, 10, cfg, since, any_dead=n_dead > 0)


def dense_aux(sae, pre, x, x_hat, state):
    """OpenAI's AuxK with dense tensors: top aux_k of the dead latents' pre-activations, ReLU, decoded without b_dec."""
    dead = state.since_fired > state.cfg["dead_steps"]
    vals, idx = pre.masked_fill(~dead, float("-inf")).topk(AUX_K, dim=-1)
    e_hat = torch.zeros_like(pre).scatter(-1, idx, vals.relu()) @ sae.W_dec
    return (e_hat - (x - x_hat).detach()).pow(2).sum(-1).mean()


def dense_topk_loss(sae: TopKSAE, x: torch.Tensor, state: TrainState) -> torch.Tensor:
    """The TopK loss written the plain way: dense pre-activations, dense codes, dense decode, autograd everywhere."""
    pre = sae.pre_acts(x)
    vals, idx = pre.topk(sae.k, dim=-1)
    f = torch.zeros_like(pre).scatter(-1, idx, vals.relu())
    x_hat = f @ sae.W_dec + sae.b_dec
    loss = (x_hat - x).pow(2).sum(-1).mean()
    if state.any_dead:
        loss = loss + state.cfg["aux_coef"] * dense_aux(sae, pre, x, x_hat, state)
    return loss


def dense_matryoshka_loss(sae: MatryoshkaBatchTopKSAE, x: torch.Tensor, state: TrainState) -> torch.Tensor:
    """Matryoshka BatchTopK the plain way (SAELens's BatchTopK: top k·n of the flattened ReLU'd batch), one dense decode per prefix."""
    pre = sae.pre_acts(x)
    acts = pre.relu().flatten()
    top = acts.topk(int(sae.k * len(x)))
    f = torch.zeros_like(acts).scatter(-1, top.indices, top.values).view_as(pre)
    loss = pre.new_zeros(())
    for w in sae.widths:
        x_hat = f[:, :w] @ sae.W_dec[:w] + sae.b_dec
        loss = loss + (x_hat - x).pow(2).sum(-1).mean()
    if state.any_dead:
        loss = loss + state.cfg["aux_coef"] * dense_aux(sae, pre, x, x_hat, state)
    return loss


def grads(sae, loss: torch.Tensor) -> dict[str, torch.Tensor]:
    sae.zero_grad(set_to_none=True)
    loss.backward()
    return {name: getattr(sae, name).grad.clone() for name in PARAMS}


def make(arch: str, apply_b_dec: bool):
    if arch == "topk":
        return randomise(TopKSAE(D_IN, D_SAE, apply_b_dec, seed=0, k=K)), dense_topk_loss
    return randomise(MatryoshkaBatchTopKSAE(D_IN, D_SAE, apply_b_dec, seed=0, k=K, matryoshka_widths=[3, 10, 25, D_SAE])), dense_matryoshka_loss


@pytest.mark.parametrize("arch", ["topk", "matryoshka_batchtopk"])
@pytest.mark.parametrize("apply_b_dec", [False, True])
@pytest.mark.parametrize("n_dead", [0, 3, 15])  # none (no AuxK), fewer dead than aux_k, more dead than aux_k
def test_sparse_gradients_equal_dense_autograd(arch, apply_b_dec, n_dead):
    sae, dense_loss = make(arch, apply_b_dec)
    x, state = data(), state_with_dead(n_dead)
    parts = sae.training_loss(x, state)
    sparse = grads(sae, parts.loss)
    dense = grads(sae, dense_loss(sae, x, state))
    torch.testing.assert_close(parts.loss, dense_loss(sae, x, state), rtol=1e-5, atol=1e-5)
    for name in PARAMS:
        assert dense[name].abs().max() > 0, f"{name}: the test needs a nonzero gradient"
        torch.testing.assert_close(sparse[name], dense[name], rtol=1e-5, atol=1e-5, msg=lambda m, name=name: f"{arch} d{name}: {m}")
    assert (parts.sparsity > 0) == (n_dead > 0), "AuxK runs exactly when a latent is dead"


def test_only_chosen_latents_get_encoder_gradients():
    sae, _ = make("topk", True)
    x = data()
    parts = sae.training_loss(x, state_with_dead(0))
    grads(sae, parts.loss)
    chosen = torch.zeros(D_SAE, dtype=torch.bool)
    chosen[sae.pre_acts(x).topk(K, dim=-1).indices.flatten()] = True
    assert (~chosen).any(), "the test needs latents that no token chose"
    assert (sae.W_enc.grad[:, ~chosen] == 0).all() and (sae.b_enc.grad[~chosen] == 0).all()
    assert (sae.W_dec.grad[~chosen] == 0).all()


class DenseMatmuls(TorchDispatchMode):
    """Records the multiply-adds of every matmul whose operands are all dense (strided) tensors."""

    def __init__(self):
        super().__init__()
        self.macs: list[int] = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        tensors = [a for a in args if isinstance(a, torch.Tensor)]
        if func.overloadpacket in (torch.ops.aten.mm, torch.ops.aten.addmm, torch.ops.aten.bmm) and all(t.layout == torch.strided for t in tensors):
            a, b = tensors[-2:]
            self.macs.append(a.shape[-2] * a.shape[-1] * b.shape[-1] * (a.shape[0] if a.dim() == 3 else 1))
        return func(*args, **(kwargs or {}))


@pytest.mark.parametrize("arch", ["topk", "matryoshka_batchtopk"])
def test_backward_skips_the_dense_encoder_matmul(arch):
    """Dense autograd spends n·d_in·d_sae multiply-adds on dW_enc in one dense matmul; the sparse backward has none that large."""
    n, d_in, d_sae = 256, 64, 1024
    sae = TopKSAE(d_in, d_sae, True, seed=0, k=8) if arch == "topk" else MatryoshkaBatchTopKSAE(d_in, d_sae, True, seed=0, k=8, matryoshka_widths=[64, 256, d_sae])
    x = torch.randn(n, d_in)
    state = TrainState(0, 10, {"aux_coef": 0.1, "aux_k": 32, "dead_steps": 10}, torch.zeros(d_sae))
    with DenseMatmuls() as forward:
        parts = sae.training_loss(x, state)
    with DenseMatmuls() as backward:
        parts.loss.backward()
    assert max(forward.macs) == n * d_in * d_sae, "the recorder sees the forward's dense pre-activation matmul"
    assert max(backward.macs, default=0) < 0.1 * n * d_in * d_sae, backward.macs
    assert sae.W_enc.grad is not None and sae.W_enc.grad.abs().sum() > 0
    with DenseMatmuls() as dense:  # and it sees the dense backward when there is one
        (sae.pre_acts(x).relu() @ sae.W_dec).pow(2).sum().backward()
    assert max(dense.macs) == n * d_in * d_sae


def test_batch_topk_is_exact_also_when_one_token_takes_many_latents():
    g = torch.Generator().manual_seed(3)
    pre = torch.randn(64, 200, generator=g)
    pre[5] += 6.0  # one token far above the rest: it holds far more than 2k of the batch's top entries
    pre[9, :150] = -1.0  # one token with few positive pre-activations
    for k in (1, 3, 7.5):
        rows, cols, values = batch_topk(pre, k)
        flat = pre.relu().flatten()
        top = flat.topk(int(k * len(pre)))
        want = torch.zeros_like(flat).scatter(0, top.indices, top.values).view_as(pre)
        got = torch.zeros_like(pre)
        got[rows, cols] = values
        assert torch.equal(got, want), k
        assert torch.equal(rows * 200 + cols, (rows * 200 + cols).sort().values), "entries come row-major"
    assert (rows == 5).sum() > 2 * 8, "the test needs a saturated token"
    assert (pre.relu().flatten() > 0).sum() > 7.5 * 64


def test_batch_topk_with_a_floor_is_the_same_selection():
    """A floor below the m-th largest entry (candidates above it) and one above it (too few: the exact fallback) give
    the same entries, in the same order, as no floor."""
    pre = torch.randn(64, 200, generator=torch.Generator().manual_seed(5)).round(decimals=1)  # many ties
    pre[3] += 4.0
    pre[7] = pre[6]  # duplicate tokens (a text's first token after BOS is dropped): ties at the m-th value across rows
    tied = torch.tensor([[2.0, 1.0, 0.0]] * 3)
    assert all(torch.equal(a, b) for a, b in zip(batch_topk(tied, 0.5, 1.5), batch_topk(tied, 0.5))), "ties go to the first entries, either way"
    for k in (1, 3, 7.5):
        want = batch_topk(pre, k)
        mth = want[2].min().item()
        for floor in (0.25 * mth, 0.9 * mth, 1.5 * mth, 100.0):
            got = batch_topk(pre, k, floor)
            for a, b in zip(got, want):
                assert torch.equal(a, b), (k, floor)


def test_batch_topk_matches_saelens():
    sae_lens = pytest.importorskip("sae_lens.saes.batchtopk_sae")
    pre = torch.randn(32, 100, generator=torch.Generator().manual_seed(4))
    rows, cols, values = batch_topk(pre, 4)
    got = torch.zeros_like(pre)
    got[rows, cols] = values
    assert torch.equal(got, sae_lens.BatchTopK(4)(pre))


@pytest.mark.parametrize("apply_b_dec", [False, True])
@pytest.mark.parametrize("decoder_norm", [False, True])
@pytest.mark.parametrize("mse", ["mean", "sum"])
def test_sparse_l1_step_equals_dense_autograd(apply_b_dec, decoder_norm, mse):
    """The standard SAE's L1 loss: while few pre-activations are positive the step runs sparse (monosem.sae.standard);
    loss and every gradient equal the dense formula, and at high density the dense path runs."""
    from monosem.sae import standard
    from monosem.sae.standard import StandardSAE

    sae = randomise(StandardSAE(D_IN, D_SAE, apply_b_dec, seed=0))
    with torch.no_grad():
        sae.b_enc.sub_(15.0)  # few positive pre-activations, as in a trained L1 SAE
    x = data()
    state = TrainState(3, 10, {"mse": mse, "l1_decoder_norm": decoder_norm, "l1": 0.7, "l1_warmup": 0.5}, torch.zeros(D_SAE))

    def dense_loss() -> torch.Tensor:
        f = sae.activate(sae.pre_acts(x))
        err = (f @ sae.W_dec + sae.b_dec - x).pow(2)
        rec = err.mean() if mse == "mean" else err.sum(-1).mean()
        l1 = (f * sae.W_dec.norm(dim=1)).sum(-1).mean() if decoder_norm else f.abs().mean()
        return rec + 0.7 * (4 / 5) * l1

    density = float((sae.pre_acts(x) > 0).float().mean())
    assert 0 < density <= standard.SPARSE_BELOW, density
    parts = sae.training_loss(x, state)
    sparse = grads(sae, parts.loss)
    want = dense_loss()
    dense = grads(sae, want)
    torch.testing.assert_close(parts.loss, want, rtol=1e-5, atol=1e-5)
    for name in PARAMS:
        assert dense[name].abs().max() > 0, f"{name}: the test needs a nonzero gradient"
        torch.testing.assert_close(sparse[name], dense[name], rtol=1e-5, atol=1e-5, msg=lambda m, name=name: f"l1 d{name}: {m}")
    assert torch.equal(parts.fired, (sae.pre_acts(x) > 0).any(0))
