#!/usr/bin/env python
"""Network-epochs per second vs G for several training providers, side by side in one run.

Every provider trains the lab network (2-5-3-1: tanh, tanh, sigmoid; MSE; full-batch gradient
descent) on the lab's five points with lr 0.25 in float32, starting from the same initial weights
(``fastmlp.Population``, seeds 0..G-1).  Providers:

  reference  the lab's per-network loop, ``fastmlp.reference.train`` on one network after another.
             Its cost is linear in G, so only a few networks are timed and the rate is
             extrapolated; the table says so.
  torch      ``fastmlp.train(..., backend="torch")``: the batched torch engine.
  bmm        a straightforward batched implementation of the same equations, written plainly
             below: ``torch.baddbmm`` / ``torch.bmm`` on contiguous ``[G, ...]`` tensors, no
             autograd (the issue's baseline).
  func       the PyTorch ensembling idiom: ``torch.func.stack_module_state`` over G
             ``nn.Sequential`` models, ``vmap(grad_and_value(functional_call loss))``, manual SGD.
  triton, fused
             ``fastmlp.train(..., backend=...)`` on CUDA; only with ``--gpu``.  A backend this
             build does not have is reported as not run, with the reason.

Timing: one warm-up run per provider, then ``--repeats`` rounds; each round times every provider
once, in turn, so that a noisy machine slows them alike.  The figure is the median.  CPU:
``time.perf_counter``; CUDA: the same, with ``torch.cuda.synchronize`` on both sides (a run is
thousands of launches, seconds long; ``do_bench``'s per-call statistics buy nothing here).

Noise: on a shared 2-core box another process on one core stalls torch's 2-thread parallel
regions (a 100-epoch block was seen to run 40x slower, for every provider at once).  The rounds
are interleaved so that this hits providers alike, the min/max of each row is in the JSON, and the
load average before and after the run is recorded; ``--threads 1`` sidesteps the stall.

Usage:
  python bench/bench_train.py                       # the full table (about 5 minutes on 2 quiet cores)
  python bench/bench_train.py --quick --out /tmp/b  # a smoke run of a few seconds
  python bench/bench_train.py --G 8192 --providers torch,bmm --epochs 2500 --threads 1
  python bench/bench_train.py --gpu                 # on CUDA, adds the triton/fused providers
  python bench/bench_train.py --profile 8192        # torch.profiler breakdown per provider
"""
from __future__ import annotations

import argparse
import datetime as _dt
import json
import os
import platform
import re
import socket
import statistics
import sys
import time
from contextlib import contextmanager
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without install

import fastmlp  # noqa: E402
from fastmlp import reference  # noqa: E402
from fastmlp.datasets import five_points  # noqa: E402

SIZES = [2, 5, 3, 1]
LR = 0.25
DTYPE = torch.float32
DEFAULT_G = (1, 64, 1024, 8192, 65536)
# Epochs per timed run, by G: 2500 (the lab's) up to 8192 networks; at 65536 a 2500-epoch run
# of the slow providers would take minutes per repeat, and the rate no longer depends on the
# epoch count once a run lasts well over a second.
DEFAULT_EPOCHS = {1: 2500, 64: 2500, 1024: 2500, 8192: 2500, 65536: 250}
# The reference loop runs fewer epochs (stated per row): its rate is a per-network Python loop,
# the same at any epoch count, and 2500 epochs x 4 networks would take 4 s per repeat.
SLOW_EPOCHS = 500
REFERENCE_NETS = 4  # networks the reference loop times; its rate is extrapolated to G
CHECK_SEEDS = 32  # networks in the agreement check
CHECK_EPOCHS = 300
CHECK_RTOL = 1e-4  # float32 over 300 reordered-sum steps; the measured values are printed


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


# ---------------------------------------------------------------------------------------
# Providers.  Each has: prepare(pop, x, y) -> state (untimed; copies the initial weights),
# run(state, epochs) -> final loss [G'] (timed), nets(state) -> how many networks ran.
# Register a new one in PROVIDERS.
# ---------------------------------------------------------------------------------------
class Provider:
    name = ""
    slow = False  # fewer epochs per timed run (SLOW_EPOCHS)
    gpu_only = False

    def unavailable(self, device: torch.device) -> str | None:
        """None when this provider can run on ``device``, else the reason."""
        return None

    def prepare(self, pop, x, y):
        raise NotImplementedError

    def run(self, state, epochs: int) -> torch.Tensor:
        raise NotImplementedError

    def nets(self, state) -> int:
        return len(state["pop"]) if "pop" in state else state["G"]

    def weights(self, state) -> list[torch.Tensor]:
        """The current weights as [G, n_in, n_out] (for the agreement check)."""
        raise NotImplementedError


class ReferenceLoop(Provider):
    """The lab's engine, one network after another (``fastmlp.reference.train``)."""
    name = "reference"
    slow = True

    def __init__(self, max_nets: int = REFERENCE_NETS):
        self.max_nets = max_nets

    def prepare(self, pop, x, y):
        k = min(len(pop), self.max_nets)
        return {"nets": [pop.network(i) for i in range(k)], "G": k, "x": x, "y": y}

    def run(self, state, epochs):
        x, y = state["x"], state["y"]
        for net in state["nets"]:
            reference.train(x, y, net, epochs, LR)
        return torch.stack([net.get_loss(x, y) for net in state["nets"]])

    def weights(self, state):
        return [torch.stack([net.layers[l].get_weight() for net in state["nets"]])
                for l in range(len(state["nets"][0].layers))]


class FastmlpBackend(Provider):
    """``fastmlp.train(x, y, population, epochs, lr, backend=...)``."""

    def __init__(self, backend: str, gpu_only: bool = False):
        self.name = backend
        self.backend = backend
        self.gpu_only = gpu_only

    def unavailable(self, device):
        from fastmlp.engine import select_backend

        try:
            select_backend(self.backend, device)
        except ValueError as e:
            return str(e)
        return None

    def prepare(self, pop, x, y):
        return {"pop": pop.clone(), "x": x, "y": y}

    def run(self, state, epochs):
        r = fastmlp.train(state["x"], state["y"], state["pop"], epochs, LR, backend=self.backend, progress=False)
        return r.final_loss

    def weights(self, state):
        return [w.contiguous() for w in state["pop"].weights]


class PlainBmm(Provider):
    """The same equations written plainly: baddbmm/bmm on contiguous [G, ...] tensors.

    z_l = act(z_{l-1} @ W_l + b_l);  delta_L = 2 (z_L - y) / (N n_out) * z_L (1 - z_L);
    delta_{l-1} = (delta_l @ W_l^T) * (1 - z_{l-1}^2);  W_l -= lr z_{l-1}^T delta_l;
    b_l -= lr sum_n delta_l.  No autograd, no preallocated buffers, no layout tricks.
    """
    name = "bmm"

    def prepare(self, pop, x, y):
        G, N = len(pop), x.shape[0]
        return {"W": [w.contiguous().clone() for w in pop.weights],
                "b": [b.contiguous().clone() for b in pop.biases],
                "x": x.expand(G, N, x.shape[1]).contiguous(), "y": y, "G": G}

    def run(self, state, epochs):
        W, b, x, y = state["W"], state["b"], state["x"], state["y"]
        L = len(W)
        G, N, n_out = x.shape[0], x.shape[1], W[-1].shape[2]
        history = torch.empty(epochs, G, dtype=x.dtype, device=x.device)
        with torch.no_grad():
            for e in range(epochs):
                zs = [x]
                for l in range(L):
                    z = torch.baddbmm(b[l].unsqueeze(1), zs[-1], W[l])
                    zs.append(torch.tanh(z) if l < L - 1 else torch.sigmoid(z))
                out = zs[-1]
                diff = out - y
                history[e] = (diff * diff).mean(dim=(1, 2))
                delta = 2.0 / (N * n_out) * diff * out * (1 - out)
                for l in reversed(range(L)):
                    weight_grad = torch.bmm(zs[l].transpose(1, 2), delta)
                    bias_grad = delta.sum(dim=1)
                    if l > 0:  # with W_l before its update
                        delta_below = torch.bmm(delta, W[l].transpose(1, 2)) * (1 - zs[l] * zs[l])
                    W[l].sub_(weight_grad, alpha=LR)
                    b[l].sub_(bias_grad, alpha=LR)
                    if l > 0:
                        delta = delta_below
            out = x
            for l in range(L):
                out = torch.baddbmm(b[l].unsqueeze(1), out, W[l])
                out = torch.tanh(out) if l < L - 1 else torch.sigmoid(out)
            return ((out - y) ** 2).mean(dim=(1, 2))

    def weights(self, state):
        return state["W"]


class FuncEnsemble(Provider):
    """PyTorch's model-ensembling idiom (torch.func tutorial), with manual SGD."""
    name = "func"

    @staticmethod
    def model(sizes):
        import torch.nn as nn

        layers = []
        for l, (a, c) in enumerate(zip(sizes[:-1], sizes[1:])):
            layers += [nn.Linear(a, c), nn.Tanh() if l < len(sizes) - 2 else nn.Sigmoid()]
        return nn.Sequential(*layers)

    def prepare(self, pop, x, y):
        from torch.func import functional_call, grad_and_value, stack_module_state, vmap

        G, device = len(pop), x.device
        template = self.model(pop.sizes).to(device)
        # stack_module_state over G models returns {"0.weight": [G, out, in], "0.bias": [G, out],
        # ...}, stacked contiguous.  Building G nn.Modules costs 0.6 ms each here (5 s at
        # G = 8192, 40 s at 65536), so the stacked dict is built from one model's keys and
        # filled from the population: same keys, shapes and layout, and the same initial
        # weights as every other provider.
        params, buffers = stack_module_state([template])
        linear_keys = [k for k in params if k.endswith(".weight")]
        for l, k in enumerate(linear_keys):
            params[k] = pop.weights[l].transpose(1, 2).contiguous().clone()  # nn.Linear: [out, in]
            params[k[:-len("weight")] + "bias"] = pop.biases[l].contiguous().clone()
        base = template.to("meta")

        def loss_fn(params, buffers, x, y):
            out = functional_call(base, (params, buffers), (x,))
            return torch.mean((out - y) ** 2)

        step = vmap(grad_and_value(loss_fn), in_dims=(0, 0, None, None))
        return {"params": params, "buffers": buffers, "step": step, "loss_fn": loss_fn,
                "x": x, "y": y, "G": G, "keys": linear_keys}

    def run(self, state, epochs):
        from torch.func import vmap

        params, buffers, step, x, y = state["params"], state["buffers"], state["step"], state["x"], state["y"]
        history = torch.empty(epochs, state["G"], dtype=x.dtype, device=x.device)
        names = list(params)
        for e in range(epochs):
            grads, loss = step(params, buffers, x, y)
            history[e] = loss
            with torch.no_grad():
                torch._foreach_sub_([params[k] for k in names], [grads[k] for k in names], alpha=LR)
        return vmap(state["loss_fn"], in_dims=(0, 0, None, None))(params, buffers, x, y)

    def weights(self, state):
        return [state["params"][k].transpose(1, 2) for k in state["keys"]]


PROVIDERS = {
    "reference": lambda: ReferenceLoop(),
    "torch": lambda: FastmlpBackend("torch"),
    "bmm": lambda: PlainBmm(),
    "func": lambda: FuncEnsemble(),
    "triton": lambda: FastmlpBackend("triton", gpu_only=True),
    "fused": lambda: FastmlpBackend("fused", gpu_only=True),
}
CPU_DEFAULT = ("reference", "torch", "bmm", "func")
GPU_EXTRA = ("triton", "fused")


# ---------------------------------------------------------------------------------------
# Work per network-epoch (docs/backprop.md section 6) and measured ceilings
# ---------------------------------------------------------------------------------------
def work_per_network_epoch(sizes, N: int) -> dict:
    pairs = list(zip(sizes[:-1], sizes[1:]))
    fwd = N * sum(a * c for a, c in pairs)
    deltas = N * sum(a * c for a, c in pairs[1:])  # no delta for the input
    grads = N * sum(a * c for a, c in pairs)
    params = sum(a * c + c for a, c in pairs)
    fma = fwd + deltas + grads + params
    return {"multiply_adds": fma, "forward": fwd, "deltas": deltas, "gradients": grads, "updates": params,
            "flops": 2 * fma, "activations": N * sum(sizes[1:]), "act_out": N * sizes[-1], "params": params,
            # Bytes a layer-by-layer engine must move per epoch when the parameters live in
            # memory between epochs: read + write each parameter, write one loss (float32).
            "bytes_params_stream": (2 * params + 1) * 4,
            # A one-launch kernel that keeps a network's parameters in registers for all
            # epochs writes only the loss history.
            "bytes_fused": 4}


def _distinct_bytes(t: torch.Tensor) -> int:
    n = 1
    for size, stride in zip(t.shape, t.stride()):
        if stride != 0:
            n *= size
    return n * t.element_size()


@contextmanager
def _count_ops():
    """Count aten ops and the bytes of their tensor operands (inputs read + outputs written)."""
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


def traffic_per_network_epoch(provider: Provider, x, y, G: int = 1024, device="cpu") -> dict | None:
    """Aten ops per epoch and operand bytes per network-epoch, from the difference of two runs."""
    pop = fastmlp.Population(SIZES, G, dtype=DTYPE, device=device)
    counts = []
    for epochs in (2, 6):
        state = provider.prepare(pop, x, y)
        try:
            with _count_ops() as stats:
                provider.run(state, epochs)
        except Exception as e:  # noqa: BLE001 -- functorch may not expose its ops to the mode
            return {"error": f"{type(e).__name__}: {e}"}
        counts.append(dict(stats))
    nets = provider.nets(state)
    d_ops = (counts[1]["ops"] - counts[0]["ops"]) / 4
    d_bytes = (counts[1]["bytes"] - counts[0]["bytes"]) / 4
    return {"ops_per_epoch": d_ops, "bytes_per_network_epoch": d_bytes / nets, "G": nets}


def measure_ceilings(device: torch.device, quick: bool) -> dict:
    """This device's measured limits: sgemm FLOP/s, copy bandwidth, tanh throughput."""
    n = 512 if quick else 2048
    a = torch.randn(n, n, device=device)
    c = torch.empty_like(a)
    big = 1 << (22 if quick else 26)  # 16 MiB / 256 MiB of float32
    src = torch.rand(big, device=device)
    dst = torch.empty_like(src)
    t_small = torch.rand(1 << 20, device=device)  # 4 MiB: tanh throughput, not bandwidth

    def best(fn, reps=5):
        fn()
        ts = []
        for _ in range(reps):
            sync(device)
            t0 = time.perf_counter()
            fn()
            sync(device)
            ts.append(time.perf_counter() - t0)
        return statistics.median(ts)

    t_mm = best(lambda: torch.mm(a, a, out=c))
    t_copy = best(lambda: dst.copy_(src))
    t_tanh = best(lambda: torch.tanh(t_small, out=t_small))
    return {"sgemm_gflops": 2 * n**3 / t_mm / 1e9, "sgemm_n": n,
            "copy_gbs": 2 * src.numel() * 4 / t_copy / 1e9, "copy_mib": src.numel() * 4 / 2**20,
            "tanh_gelem_s": t_small.numel() / t_tanh / 1e9}


# ---------------------------------------------------------------------------------------
# Environment
# ---------------------------------------------------------------------------------------
def cpu_model() -> str:
    from fastmlp.results import cpu_name

    return cpu_name()


def environment(device: torch.device) -> dict:
    env = {"python": platform.python_version(), "torch": torch.__version__, "fastmlp": fastmlp.__version__,
           "threads": torch.get_num_threads(), "cpu": cpu_model(), "cpu_count": os.cpu_count(),
           "cpu_capability": torch.backends.cpu.get_cpu_capability(), "hostname": socket.gethostname(),
           "platform": platform.platform(), "date": _dt.datetime.now().astimezone().isoformat(timespec="seconds")}
    try:
        import triton

        env["triton"] = triton.__version__
    except ImportError:
        env["triton"] = None
    if device.type == "cuda":
        env["device"] = torch.cuda.get_device_name(device)
        env["cuda"] = torch.version.cuda
    else:
        env["device"] = f"{env['cpu']} ({env['cpu_count']} cores)"
    return env


def device_slug(env: dict, device: torch.device) -> str:
    name = env["device"] if device.type == "cuda" else f"{env['cpu']}-{env['cpu_count']}c"
    return re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-")


# ---------------------------------------------------------------------------------------
# Timing
# ---------------------------------------------------------------------------------------
def epochs_for(provider: Provider, G: int, main_epochs: int) -> int:
    return min(main_epochs, SLOW_EPOCHS) if provider.slow else main_epochs


def time_row(providers, G, main_epochs, x, y, device, repeats, warmup_epochs, log):
    """One G: warm every provider up, then `repeats` interleaved rounds.  Returns rows."""
    pop = fastmlp.Population(SIZES, G, dtype=DTYPE, device=device)
    plan = {p.name: epochs_for(p, G, main_epochs) for p in providers}
    times = {p.name: [] for p in providers}
    cpu = {p.name: [] for p in providers}  # process CPU seconds (all threads): a noise diagnostic
    nets, losses = {}, {}
    for p in providers:
        state = p.prepare(pop, x, y)
        p.run(state, min(warmup_epochs, plan[p.name]))
    for rep in range(repeats):
        for p in providers:
            state = p.prepare(pop, x, y)
            sync(device)
            c0, t0 = time.process_time(), time.perf_counter()
            final = p.run(state, plan[p.name])
            sync(device)
            times[p.name].append(time.perf_counter() - t0)
            cpu[p.name].append(time.process_time() - c0)
            nets[p.name] = p.nets(state)
            losses[p.name] = final
        log(f"  G={G:>6} round {rep + 1}/{repeats}: " + ", ".join(
            f"{n} {fmt_rate(nets[n] * plan[n] / t[-1])}" for n, t in times.items()))
    rows = []
    for p in providers:
        ts = times[p.name]
        work = nets[p.name] * plan[p.name]
        fin = losses[p.name].float().cpu()
        rows.append({"provider": p.name, "G": G, "epochs": plan[p.name],
                     "timed_networks": nets[p.name], "extrapolated": nets[p.name] < G,
                     "median_s": statistics.median(ts), "times_s": ts, "process_cpu_s": cpu[p.name],
                     "net_epochs_per_s": work / statistics.median(ts),
                     "net_epochs_per_cpu_s": work / statistics.median(cpu[p.name]),
                     "min_net_epochs_per_s": work / max(ts), "max_net_epochs_per_s": work / min(ts),
                     "final_loss_median": float(fin.median()),
                     "converged_fraction": float((fin < 0.01).float().mean())})
    return rows


def agreement(providers, x, y, device, G, epochs) -> list[dict]:
    """Final losses and weights of every provider vs the torch engine, same initial weights."""
    pop = fastmlp.Population(SIZES, G, dtype=DTYPE, device=device)
    base = FastmlpBackend("torch")
    bstate = base.prepare(pop, x, y)
    bloss = base.run(bstate, epochs).float()
    bw = base.weights(bstate)
    out = []
    for p in providers:
        if p.name == "torch":
            continue
        state = p.prepare(pop, x, y)
        loss = p.run(state, epochs).float()
        k = loss.shape[0]
        ref_loss = bloss[:k]
        loss_rel = ((loss - ref_loss).abs() / ref_loss.abs().clamp_min(1e-30)).max().item()
        w_err = max(((w.float() - w0[:k].float()).abs().max() / w0[:k].float().abs().max()).item()
                    for w, w0 in zip(p.weights(state), bw))
        out.append({"provider": p.name, "networks": k, "epochs": epochs, "final_loss_max_rel_diff": loss_rel,
                    "weights_max_diff_rel_to_max": w_err,
                    "ok": bool(loss_rel <= CHECK_RTOL and w_err <= CHECK_RTOL)})
    return out


@contextmanager
def _label_engine_ops():
    """Wrap the torch engine's four ops in profiler ranges (restored on exit)."""
    from torch.profiler import record_function

    from fastmlp.engine import torch as ops

    names = ("linear_act_fwd", "output_delta", "delta_bwd", "grad_update")
    saved = {n: getattr(ops, n) for n in names}

    def wrap(n, f):
        def labelled(*a, **k):
            with record_function(f"engine.{n}"):
                return f(*a, **k)
        return labelled

    for n in names:
        setattr(ops, n, wrap(n, saved[n]))
    try:
        yield
    finally:
        for n, f in saved.items():
            setattr(ops, n, f)


def profile(providers, G, x, y, device, epochs, top=14) -> dict:
    """torch.profiler: where each provider's time goes at G (self CPU time per op; for the torch
    engine also the inclusive time of each of its four ops)."""
    from torch.profiler import ProfilerActivity, profile as tprofile

    acts = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device.type == "cuda" else [])
    pop = fastmlp.Population(SIZES, G, dtype=DTYPE, device=device)
    result = {}
    for p in providers:
        state = p.prepare(pop, x, y)
        p.run(state, 5)
        state = p.prepare(pop, x, y)
        with _label_engine_ops(), tprofile(activities=acts) as prof:
            sync(device)
            t0 = time.perf_counter()
            p.run(state, epochs)
            sync(device)
            wall = time.perf_counter() - t0
        ka = prof.key_averages()
        aten = [e for e in ka if not e.key.startswith("engine.")]
        total = sum(e.self_cpu_time_total for e in aten)
        rows = sorted(aten, key=lambda e: e.self_cpu_time_total, reverse=True)[:top]
        result[p.name] = {
            "epochs": epochs, "G": G, "wall_us_per_epoch": wall / epochs * 1e6,
            "self_cpu_us_per_epoch": total / epochs,
            "ops": [{"op": e.key, "calls_per_epoch": e.count / epochs,
                     "self_cpu_us_per_epoch": e.self_cpu_time_total / epochs,
                     "fraction": e.self_cpu_time_total / total if total else 0.0} for e in rows],
            "engine_ops": [{"op": e.key, "calls_per_epoch": e.count / epochs,
                            "cpu_us_per_epoch": e.cpu_time_total / epochs} for e in ka if e.key.startswith("engine.")]}
    return result


# ---------------------------------------------------------------------------------------
# Report
# ---------------------------------------------------------------------------------------
def fmt_rate(r: float) -> str:
    if r >= 1e6:
        return f"{r / 1e6:.2f}M"
    if r >= 1e3:
        return f"{r / 1e3:.1f}k"
    return f"{r:.0f}"


def table(rows, names, key: str = "net_epochs_per_s") -> str:
    by = {(r["G"], r["provider"]): r for r in rows}
    Gs = sorted({r["G"] for r in rows})
    ratio_cols = [n for n in names if n not in ("reference", "bmm", "func")]
    bases = [b for b in ("bmm", "func") if b in names]
    head = ["G"] + [f"{n} (epochs)" for n in names] + [f"{n}/{b}" for b in bases for n in ratio_cols]
    lines = [head]
    for G in Gs:
        cells = [str(G)]
        for n in names:
            r = by.get((G, n))
            if r is None:
                cells.append("-")
                continue
            mark = "~" if r["extrapolated"] else ""
            cells.append(f"{mark}{fmt_rate(r[key])} ({r['epochs']})")
        for b in bases:
            for n in ratio_cols:
                r, rb = by.get((G, n)), by.get((G, b))
                cells.append(f"{r[key] / rb[key]:.2f}x" if r and rb else "-")
        lines.append(cells)
    widths = [max(len(l[i]) for l in lines) for i in range(len(head))]
    out = ["| " + " | ".join(c.rjust(w) for c, w in zip(l, widths)) + " |" for l in lines]
    out.insert(1, "|" + "|".join("-" * (w + 1) + ":" for w in widths) + "|")
    return "\n".join(out)


def loadavg() -> list[float] | None:
    try:
        return [float(v) for v in Path("/proc/loadavg").read_text().split()[:3]]
    except OSError:
        return None


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--G", type=lambda s: [int(v) for v in s.split(",")], help="comma-separated population sizes")
    ap.add_argument("--providers", help=f"comma-separated, from {', '.join(PROVIDERS)}")
    ap.add_argument("--epochs", type=int, help="epochs per timed run for every G (default: by G, see DEFAULT_EPOCHS)")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--warmup-epochs", type=int, default=50)
    ap.add_argument("--threads", type=int, help="torch.set_num_threads (default: torch's)")
    ap.add_argument("--gpu", action="store_true", help="run on CUDA and add the GPU providers")
    ap.add_argument("--quick", action="store_true", help="smoke run: small G, few epochs (seconds)")
    ap.add_argument("--profile", type=int, metavar="G", help="also profile every provider at this G")
    ap.add_argument("--out", default=str(Path(__file__).resolve().parent / "results"), help="results directory")
    args = ap.parse_args(argv)

    def log(msg):
        print(msg, file=sys.stderr, flush=True)

    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device("cuda" if args.gpu else "cpu")
    if args.gpu and not torch.cuda.is_available():
        ap.error("--gpu: CUDA is not available on this machine")
    names = args.providers.split(",") if args.providers else list(CPU_DEFAULT) + (list(GPU_EXTRA) if args.gpu else [])
    for n in names:
        if n not in PROVIDERS:
            ap.error(f"--providers: unknown provider {n!r}; known: {', '.join(PROVIDERS)}")
    providers, skipped = [], {}
    for n in names:
        p = PROVIDERS[n]()
        if p.gpu_only and device.type != "cuda":
            skipped[n] = "GPU provider; run with --gpu on a CUDA machine"
            continue
        reason = p.unavailable(device)
        if reason:
            skipped[n] = reason
            continue
        providers.append(p)
    if not args.gpu and not any(n in GPU_EXTRA for n in names):
        skipped["triton, fused"] = "GPU providers, not run: no --gpu" + (
            " (CUDA is available here)" if torch.cuda.is_available() else " and no CUDA on this machine")
    names = [p.name for p in providers]

    Gs = args.G or ((1, 64, 1024) if args.quick else DEFAULT_G)
    repeats = args.repeats
    warmup = 5 if args.quick else args.warmup_epochs
    env = environment(device)
    env["loadavg_start"] = loadavg()
    x, y = five_points()
    x, y = x.to(device, DTYPE), y.to(device, DTYPE)
    work = work_per_network_epoch(SIZES, x.shape[0])

    log(f"bench_train: {env['device']}, torch {env['torch']}, {env['threads']} threads; providers {names}")
    for n, why in skipped.items():
        log(f"  not run: {n}: {why.splitlines()[0]}")

    check_G, check_epochs = (8, 10) if args.quick else (CHECK_SEEDS, CHECK_EPOCHS)
    log(f"agreement check: seeds 0..{check_G - 1}, {check_epochs} epochs, vs torch")
    check = agreement(providers, x, y, device, check_G, check_epochs)

    log("counting aten ops and operand bytes per network-epoch")
    traffic = {p.name: traffic_per_network_epoch(p, x, y, 64 if args.quick else 1024, device) for p in providers}
    ceilings = measure_ceilings(device, args.quick)

    rows = []
    for G in Gs:
        main_epochs = args.epochs or (20 if args.quick else DEFAULT_EPOCHS.get(G, 2500 if G <= 8192 else 250))
        rows += time_row(providers, G, main_epochs, x, y, device, repeats, warmup, log)

    prof = None
    if args.profile:
        log(f"profiling at G={args.profile}")
        prof = profile(providers, args.profile, x, y, device, 20 if args.quick else 200)
    env["loadavg_end"] = loadavg()

    # ---- report
    print(f"# bench_train: lab network {'-'.join(map(str, SIZES))}, five points, lr {LR}, float32, {device.type}")
    print(f"# {env['device']}, torch {env['torch']}, triton {env['triton']}, python {env['python']}, "
          f"{env['threads']} threads, {env['date']}, load average {env['loadavg_start']} -> {env['loadavg_end']}")
    print(f"# net-epochs/s, median of {repeats} interleaved rounds after a warm-up; (epochs) per timed run; "
          f"~ = reference loop timed on {REFERENCE_NETS} networks and extrapolated linearly to G")
    for n, why in skipped.items():
        print(f"# not run: {n}: {why.splitlines()[0]}")
    print()
    print(table(rows, names))
    if env["threads"] == 1 and device.type == "cpu":
        print("\n## the same runs per CPU-second (process_time; with one thread this discounts the time a busy "
              "machine gave to other processes)")
        print(table(rows, names, "net_epochs_per_cpu_s"))

    print("\n## agreement with the torch engine (same initial weights)")
    for c in check:
        print(f"  {c['provider']:>9}: {c['networks']} nets x {c['epochs']} epochs: final loss max rel diff "
              f"{c['final_loss_max_rel_diff']:.1e}, weights max diff / max|w| {c['weights_max_diff_rel_to_max']:.1e}"
              f"  {'ok' if c['ok'] else 'MISMATCH'} (rtol {CHECK_RTOL:g})")

    print(f"\n## work per network-epoch ({'-'.join(map(str, SIZES))}, N = {x.shape[0]})")
    print(f"  {work['multiply_adds']} multiply-adds (forward {work['forward']} + deltas {work['deltas']} + "
          f"gradients {work['gradients']} + updates {work['updates']}) = {work['flops']} FLOP; "
          f"{work['activations']} tanh/sigmoid")
    print(f"  bytes: >= {work['bytes_params_stream']} B when parameters stream through memory every epoch "
          f"(read+write {work['params']} float32 + 1 loss); {work['bytes_fused']} B for a one-launch kernel "
          "that keeps them in registers")
    print(f"  ceilings measured here: sgemm {ceilings['sgemm_gflops']:.1f} GFLOP/s (n={ceilings['sgemm_n']}), "
          f"copy {ceilings['copy_gbs']:.1f} GB/s (read+write, {ceilings['copy_mib']:.0f} MiB), "
          f"torch.tanh {ceilings['tanh_gelem_s']:.2f} Gelem/s")
    print(f"  => bounds: FLOP {ceilings['sgemm_gflops'] * 1e9 / work['flops'] / 1e6:.0f}M net-epochs/s, "
          f"torch.tanh {ceilings['tanh_gelem_s'] * 1e9 / (work['activations'] - work['act_out']) / 1e6:.0f}M, "
          f"parameter stream at copy bandwidth {ceilings['copy_gbs'] * 1e9 / work['bytes_params_stream'] / 1e6:.0f}M")
    Gmain = 8192 if 8192 in Gs else max(Gs)
    for p in providers:
        t = traffic[p.name]
        r = next((r for r in rows if r["G"] == Gmain and r["provider"] == p.name), None)
        if r is None:
            continue
        rate = r["net_epochs_per_s"]
        gflops = rate * work["flops"] / 1e9
        line = (f"  {p.name:>9} at G={Gmain}: {fmt_rate(rate)} net-epochs/s = {gflops:.2f} GFLOP/s useful "
                f"({100 * gflops / ceilings['sgemm_gflops']:.2f}% of sgemm)")
        if t and "bytes_per_network_epoch" in t:
            bw = rate * t["bytes_per_network_epoch"] / 1e9
            line += (f"; {t['ops_per_epoch']:.0f} aten ops/epoch, {t['bytes_per_network_epoch']:.0f} operand B/net-epoch"
                     f" = {bw:.1f} GB/s ({bw / ceilings['copy_gbs']:.2f}x the DRAM copy rate; > 1: served largely from cache)")
        elif t:
            line += f"; traffic not counted ({t.get('error', '')[:60]})"
        print(line)

    bar = {}
    by = {r["provider"]: r for r in rows if r["G"] == 8192}
    if "torch" in by:
        for base, need in (("bmm", 2.0), ("func", 3.0)):
            if base in by:
                ratio = by["torch"]["net_epochs_per_s"] / by[base]["net_epochs_per_s"]
                bar[f"torch/{base}"] = {"ratio": ratio, "need": need, "met": ratio >= need}
    if bar:
        print("\n## performance bar at G=8192 (torch >= 2x bmm, >= 3x func)")
        for k, v in bar.items():
            print(f"  {k}: {v['ratio']:.2f}x (need {v['need']:.0f}x): {'met' if v['met'] else 'NOT met'}")

    if prof:
        for n, pr in prof.items():
            print(f"\n## profile {n}, G={pr['G']}, {pr['epochs']} epochs: {pr['wall_us_per_epoch']:.0f} us/epoch wall "
                  f"under the profiler, {pr['self_cpu_us_per_epoch']:.0f} us/epoch in aten ops")
            for o in pr["engine_ops"]:
                print(f"  {o['op']:<32} {o['calls_per_epoch']:6.1f} calls/epoch {o['cpu_us_per_epoch']:9.1f} us/epoch (inclusive)")
            for o in pr["ops"]:
                print(f"  {o['op']:<32} {o['calls_per_epoch']:6.1f} calls/epoch {o['self_cpu_us_per_epoch']:9.1f} us/epoch "
                      f"{100 * o['fraction']:5.1f}%")

    outdir = Path(args.out)
    outdir.mkdir(parents=True, exist_ok=True)
    # The file name says what differs from the default run: G list, thread count, --quick.
    tag = (("-G" + "_".join(map(str, args.G))) if args.G else "") + (f"-{args.threads}t" if args.threads else "") \
        + ("-quick" if args.quick else "")
    path = outdir / f"train-{device_slug(env, device)}-{_dt.date.today().isoformat()}{tag}.json"
    command = "python bench/bench_train.py " + " ".join(argv if argv is not None else sys.argv[1:])
    record = {"bench": "train", "command": command.strip(), "environment": env, "network": SIZES,
              "dataset": "five_points", "lr": LR, "dtype": "float32", "repeats": repeats, "warmup_epochs": warmup,
              "reference_nets": REFERENCE_NETS, "providers": names, "skipped": skipped,
              "work_per_network_epoch": work, "ceilings": ceilings, "traffic": traffic, "agreement": check,
              "bar_G8192": bar, "rows": rows, "profile": prof}
    path.write_text(json.dumps(record, indent=1))
    print(f"\nwrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
