"""The one-launch program on the CPU (fastmlp/program_numba.py, numba) against the torch engine.

The numba target renders the same program as the Triton kernel (fastmlp/program.py), one
network per SIMD lane of a block of 16.  Compiled code is cached on disk (the first run of
this module compiles ~10 programs, ~15 s each on the 2-core dev box).
"""
import subprocess
import sys

from types import SimpleNamespace

import pytest
import torch

from fastmlp import Population, train
from fastmlp.architecture import UNROLL_SAMPLES
from tests.conftest import assert_rel_close, five_points
from tests.trajectories import assert_insensitive, assert_same_training

fc = pytest.importorskip("fastmlp.program_numba")

CASES = [  # (sizes, N): the lab network, widths 1, 3, 5, depth 0..4, N = 1, 5, and a sample loop
    ([2, 5, 3, 1], 5),
    ([2, 1], 1),
    ([1, 3, 1], 5),
    ([3, 5, 5, 2], 4),
    ([2, 3, 1, 5, 2, 1], 5),
    ([2, 3, 1], UNROLL_SAMPLES + 3),
]


@pytest.fixture
def nb():
    return pytest.importorskip("numba", reason="the CPU fused program needs numba")


def _data(sizes, N, seed=0, dtype=torch.float32):
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(N, sizes[0], generator=g) * 4 - 2
    y = (torch.rand(N, sizes[-1], generator=g) > 0.5).float()
    return x.to(dtype), y.to(dtype)


def _run(sizes, x, y, seeds, epochs, lr, dtype=torch.float32, record_every=1):
    """fused_cpu.fused_train on a fresh population: (population, loss rows [rows, G], active [G])."""
    pop = Population(sizes, seeds, dtype=dtype)
    packed = fc.pack(pop.weights, pop.biases)
    G = packed.shape[1]
    lr = lr.to(dtype) if torch.is_tensor(lr) else torch.full((G,), lr, dtype=dtype)
    active = torch.ones(G, dtype=torch.int8)
    loss = torch.full((-(-epochs // record_every), G), float("nan"), dtype=dtype)
    fc.fused_train(x, y, packed, lr, active, loss, sizes, epochs, record_every=record_every)
    fc.unpack_into(packed, pop.weights, pop.biases)
    return pop, loss, active


def _torch(sizes, x, y, seeds, epochs, lr, dtype=torch.float32):
    ref = Population(sizes, seeds, dtype=dtype)
    return ref, train(x, y, ref, epochs, lr, backend="torch")


def _check(pop, loss, r, x, y, epochs, lr):
    """The program's run (population, loss rows) against the torch engine's TrainResult ``r``,
    with tolerances from the networks' conditioning (tests/trajectories.py)."""
    assert_same_training(x, y, SimpleNamespace(population=pop, losses=loss.t(), final_loss=None), r, epochs, lr,
                         msg="vs torch engine")


def test_import_needs_no_numba():
    code = ("import sys, fastmlp, fastmlp.program_numba as f; f.source([2, 5, 3, 1], 5); "
            "print('numba' in sys.modules)")
    assert subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          check=True).stdout.strip() == "False"


@pytest.mark.parametrize("sizes,N", CASES, ids=[f"N{n}-" + "x".join(map(str, s)) for s, n in CASES])
def test_matches_torch_engine_float32(nb, sizes, N):
    x, y = _data(sizes, N)
    lr = torch.tensor([0.25, 0.5, 1.0])
    pop, loss, active = _run(sizes, x, y, [3, 14, 15], 30, lr)
    ref, r = _torch(sizes, x, y, [3, 14, 15], 30, lr)
    assert active.tolist() == [1, 1, 1]
    _check(pop, loss, r, x, y, 30, lr)


@pytest.mark.parametrize("sizes,N", [([2, 5, 3, 1], 5), ([2, 3, 1], UNROLL_SAMPLES + 3)])
def test_matches_torch_engine_float64(nb, sizes, N):
    x, y = _data(sizes, N, dtype=torch.float64)
    pop, loss, _ = _run(sizes, x, y, [3, 14, 15], 30, 0.5, torch.float64)
    ref, r = _torch(sizes, x, y, [3, 14, 15], 30, 0.5, torch.float64)
    _check(pop, loss, r, x, y, 30, 0.5)


@pytest.mark.parametrize("G", [1, 37])
def test_population_not_a_whole_block(nb, G):
    x, y = five_points()
    pop, loss, _ = _run([2, 5, 3, 1], x, y, G, 25, 0.5)
    ref, r = _torch([2, 5, 3, 1], x, y, G, 25, 0.5)
    _check(pop, loss, r, x, y, 25, 0.5)


def test_every_recorded_row_is_written(nb):
    x, y = five_points()
    pop, loss, _ = _run([2, 5, 3, 1], x, y, 20, 13, 0.25, record_every=3)  # NaN-poisoned rows 0, 3, .., 12
    assert loss.shape == (5, 20) and torch.isfinite(loss).all()
    ref, r = _torch([2, 5, 3, 1], x, y, 20, 13, 0.25)
    # rows 0, 3, .., 12 of the history (13 epochs of insensitive networks: measured, and
    # asserted, so all five rows are held to float32's tolerance)
    assert assert_insensitive(x, y, Population([2, 5, 3, 1], 20), 13, 0.25).stable(1e-5).all()
    assert_rel_close(loss.t(), r.losses[:, ::3], msg="loss rows vs torch engine")
    for a, b in zip(pop.weights + pop.biases, ref.weights + ref.biases):
        assert_rel_close(a, b, msg="final parameters vs torch engine")


@pytest.mark.filterwarnings("ignore:invalid value encountered:RuntimeWarning")
def test_divergence_is_isolated_and_frozen(nb):
    x, y = five_points()
    sizes, seeds, bad = [2, 5, 3, 1], [1, 2, 3, 4, 5], 2
    lr = torch.full((5,), 0.5)
    lr[bad] = float("inf")  # the first step sends its parameters to +-inf or NaN
    pop, loss, active = _run(sizes, x, y, seeds, 15, lr)
    assert active.tolist() == [int(g != bad) for g in range(5)]
    finite = torch.isfinite(loss[:, bad])
    d = int((~finite).nonzero()[0])  # the epoch whose loss was non-finite: frozen from there
    assert d >= 1 and not finite[d:].any()
    stopped, _, _ = _run(sizes, x, y, [seeds[bad]], d, lr[bad:bad + 1])  # its parameters after d epochs
    for w, w_d in zip(pop.weights + pop.biases, stopped.weights + stopped.biases):  # bits, NaNs included
        assert torch.equal(w[bad].view(torch.int32), w_d[0].view(torch.int32))
    keep = [g for g in range(5) if g != bad]
    clean, loss_clean, _ = _run(sizes, x, y, [seeds[g] for g in keep], 15, lr[keep])
    assert torch.equal(loss[:, keep], loss_clean)
    for w, w_clean in zip(pop.weights + pop.biases, clean.weights + clean.biases):
        assert torch.equal(w[keep], w_clean)


def test_bits_do_not_depend_on_population_or_position(nb):
    x, y = five_points()
    s, at = 1234, 37
    seeds = list(range(100))
    seeds[at] = s
    lr = torch.linspace(0.1, 2.0, 100)
    alone, loss_alone, _ = _run([2, 5, 3, 1], x, y, [s], 40, lr[at:at + 1])
    crowd, loss_crowd, _ = _run([2, 5, 3, 1], x, y, seeds, 40, lr)
    assert torch.equal(loss_crowd[:, at:at + 1], loss_alone)
    for a, b in zip(crowd.weights + crowd.biases, alone.weights + alone.biases):
        assert torch.equal(a[at:at + 1], b)


def test_bits_do_not_depend_on_the_thread_count(nb):
    x, y = _data([2, 3, 1], UNROLL_SAMPLES + 3)
    before = torch.get_num_threads()
    runs = []
    try:
        for threads in (1, 2):
            torch.set_num_threads(threads)
            runs.append(_run([2, 3, 1], x, y, 50, 20, 0.5))
    finally:
        torch.set_num_threads(before)
    (p1, l1, _), (p2, l2, _) = runs
    assert torch.equal(l1, l2)
    for a, b in zip(p1.weights + p1.biases, p2.weights + p2.biases):
        assert torch.equal(a, b)


@pytest.mark.parametrize("dtype,bound", [("float32", 5e-7), ("float64", 1e-15)])
def test_activations(nb, dtype, bound):
    # The exp2 forms of kernels/activations.py with the module's own exp2: absolute error
    # about one ulp of 1, exact ends, NaN in NaN out.
    import numpy as np

    mod = fc.module((2, 5, 3, 1), 5, dtype)

    @nb.njit(error_model="numpy")
    def apply(x, t, s):
        for i in range(x.shape[0]):
            t[i], s[i] = mod._tanh(x[i]), mod._sigmoid(x[i])

    x = np.concatenate([np.linspace(-30, 30, 200_001), [np.inf, -np.inf, np.nan]]).astype(dtype)
    t, s = np.empty_like(x), np.empty_like(x)
    apply(x, t, s)
    x64 = torch.from_numpy(x[:-3]).double()
    assert (torch.from_numpy(t[:-3]).double() - torch.tanh(x64)).abs().max() < bound
    assert (torch.from_numpy(s[:-3]).double() - torch.sigmoid(x64)).abs().max() < bound
    assert t[-3:-1].tolist() == [1.0, -1.0] and s[-3:-1].tolist() == [1.0, 0.0]
    assert np.isnan(t[-1]) and np.isnan(s[-1])


def test_launcher_checks_its_arguments(nb):
    x, y = five_points()
    pop = Population([2, 5, 3, 1], 4)
    packed, lr, active = fc.pack(pop.weights, pop.biases), torch.full((4,), 0.5), torch.ones(4, dtype=torch.int8)
    with pytest.raises(ValueError, match="loss_out"):
        fc.fused_train(x, y, packed, lr, active, torch.empty(3, 4), [2, 5, 3, 1], 5)
    with pytest.raises(ValueError, match="GPU-only"):
        fc.fused_train(x, y, packed, lr, active, torch.empty(5, 4), [2, 5, 3, 1], 5, fast_tanh=True)
    with pytest.raises(ValueError, match="x must be"):
        fc.fused_train(x[:, :1], y, packed, lr, active, torch.empty(5, 4), [2, 5, 3, 1], 5)
    fc.fused_train(x, y, packed, lr, active, torch.empty(0, 4), [2, 5, 3, 1], 0)  # no epochs: nothing to do


@pytest.mark.parametrize("threads", [1, 2, 3, 5])
def test_bits_do_not_depend_on_the_threads_argument(nb, threads):
    x, y = five_points()
    pop = Population([2, 5, 3, 1], 70)  # 5 blocks: shares of 5, 3+2, 2+2+1, 1 each
    packed0, lr = fc.pack(pop.weights, pop.biases), torch.linspace(0.1, 2.0, 70)
    runs = []
    for t in (threads, None):
        packed, active, loss = packed0.clone(), torch.ones(70, dtype=torch.int8), torch.empty(20, 70)
        fc.fused_train(x, y, packed, lr, active, loss, [2, 5, 3, 1], 20, threads=t)
        runs.append((packed, loss))
    assert torch.equal(runs[0][0], runs[1][0]) and torch.equal(runs[0][1], runs[1][1])
    with pytest.raises(ValueError, match="threads"):
        fc.fused_train(x, y, packed, lr, active, loss, [2, 5, 3, 1], 20, threads=0)


def test_cache_dir_follows_the_environment(monkeypatch, tmp_path):
    monkeypatch.delenv("FASTMLP_CACHE_DIR", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert fc.cache_dir() == tmp_path / "xdg" / "fastmlp" / "numba"
    monkeypatch.delenv("XDG_CACHE_HOME")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert fc.cache_dir() == tmp_path / "home" / ".cache" / "fastmlp" / "numba"
    monkeypatch.setenv("FASTMLP_CACHE_DIR", str(tmp_path / "mine"))
    assert fc.cache_dir() == tmp_path / "mine" / "numba"


# ---- the disk cache: each kind of damaged entry is detected, rebuilt, and computes the same --
_SMALL = ([2, 1], 1)  # the cheapest program to compile
_TRAIN = """
import json, sys, torch
from fastmlp import Population, program_numba as fc
sizes, N = {sizes!r}, {N!r}
x = torch.linspace(-1, 1, N * sizes[0]).reshape(N, sizes[0]); y = torch.ones(N, sizes[-1])
pop = Population(sizes, 3)
packed, loss = fc.pack(pop.weights, pop.biases), torch.empty(7, 3)
fc.fused_train(x, y, packed, torch.full((3,), 0.5), torch.ones(3, dtype=torch.int8), loss, sizes, 7)
st = fc.compiled(tuple(sizes), N, "float32").stats
print(json.dumps({{"loss": loss.tolist(), "params": packed.tolist(), "hits": sum(st.cache_hits.values()),
                  "misses": sum(st.cache_misses.values())}}))
"""


def _train_in_subprocess(cache):
    import json
    import os

    env = dict(os.environ, FASTMLP_CACHE_DIR=str(cache))
    out = subprocess.run([sys.executable, "-c", _TRAIN.format(sizes=_SMALL[0], N=_SMALL[1])], env=env,
                         capture_output=True, text=True, check=True).stdout
    return json.loads(out.strip().splitlines()[-1])


@pytest.fixture(scope="module")
def warm_cache(tmp_path_factory):
    pytest.importorskip("numba")
    cache = tmp_path_factory.mktemp("fastmlp_cache")
    first = _train_in_subprocess(cache)
    assert first["misses"] == 1 and first["hits"] == 0  # compiled
    return cache, first


def _damage(path, how):
    data = path.read_bytes()
    if how == "truncated":
        path.write_bytes(data[: len(data) // 2])
    elif how == "garbled":
        mid = len(data) // 2
        path.write_bytes(data[:mid] + bytes(b ^ 0x5A for b in data[mid:mid + 64]) + data[mid + 64:])
    elif how == "emptied":
        path.write_bytes(b"")


def test_an_intact_cache_entry_is_loaded_not_compiled(warm_cache, tmp_path):
    import shutil

    cache, first = warm_cache
    shutil.copytree(cache, tmp_path / "c")  # (as the damage cases below start)
    again = _train_in_subprocess(tmp_path / "c")
    assert (again["hits"], again["misses"]) == (1, 0)
    assert (again["loss"], again["params"]) == (first["loss"], first["params"])


# Every file of an entry once, every kind of damage at least once (each case recompiles in a
# new process, ~5 s: the full 4 x 3 product cost a minute of make test).
@pytest.mark.parametrize("kind,how", [(".py", "truncated"), (".nbi", "garbled"), (".nbc", "emptied"),
                                      (".ok", "garbled")])
def test_a_damaged_cache_entry_is_rebuilt(warm_cache, tmp_path, monkeypatch, kind, how):
    import shutil

    cache, first = warm_cache
    shutil.copytree(cache, tmp_path / "c")
    monkeypatch.setenv("FASTMLP_CACHE_DIR", str(tmp_path / "c"))
    assert fc.is_cached(*_SMALL, "float32")
    files = sorted(p for p in (tmp_path / "c").rglob(f"*{kind}") if "fused_cpu_train" in p.name or kind in (".py", ".ok"))
    assert files
    _damage(files[0], how)
    assert not fc.is_cached(*_SMALL, "float32")
    rebuilt = _train_in_subprocess(tmp_path / "c")
    assert rebuilt["misses"] == 1  # compiled again, not trusted
    assert (rebuilt["loss"], rebuilt["params"]) == (first["loss"], first["params"])  # the same bits
    assert fc.is_cached(*_SMALL, "float32")


@pytest.mark.parametrize("what", ["manifest", "index"])
def test_a_cache_entry_of_another_numba_is_rebuilt(warm_cache, tmp_path, monkeypatch, what):
    import json
    import pickle
    import shutil

    cache, first = warm_cache
    shutil.copytree(cache, tmp_path / "c")
    monkeypatch.setenv("FASTMLP_CACHE_DIR", str(tmp_path / "c"))
    if what == "manifest":  # the entry says it was compiled by another numba
        ok = next((tmp_path / "c").rglob("*.ok"))
        m = json.loads(ok.read_text())
        m["versions"]["numba"] = "0.1.0"
        ok.write_text(json.dumps(m))
    else:  # numba's index written by another numba version (its first pickle is the version)
        nbi = next(p for p in (tmp_path / "c").rglob("*.nbi") if "fused_cpu_train" in p.name)
        rest = nbi.read_bytes()[len(pickle.dumps(pickle.loads(nbi.read_bytes()))):]
        nbi.write_bytes(pickle.dumps("0.1.0") + rest)
    assert not fc.is_cached(*_SMALL, "float32")
    rebuilt = _train_in_subprocess(tmp_path / "c")
    assert rebuilt["misses"] == 1 and (rebuilt["loss"], rebuilt["params"]) == (first["loss"], first["params"])
    assert fc.is_cached(*_SMALL, "float32")


def test_is_cached_imports_no_numba(tmp_path):
    code = ("import sys, fastmlp.program_numba as f; print(f.is_cached([2, 5, 3, 1], 5, 'float32'), "
            "'numba' in sys.modules)")
    import os

    env = dict(os.environ, FASTMLP_CACHE_DIR=str(tmp_path))
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["False", "False"]
