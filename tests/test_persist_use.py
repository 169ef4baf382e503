"""Using what was kept: to_module / from_modules, the memory refusal of Population(), and
training that continues across a save (the file format itself: tests/test_persist.py)."""
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
import torch

from fastmlp import Population, datasets, memory, train
from fastmlp.architecture import Architecture
from fastmlp.layout import is_network_minor
from fastmlp.validate import ArgumentError, ArgumentTypeError, NotEnoughMemory
from tests.test_persist import _bits, assert_same_population

ROOT = Path(__file__).resolve().parents[1]


# -- to_module / from_modules -------------------------------------------------------------
@pytest.mark.parametrize("dtype,rtol", [(torch.float64, 1e-12), (torch.float32, 1e-6)])
@pytest.mark.parametrize("sizes", [[2, 5, 3, 1], [2, 1], [3, 7, 4, 2]])
def test_to_module_computes_network_i(sizes, dtype, rtol):
    pop = Population(sizes, 7, gain=1.7, dtype=dtype)
    for b in pop.biases:
        b.copy_(torch.linspace(-0.5, 0.5, b.numel()).view(b.shape))  # nonzero biases, set in place
    x = torch.rand(11, sizes[0], generator=torch.Generator().manual_seed(0), dtype=dtype) * 4 - 2
    expected = pop.predict(x)
    rng = torch.random.get_rng_state()
    for i in range(len(pop)):
        m = pop.to_module(i)
        assert isinstance(m, torch.nn.Sequential)
        assert [type(c).__name__ for c in m] == ["Linear", "Tanh"] * (len(sizes) - 2) + ["Linear", "Sigmoid"]
        assert all(p.dtype == dtype and p.device == pop.device for p in m.parameters())
        with torch.no_grad():
            torch.testing.assert_close(m(x), expected[i], rtol=rtol, atol=0)
    assert torch.equal(torch.random.get_rng_state(), rng)  # building the modules drew no random numbers
    assert pop.to_module(-1)[0].weight.shape == (sizes[1], sizes[0])


def test_to_module_copies_the_parameters():
    pop = Population([2, 5, 3, 1], 1)  # G = 1: a network's W^T is contiguous, and still a copy
    before = pop.clone()
    m = pop.to_module(0)
    with torch.no_grad():
        for p in m.parameters():
            p.add_(1.0)
    assert_same_population(pop, before)
    with pytest.raises(IndexError, match="out of range"):
        pop.to_module(1)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_from_modules_is_the_population(dtype):
    pop = Population([3, 7, 4, 2], [9, 4, 2**33, 0, 5], init="he_normal", dtype=dtype)
    back = Population.from_modules([pop.to_module(i) for i in range(len(pop))], seeds=pop.seeds)
    assert back.init is None and back.gain is None
    back.init, back.gain = pop.init, pop.gain  # unknown to the modules; everything else is bitwise
    assert_same_population(pop, back)
    assert all(is_network_minor(t) for t in back.weights + back.biases)
    default = Population.from_modules(pop.to_module(i) for i in range(2))
    assert default.seeds.tolist() == [0, 1]  # placeholders
    x, y = datasets.five_points()
    lab = Population([2, 5, 3, 1], 20)
    twin = Population.from_modules([lab.to_module(i) for i in range(20)], seeds=lab.seeds)
    r1, r2 = train(x, y, lab, 30, 0.5, backend="torch"), train(x, y, twin, 30, 0.5, backend="torch")
    assert torch.equal(r1.losses, r2.losses)  # same layout, same bits: trains the same


def test_from_modules_takes_plain_torch_modules():
    lin = torch.nn.Linear(2, 4)
    out = torch.nn.Linear(4, 1)
    m = torch.nn.Sequential(lin, torch.nn.Tanh(), out, torch.nn.Sigmoid())
    pop = Population.from_modules([m], seeds=[42])
    assert Population.from_modules(m).sizes == [2, 4, 1]  # one module alone: a population of one
    assert pop.sizes == [2, 4, 1] and pop.seeds.tolist() == [42]
    assert torch.equal(pop.weights[0][0], lin.weight.detach().t())
    x = torch.randn(6, 2)
    with torch.no_grad():
        torch.testing.assert_close(pop.predict(x)[0], m(x), rtol=1e-6, atol=0)


def _seq(*layers):
    return torch.nn.Sequential(*layers)


L, T, S = torch.nn.Linear, torch.nn.Tanh, torch.nn.Sigmoid


@pytest.mark.parametrize("modules,seeds,exc,needle", [
    ([], None, ArgumentError, "need at least one module"),
    ([L(2, 1)], None, ArgumentTypeError, "module 0 is a Linear, not a torch.nn.Sequential"),
    ([_seq(L(2, 3), torch.nn.ReLU(), L(3, 1), S())], None, ArgumentError,
     r"module 0 has the activations \[ReLU, Sigmoid\]; a fastmlp population has Tanh, Sigmoid"),
    ([_seq(L(2, 3), T(), L(3, 1), T())], None, ArgumentError, r"activations \[Tanh, Tanh\]"),
    ([_seq(L(2, 3), T(), L(3, 1))], None, ArgumentError, r"must alternate nn.Linear and an activation .*"
                                                         r"got \[Linear, Tanh, Linear\]"),
    ([_seq(L(2, 3), T(), L(4, 1), S())], None, ArgumentError, "layer 1 takes 4 inputs but layer 0 gives 3"),
    ([_seq(L(2, 3, bias=False), T(), L(3, 1), S())], None, ArgumentError, "nn.Linear without a bias"),
    ([_seq(L(2, 3), T(), L(3, 1), S()), _seq(L(2, 4), T(), L(4, 1), S())], None, ArgumentError,
     r"module 1 is sizes \[2, 4, 1\], float32 on cpu, module 0 is sizes \[2, 3, 1\], float32 on cpu"),
    ([_seq(L(2, 3), T(), L(3, 1), S()), _seq(L(2, 3), T(), L(3, 1), S()).double()], None, ArgumentError,
     r"module 1 is sizes \[2, 3, 1\], float64 on cpu"),
    ([_seq(L(2, 3), T(), L(3, 1, dtype=torch.float64), S())], None, ArgumentError,
     r"module 0's parameters must share one floating dtype and device, got float32 on cpu, float64 on cpu"),
    ([_seq(L(2, 1), S())] * 2, [1, 2, 3], ArgumentError, "from_modules: 3 seeds for 2 networks"),
    ([_seq(L(2, 1), S())] * 2, [4, 4], ArgumentError, "seeds must be distinct"),
])
def test_from_modules_bad_input(modules, seeds, exc, needle):
    with pytest.raises(exc, match=needle) as e:
        Population.from_modules(modules, seeds=seeds)
    assert e.value.arg in ("modules", "seeds")


# -- memory: refused before allocating, and the estimate is honest ---------------------------
def test_a_population_too_large_is_refused_fast_with_the_sizes(monkeypatch):
    monkeypatch.setattr(memory, "available_bytes", lambda device: 2**30)  # 1 GiB free
    G = 2**24
    need = Architecture([2, 5, 3, 1]).init_bytes(G, 4, "uniform")
    start = time.perf_counter()
    with pytest.raises(NotEnoughMemory) as e:
        Population([2, 5, 3, 1], G)
    assert time.perf_counter() - start < 1.0
    assert isinstance(e.value, MemoryError) and e.value.arg == "seeds"
    msg = str(e.value)
    assert f"creating {G} networks of 2 -> 5 tanh -> 3 tanh -> 1 sigmoid in float32" in msg
    assert f"needs {memory.fmt_bytes(need)} ({memory.fmt_bytes(G * 37 * 4)} of parameters" in msg
    assert f"only {memory.fmt_bytes(0.7 * 2**30)} (70% of the free memory on cpu) can be used" in msg
    with pytest.raises(NotEnoughMemory, match="in float64 \\(he_normal init\\)"):  # seeds as a tensor too
        Population([2, 5, 3, 1], torch.arange(2**21), init="he_normal", dtype=torch.float64)


def test_an_absurd_population_is_refused_on_any_machine():
    start = time.perf_counter()
    with pytest.raises(NotEnoughMemory, match=r"creating 1099511627776 networks .* needs \d+\.\d TiB"):
        Population([2, 5, 3, 1], 2**40)
    assert time.perf_counter() - start < 1.0


_MEASURE = textwrap.dedent("""
    import sys, resource, torch
    from fastmlp import Population
    from fastmlp.initializers import parse_init
    sizes, G, init, dtype = [2, 5, 3, 1], int(sys.argv[1]), sys.argv[2], getattr(torch, sys.argv[3])

    def status(key):
        with open("/proc/self/status") as f:
            return next(int(line.split()[1]) * 1024 for line in f if line.startswith(key))

    Population(sizes, 64, init=init, dtype=dtype)  # warm up: the one-time costs are not the population's
    try:  # reset the peak to the current size (Linux); else the peak so far
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        before, peak = status("VmRSS:"), lambda: status("VmHWM:")
    except OSError:
        before, peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024, \\
            lambda: resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    pop = Population(sizes, G, init=init, dtype=dtype)
    grown = peak() - before
    print(grown, pop.arch.init_bytes(G, dtype.itemsize, parse_init(init).distribution))
""")


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads the peak RSS from /proc")
@pytest.mark.parametrize("init,dtype", [("glorot_uniform", "float32"), ("he_normal", "float64")])
@pytest.mark.slow
def test_memory_estimate_is_honest(init, dtype):
    G = 2**19  # 0.25 / 0.6 GiB: far above the fixed costs of a process
    out = subprocess.run([sys.executable, "-c", _MEASURE, str(G), init, dtype], capture_output=True, text=True,
                         timeout=120, cwd=ROOT)
    assert out.returncode == 0, out.stderr
    grown, estimate = map(int, out.stdout.split())
    assert grown > G * 37 * (4 if dtype == "float32" else 8)  # the measurement sees the parameters
    assert grown <= estimate <= 3 * grown, f"grew {grown / 2**20:.1f} MiB, estimated {estimate / 2**20:.1f} MiB"


# -- training continues across a save exactly as without it -------------------------------
@pytest.mark.parametrize("backend,dtype", [("torch", torch.float32), ("torch", torch.float64),
                                           ("fused", torch.float32)])
def test_train_save_load_train_is_one_run(tmp_path, backend, dtype):
    if backend == "fused":
        pytest.importorskip("numba", reason="the CPU fused program needs numba")
    x, y = datasets.five_points()
    pop = Population([2, 5, 3, 1], 70, dtype=dtype)  # not a multiple of the 16- and 64-network blocks
    whole = pop.clone()
    train(x, y, pop, 100, 0.25, backend=backend)
    pop.save(tmp_path / "population.pt")
    loaded = Population.load(tmp_path / "population.pt")
    second = train(x, y, loaded, 100, 0.25, backend=backend)
    ref = train(x, y, whole, 200, 0.25, backend=backend)
    assert second.backend == ref.backend == backend
    assert torch.equal(_bits(second.losses), _bits(ref.losses[:, 100:]))
    assert torch.equal(_bits(second.final_loss), _bits(ref.final_loss))
    assert torch.equal(second.diverged, ref.diverged)
    assert_same_population(loaded, whole)


def test_from_modules_of_something_that_is_not_modules_names_the_argument():
    for bad in (5, None, "Linear"):
        with pytest.raises(ArgumentTypeError, match="from_modules takes torch.nn.Sequential modules") as e:
            Population.from_modules(bad)
        assert e.value.arg == "modules"
