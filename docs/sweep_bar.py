"""The sweep Bar (issue 5): `fastmlp sweep` over 3 architectures x 5 learning rates x 4 inits x
256 seeds of the five-point problem (15,360 networks, 2500 epochs) against the torch engine
training the same number of network-epochs in one population (15,360 lab networks 2-5-3-1,
2500 epochs), measured alternately in one run so that both see the same machine load.

    .venv/bin/python docs/sweep_bar.py [--repeats 2] [--out runs/bar]

Prints one line per measurement and a JSON summary (medians, ratio, environment).
"""
import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

SWEEP = ["--hidden", "5,3", "8", "4,4,4", "--lr", "0.1,0.25,1,4,16",
         "--init", "glorot_uniform", "he_normal", "normal:3", "normal:0.01",
         "--seeds", "256", "--epochs", "2500", "--no-progress"]
BASELINE = ("import sys, time, torch; from fastmlp import Population, train; from fastmlp.datasets import five_points; "
            "x, y = five_points(); pop = Population([2, 5, 3, 1], 15360); "
            "r = train(x, y, pop, 2500, 0.25, backend='torch', progress=False); "
            "print(f'train_s={r.wall_time_s:.3f}')")


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--repeats", type=int, default=2)
    p.add_argument("--out", default="runs/bar")
    p.add_argument("--threads", type=int, default=None,
                   help="OMP_NUM_THREADS for both (default: torch's own choice, one per core)")
    args = p.parse_args()
    env = dict(os.environ)
    if args.threads:
        env["OMP_NUM_THREADS"] = str(args.threads)
    exe = Path(sys.executable).parent
    base_s, base_train_s, sweep_s = [], [], []
    for k in range(args.repeats):
        t = time.perf_counter()
        out = subprocess.run([sys.executable, "-c", BASELINE], capture_output=True, text=True, check=True,
                             env=env).stdout
        base_s.append(time.perf_counter() - t)
        base_train_s.append(float(out.split("train_s=")[1]))
        print(f"baseline {k}: process {base_s[-1]:.2f} s, train() {base_train_s[-1]:.2f} s", flush=True)
        folder = Path(args.out) / f"sweep{k}"
        shutil.rmtree(folder, ignore_errors=True)
        folder.parent.mkdir(parents=True, exist_ok=True)
        t = time.perf_counter()
        with open(Path(args.out) / f"sweep{k}.log", "w") as log:
            subprocess.run([str(exe / "fastmlp"), "sweep", *SWEEP, "--out", str(folder)], check=True,
                           stdout=log, env=env)
        sweep_s.append(time.perf_counter() - t)
        print(f"sweep    {k}: process {sweep_s[-1]:.2f} s  -> {folder}", flush=True)
    from fastmlp.results import environment

    summary = {"threads": args.threads or "default", "command": "fastmlp sweep " + " ".join(SWEEP) + " --out DIR",
               "baseline_train_s_median": statistics.median(base_train_s),
               "baseline_process_s_median": statistics.median(base_s),
               "sweep_process_s_median": statistics.median(sweep_s),
               "ratio_sweep_over_baseline_train": statistics.median(sweep_s) / statistics.median(base_train_s),
               "runs": {"baseline_train_s": base_train_s, "baseline_process_s": base_s, "sweep_process_s": sweep_s},
               "environment": {**environment(), "threads": args.threads or "torch default (one per core)"}}
    print(json.dumps(summary, indent=1))


if __name__ == "__main__":
    main()
