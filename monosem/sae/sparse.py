"""Sparse training kernels of the TopK-style SAEs: only the latents a token uses receive encoder gradients.

A TopK or BatchTopK SAE computes all pre-activations [n, d_sae] to choose its active latents, but its loss
depends on the chosen entries only. Dense autograd still spends a second [n, d_in] x [d_in, d_sae] matmul
on ``dW_enc`` (almost all zeros); here the chosen entries carry the graph instead (as OpenAI's TopK kernels
do), and the backward pass touches only their encoder columns:

- ``chosen_pre``: pre-activations at chosen (token, latent) entries; backward = a latent-major sparse
  matrix [d_sae, n] times the encoder input, ``db_enc`` by latent, ``db_dec`` through ``W_enc``.
- ``column_pre``: pre-activations of a few whole columns (the dead latents of AuxK); backward = a dense
  matmul over those columns only.
- ``auxk_loss``: OpenAI's AuxK loss on top of ``column_pre``.

The decode stays sparse through ``embedding_bag`` (only the chosen rows of W_dec are read and receive
gradients). Results equal dense autograd up to float rounding (``tests/sae/test_sparse.py``).
"""

from __future__ import annotations

import warnings
from typing import TYPE_CHECKING, Any

import torch
from torch import Tensor
from torch.nn.functional import embedding_bag

if TYPE_CHECKING:
    from monosem.sae.base import SAE


def encoder_input(sae: "SAE", x: Tensor) -> tuple[Tensor, Tensor]:
    """The encoder input [n, d_in] (x - b_dec when the SAE applies b_dec to its input) and all pre-activations
    [n, d_sae], both without a graph; pre is computed in SAELens's order, so training chooses the latents
    inference would."""
    with torch.no_grad():
        x_in = x - sae.b_dec if sae.apply_b_dec_to_input else x
        return x_in, x_in @ sae.W_enc + sae.b_enc


def latent_major(rows: Tensor, cols: Tensor, values: Tensor, d_sae: int, n: int) -> Tensor:
    """The entries ``values[e]`` at (token ``rows[e]``, latent ``cols[e]``) as a CSR matrix [d_sae, n] whose rows are
    latents. Each latent's entries keep their given order, so the sums in the product are deterministic."""
    n_entries = cols.numel()
    key = cols * n_entries + torch.arange(n_entries, device=cols.device)  # unique keys: any sort gives the same order
    order = torch.argsort(key)
    crow = torch.zeros(d_sae + 1, dtype=torch.int64, device=cols.device)
    crow[1:] = torch.bincount(cols, minlength=d_sae).cumsum(0)
    with warnings.catch_warnings():  # "sparse CSR tensor support is in beta": CSR x dense is all this uses
        warnings.simplefilter("ignore", UserWarning)
        return torch.sparse_csr_tensor(crow, rows[order], values[order], (d_sae, n), check_invariants=False)


def _enc_tensors(sae: "SAE") -> tuple[Tensor, Tensor, Tensor | None]:
    return sae.W_enc, sae.b_enc, sae.b_dec if sae.apply_b_dec_to_input else None


class _ChosenPre(torch.autograd.Function):
    """values [m] = pre[rows, cols], with the sparse backward described in the module docstring."""

    @staticmethod
    def forward(ctx: Any, values: Tensor, x_in: Tensor, W_enc: Tensor, b_enc: Tensor, b_dec: Tensor | None, rows: Tensor, cols: Tensor) -> Tensor:
        ctx.save_for_backward(x_in, W_enc, rows, cols)
        ctx.with_b_dec = b_dec is not None
        return values.clone()

    @staticmethod
    def backward(ctx: Any, grad: Tensor) -> tuple[Tensor | None, ...]:  # type: ignore[override]
        x_in, W_enc, rows, cols = ctx.saved_tensors
        d_sae = W_enc.shape[1]
        grad = grad.contiguous()
        dW_enc = db_dec = None
        if ctx.needs_input_grad[2]:
            dW_enc = (latent_major(rows, cols, grad, d_sae, x_in.shape[0]) @ x_in).t()  # [d_in, d_sae]; zero where no token chose a latent
        db_enc = torch.zeros(d_sae, dtype=grad.dtype, device=grad.device).index_add_(0, cols, grad)
        if ctx.with_b_dec and ctx.needs_input_grad[4]:
            db_dec = -(W_enc @ db_enc)
        return None, None, dW_enc, db_enc, db_dec, None, None


class _ColumnPre(torch.autograd.Function):
    """sub [n, c] = pre[:, cols] (distinct cols), with a backward restricted to those encoder columns."""

    @staticmethod
    def forward(ctx: Any, sub: Tensor, x_in: Tensor, W_enc: Tensor, b_enc: Tensor, b_dec: Tensor | None, cols: Tensor) -> Tensor:
        ctx.save_for_backward(x_in, W_enc, cols)
        ctx.with_b_dec = b_dec is not None
        return sub.clone()

    @staticmethod
    def backward(ctx: Any, grad: Tensor) -> tuple[Tensor | None, ...]:  # type: ignore[override]
        x_in, W_enc, cols = ctx.saved_tensors
        dW_enc = db_dec = None
        if ctx.needs_input_grad[2]:
            dW_enc = torch.zeros_like(W_enc).index_copy_(1, cols, x_in.t() @ grad)
        grad_sum = grad.sum(0)
        db_enc = torch.zeros(W_enc.shape[1], dtype=grad.dtype, device=grad.device).index_copy_(0, cols, grad_sum)
        if ctx.with_b_dec and ctx.needs_input_grad[4]:
            db_dec = -(W_enc[:, cols] @ grad_sum)
        return None, None, dW_enc, db_enc, db_dec, None


def chosen_pre(sae: "SAE", x_in: Tensor, values: Tensor, rows: Tensor, cols: Tensor) -> Tensor:
    """``values`` [m] (= pre[rows, cols], computed without a graph) attached to the graph of ``sae``'s encoder, so
    that backward gives W_enc, b_enc (and b_dec) gradients at the chosen latents only."""
    W_enc, b_enc, b_dec = _enc_tensors(sae)
    return _ChosenPre.apply(values, x_in, W_enc, b_enc, b_dec, rows, cols)  # type: ignore[no-any-return]


def column_pre(sae: "SAE", x_in: Tensor, pre: Tensor, cols: Tensor) -> Tensor:
    """pre[:, cols] [n, len(cols)] attached to the graph of ``sae``'s encoder columns ``cols`` (distinct) only."""
    W_enc, b_enc, b_dec = _enc_tensors(sae)
    return _ColumnPre.apply(pre.index_select(1, cols), x_in, W_enc, b_enc, b_dec, cols)  # type: ignore[no-any-return]


def auxk_loss(sae: "SAE", x_in: Tensor, pre: Tensor, residual: Tensor, dead: Tensor, aux_k: int) -> Tensor:
    """OpenAI's AuxK loss: the ``aux_k`` largest (ReLU'd) pre-activations among the ``dead`` latents [d_sae] of each
    token reconstruct ``residual`` [n, d_in] (x - x_hat, no graph) through W_dec without b_dec. Only dead latents
    are computed and receive gradients; 0 when none is dead."""
    dead_idx = dead.nonzero().squeeze(1)
    if dead_idx.numel() == 0:
        return residual.new_zeros(())
    sub = column_pre(sae, x_in, pre, dead_idx)  # [n, n_dead]
    vals, j = sub.topk(min(aux_k, dead_idx.numel()), dim=-1, sorted=False)
    e_hat = embedding_bag(dead_idx[j], sae.W_dec, per_sample_weights=vals.relu(), mode="sum")
    return (e_hat - residual).pow(2).sum(-1).mean()
