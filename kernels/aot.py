"""Ahead-of-time compiles of the fused training kernels, and their machine code, without a GPU.

For kernel engineers and the tests: :func:`compile_fused` compiles exactly what
``fused_train`` would launch (the kernel and constexprs of ``fused_train.config``) for a
real target (``GPUTarget("cuda", cap, 32)``); :func:`cuobjdump` runs the ``cuobjdump``
that ships inside Triton on the cubin (``-sass``, ``-res-usage``); :func:`resources` reads
registers, stack (spills), shared and local memory.  Used by tests/aot_fused.py and
bench/roofline.py.  Never under ``TRITON_INTERPRET`` (the interpreter replaces the jit
functions).
"""
from __future__ import annotations

import os
import re
import subprocess
import tempfile
from pathlib import Path

import triton
from triton.backends.compiler import GPUTarget

from . import fused_train as F

__all__ = ["compile_fused", "cuobjdump", "resources", "SIGNATURE"]

# The runtime arguments of both fused kernels, float32.
SIGNATURE = {"x_ptr": "*fp32", "y_ptr": "*fp32", "p_ptr": "*fp32", "out_ptr": "*fp32", "lr_ptr": "*fp32",
             "active_ptr": "*i8", "loss_ptr": "*fp32", "s_loss": "i32", "G": "i32", "N": "i32", "E": "i32",
             "scale_ptr": "*fp32"}


def compile_fused(sizes, N: int, cap: int = 90, fast_tanh: bool = False, variant: str | None = None,
                  G: int = 2**20, record_every: int = 1):
    """(compiled kernel, constexpr meta) of what ``fused_train`` launches, for sm_<cap>."""
    meta = F.config(sizes, N, record_every, G, fast_tanh, variant)
    sig = dict(SIGNATURE, **{k: "constexpr" for k in meta})
    src = triton.compiler.ASTSource(F.kernel_for(sizes, N, variant), sig, meta, {})
    return triton.compile(src, target=GPUTarget("cuda", cap, 32), options={"num_warps": F.NUM_WARPS}), meta


def cuobjdump(cubin: bytes, flag: str) -> str:
    """``cuobjdump <flag>`` of one cubin, with the tool bundled in Triton's NVIDIA backend."""
    tool = Path(triton.__file__).parent / "backends" / "nvidia" / "bin" / "cuobjdump"
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "k.cubin")
        Path(path).write_bytes(cubin)
        return subprocess.run([str(tool), flag, path], capture_output=True, text=True, check=True).stdout


def resources(cubin: bytes) -> dict:
    """Registers per thread, stack frame (spills), shared and local memory of one cubin."""
    m = re.search(r"REG:(\d+) STACK:(\d+) SHARED:(\d+) LOCAL:(\d+)", cuobjdump(cubin, "-res-usage"))
    return dict(zip(("regs", "stack", "shared", "local"), map(int, m.groups())))
