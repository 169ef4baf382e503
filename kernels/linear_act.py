"""Fused forward of one layer: ``z_out = act(x @ w + b)`` for every network at once."""
from __future__ import annotations

import torch
import triton
import triton.language as tl

from .tiles import tile_offsets
from ._launch import (Launch, block_g, block_w, check_float, check_shape, check_sizes, check_width, needs_int64,
                      out_buffer)
from .activations import ACTS, apply_act

__all__ = ["linear_act_fwd"]


@triton.jit
def _linear_act_fwd_kernel(x_ptr, w_ptr, b_ptr, z_ptr,           # pointers
                           G, N,                                  # runtime sizes
                           s_xg, s_xn, s_xk,                      # x [G, N, n_in] (s_xg unused if X_SHARED)
                           s_wg, s_wk, s_wj,                      # w [G, n_in, n_out]
                           s_bg, s_bj,                            # b [G, n_out]
                           s_zg, s_zn, s_zj,                      # z [G, N, n_out]
                           N_IN: tl.constexpr, N_OUT: tl.constexpr, ACT: tl.constexpr,
                           X_SHARED: tl.constexpr, IDX64: tl.constexpr,
                           BLOCK_G: tl.constexpr, BLOCK_J: tl.constexpr):
    # Program (pid_g, pid_j): networks [pid_g * BLOCK_G, +BLOCK_G), output columns
    # [pid_j * BLOCK_J, +BLOCK_J), every sample.  Per sample n:
    #   acc[g, j] = b[g, j] + sum_k x[g, n, k] * w[g, k, j]   (broadcast multiply-adds, k loop)
    #   z[g, n, j] = act(acc)
    # w's tile rows are re-read once per sample: from L1 after the first (the program's
    # weights are BLOCK_G * n_in * BLOCK_J values: 4 KiB for the lab's first layer).
    offs_g, offs_j, mask_g, mask = tile_offsets(G, N_OUT, BLOCK_G, BLOCK_J, IDX64)
    mask_j = offs_j < N_OUT

    # Offsets (int32 unless IDX64) rather than pointer tiles are carried through the loops:
    # half the registers of 64-bit pointer tiles.
    o_w0 = offs_g[:, None] * s_wg + offs_j[None, :] * s_wj                # w row k = 0
    o_z = offs_g[:, None] * s_zg + offs_j[None, :] * s_zj                 # z sample n = 0
    o_b = offs_g[:, None] * s_bg + offs_j[None, :] * s_bj
    if X_SHARED:
        p_x = x_ptr                                                        # scalar: x[n, k]
    else:
        p_x = x_ptr + offs_g * s_xg                                        # [BLOCK_G]: x[g, n, k]

    for n in range(N):
        acc = tl.load(b_ptr + o_b, mask=mask, other=0.0)  # re-read per sample (L1): fewer live registers
        p_xk = p_x
        o_wk = o_w0
        for k in range(N_IN):
            if X_SHARED:
                b_x = tl.load(p_xk)
                acc += b_x * tl.load(w_ptr + o_wk, mask=mask, other=0.0)
            else:
                b_x = tl.load(p_xk, mask=mask_g, other=0.0)
                acc += b_x[:, None] * tl.load(w_ptr + o_wk, mask=mask, other=0.0)
            p_xk += s_xk
            o_wk += s_wk
        tl.store(z_ptr + o_z, apply_act(acc, ACT), mask=mask)
        p_x += s_xn
        o_z += s_zn


def _launch_args(x, w, b, act, z, bg: int | None = None) -> Launch:
    G, n_in, n_out = w.shape
    N = x.shape[-2]
    shared = x.dim() == 2
    s_x = (0, *x.stride()) if shared else x.stride()
    bj = block_w(n_out)
    bg = bg or block_g(bj, w.element_size())  # bg: override, for bench_kernels.py --sweep
    grid = (triton.cdiv(G, bg), triton.cdiv(n_out, bj))
    args = [x, w, b, z, G, N, *s_x, *w.stride(), *b.stride(), *z.stride()]
    meta = dict(N_IN=n_in, N_OUT=n_out, ACT=ACTS[act], X_SHARED=shared, IDX64=needs_int64(x, w, b, z),
                BLOCK_G=bg, BLOCK_J=bj)
    return Launch(_linear_act_fwd_kernel, grid, args, meta)


def linear_act_fwd(x: torch.Tensor, w: torch.Tensor, b: torch.Tensor, act: str,
                   out: torch.Tensor | None = None) -> torch.Tensor:
    """``act(x @ w + b)`` for every network: x [N, n_in] (shared) or [G, N, n_in],
    w [G, n_in, n_out], b [G, n_out] -> z_out [G, N, n_out] (written into ``out`` if given).

    ``act`` is "tanh" or "sigmoid".  Any strides; fastest network-minor.  float32 or
    float64, CUDA (or CPU under TRITON_INTERPRET=1); widths up to MAX_WIDTH = 128.
    """
    op = "linear_act_fwd"
    # 1) check shapes, dtypes, devices
    dtype = check_float(op, ("w", w), ("x", x), ("b", b))
    if act not in ACTS:
        raise ValueError(f"{op}: act must be 'tanh' or 'sigmoid', got {act!r}")
    if w.dim() != 3:
        raise ValueError(f"{op}: w must be [G, n_in, n_out], got {list(w.shape)}")
    G, n_in, n_out = w.shape
    if x.dim() not in (2, 3) or x.shape[-1] != n_in or (x.dim() == 3 and x.shape[0] != G):
        raise ValueError(f"{op}: x must be [N, {n_in}] or [{G}, N, {n_in}] to match w {list(w.shape)}, "
                         f"got {list(x.shape)}")
    check_shape(op, "b", b, (G, n_out))
    N = x.shape[-2]
    check_sizes(op, G, N)
    check_width("n_in", n_in)
    check_width("n_out", n_out)
    # 2) allocate
    out = out_buffer(op, "out", out, (G, N, n_out), w)
    # 3) launch
    _launch_args(x, w, b, act, out)()
    return out
