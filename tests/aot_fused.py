"""Ahead-of-time compile of the one-launch training kernel (kernels/fused_train.py).

Run as a script without TRITON_INTERPRET: compiles the configurations the launcher picks
for the lab network (2-5-3-1) and for widths 8, 16 and 32 (2-W-W-1), float32, for the
given compute capabilities, and prints one JSON object with the registers, stack frame
(spills) and local memory of each cubin, from ``cuobjdump -res-usage``.
"""
from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
import warnings
from pathlib import Path

if os.environ.get("TRITON_INTERPRET", "0") not in ("", "0"):
    sys.exit("aot_fused.py must run without TRITON_INTERPRET")
warnings.filterwarnings("ignore", message=".*FP_FUSION.*")

import triton  # noqa: E402
from triton.backends.compiler import GPUTarget  # noqa: E402

from fastmlp.kernels import fused_train as F  # noqa: E402

CONFIGS = {"lab 2-5-3-1": [2, 5, 3, 1], "width 8": [2, 8, 8, 1], "width 16": [2, 16, 16, 1],
           "width 32": [2, 32, 32, 1]}


def main(argv=None):
    ap = argparse.ArgumentParser()
    ap.add_argument("--caps", default="80,90")
    args = ap.parse_args(argv)
    tool = Path(triton.__file__).parent / "backends" / "nvidia" / "bin" / "cuobjdump"
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for name, sizes in CONFIGS.items():
            for fast in (False, True):
                meta = F.config(sizes, G=2**20, fast_tanh=fast)
                sig = {"x_ptr": "*fp32", "y_ptr": "*fp32", "p_ptr": "*fp32", "lr_ptr": "*fp32", "active_ptr": "*i8",
                       "loss_ptr": "*fp32", "s_loss": "i32", "G": "i32", "N": "i32", "E": "i32",
                       "inv_count": "fp32", "grad_scale": "fp32"}
                sig.update({k: "constexpr" for k in meta})
                for cap in (int(c) for c in args.caps.split(",")):
                    ck = triton.compile(triton.compiler.ASTSource(F._fused_train_kernel, sig, meta, {}),
                                        target=GPUTarget("cuda", cap, 32), options={"num_warps": F.NUM_WARPS})
                    path = os.path.join(tmp, "k.cubin")
                    Path(path).write_bytes(ck.asm["cubin"])
                    text = subprocess.run([str(tool), "-res-usage", path], capture_output=True, text=True,
                                          check=True).stdout
                    m = re.search(r"REG:(\d+) STACK:(\d+) SHARED:(\d+) LOCAL:(\d+)", text)
                    regs, stack, shared, local = map(int, m.groups())
                    rows.append(dict(config=name, sizes=sizes, fast_tanh=fast, cap=cap, block_g=meta["BLOCK_G"],
                                     regs=regs, stack=stack, shared=shared, local=local))
    print(json.dumps(dict(triton=triton.__version__, rows=rows)))


if __name__ == "__main__":
    main()
