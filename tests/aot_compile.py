"""Ahead-of-time compile of every fastmlp kernel for real GPU targets, without a GPU.

Run as a script (``python tests/aot_compile.py [--caps 80,90]``), never under
TRITON_INTERPRET (the interpreter replaces the jit functions).  It builds the launches
that ``fastmlp.train`` makes on CUDA for representative networks -- the lab network
(2-5-3-1, N = 5) and widths 32, 64, 128, with shared and per-network x -- from ``meta``
tensors (shapes and strides only), takes each launch's exact specialisation the way
Triton's JIT does at a launch (ints equal to 1 become constexprs; ints and pointers
divisible by 16 get ``tt.divisibility``), compiles it with
``triton.compile(ASTSource(fn, signature, constexprs, attrs), target=GPUTarget("cuda", cap, 32))``
and reads registers / local memory of the cubin with ``cuobjdump -res-usage`` (shipped in
triton's ``backends/nvidia/bin``).  Prints one JSON object on stdout.
"""
from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

if os.environ.get("TRITON_INTERPRET", "0") not in ("", "0"):
    sys.exit("aot_compile.py must run without TRITON_INTERPRET (the interpreter replaces the jit functions)")

import torch  # noqa: E402
import triton  # noqa: E402
from triton.backends.compiler import BaseBackend, GPUTarget  # noqa: E402

import importlib  # noqa: E402

# The kernel modules (the package's attributes of the same names are the launchers).
_fwd = importlib.import_module("fastmlp.kernels.linear_act")
_od = importlib.import_module("fastmlp.kernels.output_delta")
_bwd = importlib.import_module("fastmlp.kernels.delta_bwd")
_upd = importlib.import_module("fastmlp.kernels.grad_update")

META = torch.device("meta")


def network_minor(shape, dtype, device=META):
    G, *rest = shape
    t = torch.zeros(*rest, G, dtype=dtype, device=device)
    return t.permute(t.dim() - 1, *range(t.dim() - 1))


def training_launches(sizes, N, G, dtype, x_shared, device=META):
    """The launches one epoch of ``fastmlp.train`` makes on CUDA (frozen mask passed,
    gradient buffers given), plus the grads-skipped update the launcher also offers.
    ``meta`` tensors by default (shapes and strides only); zeros on a real ``device``."""
    x = torch.zeros(N, sizes[0], dtype=dtype, device=device) if x_shared \
        else network_minor((G, N, sizes[0]), dtype, device)
    y = torch.zeros(N, sizes[-1], dtype=dtype, device=device)
    w = [network_minor((G, a, b), dtype, device) for a, b in zip(sizes[:-1], sizes[1:])]
    b = [network_minor((G, n), dtype, device) for n in sizes[1:]]
    z = [network_minor((G, N, n), dtype, device) for n in sizes[1:]]
    lr = torch.zeros(G, dtype=dtype, device=device)
    frozen = torch.zeros(G, dtype=torch.bool, device=device)
    L = len(w)
    out = []
    inp = x
    for l in range(L):
        act = "sigmoid" if l == L - 1 else "tanh"
        out.append((f"linear_act_fwd[{l}]", _fwd._launch_args(inp, w[l], b[l], act, z[l])))
        inp = z[l]
    loss = torch.zeros(G, dtype=dtype, device=device)
    out.append(("output_delta", _od._launch_args(z[-1], y, z[-1], loss)))
    for l in reversed(range(L)):
        if l > 0:
            out.append((f"delta_bwd[{l}]", _bwd._launch_args(z[l], w[l], z[l - 1], z[l - 1])))
        zp = z[l - 1] if l > 0 else x
        out.append((f"grad_update[{l}]", _upd._launch_args(zp, z[l], w[l], b[l], lr, frozen, w[l], b[l])))
    zp = z[-2] if L > 1 else x
    out.append(("grad_update[no grads]", _upd._launch_args(zp, z[-1], w[-1], b[-1], lr, frozen, None, None)))
    return out


def representative_configs():
    f32 = torch.float32
    G = 2**20
    configs = []
    for x_shared in (True, False):
        tag = "shared-x" if x_shared else "per-net-x"
        configs.append((f"lab 2-5-3-1 N5 f32 {tag}", "lab", training_launches([2, 5, 3, 1], 5, G, f32, x_shared)))
    configs.append(("lab 2-5-3-1 N5 f64 shared-x", "lab",
                    training_launches([2, 5, 3, 1], 5, G, torch.float64, True)))
    for width in (32, 64, 128):
        for x_shared in (True, False):
            tag = "shared-x" if x_shared else "per-net-x"
            configs.append((f"{width}-{width}-{width}-1 N64 f32 {tag}", "wide",
                            training_launches([width, width, width, 1], 64, 2**16, f32, x_shared)))
    return configs


def specialize(launch):
    """(signature, constexprs, attrs) as Triton's JIT would build them for this launch."""
    try:
        from triton._C.libtriton import native_specialize_impl
    except ImportError:  # older layouts: fall back to the documented rules
        native_specialize_impl = None
    kernel = launch.kernel
    names = kernel.arg_names
    nonconst = [n for n, p in zip(names, kernel.params) if not p.is_constexpr]
    values = dict(zip(nonconst, launch.args))
    signature, constexprs, attrs = {}, {}, {}
    for idx, (name, param) in enumerate(zip(names, kernel.params)):
        if param.is_constexpr:
            signature[name] = "constexpr"
            constexprs[name] = launch.constexprs[name]
            continue
        v = values[name]
        if native_specialize_impl is not None:
            ty, attr = native_specialize_impl(BaseBackend, v, False, True, True)
        else:
            ty, attr = _manual_specialize(v)
        if ty == "constexpr":
            signature[name] = "constexpr"
            constexprs[name] = attr
        else:
            signature[name] = ty
            if attr:
                attrs[(idx,)] = BaseBackend.parse_attr(attr)
    return signature, constexprs, attrs


def _manual_specialize(v):
    if isinstance(v, torch.Tensor):
        names = {torch.float32: "*fp32", torch.float64: "*fp64", torch.bool: "*u1"}
        return names[v.dtype], "D" if v.data_ptr() % 16 == 0 else ""
    if v == 1:
        return "constexpr", 1
    ty = "i32" if -2**31 <= v < 2**31 else "i64"
    return ty, "D" if v % 16 == 0 else ""


def cuobjdump_path() -> str:
    return str(Path(triton.__file__).parent / "backends" / "nvidia" / "bin" / "cuobjdump")


def resource_usage(cubin: bytes, tmpdir: str) -> dict:
    path = os.path.join(tmpdir, "k.cubin")
    with open(path, "wb") as f:
        f.write(cubin)
    text = subprocess.run([cuobjdump_path(), "-res-usage", path], capture_output=True, text=True, check=True).stdout
    m = re.search(r"REG:(\d+) STACK:(\d+) SHARED:(\d+) LOCAL:(\d+)", text)
    if m is None:
        raise RuntimeError(f"cannot parse cuobjdump -res-usage output:\n{text}")
    return dict(zip(("regs", "stack", "shared", "local"), map(int, m.groups())))


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--caps", default="80,90", help="compute capabilities, comma separated")
    args = ap.parse_args(argv)
    caps = [int(c) for c in args.caps.split(",")]
    seen = {}
    rows = []
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        for config, group, launches in representative_configs():
            for op, launch in launches:
                sig, consts, attrs = specialize(launch)
                key = (launch.kernel.__name__, json.dumps(sorted(sig.items())),
                       json.dumps(sorted((k, str(v)) for k, v in consts.items())), repr(sorted(attrs.items())))
                for cap in caps:
                    if (key, cap) not in seen:
                        src = triton.compiler.ASTSource(launch.kernel, sig, consts, attrs)
                        # Fused multiply-add as Triton <= 3.9 does by default (the GPU machine runs 3.6).
                        opts = {"num_warps": launch.num_warps, "enable_fp_fusion": True}
                        ck = triton.compile(src, target=GPUTarget("cuda", cap, 32), options=opts)
                        seen[(key, cap)] = resource_usage(ck.asm["cubin"], tmp)
                    rows.append(dict(config=config, group=group, op=op, kernel=launch.kernel.__name__, cap=cap,
                                     constexprs={k: launch.constexprs[k] for k in sorted(launch.constexprs)},
                                     **seen[(key, cap)]))
    print(json.dumps(dict(triton=triton.__version__, caps=caps, compiled=len(seen),
                          seconds=round(time.perf_counter() - t0, 1), rows=rows)))


if __name__ == "__main__":
    main()
