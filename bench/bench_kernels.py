#!/usr/bin/env python
"""Each Triton kernel vs the torch engine's op on CUDA, with the bytes it must move.

The lab network (2-5-3-1, tanh/tanh/sigmoid, five points, float32) at G = 2**20 networks,
network-minor tensors as ``fastmlp.train`` holds them.  For every kernel of one epoch:

* time of the kernel and of the equivalent ``fastmlp.engine.torch`` op
  (``triton.testing.do_bench``, median and 20/80 % quantiles; do_bench clears the L2
  between calls);
* the bytes the op must move (each input read once, each output written once) and the
  achieved GB/s, as a fraction of the device's copy bandwidth measured with a torch
  device-to-device copy moving the same number of bytes (and of a 2 GiB copy: the peak);
* then one epoch of the per-layer triton path vs the torch engine, through
  ``fastmlp.train`` ((T(E2) - T(E1)) / (E2 - E1), so set-up costs cancel).  The issue's
  bar: triton <= 1/3 of the torch engine's time per epoch.

``--sweep`` also times BLOCK_G in {32, ..., 1024} for every kernel (the launchers' rule is
``kernels/_launch.py: block_g``).

Writes ``bench/results/kernels-<device>-<date>.json`` (device, versions, date, every row)
and prints a table.  Without CUDA it says the GPU providers were not run and exits 0.

Usage:
  python bench/bench_kernels.py                 # lab network, G = 2**20
  python bench/bench_kernels.py --sweep         # + BLOCK_G sweep
  python bench/bench_kernels.py --G 65536 --quick
  python bench/bench_kernels.py --smoke         # no GPU: the script's every step in the interpreter
"""
from __future__ import annotations

import importlib
import statistics
import sys

import harness
import torch

ARCH_SIZES = (2, 5, 3, 1)
LR = 0.25
BLOCK_GS = (32, 64, 128, 256, 512, 1024)


def nbytes(*ts) -> int:
    return sum(t.numel() * t.element_size() for t in ts)


def cases(arch, G: int, dtype, dev) -> list[tuple]:
    """The state of one epoch as fastmlp.train holds it, and for every kernel of that epoch:
    (name, triton launch (private ``_launch_args``: lets --sweep set BLOCK_G), torch op, bytes)."""
    from fastmlp.datasets import five_points
    from fastmlp.engine import torch as E
    from fastmlp.layout import network_minor

    mods = {name: importlib.import_module(f"fastmlp.kernels.{name}")
            for name in ("linear_act", "output_delta", "delta_bwd", "grad_update")}
    gen = torch.Generator(device=dev).manual_seed(0)

    def nm(shape, lo=-1.0, hi=1.0):
        t = network_minor(shape, dtype, dev)
        t.copy_(torch.rand(shape, generator=gen, device=dev, dtype=dtype) * (hi - lo) + lo)
        return t

    x, y = (t.to(dev, dtype) for t in five_points())
    N, L = x.shape[0], arch.n_layers
    w = [nm((G, a, b)) for a, b in arch.layers]
    b = [nm((G, n)) for n in arch.sizes[1:]]
    z, delta, tmp = ([nm((G, N, n)) for n in arch.sizes[1:]] for _ in range(3))
    wg = [nm(t.shape) for t in w]
    bgr = [nm(t.shape) for t in b]
    z[-1].uniform_(0.05, 0.95, generator=gen)
    lr = torch.full((G,), 1e-6, dtype=dtype, device=dev)  # tiny: repeated updates barely move w
    frozen = torch.zeros(G, dtype=torch.bool, device=dev)
    loss = torch.empty(G, dtype=dtype, device=dev)

    out = []
    inp = x
    for l, act in enumerate(arch.acts):
        out.append((f"linear_act_fwd[{l}]",
                    (lambda bgv=None, l=l, inp=inp, act=act:
                     mods["linear_act"]._launch_args(inp, w[l], b[l], act, z[l], bg=bgv)),
                    (lambda l=l, inp=inp, act=act: E.linear_act_fwd(inp, w[l], b[l], act, out=z[l])),
                    nbytes(inp, w[l], b[l], z[l])))
        inp = z[l]
    out.append(("output_delta",
                lambda bgv=None: mods["output_delta"]._launch_args(z[-1], y, delta[-1], loss, bg=bgv),
                lambda: E.output_delta(z[-1], y, delta=delta[-1], loss=loss, tmp=tmp[-1]),
                nbytes(z[-1], y, delta[-1], loss)))
    for l in reversed(range(L)):
        if l > 0:
            out.append((f"delta_bwd[{l}]",
                        (lambda bgv=None, l=l:
                         mods["delta_bwd"]._launch_args(delta[l], w[l], z[l - 1], delta[l - 1], bg=bgv)),
                        (lambda l=l: E.delta_bwd(delta[l], w[l], z[l - 1], out=delta[l - 1], tmp=tmp[l - 1])),
                        nbytes(delta[l], w[l], z[l - 1], delta[l - 1])))
        zp = z[l - 1] if l > 0 else x
        # grad_update reads w, b and writes them back, plus the gradients (as the loop asks).
        out.append((f"grad_update[{l}]",
                    (lambda bgv=None, l=l, zp=zp:
                     mods["grad_update"]._launch_args(zp, delta[l], w[l], b[l], lr, frozen, wg[l], bgr[l], bg=bgv)),
                    (lambda l=l, zp=zp: E.grad_update(zp, delta[l], w[l], b[l], lr, frozen=frozen,
                                                      weight_grad=wg[l], bias_grad=bgr[l])),
                    nbytes(zp, delta[l], lr, frozen) + 2 * nbytes(w[l], b[l]) + nbytes(wg[l], bgr[l])))
    return out


def epoch_ms(arch, G: int, dtype, dev, e1: int, e2: int, samples: int) -> dict:
    """Milliseconds per epoch through fastmlp.train, per-layer triton vs the torch engine:
    (T(e2) - T(e1)) / (e2 - e1), medians of ``samples`` runs, so set-up costs cancel."""
    import fastmlp
    from fastmlp.datasets import five_points

    xs, ys = five_points()
    out = {}
    for backend in ("triton", "torch"):
        times = {}
        for epochs in (e1, e2):
            ts = []
            for _ in range(samples):
                pop = fastmlp.Population(list(arch.sizes), G, dtype=dtype, device=dev)
                ts.append(harness.clock(lambda: fastmlp.train(xs, ys, pop, epochs, LR, backend=backend,
                                                              progress=False), dev)[0])
                del pop
            times[epochs] = statistics.median(ts)
        out[backend] = (times[e2] - times[e1]) / (e2 - e1) * 1e3
    return out


def main(argv=None) -> int:
    ap = harness.parser(__doc__, smoke="no GPU: run every step on the CPU in Triton's interpreter at G = 64 "
                                       "with perf_counter timings (checks the script, measures nothing)")
    ap.add_argument("--G", type=int, default=2**20, help="networks (default 2**20)")
    ap.add_argument("--sweep", action="store_true", help="also time BLOCK_G in {32..1024} per kernel")
    ap.add_argument("--quick", action="store_true", help="shorter do_bench runs and epoch timing")
    args = ap.parse_args(argv)
    dev = harness.cuda_or_smoke(args, "bench_kernels")
    if dev is None:
        return 0
    if args.smoke:
        args.G, args.quick = min(args.G, 64), True
    harness.kernels()
    from fastmlp.architecture import Architecture
    from fastmlp.datasets import five_points

    arch, G, dtype, N = Architecture(ARCH_SIZES), args.G, torch.float32, five_points()[0].shape[0]
    item = torch.finfo(dtype).bits // 8
    warm, rep = (5, 20) if args.quick else (25, 100)

    def bench(fn):
        return harness.do_bench(fn, dev, warm, rep)

    # Copy bandwidth: a torch device-to-device copy (bytes read + written).
    copy_cache, gen = {}, torch.Generator(device=dev).manual_seed(1)

    def copy_gbps(total_bytes):
        n = max(1, total_bytes // (2 * item))
        if n not in copy_cache:
            src = torch.empty(n, dtype=dtype, device=dev).uniform_(generator=gen)
            dst = torch.empty_like(src)
            copy_cache[n] = 2 * n * item / (bench(lambda: dst.copy_(src))["ms"] * 1e-3) / 1e9
            del src, dst
        return copy_cache[n]

    env = harness.environment(dev)
    gpu = env["device"] if dev.type == "cuda" else "cpu-interpreter-smoke"
    epoch_cases = cases(arch, G, dtype, dev)
    peak = copy_gbps(2 * 2**30 if not args.smoke else 2**26)
    print(f"device {gpu}, torch {env['torch']}, triton {env['triton']}; G = {G}, lab network "
          f"{'-'.join(map(str, arch.sizes))}, N = {N}, float32, network-minor")
    print(f"copy bandwidth (2 GiB torch copy, read + write): {peak:.0f} GB/s")

    rows = []
    for name, launch, torch_op, nb in epoch_cases:
        launch_fn = launch()
        compiled = launch_fn()  # compile + warm up; the CompiledKernel tells registers and spills
        harness.sync(dev)
        t_tri, t_torch = bench(launch_fn), bench(torch_op)
        gbps, cg = nb / (t_tri["ms"] * 1e-3) / 1e9, copy_gbps(nb)
        row = dict(kernel=name, bytes=nb, triton=t_tri, torch_engine=t_torch, speedup=t_torch["ms"] / t_tri["ms"],
                   gbps=gbps, copy_gbps_same_bytes=cg, frac_copy=gbps / cg, frac_peak=gbps / peak,
                   block_g=launch_fn.constexprs["BLOCK_G"], n_regs=getattr(compiled, "n_regs", None),
                   n_spills=getattr(compiled, "n_spills", None))
        if args.sweep:
            row["sweep"] = {}
            for bgv in BLOCK_GS:
                lf = launch(bgv)
                lf()
                row["sweep"][bgv] = bench(lf)["ms"]
        rows.append(row)
        harness.log(f"  {name}: triton {t_tri['ms']:.4f} ms, torch {t_torch['ms']:.4f} ms")

    e1, e2 = (2, 4) if args.smoke else (5, 25) if args.quick else (20, 120)
    epoch = epoch_ms(arch, G, dtype, dev, e1, e2, 2 if args.quick else 3)
    epoch_bytes = sum(r["bytes"] for r in rows)
    epoch_kernel_ms = sum(r["triton"]["ms"] for r in rows)
    harness.finish(env)

    print("\n" + harness.table(
        ["kernel", "MB", "triton ms", "[q20, q80]", "torch ms", "x", "GB/s", "copy%", "peak%", "BLOCK_G", "regs",
         "spill"],
        [[r["kernel"], f"{r['bytes'] / 1e6:.1f}", f"{r['triton']['ms']:.4f}",
          f"[{r['triton']['q20']:.4f}, {r['triton']['q80']:.4f}]", f"{r['torch_engine']['ms']:.4f}",
          f"{r['speedup']:.1f}", f"{r['gbps']:.0f}", f"{100 * r['frac_copy']:.0f}%", f"{100 * r['frac_peak']:.0f}%",
          r["block_g"], r["n_regs"], r["n_spills"]] for r in rows]
        + [["sum (one epoch)", f"{epoch_bytes / 1e6:.1f}", f"{epoch_kernel_ms:.4f}"] + [""] * 9], left=1))
    print(f"over the kernels of one epoch: {epoch_bytes / (epoch_kernel_ms * 1e-3) / 1e9:.0f} GB/s")
    if args.sweep:
        print("\nBLOCK_G sweep (ms, median):\n" + harness.table(
            ["kernel", *map(str, BLOCK_GS)], [[r["kernel"], *(f"{r['sweep'][v]:.4f}" for v in BLOCK_GS)] for r in rows],
            left=1))
    ratio = epoch["triton"] / epoch["torch"]
    print(f"\nper epoch through fastmlp.train (G = {G}): triton {epoch['triton']:.3f} ms, torch engine "
          f"{epoch['torch']:.3f} ms, ratio {ratio:.3f} ({'meets' if ratio <= 1 / 3 else 'MISSES'} the bar <= 1/3); "
          f"{G / (epoch['triton'] * 1e-3):.3g} network-epochs/s with triton")

    path = harness.write_json(args.out, "kernels", env, dict(
        gpu=gpu, G=G, sizes=list(arch.sizes), N=N, dtype="float32", layout="network-minor", quick=args.quick,
        copy_peak_gbps=peak, rows=rows, epoch_ms=epoch, epoch_ratio=ratio, epoch_bytes=epoch_bytes,
        epoch_kernel_ms=epoch_kernel_ms), script=__file__, argv=argv, tag="-smoke" if args.smoke else "")
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
