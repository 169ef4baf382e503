"""`fastmlp train` end to end on a small population, and its flag errors."""
import json
import os
import subprocess
import sys
import time

import pytest
import torch

from fastmlp.cli import main


def test_train_writes_run_folder(tmp_path, capsys):
    out = tmp_path / "run"
    assert main(["train", "--seeds", "16", "--epochs", "300", "--eps", "0.15", "--backend", "torch", "--out", str(out),
                 "--no-progress"]) == 0
    printed = capsys.readouterr().out
    assert "16 networks x 300 epochs" in printed and "converged" in printed
    summary = json.loads((out / "summary.json").read_text())
    assert summary["config"]["sizes"] == [2, 5, 3, 1] and summary["config"]["lr"] == 0.25
    assert summary["networks"] == 16 and summary["epochs"] == 300 and summary["backend"] == "torch"
    assert set(summary["final_loss_quantiles"]) == {"q00", "q05", "q25", "q50", "q75", "q95", "q100"}
    assert summary["environment"]["torch"] == torch.__version__
    saved = torch.load(out / "losses.pt")
    assert saved["losses"].shape == (16, 300) and saved["seeds"].tolist() == list(range(16))
    # the summary's numbers are those of the saved networks (16 seeds, 300 epochs: 4 below 0.15)
    converged = ((saved["final_loss"] < summary["eps"]) & ~saved["diverged"]).double().mean().item()
    assert summary["converged_fraction"] == converged and 0 < converged < 1
    assert summary["final_loss_quantiles"]["q50"] == pytest.approx(saved["final_loss"].double().median().item(),
                                                                   rel=0.1)
    for name in ("loss_curves.png", "boundaries.png"):
        assert (out / name).stat().st_size > 10_000


def test_flags_reach_the_population(tmp_path):
    out = tmp_path / "run"
    main(["train", "--seeds", "100:104", "--hidden", "4", "--epochs", "10", "--lr", "0.5", "--init", "normal:0.2",
          "--dtype", "float64", "--dataset", "xor", "--out", str(out), "--no-progress"])
    summary = json.loads((out / "summary.json").read_text())
    assert summary["config"]["sizes"] == [2, 4, 1] and summary["config"]["seeds"] == [100, 101, 102, 103]
    assert summary["config"]["init"] == "normal:0.2" and summary["config"]["dtype"] == "float64"


@pytest.mark.parametrize("argv,flag", [
    (["--hidden", "5,x"], "--hidden"),
    (["--hidden", "5,0"], "--hidden"),
    (["--seeds", "0"], "--seeds"),
    (["--seeds", "3,3"], "--seeds"),
    (["--epochs", "-3"], "--epochs"),
    (["--epochs", "0"], "--epochs"),  # was trained, then failed writing the loss curves
    (["--lr", "nan"], "--lr"),
    (["--init", "xavier"], "--init"),
    (["--init", "normal:x"], "--init"),
    (["--gain", "nan"], "--gain"),  # was reported as --init (the flag guessed from the message)
    (["--gain", "inf"], "--gain"),
    (["--backend", "cuda"], "--backend"),
    (["--dataset", "mnist"], "--dataset"),
    (["--dataset", "csv:/nonexistent/file.csv"], "--dataset"),
    (["--device", "tpu"], "--device"),
    (["--epochs", str(10**15)], "--epochs"),  # more epochs than int32 numbers (first_below on the device)
    (["--seeds", "100000", "--epochs", str(2 * 10**9), "--record-every", "1"], "--seeds"),  # 800 TB of history
    (["--record-every", "0"], "--record-every"),
    (["--out", "/proc/fastmlp-cannot-write-here"], "--out"),
])
def test_bad_flags_name_the_flag(argv, flag, tmp_path, capsys):
    with pytest.raises(SystemExit) as exc:
        main(["train", "--epochs", "1", "--seeds", "2", "--out", str(tmp_path / "run"), "--no-progress", *argv])
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert err.splitlines()[-1].startswith(f"fastmlp train: error: {flag}: "), err
    assert "Traceback" not in err


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks a machine without CUDA")
def test_missing_cuda_device_is_a_flag_error(tmp_path, capsys):
    # Was an AssertionError traceback on a CPU-only torch.
    with pytest.raises(SystemExit) as exc:
        main(["train", "--device", "cuda", "--epochs", "1", "--seeds", "2", "--out", str(tmp_path)])
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert err.splitlines()[-1].startswith("fastmlp train: error: --device: ") and "Traceback" not in err


def test_backend_not_available_is_a_flag_error(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("TRITON_INTERPRET", "0")
    if torch.cuda.is_available():
        pytest.skip("the triton backend runs here")
    with pytest.raises(SystemExit) as exc:
        main(["train", "--backend", "triton", "--epochs", "1", "--seeds", "2", "--out", str(tmp_path)])
    assert exc.value.code == 2
    assert capsys.readouterr().err.splitlines()[-1].startswith("fastmlp train: error: --backend: backend='triton' ")


def test_ctrl_c_exits_130_without_a_traceback(tmp_path):
    # A real SIGINT in the middle of training, in a child process.
    import signal

    proc = subprocess.Popen([sys.executable, "-m", "fastmlp", "train", "--epochs", "1000000", "--seeds", "64",
                             "--out", str(tmp_path / "r"), "--no-progress"], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    assert proc.stdout.readline().startswith("training ")  # the loop has started
    time.sleep(1.0)
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err
    assert "fastmlp train: interrupted" in err and "Traceback" not in err
    assert not (tmp_path / "r").exists()  # nothing half-written


def test_help_lists_every_backend(capsys):
    with pytest.raises(SystemExit):
        main(["train", "--help"])
    out = capsys.readouterr().out
    assert "{auto,fused,triton,torch}" in out


def test_module_entry_point():
    out = subprocess.run([sys.executable, "-m", "fastmlp", "train", "--help"], capture_output=True, text=True,
                         timeout=60)
    assert out.returncode == 0 and "--hidden" in out.stdout


# -- the run folder: refused before training, replaced only with --force, never mixed ------
SMALL = ["--seeds", "4", "--epochs", "5", "--hidden", "2", "--backend", "torch", "--no-progress"]


def _three_feature_csv(tmp_path, labels=(1, 0, 0, 0, 0)):
    path = tmp_path / "three.csv"
    rows = ["0,0,0", "1,0,1", "0,-1,0", "-1,0,1", "0,1,0"]
    path.write_text("a,b,c,label\n" + "".join(f"{r},{l}\n" for r, l in zip(rows, labels)))
    return path


def test_a_second_run_into_the_same_out_is_refused_before_training(tmp_path, capsys):
    out = tmp_path / "run"
    assert main(["train", *SMALL, "--out", str(out)]) == 0
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    capsys.readouterr()
    with pytest.raises(SystemExit) as exc:
        main(["train", *SMALL, "--lr", "1", "--out", str(out)])
    assert exc.value.code == 2
    printed = capsys.readouterr()
    assert printed.err.splitlines()[-1].startswith("fastmlp train: error: --out: ") and "--force" in printed.err
    assert "training" not in printed.out  # refused before any work
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before


def test_force_replaces_the_run_and_leaves_no_stale_file(tmp_path, capsys):
    # The case: a 2-D run (boundaries.png), then a 3-feature CSV into the same folder.
    out = tmp_path / "run"
    assert main(["train", *SMALL, "--out", str(out)]) == 0
    assert (out / "boundaries.png").exists()
    csv = _three_feature_csv(tmp_path)
    assert main(["train", *SMALL, "--dataset", f"csv:{csv}", "--force", "--out", str(out)]) == 0
    summary = json.loads((out / "summary.json").read_text())
    assert summary["config"]["sizes"] == [3, 2, 1]
    assert sorted(summary["files"]) == sorted(p.name for p in out.iterdir())
    assert not (out / "boundaries.png").exists()
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []
    assert f"wrote {out}/: " in capsys.readouterr().out


def _bad_out(case, tmp_path, monkeypatch) -> str:
    (tmp_path / "file.txt").write_text("x")
    (tmp_path / "here").mkdir()
    monkeypatch.chdir(tmp_path / "here")  # "" and "." name it (an empty folder: the old code wrote into it)
    if case == "not a run folder":
        (tmp_path / "project").mkdir()
        (tmp_path / "project" / "notes.txt").write_text("mine")
    if case == "unwritable parent":
        if os.geteuid() == 0:
            pytest.skip("root writes anywhere (the /proc case covers a parent that takes no folder)")
        (tmp_path / "ro").mkdir(mode=0o555)
    return {"empty": "", "a file": str(tmp_path / "file.txt"), "under a file": str(tmp_path / "file.txt" / "run"),
            "under /proc": "/proc/fastmlp-cannot-write-here", "unwritable parent": str(tmp_path / "ro" / "run"),
            "not a run folder": str(tmp_path / "project"), "the current directory": "."}[case]


OUT_CASES = ["empty", "a file", "under a file", "under /proc", "unwritable parent"]


@pytest.mark.parametrize("case", OUT_CASES + ["not a run folder", "the current directory"])
@pytest.mark.parametrize("force", [False, True], ids=["", "force"])
def test_bad_out_is_refused_before_training(case, force, tmp_path, capsys, monkeypatch):
    out = _bad_out(case, tmp_path, monkeypatch)
    t = time.perf_counter()
    with pytest.raises(SystemExit) as exc:
        main(["train", *SMALL, "--out", out] + (["--force"] if force else []))
    assert exc.value.code == 2
    printed = capsys.readouterr()
    assert printed.err.splitlines()[-1].startswith("fastmlp train: error: --out: "), printed.err
    assert "Traceback" not in printed.err and "training" not in printed.out
    assert time.perf_counter() - t < 1.0
    if case == "not a run folder":
        assert (tmp_path / "project" / "notes.txt").read_text() == "mine"
    assert list((tmp_path / "here").iterdir()) == []


@pytest.mark.parametrize("case", OUT_CASES)
def test_bad_out_is_refused_before_a_sweep(case, tmp_path, capsys, monkeypatch):
    out = _bad_out(case, tmp_path, monkeypatch)
    with pytest.raises(SystemExit) as exc:
        main(["sweep", "--hidden", "2", "--seeds", "4", "--epochs", "5", "--no-plots", "--no-progress", "--out", out])
    assert exc.value.code == 2
    printed = capsys.readouterr()
    assert printed.err.splitlines()[-1].startswith("fastmlp sweep: error: --out: "), printed.err
    assert printed.out == ""  # not even the plan
    assert list((tmp_path / "here").iterdir()) == []


@pytest.mark.parametrize("command", ["train", "sweep"])
@pytest.mark.parametrize("epochs", ["0", "-1"])
def test_epochs_below_one_are_refused_when_parsing(command, epochs, tmp_path, capsys):
    with pytest.raises(SystemExit) as exc:
        main([command, "--epochs", epochs, "--out", str(tmp_path / "run")])
    assert exc.value.code == 2
    printed = capsys.readouterr()
    assert printed.err.splitlines()[-1] == f"fastmlp {command}: error: --epochs: expected an int >= 1, got {epochs}"
    assert printed.out == "" and not (tmp_path / "run").exists()


def test_labels_outside_the_sigmoid_range_are_warned_about_once(tmp_path, capsys):
    csv = _three_feature_csv(tmp_path, labels=(2, 0, 1, 0, 0))
    assert main(["train", *SMALL, "--dataset", f"csv:{csv}", "--out", str(tmp_path / "run")]) == 0
    warned = [line for line in capsys.readouterr().err.splitlines() if "warning" in line]
    assert len(warned) == 1, warned
    assert warned[0].startswith("fastmlp train: warning: ") and "column 4, 'label'" in warned[0]
    assert "[0, 2]" in warned[0]


def test_animate_writes_the_gallery_over_training(tmp_path, capsys):
    from PIL import Image
    import numpy as np

    # the lab's five points as a CSV whose centre label is 2: warned about once, replay included
    csv = tmp_path / "five.csv"
    csv.write_text("a,b,label\n0,0,2\n1,0,0\n0,-1,0\n-1,0,0\n0,1,0\n")
    out = tmp_path / "a"
    argv = ["train", "--seeds", "4", "--epochs", "300", "--backend", "torch", "--no-progress", "--animate",
            "--dataset", f"csv:{csv}"]
    assert main([*argv, "--out", str(out)]) == 0
    warned = [line for line in capsys.readouterr().err.splitlines() if "warning" in line]
    assert len(warned) == 1, warned
    gif = out / "boundaries.gif"
    assert "boundaries.gif" in json.loads((out / "summary.json").read_text())["files"]
    assert gif.stat().st_size < 5 * 2**20
    with Image.open(gif) as im:
        assert im.n_frames >= 30
        im.seek(0)
        first = np.asarray(im.convert("RGB"), dtype=np.int16)
        im.seek(im.n_frames - 1)
        last = np.asarray(im.convert("RGB"), dtype=np.int16)
    # the boundaries moved: a good part of the picture changed colour between first and last
    changed = (np.abs(first - last).sum(axis=2) > 60).mean()
    assert changed > 0.05, changed


def test_animate_needs_two_inputs_and_says_so_before_training(tmp_path, capsys):
    csv = _three_feature_csv(tmp_path)
    with pytest.raises(SystemExit) as exc:
        main(["train", *SMALL, "--animate", "--dataset", f"csv:{csv}", "--out", str(tmp_path / "a")])
    assert exc.value.code == 2
    printed = capsys.readouterr()
    assert "--animate: " in printed.err and "2-D inputs" in printed.err and "training" not in printed.out
    assert not (tmp_path / "a").exists()
