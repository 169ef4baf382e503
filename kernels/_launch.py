"""Shared launcher rules: argument checks, block sizes, index width.

Every kernel of this package has the same shape (STYLE.md): a program owns ``BLOCK_G``
neighbouring networks and a chunk of ``BLOCK_W`` columns of one width, loops over the
samples and over the contracted width with broadcast multiply-adds on ``[BLOCK_G, BLOCK_W]``
tiles, and reads every tensor through its strides.  In the network-minor layout
(``fastmlp.population``) the ``BLOCK_G`` axis has stride 1, so each tile row is one
coalesced (and, when G % 16 == 0, 16-byte vectorised) access.
"""
from __future__ import annotations

import torch

from ..architecture import KERNEL_MAX_WIDTH, next_pow2
from ..optional import triton_interpreter
from ..layout import network_minor

# Widest layer the kernels take (n_in and n_out of every layer).  Reason: the contractions
# are CUDA-core multiply-add loops whose per-program working set (BLOCK_G networks x the
# layer's weights, re-read from L1 once per sample) is sized for small layers; at 128 a
# network's weight matrix is already 64 KiB (float32) and a per-network product of that
# size is better served by tensor-core batched matmul, which the torch engine uses.
# (fastmlp.architecture.KERNEL_MAX_WIDTH: the triton backend's limit reads the same number.)
MAX_WIDTH = KERNEL_MAX_WIDTH

# Widths are processed in chunks of at most this many columns (next power of two of the
# width below it): with BLOCK_G >= 32 the [BLOCK_G, BLOCK_W] accumulator stays at <= 8
# float32 values per thread (BLOCK_G * BLOCK_W / (32 * NUM_WARPS)), so widths up to
# MAX_WIDTH compile without spills (<= 56 registers, sm_80/sm_90); wider layers take
# several programs per block of networks (grid axis 1).
MAX_BLOCK_W = 32

NUM_WARPS = 4

DTYPES = (torch.float32, torch.float64)

_INT32_MAX = 2**31 - 1


interpreting = triton_interpreter  # True when Triton runs kernels in its CPU interpreter


def block_w(width: int) -> int:
    """Columns per program: the next power of two of ``width``, at most MAX_BLOCK_W."""
    return min(triton_next_power_of_2(width), MAX_BLOCK_W)


def block_g(bw: int, itemsize: int = 4) -> int:
    """Networks per program for a tile ``bw`` columns wide: ``max(32, 2048 // itemsize // bw)``.

    Rule: 2 KiB per ``[BLOCK_G, BLOCK_W]`` tile (512 float32 / 256 float64 elements) = one
    16-byte vector per thread and load at 4 warps, so that a program stays at <= ~48 registers
    and the SM at (near) full occupancy -- these kernels are memory-bound, and at 64 warps
    per SM one 16-byte load per thread already keeps 32 KiB in flight per SM (Little's law
    at 4.8 TB/s x ~0.6 us over 132 SMs asks for ~22 KiB).  BLOCK_G >= 32 so a tile row is at
    least one full 128-byte line in the network-minor layout.  Lab network (widths 5, 3, 1;
    BLOCK_W 8, 4, 1): BLOCK_G 64, 128, 512 in float32 (32, 64, 256 in float64).
    The alternative of 16 float32 per thread (8 KiB tiles) needed 58-96 registers for the lab
    network, and ptxas then chose to spill 8-16 bytes in some kernels to reach an occupancy
    step (Triton 3.9, sm_80/sm_90, tests/aot_compile.py); with this rule none of the
    configurations of tests/aot_compile.py spills (28-56 registers).
    Not yet timed on a GPU (none was lent when this was written):
    ``bench/bench_kernels.py --sweep`` times BLOCK_G in {32, ..., 1024} for the lab network.
    """
    return max(32, 2048 // itemsize // bw)


triton_next_power_of_2 = next_pow2


def needs_int64(*tensors: torch.Tensor) -> bool:
    """True when some element offset (sum of index x stride) of a tensor can pass 2**31 - 1:
    the kernels then index in int64 (IDX64), else in int32 (fewer registers)."""
    for t in tensors:
        if t is None:
            continue
        span = sum((s - 1) * abs(st) for s, st in zip(t.shape, t.stride()) if s > 0)
        if span > _INT32_MAX:
            return True
    return False


def check_width(name: str, width: int) -> None:
    if width > MAX_WIDTH:
        raise ValueError(f"triton kernels support layer widths up to {MAX_WIDTH}, got {name} = {width}; "
                         f"use backend='torch' for wider layers")


def check_float(op: str, *named) -> torch.dtype:
    """All tensors one floating dtype of DTYPES, all on one device that can run the kernels."""
    dtype = device = None
    for name, t in named:
        if not isinstance(t, torch.Tensor):
            raise TypeError(f"{op}: {name} must be a torch.Tensor, got {type(t).__name__}")
        if t.dtype not in DTYPES:
            raise TypeError(f"{op}: {name} has dtype {t.dtype}; the triton kernels take float32 or float64 "
                            f"(use backend='torch' for other dtypes)")
        if dtype is None:
            dtype, device = t.dtype, t.device
        elif t.dtype != dtype:
            raise TypeError(f"{op}: {name} has dtype {t.dtype}, expected {dtype} like {named[0][0]}")
        elif t.device != device:
            raise ValueError(f"{op}: {name} is on {t.device}, expected {device} like {named[0][0]}")
    check_device(op, device)
    return dtype


# The @triton.jit decorator reads TRITON_INTERPRET when the kernel modules are imported.
_INTERPRETED_AT_IMPORT = interpreting()


def check_device(op: str, device: torch.device) -> None:
    if device.type == "cuda" or device.type == "meta":
        return
    if device.type == "cpu" and interpreting():
        if not _INTERPRETED_AT_IMPORT:
            raise ValueError(f"{op}: TRITON_INTERPRET=1 was set after fastmlp.kernels was imported; the kernels "
                             f"are compiled for CUDA. Set it before the first import (or use backend='torch')")
        return
    raise ValueError(f"{op}: the triton kernels need CUDA tensors, got tensors on {device} "
                     f"(set TRITON_INTERPRET=1 to run them in Triton's CPU interpreter, or use backend='torch')")


def check_shape(op: str, name: str, t: torch.Tensor, shape) -> None:
    if tuple(t.shape) != tuple(shape):
        raise ValueError(f"{op}: {name} must have shape {list(shape)}, got {list(t.shape)}")


def check_out(op: str, name: str, t: torch.Tensor, shape, dtype: torch.dtype, device: torch.device) -> None:
    if not isinstance(t, torch.Tensor):
        raise TypeError(f"{op}: {name} must be a torch.Tensor, got {type(t).__name__}")
    check_shape(op, name, t, shape)
    if t.dtype != dtype or t.device != device:
        raise ValueError(f"{op}: {name} must be {dtype} on {device}, got {t.dtype} on {t.device}")


def check_sizes(op: str, G: int, N: int) -> None:
    if G < 1 or N < 1:
        raise ValueError(f"{op}: need at least one network and one sample, got G = {G}, N = {N}")


def new_network_minor(shape, like: torch.Tensor) -> torch.Tensor:
    """A new ``[G, ...]`` tensor stored ``[..., G]`` (the layout the kernels are fast in)."""
    return network_minor(shape, like.dtype, like.device)


def out_buffer(op: str, name: str, t: torch.Tensor | None, shape, like: torch.Tensor) -> torch.Tensor:
    """The caller's output buffer, checked, or a new network-minor one of ``like``'s dtype/device."""
    if t is None:
        return new_network_minor(shape, like)
    check_out(op, name, t, shape, like.dtype, like.device)
    return t


class Launch:
    """Everything one launch needs: the kernel, its grid, its arguments and constexprs.

    Built by each op's ``_launch_args`` from tensors (also ``meta`` tensors: the
    ahead-of-time compile in tests/aot_compile.py reuses it to compile exactly the
    configurations the launchers choose)."""

    __slots__ = ("kernel", "grid", "args", "constexprs", "num_warps")

    def __init__(self, kernel, grid, args, constexprs, num_warps=NUM_WARPS):
        self.kernel, self.grid, self.args, self.constexprs, self.num_warps = kernel, grid, args, constexprs, num_warps

    def __call__(self):
        """Launch; returns Triton's compiled kernel (``n_regs``, ``n_spills``), None when interpreting."""
        return self.kernel[self.grid](*self.args, **self.constexprs, num_warps=self.num_warps)
