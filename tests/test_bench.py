"""The benchmark scripts run (smoke mode) and write their JSON; numbers are measured by running
them, not here."""
import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _run(args, tmp_path, timeout=300):
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    out = subprocess.run([sys.executable, *args, "--out", str(tmp_path)], capture_output=True, text=True,
                         timeout=timeout, cwd=ROOT, env=env)
    assert out.returncode == 0, out.stderr[-3000:]
    return out.stdout


def test_bench_train_quick(tmp_path):
    stdout = _run(["bench/bench_train.py", "--quick"], tmp_path)
    assert "torch/bmm" in stdout and "not run" in stdout  # GPU providers are named as not run
    (path,) = tmp_path.glob("train-*.json")
    data = json.loads(path.read_text())
    assert data["rows"] and "torch" in json.dumps(data["rows"])


def test_roofline_counts_the_fused_kernel(tmp_path):
    stdout = _run(["bench/roofline.py"], tmp_path)
    assert "407 multiply-adds, 45 tanh/sigmoid" in stdout
    (path,) = tmp_path.glob("roofline-*.json")
    rows = json.loads(path.read_text())["rows"]
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
