"""The one-launch training kernel on a GPU: the issue's bar, and what blocks of epochs cost.

Lab network (2-5-3-1), five points, float32, G in {2**16, 2**20}, 2500 epochs:

* ``fused``        fastmlp.train(backend="fused"): 250 epochs per launch (the default)
* ``fused-1``      one launch for all epochs (fused_train directly): the chunking overhead
                   is fused / fused-1 - 1 (target < 2%)
* ``fused-approx`` one launch with tanh.approx.f32 (its own tolerance row in the tests)
* ``fused-tiles``  one launch of the tile kernel (kernels/fused_train.py) instead of the
                   generated one-register-per-weight kernel the launcher picks
* ``triton``       per-layer kernels, ``torch`` the torch engine: timed over fewer epochs
                   (``--slow-epochs``) and scaled to 2500, stated in the table

Bar: fused <= 0.1 s at G = 2**20 (>= 2.6e10 network-epochs/s) and >= 20x the torch engine.
Writes bench/results/fused-<device>-<date>.json.  Without CUDA it says so and exits 0.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from datetime import date
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def timed(fn, repeats: int) -> list[float]:
    out = []
    for _ in range(repeats):
        torch.cuda.synchronize()
        t = time.perf_counter()
        fn()
        torch.cuda.synchronize()
        out.append(time.perf_counter() - t)
    return out


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--G", default="65536,1048576")
    ap.add_argument("--epochs", type=int, default=2500)
    ap.add_argument("--slow-epochs", type=int, default=100, help="epochs timed for the per-layer providers")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--out", default=str(ROOT / "bench" / "results"))
    args = ap.parse_args(argv)
    if not torch.cuda.is_available():
        print("bench_fused: no CUDA device here; the GPU providers were not run")
        return 0
    import triton

    from fastmlp import Population, datasets, train
    from fastmlp.kernels import fused_train as fk
    from fastmlp.results import environment

    x, y = (t.cuda() for t in datasets.five_points())
    sizes, E = [2, 5, 3, 1], args.epochs
    rows = []
    print(f"{'G':>8} {'provider':<13} {'epochs':>6} {'median s':>9} {'(per 2500)':>10} {'net-epochs/s':>13}")
    for G in (int(g) for g in args.G.split(",")):
        lr = torch.full((G,), 0.25, device="cuda")

        def run_train(backend, epochs):
            pop = Population(sizes, G, device="cuda")
            return lambda: train(x, y, pop, epochs, lr, backend=backend, progress=False)

        def run_direct(fast, variant=None):
            pop = Population(sizes, G, device="cuda")
            packed = fk.pack(pop.weights, pop.biases)
            loss = torch.empty(E, G, device="cuda")

            def go():
                active = torch.ones(G, dtype=torch.int8, device="cuda")
                fk.fused_train(x, y, packed.clone(), lr, active, loss, sizes, E, fast_tanh=fast, variant=variant)
            return go

        providers = [("fused", run_train("fused", E), E), ("fused-1", run_direct(False), E),
                     ("fused-approx", run_direct(True), E), ("fused-tiles", run_direct(False, "tiles"), E),
                     ("triton", run_train("triton", args.slow_epochs), args.slow_epochs),
                     ("torch", run_train("torch", args.slow_epochs), args.slow_epochs)]
        for name, fn, epochs in providers:
            fn()  # warm-up: compiles
            ts = sorted(timed(fn, args.repeats))
            med = ts[len(ts) // 2]
            per = med * E / epochs
            row = dict(G=G, provider=name, epochs=epochs, median_s=med, min_s=ts[0], max_s=ts[-1],
                       seconds_per_2500=per, network_epochs_per_s=G * epochs / med)
            rows.append(row)
            print(f"{G:>8} {name:<13} {epochs:>6} {med:>9.4f} {per:>10.4f} {row['network_epochs_per_s']:>13.3g}")
    summary = {}
    for G in sorted({r["G"] for r in rows}):
        by = {r["provider"]: r for r in rows if r["G"] == G}
        summary[G] = dict(chunk_overhead=by["fused"]["median_s"] / by["fused-1"]["median_s"] - 1,
                          speedup_vs_torch=by["torch"]["seconds_per_2500"] / by["fused"]["seconds_per_2500"],
                          speedup_vs_tiles=by["fused-tiles"]["median_s"] / by["fused-1"]["median_s"],
                          fused_s=by["fused"]["median_s"])
        s = summary[G]
        print(f"G={G}: blocks of 250 epochs cost {100 * s['chunk_overhead']:+.1f}% vs one launch; fused is "
              f"{s['speedup_vs_torch']:.1f}x the torch engine and its kernel {s['speedup_vs_tiles']:.2f}x the tile "
              f"kernel; {s['fused_s']:.3f} s for {E} epochs"
              + (" (bar: <= 0.1 s, >= 20x)" if G == 2**20 else ""))
    env = environment("cuda")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    gpu = env.get("gpu", "gpu").replace(" ", "_")
    path = out / f"fused-{gpu}-{date.today().isoformat()}.json"
    path.write_text(json.dumps(dict(environment=env, triton=triton.__version__, rows=rows,
                                    summary={str(k): v for k, v in summary.items()}), indent=2) + "\n")
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
