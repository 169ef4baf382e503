"""The run folder of `fastmlp train` (fastmlp.results.save_run): every file, all or nothing.

The last tests kill `fastmlp train` with SIGKILL inside its write phase, at each step of it and
at random instants, and check that the folder is then the old run, byte for byte, or the new one,
complete: never a mix, never a stale file.
"""
import json
import os
import random
import select
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from fastmlp import Population, results, train
from fastmlp.results import check_run_folder, is_run_folder, recover_run_folder, save_run
from fastmlp.validate import ArgumentError
from tests.conftest import five_points

ROOT = Path(__file__).resolve().parents[1]
CONFIG = {"dataset": "test"}


def _result(n_in=3, seeds=8, epochs=20, hidden=(3,)):
    """A small trained run; 3 inputs (no boundaries.png, the slow figure) unless asked."""
    x, y = five_points()
    if n_in != 2:
        x = torch.cat([x, x[:, :1] * 0.5], dim=1)[:, :n_in]
    pop = Population([n_in, *hidden, 1], seeds)
    return train(x, y, pop, epochs, 0.25, backend="torch", progress=False), x, y


def _snapshot(folder: Path) -> dict:
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir())}


def _hidden(parent: Path) -> list[str]:
    return sorted(p.name for p in parent.iterdir() if p.name.startswith("."))


def _assert_complete(folder: Path, epochs: int, seeds: int) -> dict:
    """A run folder holding exactly the files its summary lists, each one whole."""
    summary = json.loads((folder / "summary.json").read_text())
    assert sorted(summary["files"]) == sorted(p.name for p in folder.iterdir())
    assert torch.load(folder / "losses.pt")["losses"].shape == (seeds, epochs)
    assert len(Population.load(folder / "population.pt")) == seeds
    for name in summary["files"]:
        if name.endswith(".png"):
            assert (folder / name).read_bytes()[-8:-4] == b"IEND", name  # not cut short
    return summary


def test_save_run_writes_every_file_it_lists(tmp_path):
    result, x, y = _result()
    summary = save_run(result, x, y, tmp_path / "run", CONFIG)
    assert summary["files"] == ["summary.json", "losses.pt", "population.pt", "loss_curves.png"]
    _assert_complete(tmp_path / "run", 20, 8)
    assert _hidden(tmp_path) == []  # no temporary folder left beside it
    mode = (tmp_path / "run").stat().st_mode & 0o777
    umask = os.umask(0o022)
    os.umask(umask)
    assert mode == 0o777 & ~umask  # a plain mkdir's, not mkdtemp's 0700


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_the_trained_population_is_kept_bit_for_bit(tmp_path, dtype):
    x, y = five_points()
    pop = Population([2, 4, 3, 1], [7, 3, 11, 1000], init="normal:0.5", gain=1.5, dtype=dtype)
    result = train(x, y, pop, 30, 0.5, backend="torch", progress=False)
    save_run(result, x, y, tmp_path / "run", CONFIG, n_boundaries=2)
    loaded = Population.load(tmp_path / "run" / "population.pt")
    assert loaded.sizes == pop.sizes and loaded.dtype == dtype and loaded.gain == 1.5
    assert str(loaded.init) == str(pop.init) and torch.equal(loaded.seeds, pop.seeds.cpu())
    for a, b in zip(loaded.weights + loaded.biases, result.population.weights + result.population.biases):
        assert a.dtype == b.dtype and torch.equal(a, b)  # bitwise: the trained parameters
    assert torch.equal(loaded.predict(x), result.population.predict(x))


def test_a_previous_run_is_refused_unless_overwrite(tmp_path):
    result, x, y = _result()
    out = tmp_path / "run"
    save_run(result, x, y, out, CONFIG)
    before = _snapshot(out)
    with pytest.raises(ArgumentError, match="holds a previous run") as info:
        save_run(result, x, y, out, CONFIG)
    assert info.value.arg == "out" and _snapshot(out) == before
    with pytest.raises(ArgumentError, match="holds a previous run"):
        check_run_folder(out)
    assert check_run_folder(out, overwrite=True) == out.resolve()


@pytest.mark.parametrize("exchange", [True, False], ids=["swap", "two-renames"])
def test_overwrite_replaces_the_whole_folder(tmp_path, monkeypatch, exchange):
    if not exchange:
        monkeypatch.setattr(results, "_exchange", lambda a, b: False)
    out = tmp_path / "run"
    result, x, y = _result(n_in=2)  # 2-D inputs: boundaries.png
    save_run(result, x, y, out, CONFIG)
    (out / "notes.txt").write_text("in the old folder")
    result3, x3, y3 = _result(n_in=3, seeds=4, epochs=7)  # 3 inputs: no boundaries.png
    summary = save_run(result3, x3, y3, out, CONFIG, overwrite=True)
    assert "boundaries.png" not in summary["files"]
    assert not (out / "boundaries.png").exists() and not (out / "notes.txt").exists()
    _assert_complete(out, 7, 4)
    assert _hidden(tmp_path) == []


def test_a_folder_that_holds_no_run_is_never_replaced(tmp_path):
    result, x, y = _result()
    out = tmp_path / "project"
    out.mkdir()
    (out / "thesis.tex").write_text("years of work")
    for overwrite in (False, True):
        with pytest.raises(ArgumentError, match="holds no run"):
            save_run(result, x, y, out, CONFIG, overwrite=overwrite)
    assert _snapshot(out) == {"thesis.tex": b"years of work"} and _hidden(tmp_path) == []


def test_an_empty_folder_is_written(tmp_path):
    result, x, y = _result()
    (tmp_path / "run").mkdir()
    save_run(result, x, y, tmp_path / "run", CONFIG)
    _assert_complete(tmp_path / "run", 20, 8)


def test_a_link_to_a_folder_keeps_the_link(tmp_path):
    result, x, y = _result()
    save_run(result, x, y, tmp_path / "real", CONFIG)
    (tmp_path / "latest").symlink_to("real")
    save_run(result, x, y, tmp_path / "latest", CONFIG, overwrite=True)
    assert (tmp_path / "latest").is_symlink() and is_run_folder(tmp_path / "real")
    assert _hidden(tmp_path) == []


def test_an_error_while_writing_leaves_the_old_folder(tmp_path, monkeypatch):
    result, x, y = _result()
    out = tmp_path / "run"
    save_run(result, x, y, out, CONFIG)
    before = _snapshot(out)

    def broken(step):
        if step == "wrote loss_curves.png":
            raise OSError(28, "No space left on device")

    monkeypatch.setattr(results, "_after", broken)
    with pytest.raises(OSError, match="No space"):
        save_run(result, x, y, out, CONFIG, overwrite=True)
    assert _snapshot(out) == before and _hidden(tmp_path) == []


def test_zero_epochs_write_nothing(tmp_path):
    x, y = five_points()
    result = train(x, y, Population([2, 3, 1], 2), 0, 0.25, backend="torch", progress=False)
    with pytest.raises(ArgumentError, match="at least one epoch") as info:
        save_run(result, x, y, tmp_path / "run", CONFIG)
    assert info.value.arg == "epochs" and list(tmp_path.iterdir()) == []


def _dead_pid() -> int:
    p = subprocess.Popen([sys.executable, "-c", "pass"])
    p.wait()
    return p.pid


def _interrupted_move(tmp_path, complete_new: bool):
    """The state a kill between the two renames leaves: no folder, the old one and the new one hidden."""
    result, x, y = _result()
    old, new = tmp_path / "old", tmp_path / "new"
    save_run(result, x, y, old, CONFIG)
    result3, x3, y3 = _result(n_in=3, seeds=4, epochs=7)
    save_run(result3, x3, y3, new, CONFIG)
    if not complete_new:
        (new / "losses.pt").unlink()
    tag = f"{_dead_pid()}-abc123"
    old.rename(tmp_path / f".run.old-{tag}")
    new.rename(tmp_path / f".run.tmp-{tag}")
    return tmp_path / "run"


def test_recovery_completes_an_interrupted_move(tmp_path):
    out = _interrupted_move(tmp_path, complete_new=True)
    assert not out.exists()
    recover_run_folder(out)
    _assert_complete(out, 7, 4)  # rolled forward: the new run
    assert _hidden(tmp_path) == []


def test_recovery_puts_the_old_run_back_when_the_new_one_is_not_whole(tmp_path):
    out = _interrupted_move(tmp_path, complete_new=False)
    check_run_folder(out, overwrite=True)  # every check recovers first
    _assert_complete(out, 20, 8)
    assert _hidden(tmp_path) == []


def test_leftovers_of_a_running_process_are_left_alone(tmp_path):
    result, x, y = _result()
    sleeper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    try:
        mine = tmp_path / f".run.tmp-{sleeper.pid}-zz9"
        mine.mkdir()
        dead = tmp_path / f".run.tmp-{_dead_pid()}-zz9"
        dead.mkdir()
        other = tmp_path / f".runs.tmp-{_dead_pid()}-zz9"  # another folder's
        other.mkdir()
        save_run(result, x, y, tmp_path / "run", CONFIG)
        assert _hidden(tmp_path) == sorted([mine.name, other.name])
    finally:
        sleeper.kill()
        sleeper.wait()
    recover_run_folder(tmp_path / "run")
    assert _hidden(tmp_path) == [other.name]


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="renameat2 is Linux's")
def test_the_linux_swap_is_atomic_and_used(tmp_path):
    a, b = tmp_path / "a", tmp_path / "b"
    a.mkdir()
    b.mkdir()
    (a / "f").write_text("a")
    (b / "g").write_text("b")
    if not results._exchange(a, b):
        pytest.skip("this file system cannot swap folders (the two-rename path runs instead)")
    assert (a / "g").read_text() == "b" and (b / "f").read_text() == "a"


# -- SIGKILL in the write phase -----------------------------------------------------------
# One process imports fastmlp once and forks a child per trial: each child runs
# `fastmlp train` (fastmlp.cli.main) and is killed with SIGKILL, at a named step of its write
# phase (results._after is the hook) or at a random instant of it.  A fresh `python -m
# fastmlp train` costs ~3 s of imports; a forked child ~0.2 s.
ZYGOTE = r"""
import json, os, signal, sys, time
from fastmlp import cli, results
from fastmlp.plot import _common  # noqa: F401
import matplotlib.figure, matplotlib.backends.backend_agg  # noqa: F401  (what the plots import)
channel = os.fdopen(os.dup(1), "w", buffering=1)
quiet = os.open(os.devnull, os.O_WRONLY)
os.dup2(quiet, 1)
os.dup2(quiet, 2)
while True:
    line = sys.stdin.readline()
    if not line:
        break
    job = json.loads(line)
    pid = os.fork()
    if pid == 0:
        if not job["swap"]:
            results._exchange = lambda a, b: False
        def after(step, kill_at=job["kill_at"]):
            if step == "began":
                channel.write(json.dumps({"began": os.getpid(), "t": time.monotonic()}) + "\n")
            if step == kill_at:
                os.kill(os.getpid(), signal.SIGKILL)
        results._after = after
        try:
            rc = cli.main(job["argv"])
        except SystemExit as e:
            rc = e.code if isinstance(e.code, int) else 1
        except BaseException:
            rc = 99
        channel.write(json.dumps({"done": os.getpid(), "t": time.monotonic()}) + "\n")
        os._exit(rc)
    channel.write(json.dumps({"pid": pid}) + "\n")
    sys.stdin.readline()  # the test has killed it (or not): reap it only now, so that its pid stays ours
    _, status = os.waitpid(pid, 0)
    channel.write(json.dumps({"status": status, "signal": os.WTERMSIG(status) if os.WIFSIGNALED(status) else 0,
                              "code": os.WEXITSTATUS(status) if os.WIFEXITED(status) else None}) + "\n")
"""


class _Zygote:
    def __init__(self):
        self.proc = subprocess.Popen([sys.executable, "-c", ZYGOTE], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                     cwd=ROOT, env={**os.environ, "FASTMLP_BACKGROUND_COMPILE": "0"})
        self.buf = b""

    def _line(self, timeout: float) -> dict:
        deadline = time.monotonic() + timeout
        fd = self.proc.stdout.fileno()
        while b"\n" not in self.buf:
            left = deadline - time.monotonic()
            assert left > 0 and select.select([fd], [], [], left)[0], "the zygote or its child went silent"
            chunk = os.read(fd, 65536)
            assert chunk, "the zygote exited"
            self.buf += chunk
        line, self.buf = self.buf.split(b"\n", 1)
        return json.loads(line)

    def trial(self, argv, swap: bool, kill_at: str | None = None, delay: float | None = None) -> dict:
        """Run `fastmlp train argv` in a forked child; kill it at step ``kill_at``, or ``delay``
        seconds after its write phase began.  Returns the child's messages, its exit status,
        and when its write phase began and its run ended ("t_began", "t_done", here)."""
        self.proc.stdin.write((json.dumps({"argv": argv, "swap": swap, "kill_at": kill_at}) + "\n").encode())
        self.proc.stdin.flush()
        seen = {}

        def read():
            line = self._line(60)
            for key in ("began", "done"):
                if key in line:
                    seen[f"t_{key}"] = time.monotonic()
            seen.update(line)

        while "began" not in seen and "done" not in seen:
            read()
        if delay is not None and "began" in seen:
            time.sleep(delay)
            os.kill(seen["began"], signal.SIGKILL)  # ours, and not reaped yet: the zygote waits for us
        elif delay is None and kill_at is None:
            while "done" not in seen:
                read()
        self.proc.stdin.write(b"reap\n")
        self.proc.stdin.flush()
        while "status" not in seen:
            read()
        return seen

    def close(self):
        self.proc.stdin.close()
        self.proc.wait(timeout=30)


NEW = ["--dataset", None, "--seeds", "8", "--epochs", "20", "--hidden", "3", "--backend", "torch", "--no-progress",
       "--force"]
# The steps of the new run's write (3 inputs: no boundaries.png), as results._after names them.
STEPS_SWAP = ["began", "wrote losses.pt", "wrote population.pt", "wrote loss_curves.png", "wrote summary.json",
              "flushed", "moved", "removed the old folder"]
STEPS_RENAMES = STEPS_SWAP[:6] + ["moved the old folder aside"] + STEPS_SWAP[6:]


def _check_after_kill(out: Path, old: dict, swap: bool) -> str:
    """The folder is the old run byte for byte, or the new run complete; returns which."""
    if not out.exists():
        assert not swap, "no folder at all, although the swap is one step"
        recover_run_folder(out)  # what the next `fastmlp train` does first
    found = _snapshot(out)
    if found == old:
        return "old"
    summary = _assert_complete(out, 20, 8)
    assert summary["config"]["dataset"].startswith("csv:") and "boundaries.png" not in found
    return "new"


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs fork and SIGKILL")
def test_sigkill_in_the_write_phase_leaves_the_old_run_or_the_new_one(tmp_path):
    csv = tmp_path / "three.csv"
    csv.write_text("a,b,c,label\n0,0,0,1\n1,0,0,0\n0,-1,1,0\n-1,0,0,0\n0,1,1,0\n")
    out = tmp_path / "runs" / "run"
    argv = ["train", "--out", str(out), *NEW]
    argv[argv.index(None)] = f"csv:{csv}"
    result, x, y = _result(n_in=2, seeds=4, epochs=10, hidden=(2,))  # the old run: 2-D, with boundaries.png
    pristine = tmp_path / "pristine"
    save_run(result, x, y, pristine, {"dataset": "five_points"})
    old = _snapshot(pristine)
    rng = random.Random(12)
    zygote = _Zygote()
    outcomes = []
    try:
        def reset():
            shutil.rmtree(out, ignore_errors=True)
            shutil.copytree(pristine, out)

        # every step, on both ways of moving the folder into place
        for swap, steps in ((True, STEPS_SWAP), (False, STEPS_RENAMES)):
            for step in steps:
                reset()
                seen = zygote.trial(argv, swap=swap, kill_at=step)
                assert seen["signal"] == signal.SIGKILL, (step, seen)
                # the new run is in place from the move on (from the first rename on, for two
                # renames: no folder for a moment, and the next write completes the move)
                expected = "new" if steps.index(step) >= steps.index("flushed") + 1 else "old"
                assert _check_after_kill(out, old, swap) == expected, step
        # random instants of the write phase, measured first on a run that is not killed
        reset()
        seen = zygote.trial(argv, swap=True)
        assert seen["code"] == 0, seen
        window = seen["t_done"] - seen["t_began"]
        for k in range(8):
            reset()
            swap = k % 2 == 0
            seen = zygote.trial(argv, swap=swap, delay=rng.uniform(0, window))
            outcomes.append(_check_after_kill(out, old, swap))
        # a write after all those kills: the folder is the new run and nothing is left beside it
        reset()
        seen = zygote.trial(argv, swap=True)
        assert seen["code"] == 0
        _assert_complete(out, 20, 8)
        assert _hidden(out.parent) == []
    finally:
        zygote.close()
    print(f"write phase {window * 1e3:.0f} ms; random kills left: {outcomes}")


def _can_swap(tmp_path) -> bool:
    a, b = tmp_path / ".swap-a", tmp_path / ".swap-b"
    a.mkdir()
    b.mkdir()
    try:
        return results._exchange(a, b)
    finally:
        a.rmdir()
        b.rmdir()


@pytest.mark.skipif(not hasattr(signal, "SIGKILL"), reason="needs SIGKILL")
def test_sigkill_of_a_real_fastmlp_train_process(tmp_path):
    # The same, through the installed entry point (python -m fastmlp), at random instants
    # after the "training" line: inside training, the writes or the moves.
    csv = tmp_path / "three.csv"
    csv.write_text("a,b,c,label\n0,0,0,1\n1,0,0,0\n0,-1,1,0\n-1,0,0,0\n0,1,1,0\n")
    out = tmp_path / "run"
    result, x, y = _result(seeds=4, epochs=10, hidden=(2,))
    save_run(result, x, y, out, {"dataset": "five_points"})
    old = _snapshot(out)  # 3 inputs like the new run, but 4 seeds and 10 epochs
    argv = [sys.executable, "-m", "fastmlp", "train", "--out", str(out), *NEW]
    argv[argv.index(None)] = f"csv:{csv}"
    rng = random.Random(3)
    for _ in range(2):
        proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, cwd=ROOT,
                                env={**os.environ, "FASTMLP_BACKGROUND_COMPILE": "0"})
        assert proc.stdout.readline().startswith(b"training ")
        time.sleep(rng.uniform(0.05, 0.4))
        proc.kill()
        proc.wait(timeout=30)
        proc.stdout.close()
        state = _check_after_kill(out, old, swap=_can_swap(tmp_path))
        if state == "new":
            break


def test_a_run_that_appears_meanwhile_is_never_replaced_and_this_run_is_kept(tmp_path, monkeypatch):
    # Another `fastmlp train` into the same --out finished while this one trained: without
    # overwrite its folder stays, and this run is kept beside it instead of being lost.
    result, x, y = _result(epochs=5)
    other, _, _ = _result(epochs=7)
    out = tmp_path / "run"

    def meanwhile(step):
        if step == "flushed" and not out.exists():
            out.mkdir()  # (so that the nested write below does not come here again)
            save_run(other, x, y, out, CONFIG)

    monkeypatch.setattr(results, "_after", meanwhile)
    with pytest.raises(ArgumentError, match="this run was kept in") as e:
        save_run(result, x, y, out, CONFIG)
    monkeypatch.setattr(results, "_after", lambda step: None)
    kept = Path(str(e.value).split("kept in ")[1].split(" instead")[0])
    assert kept.parent == tmp_path and kept.name == f"run-{os.getpid()}"
    _assert_complete(kept, 5, 8)
    _assert_complete(out, 7, 8)  # the other run, untouched
    assert _hidden(tmp_path) == []


def test_without_overwrite_the_move_itself_refuses_a_filled_folder(tmp_path, monkeypatch):
    # The narrower race: the folder fills between the last check and the move.  The move is one
    # plain rename, which the system refuses over a non-empty folder.
    result, x, y = _result(epochs=5)
    other, _, _ = _result(epochs=7)
    out = tmp_path / "run"
    check = results._check_replaceable

    def check_then_fill(path, text, overwrite):
        check(path, text, overwrite)
        if not path.exists():
            monkeypatch.setattr(results, "_check_replaceable", check)
            save_run(other, x, y, out, CONFIG)

    save_run(result, x, y, tmp_path / "warm", CONFIG)  # (imports and figures done once)
    monkeypatch.setattr(results, "check_run_folder", lambda o, ow=False: Path(os.path.realpath(o)))
    monkeypatch.setattr(results, "_check_replaceable", check_then_fill)
    with pytest.raises(ArgumentError, match="filled by another process while this one wrote; this run was kept"):
        save_run(result, x, y, out, CONFIG)
    _assert_complete(out, 7, 8)
    _assert_complete(tmp_path / f"run-{os.getpid()}", 5, 8)
