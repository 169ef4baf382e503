"""The benchmark scripts run (smoke mode) and write their JSON; numbers are measured by running
them, not here.  The harness they share (bench/harness.py) is checked directly."""
import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

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


def _run(args, tmp_path, timeout=300):
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    out = subprocess.run([sys.executable, *args, "--out", str(tmp_path)], capture_output=True, text=True,
                         timeout=timeout, cwd=ROOT, env=env)
    assert out.returncode == 0, out.stderr[-3000:]
    return out.stdout


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


@pytest.mark.slow
def test_bench_kernels_and_fused_smoke(tmp_path):
    """Every step of the two CUDA scripts, in Triton's interpreter (measures nothing)."""
    _run(["bench/bench_kernels.py", "--smoke"], tmp_path)
    data = _record(tmp_path, "kernels-*-smoke.json")
    assert len(data["rows"]) == 9 and data["gpu"] == "cpu-interpreter-smoke"  # gpu_check.sh reads "gpu"
    stdout = _run(["bench/bench_fused.py", "--smoke"], tmp_path)
    assert "G=64: blocks of" in stdout  # the line gpu_check.sh prints
    data = _record(tmp_path, "fused-*-smoke.json")
    assert {r["provider"] for r in data["rows"]} == {"fused", "fused-1", "fused-tiles", "triton", "torch"}


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
