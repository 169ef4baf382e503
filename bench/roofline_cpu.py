#!/usr/bin/env python
"""The fused CPU program's roofline, from its compiled x86 assembly (numba ``inspect_asm``).

For the lab network (or ``--sizes``) on N = 5 points this compiles ``fastmlp/program_numba.py``'s
generated module (through its launcher, 16 networks x 1 epoch), takes the assembly of the
``prange`` body (numba's ``__numba_parfor_gufunc``), finds its loops (backward branches), and
counts the vector instructions of the hot loop: the innermost loop with the most of them.  With
the samples unrolled the whole epoch of a block is one lane loop (``for k in range(16)``), which
LLVM vectorises: one iteration of the hot loop is one epoch of ``lanes`` networks, where
``lanes`` is the width of its FP arithmetic (ymm: 8 float32 / 4 float64; zmm: 16 / 8).  The
script checks that reading: one division per activation per iteration.  So instructions per
network-epoch = the hot loop's instructions / lanes, and lane-operations per network-epoch =
its vector instructions.

The machine: cores and the frequency /proc/cpuinfo states (a VM shows its nominal clock, not
the turbo), 2 FMA units per core (Sapphire Rapids / Golden Cove server cores: ports 0 and 1 for
256-bit, 0+1 fused and 5 for 512-bit), 16 float32 lanes per zmm FMA.  Lower bounds on the cycles
of one hot-loop iteration, from that port model (assumed, not measured): the FP pipes (FMA, mul,
add, sub: 2 per cycle), all vector ALU work (3 ports: 0, 1, 5), the divider (``vdivps`` ymm 5
cycles, ``vdivpd`` ymm 8: reciprocal throughput, as uops.info lists for Golden Cove), loads
(3 per cycle) and stores (2 per cycle).  The largest is the code's bound; the rate measured here
(``--measure-G``, 2 threads by default) is compared with it and with the FMA peak.

Usage:
  python bench/roofline_cpu.py                      # lab network, float32 and float64
  python bench/roofline_cpu.py --dtype float32 --asm /tmp/fused.s   # also write the assembly
"""
from __future__ import annotations

import collections
import os
import re
import statistics
import sys
import tempfile
import time

import harness
import instruments
import torch

from fastmlp.architecture import Architecture
from fastmlp.datasets import five_points
from fastmlp.population import Population

FMA_UNITS = 2  # per core, assumed (Xeon Gold/Platinum: two 512-bit FMA units)
ZMM_LANES = {"float32": 16, "float64": 8}
DIV_CYCLES = {"float32": 5.0, "float64": 8.0}  # ymm vdivps / vdivpd reciprocal throughput, assumed
VEC_PORTS, FP_PORTS, LOAD_PORTS, STORE_PORTS = 3, 2, 3, 2


def cpu_mhz() -> float | None:
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("cpu MHz"):
                return float(line.split(":")[1])
    except OSError:
        pass
    return None


# An x86 vector mnemonic's class: the first pattern that matches it, in this order.
CLASSES = [
    (r"v(p)?(gather|scatter)", "gather/scatter"),
    (r"vf(n)?m(add|sub)\d*[ps][sd]$", "fma"),
    (r"vmul[ps][sd]$", "mul"),
    (r"v(add|sub)[ps][sd]$", "add/sub"),
    (r"vdiv[ps][sd]$", "div"),
    (r"v(rcp|rsqrt|sqrt)", "rcp/sqrt"),
    (r"v(cmp|min|max|blend|ucomi|comi)", "compare/select"),
    (r"vcvt|vpmov[qdw]", "convert"),
    (r"v(p|xor|and|or)", "integer/logic"),
    (r"vmov|vbroadcast|vinsert|vextract|vperm|vshuf|vunpck", "move/shuffle"),
]


def classify(mnemonic: str) -> str:
    for pattern, name in CLASSES:
        if re.match(pattern, mnemonic):
            return name
    return "other vector" if mnemonic.startswith("v") else "scalar"


def functions(asm: str) -> dict[str, list[str]]:
    """Top-level symbols of the assembly and their lines."""
    out, name = {}, None
    for line in asm.splitlines():
        m = re.match(r"^([A-Za-z_][\w.$]*):", line)
        if m:
            name = m.group(1)
            out[name] = []
        elif name is not None:
            out[name].append(line)
    return out


def loops(lines: list[str]) -> list[tuple[int, int]]:
    """(first, last) line of every loop: a branch back to an earlier label."""
    labels = {m.group(1): i for i, l in enumerate(lines) if (m := re.match(r"^(\.L\w+):", l))}
    out = []
    for i, l in enumerate(lines):
        m = re.match(r"^\s+j\w+\s+(\.L\w+)", l)
        if m and labels.get(m.group(1), i) < i:
            out.append((labels[m.group(1)], i))
    return out


def instructions(lines: list[str]) -> list[tuple[str, str]]:
    """(mnemonic, the whole line) of each instruction."""
    out = []
    for l in lines:
        s = l.strip()
        if not s or s.startswith((".", "#")) or s.endswith(":"):
            continue
        out.append((s.split()[0], s))
    return out


def count(insns) -> dict:
    """Counts by class, by register width, loads/stores to memory, and the mnemonics."""
    by_class, by_width, mnem = collections.Counter(), collections.Counter(), collections.Counter()
    loads = stores = moves = 0
    for m, line in insns:
        cls = classify(m)
        by_class[cls] += 1
        mnem[m] += 1
        if cls != "scalar":
            w = "zmm" if "zmm" in line else "ymm" if "ymm" in line else "xmm" if "xmm" in line else "none"
            by_width[w] += 1
        if "(" in line and cls != "scalar":
            # AT&T syntax: the destination is last; memory last = a store.
            if line.rstrip().endswith(")"):
                stores += 1
            else:
                loads += 1
            moves += cls == "move/shuffle"  # a load or store and nothing else: no ALU port
    vector = sum(v for k, v in by_class.items() if k != "scalar")
    return {"instructions": len(insns), "vector": vector, "by_class": dict(by_class), "by_width": dict(by_width),
            "memory_loads": loads, "memory_stores": stores, "memory_moves": moves, "mnemonics": dict(mnem.most_common())}


def compile_and_asm(sizes, dtype: str) -> str:
    from fastmlp import program_numba

    tdt = getattr(torch, dtype)
    x, y = (t.to(tdt) for t in five_points())
    G = program_numba.BLOCK
    arch = Architecture(sizes)
    pop = Population(list(sizes), G, dtype=tdt)
    program_numba.fused_train(x, y, arch.pack(pop.weights, pop.biases), torch.full((G,), 0.25, dtype=tdt),
                              torch.ones(G, dtype=torch.int8), torch.empty(1, G, dtype=tdt), list(sizes), 1)
    fn = program_numba.compiled(tuple(sizes), x.shape[0], dtype)
    return fn.inspect_asm(fn.signatures[0])


def measure(sizes, dtype: str, G: int, epochs: int, repeats: int) -> dict:
    """The launcher alone, median of ``repeats`` calls (after one warm-up): network-epochs/s."""
    from fastmlp import program_numba

    tdt = getattr(torch, dtype)
    x, y = (t.to(tdt) for t in five_points())
    arch = Architecture(sizes)
    pop = Population(list(sizes), G, dtype=tdt)
    packed0 = arch.pack(pop.weights, pop.biases)

    def call():
        packed = packed0.clone()
        args = (x, y, packed, torch.full((G,), 0.25, dtype=tdt), torch.ones(G, dtype=torch.int8),
                torch.empty(epochs, G, dtype=tdt), list(sizes), epochs)
        t = time.perf_counter()
        program_numba.fused_train(*args)
        return time.perf_counter() - t

    call()
    ts = [call() for _ in range(repeats)]
    return {"G": G, "epochs": epochs, "threads": torch.get_num_threads(), "median_s": statistics.median(ts),
            "times_s": ts, "net_epochs_per_s": G * epochs / statistics.median(ts), "loadavg": harness.loadavg()}


def analyse(sizes, N: int, dtype: str, asm: str, mhz: float, cores: int) -> dict:
    # The hot loop: over every function of the module (the njit body, or numba's parfor gufunc
    # under prange), the innermost loop with the most vector instructions.
    scored = []
    for fname, lines in functions(asm).items():
        found = loops(lines)
        innermost = [(a, b) for a, b in found if not any(a <= c and d <= b and (c, d) != (a, b) for c, d in found)]
        scored += [(count(instructions(lines[a:b + 1])), (a, b), fname, lines, len(found)) for a, b in innermost]
    if not scored:
        raise RuntimeError("no loop found in the assembly")
    hot, (a, b), fname, lines, nloops = max(scored, key=lambda s: s[0]["vector"])
    body = [fname]
    found = range(nloops)
    fp = collections.Counter(w for m, line in instructions(lines[a:b + 1])
                             if classify(m) in ("fma", "mul", "add/sub", "div")
                             for w in ("zmm", "ymm", "xmm") if w in line)
    width = fp.most_common(1)[0][0]
    bits = {"zmm": 512, "ymm": 256, "xmm": 128}[width]
    lanes = bits // (32 if dtype == "float32" else 64)
    work = instruments.work_per_network_epoch(sizes, N, itemsize=4 if dtype == "float32" else 8)
    c = hot["by_class"]
    divs = c.get("div", 0)
    fp_ops = c.get("fma", 0) + c.get("mul", 0) + c.get("add/sub", 0)
    alu = hot["vector"] - hot["memory_moves"]
    bounds = {"fp_pipes": fp_ops / FP_PORTS, "vector_alu": alu / VEC_PORTS, "divider": divs * DIV_CYCLES[dtype],
              "loads": hot["memory_loads"] / LOAD_PORTS, "stores": hot["memory_stores"] / STORE_PORTS}
    limit = max(bounds, key=bounds.get)
    hz = mhz * 1e6
    peak_flops = cores * hz * FMA_UNITS * ZMM_LANES[dtype] * 2
    per_ne = {k: v / lanes for k, v in c.items()}
    return {
        "network": list(sizes), "N": N, "dtype": dtype, "function": body[0][:80] + "...",
        "loops_in_body": len(found), "hot_loop_lines": [a, b], "hot_loop": hot,
        "fp_width": width, "lanes_per_iteration": lanes,
        "one_epoch_per_iteration": divs == work["activations"],  # one division per activation per lane
        "instructions_per_network_epoch": hot["instructions"] / lanes,
        "vector_instructions_per_network_epoch": hot["vector"] / lanes,
        "by_class_per_network_epoch": per_ne,
        "lane_ops_per_network_epoch": {"fma": c.get("fma", 0), "mul": c.get("mul", 0), "add/sub": c.get("add/sub", 0),
                                       "div": divs, "all vector": hot["vector"]},
        "work_per_network_epoch": work,
        "machine": {"cores": cores, "mhz": mhz, "fma_units_per_core": FMA_UNITS, "zmm_lanes": ZMM_LANES[dtype],
                    "peak_gflops": peak_flops / 1e9, "peak_gflops_at_code_width":
                        peak_flops / 1e9 * lanes / ZMM_LANES[dtype]},
        "bound_useful_flops_net_epochs_per_s": peak_flops / work["flops"],
        "cycles_per_iteration_lower_bounds": bounds, "limit": limit,
        "bound_code_net_epochs_per_s": cores * hz * lanes / bounds[limit],
        "bound_code_net_epochs_per_s_per_core": hz * lanes / bounds[limit],
    }


def main(argv=None) -> int:
    ap = harness.parser(__doc__)
    ap.add_argument("--sizes", default="2,5,3,1")
    ap.add_argument("--dtype", choices=("float32", "float64", "both"), default="both")
    ap.add_argument("--measure-G", type=int, default=8192, help="G of the timed launcher run (0: none)")
    ap.add_argument("--measure-epochs", type=int, default=500)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--threads", type=int, help="torch.set_num_threads for the timed run (default: torch's)")
    ap.add_argument("--tag", default="", help="appended to the result file's name (e.g. the commit measured)")
    ap.add_argument("--asm", help="also write the assembly here (float32 when --dtype both)")
    args = ap.parse_args(argv)
    # numba keeps no assembly for code loaded from its disk cache: compile afresh, in a new
    # (empty) cache folder.
    os.environ["FASTMLP_CACHE_DIR"] = tempfile.mkdtemp(prefix="fastmlp-roofline-cpu-")
    if args.threads:
        torch.set_num_threads(args.threads)
    sizes = tuple(int(s) for s in args.sizes.split(","))
    N = five_points()[0].shape[0]
    env = harness.environment()
    mhz, cores = cpu_mhz() or 0.0, env["cpu_count"]
    rows = []
    for dtype in (("float32", "float64") if args.dtype == "both" else (args.dtype,)):
        harness.log(f"roofline_cpu: compiling {'-'.join(map(str, sizes))} {dtype}")
        asm = compile_and_asm(sizes, dtype)
        if args.asm and (args.dtype != "both" or dtype == "float32"):
            open(args.asm, "w").write(asm)
        r = analyse(sizes, N, dtype, asm, mhz, cores)
        if args.measure_G:
            r["measured"] = measure(sizes, dtype, args.measure_G, args.measure_epochs, args.repeats)
            rate, used = r["measured"]["net_epochs_per_s"], min(cores, r["measured"]["threads"])
            # Against the cores the run used (threads), at the stated clock.
            r["measured"]["cores_used"] = used
            r["measured"]["cycles_per_network_epoch_per_core"] = used * mhz * 1e6 / rate
            r["measured"]["fraction_of_code_bound"] = rate / (used * r["bound_code_net_epochs_per_s_per_core"])
            r["measured"]["fraction_of_fma_peak"] = rate * r["work_per_network_epoch"]["flops"] / (
                r["machine"]["peak_gflops"] * 1e9 * used / cores)
        rows.append(r)
    harness.finish(env)

    print(f"# roofline_cpu: {'-'.join(map(str, sizes))} on N = {N}; {harness.describe(env)}")
    print(f"# {cores} cores x {mhz:.0f} MHz (/proc/cpuinfo) x {FMA_UNITS} FMA units x 16 float32 lanes (zmm) x 2 FLOP")
    head = ["dtype (threads)", "lanes (width)", "insns/net-epoch", "vector", "FMA", "mul", "add/sub", "div", "cmp/sel",
            "int/logic", "convert", "move", "loads", "stores", "limit", "code bound (all cores)", "FMA-peak bound",
            "measured", "of code bound (cores used)", "of FMA peak (cores used)"]
    lines = []
    for r in rows:
        pn, h, m = r["by_class_per_network_epoch"], r["hot_loop"], r.get("measured")
        L = r["lanes_per_iteration"]
        lines.append([f"{r['dtype']} ({m['threads'] if m else '-'})", f"{L} ({r['fp_width']})", f"{r['instructions_per_network_epoch']:.0f}",
                      f"{r['vector_instructions_per_network_epoch']:.0f}"]
                     + [f"{pn.get(k, 0):.0f}" for k in ("fma", "mul", "add/sub", "div", "compare/select",
                                                        "integer/logic", "convert", "move/shuffle")]
                     + [f"{h['memory_loads'] / L:.0f}", f"{h['memory_stores'] / L:.0f}", r["limit"],
                        harness.rate(r["bound_code_net_epochs_per_s"]),
                        harness.rate(r["bound_useful_flops_net_epochs_per_s"]),
                        harness.rate(m["net_epochs_per_s"]) if m else "-",
                        f"{100 * m['fraction_of_code_bound']:.0f}%" if m else "-",
                        f"{100 * m['fraction_of_fma_peak']:.1f}%" if m else "-"])
    print("\n" + harness.table(head, lines, left=1))
    for r in rows:
        h, w = r["hot_loop"], r["work_per_network_epoch"]
        print(f"\n## {r['dtype']}: hot loop = {h['instructions']} instructions per iteration, {h['vector']} vector "
              f"({', '.join(f'{k} {v}' for k, v in sorted(h['by_width'].items()))}); one iteration = one epoch of "
              f"{r['lanes_per_iteration']} networks: {'yes' if r['one_epoch_per_iteration'] else 'NO'} "
              f"({h['by_class'].get('div', 0)} divisions, {w['activations']} activations)")
        print(f"  work: {w['multiply_adds']} multiply-adds = {w['flops']} FLOP, {w['activations']} activations per "
              f"network-epoch; the code issues {r['lane_ops_per_network_epoch']['fma']} FMA + "
              f"{r['lane_ops_per_network_epoch']['mul']} mul + {r['lane_ops_per_network_epoch']['add/sub']} add/sub "
              f"lane-ops per network-epoch")
        print(f"  peak {r['machine']['peak_gflops']:.1f} GFLOP/s ({r['machine']['peak_gflops_at_code_width']:.1f} at "
              f"the code's width); cycles per iteration, lower bounds: "
              + ", ".join(f"{k} {v:.0f}" for k, v in r["cycles_per_iteration_lower_bounds"].items()))
        print("  top mnemonics: " + ", ".join(f"{k} {v}" for k, v in list(h["mnemonics"].items())[:16]))
        if r.get("measured"):
            m = r["measured"]
            print(f"  measured: launcher alone, G = {m['G']}, {m['epochs']} epochs, {m['threads']} threads, median of "
                  f"{len(m['times_s'])}: {harness.rate(m['net_epochs_per_s'])} net-epochs/s = "
                  f"{m['cycles_per_network_epoch_per_core']:.0f} cycles per network-epoch per core at {mhz:.0f} MHz "
                  f"({m['cycles_per_network_epoch_per_core'] * r['lanes_per_iteration']:.0f} per hot-loop iteration), "
                  f"load {m['loadavg']}")
    tag = f"-{'_'.join(map(str, sizes))}-N{N}" + (f"-{args.threads}t" if args.threads else "") + args.tag
    path = harness.write_json(args.out, "roofline-cpu", env, {"rows": rows}, script=__file__, argv=argv, tag=tag)
    print(f"\nwrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
