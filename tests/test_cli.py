"""`fastmlp train` end to end on a small population, and its flag errors."""
import json
import subprocess
import sys

import pytest
import torch

from fastmlp.cli import main


def test_train_writes_run_folder(tmp_path, capsys):
    out = tmp_path / "run"
    assert main(["train", "--seeds", "16", "--epochs", "300", "--out", str(out), "--no-progress"]) == 0
    printed = capsys.readouterr().out
    assert "16 networks x 300 epochs" in printed and "converged" in printed
    summary = json.loads((out / "summary.json").read_text())
    assert summary["config"]["sizes"] == [2, 5, 3, 1] and summary["config"]["lr"] == 0.25
    assert summary["networks"] == 16 and summary["epochs"] == 300 and summary["backend"] == "torch"
    assert 0.0 <= summary["converged_fraction"] <= 1.0
    assert set(summary["final_loss_quantiles"]) == {"q00", "q05", "q25", "q50", "q75", "q95", "q100"}
    assert summary["environment"]["torch"] == torch.__version__
    saved = torch.load(out / "losses.pt")
    assert saved["losses"].shape == (16, 300) and saved["seeds"].tolist() == list(range(16))
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
    (["--epochs", "-3"], "--epochs"),
    (["--lr", "nan"], "--lr"),
    (["--init", "xavier"], "--init"),
    (["--backend", "cuda"], "--backend"),
    (["--dataset", "mnist"], "--dataset"),
])
def test_bad_flags_name_the_flag(argv, flag, tmp_path, capsys):
    with pytest.raises(SystemExit) as exc:
        main(["train", "--epochs", "1", "--seeds", "2", "--out", str(tmp_path), *argv])
    assert exc.value.code == 2
    assert flag in capsys.readouterr().err


def test_module_entry_point():
    out = subprocess.run([sys.executable, "-m", "fastmlp", "train", "--help"], capture_output=True, text=True,
                         timeout=60)
    assert out.returncode == 0 and "--hidden" in out.stdout
