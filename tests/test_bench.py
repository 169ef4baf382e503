"""The benchmark scripts run (smoke mode) and write their JSON; numbers are measured by running
them, not here.  The harness they share (bench/harness.py) is checked directly."""
import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]


def _harness():
    spec = importlib.util.spec_from_file_location("bench_harness", ROOT / "bench" / "harness.py")
    mod = sys.modules[spec.name] = importlib.util.module_from_spec(spec)  # dataclasses look it up
    saved = list(sys.path)
    try:
        spec.loader.exec_module(mod)
    finally:
        sys.path[:] = saved  # it puts the checkout first, for the scripts
    return mod


def _bench_module(name: str):
    """bench/<name>.py as a module (it imports ``harness`` from bench/, which puts the checkout first)."""
    spec = importlib.util.spec_from_file_location(f"bench_{name}", ROOT / "bench" / f"{name}.py")
    mod = sys.modules[spec.name] = importlib.util.module_from_spec(spec)
    saved = list(sys.path)
    sys.path.insert(0, str(ROOT / "bench"))
    try:
        spec.loader.exec_module(mod)
    finally:
        sys.path[:] = saved
    return mod


def _env():
    # XLA_PYTHON_CLIENT_PREALLOCATE: where JAX has a GPU (the H200 image), bench_train's jax provider
    # would otherwise take 75% of its memory from the other test workers.
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    env["XLA_PYTHON_CLIENT_PREALLOCATE"] = "false"
    return env


def _run(args, tmp_path, timeout=300, check=True):
    out = subprocess.run([sys.executable, *args, "--out", str(tmp_path)], capture_output=True, text=True,
                         timeout=timeout, cwd=ROOT, env=_env())
    if check:
        assert out.returncode == 0, out.stderr[-3000:]
        return out.stdout
    return out


def _record(tmp_path, pattern):
    (path,) = tmp_path.glob(pattern)
    data = json.loads(path.read_text())
    assert list(data)[:3] == ["bench", "command", "environment"]
    assert data["command"].startswith("python bench/")
    return data


def test_bench_train_quick_with_every_provider(tmp_path):
    """A smoke run of bench_train with every provider: the GPU ones are named as not run, fused-cpu
    runs where numba imports (with its cold/warm compile probe), jax where JAX imports (else it is
    reported as not run)."""
    # the compile probe on the cheapest program ([2, 1]: the lab network's cold compile is ~5 s)
    stdout = _run(["bench/bench_train.py", "--quick", "--compile-times", "--compile-sizes", "2,1"], tmp_path,
                  timeout=600)
    assert "torch/bmm" in stdout and "not run" in stdout
    data = _record(tmp_path, "train-*-quick.json")
    assert data["rows"] and "torch" in json.dumps(data["rows"])
    assert data["work_per_network_epoch"]["multiply_adds"] == 407 and data["work_per_network_epoch"]["params"] == 37
    assert {"loadavg_start", "loadavg_end", "device"} <= set(data["environment"])
    ran = {r["provider"] for r in data["rows"]}
    assert {"torch", "bmm"} <= ran
    assert all(c["ok"] for c in data["agreement"]), data["agreement"]
    try:
        import numba  # noqa: F401
    except ImportError:
        assert "fused-cpu" not in ran
    else:
        assert "fused-cpu" in ran and "fused-cpu/fastest peer" in stdout and "fused-cpu compile time" in stdout
        assert {"cold", "warm"} <= set(data["fused_compile"]), data["fused_compile"]
        assert data["fused_compile"]["network"] == [2, 1] and "compile" not in data["bar_fused"]
        assert set(data["bar_fused"]) >= {"1", "64"}  # JSON keys
    try:
        import jax  # noqa: F401
    except Exception:  # noqa: BLE001
        assert "import jax failed" in data["skipped"]["jax"]
    else:
        assert "jax" in ran and all(r["compile_s"] > 0 for r in data["rows"] if r["provider"] == "jax")


def test_bench_init_small(tmp_path):
    stdout = _run(["bench/bench_init.py", "--G", "1000", "--repeats", "1"], tmp_path)
    assert "bar < 2 s" in stdout
    data = _record(tmp_path, "init-*.json")
    assert [r["what"].split("(")[0] for r in data["rows"]] == ["Population", "torch.rand"]


# Triton's interpreter up to 3.6 turns a runtime int's __index__ into int(1-element array), which
# numpy >= 2.4 refuses (triton-lang/triton#9171; seen on the H200 image: Triton 3.6.0, numpy
# 2.5.2; Triton 3.9 has the fix).  A kernel with `for n in range(N)`, as kernels/linear_act.py has.
_INTERPRETER_PROBE = """
import numpy, torch, triton, triton.language as tl

@triton.jit
def _probe(p, n):
    for i in range(n):
        tl.store(p + i, i)

t = torch.zeros(3, dtype=torch.int32)
try:
    _probe[(1,)](t, 3)
except Exception as e:
    print("BROKEN", triton.__version__, numpy.__version__, repr(e))
else:
    print("OK", t.tolist())
"""


def _interpreter_broken(tmp_path) -> str | None:
    """Why Triton's interpreter cannot run the kernels' loops here (the reason to skip), or None."""
    probe = tmp_path / "interpreter_probe.py"  # a file: @triton.jit reads the kernel's source
    probe.write_text(_INTERPRETER_PROBE)
    out = subprocess.run([sys.executable, str(probe)], capture_output=True, text=True, timeout=120, cwd=tmp_path,
                         env={**_env(), "TRITON_INTERPRET": "1"})
    assert out.returncode == 0, out.stderr[-2000:]
    word, *rest = out.stdout.strip().splitlines()[-1].split(" ", 3)
    if word == "BROKEN" and "only 0-dimensional arrays" in rest[-1]:
        return (f"Triton {rest[0]}'s interpreter cannot run a loop over a runtime int with numpy {rest[1]} "
                f"(int() of a 1-element array, triton-lang/triton#9171): the --smoke runs need it")
    assert word == "OK", out.stdout  # broken in another way: say so, do not skip
    return None


@pytest.mark.slow
def test_bench_kernels_and_fused_smoke(tmp_path):
    """Every step of the two CUDA scripts.  With CUDA, on the GPU at small sizes: there the scripts
    run their real path, and the interpreter is no stand-in for it (gpu_check.sh times them at
    full size).  Without, in Triton's interpreter (--smoke; measures nothing), skipped where the
    interpreter itself cannot run (Triton 3.6 with numpy >= 2.4)."""
    if torch.cuda.is_available():
        _run(["bench/bench_kernels.py", "--G", "4096", "--quick"], tmp_path)
        data = _record(tmp_path, "kernels-*.json")
        assert len(data["rows"]) == 9 and data["gpu"] == torch.cuda.get_device_name()  # gpu_check.sh reads "gpu"
        stdout = _run(["bench/bench_fused.py", "--G", "4096", "--epochs", "50", "--slow-epochs", "2", "--repeats", "1"],
                      tmp_path)
        assert "G=4096: train() in blocks of" in stdout  # the line gpu_check.sh prints
        data = _record(tmp_path, "fused-*.json")
        assert {r["provider"] for r in data["rows"]} == {"fused", "fused-1", "fused-approx", "fused-tiles", "triton",
                                                        "torch"}
    else:
        why = _interpreter_broken(tmp_path)
        if why:
            pytest.skip(why)
        _run(["bench/bench_kernels.py", "--smoke"], tmp_path)
        data = _record(tmp_path, "kernels-*-smoke.json")
        assert len(data["rows"]) == 9 and data["gpu"] == "cpu-interpreter-smoke"  # gpu_check.sh reads "gpu"
        stdout = _run(["bench/bench_fused.py", "--smoke"], tmp_path)
        assert "G=64: train() in blocks of" in stdout  # the line gpu_check.sh prints
        data = _record(tmp_path, "fused-*-smoke.json")
        assert {r["provider"] for r in data["rows"]} == {"fused", "fused-1", "fused-tiles", "triton", "torch"}


def _oracle(losses, final_loss, horizon, final_spread):
    """A ``fastmlp.conditioning.Sensitivity`` as far as agree_fused.compare reads it: the loss
    curve held up to ``horizon``, the final loss held where ``final_spread`` is 0."""
    E = losses.shape[1]
    s = SimpleNamespace(losses=losses, final_loss=final_loss, final_spread=final_spread, margin=100.0,
                        horizon=lambda rtol: horizon.clone())
    s.final_stable = lambda rtol: final_spread == 0
    s.stable = lambda rtol: (horizon == E) & (final_spread == 0)
    return s


def _fused(losses, final_loss):
    """A TrainResult as far as agree_fused.compare reads it."""
    diverged = ~torch.isfinite(final_loss)
    return SimpleNamespace(losses=losses, final_loss=final_loss, diverged=diverged, backend="fused",
                           converged=lambda eps: (final_loss < eps) & ~diverged)


def test_agree_fused_criterion_fails_what_it_must():
    """The agreement criterion on made-up runs: a network off on its curve before its horizon
    fails the row, so does one off on a final loss the oracle says can be held, and a converged
    fraction shifted beyond the noise of the networks whose final loss cannot be held; a network
    off after its horizon, or on a final loss that cannot be held, is reported only."""
    A = _bench_module("agree_fused")
    G, E, rtol, eps = 8, 6, 1e-5, 0.01
    curve = torch.linspace(0.25, 0.005, E, dtype=torch.float64).repeat(G, 1)  # every network converges
    final = torch.full((G,), 0.004, dtype=torch.float64)
    horizon = torch.tensor([E] * 6 + [2, 3])  # networks 6 and 7: held up to epochs 2 and 3
    loose = torch.tensor([0.0] * 6 + [1.0, 1.0], dtype=torch.float64)  # ... and their final loss not at all

    def row(dcurve=None, dfinal=None, final_o=final, horizon=horizon, spread=loose):
        f_curve, f_final = curve.float().clone(), final_o.float().clone()
        for (g, e), v in (dcurve or {}).items():
            f_curve[g, e] += v
        for g, v in (dfinal or {}).items():
            f_final[g] += v
        return A.compare(_fused(f_curve, f_final), _oracle(curve, final_o, horizon, spread), rtol, eps)

    ok = row()
    assert ok["ok"] and ok["stable"] == 6 and ok["final_held"] == 6 and ok["final_diff_max"] < 1e-8, ok
    # float32 rounding of the curve is inside the tolerance; 1e-4 on a held curve is not.
    bad = row({(0, 4): 1e-4})
    assert not bad["ok"] and bad["curve_off_before_horizon"] == 1 and bad["curve_off_stable"] == 1, bad
    bad = row(dfinal={1: 1e-4})
    assert not bad["ok"] and bad["final_off_held"] == 1, bad
    # Network 6: off after its horizon (epoch 2) and on its final loss is reported, before it fails.
    after = row({(6, 4): 1e-2}, {6: 1e-2})
    assert after["ok"] and after["curve_off_after_horizon"] == 1 and after["final_off_not_held"] == 1, after
    before = row({(6, 1): 1e-2})
    assert not before["ok"] and before["curve_off_before_horizon"] == 1, before
    # Converged counts: two of two loose networks may flip (allowed +-Z sd); eight of eight may
    # not, though each is off only after its horizon.
    flips = row(dfinal={6: 0.01, 7: 0.01})
    assert flips["ok"] and flips["converged_diff_count"] == -2, flips
    all_loose = row(dfinal={g: 0.01 for g in range(G)}, horizon=torch.full((G,), 3), spread=torch.ones(G).double())
    assert all_loose["curve_off_before_horizon"] == 0 and all_loose["converged_diff_count"] == -8
    assert not all_loose["ok"] and 0 < all_loose["converged_allowed_count"] < 8, all_loose
    # Held final losses within the tolerance of eps may fall either side.
    near = torch.full((G,), eps * (1 - 1e-6), dtype=torch.float64)
    shifted = row(dfinal={g: 2e-8 for g in range(G)}, final_o=near)
    assert shifted["converged_boundary_held"] == 6 and shifted["converged_diff_count"] == -8 and shifted["ok"], shifted
    # A diverged network in one run and not in the other is off.
    assert not row(dfinal={2: float("nan")})["ok"]


@pytest.mark.slow
def test_agree_fused_cpu_smoke(tmp_path):
    """bench/agree_fused.py end to end on the CPU (backend="fused" is the numba program there):
    small, the lab's lr 0.25 must agree; the exit status and the last line match the JSON."""
    pytest.importorskip("numba")
    try:
        from fastmlp import conditioning  # noqa: F401
    except ImportError:
        pytest.skip("fastmlp.conditioning (the oracle's sensitivity measure) is not in this checkout")
    out = _run(["bench/agree_fused.py", "--seeds", "64", "--epochs", "200"], tmp_path, check=False)
    assert out.returncode in (0, 1), out.stderr[-3000:]
    data = _record(tmp_path, "agree-*-G64-E200.json")
    assert [r["row"] for r in data["rows"]] == ["lab", "spread"] and data["eps"] == 0.01
    lab = data["rows"][0]
    assert lab["ok"] and lab["G"] == 64 and lab["final_held"] > 0 and lab["final_off_held"] == 0, lab
    last = out.stdout.strip().splitlines()[-1]
    assert last == data["verdict"] and (out.returncode == 0) == data["ok"]
    assert last.startswith("fused agrees with the float64 oracle: yes" if data["ok"] else "FAIL: ")


def test_gpu_check_script_parses_and_plans_every_stage():
    """bench/gpu_check.sh: bash accepts it, and its dry run lists the stages, the whole suite included."""
    script = ROOT / "bench" / "gpu_check.sh"
    subprocess.run(["bash", "-n", str(script)], check=True)
    out = subprocess.run(["bash", str(script), "--dry-run"], capture_output=True, text=True, timeout=60, cwd=ROOT,
                         env={**_env(), "PYTHON": sys.executable})
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    assert any("bench/agree_fused.py --gpu" in l for l in lines)
    (pytest_line,) = [l for l in lines if " -m pytest " in l]
    assert pytest_line.rstrip().endswith(" tests/") and " -m cuda" not in pytest_line  # all of it
    for script_name in ("bench_fused.py", "bench_kernels.py", "bench_train.py"):
        assert any(f"bench/{script_name}" in l for l in lines), script_name
    assert subprocess.run(["bash", str(script), "--bogus"], capture_output=True, cwd=ROOT).returncode == 2


def test_roofline_counts_the_fused_kernel(tmp_path):
    stdout = _run(["bench/roofline.py"], tmp_path)
    assert "407 multiply-adds, 45 tanh/sigmoid" in stdout
    rows = _record(tmp_path, "roofline-sm90-2-5-3-1-N5-*.json")["rows"]
    assert [(r["variant"], r["fast_tanh"]) for r in rows] == [("unrolled", False), ("unrolled", True),
                                                              ("tiles", False), ("tiles", True)]
    for r in rows:
        assert r["stack"] == 0 and r["block_g"] == 128
        assert r["fp32"] >= 407 and r["instructions"] > r["fp32"]  # no fewer than the work needs
        assert r["seconds_lower_bound"] > 0
    unrolled_exp, unrolled_approx, tiles_exp, tiles_approx = rows
    # One MUFU per tanh.approx, two per exp2 form (exp2 and reciprocal): 45 activations.
    assert unrolled_approx["mufu"] == 45 and unrolled_exp["mufu"] == 90
    assert unrolled_approx["instructions"] < unrolled_exp["instructions"] < tiles_exp["instructions"]
    assert tiles_approx["instructions"] < tiles_exp["instructions"]
    # The bar on paper: the SASS-derived bound of the launcher's kernel allows
    # 2^20 networks x 2500 epochs in 0.1 s (a count of instructions, not a timing).
    assert unrolled_exp["seconds_lower_bound"] <= 0.1


def test_harness_providers_environment_table_and_writer(tmp_path):
    h = _harness()
    from fastmlp.results import environment

    table = h.Providers(h.Provider("a", "any device", object), h.Provider("g", "CUDA only", object, devices=("cuda",)),
                        h.Provider("n", "never", object, check=lambda d: "not here"))
    cpu = torch.device("cpu")
    chosen, skipped = table.select(None, cpu)
    assert [p.name for p in chosen] == ["a"] and set(skipped) == {"g", "n"} and skipped["n"] == "not here"
    assert [p.name for p in table.select(["a"], cpu)[0]] == ["a"]
    with pytest.raises(ValueError, match="unknown provider 'x'"):
        table.select(["x"], cpu)
    assert "  g  CUDA only" in table.help()

    env = h.environment(cpu)
    assert set(environment(cpu)) <= set(env)  # the library's record, extended
    assert env["device"].endswith(f"({os.cpu_count()} cores)") and "loadavg_start" in env
    assert h.table(["name", "x"], [["ab", 1], ["c", 22]], left=1).splitlines() == [
        "| name |  x |", "|------|---:|", "| ab   |  1 |", "| c    | 22 |"]
    assert [h.rate(r) for r in (767, 137_900, 4.96e6)] == ["767", "137.9k", "4.96M"]
    path = h.write_json(tmp_path, "demo", h.finish(env), {"rows": [1]}, script=str(ROOT / "bench" / "demo.py"),
                        argv=["--x", "1"], tag="-t")
    assert path.name == f"demo-{h.device_slug(env)}-{env['date'][:10]}-t.json"
    data = json.loads(path.read_text())
    assert data["command"] == "python bench/demo.py --x 1" and data["rows"] == [1]
    assert "loadavg_end" in data["environment"]


def test_roofline_cpu_counts_the_fused_program(tmp_path):
    pytest.importorskip("numba")
    stdout = _run(["bench/roofline_cpu.py", "--dtype", "float32", "--measure-G", "0"], tmp_path)
    assert "45 activations" in stdout
    (r,) = _record(tmp_path, "roofline-cpu-*-2_5_3_1-N5.json")["rows"]
    assert r["one_epoch_per_iteration"] and r["lanes_per_iteration"] in (8, 16)
    # No fewer FMA lane-ops than the work's multiply-adds (less what mul/add/sub may carry).
    ops = r["lane_ops_per_network_epoch"]
    assert ops["fma"] + ops["mul"] + ops["add/sub"] >= 407 and ops["div"] == 45


# ---- bench_train on the GPU (issue 18 part 5): devices, labels, the JAX provider ----------------
def test_bench_train_gpu_without_cuda_is_an_error_naming_the_flag(monkeypatch, tmp_path, capsys):
    """--gpu where there is no CUDA stops before any work, exit status 2, naming the flag: a
    GPU benchmark that quietly measured the CPU would be worse than none."""
    B = _bench_module("bench_train")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(SystemExit) as e:
        B.main(["--gpu", "--quick", "--providers", "func", "--out", str(tmp_path)])
    assert e.value.code == 2
    assert "--gpu: CUDA is not available" in capsys.readouterr().err
    assert not list(tmp_path.iterdir())
    for bad in (["--G", "0"], ["--epochs", "0"], ["--jax-precision", "tf32"]):
        with pytest.raises(SystemExit) as e:
            B.main([*bad, "--out", str(tmp_path)])
        assert e.value.code == 2 and bad[0] in capsys.readouterr().err


def test_bench_train_gpu_plan_and_device_labels():
    """What a --gpu run would time, and how its table names devices, checked without a GPU: the
    defaults (G up to 2**20 at 2500 epochs; the epoch-by-epoch providers over GPU_LOOP_EPOCHS),
    every provider's device in its label, and the one-launch kernel against its fastest peer."""
    B = _bench_module("bench_train")
    cuda, cpu = torch.device("cuda:0"), torch.device("cpu")
    assert B.default_sizes(cuda, False) == [(1, 2500), (1024, 2500), (65536, 2500), (2**20, 2500)]
    assert B.default_sizes(cpu, False) == [(G, B.DEFAULT_EPOCHS[G]) for G in B.DEFAULT_G]  # unchanged on the CPU
    assert B.default_sizes(cuda, False, [8192], 300) == [(8192, 300)] and B.default_sizes(cuda, True)[0] == (1, 20)
    runners = {n: B.PROVIDERS[n].make(cuda) for n in ("reference", "torch", "bmm", "func", "fused")}
    assert B.epochs_plan(runners, 2500, B.GPU_LOOP_EPOCHS) == {"reference": 100, "torch": 100, "bmm": 100, "func": 100,
                                                              "fused": 2500}
    assert B.epochs_plan(runners, 2500) == {"reference": 500, "torch": 2500, "bmm": 2500, "func": 2500, "fused": 2500}
    assert {n: r.where(cuda) for n, r in runners.items()} == dict.fromkeys(runners, "cuda:0")
    assert {r.where(cpu) for r in runners.values()} == {"cpu"}
    rows = [{"provider": p, "G": 2**20, "epochs": 2500 if p in ("fused", "jax") else 100, "extrapolated": False,
             "net_epochs_per_s": rate} for p, rate in (("fused", 2.52e10), ("func", 4.5e7), ("jax", 1.08e9))]
    labels = {"fused": "cuda:0", "func": "cuda:0", "jax": "cuda:0"}
    table = B.rate_table(rows, ["fused", "func", "jax"], labels=labels, lead="fused")
    assert "fused@cuda:0 (epochs)" in table and "jax@cuda:0 (epochs)" in table and "fused/fastest peer" in table
    assert "23.3x (jax)" in table
    assert B.lead_vs_peers(rows, "fused")[2**20]["peer"] == "jax"


def test_bench_train_jax_provider_says_why_it_cannot_run(monkeypatch):
    """No JAX: not run, saying so; a JAX without a GPU backend in a --gpu run: not run, saying
    that (never a silent fall back to its CPU); a JAX with the backend: run."""
    import types

    B = _bench_module("bench_train")
    cpu, cuda = torch.device("cpu"), torch.device("cuda")
    monkeypatch.setitem(sys.modules, "jax", None)  # import jax raises ImportError
    assert "import jax failed" in B.PROVIDERS.select(["jax"], cpu)[1]["jax"]
    fake = types.ModuleType("jax")
    fake.__version__ = "0.0-test"

    def devices(platform=None):
        if platform == "gpu":
            raise RuntimeError("Unknown backend: 'gpu' requested, but no platforms that are instances of gpu are present.")
        return ["TFRT_CPU_0"]

    fake.devices = devices
    monkeypatch.setitem(sys.modules, "jax", fake)
    chosen, skipped = B.PROVIDERS.select(["jax", "func"], cuda)
    assert [p.name for p in chosen] == ["func"]
    assert skipped["jax"].startswith("JAX 0.0-test has no gpu backend here") and "jax[cuda" in skipped["jax"]
    assert [p.name for p in B.PROVIDERS.select(["jax"], cpu)[0]] == ["jax"]
    assert B.jax_platform(cuda) == "gpu" and B.jax_platform(cpu) == "cpu"


def test_jax_provider_runs_where_its_label_says():
    """Where JAX is installed: the provider computes on jax.devices('cpu') in a CPU run (also where
    JAX's default device is a GPU) and agrees with the torch engine; with a GPU, on jax.devices('gpu')."""
    jax = pytest.importorskip("jax")
    B = _bench_module("bench_train")
    import fastmlp
    from trainers import FastmlpBackend, JaxScan  # bench/ is on sys.path: bench_train imported them

    pop = fastmlp.Population([2, 5, 3, 1], 4)
    x, y = B.X, B.Y
    base = FastmlpBackend(B.LR, "torch")
    bstate = base.prepare(pop, x, y)
    want = base.run(bstate, 5)
    platforms = ["cpu"] + (["gpu"] if torch.cuda.is_available() and any(d.platform == "gpu" for d in jax.devices())
                           else [])
    for platform in platforms:
        r = JaxScan(B.LR, torch.float32, platform)
        state = r.prepare(pop, x, y)
        got = r.run(state, 5)
        assert r.where() == ("cpu" if platform == "cpu" else f"cuda:{r.device.id}")
        assert {d.platform for p in state["out"] for a in p for d in a.devices()} == {platform}
        torch.testing.assert_close(got, want.cpu(), rtol=1e-5, atol=1e-7)


# ---- bench/roofline_gpu.py ---------------------------------------------------------------
def test_roofline_gpu_scheduler_model_and_control_bits():
    """The SASS control decoding (from the lab kernel's listing) and the scheduler model on bodies
    whose answer is known: FP32 at one issue per cycle, MUFU at one warp per 8 cycles, a stall of
    4 hidden by 4 warps, a MUFU result waited for by its consumer."""
    R = _bench_module("roofline_gpu")
    c = R.control(0x000FE20000400000)  # FMUL: stall 1, no scoreboards
    assert (c["stall"], c["wbar"], c["rbar"], c["wait"]) == (1, 7, 7, 0)
    c = R.control(0x0000620000000800)  # MUFU.EX2: sets scoreboard 1 for its result
    assert (c["stall"], c["wbar"]) == (1, 1)

    def ins(op, stall=1, wait=0, wbar=7):
        return {"op": op, "mods": "", "args": "", "guard": "", "addr": 0,
                "ctrl": {"stall": stall, "wait": wait, "wbar": wbar, "rbar": 7}}

    eff = lambda body, w, **k: R.simulate(body, w, **k)["issue_efficiency"]  # noqa: E731
    assert eff([ins("FFMA")] * 64, 4) == pytest.approx(1.0)
    assert eff([ins("MUFU")] * 64, 4) == pytest.approx(1 / 8, rel=0.02)
    assert eff([ins("FFMA", stall=4)] * 64, 1) == pytest.approx(0.25, rel=0.02)
    assert eff([ins("FFMA", stall=4)] * 64, 4) == pytest.approx(1.0, rel=0.02)
    # one MUFU (latency 20) whose result the next instruction waits for: 1 warp idles ~19 cycles
    body = [ins("MUFU", wbar=1), ins("FFMA", wait=0b10)] + [ins("FFMA")] * 30
    assert R.simulate(body, 1, mufu_latency=20)["cycles_per_epoch"] == pytest.approx(32 + 19, abs=1)
    assert eff(body, 4, mufu_latency=20, policy="round-robin") > 0.95  # four warps hide it


@pytest.mark.xdist_group("aot_fused")
def test_roofline_gpu_counts_a_small_network_from_its_aot_compile(tmp_path):
    """bench/roofline_gpu.py end to end on a network that compiles in a second (2-3-1 on three
    points: 12 activations per network-epoch): PTX and SASS counts of the epoch loop, the floors,
    the occupancy and the JSON.  The lab network's own table is bench/README.md's."""
    R = _bench_module("roofline_gpu")
    assert R.main(["--sizes", "2,3,1", "--N", "3", "--G", "4096", "--epochs", "100", "--tanh", "exp2",
                   "--out", str(tmp_path)]) == 0
    rec = _record(tmp_path, "roofline-gpu-sm90-2-3-1-N3-*.json")
    (row,) = rec["rows"]
    acts = rec["work"]["activations"]
    assert acts == 12 and row["tanh"] == "exp2 form" and row["variant"] == "unrolled"
    # one ex2 and one reciprocal (div.full in PTX, MUFU.RCP in SASS) per activation
    assert row["ptx_per_network_epoch"]["ex2"] == acts and row["ptx_per_network_epoch"]["div.full"] == acts
    assert row["sass_per_network_epoch"]["MUFU.EX2"] == acts and row["sass_per_network_epoch"]["MUFU.RCP"] == acts
    assert row["mufu"] == 2 * acts == row["work_mufu"]
    assert row["fp32"] >= rec["work"]["multiply_adds"] and row["instructions"] > row["fp32"] + row["mufu"]
    f = row["floors_s"]
    assert 0 < f["fma_pipe_s"] < f["issue_s"] and f["mufu_pipe_s"] > 0 and row["limit"] == "issue_s"
    assert row["occupancy"]["warps_per_sm"] >= 16 and row["resources"]["stack"] == 0
    assert 0 < row["critical_path"]["instructions"] < row["instructions"]
    assert 0.5 < row["model"]["runs"][0]["issue_efficiency"] <= 1.0
    assert "measured_s" not in row  # the H200's times belong to the lab network only


def test_roofline_gpu_flags(monkeypatch, tmp_path, capsys):
    R = _bench_module("roofline_gpu")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    for argv, flag in ((["--measure"], "--measure"), (["--measured", "fast=1"], "--measured"),
                       (["--root", str(tmp_path)], "--root"), (["--clock-ghz", "1980"], "--clock-ghz")):
        with pytest.raises(SystemExit) as e:
            R.main([*argv, "--out", str(tmp_path)])
        assert e.value.code == 2 and f"{flag}:" in capsys.readouterr().err, argv


def test_gpu_check_plans_the_peers_the_command_line_and_the_roofline():
    """bench/gpu_check.sh, the one prepared GPU command: bash accepts it, its dry run lists the GPU
    peers' benchmark, the command line end to end at 2**20, the statistics and the roofline."""
    script = ROOT / "bench" / "gpu_check.sh"
    subprocess.run(["bash", "-n", str(script)], check=True)
    out = subprocess.run(["bash", str(script), "--dry-run"], capture_output=True, text=True, timeout=60, cwd=ROOT,
                         env={**_env(), "PYTHON": sys.executable})
    assert out.returncode == 0, out.stderr
    text = out.stdout
    assert "bench/bench_train.py --providers torch,triton,fused,jax,func --gpu" in text
    assert "bench/bench_cli.py --device cuda --seeds 1048576" in text and "bench/bench_stats.py --device cuda" in text
    assert "bench/roofline_gpu.py --measure" in text and " -m pytest " in text
    assert subprocess.run(["bash", str(script), "--bogus"], capture_output=True, cwd=ROOT).returncode == 2
