"""Where docs/testing.md's MARGIN and LAG come from (fastmlp/conditioning.py).

Trains G lab networks (lr 0.05 .. 2, some chaotic) for E epochs on the CPU program (numba,
float32) and every `every`-th of them on the float32 torch engine, measures the same networks'
sensitivity (float64, with and without one float32 rounding of noise per parameter and epoch),
and prints (1) the quantiles of each implementation's difference from the float64 oracle over
the spread's running maximum, (2) for margins x lags: the fraction of networks compared over
the whole run, the smallest and the median horizon, the compared entries that fail rtol 1e-5
and the largest difference compared as a fraction of its tolerance.

    python bench/calibrate_conditioning.py [--seeds 16384] [--epochs 2500] [--every 16]
    NUMBA_CPU_NAME=haswell FASTMLP_CACHE_DIR=$(mktemp -d) python bench/calibrate_conditioning.py
"""
from __future__ import annotations

import argparse

import torch

from fastmlp import Population, conditioning, datasets, program_numba, train


def main(argv=None):
    ap = argparse.ArgumentParser()
    ap.add_argument("--seeds", type=int, default=16384)
    ap.add_argument("--epochs", type=int, default=2500)
    ap.add_argument("--every", type=int, default=16)
    ap.add_argument("--noise-seed", type=int, default=1)
    args = ap.parse_args(argv)
    torch.set_num_threads(1)
    G, E, every, rtol = args.seeds, args.epochs, args.every, 1e-5
    x, y = datasets.five_points()
    lr = torch.linspace(0.05, 2.0, G)
    pop = Population([2, 5, 3, 1], G)
    packed = pop.arch.pack(pop.weights, pop.biases)
    loss = torch.full((E, G), float("nan"))
    program_numba.fused_train(x, y, packed, lr, torch.ones(G, dtype=torch.int8), loss, [2, 5, 3, 1], E)
    sub = Population([2, 5, 3, 1], pop.seeds[::every])
    s = conditioning.measure(x, y, sub, E, lr[::every], seed=args.noise_seed)
    r32 = train(x, y, sub.clone(), E, lr[::every].clone(), backend="torch", progress=False, record_every=1)
    env = s.spread.cummax(dim=1).values
    tol = s.tolerance(rtol)
    print(f"{len(sub)} lab networks (every {every}th of {G}), lr 0.05 .. 2, {E} epochs, rtol {rtol:g}")
    for name, L in (("CPU program", loss.t()[::every].double()), ("torch float32", r32.losses.double())):
        d = (L - s.losses).abs()
        q = (d / env)[env > 0].sort().values
        qs = " / ".join(f"{q[int(p * (len(q) - 1))].item():.3g}" for p in (0.5, 0.9, 0.99, 0.999))
        print(f"{name}: |difference| / spread, quantiles 0.5 / 0.9 / 0.99 / 0.999: {qs}")
        for margin in (30, 100, 300):
            for lag in (0, 10):
                s.margin, s.lag = margin, lag
                h, cmp = s.horizon(rtol), s.compared(rtol)
                print(f"  margin {margin:>3} lag {lag:>2}: whole run {(h == E).float().mean():.3f}, horizon min "
                      f"{int(h.min())} median {int(h.median())}, compared {cmp.float().mean():.3f}, failing "
                      f"{int(((d > tol) & cmp).sum())}, largest compared difference {(d / tol)[cmp].max():.3g} x tol")
    s.margin, s.lag = conditioning.MARGIN, conditioning.LAG


if __name__ == "__main__":
    main()
