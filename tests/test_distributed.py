"""torchrun on the CPU (gloo, loopback): results do not depend on the world size; a killed
rank fails the job.  Every launch is bounded in time."""
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
WORKER = str(ROOT / "tests" / "dist_worker.py")


def torchrun(nproc: int, *args: str, env_extra=None, timeout=240):
    env = {k: v for k, v in os.environ.items() if k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR",
                                                              "MASTER_PORT", "TRITON_INTERPRET")}
    env.update({"OMP_NUM_THREADS": "1", "CUDA_VISIBLE_DEVICES": ""}, **(env_extra or {}))
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={nproc}",
           "--monitor-interval=0.5", WORKER, *args]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=env, cwd=ROOT)


@pytest.mark.slow
def test_default_train_is_byte_identical_for_world_size_1_and_2(tmp_path):
    """The issue's bar: `fastmlp train` with its defaults (1024 seeds of the lab, 2500 epochs).
    Both runs see the same (empty) compile cache: auto picks by what is compiled, and another
    test compiling the lab program between the two runs once gave them different backends."""
    runs = {}
    cache = {"FASTMLP_CACHE_DIR": str(tmp_path / "cache"), "FASTMLP_BACKGROUND_COMPILE": "0"}
    for world in (1, 2):
        out = tmp_path / f"w{world}"
        r = torchrun(world, "train", "--out", str(out), "--no-progress", env_extra=cache)
        assert r.returncode == 0, r.stderr[-3000:]
        runs[world] = out
    a = torch.load(runs[1] / "losses.pt")
    b = torch.load(runs[2] / "losses.pt")
    assert a.keys() == b.keys()
    for key in a:  # tensors bitwise, the rest (format, record_every, eps, ...) equal
        if isinstance(a[key], torch.Tensor):
            assert a[key].dtype == b[key].dtype and torch.equal(a[key], b[key]), key
        else:
            assert a[key] == b[key], key
    s1 = json.loads((runs[1] / "summary.json").read_text())
    s2 = json.loads((runs[2] / "summary.json").read_text())
    assert s1["final_loss_quantiles"] == s2["final_loss_quantiles"]
    assert s1["world_size"] == 1 and s2["world_size"] == 2
    assert s1["backend"] == s2["backend"]
    assert sorted(p.name for p in runs[1].iterdir()) == sorted(p.name for p in runs[2].iterdir())


def test_python_api_under_a_users_process_group(tmp_path):
    single = tmp_path / "single.pt"
    double = tmp_path / "double.pt"
    for world, path in ((1, single), (2, double)):
        r = torchrun(world, "--api", str(path))
        assert r.returncode == 0, r.stderr[-3000:]
    a, b = torch.load(single), torch.load(double)
    assert (a["world"], b["world"]) == (1, 2)
    for key in ("losses", "final_loss", "diverged"):
        assert torch.equal(a[key], b[key]), key
    for wa, wb in zip(a["weights"], b["weights"]):
        assert torch.equal(wa, wb)
    # snapshots of networks from both ranks: every rank's entries reach the result
    assert a["snapshot_epochs"] == b["snapshot_epochs"] == [0, 100, 200, 300]
    for sa, sb in zip(a["snapshots"], b["snapshots"]):
        assert torch.equal(sa, sb)
    assert torch.equal(a["snapshots"][2][-1], a["weights"][2][[199, 3, 130, 64]])  # the last = trained


def test_killed_rank_fails_the_job_and_leaves_no_result(tmp_path):
    out = tmp_path / "run"
    t = time.monotonic()
    r = torchrun(2, "train", "--epochs", "200000", "--seeds", "4096", "--out", str(out), "--no-progress",
                 env_extra={"FASTMLP_TEST_KILL_RANK": "1", "FASTMLP_TEST_KILL_AFTER": "3"}, timeout=120)
    elapsed = time.monotonic() - t
    assert r.returncode != 0
    assert elapsed < 60, f"the job took {elapsed:.0f} s to fail"
    assert "SIGKILL" in r.stderr or "Signal 9" in r.stderr or "exitcode: -9" in r.stderr, r.stderr[-2000:]
    assert not (out / "summary.json").exists()  # nothing is marked complete


SWEEP = ["sweep", "--hidden", "5,3", "4", "--lr", "0.25,1", "--seeds", "64", "--epochs", "150", "--no-plots",
         "--no-progress"]


def _configs(folder: Path) -> dict:
    out = {}
    for path in sorted((folder / "configs").iterdir()):
        rec = torch.load(path, weights_only=False)
        out[path.name] = [rec["final_loss"], rec["diverged"], rec["epochs_to_eps"], *rec["weights"], *rec["biases"]]
    return out


def _table(path: Path) -> list[dict]:
    """results.csv without its timing columns (wall time differs between runs, of course)."""
    import csv

    with open(path) as f:
        return [{k: v for k, v in row.items() if "time" not in k} for row in csv.DictReader(f)]


def test_sweep_is_world_size_independent_and_resumes_across_world_sizes(tmp_path):
    one, two = tmp_path / "w1", tmp_path / "w2"
    r = torchrun(1, *SWEEP, "--out", str(one))
    assert r.returncode == 0, r.stderr[-3000:]
    r = torchrun(2, *SWEEP, "--out", str(two))
    assert r.returncode == 0, r.stderr[-3000:]
    assert r.stdout.count("sweep done") == 1  # rank 0 alone reports
    a, b = _configs(one), _configs(two)
    assert a.keys() == b.keys() and len(a) == 4
    for name in a:
        for ta, tb in zip(a[name], b[name]):
            assert torch.equal(ta, tb), name  # bitwise
    assert _table(one / "results.csv") == _table(two / "results.csv")
    # Lose one configuration of the two-rank sweep, resume it on one rank: it is retrained
    # (only it), and everything equals the one-rank sweep again.
    victim = sorted((two / "configs").iterdir())[0]
    victim.unlink()
    r = torchrun(1, *SWEEP, "--out", str(two))
    assert r.returncode == 0, r.stderr[-3000:]
    assert "resuming" in r.stdout
    c = _configs(two)
    for name in a:
        for ta, tc in zip(a[name], c[name]):
            assert torch.equal(ta, tc), name
