"""train(..., snapshot_every=k, snapshot_networks=idx): the chosen networks' parameters every k
epochs, bit for bit those of a run stopped there, on every backend."""
import pytest
import torch

from fastmlp import Population, train
from fastmlp.engine import get_backend, triton_interpreter
from fastmlp.snapshots import Snapshots, block_bounds, snapshot_epochs
from fastmlp.validate import ArgumentError, NotEnoughMemory
from tests.conftest import five_points, triton_interpreter_broken

CUDA = torch.cuda.is_available()
# The Triton kernels' populations: on the GPU where there is one (compiled kernels), else on the
# CPU in Triton's interpreter (tests/conftest.py turns it on without CUDA).
TRITON_DEVICE = "cuda" if CUDA and not triton_interpreter() else "cpu"


def _numba():
    # The numba target trains CPU populations; those of these tests are on the CPU on purpose,
    # so they run on a CUDA machine too.
    pytest.importorskip("numba", reason="the CPU target needs numba")


# (backend, fused target, G, epochs, k): the fused targets' blocks are 250 epochs, so k = 70
# cuts blocks at 70, 140, 210 and 250 -- snapshots between the backend's own block ends.
BACKENDS = [("torch", None, 37, 300, 70), ("fused", "numba", 37, 300, 70), ("fused", "triton", 5, 7, 3),
            ("triton", None, 3, 7, 3)]


@pytest.fixture(params=BACKENDS, ids=lambda p: p[0] + (f"-{p[1]}" if p[1] else ""))
def setup(request, monkeypatch):
    name, target, G, epochs, k = request.param
    device = "cpu"
    if target == "numba":
        _numba()
    if name == "triton" or target == "triton":
        pytest.importorskip("fastmlp.kernels", reason="needs triton")
        device = TRITON_DEVICE
        if device == "cpu" and (broken := triton_interpreter_broken()):
            pytest.skip(broken)
    if target is not None:
        monkeypatch.setattr(get_backend("fused"), "target", target)
    return name, G, epochs, k, device


def _params(pop, rows):
    return [w[rows] for w in pop.weights] + [b[rows] for b in pop.biases]


def test_snapshots_are_the_parameters_of_a_run_stopped_there(setup):
    name, G, epochs, k, device = setup
    x, y = five_points()
    chosen = [G - 1, 0, G // 2]  # out of order, first, last
    pop = Population([2, 5, 3, 1], G, device=device)
    initial = pop.clone()
    r = train(x, y, pop, epochs, 0.25, backend=name, snapshot_every=k, snapshot_networks=chosen, progress=False)
    s = r.snapshots
    assert s.epochs == snapshot_epochs(k, epochs) and s.epochs[0] == 0 and s.epochs[-1] == epochs
    assert s.networks.tolist() == chosen and s.seeds.tolist() == chosen
    for j, e in enumerate(s.epochs):
        if e == 0:
            expect = _params(initial, chosen)
        elif e == epochs:
            expect = _params(pop, chosen)
        else:  # a fresh population trained for e epochs
            stopped = Population([2, 5, 3, 1], G, device=device)
            train(x, y, stopped, e, 0.25, backend=name, progress=False)
            expect = _params(stopped, chosen)
        got = [w[j] for w in s.weights] + [b[j] for b in s.biases]
        for a, b in zip(got, expect):
            assert torch.equal(a, b), f"snapshot at epoch {e}"
    # the loss of each snapshot: the history's entry for the next epoch, or the final loss
    for j, e in enumerate(s.epochs):
        expect = r.final_loss[chosen] if e == epochs else r.losses[chosen, e]
        assert torch.equal(s.loss[j], expect)
    # snapshots do not change the run
    plain = Population([2, 5, 3, 1], G, device=device)
    q = train(x, y, plain, epochs, 0.25, backend=name, progress=False)
    assert torch.equal(q.losses, r.losses) and torch.equal(q.final_loss, r.final_loss)
    assert all(torch.equal(a, b) for a, b in zip(_params(plain, slice(None)), _params(pop, slice(None))))


def test_a_snapshot_is_what_the_network_reaches_on_its_own():
    # The CPU program computes a network's bits independently of G and of its position, so
    # snapshot k of seed s is the parameters of seed s trained alone for k epochs.
    _numba()
    x, y = five_points()
    pop = Population([2, 5, 3, 1], 100)
    r = train(x, y, pop, 200, 0.25, backend="fused", snapshot_every=60, snapshot_networks=[17, 83], progress=False)
    for j, e in enumerate(r.snapshots.epochs):
        for i, s in enumerate((17, 83)):
            alone = Population([2, 5, 3, 1], [s])
            if e:
                train(x, y, alone, e, 0.25, backend="fused", progress=False)
            for l in range(3):
                assert torch.equal(r.snapshots.weights[l][j, i], alone.weights[l][0]), (e, s, l)
                assert torch.equal(r.snapshots.biases[l][j, i], alone.biases[l][0]), (e, s, l)


def test_snapshots_over_chunks_and_default_networks():
    x, y = five_points()
    pop = Population([2, 3, 1], 200)
    # a budget that splits the population into chunks of 64 networks
    r = train(x, y, pop, 40, 0.5, backend="torch", snapshot_every=10, progress=False, max_bytes=150_000)
    assert r.n_chunks > 1
    s = r.snapshots
    assert s.networks.tolist() == list(range(200)) and s.epochs == [0, 10, 20, 30, 40]
    ref = Population([2, 3, 1], 200)  # stopped at epoch 20, in the same chunks of 64
    q = train(x, y, ref, 20, 0.5, backend="torch", progress=False, max_bytes=16800 + 480 * 100)
    assert q.n_chunks == r.n_chunks
    for l in range(2):
        assert torch.equal(s.weights[l][2], ref.weights[l]) and torch.equal(s.biases[l][2], ref.biases[l])
    # a snapshot as a population predicts as that population
    assert torch.equal(s.population(2).predict(x), ref.predict(x))
    assert torch.equal(s.population(-1).predict(x), pop.predict(x))


def test_snapshot_memory_is_counted_and_refused_before_work():
    x, y = five_points()
    pop = Population([2, 5, 3, 1], 64)
    need = Snapshots.nbytes(pop.arch, len(snapshot_epochs(1, 100)), 64, 4)
    assert need == 101 * 64 * (37 + 1) * 4
    before = [w.clone() for w in pop.weights]
    with pytest.raises(NotEnoughMemory, match=r"101 snapshots of 64 networks need 959\.5 KiB") as e:
        train(x, y, pop, 100, 0.25, backend="torch", snapshot_every=1, max_bytes=need)
    assert e.value.arg == "snapshot_networks"
    assert all(torch.equal(a, b) for a, b in zip(before, pop.weights))  # nothing trained
    # fewer networks fit the same budget
    r = train(x, y, pop, 100, 0.25, backend="torch", snapshot_every=1, snapshot_networks=[0], max_bytes=need)
    assert r.snapshots.weights[0].shape == (101, 1, 2, 5)


@pytest.mark.parametrize("kw, arg, match", [
    ({"snapshot_every": 0}, "snapshot_every", ">= 1"),
    ({"snapshot_every": 2.5}, "snapshot_every", "an int"),
    ({"snapshot_networks": [0]}, "snapshot_networks", "needs snapshot_every"),
    ({"snapshot_every": 5, "snapshot_networks": [0, 0]}, "snapshot_networks", "twice"),
    ({"snapshot_every": 5, "snapshot_networks": [8]}, "snapshot_networks", "out of range"),
    ({"snapshot_every": 5, "snapshot_networks": []}, "snapshot_networks", "no network"),
    ({"snapshot_every": 5, "snapshot_networks": "ab"}, "snapshot_networks", "indexed by an int"),
    ({"snapshot_every": 5, "snapshot_networks": 2.5}, "snapshot_networks", "indexed by an int"),
])
def test_bad_snapshot_arguments_name_the_argument(kw, arg, match):
    x, y = five_points()
    with pytest.raises(ArgumentError, match=match) as e:
        train(x, y, Population([2, 1], 8), 10, 0.25, backend="torch", **kw)
    assert e.value.arg == arg
    # a wrong type is a TypeError, a wrong value a ValueError (both ArgumentErrors)
    assert isinstance(e.value, TypeError) == (match in ("an int", "indexed by an int"))


def test_a_snapshot_is_chosen_by_an_int():
    x, y = five_points()
    s = train(x, y, Population([2, 1], 4), 10, 0.25, backend="torch", snapshot_every=5).snapshots
    with pytest.raises(TypeError, match="chosen by an int"):
        s.population("a")
    with pytest.raises(IndexError, match="snapshot 3 is out of range for 3 snapshots"):
        s.population(3)


def test_block_bounds_end_at_every_snapshot():
    assert block_bounds(10, 4) == [(0, 4), (4, 8), (8, 10)]
    assert block_bounds(10, 4, snapshot_epochs(3, 10)) == [(0, 3), (3, 4), (4, 6), (6, 8), (8, 9), (9, 10)]
    assert block_bounds(1000, 250, snapshot_epochs(997, 1000)) == [(0, 250), (250, 500), (500, 750),
                                                                   (750, 997), (997, 1000)]
    assert snapshot_epochs(5, 10) == [0, 5, 10] and snapshot_epochs(20, 10) == [0, 10]
