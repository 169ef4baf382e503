"""Fused gradient + SGD step of one layer: ``W -= lr Z_prev^T Delta``, ``b -= lr sum_n Delta``."""
from __future__ import annotations

import torch
import triton
import triton.language as tl

from .tiles import tile_offsets
from ._launch import (Launch, block_g, block_w, check_float, check_out, check_shape, check_sizes, check_width,
                      needs_int64, new_network_minor)

__all__ = ["grad_update"]


@triton.jit
def _grad_update_kernel(z_ptr, delta_ptr, w_ptr, b_ptr, lr_ptr, frozen_ptr, wg_ptr, bg_ptr,  # pointers
                        G, N,                                       # runtime sizes
                        s_zg, s_zn, s_zi,                           # z_prev [G, N, n_in] (s_zg unused if Z_SHARED)
                        s_dg, s_dn, s_dj,                           # delta [G, N, n_out]
                        s_wg, s_wi, s_wj,                           # w [G, n_in, n_out]
                        s_bg, s_bj,                                 # b [G, n_out]
                        s_lg, s_fg,                                 # lr [G], frozen [G]
                        s_wgg, s_wgi, s_wgj,                        # weight_grad [G, n_in, n_out]
                        s_bgg, s_bgj,                               # bias_grad [G, n_out]
                        N_IN: tl.constexpr, N_OUT: tl.constexpr, Z_SHARED: tl.constexpr,
                        HAS_FROZEN: tl.constexpr, WRITE_GRAD: tl.constexpr, IDX64: tl.constexpr,
                        BLOCK_G: tl.constexpr, BLOCK_J: tl.constexpr):
    # Program (pid_g, pid_j): networks [pid_g * BLOCK_G, +BLOCK_G), columns
    # [pid_j * BLOCK_J, +BLOCK_J) of w and b.  For each row i of w (a loop), then for b:
    #   grad[g, i, j] = sum_n z_prev[g, n, i] * delta[g, n, j]     bias: sum_n delta[g, n, j]
    #   w[g, i, j] -= lr[g] * grad                                 (not where frozen[g])
    # delta's tile is re-read once per row, from L1 after the first (BLOCK_G * N * BLOCK_J
    # values: 10 KiB for the lab's first layer).  Frozen networks are masked out of the
    # stores: their parameters stay bitwise untouched even when their gradient is nan.
    offs_g, offs_j, mask_g, mask = tile_offsets(G, N_OUT, BLOCK_G, BLOCK_J, IDX64)
    b_lr = tl.load(lr_ptr + offs_g * s_lg, mask=mask_g, other=0.0)[:, None]
    if HAS_FROZEN:
        active = tl.load(frozen_ptr + offs_g * s_fg, mask=mask_g, other=1) == 0
        mask_upd = mask & active[:, None]
    else:
        mask_upd = mask

    # Offsets (int32 unless IDX64), not 64-bit pointer tiles, are carried through the loops.
    o_d0 = offs_g[:, None] * s_dg + offs_j[None, :] * s_dj               # delta, sample 0
    if Z_SHARED:
        p_z = z_ptr                                                        # scalar: x[n, i]
    else:
        p_z = z_ptr + offs_g * s_zg                                        # [BLOCK_G]: z[g, n, i]
    o_w = offs_g[:, None] * s_wg + offs_j[None, :] * s_wj
    o_wg = offs_g[:, None] * s_wgg + offs_j[None, :] * s_wgj
    for i in range(N_IN):
        acc = tl.zeros((BLOCK_G, BLOCK_J), dtype=w_ptr.dtype.element_ty)
        p_zn = p_z
        o_dn = o_d0
        for n in range(N):
            if Z_SHARED:
                acc += tl.load(p_zn) * tl.load(delta_ptr + o_dn, mask=mask, other=0.0)
            else:
                acc += tl.load(p_zn, mask=mask_g, other=0.0)[:, None] * tl.load(delta_ptr + o_dn, mask=mask, other=0.0)
            p_zn += s_zn
            o_dn += s_dn
        b_w = tl.load(w_ptr + o_w, mask=mask_upd, other=0.0)
        tl.store(w_ptr + o_w, b_w - b_lr * acc, mask=mask_upd)
        if WRITE_GRAD:
            if HAS_FROZEN:
                acc = tl.where(active[:, None], acc, 0.0)  # as the torch engine: 0 for frozen networks
            tl.store(wg_ptr + o_wg, acc, mask=mask)
        p_z += s_zi
        o_w += s_wi
        o_wg += s_wgi

    acc = tl.zeros((BLOCK_G, BLOCK_J), dtype=w_ptr.dtype.element_ty)
    o_dn = o_d0
    for n in range(N):
        acc += tl.load(delta_ptr + o_dn, mask=mask, other=0.0)
        o_dn += s_dn
    p_b = b_ptr + offs_g[:, None] * s_bg + offs_j[None, :] * s_bj
    b_b = tl.load(p_b, mask=mask_upd, other=0.0)
    tl.store(p_b, b_b - b_lr * acc, mask=mask_upd)
    if WRITE_GRAD:
        if HAS_FROZEN:
            acc = tl.where(active[:, None], acc, 0.0)
        tl.store(bg_ptr + offs_g[:, None] * s_bgg + offs_j[None, :] * s_bgj, acc, mask=mask)


def _launch_args(z_prev, delta, w, b, lr, frozen, weight_grad, bias_grad, bg: int | None = None) -> Launch:
    G, n_in, n_out = w.shape
    N = delta.shape[1]
    shared = z_prev.dim() == 2
    s_z = (0, *z_prev.stride()) if shared else z_prev.stride()
    write = weight_grad is not None
    # Unused pointers get a harmless stand-in (never dereferenced: HAS_FROZEN / WRITE_GRAD).
    f_arg, s_f = (frozen, frozen.stride(0)) if frozen is not None else (lr, 0)
    wg_arg, s_wg = (weight_grad, weight_grad.stride()) if write else (w, (0, 0, 0))
    bg_arg, s_bg = (bias_grad, bias_grad.stride()) if write else (b, (0, 0))
    bj = block_w(n_out)
    bgs = bg or block_g(bj, w.element_size())  # bg: override, for bench_kernels.py --sweep
    grid = (triton.cdiv(G, bgs), triton.cdiv(n_out, bj))
    args = [z_prev, delta, w, b, lr, f_arg, wg_arg, bg_arg, G, N, *s_z, *delta.stride(), *w.stride(), *b.stride(),
            lr.stride(0), s_f, *s_wg, *s_bg]
    meta = dict(N_IN=n_in, N_OUT=n_out, Z_SHARED=shared, HAS_FROZEN=frozen is not None, WRITE_GRAD=write,
                IDX64=needs_int64(z_prev, delta, w, b, lr, frozen, weight_grad, bias_grad),
                BLOCK_G=bgs, BLOCK_J=bj)
    return Launch(_grad_update_kernel, grid, args, meta)


def grad_update(z_prev: torch.Tensor, delta: torch.Tensor, w: torch.Tensor, b: torch.Tensor,
                lr: torch.Tensor, frozen: torch.Tensor | None = None,
                weight_grad: torch.Tensor | None = None, bias_grad: torch.Tensor | None = None):
    """Gradient and SGD step of one layer, in place on ``w`` [G, n_in, n_out] and ``b`` [G, n_out].

    ``weight_grad = z_prev^T delta``, ``bias_grad = sum_n delta``, ``w -= lr * weight_grad``,
    ``b -= lr * bias_grad`` with ``lr`` [G]; ``z_prev`` is x [N, n_in] (shared) or [G, N, n_in],
    ``delta`` [G, N, n_out].  Networks flagged in ``frozen`` ([G] bool) stay bitwise untouched
    (their gradients are written as 0).  The gradients are written only when buffers are
    given (either one; the other is then allocated): returns ``(weight_grad, bias_grad)``,
    ``(None, None)`` when none was asked for (the update then moves fewer bytes).
    """
    op = "grad_update"
    dtype = check_float(op, ("w", w), ("b", b), ("z_prev", z_prev), ("delta", delta), ("lr", lr))
    if w.dim() != 3 or delta.dim() != 3:
        raise ValueError(f"{op}: w must be [G, n_in, n_out] and delta [G, N, n_out], "
                         f"got {list(w.shape)} and {list(delta.shape)}")
    G, n_in, n_out = w.shape
    N = delta.shape[1]
    check_shape(op, "delta", delta, (G, N, n_out))
    if tuple(z_prev.shape) not in ((N, n_in), (G, N, n_in)):
        raise ValueError(f"{op}: z_prev must be [{N}, {n_in}] or [{G}, {N}, {n_in}] to match delta and w, "
                         f"got {list(z_prev.shape)}")
    check_shape(op, "b", b, (G, n_out))
    check_shape(op, "lr", lr, (G,))
    if frozen is not None:
        if not isinstance(frozen, torch.Tensor) or frozen.dtype != torch.bool:
            raise TypeError(f"{op}: frozen must be a bool tensor [G] or None")
        check_shape(op, "frozen", frozen, (G,))
        if frozen.device != w.device:
            raise ValueError(f"{op}: frozen is on {frozen.device}, expected {w.device} like w")
    check_sizes(op, G, N)
    check_width("n_in", n_in)
    check_width("n_out", n_out)
    if weight_grad is not None or bias_grad is not None:
        if weight_grad is None:
            weight_grad = new_network_minor(w.shape, w)
        else:
            check_out(op, "weight_grad", weight_grad, w.shape, dtype, w.device)
        if bias_grad is None:
            bias_grad = new_network_minor(b.shape, b)
        else:
            check_out(op, "bias_grad", bias_grad, b.shape, dtype, w.device)
    _launch_args(z_prev, delta, w, b, lr, frozen, weight_grad, bias_grad)()
    return weight_grad, bias_grad
