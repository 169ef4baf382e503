"""What a benchmark counts besides time: the work a network-epoch needs, the aten ops and
operand bytes a run issues, where its time goes (torch.profiler), and the device's ceilings.

* :func:`work_per_network_epoch`: multiply-adds, activations and least bytes (docs/backprop.md
  section 6), from the :class:`~fastmlp.architecture.Architecture`;
* :func:`count_ops`: aten ops and the bytes of their operands, under a ``TorchDispatchMode``;
* :func:`profile_ops` (with :func:`label_calls` and :func:`format_profile`): self time per aten
  op, and the inclusive time of labelled functions;
* :func:`ceilings`: sgemm FLOP/s, copy bandwidth and ``torch.tanh`` throughput, measured here.
"""
from __future__ import annotations

from contextlib import contextmanager
from typing import Any, Callable

import harness
import torch

from fastmlp.architecture import Architecture


def work_per_network_epoch(sizes, N: int, itemsize: int = 4) -> dict:
    """Multiply-adds, activations and the least bytes of one network-epoch of full-batch
    gradient descent on ``N`` samples (docs/backprop.md section 6)."""
    arch = Architecture.of(sizes)
    fwd = N * sum(a * b for a, b in arch.layers)
    deltas = N * sum(a * b for a, b in arch.layers[1:])  # no delta for the input
    grads = fwd
    fma = fwd + deltas + grads + arch.n_params
    return {"multiply_adds": fma, "forward": fwd, "deltas": deltas, "gradients": grads, "updates": arch.n_params,
            "flops": 2 * fma, "activations": N * (arch.units - arch.n_in), "act_out": N * arch.n_out,
            "params": arch.n_params,
            # A layer-by-layer engine whose parameters live in memory between epochs reads and
            # writes each of them and writes one loss.
            "bytes_params_stream": (2 * arch.n_params + 1) * itemsize,
            # A one-launch kernel that keeps them in registers for all epochs writes only the loss.
            "bytes_fused": itemsize}


def _distinct_bytes(t: torch.Tensor) -> int:
    n = 1
    for size, stride in zip(t.shape, t.stride()):
        if stride != 0:
            n *= size
    return n * t.element_size()


@contextmanager
def count_ops():
    """Count aten ops and the bytes of their tensor operands (inputs read + outputs written):
    ``with count_ops() as stats: ...`` then ``stats["ops"]``, ``stats["bytes"]``."""
    from torch.utils._python_dispatch import TorchDispatchMode
    from torch.utils._pytree import tree_flatten

    stats = {"ops": 0, "bytes": 0}

    class Counter(TorchDispatchMode):
        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            out = func(*args, **(kwargs or {}))
            if func.namespace == "aten" and "empty" not in func.__name__:
                stats["ops"] += 1
                # Each operand once (an out= tensor is also the result); an in-place op's
                # self is read and written.
                seen = {}
                for t in tree_flatten((args, kwargs, out))[0]:
                    if isinstance(t, torch.Tensor):
                        seen[(t.data_ptr(), tuple(t.shape), tuple(t.stride()))] = _distinct_bytes(t)
                stats["bytes"] += sum(seen.values())
                if func._schema.name.endswith("_") and args and isinstance(args[0], torch.Tensor):
                    stats["bytes"] += _distinct_bytes(args[0])
            return out

    with Counter():
        yield stats


def profile_ops(fn: Callable[[], Any], device, per: int, top: int = 14, ranges: str | None = None) -> dict:
    """``torch.profiler`` over one call of ``fn``, everything divided by ``per`` (epochs): wall
    and aten self-CPU microseconds, the ``top`` aten ops by self time, and the inclusive time
    of the ``record_function`` ranges whose names start with ``ranges`` (under ``"engine_ops"``)."""
    from torch.profiler import ProfilerActivity, profile

    acts = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if torch.device(device).type == "cuda" else [])
    with profile(activities=acts) as prof:
        wall = harness.clock(fn, device)[0]
    ka = prof.key_averages()
    labelled = [e for e in ka if ranges and e.key.startswith(ranges)]
    aten = [e for e in ka if not (ranges and e.key.startswith(ranges))]
    total = sum(e.self_cpu_time_total for e in aten)
    rows = sorted(aten, key=lambda e: e.self_cpu_time_total, reverse=True)[:top]
    return {"wall_us_per_epoch": wall / per * 1e6, "self_cpu_us_per_epoch": total / per,
            "ops": [{"op": e.key, "calls_per_epoch": e.count / per,
                     "self_cpu_us_per_epoch": e.self_cpu_time_total / per,
                     "fraction": e.self_cpu_time_total / total if total else 0.0} for e in rows],
            "engine_ops": [{"op": e.key, "calls_per_epoch": e.count / per, "cpu_us_per_epoch": e.cpu_time_total / per}
                           for e in labelled]}


def format_profile(pr: dict) -> str:
    """:func:`profile_ops`'s record as text: a heading's tail, then one line per range and op."""
    lines = [f"{pr['wall_us_per_epoch']:.0f} us/epoch wall under the profiler, "
             f"{pr['self_cpu_us_per_epoch']:.0f} us/epoch in aten ops"]
    lines += [f"  {o['op']:<32} {o['calls_per_epoch']:6.1f} calls/epoch {o['cpu_us_per_epoch']:9.1f} us/epoch "
              "(inclusive)"
              for o in pr["engine_ops"]]
    lines += [f"  {o['op']:<32} {o['calls_per_epoch']:6.1f} calls/epoch {o['self_cpu_us_per_epoch']:9.1f} us/epoch "
              f"{100 * o['fraction']:5.1f}%" for o in pr["ops"]]
    return "\n".join(lines)


@contextmanager
def label_calls(module, names, prefix: str):
    """Wrap ``module``'s functions ``names`` in ``record_function(prefix + name)`` ranges, so that
    :func:`profile_ops` reports their inclusive time; restored on exit."""
    from torch.profiler import record_function

    saved = {n: getattr(module, n) for n in names}

    def wrap(n, f):
        def labelled(*a, **k):
            with record_function(prefix + n):
                return f(*a, **k)
        return labelled

    for n, f in saved.items():
        setattr(module, n, wrap(n, f))
    try:
        yield
    finally:
        for n, f in saved.items():
            setattr(module, n, f)


def ceilings(device: torch.device, quick: bool) -> dict:
    """This device's measured limits: sgemm FLOP/s, copy bandwidth, tanh throughput."""
    n = 512 if quick else 2048
    a = torch.randn(n, n, device=device)
    c = torch.empty_like(a)
    src = torch.rand(1 << (22 if quick else 26), device=device)  # 16 MiB / 256 MiB of float32
    dst = torch.empty_like(src)
    t_small = torch.rand(1 << 20, device=device)  # 4 MiB: tanh throughput, not bandwidth
    t_mm = harness.median_s(lambda: torch.mm(a, a, out=c), device)
    t_copy = harness.median_s(lambda: dst.copy_(src), device)
    t_tanh = harness.median_s(lambda: torch.tanh(t_small, out=t_small), device)
    return {"sgemm_gflops": 2 * n**3 / t_mm / 1e9, "sgemm_n": n,
            "copy_gbs": 2 * src.numel() * 4 / t_copy / 1e9, "copy_mib": src.numel() * 4 / 2**20,
            "tanh_gelem_s": t_small.numel() / t_tanh / 1e9}
