#!/usr/bin/env python
"""Network-epochs per second vs G for several training providers, side by side in one run.

Every provider trains the lab network (2-5-3-1: tanh, tanh, sigmoid; MSE; full-batch gradient
descent) on the lab's five points with lr 0.25 in float32, starting from the same initial weights
(``fastmlp.Population``, seeds 0..G-1).  The providers are the table ``PROVIDERS`` below (``--help``
lists them; how each trains is in ``bench/trainers.py``): the lab's per-network loop, every
registered ``fastmlp`` backend (those that need CUDA only with ``--gpu``), and two baselines, plain
bmm and ``torch.func``.  A provider that cannot run here is reported as not run, with the reason.

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

import statistics
import sys

import harness
import instruments
import torch

import fastmlp
from fastmlp import engine
from fastmlp.architecture import Architecture
from fastmlp.datasets import five_points
from trainers import FastmlpBackend, FuncEnsemble, PlainBmm, ReferenceLoop

ARCH = Architecture((2, 5, 3, 1))
SIZES = list(ARCH.sizes)
LR = 0.25
DTYPE = torch.float32
X, Y = five_points()
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
ENGINE_OPS = ("linear_act_fwd", "output_delta", "delta_bwd", "grad_update")  # the torch engine's, profiled


def backend_provider(name: str) -> harness.Provider:
    """A registered fastmlp backend: where ``backend="auto"`` may pick it, and whether it takes this problem."""
    problem = engine.Problem(ARCH, X.shape[0], shared_data=True, dtype=DTYPE)

    def check(device):
        try:
            engine.select_backend(name, device, problem)
        except ValueError as e:  # fastmlp.validate.ArgumentError
            return str(e)
        return None

    devices = engine.get_backend(name).auto_devices
    what = f"fastmlp.train(..., backend={name!r})" + (f", on {'/'.join(devices)}" if devices else "")
    return harness.Provider(name, what, lambda: FastmlpBackend(LR, name), devices=devices, check=check)


# The registry's order is auto's, fastest first; the tables go from the CPU's backends to CUDA's.
_BACKENDS = [backend_provider(n) for n in reversed(engine.names()) if n != "auto"]
PROVIDERS = harness.Providers(
    harness.Provider("reference", f"the lab's loop, fastmlp.reference.train on one network after another "
                                  f"({REFERENCE_NETS} timed, the rate extrapolated: ~)",
                     lambda: ReferenceLoop(LR, REFERENCE_NETS)),
    *(p for p in _BACKENDS if p.devices is None),
    harness.Provider("bmm", "the same equations written plainly: baddbmm/bmm on contiguous [G, ...] tensors, "
                            "no autograd (the issue's baseline)", lambda: PlainBmm(LR)),
    harness.Provider("func", "PyTorch's ensembling idiom: stack_module_state, vmap(grad_and_value("
                             "functional_call)), manual SGD", lambda: FuncEnsemble(LR)),
    *(p for p in _BACKENDS if p.devices is not None),
)


# ---------------------------------------------------------------------------------------
# Measurements
# ---------------------------------------------------------------------------------------
def traffic_per_network_epoch(runner, x, y, G: int, device) -> dict:
    """Aten ops per epoch and operand bytes per network-epoch, from the difference of two runs."""
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


def time_row(runners: dict, G: int, main_epochs: int, x, y, device, repeats: int, warmup_epochs: int) -> list[dict]:
    """One G: warm every provider up, then ``repeats`` interleaved rounds.  Returns its rows."""
    pop = fastmlp.Population(SIZES, G, dtype=DTYPE, device=device)
    plan = {n: min(main_epochs, SLOW_EPOCHS) if r.slow else main_epochs for n, r in runners.items()}
    for n, r in runners.items():
        r.run(r.prepare(pop, x, y), min(warmup_epochs, plan[n]))

    def case(n, r):
        def prepare():
            state = r.prepare(pop, x, y)
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
        rows.append({"provider": n, "G": G, "epochs": plan[n], "timed_networks": nets, "extrapolated": nets < G,
                     "median_s": s.median, "times_s": s.wall, "process_cpu_s": s.cpu,
                     "net_epochs_per_s": work / s.median, "net_epochs_per_cpu_s": work / statistics.median(s.cpu),
                     "min_net_epochs_per_s": work / max(s.wall), "max_net_epochs_per_s": work / min(s.wall),
                     "final_loss_median": float(fin.median()),
                     "converged_fraction": float((fin < 0.01).float().mean())})
    return rows


def agreement(runners: dict, x, y, device, G: int, epochs: int) -> list[dict]:
    """Final losses and weights of every provider vs the torch engine, same initial weights."""
    pop = fastmlp.Population(SIZES, G, dtype=DTYPE, device=device)
    base = FastmlpBackend(LR, "torch")
    bstate = base.prepare(pop, x, y)
    bloss = base.run(bstate, epochs).float()
    bw = base.weights(bstate)
    out = []
    for name, r in runners.items():
        if name == "torch":
            continue
        state = r.prepare(pop, x, y)
        loss = r.run(state, epochs).float()
        k = loss.shape[0]
        loss_rel = ((loss - bloss[:k]).abs() / bloss[:k].abs().clamp_min(1e-30)).max().item()
        w_err = max(((w.float() - w0[:k].float()).abs().max() / w0[:k].float().abs().max()).item()
                    for w, w0 in zip(r.weights(state), bw))
        out.append({"provider": name, "networks": k, "epochs": epochs, "final_loss_max_rel_diff": loss_rel,
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


# ---------------------------------------------------------------------------------------
# Report
# ---------------------------------------------------------------------------------------
def rate_table(rows, names, key: str = "net_epochs_per_s") -> str:
    """net-epochs/s per G and provider (epochs per timed run), then the torch engine's ratios."""
    by = {(r["G"], r["provider"]): r for r in rows}
    ratio_cols = [n for n in names if n not in ("reference", "bmm", "func")]
    bases = [b for b in ("bmm", "func") if b in names]
    head = ["G"] + [f"{n} (epochs)" for n in names] + [f"{n}/{b}" for b in bases for n in ratio_cols]
    lines = []
    for G in sorted({r["G"] for r in rows}):
        cells = [G] + [f"{'~' if r['extrapolated'] else ''}{harness.rate(r[key])} ({r['epochs']})" if r else "-"
                       for r in (by.get((G, n)) for n in names)]
        for b in bases:
            for n in ratio_cols:
                r, rb = by.get((G, n)), by.get((G, b))
                cells.append(f"{r[key] / rb[key]:.2f}x" if r and rb else "-")
        lines.append(cells)
    return harness.table(head, lines)


def report(rec: dict, env: dict, device) -> None:
    rows, names, work, ceilings = rec["rows"], rec["providers"], rec["work_per_network_epoch"], rec["ceilings"]
    print(f"# bench_train: lab network {'-'.join(map(str, SIZES))}, five points, lr {LR}, float32, {device.type}")
    print(f"# {harness.describe(env)}")
    print(f"# net-epochs/s, median of {rec['repeats']} interleaved rounds after a warm-up; (epochs) per timed run; "
          f"~ = reference loop timed on {REFERENCE_NETS} networks and extrapolated linearly to G")
    for n, why in rec["skipped"].items():
        print(f"# not run: {n}: {why.splitlines()[0]}")
    print("\n" + rate_table(rows, names))
    if env["threads"] == 1 and device.type == "cpu":
        print("\n## the same runs per CPU-second (process_time; with one thread this discounts the time a busy "
              "machine gave to other processes)")
        print(rate_table(rows, names, "net_epochs_per_cpu_s"))

    print("\n## agreement with the torch engine (same initial weights)")
    for c in rec["agreement"]:
        print(f"  {c['provider']:>9}: {c['networks']} nets x {c['epochs']} epochs: final loss max rel diff "
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
    rows = []
    for G in args.G or ((1, 64, 1024) if args.quick else DEFAULT_G):
        epochs = args.epochs or (20 if args.quick else DEFAULT_EPOCHS.get(G, 2500 if G <= 8192 else 250))
        rows += time_row(runners, G, epochs, x, y, device, args.repeats, warmup)
    prof = None
    if args.profile:
        harness.log(f"profiling at G={args.profile}")
        prof = profile(runners, args.profile, x, y, device, 20 if args.quick else 200)
    return {"network": SIZES, "dataset": "five_points", "lr": LR, "dtype": "float32", "repeats": args.repeats,
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
    ap.add_argument("--profile", type=int, metavar="G", help="also profile every provider at this G")
    args = ap.parse_args(argv)
    device = harness.device(args, ap)
    try:
        chosen, skipped = PROVIDERS.select(args.providers.split(",") if args.providers else None, device)
    except ValueError as e:
        ap.error(f"--providers: {e}")
    runners = {p.name: p.make() for p in chosen}
    env = harness.environment(device)
    harness.log(f"bench_train: {env['device']}, torch {env['torch']}, {env['threads']} threads; "
                f"providers {list(runners)}")
    for n, why in skipped.items():
        harness.log(f"  not run: {n}: {why.splitlines()[0]}")

    rec = measure(runners, skipped, device, args)
    harness.finish(env)
    report(rec, env, device)
    # The file name says what differs from the default run: G list, thread count, --quick.
    tag = (("-G" + "_".join(map(str, args.G))) if args.G else "") + (f"-{args.threads}t" if args.threads else "") \
        + ("-quick" if args.quick else "")
    path = harness.write_json(args.out, "train", env, rec, script=__file__, argv=argv, tag=tag)
    print(f"\nwrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
