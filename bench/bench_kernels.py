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
"""
from __future__ import annotations

import argparse
import datetime as _dt
import importlib
import importlib.util
import json
import re
import statistics
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # run from a checkout without install


def _import_kernels():
    """``fastmlp.kernels``; from a checkout without install, kernels/ is loaded under that
    name (pyproject maps kernels/ -> fastmlp.kernels, which a plain sys.path does not)."""
    try:
        return importlib.import_module("fastmlp.kernels")
    except ModuleNotFoundError:
        spec = importlib.util.spec_from_file_location("fastmlp.kernels", ROOT / "kernels" / "__init__.py",
                                                      submodule_search_locations=[str(ROOT / "kernels")])
        mod = importlib.util.module_from_spec(spec)
        sys.modules["fastmlp.kernels"] = mod
        spec.loader.exec_module(mod)
        return mod


SIZES = [2, 5, 3, 1]
N = 5
LR = 0.25
QUANTILES = [0.5, 0.2, 0.8]


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--G", type=int, default=2**20, help="networks (default 2**20)")
    ap.add_argument("--sweep", action="store_true", help="also time BLOCK_G in {32..1024} per kernel")
    ap.add_argument("--quick", action="store_true", help="shorter do_bench runs and epoch timing")
    ap.add_argument("--out", default=str(ROOT / "bench" / "results"), help="folder for the JSON file")
    ap.add_argument("--smoke", action="store_true",
                    help="no GPU: run every step on the CPU in Triton's interpreter at G = 256 with "
                         "perf_counter timings (checks the script, measures nothing)")
    args = ap.parse_args(argv)

    if args.smoke:
        import os

        os.environ["TRITON_INTERPRET"] = "1"  # before the kernels are imported
        args.G, args.quick = min(args.G, 256), True
    elif not torch.cuda.is_available():
        print("bench_kernels: CUDA is not available: the GPU providers (triton kernels, torch engine on CUDA) "
              "were not run.")
        return 0
    import triton
    import triton.testing

    K = _import_kernels()
    import fastmlp
    from fastmlp.engine import torch as E
    from fastmlp.population import network_minor

    mods = {name: importlib.import_module(f"fastmlp.kernels.{name}")
            for name in ("linear_act", "output_delta", "delta_bwd", "grad_update")}
    dev = torch.device("cpu" if args.smoke else "cuda")
    G, dtype = args.G, torch.float32
    item = torch.finfo(dtype).bits // 8
    warm, rep = (5, 20) if args.quick else (25, 100)

    def bench(fn):
        if args.smoke:  # perf_counter quantiles of 3 calls; do_bench needs CUDA events
            ts = sorted(_timed(fn) for _ in range(3))
            return dict(ms=ts[1], q20=ts[0], q80=ts[2])
        ms = triton.testing.do_bench(fn, warmup=warm, rep=rep, quantiles=QUANTILES)
        return dict(ms=ms[0], q20=ms[1], q80=ms[2])

    def sync():
        if dev.type == "cuda":
            torch.cuda.synchronize()

    gen = torch.Generator(device=dev).manual_seed(0)

    def nm(shape, lo=-1.0, hi=1.0):
        t = network_minor(shape, dtype, dev)
        t.copy_(torch.rand(shape, generator=gen, device=dev, dtype=dtype) * (hi - lo) + lo)
        return t

    # The state of one epoch, as fastmlp.train holds it.
    L = len(SIZES) - 1
    x = torch.tensor([[0, 0], [1, 0], [0, -1], [-1, 0], [0, 1]], dtype=dtype, device=dev)
    y = torch.tensor([[1], [0], [0], [0], [0]], dtype=dtype, device=dev)
    w = [nm((G, a, b)) for a, b in zip(SIZES[:-1], SIZES[1:])]
    b = [nm((G, n)) for n in SIZES[1:]]
    z = [nm((G, N, n)) for n in SIZES[1:]]
    delta = [nm((G, N, n)) for n in SIZES[1:]]
    tmp = [nm((G, N, n)) for n in SIZES[1:]]
    wg = [nm(t.shape) for t in w]
    bgr = [nm(t.shape) for t in b]
    z[-1].uniform_(0.05, 0.95, generator=gen)
    lr = torch.full((G,), 1e-6, dtype=dtype, device=dev)  # tiny: repeated updates barely move w
    frozen = torch.zeros(G, dtype=torch.bool, device=dev)
    loss = torch.empty(G, dtype=dtype, device=dev)

    def nbytes(*ts):
        return sum(t.numel() * t.element_size() for t in ts)

    # (name, triton launch (private _launch_args: lets --sweep set BLOCK_G), torch op, bytes).
    cases = []
    inp = x
    for l in range(L):
        act = "sigmoid" if l == L - 1 else "tanh"
        cases.append((f"linear_act_fwd[{l}]",
                      (lambda bgv=None, l=l, inp=inp, act=act:
                       mods["linear_act"]._launch_args(inp, w[l], b[l], act, z[l], bg=bgv)),
                      (lambda l=l, inp=inp, act=act: E.linear_act_fwd(inp, w[l], b[l], act, out=z[l])),
                      nbytes(inp, w[l], b[l], z[l])))
        inp = z[l]
    cases.append(("output_delta",
                  lambda bgv=None: mods["output_delta"]._launch_args(z[-1], y, delta[-1], loss, bg=bgv),
                  lambda: E.output_delta(z[-1], y, delta=delta[-1], loss=loss, tmp=tmp[-1]),
                  nbytes(z[-1], y, delta[-1], loss)))
    for l in reversed(range(L)):
        if l > 0:
            cases.append((f"delta_bwd[{l}]",
                          (lambda bgv=None, l=l:
                           mods["delta_bwd"]._launch_args(delta[l], w[l], z[l - 1], delta[l - 1], bg=bgv)),
                          (lambda l=l: E.delta_bwd(delta[l], w[l], z[l - 1], out=delta[l - 1], tmp=tmp[l - 1])),
                          nbytes(delta[l], w[l], z[l - 1], delta[l - 1])))
        zp = z[l - 1] if l > 0 else x
        # grad_update reads w, b and writes them back, plus the gradients (as the loop asks).
        cases.append((f"grad_update[{l}]",
                      (lambda bgv=None, l=l, zp=zp:
                       mods["grad_update"]._launch_args(zp, delta[l], w[l], b[l], lr, frozen, wg[l], bgr[l], bg=bgv)),
                      (lambda l=l, zp=zp: E.grad_update(zp, delta[l], w[l], b[l], lr, frozen=frozen,
                                                        weight_grad=wg[l], bias_grad=bgr[l])),
                      nbytes(zp, delta[l], lr, frozen) + 2 * nbytes(w[l], b[l]) + nbytes(wg[l], bgr[l])))

    # Copy bandwidth: a torch device-to-device copy (bytes read + written).
    copy_cache = {}

    def copy_gbps(total_bytes):
        n = max(1, total_bytes // (2 * item))
        if n not in copy_cache:
            src = torch.empty(n, dtype=dtype, device=dev).uniform_(generator=gen)
            dst = torch.empty_like(src)
            t = bench(lambda: dst.copy_(src))
            copy_cache[n] = 2 * n * item / (t["ms"] * 1e-3) / 1e9
            del src, dst
        return copy_cache[n]

    peak = copy_gbps(2 * 2**30 if not args.smoke else 2**26)
    env = fastmlp_env(dev, triton)
    print(f"device {env['gpu']}, torch {env['torch']}, triton {env['triton']}; G = {G}, lab network "
          f"{'-'.join(map(str, SIZES))}, N = {N}, float32, network-minor")
    print(f"copy bandwidth (2 GiB torch copy, read + write): {peak:.0f} GB/s")

    rows = []
    for name, launch, torch_op, nb in cases:
        launch_fn = launch()
        compiled = launch_fn()  # compile + warm up; the CompiledKernel tells registers and spills
        sync()
        t_tri = bench(launch_fn)
        t_torch = bench(torch_op)
        gbps = nb / (t_tri["ms"] * 1e-3) / 1e9
        cg = copy_gbps(nb)
        row = dict(kernel=name, bytes=nb, triton=t_tri, torch_engine=t_torch, speedup=t_torch["ms"] / t_tri["ms"],
                   gbps=gbps, copy_gbps_same_bytes=cg, frac_copy=gbps / cg, frac_peak=gbps / peak,
                   block_g=launch_fn.constexprs["BLOCK_G"], n_regs=getattr(compiled, "n_regs", None),
                   n_spills=getattr(compiled, "n_spills", None))
        if args.sweep:
            row["sweep"] = {}
            for bgv in (32, 64, 128, 256, 512, 1024):
                lf = launch(bgv)
                lf()
                row["sweep"][bgv] = bench(lf)["ms"]
        rows.append(row)

    # One epoch through fastmlp.train: per-layer triton path vs the torch engine.
    xs, ys = x.cpu(), y.cpu()
    e1, e2 = (2, 4) if args.smoke else (5, 25) if args.quick else (20, 120)
    epoch = {}
    for backend in ("triton", "torch"):
        times = {}
        for E_ in (e1, e2):
            samples = []
            for _ in range(2 if args.quick else 3):
                pop = fastmlp.Population(SIZES, G, dtype=dtype, device=dev)
                sync()
                t0 = time.perf_counter()
                fastmlp.train(xs, ys, pop, E_, LR, backend=backend, progress=False)
                sync()
                samples.append(time.perf_counter() - t0)
                del pop
            times[E_] = statistics.median(samples)
        epoch[backend] = (times[e2] - times[e1]) / (e2 - e1) * 1e3
    epoch_bytes = sum(r["bytes"] for r in rows)
    epoch_kernel_ms = sum(r["triton"]["ms"] for r in rows)

    # Table.
    print(f"\n{'kernel':20s} {'MB':>7s} {'triton ms':>10s} {'[q20, q80]':>17s} {'torch ms':>9s} {'x':>6s} "
          f"{'GB/s':>7s} {'copy%':>6s} {'peak%':>6s} {'BLOCK_G':>7s} {'regs':>5s} {'spill':>5s}")
    for r in rows:
        t = r["triton"]
        print(f"{r['kernel']:20s} {r['bytes'] / 1e6:7.1f} {t['ms']:10.4f} [{t['q20']:7.4f}, {t['q80']:7.4f}] "
              f"{r['torch_engine']['ms']:9.4f} {r['speedup']:6.1f} {r['gbps']:7.0f} {100 * r['frac_copy']:5.0f}% "
              f"{100 * r['frac_peak']:5.0f}% {r['block_g']:7d} {str(r['n_regs']):>5s} {str(r['n_spills']):>5s}")
    print(f"{'sum (one epoch)':20s} {epoch_bytes / 1e6:7.1f} {epoch_kernel_ms:10.4f}   -> "
          f"{epoch_bytes / (epoch_kernel_ms * 1e-3) / 1e9:.0f} GB/s over the kernels")
    if args.sweep:
        bgs = (32, 64, 128, 256, 512, 1024)
        print("\nBLOCK_G sweep (ms, median):\n" + f"{'kernel':20s}" + "".join(f"{v:>9d}" for v in bgs))
        for r in rows:
            print(f"{r['kernel']:20s}" + "".join(f"{r['sweep'][v]:9.4f}" for v in bgs))
    ratio = epoch["triton"] / epoch["torch"]
    verdict = "meets" if ratio <= 1 / 3 else "MISSES"
    print(f"\nper epoch through fastmlp.train (G = {G}): triton {epoch['triton']:.3f} ms, torch engine "
          f"{epoch['torch']:.3f} ms, ratio {ratio:.3f} ({verdict} the bar <= 1/3); "
          f"{G / (epoch['triton'] * 1e-3):.3g} network-epochs/s with triton")

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    dev_name = re.sub(r"[^A-Za-z0-9]+", "-", env["gpu"]).strip("-")
    path = out / f"kernels-{dev_name}-{_dt.date.today().isoformat()}.json"
    record = dict(env, G=G, sizes=SIZES, N=N, dtype="float32", layout="network-minor", quick=args.quick,
                  copy_peak_gbps=peak, rows=rows, epoch_ms=epoch, epoch_ratio=ratio, epoch_bytes=epoch_bytes,
                  epoch_kernel_ms=epoch_kernel_ms, command=" ".join([Path(sys.argv[0]).name] + sys.argv[1:]))
    path.write_text(json.dumps(record, indent=1))
    print(f"wrote {path}")
    return 0


def _timed(fn) -> float:
    t0 = time.perf_counter()
    fn()
    return (time.perf_counter() - t0) * 1e3


def fastmlp_env(dev, triton) -> dict:
    env = {"date": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
           "torch": torch.__version__, "triton": triton.__version__}
    if dev.type == "cuda":
        env.update(gpu=torch.cuda.get_device_name(dev), cuda=torch.version.cuda,
                   capability=list(torch.cuda.get_device_capability(dev)))
    else:
        env.update(gpu="cpu-interpreter-smoke")
    try:
        from fastmlp.results import environment

        env = {**environment(dev), **env}
    except Exception:  # an older checkout without fastmlp.results
        pass
    return env


if __name__ == "__main__":
    sys.exit(main())
