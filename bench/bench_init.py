#!/usr/bin/env python
"""Time creating a population: ``Population([2, 5, 3, 1], 1_000_000)`` (the issue's bar: < 2 s).

For comparison, the time ``torch.rand`` takes to draw the same number of values (28 weights per
lab network; the biases start at zero) from torch's sequential generator.  Median of ``--repeats``
after one warm-up, the two interleaved; ``time.perf_counter`` (CUDA: synchronized).

Usage:
  python bench/bench_init.py                      # 1,000,000 lab networks on the CPU
  python bench/bench_init.py --G 100000 --repeats 3 --out /tmp/b
  python bench/bench_init.py --gpu
"""
from __future__ import annotations

import sys

import harness
import torch

import fastmlp
from fastmlp.architecture import Architecture

BAR_S = 2.0


def main(argv=None) -> int:
    ap = harness.parser(__doc__, devices=True)
    ap.add_argument("--G", type=int, default=1_000_000, help="networks (default 1,000,000)")
    ap.add_argument("--sizes", default="2,5,3,1")
    ap.add_argument("--init", default="glorot_uniform")
    ap.add_argument("--repeats", type=int, default=5)
    args = ap.parse_args(argv)
    device = harness.device(args, ap)
    arch = Architecture([int(v) for v in args.sizes.split(",")])
    sizes = list(arch.sizes)
    values = args.G * sum(a * b for a, b in arch.layers)  # the weights; the biases start at zero
    env = harness.environment(device)

    cases = {"population": lambda: fastmlp.Population(sizes, args.G, init=args.init, device=device),
             "rand": lambda: torch.rand(values, device=device)}
    for fn in cases.values():  # warm-up
        fn()
    t = harness.interleaved({k: (lambda fn=fn: fn) for k, fn in cases.items()}, device, args.repeats)
    harness.finish(env)
    rows = [{"what": f"Population({sizes}, {args.G}, init={args.init!r})", "median_s": t["population"].median,
             "times_s": t["population"].wall, "values_per_s": values / t["population"].median},
            {"what": f"torch.rand({values})", "median_s": t["rand"].median, "times_s": t["rand"].wall,
             "values_per_s": values / t["rand"].median}]

    print(f"# bench_init: {harness.describe(env)}")
    print(f"# median of {args.repeats} after a warm-up; {args.G} networks x {values // args.G} weights = "
          f"{values} values\n")
    print(harness.table(["what", "median s", "min s", "max s", "values/s"],
                        [[r["what"], f"{r['median_s']:.3f}", f"{min(r['times_s']):.3f}", f"{max(r['times_s']):.3f}",
                          f"{r['values_per_s'] / 1e6:.0f}M"] for r in rows], left=1))
    ok = rows[0]["median_s"] < BAR_S
    print(f"\nPopulation / torch.rand: {rows[0]['median_s'] / rows[1]['median_s']:.1f}x; bar < {BAR_S:g} s: "
          f"{'met' if ok else 'NOT met'}")
    path = harness.write_json(args.out, "init", env, {"sizes": sizes, "G": args.G, "init": args.init,
                                                      "repeats": args.repeats, "bar_s": BAR_S, "bar_met": ok,
                                                      "rows": rows}, script=__file__, argv=argv)
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
