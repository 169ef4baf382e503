"""`fastmlp train` end to end on a small population, and its flag errors."""
import json
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
    (["--lr", "nan"], "--lr"),
    (["--init", "xavier"], "--init"),
    (["--init", "normal:x"], "--init"),
    (["--gain", "nan"], "--gain"),  # was reported as --init (the flag guessed from the message)
    (["--gain", "inf"], "--gain"),
    (["--backend", "cuda"], "--backend"),
    (["--dataset", "mnist"], "--dataset"),
    (["--dataset", "csv:/nonexistent/file.csv"], "--dataset"),
    (["--device", "tpu"], "--device"),
    (["--epochs", str(10**10)], "--seeds"),  # the loss history cannot fit: refused before training
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
