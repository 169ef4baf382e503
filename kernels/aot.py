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
             "scale_ptr": "*fp32", "first_ptr": "*i32", "e_base": "i32", "RECORD_EVERY": "i32"}


def compile_fused(sizes, N: int, cap: int = 90, fast_tanh: bool = False, variant: str | None = None,
                  G: int = 2**20, record_every: int = 1, dtype: str = "fp32"):
    """(compiled kernel, constexpr meta) of what ``fused_train`` launches, for sm_<cap>, with
    parameters in ``dtype`` ("fp32" or "fp64")."""
    meta = F.config(sizes, N, record_every, G, fast_tanh, variant)
    sig = {k: v.replace("fp32", dtype) for k, v in SIGNATURE.items()}
    sig.update({k: "constexpr" for k in meta})
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


# ---- reading the compiled code: what the freeze predicate is computed from ------------------
# Floating-point instructions that round (their result depends on how the compiler grouped
# and fused the arithmetic); mov, selp, abs, neg, setp, and the integer and predicate ops do not.
_ROUNDING = re.compile(r"^(add|sub|mul|fma|mad|div|rcp|sqrt|rsqrt|ex2|lg2|sin|cos|tanh)\..*\bf(16|32|64)\b")
_REG = re.compile(r"%[a-z]+\d+")
_NO_DEF = ("st.", "bra", "ret", "bar.", "red.", "prefetch", "trap", "exit", "call")


def _ptx_instructions(ptx: str) -> list:
    """(opcode, defs, uses, address) of each PTX instruction of a kernel body; the guard
    predicate of a ``@%p`` instruction counts as a use; ``address`` holds the registers of a
    store's address (empty for the rest).  Enough of PTX for data flow: Triton's loads and
    stores come as inline asm (``@%p1 st.global.b32 [ %rd4 + 0 ], { %r9 };``), setp may
    define two predicates (``%p1|%p2``), movs may pack or unpack braces."""
    out = []
    for line in ptx.splitlines():
        line = line.split("//")[0].strip()
        if not line or line.endswith(":") or line[0] in ".{}" or not line.endswith(";"):
            continue
        guard = []
        if line.startswith("@"):
            g, line = line.split(None, 1)
            guard = _REG.findall(g)
        parts = line[:-1].split(None, 1)
        op, rest = parts[0], parts[1] if len(parts) > 1 else ""
        operands, depth, cur = [], 0, ""
        for ch in rest:  # split on top-level commas: braces and brackets hold lists
            depth += ch in "{[" and 1 or ch in "}]" and -1 or 0
            if ch == "," and depth == 0:
                operands.append(cur)
                cur = ""
            else:
                cur += ch
        operands.append(cur)
        if op.startswith("st."):  # st [address], value(s): the value registers are the uses
            out.append((op, [], [r for o in operands[1:] for r in _REG.findall(o)] + guard, _REG.findall(operands[0])))
            continue
        if op.startswith(_NO_DEF) or not operands[0].strip():
            defs, uses = [], [r for o in operands for r in _REG.findall(o)]
        else:
            defs, uses = _REG.findall(operands[0]), [r for o in operands[1:] for r in _REG.findall(o)]
        out.append((op, defs, uses + guard, []))
    return out


def _param_index(ptx: str) -> dict:
    """``%rdN`` loaded from ``[<kernel>_param_K]`` -> K."""
    return {m.group(1): int(m.group(2)) for m in re.finditer(r"ld\.param\.\w+\s+(%rd\d+),\s*\[\w+_param_(\d+)\]", ptx)}


def _slice(regs, defs_of, stop=lambda r: False) -> tuple[set, list]:
    """Backward data-flow slice (flow-insensitive: every definition of a register counts, so
    loop-carried values are followed around the loop) from ``regs``; registers for which
    ``stop`` is true are not followed.  Returns (registers reached, instructions reached)."""
    seen, todo, insts = set(), list(regs), []
    while todo:
        r = todo.pop()
        if r in seen:
            continue
        seen.add(r)
        if stop(r):
            continue
        for inst in defs_of.get(r, ()):
            insts.append(inst)
            todo += inst[2]
    return seen, insts


def freeze_predicate(ptx: str, active_param: int = 5, loss_param: int = 6) -> dict:
    """What a fused kernel's divergence freeze is computed from, read from its PTX.

    The ``active`` flags are the only bytes the kernel stores through parameter
    ``active_param``; the recorded losses are what it stores through ``loss_param``.  The
    backward slice of the stored flag, stopped at the recorded loss value, must contain no
    rounding floating-point instruction: then the freeze depends on the loss value alone,
    through comparisons, selects and bit operations, which no compiler setting rewrites.
    The first GPU run froze every network because the slice held
    ``fma.rn.f32 loss_sum, inv_count, -loss`` (NVPTX contracted ``loss - loss`` with the
    product that made ``loss``).  Returns ``{"active_stores", "loss_stores", "rounding"}``:
    the counts of each store found and the rounding instructions in the slice (as text).
    """
    insts = _ptx_instructions(ptx)
    params = _param_index(ptx)
    defs_of: dict = {}
    for inst in insts:
        for r in inst[1]:
            defs_of.setdefault(r, []).append(inst)

    def base_params(addr_regs) -> set:
        reached, _ = _slice(addr_regs, defs_of)
        return {params[r] for r in reached if r in params}

    active_vals, loss_vals = [], []
    for op, _, uses, addr in insts:
        if not op.startswith("st.global"):
            continue
        vals = [r for r in uses if not r.startswith("%p")]
        bases = base_params(addr)
        if active_param in bases:
            active_vals += vals
        if loss_param in bases:
            loss_vals += vals

    def origin(r):  # through plain register copies to the instruction that made the value
        while len(defs_of.get(r, ())) == 1 and defs_of[r][0][0].startswith("mov") and len(defs_of[r][0][2]) == 1 \
                and not defs_of[r][0][2][0].startswith("%p"):
            r = defs_of[r][0][2][0]
        return r

    loss_origins = {origin(r) for r in loss_vals}
    _, reached = _slice(active_vals, defs_of, stop=lambda r: origin(r) in loss_origins)
    rounding = sorted({f"{op} {', '.join(d)} <- {', '.join(u)}" for op, d, u, _ in reached if _ROUNDING.match(op)})
    return {"active_stores": len(active_vals), "loss_stores": len(loss_vals), "rounding": rounding}
