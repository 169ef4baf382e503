#!/usr/bin/env python
"""GPU roofline of the lab network (2-5-3-1, N = 5, float32): the one-launch kernel's FMA-pipe,
MUFU-pipe and issue floors on an H200, counted from its compiled code, and the measured times
set against them.

Compiles, ahead of time and without a GPU (``fastmlp.kernels.aot.compile_fused``, Triton's AOT
path for ``GPUTarget("cuda", 90, 32)``), what ``fused_train`` launches for the network: the
checked default (tanh and sigmoid in exp2 form: one ``ex2`` and one reciprocal each) and the
``tanh.approx.f32`` variant.  In the epoch loop's body (the outermost backward branch; with
the samples unrolled it is one network-epoch per thread) it counts

* in the PTX: ``fma``/``mul``/``add``/``sub`` (f32), ``ex2``/``rcp``/``div``/``tanh`` (what
  becomes MUFU), selects and compares, loads and stores, integer and the rest;
* in the SASS (``cuobjdump -sass``, bundled with Triton): FFMA/FMUL/FADD (the FP32 "FMA" pipe),
  MUFU by function, FSETP/FSEL, integer, loads/stores, control;

and turns them into floors for G networks x E epochs on a device model (``--device-model``,
default the H200: 132 SMs, 1.98 GHz boost, per SM and clock 128 FP32 lanes, 16 MUFU results,
4 schedulers x 32 lanes of issue):

    FMA pipe  = G E (FFMA + FMUL + FADD)      / (128 x SMs x clock)
    MUFU pipe = G E MUFU                      / ( 16 x SMs x clock)
    issue     = G E (all instructions)        / (128 x SMs x clock)

and, for comparison, the work's own floors (407 multiply-adds, 2 MUFU per exp2-form activation
or 1 per ``tanh.approx``).  Also: registers -> warps per SM -> waves at G, the longest
dependency chain of one epoch (instructions on it, MUFU among them), and a model of one
scheduler issuing the loop for its resident warps under the SASS's own stall counts and
scoreboards, with each pipe's rate (``simulate``): what issue rate the code allows, and what the
MUFU pipe's rate costs.  ``--measured`` sets
seconds for G x E against the floors (default, for the kernel that ran them, ``--commit daef3a3``:
the H200 run of 2026-12-04, one launch, ``../shared/gpu-runs/2026-12-04/bench_fused.log``: 0.0957 s
exp2 form, 0.0672 s tanh.approx; other trees' kernels are named as not timed).

``--commit REV`` counts the kernel of another commit (``git archive`` into a temporary
folder; the measured times above ran the tree at daef3a3), ``--root DIR`` that of another
checkout.  The compiles run in child processes, never under ``TRITON_INTERPRET``.  ``--measure`` (CUDA only) also times one launch
of each variant at G x E on this GPU and probes the FP32 and MUFU throughput (which checks the
16/128 ratio and gives the clock the FP32 peak implies).

    python bench/roofline_gpu.py                       # the table; JSON to bench/results/
    python bench/roofline_gpu.py --commit daef3a3      # the kernel that was timed on the H200
    python bench/roofline_gpu.py --sizes 2,3,1 --N 3   # another network (tests: a quick compile)
    python3 bench/roofline_gpu.py --measure            # on a GPU: also time it and probe the pipes
"""
from __future__ import annotations

import collections
import json
import math
import os
import re
import subprocess
import sys
import tempfile
from pathlib import Path

import harness
import instruments

# The device model (per SM and clock).  FP32 128 and MUFU 16 results per SM per clock are the
# CUDA C++ Programming Guide's "Throughput of Native Arithmetic Instructions" for compute
# capability 9.0 (arithmetic-instructions table: 32-bit floating-point add, multiply,
# multiply-add 128; 32-bit floating-point reciprocal, reciprocal square root, base-2 logarithm,
# base 2 exponential, sine, cosine 16); issue: 4 SM sub-partitions, one warp instruction
# (32 threads) each per clock.  H200 SXM: 132 SMs, 1980 MHz boost (the same GH100 as the H100
# SXM: 66.9 TFLOP/s FP32 = 132 x 128 x 2 x 1.98e9).
DEVICE_MODELS = {
    "h200": dict(name="NVIDIA H200 SXM (sm_90)", sms=132, clock_hz=1.98e9, fp32_per_sm=128, mufu_per_sm=16,
                 issue_per_sm=128, schedulers=4, regs_per_sm=65536, max_warps_per_sm=64, max_blocks_per_sm=32,
                 reg_alloc_unit=256),
}
# Measured one-launch seconds for 2^20 networks x 2500 epochs, lab network, on the H200
# (../shared/gpu-runs/2026-12-04/bench_fused.log: fused-1 and fused-approx, tree daef3a3, Triton 3.6).
MEASURED_H200 = {"exp2": 0.0957, "approx": 0.0672}
MEASURED_COMMIT = "daef3a3"  # the tree those times ran: they are set against its kernel only
MEASURED_SOURCE = "H200, 2026-12-04, tree daef3a3, Triton 3.6, one launch (shared/gpu-runs/2026-12-04/bench_fused.log)"

SASS_FP32 = ("FFMA", "FMUL", "FADD", "FFMA32I", "FMUL32I", "FADD32I")
SASS_CLASSES = (  # (class, opcodes); the first match wins; MUFU is split by function apart
    ("fp32", SASS_FP32),
    ("select/compare", ("FSETP", "FSEL", "FMNMX", "FSET", "SEL", "ISETP", "PLOP3", "P2R", "R2P", "FCHK")),
    ("integer", ("IMAD", "IADD3", "IADD", "LEA", "LOP3", "SHF", "IABS", "IMNMX", "UIADD3", "UIMAD", "ULOP3", "USHF",
                 "ULEA", "UMOV", "FLO", "POPC", "I2F", "F2I")),
    ("load/store", ("LDG", "STG", "LDC", "LDS", "STS", "LD", "ST", "LDL", "STL", "ULDC", "RED", "ATOM")),
    ("move", ("MOV", "HFMA2", "CS2R", "S2R", "S2UR", "R2UR", "MOV32I", "SHFL")),
    ("control", ("BRA", "EXIT", "BSSY", "BSYNC", "CALL", "RET", "NOP", "BAR", "WARPSYNC", "YIELD", "DEPBAR")),
)

# The child that compiles: imports fastmlp and fastmlp.kernels from ROOT (argv[1]), whatever is
# installed, compiles for sm_<cap> and writes the PTX, the SASS and a JSON of what it compiled.
_CHILD = r"""
import importlib.util, json, os, sys, warnings
root, sizes, N, cap, fast, out = sys.argv[1], json.loads(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4]), \
    sys.argv[5] == "1", sys.argv[6]
os.environ.pop("TRITON_INTERPRET", None)
warnings.filterwarnings("ignore")
sys.path.insert(0, root)
import fastmlp
spec = importlib.util.spec_from_file_location("fastmlp.kernels", os.path.join(root, "kernels", "__init__.py"),
                                              submodule_search_locations=[os.path.join(root, "kernels")])
mod = importlib.util.module_from_spec(spec)
sys.modules["fastmlp.kernels"] = mod
spec.loader.exec_module(mod)
import triton
from fastmlp.kernels import fused_train as F
from fastmlp.kernels.aot import compile_fused, cuobjdump, resources
for m in (fastmlp, F):
    assert os.path.realpath(m.__file__).startswith(os.path.realpath(root) + os.sep), (m.__name__, m.__file__, root)
ck, meta = compile_fused(sizes, N, cap, fast)
open(os.path.join(out, "kernel.ptx"), "w").write(ck.asm["ptx"])
open(os.path.join(out, "kernel.sass"), "w").write(cuobjdump(ck.asm["cubin"], "-sass"))
json.dump(dict(meta=meta, resources=resources(ck.asm["cubin"]), variant=F.variant(sizes, N), triton=triton.__version__,
               num_warps=F.NUM_WARPS),
          open(os.path.join(out, "kernel.json"), "w"))
"""


# ---------------------------------------------------------------------------------------
# Compiling
# ---------------------------------------------------------------------------------------
def export_commit(rev: str, dest: str) -> str:
    """``git archive <rev>`` of this repository into ``dest``; returns the full commit id."""
    sha = subprocess.run(["git", "rev-parse", "--verify", f"{rev}^{{commit}}"], cwd=harness.ROOT, capture_output=True,
                         text=True, check=True).stdout.strip()
    archive = subprocess.run(["git", "archive", sha], cwd=harness.ROOT, capture_output=True, check=True).stdout
    subprocess.run(["tar", "-x", "-C", dest], input=archive, check=True)
    return sha


def start_compile(root, sizes, N: int, cap: int, fast_tanh: bool, out: str) -> subprocess.Popen:
    """The compile of one kernel in a child process (see ``_CHILD``); ``finish_compile`` reads it."""
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    env["TRITON_DEFAULT_FP_FUSION"] = env.get("TRITON_DEFAULT_FP_FUSION", "1")  # as every Triton <= 3.9 compiles
    return subprocess.Popen([sys.executable, "-c", _CHILD, str(root), json.dumps(list(sizes)), str(N), str(cap),
                             "1" if fast_tanh else "0", out], cwd=out, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)


def finish_compile(proc: subprocess.Popen, out: str, timeout: float = 900) -> dict:
    _, err = proc.communicate(timeout=timeout)
    if proc.returncode != 0:
        raise RuntimeError(f"AOT compile failed (exit {proc.returncode}):\n{err[-3000:]}")
    info = json.loads(Path(out, "kernel.json").read_text())
    info.update(ptx=Path(out, "kernel.ptx").read_text(), sass=Path(out, "kernel.sass").read_text())
    return info


# ---------------------------------------------------------------------------------------
# PTX
# ---------------------------------------------------------------------------------------
_PTX_SKIP = re.compile(r"^(\.|//|\$|\{|\}|@?$)")


def ptx_lines(ptx: str) -> list[tuple[int, str, str]]:
    """(line number, label or "", instruction text) of the kernel body: labels as their own
    entries, every other line that is an instruction (guard kept) as one."""
    out = []
    for i, line in enumerate(ptx.splitlines()):
        s = line.split("//")[0].strip()
        if not s:
            continue
        m = re.match(r"^(\$[\w.]+):$", s)
        if m:
            out.append((i, m.group(1), ""))
        elif not _PTX_SKIP.match(s) and s.endswith(";"):
            out.append((i, "", s))
    return out


def ptx_opcode(ins: str) -> tuple[str, str]:
    """(opcode, guard) of one PTX instruction: ``@%p5 bra $L`` -> ("bra", "%p5")."""
    guard = ""
    if ins.startswith("@"):
        guard, ins = ins.split(None, 1)
    return ins.split(None, 1)[0].rstrip(";"), guard


def ptx_class(op: str) -> str:
    """The class a PTX opcode counts under (f32 arithmetic by kind, the MUFU functions, ...)."""
    parts = op.split(".")
    base, f32 = parts[0], "f32" in parts
    if base in ("ex2", "rcp", "tanh", "lg2", "sin", "cos", "rsqrt", "sqrt") and "approx" in parts:
        return base  # one MUFU each
    if base == "div" and "f32" in parts:
        return "div.full" if "full" in parts else ("div.approx" if "approx" in parts else "div.rn")
    if f32 and base in ("fma", "mul", "add", "sub", "neg", "abs", "min", "max"):
        return base if base in ("fma", "mul", "neg") else ("add" if base in ("add", "sub") else "minmax/abs")
    if base in ("selp", "setp", "set", "slct"):
        return "select/compare"
    if base in ("ld", "st", "atom", "red"):
        return "load/store"
    if base in ("mov", "cvt", "cvta"):
        return "move/convert"
    if base in ("bra", "ret", "exit", "bar", "call"):
        return "control"
    return "integer/other"


def ptx_loops(lines) -> list[tuple[int, int]]:
    """(start line, end line) of every loop: a label with a later branch back to it; innermost first."""
    where = {label: i for i, label, _ in lines if label}
    found = []
    for i, label, ins in lines:
        if ins:
            op, _ = ptx_opcode(ins)
            if op.startswith("bra"):
                target = ins.rstrip(";").split()[-1]
                if target in where and where[target] < i:
                    found.append((where[target], i))
    return sorted(found, key=lambda r: r[1] - r[0])


def ptx_counts(ptx: str, trips: int) -> dict:
    """Instructions per network-epoch by class (``ptx_class``), from the epoch loop's body:
    ``trips`` x an inner (per-sample) loop's body + the rest of the epoch loop."""
    lines = ptx_lines(ptx)
    loops = ptx_loops(lines)
    if not loops:
        raise RuntimeError("no loop in the PTX: expected the epoch loop")
    outer = loops[-1]
    inner = next((r for r in loops[:-1] if outer[0] <= r[0] and r[1] <= outer[1]), None)

    def hist(lo, hi):
        return collections.Counter(ptx_class(ptx_opcode(ins)[0]) for i, _, ins in lines if ins and lo <= i <= hi)

    h_in = hist(*inner) if inner else collections.Counter()
    h_ep = hist(*outer)
    per = {k: trips * h_in[k] + (h_ep[k] - h_in[k]) for k in h_ep}
    return dict(sorted(per.items(), key=lambda kv: -kv[1]))


# ---------------------------------------------------------------------------------------
# SASS
# ---------------------------------------------------------------------------------------
_SASS = re.compile(r"\s+/\*([0-9a-f]{4,})\*/\s+(@!?U?P[T0-9]+\s+)?([A-Z0-9]+)((?:\.[A-Z0-9_]+)*)\s*([^;]*);")
_HEX = re.compile(r"/\*\s*0x([0-9a-f]{16})\s*\*/")


def control(hi: int) -> dict:
    """The scheduling control of one sm_70+ instruction, from the high 64 bits of its 128-bit
    encoding (bits 105-125 of the instruction): ``stall`` cycles before the warp's next issue,
    ``yield``, the scoreboard ``wbar`` it sets when its result is written and ``rbar`` when its
    operands are read (7: none), the ``wait`` mask of scoreboards it waits on, ``reuse`` flags
    (Jia et al., "Dissecting the NVIDIA Volta GPU Architecture via Microbenchmarking", 2018)."""
    c = (hi >> 41) & 0x1FFFFF
    return {"stall": c & 0xF, "yield": (c >> 4) & 1, "wbar": (c >> 5) & 7, "rbar": (c >> 8) & 7,
            "wait": (c >> 11) & 0x3F, "reuse": (c >> 17) & 0xF}


def parse_sass(sass: str) -> list[dict]:
    """Every instruction: address, guard predicate, opcode, modifiers, operands, and its
    scheduling control (``control``) where cuobjdump printed the encoding."""
    out = []
    lines = sass.splitlines()
    for k, line in enumerate(lines):
        m = _SASS.match(line)
        if m:
            ins = dict(addr=int(m.group(1), 16), guard=(m.group(2) or "").strip(), op=m.group(3),
                       mods=m.group(4), args=m.group(5).strip())
            hx = _HEX.search(lines[k + 1]) if k + 1 < len(lines) and not _SASS.match(lines[k + 1]) else None
            if hx:
                ins["ctrl"] = control(int(hx.group(1), 16))
            out.append(ins)
    return out


def sass_loops(ins) -> list[tuple[int, int]]:
    """(start, end) address of every backward branch, innermost first."""
    found = []
    for i in ins:
        if i["op"] == "BRA":
            m = re.search(r"0x([0-9a-f]+)", i["args"])
            if m and int(m.group(1), 16) < i["addr"]:
                found.append((int(m.group(1), 16), i["addr"]))
    return sorted(found, key=lambda r: r[1] - r[0])


def sass_class(i: dict) -> str:
    if i["op"] == "MUFU":
        return "MUFU" + i["mods"]  # MUFU.EX2, MUFU.RCP, MUFU.TANH, ...
    for cls, ops in SASS_CLASSES:
        if i["op"] in ops:
            return cls
    return "other"


def sass_body(ins, trips: int) -> tuple[list[dict], collections.Counter, collections.Counter, bool]:
    """The epoch loop's instructions, counts per network-epoch by opcode and by class, and
    whether it holds an inner (per-sample) loop."""
    loops = sass_loops(ins)
    if not loops:
        raise RuntimeError("no backward branch in the SASS: expected the epoch loop")
    outer = loops[-1]
    inner = next((r for r in loops[:-1] if outer[0] <= r[0] and r[1] <= outer[1]), None)
    body = [i for i in ins if outer[0] <= i["addr"] <= outer[1]]

    def weight(i):
        return trips if inner and inner[0] <= i["addr"] <= inner[1] else 1

    by_op, by_class = collections.Counter(), collections.Counter()
    for i in body:
        key = "MUFU" + i["mods"] if i["op"] == "MUFU" else i["op"]
        by_op[key] += weight(i)
        by_class[sass_class(i)] += weight(i)
    return body, by_op, by_class, inner is not None


def _regs(text: str) -> list[str]:
    """Registers named in operand text; a 64-bit operand ``R22.64`` names R22 and R23."""
    out = []
    for m in re.finditer(r"(?<![\w.])(U?R\d+|U?P\d+)(\.64)?", text):
        out.append(m.group(1))
        if m.group(2):
            kind, n = re.match(r"(U?R)(\d+)", m.group(1)).groups()
            out.append(f"{kind}{int(n) + 1}")
    return out


def critical_path(body: list[dict]) -> dict:
    """The longest chain of dependent instructions through one pass of the loop body (values
    from before the loop, and from the previous epoch, are ready at its start), counted in
    instructions and in MUFU among them.  Destinations: the first operand, or the first two
    predicates of a SETP; stores, branches and barriers define nothing; a guarded instruction
    also reads its destination (it may keep the old value)."""
    depth: dict[str, tuple[int, int]] = {}  # register -> (chain length, MUFU on it) of its last writer
    best = (0, 0)
    for i in body:
        if i["op"] in ("BRA", "EXIT", "BAR", "BSSY", "BSYNC", "NOP", "WARPSYNC"):
            continue
        ops = [o.strip() for o in i["args"].split(",")] if i["args"] else []
        if i["op"].startswith("ST") or i["op"] in ("RED", "ATOM"):
            dests, srcs = [], ops
        elif i["op"].endswith("SETP"):
            dests, srcs = ops[:2], ops[2:]
        else:
            dests, srcs = ops[:1], ops[1:]
        reads = [r for o in srcs for r in _regs(o)] + _regs(i["guard"])
        writes = [r for o in dests for r in _regs(o) if r not in ("PT", "RZ", "URZ", "UPT")]
        if i["guard"]:
            reads += writes
        n, m = max((depth.get(r, (0, 0)) for r in reads), default=(0, 0))
        here = (n + 1, m + (i["op"] == "MUFU"))
        for r in writes:
            depth[r] = here
        best = max(best, here)
    return {"instructions": best[0], "mufu": best[1]}


# ---------------------------------------------------------------------------------------
# One scheduler's issue, simulated from the SASS's own scheduling control
# ---------------------------------------------------------------------------------------
# Cycles between two warp instructions entering one SM sub-partition's pipe (32 threads over
# its lanes): FP32 32 lanes (1), MUFU 4 (8: 16 per SM), the integer/compare ALU and IMAD 16
# (2: 64 per SM, the Programming Guide's "compare, minimum, maximum" and 32-bit integer rows).
PIPE_INTERVAL = {"fp32": 1, "mufu": 8, "alu": 2, "imad": 2, "mio": 1, "uniform": 1, "control": 1}
# Assumed latencies (cycles from issue to the result) of the variable-latency instructions, whose
# consumers wait on a scoreboard: MUFU (--measure measures it), LDC (constant cache hit).  The
# fixed-latency ones (FP32, ALU) need none: the compiler's stall counts already space them.
MUFU_LATENCY = 18
OTHER_LATENCY = 30


def pipe_of(i: dict) -> str:
    op = i["op"]
    if op == "MUFU":
        return "mufu"
    if op in SASS_FP32 or op == "HFMA2":
        return "fp32"
    if op == "IMAD":
        return "imad"
    if op.startswith("U") and op not in ("UIMAD",):
        return "uniform"
    if op in ("LDG", "STG", "LDC", "LDS", "STS", "LDL", "STL", "RED", "ATOM", "S2R", "S2UR", "R2UR"):
        return "mio"
    if op in ("BRA", "EXIT", "BSSY", "BSYNC", "NOP", "WARPSYNC", "YIELD"):
        return "control"
    return "alu"


def simulate(body: list[dict], warps: int, mufu_latency: float = MUFU_LATENCY, epochs: int = 12,
             other_latency: float = OTHER_LATENCY, policy: str = "greedy") -> dict:
    """Cycles per epoch of ``warps`` warps sharing one scheduler, each running the loop body
    over and over, issued in order as the compiled code's control allows: after each instruction
    its ``stall`` cycles; an instruction waits for the scoreboards in its ``wait`` mask (set by
    MUFU and LDC, released ``mufu_latency`` / ``other_latency`` cycles after their issue) and for
    its pipe (``PIPE_INTERVAL``); one issue per cycle; the scheduler keeps issuing from the warp
    it issued last while it can, else takes the next ready one (``policy="greedy"``), or starts
    from the next warp each cycle (``"round-robin"``).  A model: no
    instruction fetch, register banks or memory.  Returns the steady-state cycles per epoch (all
    ``warps`` advancing one epoch), against ``warps x len(body)`` for one issue every cycle."""
    n = len(body)
    pipes = [pipe_of(i) for i in body]
    ctrl = [i.get("ctrl") or {"stall": 1, "wait": 0, "wbar": 7, "rbar": 7} for i in body]
    free = dict.fromkeys(PIPE_INTERVAL, 0)
    pc, done, ready = [0] * warps, [0] * warps, [0] * warps
    bars = [[0] * 6 for _ in range(warps)]
    t, last, issued = 0, 0, 0
    window = {}  # issue count when the slowest warp finished its 2nd and its (epochs-1)th epoch
    while min(done) < epochs:
        first = last if policy == "greedy" else (last + 1) % warps  # greedy-then-next, or round robin
        for w in [(first + j) % warps for j in range(warps)]:
            if done[w] >= epochs or ready[w] > t:
                continue
            k = pc[w]
            c, p = ctrl[k], pipes[k]
            if free[p] > t or any((c["wait"] >> b) & 1 and bars[w][b] > t for b in range(6)):
                continue
            free[p] = t + PIPE_INTERVAL[p]
            if c["wbar"] != 7:
                bars[w][c["wbar"]] = max(bars[w][c["wbar"]], t + (mufu_latency if p == "mufu" else other_latency))
            if c["rbar"] != 7:
                bars[w][c["rbar"]] = max(bars[w][c["rbar"]], t + 2)
            ready[w] = t + max(c["stall"], 1)
            pc[w] += 1
            issued += 1
            if pc[w] == n:
                pc[w], done[w] = 0, done[w] + 1
                for mark in (2, epochs - 1):
                    if min(done) == mark and mark not in window:
                        window[mark] = (t, issued)
            last = w
            break
        t += 1
    (t0, i0), (t1, i1) = window[2], window[epochs - 1]  # steady state: instructions issued per cycle
    per_epoch = warps * n * (t1 - t0) / (i1 - i0)
    return {"warps": warps, "mufu_latency": mufu_latency, "policy": policy, "cycles_per_epoch": per_epoch,
            "issue_cycles_per_epoch": warps * n, "issue_efficiency": warps * n / per_epoch,
            "single_warp_stall_cycles": sum(max(c["stall"], 1) for c in ctrl)}


# ---------------------------------------------------------------------------------------
# The model
# ---------------------------------------------------------------------------------------
def occupancy(regs: int, block_threads: int, dev: dict) -> dict:
    """Blocks and warps per SM from the register count (no shared memory, no spills)."""
    per_warp = math.ceil(regs * 32 / dev["reg_alloc_unit"]) * dev["reg_alloc_unit"]
    warps_per_block = block_threads // 32
    blocks = min(dev["regs_per_sm"] // (per_warp * warps_per_block), dev["max_blocks_per_sm"],
                 dev["max_warps_per_sm"] // warps_per_block)
    return {"registers": regs, "blocks_per_sm": blocks, "warps_per_sm": blocks * warps_per_block,
            "warps_per_scheduler": blocks * warps_per_block / dev["schedulers"],
            "occupancy": blocks * warps_per_block / dev["max_warps_per_sm"]}


def waves(G: int, block_g: int, occ: dict, dev: dict) -> dict:
    blocks = math.ceil(G / block_g)
    resident = occ["blocks_per_sm"] * dev["sms"]
    w = blocks / resident
    return {"blocks": blocks, "resident_blocks": resident, "waves": w, "last_wave_fill": w - math.floor(w) or 1.0,
            "wave_efficiency": w / math.ceil(w)}


def floors(counts: dict, G: int, E: int, dev: dict) -> dict:
    """Seconds for G x E from each pipe's count per network-epoch."""
    n = G * E / (dev["sms"] * dev["clock_hz"])
    return {"fma_pipe_s": n * counts["fp32"] / dev["fp32_per_sm"], "mufu_pipe_s": n * counts["mufu"] / dev["mufu_per_sm"],
            "issue_s": n * counts["instructions"] / dev["issue_per_sm"]}


def analyse(info: dict, sizes, N: int, G: int, E: int, dev: dict, fast_tanh: bool, measured_s: float | None,
            mufu_latency: float = MUFU_LATENCY) -> dict:
    variant, block_g = info["variant"], info["meta"]["BLOCK_G"]
    trips = N - 1 if variant == "unrolled" else N  # the generated kernel peels sample 0 off its sample loop
    ptx = ptx_counts(info["ptx"], trips)
    ins = parse_sass(info["sass"])
    body, by_op, by_class, has_inner = sass_body(ins, trips)
    total = sum(by_op.values())
    fp32 = sum(by_op[o] for o in SASS_FP32)
    mufu = sum(v for k, v in by_op.items() if k.startswith("MUFU"))
    counts = {"instructions": total, "fp32": fp32, "mufu": mufu}
    work = instruments.work_per_network_epoch(sizes, N)
    mufu_work = work["activations"] * (1 if fast_tanh else 2)
    f = floors(counts, G, E, dev)
    fw = floors({"instructions": work["multiply_adds"] + mufu_work, "fp32": work["multiply_adds"], "mufu": mufu_work},
                G, E, dev)
    occ = occupancy(info["resources"]["regs"], 32 * info.get("num_warps", 4), dev)  # BLOCK_G networks, 128 threads
    row = dict(tanh="tanh.approx.f32" if fast_tanh else "exp2 form", fast_tanh=fast_tanh, variant=variant,
               block_g=block_g, triton=info["triton"], resources=info["resources"], occupancy=occ,
               waves=waves(G, block_g, occ, dev),
               ptx_per_network_epoch=ptx,
               ptx_mufu=sum(ptx.get(k, 0) for k in ("ex2", "rcp", "tanh", "lg2", "sin", "cos", "rsqrt", "sqrt",
                                                   "div.full", "div.approx")),
               ptx_fp32=sum(ptx.get(k, 0) for k in ("fma", "mul", "add")),
               sass_per_network_epoch=dict(sorted(by_op.items(), key=lambda kv: -kv[1])),
               sass_classes=dict(sorted(by_class.items(), key=lambda kv: -kv[1])), **counts,
               ffma=by_op["FFMA"], fmul=by_op["FMUL"], fadd=by_op["FADD"],
               critical_path=None if has_inner else critical_path(body),
               floors_s=f, work_floors_s=fw, work_mufu=mufu_work, work_multiply_adds=work["multiply_adds"],
               limit=max(f, key=f.get))
    if not has_inner:  # the scheduler model: what issue rate the code allows with this occupancy
        sims = [simulate(body, max(1, int(occ["warps_per_scheduler"])), mufu_latency, policy=p)
                for p in ("greedy", "round-robin")]
        row["model"] = {"mufu_latency": mufu_latency, "runs": sims,
                        "seconds": [f["issue_s"] / s["issue_efficiency"] / row["waves"]["wave_efficiency"] for s in sims],
                        "without_mufu_pipe_limit": _sim_without(body, occ, "mufu", mufu_latency),
                        "single_warp_stall_cycles": sims[0]["single_warp_stall_cycles"]}
    if measured_s:
        row.update(measured_s=measured_s, measured_net_epochs_per_s=G * E / measured_s,
                   of_floor={k: v / measured_s for k, v in f.items()})
    return row


def _sim_without(body, occ, pipe: str, mufu_latency: float) -> float:
    """Issue efficiency of the greedy model with ``pipe`` as fast as issue (what its
    throughput costs)."""
    saved = PIPE_INTERVAL[pipe]
    PIPE_INTERVAL[pipe] = 1
    try:
        return simulate(body, max(1, int(occ["warps_per_scheduler"])), mufu_latency)["issue_efficiency"]
    finally:
        PIPE_INTERVAL[pipe] = saved


# ---------------------------------------------------------------------------------------
# On a GPU (--measure)
# ---------------------------------------------------------------------------------------
_PROBES = r"""
import triton
import triton.language as tl


@triton.jit
def _op(x, OP: tl.constexpr):
    if OP == 0:
        y = x * 0.9999 + 0.0001  # FFMA
    elif OP == 1:
        y = tl.inline_asm_elementwise("ex2.approx.ftz.f32 $0, $1;", "=f,f", [x], dtype=tl.float32, is_pure=True, pack=1)
    elif OP == 2:
        # rcp(1 + x): ptxas folds rcp(rcp(x)) away; the FADD rides on the FP32 pipe
        y = tl.inline_asm_elementwise("{ .reg .f32 t; add.ftz.f32 t, $1, 0f3F800000; rcp.approx.ftz.f32 $0, t; }",
                                      "=f,f", [x], dtype=tl.float32, is_pure=True, pack=1)
    else:
        y = tl.inline_asm_elementwise("tanh.approx.f32 $0, $1;", "=f,f", [x], dtype=tl.float32, is_pure=True, pack=1)
    return y


@triton.jit
def throughput_probe(out, ITERS: tl.constexpr, OP: tl.constexpr, BLOCK: tl.constexpr):
    # 8 independent chains per thread, 16 operations per loop trip
    offs = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
    a0 = offs.to(tl.float32) * 1e-9 + 0.5
    a1 = a0 + 0.01
    a2 = a0 + 0.02
    a3 = a0 + 0.03
    a4 = a0 + 0.04
    a5 = a0 + 0.05
    a6 = a0 + 0.06
    a7 = a0 + 0.07
    for i in range(ITERS):
        a0 = _op(_op(a0, OP), OP)
        a1 = _op(_op(a1, OP), OP)
        a2 = _op(_op(a2, OP), OP)
        a3 = _op(_op(a3, OP), OP)
        a4 = _op(_op(a4, OP), OP)
        a5 = _op(_op(a5, OP), OP)
        a6 = _op(_op(a6, OP), OP)
        a7 = _op(_op(a7, OP), OP)
    tl.store(out + offs, a0 + a1 + a2 + a3 + a4 + a5 + a6 + a7)


@triton.jit
def latency_probe(out, ITERS: tl.constexpr, OP: tl.constexpr, BLOCK: tl.constexpr):
    # one dependent chain per thread, 16 operations per loop trip
    offs = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
    a = offs.to(tl.float32) * 1e-9 + 0.5
    for i in range(ITERS):
        a = _op(_op(_op(_op(a, OP), OP), OP), OP)
        a = _op(_op(_op(_op(a, OP), OP), OP), OP)
        a = _op(_op(_op(_op(a, OP), OP), OP), OP)
        a = _op(_op(_op(_op(a, OP), OP), OP), OP)
    tl.store(out + offs, a)
"""
PROBE_OPS = {"fp32": 0, "ex2": 1, "rcp": 2, "tanh": 3}


def probe_pipes(dev: dict, iters: int = 4096) -> dict:
    """FP32 (FFMA) and MUFU (ex2, rcp, tanh) on this GPU.  Throughput: 8 independent chains per
    thread, 16 resident 128-thread blocks per SM (4 waves of them).  Latency: one chain per
    thread, one warp per SM.  16 operations per loop trip (the loop's own few instructions
    ride along).  FP32's rate / (128 x SMs) is the clock the FP32 peak implies; each MUFU rate
    is given per SM and clock at that clock and as a ratio to FP32's (the model: 16/128 =
    0.125); latencies in cycles of that clock (rcp's includes the FADD of its ``rcp(1 + x)``
    chain).  The SASS of each probe's loop, counted by AOT compiles for sm_90: 256 of the
    operation and 3 loop instructions per trip of 16 (the loop is unrolled 16 times); rcp adds
    256 FADD."""
    import importlib.util

    import torch

    with tempfile.TemporaryDirectory() as tmp:  # @triton.jit reads its source from a file
        path = Path(tmp, "fastmlp_pipe_probes.py")
        path.write_text(_PROBES)
        spec = importlib.util.spec_from_file_location("fastmlp_pipe_probes", path)
        mod = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(mod)
        sms = torch.cuda.get_device_properties(0).multi_processor_count
        res = {"sms": sms, "iters": iters}
        for k, op in PROBE_OPS.items():
            grid = sms * 16 * 4
            out = torch.empty(grid * 128, device="cuda")
            fn = (lambda op, grid, out: lambda: mod.throughput_probe[(grid,)](out, ITERS=iters, OP=op, BLOCK=128,
                                                                               num_warps=4))(op, grid, out)
            ms = harness.do_bench(fn, "cuda")["ms"]
            ops = grid * 128 * iters * 16
            lat = (lambda op: lambda: mod.latency_probe[(sms,)](out, ITERS=iters, OP=op, BLOCK=32, num_warps=1))(op)
            lat_ms = harness.do_bench(lat, "cuda")["ms"]
            res[k] = {"ms": ms, "per_sm_per_s": ops / (ms * 1e-3) / sms, "latency_ms": lat_ms}
        clock = res["fp32"]["per_sm_per_s"] / dev["fp32_per_sm"]
        res["implied_clock_hz"] = clock
        for k in PROBE_OPS:
            r = res[k]
            r["per_sm_per_clock"] = r["per_sm_per_s"] / clock
            r["ratio_to_fp32"] = r["per_sm_per_s"] / res["fp32"]["per_sm_per_s"]
            r["latency_cycles"] = r["latency_ms"] * 1e-3 * clock / (iters * 16)
    return res


def time_kernel(sizes, N: int, G: int, E: int, fast_tanh: bool, repeats: int = 3) -> dict:
    """One launch of ``fused_train`` for G x E on this GPU (median of ``repeats`` after a warm-up)."""
    import statistics

    import torch

    harness.kernels()
    from fastmlp import Population, datasets
    from fastmlp.kernels import fused_train as fk

    x, y = (t.cuda() for t in datasets.five_points()) if (list(sizes), N) == ([2, 5, 3, 1], 5) else \
        (torch.rand(N, sizes[0], device="cuda"), torch.rand(N, sizes[-1], device="cuda"))
    pop = Population(list(sizes), G, device="cuda")
    packed = fk.pack(pop.weights, pop.biases)
    lr = torch.full((G,), 0.25, device="cuda")
    loss = torch.empty(E, G, device="cuda")

    def go():
        active = torch.ones(G, dtype=torch.int8, device="cuda")
        fk.fused_train(x, y, packed.clone(), lr, active, loss, list(sizes), E, fast_tanh=fast_tanh)

    go()
    times = [harness.clock(go, "cuda")[0] for _ in range(repeats)]
    return {"median_s": statistics.median(times), "times_s": times}


# ---------------------------------------------------------------------------------------
# Report
# ---------------------------------------------------------------------------------------
def report(rec: dict) -> str:
    dev, G, E = rec["device_model"], rec["G"], rec["epochs"]
    lines = [f"# GPU roofline: {'-'.join(map(str, rec['sizes']))} on N = {rec['N']}, float32, G = {G} x {E} epochs, "
             f"sm_{rec['cap']} code from Triton {rec['rows'][0]['triton']}"
             + (f", commit {rec['commit'][:10]}" if rec.get("commit") else ", this checkout"),
             f"# device model: {dev['name']}: {dev['sms']} SMs x {dev['clock_hz'] / 1e9:.2f} GHz; per SM and clock "
             f"{dev['fp32_per_sm']} FP32, {dev['mufu_per_sm']} MUFU, {dev['issue_per_sm']} issue "
             f"({dev['schedulers']} schedulers x 32)",
             f"# the work: {rec['work']['multiply_adds']} multiply-adds, {rec['work']['activations']} activations "
             "per network-epoch", ""]
    head = ["tanh", "regs", "warps/SM", "PTX fma/mul/add", "PTX ex2/rcp/div/tanh", "SASS instr", "FFMA/FMUL/FADD",
            "MUFU", "select/compare", "integer", "load/store", "other", "FMA floor s", "MUFU floor s", "issue floor s",
            "measured s", "of issue floor"]
    body = []
    for r in rec["rows"]:
        p, c = r["ptx_per_network_epoch"], r["sass_classes"]
        muf = "/".join(str(p.get(k, 0)) for k in ("ex2", "rcp")) + "/" + str(p.get("div.full", 0) + p.get("div.approx", 0)
                                                                               + p.get("div.rn", 0)) + "/" + str(p.get("tanh", 0))
        other = r["instructions"] - r["fp32"] - r["mufu"] - c.get("select/compare", 0) - c.get("integer", 0) \
            - c.get("load/store", 0)
        f = r["floors_s"]
        body.append([r["tanh"], r["resources"]["regs"], r["occupancy"]["warps_per_sm"],
                     f"{p.get('fma', 0)}/{p.get('mul', 0)}/{p.get('add', 0)}", muf, r["instructions"],
                     f"{r['ffma']}/{r['fmul']}/{r['fadd']}", r["mufu"], c.get("select/compare", 0), c.get("integer", 0),
                     c.get("load/store", 0), other, f"{f['fma_pipe_s']:.4g}", f"{f['mufu_pipe_s']:.4g}",
                     f"{f['issue_s']:.4g}", f"{r['measured_s']:.4g}" if r.get("measured_s") else "-",
                     f"{100 * r['of_floor']['issue_s']:.0f}%" if r.get("measured_s") else "-"])
    lines.append(harness.table(head, body, left=1))
    for r in rec["rows"]:
        fw, cp, w = r["work_floors_s"], r["critical_path"], r["waves"]
        lines.append(f"# {r['tanh']}: the work alone: FMA {fw['fma_pipe_s']:.4g} s ({r['work_multiply_adds']} FMA), MUFU "
                     f"{fw['mufu_pipe_s']:.4g} s ({r['work_mufu']} MUFU); {w['waves']:.2f} waves of "
                     f"{w['resident_blocks']} blocks (last {100 * w['last_wave_fill']:.0f}% full, "
                     f"efficiency {100 * w['wave_efficiency']:.1f}%)"
                     + (f"; longest dependency chain per epoch {cp['instructions']} instructions, "
                        f"{cp['mufu']} of them MUFU" if cp else ""))
        lines.append("#   SASS per network-epoch: " + ", ".join(f"{k} {v}" for k, v in r["sass_per_network_epoch"].items()))
        if r.get("model"):
            m = r["model"]
            lines.append(f"#   scheduler model ({int(r['occupancy']['warps_per_scheduler'])} warps per scheduler, MUFU "
                         f"latency {m['mufu_latency']:g} cycles; one warp alone needs {m['single_warp_stall_cycles']} "
                         f"stall cycles for its {r['instructions']} instructions): issue efficiency "
                         + " / ".join(f"{100 * x['issue_efficiency']:.0f}% ({x['policy']})" for x in m["runs"])
                         + f", {100 * m['without_mufu_pipe_limit']:.0f}% if MUFU issued like FP32 -> "
                         + " / ".join(f"{x:.4g} s" for x in m["seconds"]) + " with the waves")
    if rec.get("measured_source"):
        lines.append(f"# measured: {rec['measured_source']}")
    elif rec.get("note"):
        lines.append(f"# {rec['note']}")
    if rec.get("probes"):
        pr = rec["probes"]
        lines.append(f"# probes on this GPU: FP32 {pr['fp32']['per_sm_per_s'] / 1e9:.1f} G/SM/s -> implied clock "
                     f"{pr['implied_clock_hz'] / 1e9:.3f} GHz at 128/SM/clock (latency {pr['fp32']['latency_cycles']:.1f} "
                     "cycles); " + ", ".join(
                         f"{k} {pr[k]['per_sm_per_clock']:.1f}/SM/clock ({pr[k]['ratio_to_fp32']:.3f} x FP32, latency "
                         f"{pr[k]['latency_cycles']:.1f} cycles)" for k in ("ex2", "rcp", "tanh")))
    for k, t in (rec.get("timed") or {}).items():
        lines.append(f"# timed here: {k} one launch {t['median_s']:.4f} s (G = {G} x {E})")
    return "\n".join(lines)


def main(argv=None) -> int:
    ap = harness.parser(__doc__)
    ap.add_argument("--sizes", default="2,5,3,1")
    ap.add_argument("--N", type=int, default=5)
    ap.add_argument("--G", type=int, default=2**20)
    ap.add_argument("--epochs", type=int, default=2500)
    ap.add_argument("--tanh", choices=("both", "exp2", "approx"), default="both",
                    help="which kernels: the exp2 form (the default kernel), tanh.approx.f32, or both")
    ap.add_argument("--cap", type=int, default=90, help="compute capability to compile for (default 90: sm_90)")
    ap.add_argument("--device-model", choices=sorted(DEVICE_MODELS), default="h200")
    ap.add_argument("--clock-ghz", type=float, help="the model's SM clock (default: its boost clock)")
    ap.add_argument("--mufu-latency", type=float, default=None,
                    help=f"cycles, for the scheduler model (default {MUFU_LATENCY}; with --measure: the probe's)")
    src = ap.add_mutually_exclusive_group()
    src.add_argument("--commit", help="count the kernel of this commit (git archive into a temporary folder)")
    src.add_argument("--root", help="count the kernel of the checkout in this folder (default: this one)")
    ap.add_argument("--measured", default=None,
                    help="seconds for G x epochs to set against the floors, 'exp2=S,approx=S' (default: the H200 "
                         "run's, for the lab network at the default G and epochs; 'none' for none)")
    ap.add_argument("--measure", action="store_true", help="CUDA only: time one launch of each variant here and "
                                                           "probe the FP32 and MUFU pipes")
    args = ap.parse_args(argv)
    sizes = [int(s) for s in args.sizes.split(",")]
    lab_default = sizes == [2, 5, 3, 1] and args.N == 5 and args.G == 2**20 and args.epochs == 2500 and args.cap == 90
    if args.measured is None:
        measured = {}  # the H200's times, once the commit is known to be the one that ran them (below)
    elif args.measured == "none":
        measured = {}
    else:
        try:
            measured = {k: float(v) for k, v in (kv.split("=") for kv in args.measured.split(","))}
            assert set(measured) <= {"exp2", "approx"}
        except (ValueError, AssertionError):
            ap.error(f"--measured: expected 'exp2=SECONDS,approx=SECONDS', got {args.measured!r}")
    if args.measure:
        import torch

        if not torch.cuda.is_available():
            ap.error("--measure: CUDA is not available on this machine (the counts need no GPU: drop --measure)")
    if args.measured is None and lab_default and args.commit:
        sha = subprocess.run(["git", "rev-parse", "--verify", "-q", f"{args.commit}^{{commit}}"], cwd=harness.ROOT,
                             capture_output=True, text=True).stdout.strip()
        if sha.startswith(MEASURED_COMMIT):
            measured = dict(MEASURED_H200)
    dev = dict(DEVICE_MODELS[args.device_model])
    if args.clock_ghz:
        if not 0.1 <= args.clock_ghz <= 5:
            ap.error(f"--clock-ghz: expected a clock in GHz, got {args.clock_ghz}")
        dev["clock_hz"] = args.clock_ghz * 1e9
    probes = probe_pipes(dev) if args.measure else None
    env = harness.environment()  # where it was compiled; the device is the model
    with tempfile.TemporaryDirectory(prefix="roofline-gpu-") as tmp:
        root, commit = Path(args.root).resolve() if args.root else harness.ROOT, None
        if args.root and not (root / "kernels" / "aot.py").is_file():
            ap.error(f"--root: {args.root!r} holds no fastmlp checkout (no kernels/aot.py)")
        if args.commit:
            root = Path(tmp, "tree")
            root.mkdir()
            try:
                commit = export_commit(args.commit, str(root))
            except subprocess.CalledProcessError as e:
                ap.error(f"--commit: cannot export {args.commit!r}: {(e.stderr or b'').strip()[-300:]}")
        jobs = {}
        variants = [fast for fast in (False, True) if args.tanh in ("both", "approx" if fast else "exp2")]
        for fast in variants:
            out = Path(tmp, "approx" if fast else "exp2")
            out.mkdir()
            jobs[fast] = (start_compile(root, sizes, args.N, args.cap, fast, str(out)), str(out))
        infos = {fast: finish_compile(*job) for fast, job in jobs.items()}
    def latency(fast):
        if args.mufu_latency is not None:
            return args.mufu_latency
        return probes["tanh" if fast else "ex2"]["latency_cycles"] if probes else MUFU_LATENCY

    rows = [analyse(infos[fast], sizes, args.N, args.G, args.epochs, dev, fast,
                    measured.get("approx" if fast else "exp2"), latency(fast)) for fast in variants]
    rec = dict(sizes=sizes, N=args.N, G=args.G, epochs=args.epochs, cap=args.cap, commit=commit,
               root=None if args.root is None else str(Path(args.root).resolve()), device_model=dev,
               work=instruments.work_per_network_epoch(sizes, args.N), rows=rows,
               measured_source=MEASURED_SOURCE if measured and args.measured is None else
               ("--measured" if measured else None),
               note=None if measured or not lab_default else
               f"not timed: the H200's {MEASURED_H200['exp2']} s / {MEASURED_H200['approx']} s (exp2 / approx) ran "
               f"the kernel of {MEASURED_COMMIT} (--commit {MEASURED_COMMIT})")
    if args.measure:
        rec["probes"] = probes
        rec["timed"] = {("approx" if fast else "exp2"): time_kernel(sizes, args.N, args.G, args.epochs, fast)
                        for fast in variants}
        rec["gpu"] = __import__("torch").cuda.get_device_name()
    harness.finish(env)
    print(report(rec))
    tag = f"-{commit[:7]}" if commit else (f"-{re.sub(r'[^A-Za-z0-9_.-]+', '_', Path(args.root).name)}"
                                            if args.root else "")
    path = harness.write_json(args.out, "roofline-gpu", env, rec, script=__file__, argv=argv,
                              slug=f"sm{args.cap}-{'-'.join(map(str, sizes))}-N{args.N}", tag=tag)
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
