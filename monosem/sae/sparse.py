"""Sparse training kernels of the TopK-style SAEs: only the latents a token uses receive encoder gradients.

A TopK or BatchTopK SAE computes all pre-activations [n, d_sae] to choose its active latents, but its loss
depends on the chosen entries only. Dense autograd still spends a second [n, d_in] x [d_in, d_sae] matmul
on ``dW_enc`` (almost all zeros); here the chosen entries carry the graph instead (as OpenAI's TopK kernels
do), and the backward pass touches only their encoder columns:

- ``sparse_code``: the decode of chosen (token, latent) entries (``embedding_bag``: only their rows of W_dec are
  read). Backward: the gradient of each entry's activation is a sampled product (grad_out[token] . W_dec[latent]);
  with the entries in latent-major order, ``dW_dec`` and ``dW_enc`` are sparse [d_sae, n] matrices times grad_out
  and times the encoder input; ``db_enc`` sums by latent, ``db_dec`` goes back through ``W_enc``.
- ``column_pre``: pre-activations of a few whole columns (the dead latents of AuxK); backward = a dense
  matmul over those columns only.
- ``auxk_loss``: OpenAI's AuxK loss on top of ``column_pre``.

Results equal dense autograd up to float rounding (``tests/sae/test_sparse.py``).
"""

from __future__ import annotations

import warnings
from typing import TYPE_CHECKING, Any

import numpy as np
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
        pre = x_in @ sae.W_enc
        return x_in, pre.add_(sae.b_enc)  # in place: the same sum as SAELens's, without a second [n, d_sae] buffer


def argsort_distinct(key: Tensor) -> Tensor:
    """Indices that sort ``key`` (distinct int64 values); numpy on the CPU, whose single-threaded sort keeps its speed
    on a busy machine where torch's parallel sort can take 100x longer."""
    if key.device.type == "cpu":
        return torch.from_numpy(np.argsort(key.numpy()))
    return torch.argsort(key)


# "Sparse CSR tensor support is in beta": CSR x dense is all this uses. One filter for that message, set once here:
# warnings.catch_warnings() around each call is not thread-safe, and the SAEs train in two threads.
warnings.filterwarnings("ignore", message="Sparse CSR tensor support is in beta", category=UserWarning)


def _csr(crow: Tensor, col: Tensor, values: Tensor, size: tuple[int, int]) -> Tensor:
    return torch.sparse_csr_tensor(crow, col, values, size, check_invariants=False)


def _enc_tensors(sae: "SAE") -> tuple[Tensor, Tensor, Tensor | None]:
    return sae.W_enc, sae.b_enc, sae.b_dec if sae.apply_b_dec_to_input else None


def _latent_major(cols: Tensor, d_sae: int) -> tuple[Tensor, Tensor]:
    """The order that sorts the entries by latent (stable: unique keys) and the CSR row pointers of that order [d_sae + 1]."""
    order = argsort_distinct(cols * cols.numel() + torch.arange(cols.numel(), device=cols.device))
    crow = torch.zeros(d_sae + 1, dtype=torch.int64, device=cols.device)
    crow[1:] = torch.bincount(cols, minlength=d_sae).cumsum(0)
    return order, crow


def _encoder_grads(x_in: Tensor, W_enc: Tensor, tok_rows: Tensor, cols: Tensor, grad_pre: Tensor, order: Tensor, crow: Tensor,
                   with_b_dec: bool) -> tuple[Tensor, Tensor, Tensor | None]:
    """dW_enc [d_in, d_sae], db_enc and db_dec (when the SAE applies b_dec to its input) from the gradient of the chosen
    entries' pre-activations: a sparse [d_sae, n] matrix times the encoder input."""
    d_sae = W_enc.shape[1]
    dW_enc = (_csr(crow, tok_rows[order], grad_pre[order], (d_sae, x_in.shape[0])) @ x_in).t()
    db_enc = torch.zeros(d_sae, dtype=grad_pre.dtype, device=grad_pre.device).index_add_(0, cols, grad_pre)
    return dW_enc, db_enc, -(W_enc @ db_enc) if with_b_dec else None


class _SparseCode(torch.autograd.Function):
    """The decoded output [n_out, d_in] = sum over the entries e of each output row of relu(top[e]) * W_dec[cols[e]],
    with the sparse backward described in the module docstring (one latent-major ordering serves W_dec and W_enc)."""

    @staticmethod
    def forward(ctx: Any, top: Tensor, x_in: Tensor, W_enc: Tensor, b_enc: Tensor, b_dec: Tensor | None, W_dec: Tensor, tok_rows: Tensor,
                out_rows: Tensor, cols: Tensor, n_out: int) -> Tensor:
        acts = top.relu()
        offsets = _row_offsets(out_rows, n_out)  # out_rows is sorted: entries come row by row
        ctx.save_for_backward(x_in, W_enc, W_dec, acts, tok_rows, out_rows, cols, offsets)
        ctx.with_b_dec = b_dec is not None
        return embedding_bag(cols, W_dec, offsets[:-1], per_sample_weights=acts, mode="sum")

    @staticmethod
    def backward(ctx: Any, grad_out: Tensor) -> tuple[Tensor | None, ...]:  # type: ignore[override]
        x_in, W_enc, W_dec, acts, tok_rows, out_rows, cols, offsets = ctx.saved_tensors
        order, crow = _latent_major(cols, W_dec.shape[0])
        grad_acts, dW_dec = _decode_grads(grad_out, W_dec, acts, out_rows, cols, offsets, order, crow)
        dW_enc, db_enc, db_dec = _encoder_grads(x_in, W_enc, tok_rows, cols, grad_acts * (acts > 0), order, crow, ctx.with_b_dec)
        return None, None, dW_enc, db_enc, db_dec, dW_dec, None, None, None, None


def _row_offsets(out_rows: Tensor, n_out: int) -> Tensor:
    """CSR row pointers [n_out + 1] of entries sorted by output row."""
    offsets = torch.zeros(n_out + 1, dtype=torch.int64, device=out_rows.device)
    offsets[1:] = torch.bincount(out_rows, minlength=n_out).cumsum(0)
    return offsets


def _decode_grads(grad_out: Tensor, W_dec: Tensor, acts: Tensor, out_rows: Tensor, cols: Tensor, offsets: Tensor, order: Tensor,
                  crow: Tensor) -> tuple[Tensor, Tensor]:
    """The decode's backward: the gradient of each entry's activation (grad_out[row] . W_dec[col], a sampled product)
    and dW_dec [d_sae, d_in] (a sparse [d_sae, n_out] matrix in latent-major ``order`` times grad_out)."""
    d_sae, n_out = W_dec.shape[0], grad_out.shape[0]
    grad_out = grad_out.contiguous()
    pattern = _csr(offsets, cols, torch.zeros_like(acts), (n_out, d_sae))
    grad_acts = torch.sparse.sampled_addmm(pattern, grad_out, W_dec.t(), beta=0.0).values()
    dW_dec = _csr(crow, out_rows[order], acts[order], (d_sae, n_out)) @ grad_out  # zero rows for unused latents
    return grad_acts, dW_dec


class _SparseDecode(torch.autograd.Function):
    """The decode [n_out, d_in] of given activations ``acts`` [m] of (row, latent) entries sorted by row, with the sparse
    backward of ``_SparseCode``'s decode (for ReLU SAEs, whose activations carry their own graph: ``sparse_acts``)."""

    @staticmethod
    def forward(ctx: Any, acts: Tensor, W_dec: Tensor, out_rows: Tensor, cols: Tensor, n_out: int) -> Tensor:
        offsets = _row_offsets(out_rows, n_out)
        ctx.save_for_backward(W_dec, acts, out_rows, cols, offsets)
        return embedding_bag(cols, W_dec, offsets[:-1], per_sample_weights=acts, mode="sum")

    @staticmethod
    def backward(ctx: Any, grad_out: Tensor) -> tuple[Tensor | None, ...]:  # type: ignore[override]
        W_dec, acts, out_rows, cols, offsets = ctx.saved_tensors
        order, crow = _latent_major(cols, W_dec.shape[0])
        grad_acts, dW_dec = _decode_grads(grad_out, W_dec, acts, out_rows, cols, offsets, order, crow)
        return grad_acts, dW_dec, None, None, None


class _SparseActs(torch.autograd.Function):
    """relu(top) [m] of chosen (token, latent) entries, attached to the encoder with the sparse backward of ``_SparseCode``
    (encoder gradients at the chosen latents only): for ReLU SAEs, whose loss also reads the activations (L1)."""

    @staticmethod
    def forward(ctx: Any, top: Tensor, x_in: Tensor, W_enc: Tensor, b_enc: Tensor, b_dec: Tensor | None, tok_rows: Tensor, cols: Tensor) -> Tensor:
        acts = top.relu()
        ctx.save_for_backward(x_in, W_enc, acts, tok_rows, cols)
        ctx.with_b_dec = b_dec is not None
        return acts

    @staticmethod
    def backward(ctx: Any, grad_acts: Tensor) -> tuple[Tensor | None, ...]:  # type: ignore[override]
        x_in, W_enc, acts, tok_rows, cols = ctx.saved_tensors
        order, crow = _latent_major(cols, W_enc.shape[1])
        dW_enc, db_enc, db_dec = _encoder_grads(x_in, W_enc, tok_rows, cols, grad_acts * (acts > 0), order, crow, ctx.with_b_dec)
        return None, None, dW_enc, db_enc, db_dec, None, None


def sparse_acts(sae: "SAE", x_in: Tensor, top: Tensor, tok_rows: Tensor, cols: Tensor) -> Tensor:
    """relu(``top``) [m] (= pre[tok_rows, cols], computed without a graph) with gradients into the encoder at the chosen
    latents only; decode them with ``embedding_bag(cols, W_dec, ..., per_sample_weights=acts)``."""
    W_enc, b_enc, b_dec = _enc_tensors(sae)
    return _SparseActs.apply(top, x_in, W_enc, b_enc, b_dec, tok_rows, cols)  # type: ignore[no-any-return]


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


def sparse_code(sae: "SAE", x_in: Tensor, top: Tensor, tok_rows: Tensor, cols: Tensor, out_rows: Tensor | None = None, n_out: int | None = None) -> Tensor:
    """The decode without b_dec [n_out, d_in] of the chosen entries: token ``tok_rows[e]``, latent ``cols[e]``,
    activation relu(``top[e]``) (= pre[tok_rows, cols], computed without a graph), summed into output row
    ``out_rows[e]`` (default: the token; entries sorted by it). Backward gives W_enc, b_enc (and b_dec) gradients at the
    chosen latents only, and W_dec gradients at their rows."""
    W_enc, b_enc, b_dec = _enc_tensors(sae)
    out_rows = tok_rows if out_rows is None else out_rows
    n_out = x_in.shape[0] if n_out is None else n_out
    return _SparseCode.apply(top, x_in, W_enc, b_enc, b_dec, sae.W_dec, tok_rows, out_rows, cols, n_out)  # type: ignore[no-any-return]


def sparse_decode(sae: "SAE", acts: Tensor, rows: Tensor, cols: Tensor, n_out: int) -> Tensor:
    """The decode without b_dec [n_out, d_in] of activations ``acts`` [m] (with their own graph, e.g. ``sparse_acts``) of
    the entries (``rows``, sorted, and ``cols``): reads and updates only their rows of W_dec."""
    return _SparseDecode.apply(acts, sae.W_dec, rows, cols, n_out)  # type: ignore[no-any-return]


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
