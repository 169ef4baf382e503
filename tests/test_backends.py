"""The backend seam: a backend is one object behind the interface of fastmlp/engine/base.py.

A toy backend defined here (it wraps the torch engine's per-layer run and counts what the
loop asks of it) registers itself and trains through ``fastmlp.train`` and ``fastmlp.sweep``
with no other change to the library.
"""
import pytest
import torch

from fastmlp import Population, engine, program_numba, sweep, train
from fastmlp.architecture import Architecture
from fastmlp.engine import Backend, LayerRun, Problem, Run, select_backend
from fastmlp.engine import torch as torch_ops
from fastmlp.validate import ArgumentError
from tests.conftest import five_points


class ToyRun:
    """A Run that delegates to the torch engine's LayerRun and logs every call."""

    def __init__(self, log, pop, x, y, lr, eps):
        self.log, self.inner = log, LayerRun(pop, x, y, lr, torch_ops, eps)

    @property
    def active(self):
        return self.inner.active

    @property
    def first_below(self):
        return self.inner.first_below

    def block(self, history_rows, epochs, record_every, e_base):
        self.log.append(("block", history_rows.shape[0], history_rows.shape[1]))
        self.inner.block(history_rows, epochs, record_every, e_base)

    def check_parameters(self):
        self.inner.check_parameters()

    def final_loss(self, out):
        self.log.append(("final_loss", out.shape[0]))
        self.inner.final_loss(out)

    def write_back(self):
        self.log.append(("write_back",))
        self.inner.write_back()


class Toy(Backend):
    name = "toy"
    block_epochs = 7
    auto_devices = ()  # never picked by "auto" unless a test says so

    def __init__(self):
        self.log = []

    def limits(self, problem: Problem):
        if max(problem.arch.sizes) > 4:
            return f"a layer of width {max(problem.arch.sizes)} (the toy takes widths up to 4)"
        return None

    def start(self, pop, x, y, lr, eps=None):
        return ToyRun(self.log, pop, x, y, lr, eps)


@pytest.fixture
def toy():
    backend = engine.register(Toy())
    yield backend
    engine.unregister("toy")


def test_toy_backend_trains_through_train(toy):
    x, y = five_points()
    a, b = Population([2, 3, 2, 1], 5), Population([2, 3, 2, 1], 5)
    ra = train(x, y, a, 20, torch.linspace(0.1, 2.0, 5), backend="toy")
    rb = train(x, y, b, 20, torch.linspace(0.1, 2.0, 5), backend="torch")
    assert ra.backend == "toy" and "toy" in engine.names()
    assert torch.equal(ra.losses, rb.losses) and torch.equal(ra.final_loss, rb.final_loss)
    assert all(torch.equal(p, q) for p, q in zip(a.weights + a.biases, b.weights + b.biases))
    # blocks of block_epochs (7 + 7 + 6), then the final loss, then the write-back
    assert toy.log == [("block", 7, 5), ("block", 7, 5), ("block", 6, 5), ("final_loss", 5), ("write_back",)]
    assert isinstance(ToyRun(toy.log, a, x, y, ra.lr, None), Run)


def test_toy_backend_trains_through_sweep(toy, tmp_path):
    r = sweep(tmp_path / "s", hidden=[[3], [2, 2]], lr=[0.25, 1.0], seeds=4, epochs=10, backend="toy", plots=False,
              log=None)
    assert {row["backend"] for row in r.rows} == {"toy"} and len(r.rows) == 4
    ref = sweep(tmp_path / "t", hidden=[[3], [2, 2]], lr=[0.25, 1.0], seeds=4, epochs=10, backend="torch",
                plots=False, log=None)
    for a, b in zip(r.records, ref.records):
        assert torch.equal(a["final_loss"], b["final_loss"])


def test_a_named_backend_outside_its_limits_names_the_limit_and_the_fallback(toy, tmp_path):
    x, y = five_points()
    pop = Population([2, 5, 1], 3)
    before = pop.weights[0].clone()
    with pytest.raises(ArgumentError, match=r"backend='toy' cannot train a layer of width 5 .*use backend='torch'") as e:
        train(x, y, pop, 5, 0.1, backend="toy")
    assert e.value.arg == "backend" and toy.log == [] and torch.equal(pop.weights[0], before)
    # the sweep refuses before training any population, even one the toy could take
    with pytest.raises(ValueError, match="width 5") as e:
        sweep(tmp_path / "s", hidden=[[3], [5, 2]], seeds=2, epochs=2, backend="toy", plots=False, log=None)
    assert e.value.arg == "backend" and toy.log == []
    assert not (tmp_path / "s" / "configs").exists() or not any((tmp_path / "s" / "configs").iterdir())


def test_auto_order_is_the_registry_order(monkeypatch, tmp_path):
    # no compiled fused program, on disk or in this process: a small run is not worth one
    monkeypatch.setenv("FASTMLP_CACHE_DIR", str(tmp_path))
    monkeypatch.setattr(program_numba, "is_loaded", lambda *a: False)
    cpu = torch.device("cpu")
    lab = Problem(Architecture([2, 5, 3, 1]), 5, True, torch.float32, G=64, epochs=100)
    assert select_backend("auto", cpu, lab).name == "torch"
    toy = engine.register(Toy(), before="torch")
    try:
        toy.auto_devices = ("cpu",)
        assert engine.names() == ("auto", "fused", "triton", "toy", "torch")
        assert select_backend("auto", cpu, lab).name == "torch"  # width 5: outside the toy's limits
        small = Problem(Architecture([2, 3, 1]), 5, True, torch.float32, G=64, epochs=100)
        assert select_backend("auto", cpu, small).name == "toy"
    finally:
        engine.unregister("toy")


def test_registry_refuses_bad_entries(toy):
    with pytest.raises(ArgumentError, match="registered already"):
        engine.register(Toy())
    bad = Toy()
    bad.name = "auto"
    with pytest.raises(ArgumentError, match="other than 'auto'"):
        engine.register(bad)
    with pytest.raises(TypeError):
        engine.register(object())
    with pytest.raises(ArgumentError, match="backend must be one of 'auto', 'fused', 'triton', 'torch', 'toy', got 'cuda'"):
        select_backend("cuda", "cpu")
