"""Fused output layer backward: the sigmoid + MSE delta and each network's loss, in one pass."""
from __future__ import annotations

import torch
import triton
import triton.language as tl

from ._launch import (Launch, block_g, block_w, check_float, check_out, check_sizes, check_width, needs_int64,
                      out_buffer)
from .activations import sigmoid_grad

__all__ = ["output_delta"]


@triton.jit
def _output_delta_kernel(z_ptr, y_ptr, delta_ptr, loss_ptr,      # pointers
                         G, N,                                   # runtime sizes
                         s_zg, s_zn, s_zj,                       # z_out [G, N, n_out]
                         s_yg, s_yn, s_yj,                       # y [G, N, n_out] (s_yg unused if Y_SHARED)
                         s_dg, s_dn, s_dj,                       # delta [G, N, n_out]
                         s_lg,                                   # loss [G]
                         N_OUT: tl.constexpr, Y_SHARED: tl.constexpr, IDX64: tl.constexpr,
                         BLOCK_G: tl.constexpr, BLOCK_J: tl.constexpr):
    # Program pid: networks [pid * BLOCK_G, +BLOCK_G), every sample and output column
    # (the loss needs them all).  With d = z - y:
    #   delta = 2 d / (N * n_out) * sigmoid'(z)        loss = sum(d * d) / (N * n_out)
    # in the torch engine's order: d * (z - z^2), then the scale.
    pid = tl.program_id(0)
    offs_g = pid * BLOCK_G + tl.arange(0, BLOCK_G)
    cols = tl.arange(0, BLOCK_J)
    if IDX64:
        offs_g = offs_g.to(tl.int64)
        cols = cols.to(tl.int64)
    mask_g = offs_g < G
    sq = tl.zeros((BLOCK_G, BLOCK_J), dtype=z_ptr.dtype.element_ty)
    # N * n_out as a float tensor (N may be a constexpr: the JIT specialises N == 1).
    count = tl.zeros((BLOCK_G,), dtype=sq.dtype) + N * N_OUT
    scale = (2.0 / count)[:, None]
    for j0 in range(0, N_OUT, BLOCK_J):   # one chunk unless n_out > BLOCK_J
        offs_j = j0 + cols
        mask_j = offs_j < N_OUT
        mask = mask_g[:, None] & mask_j[None, :]
        o_z = offs_g[:, None] * s_zg + offs_j[None, :] * s_zj
        o_d = offs_g[:, None] * s_dg + offs_j[None, :] * s_dj
        if Y_SHARED:
            o_y = offs_j * s_yj                                           # [BLOCK_J]: y[n, j]
        else:
            o_y = offs_g[:, None] * s_yg + offs_j[None, :] * s_yj
        for n in range(N):
            b_z = tl.load(z_ptr + o_z, mask=mask, other=0.0)
            if Y_SHARED:
                b_y = tl.load(y_ptr + o_y, mask=mask_j, other=0.0)[None, :]
            else:
                b_y = tl.load(y_ptr + o_y, mask=mask, other=0.0)
            d = b_z - b_y  # 0 in masked lanes: they add nothing to the loss
            sq += d * d
            tl.store(delta_ptr + o_d, d * sigmoid_grad(b_z) * scale, mask=mask)
            o_z += s_zn
            o_y += s_yn
            o_d += s_dn
    loss = tl.sum(sq, axis=1) / count
    tl.store(loss_ptr + offs_g * s_lg, loss, mask=mask_g)


def _launch_args(z_out, y, delta, loss, bg: int | None = None) -> Launch:
    G, N, n_out = z_out.shape
    shared = y.dim() == 2
    s_y = (0, *y.stride()) if shared else y.stride()
    bj = block_w(n_out)
    bg = bg or block_g(bj, z_out.element_size())  # bg: override, for bench_kernels.py --sweep
    args = [z_out, y, delta, loss, G, N, *z_out.stride(), *s_y, *delta.stride(), loss.stride(0)]
    meta = dict(N_OUT=n_out, Y_SHARED=shared, IDX64=needs_int64(z_out, y, delta, loss), BLOCK_G=bg, BLOCK_J=bj)
    return Launch(_output_delta_kernel, (triton.cdiv(G, bg),), args, meta)


def output_delta(z_out: torch.Tensor, y: torch.Tensor, delta: torch.Tensor | None = None,
                 loss: torch.Tensor | None = None):
    """Output layer (sigmoid + MSE): z_out [G, N, n_out], y [N, n_out] (shared) or
    [G, N, n_out] -> ``(delta [G, N, n_out], loss [G])``, written into the buffers if given.

    ``delta = 2 (z - y) / (N n_out) * z (1 - z)``, ``loss[g] = mean((z[g] - y[g])**2)``.
    """
    op = "output_delta"
    dtype = check_float(op, ("z_out", z_out), ("y", y))
    if z_out.dim() != 3:
        raise ValueError(f"{op}: z_out must be [G, N, n_out], got {list(z_out.shape)}")
    G, N, n_out = z_out.shape
    if tuple(y.shape) not in ((N, n_out), (G, N, n_out)):
        raise ValueError(f"{op}: y must be [{N}, {n_out}] or [{G}, {N}, {n_out}] to match z_out, got {list(y.shape)}")
    check_sizes(op, G, N)
    check_width("n_out", n_out)
    delta = out_buffer(op, "delta", delta, (G, N, n_out), z_out)
    if loss is None:
        loss = torch.empty(G, dtype=dtype, device=z_out.device)
    else:
        check_out(op, "loss", loss, (G,), dtype, z_out.device)
    _launch_args(z_out, y, delta, loss)()
    return delta, loss
