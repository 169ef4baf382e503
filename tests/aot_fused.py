"""Ahead-of-time compile of the one-launch training kernels (kernels/fused_train.py and the
generated kernels/fused_unrolled.py).

Run as a script without TRITON_INTERPRET: compiles, float32, for the given compute
capabilities, the kernel the launcher picks for the lab network (2-5-3-1 on five points:
the generated kernel) and for widths 8, 16 and 32 (2-W-W-1: the tile kernel), the tile
kernel on the lab network (the fallback, and the old default), the generated kernel with a
sample loop (the lab network on 100 points), and the largest generated
kernel the rule admits (``boundary``, exp2 tanh only: the approx form takes fewer
registers); the others with exp2 and approx tanh.  Compiles run in parallel processes (the
generated kernels take ~20 s each on one core).  Prints one JSON object with the
registers, stack frame (spills) and local memory of each cubin, from ``cuobjdump -res-usage``,
and what each kernel's divergence freeze is computed from, read from its PTX
(``kernels/aot.freeze_predicate``).  Two small float64 kernels (sm_90 only) check the
64-bit form of the freeze.
"""
from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import sys
import warnings

if os.environ.get("TRITON_INTERPRET", "0") not in ("", "0"):
    sys.exit("aot_fused.py must run without TRITON_INTERPRET")
warnings.filterwarnings("ignore", message=".*FP_FUSION.*")

import triton  # noqa: E402

from fastmlp.kernels import fused_train as F  # noqa: E402
from fastmlp.kernels.aot import compile_fused, freeze_predicate, resources  # noqa: E402

# name: (sizes, N, variant or None for the launcher's pick, dtype)
CONFIGS = {"lab 2-5-3-1": ([2, 5, 3, 1], 5, None, "fp32"), "lab tiles": ([2, 5, 3, 1], 5, "tiles", "fp32"),
           "lab N=100": ([2, 5, 3, 1], 100, None, "fp32"),
           "width 8": ([2, 8, 8, 1], 5, None, "fp32"), "width 16": ([2, 16, 16, 1], 5, None, "fp32"),
           "width 32": ([2, 32, 32, 1], 5, None, "fp32"), "boundary": ([2, 6, 6, 1], 5, None, "fp32"),
           # float64, both kernels, small (their freeze tests 64-bit patterns): exp2 tanh, sm_90 only
           "f64 2-3-1": ([2, 3, 1], 3, None, "fp64"), "f64 2-3-1 tiles": ([2, 3, 1], 3, "tiles", "fp64")}


def _row(job):
    name, fast, cap = job
    sizes, N, variant, dtype = CONFIGS[name]
    ck, meta = compile_fused(sizes, N, cap, fast, variant, dtype=dtype)
    return dict(config=name, sizes=sizes, N=N, variant=F.variant(sizes, N, variant), fast_tanh=fast, cap=cap,
                dtype=dtype, block_g=meta["BLOCK_G"], freeze=freeze_predicate(ck.asm["ptx"]),
                **resources(ck.asm["cubin"]))


def main(argv=None):
    ap = argparse.ArgumentParser()
    ap.add_argument("--caps", default="80,90")
    args = ap.parse_args(argv)
    jobs = [(name, fast, int(cap)) for name in CONFIGS for fast in (False, True) for cap in args.caps.split(",")
            if not ((name == "boundary" or CONFIGS[name][3] == "fp64") and fast)
            and not (CONFIGS[name][3] == "fp64" and cap != args.caps.split(",")[-1])]
    jobs.sort(key=lambda j: j[0] != "boundary")  # the slow ones first
    with multiprocessing.get_context("spawn").Pool(min(len(jobs), os.cpu_count() or 1)) as pool:
        rows = pool.map(_row, jobs, chunksize=1)
    print(json.dumps(dict(triton=triton.__version__, rows=rows)))


if __name__ == "__main__":
    main()
