#!/usr/bin/env python
"""Time creating a population: ``Population([2, 5, 3, 1], 1_000_000)`` (the issue's bar: < 2 s).

For comparison, the time ``torch.rand`` takes to draw the same number of values (28 weights per
lab network; the biases start at zero) from torch's sequential generator.  Median of ``--repeats``
after one warm-up; ``time.perf_counter`` (CUDA: synchronized).

Usage:
  python bench/bench_init.py                      # 1,000,000 lab networks on the CPU
  python bench/bench_init.py --G 100000 --repeats 3 --out /tmp/b
  python bench/bench_init.py --gpu
"""
from __future__ import annotations

import argparse
import datetime as _dt
import json
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without install

from bench_train import device_slug, environment, loadavg  # noqa: E402

import fastmlp  # noqa: E402

BAR_S = 2.0


def timed(fn, device) -> float:
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    t0 = time.perf_counter()
    fn()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return time.perf_counter() - t0


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--G", type=int, default=1_000_000, help="networks (default 1,000,000)")
    ap.add_argument("--sizes", default="2,5,3,1")
    ap.add_argument("--init", default="glorot_uniform")
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--threads", type=int, help="torch.set_num_threads (default: torch's)")
    ap.add_argument("--gpu", action="store_true", help="create the population on CUDA")
    ap.add_argument("--out", default=str(Path(__file__).resolve().parent / "results"), help="results directory")
    args = ap.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device("cuda" if args.gpu else "cpu")
    if args.gpu and not torch.cuda.is_available():
        ap.error("--gpu: CUDA is not available on this machine")
    sizes = [int(v) for v in args.sizes.split(",")]
    n_weights = sum(a * b for a, b in zip(sizes[:-1], sizes[1:]))
    env = environment(device)
    env["loadavg_start"] = loadavg()

    # Interleaved, as in bench_train: a noisy neighbour slows both alike.
    pop_fn = lambda: fastmlp.Population(sizes, args.G, init=args.init, device=device)  # noqa: E731
    rand_fn = lambda: torch.rand(args.G * n_weights, device=device)  # noqa: E731
    pop_fn(), rand_fn()  # warm-up
    t_pop, t_rand = [], []
    for _ in range(args.repeats):
        t_pop.append(timed(pop_fn, device))
        t_rand.append(timed(rand_fn, device))
    env["loadavg_end"] = loadavg()
    med_pop, med_rand = statistics.median(t_pop), statistics.median(t_rand)
    values = args.G * n_weights
    rows = [{"what": f"Population({sizes}, {args.G}, init={args.init!r})", "median_s": med_pop, "times_s": t_pop,
             "values_per_s": values / med_pop},
            {"what": f"torch.rand({values})", "median_s": med_rand, "times_s": t_rand, "values_per_s": values / med_rand}]

    print(f"# bench_init: {env['device']}, torch {env['torch']}, python {env['python']}, {env['threads']} threads, "
          f"{env['date']}, load average {env['loadavg_start']} -> {env['loadavg_end']}")
    print(f"# median of {args.repeats} after a warm-up; {args.G} networks x {n_weights} weights = {values} values\n")
    print("| what | median s | min s | max s | values/s |")
    print("|---|---:|---:|---:|---:|")
    for r in rows:
        print(f"| {r['what']} | {r['median_s']:.3f} | {min(r['times_s']):.3f} | {max(r['times_s']):.3f} | "
              f"{r['values_per_s'] / 1e6:.0f}M |")
    ok = med_pop < BAR_S
    print(f"\nPopulation / torch.rand: {med_pop / med_rand:.1f}x; bar < {BAR_S:g} s: {'met' if ok else 'NOT met'}")

    outdir = Path(args.out)
    outdir.mkdir(parents=True, exist_ok=True)
    path = outdir / f"init-{device_slug(env, device)}-{_dt.date.today().isoformat()}.json"
    command = "python bench/bench_init.py " + " ".join(argv if argv is not None else sys.argv[1:])
    path.write_text(json.dumps({"bench": "init", "command": command.strip(), "environment": env, "sizes": sizes,
                                "G": args.G, "init": args.init, "repeats": args.repeats, "bar_s": BAR_S,
                                "bar_met": ok, "rows": rows}, indent=1))
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
