#!/usr/bin/env python
"""Network-epochs per second vs G for several training providers, side by side in one run.

Every provider trains the lab network (2-5-3-1: tanh, tanh, sigmoid; MSE; full-batch gradient
descent) on the lab's five points with lr 0.25 in float32, starting from the same initial weights
(``fastmlp.Population``, seeds 0..G-1).  The providers are the table ``PROVIDERS`` below (``--help``
lists them; how each trains is in ``bench/trainers.py``): the lab's per-network loop, every
registered ``fastmlp`` backend (those that need CUDA only with ``--gpu``), the one-launch program on
the CPU (``fused-cpu``: ``fastmlp/program_numba.py``), and three baselines: plain bmm, ``torch.func``
and JAX (``jit(lax.scan(vmap(value_and_grad)))``, its compile time reported apart; it runs where
``import jax`` works, e.g. a side venv).  A provider that cannot run here is reported as not run,
with the reason.  ``--dtype float64`` runs every provider in float64 (JAX with ``jax_enable_x64``).

Devices: a run is on the CPU, or with ``--gpu`` on CUDA (``--gpu`` without CUDA is an error that
names the flag, exit status 2: a GPU benchmark that quietly measured the CPU would be worse than
none).  Every provider computes on the run's device, and its label says which
(``func@cuda:0``, ``jax@cpu``; ``devices`` in the JSON): torch.func with its tensors there, JAX on
``jax.devices("cpu")[0]`` or, with ``--gpu``, ``jax.devices("gpu")[0]``, committed there and
checked after every run (where JAX has CUDA its default device is the GPU whatever the run).
JAX without a GPU backend is reported as not run in a ``--gpu`` run.  On CUDA the default sizes are
G = 1, 1024, 65536, 2**20 with 2500 epochs, and the providers that launch their work epoch by
epoch (torch, triton, bmm, func, the lab's loop) are timed over ``GPU_LOOP_EPOCHS`` = 100 of them
(their rate per epoch is flat: the shared H200 run timed them so); ``--epochs`` sets one count for all.

Compile times are not in the rates: JAX compiles in ``ready`` (untimed, ``compile_s`` per row);
the fused CPU program compiles in the warm-up run, and its cold (empty ``FASTMLP_CACHE_DIR``) and
warm (a second process, numba's disk cache) compile times are measured in two fresh processes.

Timing: one warm-up run per provider, then ``--repeats`` rounds; each round times every provider
once, in turn, so that a noisy machine slows them alike.  The figure is the median.  CPU:
``time.perf_counter``; CUDA: the same, with ``torch.cuda.synchronize`` on both sides (a run is
thousands of launches, seconds long; ``do_bench``'s per-call statistics buy nothing here).

Noise: on a shared 2-core box another process on one core stalls torch's 2-thread parallel
regions (a 100-epoch block was seen to run 40x slower, for every provider at once).  The rounds
are interleaved so that this hits providers alike, the min/max of each row is in the JSON, and the
load average before and after the run is recorded; ``--threads 1`` sidesteps the stall.

Usage:
  python bench/bench_train.py                       # the full table (about 10 minutes on 2 quiet cores)
  /tmp/jx/bin/python bench/bench_train.py            # the same with JAX, from a side venv that has it
  python bench/bench_train.py --G 1,8192 --providers torch,fused-cpu --dtype float64
  python bench/bench_train.py --quick --out /tmp/b  # a smoke run of a few seconds
  python bench/bench_train.py --G 8192 --providers torch,bmm --epochs 2500 --threads 1
  python bench/bench_train.py --gpu                 # on CUDA: every provider on the GPU (JAX's GPU too)
  python bench/bench_train.py --gpu --providers fused,jax,func --G 65536,1048576   # the GPU peers
  python bench/bench_train.py --profile 8192        # torch.profiler breakdown per provider
"""
from __future__ import annotations

import argparse
import json
import os

# Where JAX has CUDA it takes 75% of the GPU's memory at its first use unless told not to; the
# torch providers of the same run need theirs.  Set before anything imports jax.
os.environ.setdefault("XLA_PYTHON_CLIENT_PREALLOCATE", "false")
import statistics
import subprocess
import sys
import tempfile

import harness
import instruments
import torch

import fastmlp
from fastmlp import engine
from fastmlp.architecture import Architecture
from fastmlp.datasets import five_points
from trainers import FastmlpBackend, FuncEnsemble, FusedCpu, JaxScan, PlainBmm, ReferenceLoop, fused_cpu_via, \
    torch_device_label

ARCH = Architecture((2, 5, 3, 1))
SIZES = list(ARCH.sizes)
LR = 0.25
DTYPE = torch.float32  # --dtype float64 replaces it (main)
X, Y = five_points()
DEFAULT_G = (1, 64, 256, 1024, 8192, 65536)
# Epochs per timed run, by G: 2500 (the lab's) up to 1024 networks, 500 at 8192 and 250 at 65536
# (the issue's peer measurements): a 2500-epoch run of the slow providers (JAX, func) would take
# a minute per repeat there, and the rate no longer depends on the epoch count once a run lasts
# well over a second.
DEFAULT_EPOCHS = {1: 2500, 64: 2500, 256: 2500, 1024: 2500, 8192: 500, 65536: 250}
# On CUDA (--gpu): the launch-bound end, the middle, and the throughput end of the shared H200 run
# (../shared/gpu-runs/2026-12-04, section 3), 2500 epochs each; the providers that issue their
# work epoch by epoch (Runner.loops) are timed over GPU_LOOP_EPOCHS (at 2**20 torch.func ran
# 4.5e7 network-epochs/s there: 2500 epochs would take a minute per repeat).
GPU_DEFAULT_G = (1, 1024, 65536, 2**20)
GPU_EPOCHS = 2500
GPU_LOOP_EPOCHS = 100
JAX_PRECISION = "highest"  # --jax-precision replaces it (main)
PEERS = ("bmm", "func", "jax")  # the fused CPU provider's bar: 5x the fastest of these
# The issue's bar for the fused CPU program (lab network, five points, steady state).
FUSED_BAR = {"min_rate": {1: 1e6, **{G: 20e6 for G in (64, 256, 1024, 8192, 65536)}},
             "peer_ratio": 5.0, "peer_G": (1, 64, 256, 1024, 8192), "float64_G8192": 5e6,
             "cold_compile_s": 5.0, "warm_compile_s": 0.5}
# The reference loop runs fewer epochs (stated per row): its rate is a per-network Python loop,
# the same at any epoch count, and 2500 epochs x 4 networks would take 4 s per repeat.
SLOW_EPOCHS = 500
REFERENCE_NETS = 4  # networks the reference loop times; its rate is extrapolated to G
CHECK_SEEDS = 32  # networks in the agreement check
CHECK_EPOCHS = 300
CHECK_RTOL = 1e-4  # float32 over 300 reordered-sum steps; the measured values are printed
ENGINE_OPS = ("linear_act_fwd", "output_delta", "delta_bwd", "grad_update")  # the torch engine's, profiled


def backend_provider(name: str) -> harness.Provider:
    """A registered fastmlp backend: where ``backend="auto"`` may pick it, and whether it takes this problem."""
    def check(device):
        problem = engine.Problem(ARCH, X.shape[0], shared_data=True, dtype=DTYPE)
        try:
            engine.select_backend(name, device, problem)
        except ValueError as e:  # fastmlp.validate.ArgumentError
            return str(e)
        return None

    devices = engine.get_backend(name).auto_devices
    what = f"fastmlp.train(..., backend={name!r})" + (f", on {'/'.join(devices)}" if devices else "")
    return harness.Provider(name, what, lambda device: FastmlpBackend(LR, name), devices=devices, check=check)


def numba_missing(device) -> str | None:
    try:
        import numba  # noqa: F401
    except Exception as e:  # noqa: BLE001 -- any failure to import is a reason not to run
        return f"import numba failed ({type(e).__name__}: {e})"
    return None


def jax_platform(device) -> str:
    """The JAX platform of a run on ``device``: "gpu" for CUDA, else "cpu"."""
    return "gpu" if torch.device(device).type == "cuda" else "cpu"


def jax_missing(device) -> str | None:
    """Why the jax provider cannot run on ``device``: JAX does not import, or has no backend
    for it (a CPU-only jaxlib in a --gpu run)."""
    try:
        import jax
    except Exception as e:  # noqa: BLE001
        return (f"import jax failed ({type(e).__name__}: {e}); JAX is not a project dependency: "
                "run this script from a venv that has it")
    platform = jax_platform(device)
    try:
        jax.devices(platform)
    except Exception as e:  # noqa: BLE001 -- RuntimeError: Unknown backend ...
        return (f"JAX {jax.__version__} has no {platform} backend here ({type(e).__name__}: "
                f"{str(e).splitlines()[0] if str(e) else ''}); for --gpu it needs a jaxlib with CUDA (the jax[cuda12] "
                "or jax[cuda13] extra)")
    return None


# The registry's order is auto's, fastest first; the tables go from the CPU's backends to CUDA's.
_BACKENDS = [backend_provider(n) for n in reversed(engine.names()) if n != "auto"]
PROVIDERS = harness.Providers(
    harness.Provider("reference", f"the lab's loop, fastmlp.reference.train on one network after another "
                                  f"({REFERENCE_NETS} timed, the rate extrapolated: ~)",
                     lambda device: ReferenceLoop(LR, REFERENCE_NETS)),
    *(p for p in _BACKENDS if p.devices is None),
    harness.Provider("fused-cpu", "the one-launch program on the CPU (fastmlp/program_numba.py, numba, one network "
                                  "per SIMD lane): fastmlp.train(backend='fused') once the engine takes the CPU, "
                                  "else program_numba.fused_train with pack/unpack/final loss (timed)",
                     lambda device: FusedCpu(LR), devices=("cpu",), check=numba_missing),
    harness.Provider("bmm", "the same equations written plainly: baddbmm/bmm on contiguous [G, ...] tensors, "
                            "no autograd (the issue's baseline)", lambda device: PlainBmm(LR)),
    harness.Provider("func", "PyTorch's ensembling idiom: stack_module_state, vmap(grad_and_value("
                             "functional_call)), manual SGD; on the run's device (CUDA with --gpu)",
                     lambda device: FuncEnsemble(LR)),
    harness.Provider("jax", "JAX: jit(lax.scan over epochs of vmap over networks of value_and_grad(MSE)), SGD; "
                            "compiled untimed (compile_s per row); on jax.devices('cpu'), with --gpu on "
                            "jax.devices('gpu')", lambda device: JaxScan(LR, DTYPE, jax_platform(device), JAX_PRECISION),
                     devices=("cpu", "cuda"), check=jax_missing),
    *(p for p in _BACKENDS if p.devices is not None),
)


# ---------------------------------------------------------------------------------------
# Measurements
# ---------------------------------------------------------------------------------------
def traffic_per_network_epoch(runner, x, y, G: int, device) -> dict:
    """Aten ops per epoch and operand bytes per network-epoch, from the difference of two runs."""
    if isinstance(runner, (FusedCpu, JaxScan)):
        return {"error": "not counted: one compiled program, not a sequence of aten ops"}
    pop = fastmlp.Population(SIZES, G, dtype=DTYPE, device=device)
    counts = []
    for epochs in (2, 6):
        state = runner.prepare(pop, x, y)
        try:
            with instruments.count_ops() as stats:
                runner.run(state, epochs)
        except Exception as e:  # noqa: BLE001 -- functorch may not expose its ops to the mode
            return {"error": f"{type(e).__name__}: {e}"}
        counts.append(dict(stats))
    nets = runner.nets(state)
    d_ops = (counts[1]["ops"] - counts[0]["ops"]) / 4
    d_bytes = (counts[1]["bytes"] - counts[0]["bytes"]) / 4
    return {"ops_per_epoch": d_ops, "bytes_per_network_epoch": d_bytes / nets, "G": nets}


def epochs_plan(runners: dict, main_epochs: int, loop_epochs: int | None = None) -> dict:
    """Epochs per timed run of each provider: ``main_epochs``; at most ``SLOW_EPOCHS`` for a slow
    one (the lab's loop), at most ``loop_epochs`` (when given: GPU runs without ``--epochs``) for
    one that issues its work epoch by epoch."""
    plan = {}
    for n, r in runners.items():
        e = min(main_epochs, SLOW_EPOCHS) if r.slow else main_epochs
        plan[n] = min(e, loop_epochs) if loop_epochs and r.loops else e
    return plan


def default_sizes(device, quick: bool, G=None, epochs=None) -> list[tuple[int, int]]:
    """(G, epochs per timed run) of each row: ``--G`` / ``--epochs`` where given, else the
    device's defaults (CPU: DEFAULT_G with DEFAULT_EPOCHS; CUDA: GPU_DEFAULT_G x GPU_EPOCHS);
    ``--quick``: G = 1, 64, 1024 at 20 epochs."""
    cuda = torch.device(device).type == "cuda"
    Gs = G or ((1, 64, 1024) if quick else (GPU_DEFAULT_G if cuda else DEFAULT_G))
    if epochs:
        return [(g, epochs) for g in Gs]
    if quick:
        return [(g, 20) for g in Gs]
    return [(g, GPU_EPOCHS if cuda else DEFAULT_EPOCHS.get(g, 2500 if g <= 8192 else 250)) for g in Gs]


def time_row(runners: dict, G: int, main_epochs: int, x, y, device, repeats: int, warmup_epochs: int,
             loop_epochs: int | None = None) -> list[dict]:
    """One G: warm every provider up, then ``repeats`` interleaved rounds.  Returns its rows."""
    pop = fastmlp.Population(SIZES, G, dtype=DTYPE, device=device)
    plan = epochs_plan(runners, main_epochs, loop_epochs)
    for n, r in runners.items():
        r.run(r.prepare(pop, x, y), min(warmup_epochs, plan[n]))

    def case(n, r):
        def prepare():
            state = r.prepare(pop, x, y)
            r.ready(state, plan[n])
            return lambda: (r.run(state, plan[n]), r.nets(state))
        return prepare

    def progress(rep, samples):
        harness.log(f"  G={G:>6} round {rep + 1}/{repeats}: " + ", ".join(
            f"{n} {harness.rate(s.result[1] * plan[n] / s.wall[-1])}" for n, s in samples.items()))

    samples = harness.interleaved({n: case(n, r) for n, r in runners.items()}, device, repeats, progress)
    rows = []
    for n, s in samples.items():
        final, nets = s.result
        work, fin = nets * plan[n], final.float().cpu()
        rows.append({"provider": n, "device": runners[n].where(device), "G": G, "epochs": plan[n],
                     "timed_networks": nets, "extrapolated": nets < G,
                     "median_s": s.median, "times_s": s.wall, "process_cpu_s": s.cpu,
                     "net_epochs_per_s": work / s.median, "net_epochs_per_cpu_s": work / statistics.median(s.cpu),
                     "min_net_epochs_per_s": work / max(s.wall), "max_net_epochs_per_s": work / min(s.wall),
                     "final_loss_median": float(fin.median()),
                     "converged_fraction": float((fin < 0.01).float().mean())})
        if isinstance(runners[n], JaxScan):
            rows[-1].update(compile_s=runners[n].compile_s.get((nets, plan[n])), jax_precision=runners[n].precision)
        if isinstance(runners[n], FusedCpu):
            rows[-1]["via"] = runners[n].via
    return rows


def agreement(runners: dict, x, y, device, G: int, epochs: int) -> list[dict]:
    """Final losses and weights of every provider vs the torch engine, same initial weights."""
    pop = fastmlp.Population(SIZES, G, dtype=DTYPE, device=device)
    base = FastmlpBackend(LR, "torch")
    bstate = base.prepare(pop, x, y)
    bloss = base.run(bstate, epochs).float().cpu()  # JAX's results come back on the host
    bw = [w.float().cpu() for w in base.weights(bstate)]
    out = []
    for name, r in runners.items():
        if name == "torch":
            continue
        state = r.prepare(pop, x, y)
        loss = r.run(state, epochs).float().cpu()
        k = loss.shape[0]
        loss_rel = ((loss - bloss[:k]).abs() / bloss[:k].abs().clamp_min(1e-30)).max().item()
        w_err = max(((w.float().cpu() - w0[:k]).abs().max() / w0[:k].abs().max()).item()
                    for w, w0 in zip(r.weights(state), bw))
        out.append({"provider": name, "device": r.where(device), "networks": k, "epochs": epochs, "final_loss_max_rel_diff": loss_rel,
                    "weights_max_diff_rel_to_max": w_err,
                    "ok": bool(loss_rel <= CHECK_RTOL and w_err <= CHECK_RTOL)})
    return out


def profile(runners: dict, G: int, x, y, device, epochs: int) -> dict:
    """torch.profiler: where each provider's time goes at G (self CPU time per op; for the torch
    engine also the inclusive time of each of its four ops)."""
    from fastmlp.engine import torch as engine_ops

    pop = fastmlp.Population(SIZES, G, dtype=DTYPE, device=device)
    result = {}
    for name, r in runners.items():
        if isinstance(r, JaxScan):
            result[name] = {"error": "not profiled: one XLA program (torch.profiler sees none of it)"}
            continue
        r.run(r.prepare(pop, x, y), 5)
        state = r.prepare(pop, x, y)
        with instruments.label_calls(engine_ops, ENGINE_OPS, "engine."):
            pr = instruments.profile_ops(lambda: r.run(state, epochs), device, epochs, ranges="engine.")
        result[name] = {"epochs": epochs, "G": G, **pr}
    return result


def performance_bar(rows) -> dict:
    """The issue's bar at G = 8192: the torch engine >= 2x bmm and >= 3x func."""
    by = {r["provider"]: r for r in rows if r["G"] == 8192}
    bar = {}
    for base, need in (("bmm", 2.0), ("func", 3.0)):
        if "torch" in by and base in by:
            ratio = by["torch"]["net_epochs_per_s"] / by[base]["net_epochs_per_s"]
            bar[f"torch/{base}"] = {"ratio": ratio, "need": need, "met": ratio >= need}
    return bar


def lead_vs_peers(rows, lead: str) -> dict:
    """Per G: ``lead``'s rate against the fastest peer measured (bmm, func, jax)."""
    by = {(r["G"], r["provider"]): r for r in rows}
    out = {}
    for G in sorted({r["G"] for r in rows}):
        peers = [by[(G, p)] for p in PEERS if (G, p) in by]
        if (G, lead) in by and peers:
            best = max(peers, key=lambda r: r["net_epochs_per_s"])
            out[G] = {"lead": lead, "rate": by[(G, lead)]["net_epochs_per_s"], "peer": best["provider"],
                      "peer_rate": best["net_epochs_per_s"],
                      "ratio": by[(G, lead)]["net_epochs_per_s"] / best["net_epochs_per_s"]}
    return out


def fused_bar(rows, compile_times: dict | None) -> dict:
    """The issue's bar for the fused CPU provider: rates per G, ratio to the fastest peer measured
    (bmm, func, jax) per G, float64 at G = 8192, cold / warm compile."""
    by = {(r["G"], r["provider"]): r for r in rows}
    out = {}
    for G in sorted({r["G"] for r in rows}):
        f = by.get((G, "fused-cpu"))
        if f is None:
            continue
        cell = {"rate": f["net_epochs_per_s"]}
        if DTYPE == torch.float32 and G in FUSED_BAR["min_rate"]:
            need = FUSED_BAR["min_rate"][G]
            cell.update(need_rate=need, rate_met=f["net_epochs_per_s"] >= need)
        if DTYPE == torch.float64 and G == 8192:
            need = FUSED_BAR["float64_G8192"]
            cell.update(need_rate=need, rate_met=f["net_epochs_per_s"] >= need)
        peers = [by[(G, p)] for p in PEERS if (G, p) in by]
        if peers:
            best = max(peers, key=lambda r: r["net_epochs_per_s"])
            ratio = f["net_epochs_per_s"] / best["net_epochs_per_s"]
            cell.update(peer=best["provider"], peer_rate=best["net_epochs_per_s"], peer_ratio=ratio,
                        peers=[p["provider"] for p in peers])
            if G in FUSED_BAR["peer_G"]:
                cell.update(need_ratio=FUSED_BAR["peer_ratio"], ratio_met=ratio >= FUSED_BAR["peer_ratio"])
        out[G] = cell
    if compile_times and "error" not in compile_times and compile_times["network"] == SIZES:  # the bar's network
        out["compile"] = {k: {"s": compile_times[k]["compile_s"], "need_s": FUSED_BAR[f"{k}_compile_s"],
                              "met": compile_times[k]["compile_s"] <= FUSED_BAR[f"{k}_compile_s"]}
                          for k in ("cold", "warm")}
    return out


_COMPILE_PROBE = r"""
import json, sys, time
t0 = time.perf_counter()
import numba, torch
from fastmlp import program_numba
from fastmlp.architecture import Architecture
from fastmlp.datasets import five_points
from fastmlp.population import Population
t_import = time.perf_counter() - t0
sizes, dtype = json.loads(sys.argv[1]), getattr(torch, sys.argv[2])
arch = Architecture(sizes)
x, y = (t.to(dtype) for t in five_points())
def call(G, epochs):
    pop = Population(sizes, G, dtype=dtype)
    packed = arch.pack(pop.weights, pop.biases)
    args = (x, y, packed, torch.full((G,), 0.25, dtype=dtype), torch.ones(G, dtype=torch.int8),
            torch.empty(epochs, G, dtype=dtype), sizes, epochs)
    t = time.perf_counter()
    program_numba.fused_train(*args)
    return time.perf_counter() - t
first = call(16, 1)
steady = sorted(call(16, 1) for _ in range(20))[10]
g1 = sorted(call(1, 1) for _ in range(20))[10]
print(json.dumps({"import_s": t_import, "first_call_s": first, "steady_call_s": steady,
                  "compile_s": first - steady, "launch_G1_1epoch_s": g1}))
"""


def fused_compile_times(dtype: torch.dtype, sizes: list[int] = SIZES) -> dict:
    """The fused CPU program's compile time for ``sizes`` (the lab network), in two fresh processes sharing a
    new, empty ``FASTMLP_CACHE_DIR``: cold (the first: generate, compile, write numba's cache) and
    warm (the second: load the cached machine code).  compile_s = first call - a steady call
    (both 16 networks x 1 epoch); import_s (torch, numba, fastmlp) is apart."""
    out = {"network": list(sizes), "dtype": str(dtype).removeprefix("torch.")}
    with tempfile.TemporaryDirectory(prefix="fastmlp-cache-") as cache:
        env = {**os.environ, "FASTMLP_CACHE_DIR": cache,
               "PYTHONPATH": os.pathsep.join([str(harness.ROOT), os.environ.get("PYTHONPATH", "")])}
        for kind in ("cold", "warm"):
            p = subprocess.run([sys.executable, "-c", _COMPILE_PROBE, json.dumps(list(sizes)), out["dtype"]],
                               capture_output=True, text=True, env=env, cwd=harness.ROOT, timeout=600)
            if p.returncode != 0:
                return {"error": p.stderr[-2000:]}
            out[kind] = json.loads(p.stdout.strip().splitlines()[-1])
    out["loadavg"] = harness.loadavg()
    return out


# ---------------------------------------------------------------------------------------
# Report
# ---------------------------------------------------------------------------------------
def rate_table(rows, names, key: str = "net_epochs_per_s", labels: dict | None = None, lead: str = "fused-cpu") -> str:
    """net-epochs/s per G and provider (epochs per timed run), then the torch engine's ratios to
    bmm and func, and the one-launch program's (``lead``: fused-cpu on the CPU, fused on CUDA)
    to the fastest peer (bmm, func, jax) of that G.  ``labels`` ({name: device}) put each
    provider's device in its column's head: ``func@cuda:0``."""
    by = {(r["G"], r["provider"]): r for r in rows}
    ratio_cols = [n for n in names if n not in ("reference", "bmm", "func", "jax", "fused-cpu", lead)]
    bases = [b for b in ("bmm", "func") if b in names]
    peers = [p for p in PEERS if p in names]
    fused = lead in names and peers
    labels = labels or {}
    head = (["G"] + [f"{n}@{labels[n]} (epochs)" if n in labels else f"{n} (epochs)" for n in names]
            + [f"{n}/{b}" for b in bases for n in ratio_cols] + ([f"{lead}/fastest peer"] if fused else []))
    lines = []
    for G in sorted({r["G"] for r in rows}):
        cells = [G] + [f"{'~' if r['extrapolated'] else ''}{harness.rate(r[key])} ({r['epochs']})" if r else "-"
                       for r in (by.get((G, n)) for n in names)]
        for b in bases:
            for n in ratio_cols:
                r, rb = by.get((G, n)), by.get((G, b))
                cells.append(f"{r[key] / rb[key]:.2f}x" if r and rb else "-")
        if fused:
            f, best = by.get((G, lead)), max((by[(G, p)] for p in peers if (G, p) in by),
                                                     key=lambda r: r[key], default=None)
            cells.append(f"{f[key] / best[key]:.1f}x ({best['provider']})" if f and best else "-")
        lines.append(cells)
    return harness.table(head, lines)


def report(rec: dict, env: dict, device) -> None:
    rows, names, work, ceilings = rec["rows"], rec["providers"], rec["work_per_network_epoch"], rec["ceilings"]
    print(f"# bench_train: lab network {'-'.join(map(str, SIZES))}, five points, lr {LR}, {rec['dtype']}, "
          f"{device.type}")
    print(f"# {harness.describe(env)}")
    print(f"# net-epochs/s, median of {rec['repeats']} interleaved rounds after a warm-up; (epochs) per timed run; "
          f"~ = reference loop timed on {REFERENCE_NETS} networks and extrapolated linearly to G")
    print("# devices: " + ", ".join(f"{n}@{d}" for n, d in rec["devices"].items())
          + "".join(f"; {n}: {w}" for n, w in rec.get("device_notes", {}).items()))
    for n, why in rec["skipped"].items():
        print(f"# not run: {n}: {why.splitlines()[0]}")
    lead = "fused" if device.type == "cuda" else "fused-cpu"
    print("\n" + rate_table(rows, names, labels=rec["devices"], lead=lead))
    for r in rows:
        if r.get("compile_s") is not None:
            print(f"# {r['provider']} compile (jit.lower.compile, untimed) at G={r['G']}, {r['epochs']} epochs: "
                  f"{r['compile_s']:.2f} s")
    if "fused-cpu" in names:
        print(f"# fused-cpu runs via {'fastmlp.train(backend=fused)' if rec['fused_cpu_via'] == 'train' else 'program_numba.fused_train (the engine does not take the CPU yet)'}")
    if env["threads"] == 1 and device.type == "cpu":
        print("\n## the same runs per CPU-second (process_time; with one thread this discounts the time a busy "
              "machine gave to other processes)")
        print(rate_table(rows, names, "net_epochs_per_cpu_s", labels=rec["devices"], lead=lead))

    print("\n## agreement with the torch engine (same initial weights)")
    for c in rec["agreement"]:
        print(f"  {c['provider'] + '@' + c['device']:>15}: {c['networks']} nets x {c['epochs']} epochs: final loss max rel diff "
              f"{c['final_loss_max_rel_diff']:.1e}, weights max diff / max|w| {c['weights_max_diff_rel_to_max']:.1e}"
              f"  {'ok' if c['ok'] else 'MISMATCH'} (rtol {CHECK_RTOL:g})")

    print(f"\n## work per network-epoch ({'-'.join(map(str, SIZES))}, N = {X.shape[0]})")
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
    Gs = {r["G"] for r in rows}
    Gmain = 8192 if 8192 in Gs else max(Gs)
    for r in (r for r in rows if r["G"] == Gmain):
        t, gflops = rec["traffic"][r["provider"]], r["net_epochs_per_s"] * work["flops"] / 1e9
        line = (f"  {r['provider']:>9} at G={Gmain}: {harness.rate(r['net_epochs_per_s'])} net-epochs/s = "
                f"{gflops:.2f} GFLOP/s useful ({100 * gflops / ceilings['sgemm_gflops']:.2f}% of sgemm)")
        if "bytes_per_network_epoch" in t:
            bw = r["net_epochs_per_s"] * t["bytes_per_network_epoch"] / 1e9
            line += (f"; {t['ops_per_epoch']:.0f} aten ops/epoch, {t['bytes_per_network_epoch']:.0f} operand B/net-epoch"
                     f" = {bw:.1f} GB/s ({bw / ceilings['copy_gbs']:.2f}x the DRAM copy rate; > 1: served largely from cache)")
        else:
            line += f"; traffic not counted ({t.get('error', '')[:60]})"
        print(line)

    ct = rec.get("fused_compile")
    if ct:
        net = "lab network" if ct.get("network") == SIZES else "network " + "-".join(map(str, ct.get("network", [])))
        print(f"\n## fused-cpu compile time, {net} (fresh processes, one new FASTMLP_CACHE_DIR)")
        if "error" in ct:
            print(f"  failed: {ct['error'][-300:]}")
        else:
            for k in ("cold", "warm"):
                c = ct[k]
                print(f"  {k}: {c['compile_s']:.2f} s (first call {c['first_call_s']:.2f} s - steady "
                      f"{c['steady_call_s'] * 1e6:.0f} us); imports {c['import_s']:.2f} s")
            print(f"  one launch, G = 1, 1 epoch: {ct['warm']['launch_G1_1epoch_s'] * 1e6:.0f} us; "
                  f"load average {ct['loadavg']}")
    if rec.get("bar_fused"):
        print(f"\n## the fused CPU bar ({rec['dtype']}): >= 1M at G=1, >= 20M at G=64..65536, >= 5x the fastest "
              "peer at G=1..8192; float64 >= 5M at G=8192; compile cold <= 5 s, warm <= 0.5 s")
        for G, c in rec["bar_fused"].items():
            if G == "compile":
                for k, v in c.items():
                    print(f"  compile {k}: {v['s']:.2f} s (need <= {v['need_s']} s): {'met' if v['met'] else 'NOT met'}")
                continue
            line = f"  G={G:>6}: {harness.rate(c['rate'])}"
            if "need_rate" in c:
                line += f" (need {harness.rate(c['need_rate'])}: {'met' if c['rate_met'] else 'NOT met'})"
            if "peer" in c:
                line += f"; {c['peer_ratio']:.1f}x {c['peer']} ({harness.rate(c['peer_rate'])}, fastest of {'/'.join(c['peers'])})"
                if "need_ratio" in c:
                    line += f" (need {c['need_ratio']:.0f}x: {'met' if c['ratio_met'] else 'NOT met'})"
            print(line)

    if rec["bar_G8192"]:
        print("\n## performance bar at G=8192 (torch >= 2x bmm, >= 3x func)")
        for k, v in rec["bar_G8192"].items():
            print(f"  {k}: {v['ratio']:.2f}x (need {v['need']:.0f}x): {'met' if v['met'] else 'NOT met'}")

    for n, pr in (rec["profile"] or {}).items():
        print(f"\n## profile {n}, G={pr['G']}, {pr['epochs']} epochs: " + instruments.format_profile(pr))


def measure(runners: dict, skipped: dict, device, args) -> dict:
    """Everything the JSON holds besides the environment: agreement, traffic, ceilings, rows, profile."""
    x, y = X.to(device, DTYPE), Y.to(device, DTYPE)
    check_G, check_epochs = (8, 10) if args.quick else (CHECK_SEEDS, CHECK_EPOCHS)
    harness.log(f"agreement check: seeds 0..{check_G - 1}, {check_epochs} epochs, vs torch")
    check = agreement(runners, x, y, device, check_G, check_epochs)
    harness.log("counting aten ops and operand bytes per network-epoch")
    traffic = {n: traffic_per_network_epoch(r, x, y, 64 if args.quick else 1024, device) for n, r in runners.items()}
    ceilings = instruments.ceilings(device, args.quick)
    warmup = 5 if args.quick else args.warmup_epochs
    loop_epochs = GPU_LOOP_EPOCHS if device.type == "cuda" and not args.epochs and not args.quick else None
    rows = []
    for G, epochs in default_sizes(device, args.quick, args.G, args.epochs):
        rows += time_row(runners, G, epochs, x, y, device, args.repeats, warmup, loop_epochs)
    compile_times = None
    if "fused-cpu" in runners and args.compile_times:
        harness.log("fused-cpu compile time: two fresh processes, one new FASTMLP_CACHE_DIR")
        compile_times = fused_compile_times(DTYPE, args.compile_sizes)
    prof = None
    if args.profile:
        harness.log(f"profiling at G={args.profile}")
        prof = profile(runners, args.profile, x, y, device, 20 if args.quick else 200)
    return {"network": SIZES, "dataset": "five_points", "lr": LR, "dtype": str(DTYPE).removeprefix("torch."),
            "repeats": args.repeats, "fused_cpu_via": fused_cpu_via() if "fused-cpu" in runners else None,
            "devices": {n: r.where(device) for n, r in runners.items()},
            "device_notes": {n: r.describe() for n, r in runners.items() if hasattr(r, "describe")},
            "gpu_loop_epochs": loop_epochs, "jax_precision": JAX_PRECISION if "jax" in runners else None,
            "lead_vs_peers": lead_vs_peers(rows, "fused" if device.type == "cuda" else "fused-cpu"),
            "fused_compile": compile_times, "bar_fused": fused_bar(rows, compile_times),
            "warmup_epochs": warmup, "reference_nets": REFERENCE_NETS, "providers": list(runners), "skipped": skipped,
            "work_per_network_epoch": instruments.work_per_network_epoch(ARCH, X.shape[0]), "ceilings": ceilings,
            "traffic": traffic, "agreement": check, "bar_G8192": performance_bar(rows), "rows": rows, "profile": prof}


def main(argv=None) -> int:
    ap = harness.parser(__doc__, devices=True, epilog=PROVIDERS.help())
    ap.add_argument("--G", type=lambda s: [int(v) for v in s.split(",")], help="comma-separated population sizes")
    ap.add_argument("--providers", help=f"comma-separated, from {', '.join(PROVIDERS.names())}")
    ap.add_argument("--epochs", type=int, help="epochs per timed run for every G (default: by G, see DEFAULT_EPOCHS)")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--warmup-epochs", type=int, default=50)
    ap.add_argument("--quick", action="store_true", help="smoke run: G = 1, 64, 1024, 20 epochs (seconds)")
    ap.add_argument("--dtype", choices=("float32", "float64"), default="float32",
                    help="every provider's dtype (jax: jax_enable_x64 for float64)")
    ap.add_argument("--compile-times", action=argparse.BooleanOptionalAction, default=None,
                    help="measure the fused CPU program's cold/warm compile in two fresh processes "
                         "(default: on, off with --quick)")
    ap.add_argument("--compile-sizes", type=lambda s: [int(v) for v in s.split(",")], default=SIZES,
                    help="the network whose compile is timed (default: the lab's, the one the bar names; a "
                         "smaller one makes a quicker smoke run)")
    ap.add_argument("--profile", type=int, metavar="G", help="also profile every provider at this G")
    ap.add_argument("--jax-precision", choices=("highest", "default"), default="highest",
                    help="jax: the float32 matmuls' precision (highest: full float32, as torch; default: XLA's, "
                         "TF32 on a GPU)")
    args = ap.parse_args(argv)
    global DTYPE, JAX_PRECISION
    DTYPE = getattr(torch, args.dtype)
    JAX_PRECISION = args.jax_precision
    for flag, vals in (("--G", args.G or []), ("--epochs", [args.epochs] if args.epochs is not None else [])):
        if any(v < 1 for v in vals):
            ap.error(f"{flag}: must be positive, got {vals}")
    if args.compile_times is None:
        args.compile_times = not args.quick
    device = harness.device(args, ap)
    try:
        chosen, skipped = PROVIDERS.select(args.providers.split(",") if args.providers else None, device)
    except ValueError as e:
        ap.error(f"--providers: {e}")
    runners = {p.name: p.make(device) for p in chosen}
    env = harness.environment(device)
    harness.log(f"bench_train: {env['device']}, torch {env['torch']}, {env['threads']} threads; "
                f"providers {', '.join(f'{n}@{r.where(device)}' for n, r in runners.items())}")
    for n, why in skipped.items():
        harness.log(f"  not run: {n}: {why.splitlines()[0]}")

    rec = measure(runners, skipped, device, args)
    harness.finish(env)
    report(rec, env, device)
    # The file name says what differs from the default run: G list, thread count, --quick.
    tag = (("-G" + "_".join(map(str, args.G))) if args.G else "") + (f"-{args.threads}t" if args.threads else "") \
        + ("-float64" if args.dtype == "float64" else "") + ("-quick" if args.quick else "")
    path = harness.write_json(args.out, "train", env, rec, script=__file__, argv=argv, tag=tag)
    print(f"\nwrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
