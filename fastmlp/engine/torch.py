"""The batched torch engine: the lab's equations on ``[G, ...]`` tensors, without autograd.

This is the CPU backend (``BACKEND``, registered as "torch") and the oracle for every Triton kernel in ``fastmlp.kernels``.
Four ops, the same set the Triton backend implements (docs/backprop.md derives them):

=================  ======================================================================
``linear_act_fwd`` ``Z_out = act(X W + b)``                        (forward, one layer)
``output_delta``   ``Delta^L = 2 (Z - Y) / (N n_out) * Z (1 - Z)`` and each network's MSE
``delta_bwd``      ``Delta^(l-1) = (Delta^l W^T) * (1 - Z_out^(l-1)) * (1 + Z_out^(l-1))``
``grad_update``    ``W -= lr * Z_prev^T Delta``,  ``b -= lr * sum_n Delta``  (lr per network)
=================  ======================================================================

Shapes: ``x [N, n_in]`` (shared by all networks) or ``[G, N, n_in]``, ``w [G, n_in, n_out]``,
``b [G, n_out]``, ``z, delta [G, N, n_out]``, ``loss, lr [G]``.  Only ``z_out`` is kept per
layer: both activation derivatives are functions of it.

Every op accepts tensors of any strides and writes into ``out=`` buffers when given (the
training loop allocates them once, so an epoch allocates nothing).  How the products are
evaluated depends on their size and on the memory layout (see ``fastmlp.population``):

* a contraction over a *small* dimension (<= ``SMALL``: the lab's widths 2, 5, 3 and N = 5)
  is a short loop of broadcast multiply-adds, each a vector operation over all G networks
  at once -- far cheaper than ``bmm`` on thousands of 5x2 matrices, whose per-matrix
  overhead dominates (bench/bench_train.py measures both);
* a first layer whose input is shared by all networks is one GEMM,
  ``[N, n_in] @ [n_in, n_out * G]``, when the tensors are network-minor;
* larger contractions use batched matmul.
"""
from __future__ import annotations

import torch

from ..architecture import SMALL_CONTRACTION as SMALL
from ..layout import is_network_minor, network_minor
from .base import LayerBackend

__all__ = ["linear_act_fwd", "output_delta", "delta_bwd", "grad_update", "apply_act", "SMALL", "BACKEND"]

# Contractions up to SMALL (architecture.SMALL_CONTRACTION) run as broadcast multiply-add
# loops; longer ones as bmm.


def _new(shape, like: torch.Tensor) -> torch.Tensor:
    return network_minor(shape, like.dtype, like.device)


def _flat_network_minor(t: torch.Tensor):
    """``t [G, a, b]`` network-minor -> the ``[a, b * G]`` view of its memory, else None."""
    if not is_network_minor(t):
        return None
    G, a, b = t.shape
    return t.permute(1, 2, 0).reshape(a, b * G)


def apply_act(z: torch.Tensor, act: str) -> torch.Tensor:
    """In place: tanh (hidden layers) or sigmoid (output layer)."""
    if act == "tanh":
        return z.tanh_()
    if act == "sigmoid":
        return z.sigmoid_()
    raise ValueError(f"act must be 'tanh' or 'sigmoid', got {act!r}")


def linear_act_fwd(x: torch.Tensor, w: torch.Tensor, b: torch.Tensor, act: str,
                   out: torch.Tensor | None = None) -> torch.Tensor:
    """``act(x @ w + b)``: x [N, n_in] or [G, N, n_in], w [G, n_in, n_out], b [G, n_out] -> [G, N, n_out]."""
    G, n_in, n_out = w.shape
    N = x.shape[-2]
    if out is None:
        out = _new((G, N, n_out), w)
    # (the flat views are built only for a shared input: building views costs as much as a
    # small op, and an epoch runs dozens of them)
    out_flat = _flat_network_minor(out) if x.dim() == 2 else None
    w_flat = _flat_network_minor(w) if out_flat is not None else None
    if w_flat is not None and b.t().is_contiguous():
        # Shared input, network-minor tensors: every network's product is one column block
        # of a single GEMM [N, n_in] @ [n_in, n_out * G], bias broadcast over rows.
        torch.addmm(b.t().reshape(1, n_out * G), x, w_flat, out=out_flat)
    elif n_in <= SMALL:
        out.copy_(b.unsqueeze(1).expand(G, N, n_out))
        # unbind makes all the slices in one call: [.., N, 1] columns of x, [G, 1, n_out] rows of w
        for x_i, w_i in zip(x.unsqueeze(-1).unbind(-2), w.unsqueeze(1).unbind(2)):
            out.addcmul_(x_i, w_i)
    else:
        xb = x.unsqueeze(0).expand(G, N, n_in) if x.dim() == 2 else x
        torch.baddbmm(b.unsqueeze(1), xb, w, out=out)
    return apply_act(out, act)


def output_delta(z_out: torch.Tensor, y: torch.Tensor, delta: torch.Tensor | None = None,
                 loss: torch.Tensor | None = None, tmp: torch.Tensor | None = None):
    """Output layer (sigmoid + MSE): returns ``(delta [G, N, n_out], loss [G])``.

    ``loss[g] = mean((z - y)**2)`` over the N * n_out elements of network g and
    ``delta = 2 (z - y) / (N * n_out) * z (1 - z)``.  ``y`` is [N, n_out] (shared) or
    [G, N, n_out]; ``tmp`` is scratch of z's shape.
    """
    G, N, n_out = z_out.shape
    if delta is None:
        delta = _new(z_out.shape, z_out)
    if tmp is None:
        tmp = _new(z_out.shape, z_out)
    if loss is None:
        loss = torch.empty(G, dtype=z_out.dtype, device=z_out.device)
    torch.sub(z_out, y, out=delta)
    torch.mul(delta, delta, out=tmp)
    torch.mean(tmp, dim=(1, 2), out=loss)
    # sigmoid' = z (1 - z): separate kernels, nothing a compiler can contract, as the
    # programs compute it (fastmlp/program.py)
    torch.mul(z_out, -1.0, out=tmp).add_(1.0).mul_(z_out)
    delta.mul_(tmp).mul_(2.0 / (N * n_out))
    return delta, loss


def delta_bwd(delta: torch.Tensor, w: torch.Tensor, z_prev: torch.Tensor,
              out: torch.Tensor | None = None, tmp: torch.Tensor | None = None) -> torch.Tensor:
    """``(delta @ w^T) * (1 - z_prev) * (1 + z_prev)``: delta [G, N, n_out], w [G, n_in, n_out],
    z_prev [G, N, n_in] (tanh outputs of the layer below) -> [G, N, n_in]."""
    G, n_in, n_out = w.shape
    if out is None:
        out = _new(z_prev.shape, z_prev)
    if tmp is None:
        tmp = _new(z_prev.shape, z_prev)
    if n_out <= SMALL:
        d_cols = delta.unsqueeze(-1).unbind(-2)  # [G, N, 1] each
        w_cols = w.unsqueeze(1).unbind(-1)  # [G, 1, n_in] each
        torch.mul(d_cols[0], w_cols[0], out=out)
        for d_j, w_j in zip(d_cols[1:], w_cols[1:]):
            out.addcmul_(d_j, w_j)
    else:
        torch.bmm(delta, w.transpose(1, 2), out=out)
    # tanh' from the saved output as (1 - z) (1 + z), in the programs' order: out * (1 - z) * (1 + z)
    # (out - out * z^2 was one addcmul, contracted to an FMA or not depending on the build)
    out.mul_(torch.mul(z_prev, -1.0, out=tmp).add_(1.0))
    out.mul_(torch.add(z_prev, 1.0, out=tmp))
    return out


def grad_update(z_prev: torch.Tensor, delta: torch.Tensor, w: torch.Tensor, b: torch.Tensor,
                lr: torch.Tensor, frozen: torch.Tensor | None = None,
                weight_grad: torch.Tensor | None = None, bias_grad: torch.Tensor | None = None,
                keep_grads: bool = True):
    """Gradient and SGD step for one layer, in place on ``w`` and ``b``.

    ``weight_grad = z_prev^T delta`` ([G, n_in, n_out]), ``bias_grad = sum_n delta``
    ([G, n_out]), then ``w -= lr * weight_grad`` and ``b -= lr * bias_grad`` with ``lr``
    [G].  ``z_prev`` is the layer's input: x [N, n_in] (shared) or [G, N, n_in].
    Networks flagged in ``frozen`` ([G] bool, optional) are left bitwise untouched, even
    when their gradients are non-finite.  Returns ``(weight_grad, bias_grad)``.

    ``keep_grads=False`` says the caller will not read the gradients (the training loop):
    an engine may then skip writing them (the Triton engine does), and ``(None, None)`` is
    returned.  Here the buffers, given or allocated, are the scratch the update needs.
    """
    G, n_in, n_out = w.shape
    N = delta.shape[1]
    if weight_grad is None:
        weight_grad = _new(w.shape, w)
    if bias_grad is None:
        bias_grad = _new(b.shape, b)
    wg_flat = _flat_network_minor(weight_grad) if z_prev.dim() == 2 else None
    delta_flat = _flat_network_minor(delta) if wg_flat is not None else None  # [N, n_out * G]
    if delta_flat is not None:
        # Shared input: one GEMM [n_in, N] @ [N, n_out * G].
        torch.mm(z_prev.t(), delta_flat, out=wg_flat)
    elif N <= SMALL:
        zp = z_prev.unsqueeze(0) if z_prev.dim() == 2 else z_prev
        z_rows = zp.unsqueeze(-1).unbind(1)  # [G, n_in, 1] each
        d_rows = delta.unsqueeze(2).unbind(1)  # [G, 1, n_out] each
        torch.mul(z_rows[0], d_rows[0], out=weight_grad)
        for z_n, d_n in zip(z_rows[1:], d_rows[1:]):
            weight_grad.addcmul_(z_n, d_n)
    else:
        zp = z_prev.unsqueeze(0).expand(G, N, n_in) if z_prev.dim() == 2 else z_prev
        torch.bmm(zp.transpose(1, 2), delta, out=weight_grad)
    torch.sum(delta, dim=1, out=bias_grad)
    if frozen is not None:
        weight_grad.masked_fill_(frozen[:, None, None], 0.0)
        bias_grad.masked_fill_(frozen[:, None], 0.0)
    w.addcmul_(weight_grad, lr[:, None, None], value=-1.0)
    b.addcmul_(bias_grad, lr[:, None], value=-1.0)
    return (weight_grad, bias_grad) if keep_grads else (None, None)


class TorchBackend(LayerBackend):
    """The four ops above, on any device torch runs on; no limits."""

    name = "torch"
    ops_module = __name__


BACKEND = TorchBackend()
