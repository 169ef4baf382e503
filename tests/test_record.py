"""A thinned loss record (``train(..., record_every=k)``) against the full record of the same
run: the kept epochs bit for bit, the epochs to eps exactly (tracked on every epoch during
training, not read from the history), statistics, plots, sweeps and run folders alike; old
run folders still read; a folder the disk cannot hold refused before training."""
import json
import shutil

import pytest
import torch

matplotlib = pytest.importorskip("matplotlib", reason="plots need matplotlib")
matplotlib.use("Agg")
import matplotlib.pyplot  # noqa: E402
from fastmlp import Population, plot, stats, sweep, train  # noqa: E402
from fastmlp.cli import main  # noqa: E402
from fastmlp.datasets import five_points  # noqa: E402
from fastmlp.engine import get_backend  # noqa: E402
from fastmlp.results import load_losses, run_bytes, save_run  # noqa: E402
from fastmlp.train import RECORD_BYTES, default_record_every  # noqa: E402
from fastmlp.validate import ArgumentError  # noqa: E402

EPOCHS, K, G = 300, 7, 96
CUDA = torch.cuda.is_available()


def _lr(G):
    return torch.linspace(0.1, 3.0, G)  # some converge early, some late, some never


def _pair(backend: str, G=G, epochs=EPOCHS, device="cpu", dtype=torch.float32, **kw):
    x, y = (t.to(device, dtype) for t in five_points())
    lr = _lr(G).to(device, dtype)
    full = train(x, y, Population([2, 5, 3, 1], G, device=device, dtype=dtype), epochs, lr, backend=backend,
                 record_every=1, **kw)
    thin = train(x, y, Population([2, 5, 3, 1], G, device=device, dtype=dtype), epochs, lr, backend=backend,
                 record_every=K, **kw)
    return x, y, full, thin


@pytest.fixture
def short_blocks(monkeypatch):
    """Blocks of 40 epochs on every backend: first crossings in blocks that start late (e_base)."""
    for name in ("torch", "fused"):
        monkeypatch.setattr(get_backend(name), "block_epochs", 40)
    monkeypatch.setattr(get_backend("fused"), "block_seconds", None)


@pytest.mark.parametrize("case", ["torch", "fused", "fused-float64", "triton-program"])
def test_thinned_record_keeps_the_kept_epochs_and_the_exact_epochs_to_eps(case, short_blocks, monkeypatch):
    kw = dict(backend=case.split("-")[0])
    if case == "fused-float64":
        kw["dtype"] = torch.float64
    if case == "triton-program":  # the Triton kernel: compiled on a GPU, else in the interpreter (small)
        monkeypatch.setattr(get_backend("fused"), "target", "triton")
        kw = dict(backend="fused", G=24, epochs=120, device="cuda" if CUDA else "cpu")
    x, y, full, thin = _pair(**kw)
    n, E = full.losses.shape
    assert thin.record_every == K and thin.losses.shape == (n, -(-E // K))
    assert torch.equal(thin.recorded_epochs, torch.arange(0, E, K))
    assert torch.equal(thin.losses, full.losses[:, ::K])
    assert torch.equal(thin.final_loss, full.final_loss) and torch.equal(thin.diverged, full.diverged)
    want = stats.epochs_to_eps(full.losses, full.final_loss, 0.01)  # from every epoch's loss
    reached = want[want >= 0]
    assert 0 < len(reached) < n and bool((reached % K != 0).any()) and int(reached.max()) > 40  # late blocks too
    assert torch.equal(thin.epochs_to_eps(), want) and torch.equal(full.epochs_to_eps(), want)
    assert torch.equal(full.epochs_to_eps(0.05), stats.epochs_to_eps(full.losses, full.final_loss, 0.05))
    with pytest.raises(ValueError, match="one epoch in 7"):
        thin.epochs_to_eps(0.05)  # not tracked, not in the history: refused, never guessed
    q = stats.nanquantiles(full.losses, stats.CURVE_QUANTILES)
    assert torch.equal(stats.nanquantiles(thin.losses, stats.CURVE_QUANTILES), q[:, ::K])


@pytest.mark.parametrize("backend", ["torch", "fused"])
def test_a_diverged_network_keeps_the_epoch_it_had(backend):
    # tests/test_train.py's overflow: network 1's first update overflows, its later losses are NaN
    # (never below eps); with eps above its first loss it keeps epoch 0.
    x = torch.tensor([[1e30, 0.0], [0.0, -1e30], [0.0, 0.0]])
    y = torch.tensor([1.0, 0.0, 1.0])
    for eps in (0.5, 1e-3):
        runs = [train(x, y, Population([2, 1], 2, init="uniform:1e-30"), 9, torch.tensor([1e-31, 1e10]),
                      backend=backend, record_every=k, eps=eps) for k in (1, 2)]
        full, thin = runs
        assert full.diverged.tolist() == [False, True] and full.losses[1, 1:].isnan().all()
        want = stats.epochs_to_eps(full.losses, full.final_loss, eps)
        assert torch.equal(full.epochs_to_eps(), want) and torch.equal(thin.epochs_to_eps(), want)
        assert want.tolist() == ([0, 0] if eps == 0.5 else [-1, -1])


def test_chunks_a_longer_record_than_the_run_and_no_eps():
    x, y = five_points()
    lr = _lr(192)
    full = train(x, y, Population([2, 5, 3, 1], 192), 90, lr, backend="torch", record_every=1)
    chunked = train(x, y, Population([2, 5, 3, 1], 192), 90, lr, backend="torch", record_every=4,
                    max_bytes=150_000)  # 64 networks at a time
    assert chunked.n_chunks > 1 and torch.equal(chunked.losses, full.losses[:, ::4])
    assert torch.equal(chunked.epochs_to_eps(), full.epochs_to_eps())
    once = train(x, y, Population([2, 5, 3, 1], 192), 90, lr, backend="torch", record_every=10**6)
    assert once.record_every == 90 and torch.equal(once.losses, full.losses[:, :1])
    untracked = train(x, y, Population([2, 5, 3, 1], 192), 90, lr, backend="torch", eps=None)
    assert untracked.first_below is None and torch.equal(untracked.epochs_to_eps(0.01), full.epochs_to_eps())
    with pytest.raises(ValueError, match="no eps was tracked"):
        untracked.epochs_to_eps()


@pytest.mark.parametrize("backend", ["torch", "fused"])
def test_snapshots_of_a_thinned_run_are_those_of_the_full_run(backend, short_blocks):
    x, y = five_points()
    runs = [train(x, y, Population([2, 5, 3, 1], 8), 100, 0.5, backend=backend, record_every=k, snapshot_every=15,
                  snapshot_networks=[0, 3, 7]) for k in (1, 6)]
    a, b = (r.snapshots for r in runs)
    assert a.epochs == b.epochs and torch.equal(a.loss, b.loss)
    assert all(torch.equal(u, v) for u, v in zip(a.weights + a.biases, b.weights + b.biases))
    full = runs[0]  # the loss of the parameters at epoch e: the loss recorded at its start, or the final
    want = torch.stack([full.losses[[0, 3, 7], e] if e < 100 else full.final_loss[[0, 3, 7]] for e in a.epochs])
    assert torch.equal(b.loss, want)


def test_default_record_fits_its_bound():
    assert default_record_every(1024, 2500, 4) == 1  # the demo keeps every epoch
    assert default_record_every(262144, 2500, 4) == 40  # 63 rows of 1 MiB
    for G, E, isz in [(262144, 2500, 4), (2**20, 2500, 4), (2**20, 2500, 8), (3, 10**9, 4), (2**26, 7, 8)]:
        k = default_record_every(G, E, isz)
        assert -(-E // k) * G * isz <= max(RECORD_BYTES, G * isz)  # at least one row
        assert k == 1 or -(-E // (k - 1)) * G * isz > RECORD_BYTES  # the smallest k


def test_run_folders_statistics_and_plots_agree(tmp_path):
    x, y, full, thin = _pair("torch")
    sums = [save_run(r, x, y, tmp_path / name, {"lr": "ramp"}) for r, name in ((full, "full"), (thin, "thin"))]
    for key in ("converged_fraction", "diverged", "final_loss_quantiles", "epochs_to_eps"):
        assert sums[0][key] == sums[1][key], key
    assert sums[1]["record_every"] == K and sums[0]["record_every"] == 1
    a, b = load_losses(tmp_path / "full"), load_losses(tmp_path / "thin")
    assert torch.equal(b["epochs"], torch.arange(0, EPOCHS, K)) and torch.equal(b["losses"], a["losses"][:, ::K])
    assert torch.equal(a["first_below"], b["first_below"]) and b["eps"] == 0.01
    for name, s in (("full", sums[0]), ("thin", sums[1])):  # the estimate bounds the folder
        size = sum(p.stat().st_size for p in (tmp_path / name).iterdir())
        assert size <= run_bytes(full.population.arch, G, len(load_losses(tmp_path / name)["epochs"]), 4)
        assert set(s["phases_s"]) >= {"statistics", "write", "plots"}


def test_loss_curves_put_a_thinned_history_at_its_epochs():
    _, _, full, thin = _pair("torch")
    lines = []
    for r in (full, thin):
        fig = plot.loss_curves(r.losses, epochs=r.recorded_epochs)
        (median,) = [ln for ln in fig.axes[0].lines if ln.get_linewidth() > 1]  # the median, not the sample
        lines.append(dict(zip(median.get_xdata().tolist(), median.get_ydata().tolist())))
        matplotlib.pyplot.close(fig)
    kept = {e: v for e, v in lines[0].items() if (e - 1) % K == 0}  # x: epochs numbered from 1
    assert kept and all(lines[1][e] == v for e, v in kept.items())
    assert set(lines[1]) <= {e + 1 for e in range(0, EPOCHS, K)}


def test_a_sweep_takes_its_epochs_to_eps_from_training(tmp_path, monkeypatch):
    x, y = five_points()
    monkeypatch.setattr(stats, "epochs_to_eps", None)  # not from the history: the one tracked in training
    out = sweep(tmp_path / "sw", hidden=[(5, 3)], lr=[0.5], init=["glorot_uniform"], datasets=["five_points"],
                seeds=16, epochs=150, eps=0.2, device="cpu", backend="torch", progress=False, plots=False)
    (rec,) = out.records
    ref = train(x, y, Population([2, 5, 3, 1], 16), 150, 0.5, backend="torch", record_every=5, eps=0.2)
    assert torch.equal(rec["epochs_to_eps"], ref.epochs_to_eps()) and bool((rec["epochs_to_eps"] >= 0).any())


def test_an_old_run_folder_still_reads(tmp_path):
    x, y = five_points()
    r = train(x, y, Population([2, 3, 1], 4), 20, 0.5, backend="torch")
    save_run(r, x, y, tmp_path / "run", {})
    d = torch.load(tmp_path / "run" / "losses.pt")
    old = {k: d[k] for k in ("losses", "final_loss", "diverged", "lr", "seeds")}  # format 1: every epoch
    torch.save(old, tmp_path / "run" / "losses.pt")
    got = load_losses(tmp_path / "run")
    assert torch.equal(got["epochs"], torch.arange(20)) and got["record_every"] == 1 and got["first_below"] is None
    assert torch.equal(Population.load(tmp_path / "run" / "population.pt").weights[0], r.population.weights[0])


def test_a_folder_the_disk_cannot_hold_is_refused_before_training(tmp_path, monkeypatch, capsys):
    real = shutil.disk_usage
    monkeypatch.setattr(shutil, "disk_usage", lambda p: real(p)._replace(free=10**6))
    trained = []
    monkeypatch.setattr("fastmlp.cli.train", lambda *a, **k: trained.append(1))
    with pytest.raises(SystemExit):
        main(["train", "--seeds", "64", "--epochs", "10", "--out", str(tmp_path / "run"), "--no-progress"])
    err = capsys.readouterr().err.splitlines()[-1]
    assert err.startswith("fastmlp train: error: --out: the run folder would take about") and "free" in err
    assert not trained and not (tmp_path / "run").exists()
    with pytest.raises(ArgumentError, match="free"):
        x, y = five_points()
        r = train(x, y, Population([2, 3, 1], 4), 5, 0.5, backend="torch")
        save_run(r, x, y, tmp_path / "lib", {})


def test_the_command_line_times_its_phases(tmp_path, capsys):
    main(["train", "--seeds", "32", "--epochs", "50", "--backend", "torch", "--out", str(tmp_path / "run"),
          "--no-progress", "--record-every", "5"])
    out = capsys.readouterr().out
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    phases = summary["phases_s"]
    assert list(phases)[:3] == ["setup", "train", "statistics"] and {"write", "plots"} <= set(phases)
    assert all(v >= 0 for v in phases.values())
    assert "outside training" in out and summary["record_every"] == 5 and summary["recorded_epochs"] == 10
