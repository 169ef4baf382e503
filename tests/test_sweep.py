"""fastmlp.sweep: the plan, padding exactness, the run folder, resume, plots and the CLI."""
import csv
import importlib
import json
import math
import os
import re

import pytest
import torch

from fastmlp import Population, train
from fastmlp.cli import main
from fastmlp.datasets import five_points

sw = importlib.import_module("fastmlp.sweep")  # fastmlp.sweep the attribute is the function

matplotlib = pytest.importorskip("matplotlib", reason="sweep plots need matplotlib")
matplotlib.use("Agg")
from matplotlib.figure import Figure  # noqa: E402

from fastmlp import plot  # noqa: E402

# A tiny grid that still has two depths, padding (5,3 and 2,4 share a population padded to
# 5,4), two inits and two learning rates: 12 configurations x 64 seeds.  64: a block of
# seeds that is a multiple of 64 networks computes the same bits as a population of its
# own (the engine's vector loops and thread splits then cut no block differently; with
# 16 seeds the curves differ at rounding level, which lr 2 amplifies).  On the CPU on purpose
# (the sweep's default is cuda where there is one): records are compared bit for bit with
# plain train() runs of CPU populations, and padding is bitwise exact on the CPU torch engine.
TINY = dict(hidden=[[5, 3], [3], [2, 4]], lr=[0.5, 2.0], init=["he_normal", "normal:0.5@2"], seeds=64, epochs=40,
            backend="torch", device="cpu", progress=False, log=None)


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    """These tests check numbers, not speed: one torch thread.  The dev box has 2 cores
    shared with other jobs, where OpenMP's two threads make the engine's thousands of tiny
    ops 3x slower (this file: 19 s with one thread, 61 s with two, measured back to back)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def _plain(pop_sizes, seeds, init, x, y, epochs, lr):
    scheme, _, gain = init.partition("@")
    pop = Population(pop_sizes, seeds, scheme, float(gain) if gain else 1.0)
    return train(x, y, pop, epochs, lr, backend="torch", progress=False)


# ------------------------------------------------------------------------------ the plan

def test_plan_groups_same_depth_and_width_class():
    spec = sw.SweepSpec.build(hidden=[[5, 3], [8], [4, 4, 4], [2, 4], [20, 3], [3]], lr=[0.1, 1.0],
                              init=["he_normal"], seeds=4, epochs=10)
    batches = sw.plan(spec)
    got = [(b.widths, [c.hidden for c in b.configs][::2]) for b in batches]
    assert got == [((5, 4), [(5, 3), (2, 4)]),  # padded together
                   ((8,), [(8,), (3,)]),  # one hidden layer: 8 and 3
                   ((4, 4, 4), [(4, 4, 4)]),
                   ((20, 3), [(20, 3)])]  # 20 > 16: another width class, never padded with 5,3
    # A loss-history budget splits a population along whole configurations.
    small = sw.plan(spec, history_bytes=3 * 4 * 10 * 4)  # 3 configurations of 4 seeds x 10 epochs
    assert [len(b.configs) for b in small if b.widths == (5, 4)] == [3, 1]
    assert sum(len(b.configs) for b in small) == len(spec.configs())


def test_padded_population_holds_exactly_each_archs_initial_weights():
    spec = sw.SweepSpec.build(hidden=[[5, 3], [2, 4]], lr=[0.1, 1.0], init=["glorot_uniform", "normal:0.3@2"],
                              seeds=[3, 7, 11], epochs=1)
    (batch,) = sw.plan(spec)
    pop, lr = sw.padded_population(2, 1, batch.widths, batch.configs, spec.seeds)
    assert pop.sizes == [2, 5, 4, 1] and len(pop) == 8 * 3
    for k, cfg in enumerate(batch.configs):
        ref = Population([2, *cfg.hidden, 1], spec.seeds, cfg.init.scheme, cfg.init.gain)
        block = slice(3 * k, 3 * k + 3)
        for l, (w, w_ref) in enumerate(zip(pop.weights, ref.weights)):
            a, c = w_ref.shape[1:]
            assert torch.equal(w[block, :a, :c], w_ref), (cfg.label, l)
            assert not w[block, a:, :].any() and not w[block, :, c:].any()
        assert not any(b[block].any() for b in pop.biases)
        assert torch.equal(lr[block], torch.full((3,), cfg.lr))  # float32, as train() takes a float lr
        assert pop.seeds[block].tolist() == [3, 7, 11]


@pytest.mark.parametrize("archs", [[(5, 3), (2, 4), (3, 1)], [(17,), (32,)]], ids=["small-5x3-2x4-3x1", "bmm-17-32"])
def test_padding_is_exact(archs):
    """Padded vs unpadded networks, float32, 120 epochs at lr 2 (chaotic enough to amplify
    a rounding difference: measured 1e-5 after 300 epochs when 3 is padded to 20 across the
    engine's loop/bmm switch, which the plan therefore never does): within 1e-7 relative
    (the issue's bound); on the torch engine the curves are in fact bitwise equal, and
    padded units stay exactly 0."""
    x, y = five_points()
    S, E = 64, 120
    spec = sw.SweepSpec.build(hidden=archs, lr=[2.0], init=["glorot_uniform", "normal:1"], seeds=S, epochs=E)
    (batch,) = sw.plan(spec)
    pop, lr = sw.padded_population(2, 1, batch.widths, batch.configs, spec.seeds)
    padded = train(x, y, pop, E, lr, backend="torch", progress=False)
    for k, cfg in enumerate(batch.configs):
        block = slice(S * k, S * (k + 1))
        ref = _plain([2, *cfg.hidden, 1], spec.seeds, cfg.init.label, x, y, E, cfg.lr)
        got, want = padded.losses[block].double(), ref.losses.double()
        torch.testing.assert_close(got, want, rtol=1e-7, atol=0.0, msg=lambda m: f"{cfg.label}: {m}")
        assert torch.equal(padded.losses[block], ref.losses), f"{cfg.label}: not bitwise"
        assert torch.equal(padded.final_loss[block], ref.final_loss)
        for l, w_ref in enumerate(ref.population.weights):
            a, c = w_ref.shape[1:]
            w = pop.weights[l][block]
            assert torch.equal(w[:, :a, :c], w_ref)
            assert not w[:, a:, :].any() and not w[:, :, c:].any()


# --------------------------------------------------------------------------- bad specs

@pytest.mark.parametrize("kwargs,arg,words", [
    (dict(hidden=[]), "hidden", "empty"),
    (dict(lr=[]), "lr", "empty"),
    (dict(init=[]), "init", "empty"),
    (dict(datasets=[]), "datasets", "empty"),
    (dict(init=["xavier"]), "init", "unknown init scheme"),
    (dict(init=["normal:abc"]), "init", "non-numeric"),
    (dict(init=["he_normal@x"]), "init", "gain"),
    (dict(hidden=["5,x"]), "hidden", "comma-separated"),
    (dict(hidden=[[5, 0]]), "hidden", ">= 1"),
    (dict(hidden=[[5, 3], "5,3"]), "hidden", "twice"),
    (dict(hidden=[5, 3]), "hidden", "list of architectures"),
    (dict(lr=[0.1, -1.0]), "lr", ">= 0"),
    (dict(lr=[float("nan")]), "lr", "finite"),
    (dict(eps=0.0), "eps", "> 0"),
    (dict(eps=-0.5), "eps", "> 0"),
    (dict(epochs=0), "epochs", ">= 1"),
    (dict(seeds=0), "seeds", ">= 1"),
    (dict(seeds=[1, 1]), "seeds", "twice"),
    (dict(dtype="float16"), "dtype", "float32"),
], ids=lambda v: v if isinstance(v, str) else None)
def test_bad_specs_name_the_argument(kwargs, arg, words):
    with pytest.raises(sw.SweepSpecError, match=words) as exc:
        sw.SweepSpec.build(**kwargs)
    assert exc.value.arg == arg and str(exc.value).startswith(f"{arg}:")
    assert exc.value.flag == {"datasets": "--dataset"}.get(arg, f"--{arg}")


def test_bad_dataset_backend_device_refused_before_the_folder_is_touched(tmp_path):
    for kwargs, arg in [(dict(datasets=["mnist"]), "datasets"), (dict(backend="cuda"), "backend"),
                        (dict(device="nonsense"), "device")]:
        with pytest.raises(sw.SweepSpecError) as exc:
            sw.sweep(tmp_path / "out", **{**TINY, **kwargs})
        assert exc.value.arg == arg
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("out,words", [
    (123, "must be a path"),
    pytest.param("/proc/nope/x", "cannot write",
                 marks=pytest.mark.skipif(not os.path.isdir("/proc/self"), reason="needs Linux's /proc")),
    ("", "empty path would name the current directory"),
], ids=["not-a-path", "unwritable", "empty"])
def test_a_bad_out_is_refused_first_naming_it(out, words, tmp_path, monkeypatch):
    """The library checks ``out`` as the CLI does, before the spec or the data: "" is not
    the current directory."""
    monkeypatch.chdir(tmp_path)

    def no_work(*args, **kwargs):
        raise AssertionError("the sweep did work before checking out")
    monkeypatch.setattr(sw.SweepSpec, "build", no_work)
    monkeypatch.setattr(sw, "load_data", no_work)
    with pytest.raises(sw.SweepSpecError, match=words) as exc:
        sw.sweep(out, **TINY)
    assert exc.value.arg == "out" and exc.value.flag == "--out" and str(exc.value).startswith("out: ")
    assert not list(tmp_path.iterdir())


def test_out_dot_sweeps_into_the_current_folder_and_resumes_there(tmp_path, monkeypatch):
    """``out="."``, as ``fastmlp sweep --out .`` allows: a sweep run from inside its folder."""
    (tmp_path / "here").mkdir()
    monkeypatch.chdir(tmp_path / "here")
    small = dict(TINY, hidden=[[3]], lr=[1.0], init=["he_normal"], seeds=4, epochs=5, plots=False)
    first = sw.sweep(".", **small)
    assert first.trained == 1 and (tmp_path / "here" / "sweep.json").exists()
    again = sw.sweep(".", **small)
    assert again.trained == 0 and again.skipped == 1


def test_backend_checked_against_every_population_before_any_training(tmp_path):
    """backend='fused' takes widths up to 32: a grid with a 40-wide architecture is refused
    before its 3-wide population trains (not when the 40-wide one reaches train())."""
    with pytest.raises(sw.SweepSpecError) as exc:
        sw.sweep(tmp_path / "s", hidden=[[3], [40]], backend="fused", seeds=2, epochs=2, plots=False, log=None)
    assert exc.value.arg == "backend" and exc.value.flag == "--backend"
    assert "width 40" in exc.value.message and str(exc.value).startswith("backend: ")
    assert not list(tmp_path.rglob("configs/*")) and not (tmp_path / "s").exists()


def test_errors_and_defaults_have_one_definition():
    import inspect

    from fastmlp import sweep as sweep_function
    from fastmlp.validate import ArgumentError

    assert sweep_function is sw.sweep and callable(sweep_function)
    assert issubclass(sw.SweepSpecError, ArgumentError)
    err = sw.SweepSpecError("datasets", "no such data set")
    assert (err.arg, err.flag, err.message, str(err)) == ("datasets", "--dataset", "no such data set",
                                                          "datasets: no such data set")
    sweep_args = inspect.signature(sw.sweep).parameters
    build_args = inspect.signature(sw.SweepSpec.build).parameters
    assert set(build_args) == set(sw.DEFAULTS)
    for name, value in sw.DEFAULTS.items():
        assert sweep_args[name].default is value and build_args[name].default is value, name
    for name, value in sw.OPTION_DEFAULTS.items():
        assert sweep_args[name].default is value, name
    spec = sw.SweepSpec.build()
    assert (spec.hidden, spec.lrs, spec.datasets, len(spec.seeds), spec.epochs, spec.eps, spec.dtype) == (
        ((5, 3),), (0.25,), ("five_points",), 256, 2500, 0.01, "float32")


# ------------------------------------------------------------------- run folder, plots

@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("sweep") / "tiny"
    return sw.sweep(out, **TINY, save_losses=True)


def test_run_folder_files_and_table(tiny_run):
    out = tiny_run.out
    assert tiny_run.trained == 12 and tiny_run.skipped == 0
    for name in ["sweep.json", "results.csv", "summary.md"] + [f"{p}.{f}" for p in
                                                             ("loss_curves", "converged", "epochs_to_eps", "boundaries")
                                                             for f in ("png", "pdf")]:
        assert (out / name).stat().st_size > (100 if name == "sweep.json" else 1000), name
        assert name in tiny_run.files
    assert len(list((out / "configs").glob("*.pt"))) == 12
    assert not list(out.rglob("*.tmp"))
    rows = list(csv.DictReader(open(out / "results.csv")))
    assert [(r["hidden"], r["init"], r["lr"]) for r in rows[:3]] == [
        ("5,3", "he_normal", "0.5"), ("5,3", "he_normal", "2.0"), ("5,3", "normal:0.5@2", "0.5")]
    assert {r["sizes"] for r in rows} == {"2-5-3-1", "2-3-1", "2-2-4-1"}
    assert all(r["networks"] == "64" for r in rows)
    md = (out / "summary.md").read_text()
    assert "| dataset | hidden | init | lr |" in md and "![loss_curves.png](loss_curves.png)" in md
    spec = json.loads((out / "sweep.json").read_text())
    assert spec["hidden"] == [[5, 3], [3], [2, 4]] and spec["seeds"] == "0:64" and spec["init"][1] == "normal:0.5@2"


def test_saved_configuration_matches_a_plain_training_run(tiny_run):
    """A configuration's file holds what train() gives that configuration alone."""
    x, y = five_points()
    (rec,) = [r for r in tiny_run.records if r["config"]["hidden"] == [2, 4] and r["config"]["lr"] == 2.0
              and r["config"]["init"] == "normal:0.5@2"]
    ref = _plain([2, 2, 4, 1], range(64), "normal:0.5@2", x, y, 40, 2.0)
    assert torch.equal(rec["losses"], ref.losses) and torch.equal(rec["final_loss"], ref.final_loss)
    assert [w.shape for w in rec["weights"]] == [(64, 2, 2), (64, 2, 4), (64, 4, 1)]
    for w, w_ref in zip(rec["weights"], ref.population.weights):
        assert torch.equal(w, w_ref)
    from fastmlp import stats

    assert torch.equal(rec["epochs_to_eps"], stats.epochs_to_eps(ref.losses, ref.final_loss, 0.01))
    assert torch.equal(rec["accuracy"], stats.accuracy(ref.population.predict(x), y))


def test_plot_functions_return_figures(tiny_run):
    recs = tiny_run.records
    q = [r["loss_quantiles"][[0, 2, 4]] for r in recs]
    fig = plot.loss_bands({"a": [("lr 0.5", q[0]), ("lr 2", q[1])], "b": [("lr 0.5", q[2])]}, ncols=2, title="t")
    assert isinstance(fig, Figure) and fig.axes[0].get_yscale() == "log"
    fig = plot.converged_heatmaps({"p": torch.tensor([[0.0, 0.5], [0.996, 1.0]])}, ["i1", "i2"], ["0.1", "1"])
    assert isinstance(fig, Figure)
    texts = [t.get_text() for t in fig.axes[0].texts]
    assert texts == ["0%", "50%", "99.6%", "100%"]  # 99.6% is not rounded up to 100%
    fig = plot.epochs_ecdf({"p": [("lr 1", torch.tensor([3, 10, -1, -1]))], "q": [("lr 1", torch.tensor([-1]))]},
                           epochs=40, eps=0.01)
    assert isinstance(fig, Figure)
    (line,) = fig.axes[0].get_lines()
    assert line.get_ydata()[-1] == 0.5  # two of four networks reached eps: the curve levels off at 0.5
    assert any("no network" in t.get_text() for t in fig.axes[1].texts)
    x, y = five_points()
    pop = Population([2, 3, 1], 2)
    fig = plot.boundary_gallery(x, y, [("row A", pop.predict, ["n0", "n1"]), ("row B", pop.predict, ["m0", "m1"])])
    assert isinstance(fig, Figure) and [a.get_title() for a in fig.axes[:2]] == ["row A\nn0", "row A\nn1"]
    with pytest.raises(ValueError, match="same number"):
        plot.boundary_gallery(x, y, [("A", pop.predict, ["n0", "n1"]), ("B", pop[:1].predict, ["m0"])])


def test_plots_drawn_here_match_the_forked_worker(tiny_run, tmp_path):
    """The same files whether the pure figures are drawn by a forked worker (the default
    where fork exists) or in this process."""
    records = {sw.Config(r["config"]["dataset"], tuple(r["config"]["hidden"]), sw.InitSpec.parse(r["config"]["init"]),
                         r["config"]["lr"]): r for r in tiny_run.records}
    files = sw.figures.draw(tiny_run.spec, records, {"five_points": five_points()}, tmp_path, ["png"], worker=False)
    assert sorted(files) == sorted(f for f in tiny_run.files if f.endswith(".png"))
    for f in files:
        assert (tmp_path / f).stat().st_size > 10_000


def test_several_datasets_one_set_of_figures_each(tmp_path):
    """Data sets run one after another; a 3-feature CSV gets every figure but the boundaries."""
    csv_path = tmp_path / "three.csv"
    csv_path.write_text("a,b,c,label\n0,0,1,1\n1,0,0,0\n0,1,0,0\n1,1,1,1\n")
    res = sw.sweep(tmp_path / "multi", **{**TINY, "hidden": [[3]], "lr": [1.0], "init": ["he_normal"], "seeds": 4,
                                          "epochs": 5}, datasets=["five_points", f"csv:{csv_path}"], formats=["png"])
    assert [r["sizes"] for r in res.rows] == ["2-3-1", "3-3-1"]
    slug = re.sub(r"[^A-Za-z0-9._-]+", "_", f"csv:{csv_path}")
    assert sorted(res.files[3:]) == sorted([f"{n}_five_points.png" for n in
                                            ("loss_curves", "epochs_to_eps", "converged", "boundaries")]
                                           + [f"{n}_{slug}.png" for n in ("loss_curves", "epochs_to_eps", "converged")])
    for f in res.files:
        assert (tmp_path / "multi" / f).stat().st_size > 0


def test_bad_formats_refused_before_training(tmp_path):
    with pytest.raises(sw.SweepSpecError, match="unsupported figure formats") as exc:
        sw.sweep(tmp_path / "f", **TINY, formats=["png", "docx"])
    assert exc.value.flag == "--formats" and not (tmp_path / "f").exists()


# ------------------------------------------------------------------------------ resume

def test_resume_after_interruption(tmp_path, monkeypatch):
    kwargs = dict(TINY, plots=False)
    fresh = sw.sweep(tmp_path / "fresh", **kwargs)

    real_train_batch = sw.run.train_batch
    calls = []

    def interrupted(batch, *args, **kw):
        if calls:
            raise KeyboardInterrupt  # the second population never finishes
        calls.append(batch)
        return real_train_batch(batch, *args, **kw)

    monkeypatch.setattr(sw.run, "train_batch", interrupted)
    with pytest.raises(KeyboardInterrupt):
        sw.sweep(tmp_path / "cut", **kwargs)
    first = calls[0]
    saved = sorted(p.name for p in (tmp_path / "cut" / "configs").iterdir())
    assert saved == sorted(c.filename for c in first.configs)  # only the finished population, no temp files
    monkeypatch.setattr(sw.run, "train_batch", real_train_batch)

    resumed = sw.sweep(tmp_path / "cut", **kwargs)
    assert resumed.skipped == len(first.configs) and resumed.trained == 12 - len(first.configs)
    def same(a, b):  # NaN (no network reached eps) equals NaN here
        return a == b or (isinstance(a, float) and isinstance(b, float) and math.isnan(a) and math.isnan(b))

    assert len(resumed.rows) == len(fresh.rows) == 12
    for r, r2 in zip(fresh.rows, resumed.rows):
        assert r.keys() == r2.keys()
        assert all(same(r[k], r2[k]) for k in r if k != "population_wall_time_s"), (r, r2)
    for a, b in zip(fresh.records, resumed.records):
        assert torch.equal(a["final_loss"], b["final_loss"]) and torch.equal(a["loss_quantiles"], b["loss_quantiles"])

    again = sw.sweep(tmp_path / "cut", **kwargs)  # everything done: nothing trained
    assert again.trained == 0 and again.skipped == 12


def test_refuses_a_folder_with_another_sweep(tmp_path):
    small = dict(TINY, hidden=[[3]], lr=[1.0], init=["he_normal"], seeds=4, epochs=5, plots=False)
    sw.sweep(tmp_path / "a", **small)
    with pytest.raises(sw.SweepSpecError, match="different sweep") as exc:
        sw.sweep(tmp_path / "a", **{**small, "epochs": 6})
    assert exc.value.flag == "--out" and "epochs: folder has 5, this sweep 6" in str(exc.value)
    (tmp_path / "b").mkdir()
    (tmp_path / "b" / "notes.txt").write_text("mine")
    with pytest.raises(sw.SweepSpecError, match="not empty"):
        sw.sweep(tmp_path / "b", **small)


# --------------------------------------------------------------------------------- CLI

def test_cli_end_to_end(tmp_path, capsys):
    out = tmp_path / "cli"
    argv = ["sweep", "--hidden", "5,3", "3", "--lr", "0.5,1", "--init", "he_normal", "--init", "normal:1",
            "--seeds", "8", "--epochs", "30", "--out", str(out), "--formats", "png", "--no-progress"]
    assert main(argv) == 0
    printed = capsys.readouterr().out
    assert "8 configurations" in printed and "epochs to eps" in printed and "sweep done" in printed
    assert len(list(csv.DictReader(open(out / "results.csv")))) == 8
    for name in ("loss_curves.png", "converged.png", "epochs_to_eps.png", "boundaries.png"):
        assert (out / name).stat().st_size > 10_000
    assert "fastmlp sweep --hidden 5,3 3 --lr 0.5,1" in (out / "summary.md").read_text()
    assert main(argv) == 0
    assert "resuming: 8 configurations already" in capsys.readouterr().out


@pytest.mark.parametrize("argv,flag", [
    (["--lr"], "--lr"),  # an empty grid
    (["--hidden"], "--hidden"),
    (["--lr", "0.1,,0.2"], "--lr"),
    (["--init", "xavier"], "--init"),
    (["--hidden", "5,x"], "--hidden"),
    (["--hidden", "5,0"], "--hidden"),
    (["--eps", "0"], "--eps"),
    (["--eps", "-1"], "--eps"),
    (["--lr", "0.1", "0.1"], "--lr"),
    (["--dataset", "mnist"], "--dataset"),
    (["--backend", "cuda"], "--backend"),
    (["--epochs", "0"], "--epochs"),
], ids=lambda v: " ".join(v) if isinstance(v, list) else None)
def test_cli_bad_flags_name_the_flag(argv, flag, tmp_path, capsys):
    with pytest.raises(SystemExit) as exc:
        main(["sweep", "--epochs", "2", "--seeds", "2", "--out", str(tmp_path / "o"), *argv])
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert err.splitlines()[-1].startswith(f"fastmlp sweep: error: {flag}: "), err
    assert "Traceback" not in err
    assert not (tmp_path / "o").exists()
