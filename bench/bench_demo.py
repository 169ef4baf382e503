#!/usr/bin/env python
"""Wall-clock seconds of ``make demo``'s command (``fastmlp train``, the lab at 1024 seeds x 2500
epochs) on a fresh machine and on the next run, in fresh processes.

Each round starts from an empty ``FASTMLP_CACHE_DIR`` and times, in turn:

- ``torch only``: the run as it was before the CPU program existed (``--backend torch``, no
  background compile);
- ``first``: the fresh machine's ``make demo`` (auto: the torch engine, then a detached,
  low-priority compile of the program into the cache);
- ``second``: once that compile is in the cache, the same command again (auto: the cached program);
- ``second, torch``: the torch engine with the cache warm, the comparison for ``second``.

The whole process is timed (interpreter start, imports, training, figures, files), as a user sees
it.  Rounds are interleaved; the figures are medians.

Usage:
  python bench/bench_demo.py                 # 5 rounds
  python bench/bench_demo.py --rounds 2 --out /tmp/b
"""
from __future__ import annotations

import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import harness

CASES = ("torch only", "first", "second", "second, torch")


def _fastmlp() -> list[str]:
    return [sys.executable, "-m", "fastmlp", "train", "--no-progress", "--force"]


def _timed(argv: list[str], env: dict) -> tuple[float, str]:
    t = time.perf_counter()
    done = subprocess.run(argv, env=env, capture_output=True, text=True, check=True)
    return time.perf_counter() - t, done.stdout


def _backend(out: Path) -> str:
    import json
    return json.loads((out / "summary.json").read_text())["backend"]


def _wait_for_cache(cache: Path, timeout: float = 120.0) -> float:
    """Seconds until the background compile has left a finished entry in ``cache``."""
    t = time.monotonic()
    while not list((cache / "numba").glob("*.ok")):
        if time.monotonic() - t > timeout:
            raise RuntimeError("the background compile did not finish")
        time.sleep(0.2)
    return time.monotonic() - t


def round_(work: Path) -> dict[str, tuple[float, str]]:
    cache, out = work / "cache", work / "out"
    env = {**os.environ, "FASTMLP_CACHE_DIR": str(cache)}
    res = {}
    s, _ = _timed([*_fastmlp(), "--backend", "torch", "--out", str(out)], {**env, "FASTMLP_BACKGROUND_COMPILE": "0"})
    res["torch only"] = (s, _backend(out))
    s, _ = _timed([*_fastmlp(), "--out", str(out)], {**env, "FASTMLP_BACKGROUND_COMPILE": "1"})
    res["first"] = (s, _backend(out))
    _wait_for_cache(cache)
    time.sleep(1.0)  # let the compiling process exit
    s, _ = _timed([*_fastmlp(), "--out", str(out)], env)
    res["second"] = (s, _backend(out))
    s, _ = _timed([*_fastmlp(), "--backend", "torch", "--out", str(out)], env)
    res["second, torch"] = (s, _backend(out))
    return res


def main() -> None:
    ap = harness.parser(__doc__)
    ap.add_argument("--rounds", type=int, default=5)
    args = ap.parse_args()
    env = harness.environment()
    times: dict[str, list[float]] = {c: [] for c in CASES}
    backends: dict[str, set] = {c: set() for c in CASES}
    for r in range(args.rounds):
        with tempfile.TemporaryDirectory(prefix="fastmlp-demo-") as work:
            for case, (s, backend) in round_(Path(work)).items():
                times[case].append(s)
                backends[case].add(backend)
        harness.log(f"round {r + 1}/{args.rounds}: " + ", ".join(f"{c} {times[c][-1]:.2f} s" for c in CASES))
    harness.finish(env)
    rows = [[c, "/".join(sorted(backends[c])), f"{statistics.median(times[c]):.2f}",
             f"{min(times[c]):.2f}-{max(times[c]):.2f}"] for c in CASES]
    print(harness.describe(env))
    print(harness.table(["run", "backend", "median s", "range s"], rows))
    path = harness.write_json(args.out, "demo", env, {
        "rounds": args.rounds, "seconds": times, "backends": {c: sorted(b) for c, b in backends.items()},
        "median_s": {c: statistics.median(t) for c, t in times.items()}}, script=__file__)
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
