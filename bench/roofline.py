"""Roofline of the one-launch training kernels from their machine code, without a GPU.

Compiles what ``fused_train`` launches for sm_90 (Triton's ahead-of-time path,
``fastmlp.kernels.aot``), disassembles the cubin with the ``cuobjdump`` that ships inside
Triton, finds the epoch loop (the outermost backward branch) and counts the instructions a
network-epoch executes.  The generated kernel (``kernels/fused_unrolled.py``, the
launcher's pick for the lab network) unrolls the samples, so that is the epoch loop's
body; the tile kernel (``kernels/fused_train.py``, shown for comparison) has a per-sample
loop inside it: ``N * (per-sample loop body) + (rest of the epoch loop)``.  With
BLOCK_G = 128 networks on 128 threads each thread trains exactly one network, so these
are also thread-instructions per network-epoch.  The counts turn into upper bounds on an
H200 (132 SMs, 1.98 GHz boost):

* issue:  4 schedulers x 32 lanes = 128 thread-instructions per SM per clock, any kind;
* FP32:   128 FFMA/FMUL/FADD lanes per SM per clock (67 TFLOP/s = 33.5 T FMA/s);
* MUFU:   16 special-function results (ex2, rcp, tanh) per SM per clock.

    python bench/roofline.py [--sizes 2,5,3,1] [--N 5] [--G 1048576] [--epochs 2500]
"""
from __future__ import annotations

import collections
import os
import re
import sys
import warnings

warnings.filterwarnings("ignore", message=".*FP_FUSION.*")
os.environ.pop("TRITON_INTERPRET", None)  # before Triton is imported: these are real compiles

import harness  # noqa: E402
import instruments  # noqa: E402

harness.kernels()  # fastmlp.kernels, also from a checkout without install
import triton  # noqa: E402

from fastmlp.kernels import fused_train as F  # noqa: E402
from fastmlp.kernels.aot import compile_fused, cuobjdump, resources  # noqa: E402

H200 = dict(name="H200 SXM", sms=132, clock_hz=1.98e9, issue_per_sm=128, fp32_per_sm=128, mufu_per_sm=16)
FP32_OPS = ("FFMA", "FMUL", "FADD")


def parse_sass(sass: str):
    """[(address, opcode)] of every instruction (predicates dropped, modifiers cut)."""
    out = []
    for line in sass.splitlines():
        m = re.match(r"\s+/\*([0-9a-f]{4,})\*/\s+(?:@!?U?P[T0-9]+\s+)?([A-Z0-9]+)(\S*)\s*([^;]*);", line)
        if m:
            out.append((int(m.group(1), 16), m.group(2), m.group(4)))
    return out


def loops(ins):
    """(start, end) of every backward branch, innermost first."""
    found = []
    for addr, op, args in ins:
        if op == "BRA":
            m = re.search(r"0x([0-9a-f]+)", args)
            if m and int(m.group(1), 16) < addr:
                found.append((int(m.group(1), 16), addr))
    return sorted(found, key=lambda r: r[1] - r[0])


def histogram(ins, lo, hi):
    return collections.Counter(op for addr, op, _ in ins if lo <= addr <= hi)


def analyse(sizes, N, G, epochs, fast_tanh, variant=None):
    ck, meta = compile_fused(sizes, N, 90, fast_tanh, variant, G)
    use = resources(ck.asm["cubin"])
    regs, stack, local = use["regs"], use["stack"], use["local"]
    ins = parse_sass(cuobjdump(ck.asm["cubin"], "-sass"))
    lp = loops(ins)
    if not lp:
        raise RuntimeError("expected an epoch loop")
    outer = lp[-1]  # the epoch loop: the outermost backward branch
    inner = next((r for r in lp[:-1] if outer[0] <= r[0] and r[1] <= outer[1]), None)
    # A per-sample loop inside it (the tile kernel; the generated one beyond UNROLL_SAMPLES),
    # or none (the generated kernel with its samples unrolled).
    h_in = histogram(ins, *inner) if inner else collections.Counter()
    h_ep = histogram(ins, *outer)
    # The generated kernel's sample loop runs N - 1 times (sample 0 is peeled off before it,
    # and counted in the rest of the epoch loop); the tile kernel's runs N times.
    trips = N - 1 if F.variant(sizes, N, variant) == "unrolled" else N
    per_ne = collections.Counter({op: trips * h_in[op] + (h_ep[op] - h_in[op]) for op in h_ep})
    total = sum(per_ne.values())
    fp32 = sum(per_ne[o] for o in FP32_OPS)
    mufu = per_ne["MUFU"]
    d = H200
    bounds = {
        "issue": d["sms"] * d["issue_per_sm"] * d["clock_hz"] / total,
        "fp32": d["sms"] * d["fp32_per_sm"] * d["clock_hz"] / fp32,
        "mufu": d["sms"] * d["mufu_per_sm"] * d["clock_hz"] / mufu,
    }
    limit = min(bounds, key=bounds.get)
    rate = bounds[limit]
    return dict(sizes=sizes, N=N, variant=F.variant(sizes, N, variant), fast_tanh=fast_tanh, block_g=meta["BLOCK_G"], registers=regs, stack=stack,
                local=local, per_sample=dict(h_in), per_network_epoch=dict(per_ne), instructions=total,
                fp32=fp32, ffma=per_ne["FFMA"], fmul_fadd=per_ne["FMUL"] + per_ne["FADD"], mufu=mufu,
                bounds_network_epochs_per_s=bounds, limit=limit,
                seconds_lower_bound=G * epochs / rate, G=G, epochs=epochs)


def main(argv=None):
    ap = harness.parser(__doc__)
    ap.add_argument("--sizes", default="2,5,3,1")
    ap.add_argument("--N", type=int, default=5)
    ap.add_argument("--G", type=int, default=2**20)
    ap.add_argument("--epochs", type=int, default=2500)
    args = ap.parse_args(argv)
    sizes = [int(s) for s in args.sizes.split(",")]
    work = instruments.work_per_network_epoch(sizes, args.N)
    env = harness.environment()  # where it was compiled; the device is the model below
    rows = [analyse(sizes, args.N, args.G, args.epochs, fast, v) for v in F.VARIANTS for fast in (False, True)
            if v == "tiles" or F.variant(sizes, args.N) == "unrolled"]
    harness.finish(env)
    print(f"fused kernel, {'-'.join(map(str, sizes))} on N = {args.N}, sm_90 SASS (Triton {triton.__version__}); "
          f"needed per network-epoch: {work['multiply_adds']} multiply-adds, {work['activations']} tanh/sigmoid\n")
    print(harness.table(
        ["kernel", "tanh", "regs", "stack", "instr", "FFMA", "FMUL+FADD", "MUFU", "issue bound", "FP32 bound",
         "MUFU bound", "limit", f"G={args.G} x {args.epochs}"],
        [[r["variant"], "approx" if r["fast_tanh"] else "exp", r["registers"], r["stack"], r["instructions"], r["ffma"],
          r["fmul_fadd"], r["mufu"], *(f"{r['bounds_network_epochs_per_s'][k]:.3g}" for k in ("issue", "fp32", "mufu")),
          r["limit"], f"{r['seconds_lower_bound']:.3f} s"] for r in rows], left=2))
    print("bounds in network-epochs/s on an H200 (132 SMs x 1.98 GHz; 128 issue and FP32 lanes, 16 MUFU per SM "
          "per clock); the last column is the time those bounds allow, a lower bound")
    path = harness.write_json(args.out, "roofline", env, dict(device_model=H200, triton=triton.__version__,
                                                              date=env["date"][:10], needed=work, rows=rows),
                              script=__file__, argv=argv, slug=f"sm90-{'-'.join(map(str, sizes))}-N{args.N}")
    print(f"wrote {path}")

if __name__ == "__main__":
    sys.exit(main())
