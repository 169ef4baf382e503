"""Fused delta propagation: ``delta_prev = (delta @ w^T) * tanh'(z_prev)`` for every network."""
from __future__ import annotations

import torch
import triton
import triton.language as tl

from .tiles import tile_offsets
from ._launch import (Launch, block_g, block_w, check_float, check_shape, check_sizes, check_width, needs_int64,
                      out_buffer)
from .activations import tanh_grad

__all__ = ["delta_bwd"]


@triton.jit
def _delta_bwd_kernel(delta_ptr, w_ptr, z_ptr, out_ptr,          # pointers
                      G, N,                                       # runtime sizes
                      s_dg, s_dn, s_dj,                           # delta [G, N, n_out]
                      s_wg, s_wi, s_wj,                           # w [G, n_in, n_out]
                      s_zg, s_zn, s_zi,                           # z_prev [G, N, n_in]
                      s_og, s_on, s_oi,                           # out [G, N, n_in]
                      N_IN: tl.constexpr, N_OUT: tl.constexpr, IDX64: tl.constexpr,
                      BLOCK_G: tl.constexpr, BLOCK_I: tl.constexpr):
    # Program (pid_g, pid_i): networks [pid_g * BLOCK_G, +BLOCK_G), columns
    # [pid_i * BLOCK_I, +BLOCK_I) of the layer below, every sample.  Per sample n:
    #   s[g, i] = sum_j delta[g, n, j] * w[g, i, j]            (broadcast multiply-adds, j loop)
    #   out[g, n, i] = s * tanh'(z_prev) = s * (1 - z_prev^2)
    # (1 - z^2 is exact for |z| >= 0.71 once z^2 is rounded (Sterbenz), so this form keeps
    # one rounding where the torch engine's s - s * z^2 loses eps / (1 - z^2) near |z| = 1.)
    offs_g, offs_i, mask_g, mask = tile_offsets(G, N_IN, BLOCK_G, BLOCK_I, IDX64)

    # Offsets (int32 unless IDX64), not 64-bit pointer tiles, are carried through the loops.
    o_w0 = offs_g[:, None] * s_wg + offs_i[None, :] * s_wi               # w column j = 0
    p_d = delta_ptr + offs_g * s_dg                                       # [BLOCK_G], sample 0
    o_z = offs_g[:, None] * s_zg + offs_i[None, :] * s_zi
    o_o = offs_g[:, None] * s_og + offs_i[None, :] * s_oi
    for n in range(N):
        acc = tl.zeros((BLOCK_G, BLOCK_I), dtype=w_ptr.dtype.element_ty)
        p_dj = p_d
        o_wj = o_w0
        for j in range(N_OUT):
            b_d = tl.load(p_dj, mask=mask_g, other=0.0)
            acc += b_d[:, None] * tl.load(w_ptr + o_wj, mask=mask, other=0.0)
            p_dj += s_dj
            o_wj += s_wj
        b_z = tl.load(z_ptr + o_z, mask=mask, other=0.0)
        tl.store(out_ptr + o_o, acc * tanh_grad(b_z), mask=mask)
        p_d += s_dn
        o_z += s_zn
        o_o += s_on


def _launch_args(delta, w, z_prev, out, bg: int | None = None) -> Launch:
    G, n_in, n_out = w.shape
    N = delta.shape[1]
    bi = block_w(n_in)
    bg = bg or block_g(bi, w.element_size())  # bg: override, for bench_kernels.py --sweep
    grid = (triton.cdiv(G, bg), triton.cdiv(n_in, bi))
    args = [delta, w, z_prev, out, G, N, *delta.stride(), *w.stride(), *z_prev.stride(), *out.stride()]
    meta = dict(N_IN=n_in, N_OUT=n_out, IDX64=needs_int64(delta, w, z_prev, out), BLOCK_G=bg, BLOCK_I=bi)
    return Launch(_delta_bwd_kernel, grid, args, meta)


def delta_bwd(delta: torch.Tensor, w: torch.Tensor, z_prev: torch.Tensor,
              out: torch.Tensor | None = None) -> torch.Tensor:
    """``(delta @ w^T) * (1 - z_prev**2)``: delta [G, N, n_out], w [G, n_in, n_out], z_prev
    [G, N, n_in] (the tanh outputs of the layer below) -> delta of that layer [G, N, n_in]."""
    op = "delta_bwd"
    dtype = check_float(op, ("w", w), ("delta", delta), ("z_prev", z_prev))
    if w.dim() != 3 or delta.dim() != 3:
        raise ValueError(f"{op}: w must be [G, n_in, n_out] and delta [G, N, n_out], "
                         f"got {list(w.shape)} and {list(delta.shape)}")
    G, n_in, n_out = w.shape
    N = delta.shape[1]
    check_shape(op, "delta", delta, (G, N, n_out))
    check_shape(op, "z_prev", z_prev, (G, N, n_in))
    check_sizes(op, G, N)
    check_width("n_in", n_in)
    check_width("n_out", n_out)
    out = out_buffer(op, "out", out, (G, N, n_in), w)
    _launch_args(delta, w, z_prev, out)()
    return out
