"""Keeping what was trained: Population.save / load (fastmlp/checkpoint.py), to_module /
from_modules, the memory refusal of Population(), and training that continues across a save."""
import os
import pickle
import stat
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
import torch

from fastmlp import Population, datasets, memory, train
from fastmlp.architecture import Architecture
from fastmlp.checkpoint import FORMAT, VERSION, PopulationFileError
from fastmlp.initializers import parse_init
from fastmlp.layout import is_network_minor
from fastmlp.validate import ArgumentError, ArgumentTypeError, NotEnoughMemory

ROOT = Path(__file__).resolve().parents[1]


def _bits(t: torch.Tensor) -> torch.Tensor:
    """The tensor's bits as integers: NaNs compare equal to themselves, -0.0 differs from 0.0."""
    ints = {8: torch.int64, 4: torch.int32, 2: torch.int16}
    return t.detach().cpu().contiguous().view(ints[t.element_size()]) if t.dtype.is_floating_point else t.cpu()


def assert_same_population(a: Population, b: Population):
    assert a.sizes == b.sizes and a.dtype == b.dtype and len(a) == len(b)
    assert a.init == b.init and a.gain == b.gain
    assert torch.equal(a.seeds.cpu(), b.seeds.cpu()) and b.seeds.dtype == torch.int64
    for k, (ta, tb) in enumerate(zip(a.weights + a.biases, b.weights + b.biases)):
        assert ta.shape == tb.shape and ta.dtype == tb.dtype, k
        assert torch.equal(_bits(ta), _bits(tb)), f"tensor {k} differs"


# -- round trip ---------------------------------------------------------------------------
@pytest.mark.parametrize("sizes,seeds,init,gain,dtype", [
    ([2, 5, 3, 1], 16, "glorot_uniform", 1.0, torch.float32),
    ([2, 5, 3, 1], 16, "glorot_uniform", 1.0, torch.float64),
    ([2, 1], 3, "he_normal", 2.5, torch.float32),  # depth 0: one layer
    ([3, 7, 5, 2], [5, 2**40, 17, 0, 99], "normal:0.123456789", 0.7, torch.float64),  # odd widths, sparse seeds
    ([1, 1, 1], 1, "uniform:0.3", 1.0, torch.float32),
    ([4, 2], 2, "zeros", 1.0, torch.float64),
    ([2, 3, 1], 3, "he_uniform", 1.0, torch.bfloat16),  # the half precisions are kept too
])
def test_round_trip_is_bitwise(tmp_path, sizes, seeds, init, gain, dtype):
    pop = Population(sizes, seeds, init=init, gain=gain, dtype=dtype)
    pop.save(tmp_path / "pop.pt")
    back = Population.load(tmp_path / "pop.pt")
    assert_same_population(pop, back)
    assert back.device == torch.device("cpu")
    assert all(is_network_minor(t) for t in back.weights + back.biases)  # trains as the original
    # Each tensor owns its memory: no two share a storage.
    ptrs = [t.untyped_storage().data_ptr() for t in back.weights + back.biases + [back.seeds]]
    assert len(set(ptrs)) == len(ptrs)


def test_init_text_keeps_every_digit(tmp_path):
    # str(InitScheme) prints 6 digits ("normal:0.123457"); the file keeps the float exactly.
    pop = Population([2, 3, 1], 2, init="normal:0.123456789")
    assert parse_init(str(pop.init)) != pop.init  # the display string alone would not round-trip
    pop.save(tmp_path / "p.pt")
    state = torch.load(tmp_path / "p.pt", weights_only=True)
    assert state["init"] == "normal:0.123456789" and parse_init(state["init"]) == pop.init
    assert Population.load(tmp_path / "p.pt").init.param == 0.123456789
    for name in ("glorot_uniform", "he_normal", "uniform:0.5", "normal", "zeros"):
        scheme = Population([2, 1], 1, init=name).init
        Population([2, 1], 1, init=name).save(tmp_path / "q.pt")
        assert parse_init(str(scheme)) == scheme == Population.load(tmp_path / "q.pt").init


def test_diverged_networks_are_kept(tmp_path):
    pop = Population([2, 5, 3, 1], 6, dtype=torch.float64)
    pop.weights[0][2, 1, 3] = float("nan")
    pop.weights[1][4] = float("inf")
    pop.biases[2][5] = -float("inf")
    pop.biases[0][1, 0] = -0.0
    pop.save(tmp_path / "d.pt")
    back = Population.load(tmp_path / "d.pt")
    assert_same_population(pop, back)
    assert torch.isnan(back.weights[0][2, 1, 3]) and torch.isinf(back.weights[1][4]).all()


def test_round_trip_of_stacked_networks_and_of_a_view(tmp_path):
    big = Population([2, 5, 3, 1], 1000)
    view = big[10:13]  # a view into a larger storage: the file holds only its networks
    view.save(tmp_path / "v.pt")
    back = Population.load(tmp_path / "v.pt")
    assert_same_population(view, back)
    assert back.seeds.tolist() == [10, 11, 12]
    assert (tmp_path / "v.pt").stat().st_size < 20_000  # not the 148 KB of the whole population

    stacked = Population.from_networks([big.network(i) for i in (5, 7)], seeds=[5, 7])
    stacked.save(tmp_path / "s.pt")
    back = Population.load(tmp_path / "s.pt")
    assert back.init is None and back.gain is None and back.seeds.tolist() == [5, 7]
    assert_same_population(stacked, back)
    assert "init=" not in repr(back)


def test_file_contents_are_plain_values(tmp_path):
    pop = Population([2, 5, 3, 1], 4, init="he_uniform", gain=1.5)
    pop.save(tmp_path / "p.pt")
    state = torch.load(tmp_path / "p.pt", weights_only=True)
    assert state["format"] == FORMAT and state["version"] == VERSION == 1
    assert state["sizes"] == [2, 5, 3, 1] and state["activations"] == ["tanh", "tanh", "sigmoid"]
    assert state["dtype"] == "float32" and state["init"] == "he_uniform" and state["gain"] == 1.5
    assert [tuple(w.shape) for w in state["weights"]] == [(4, 2, 5), (4, 5, 3), (4, 3, 1)]
    assert state["seeds"].dtype == torch.int64 and state["seeds"].tolist() == [0, 1, 2, 3]


def test_load_onto_a_device_and_bad_device(tmp_path):
    pop = Population([2, 5, 3, 1], 4)
    pop.save(tmp_path / "p.pt")
    back = Population.load(tmp_path / "p.pt", device="cpu")
    assert_same_population(pop, back)
    with pytest.raises(ArgumentError, match="device 'nonsense'") as e:
        Population.load(tmp_path / "p.pt", device="nonsense")
    assert e.value.arg == "device"


# -- saving: atomic, checked ----------------------------------------------------------------
def test_save_is_atomic_and_overwrites(tmp_path, monkeypatch):
    a, b = Population([2, 5, 3, 1], 4), Population([2, 5, 3, 1], [7, 8])
    path = tmp_path / "deep" / "er" / "p.pt"  # parent folders are created
    a.save(str(path))
    mode = stat.S_IMODE(path.stat().st_mode)
    assert mode == 0o666 & ~_umask()  # a plain open()'s permissions, not mkstemp's 0600

    def broken_save(obj, f, *args, **kwargs):
        Path(f).write_bytes(b"half a file")
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(torch, "save", broken_save)
    with pytest.raises(OSError, match="No space"):
        b.save(path)
    monkeypatch.undo()
    assert_same_population(a, Population.load(path))  # the old file, whole
    assert os.listdir(path.parent) == ["p.pt"]  # no temporary left behind
    b.save(path)
    assert_same_population(b, Population.load(path))
    assert os.listdir(path.parent) == ["p.pt"]


def _umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


@pytest.mark.parametrize("path,exc,needle", [
    (123, ArgumentTypeError, "path must be a str or os.PathLike, got int"),
    (b"p.pt", ArgumentTypeError, "path must be a str or os.PathLike"),
    ("", ArgumentError, "path is empty"),
])
def test_save_and_load_bad_paths(path, exc, needle):
    pop = Population([2, 1], 2)
    with pytest.raises(exc, match=needle) as e:
        pop.save(path)
    assert e.value.arg == "path"
    with pytest.raises(exc, match=needle):
        Population.load(path)


def test_save_into_a_folder_is_refused(tmp_path):
    with pytest.raises(ArgumentError, match=r"is a folder; name the file to write, e\.g\. .*population\.pt"):
        Population([2, 1], 2).save(tmp_path)


def test_save_refuses_a_population_load_would_refuse(tmp_path):
    pop = Population([2, 5, 3, 1], 4)
    pop.weights[1] = torch.zeros(4, 5, 2)  # edited by hand into an inconsistent population
    with pytest.raises(ArgumentError, match=r"cannot save this population to .*p\.pt: weights\[1\] has shape "
                                            r"\(4, 5, 2\), expected \(4, 5, 3\)"):
        pop.save(tmp_path / "p.pt")
    assert not (tmp_path / "p.pt").exists()


# -- loading: every way a file can be wrong --------------------------------------------------
def _state(tmp_path, sizes=(2, 5, 2, 1), G=4):
    Population(list(sizes), G).save(tmp_path / "good.pt")
    return torch.load(tmp_path / "good.pt", weights_only=True)


def _set(key, value):
    def edit(s):
        s[key] = value
    return edit


def _del(key):
    def edit(s):
        del s[key]
    return edit


def _edit_tensor(key, l, value):
    def edit(s):
        s[key][l] = value
    return edit


LOAD_ERRORS = [  # (edit of a good state of sizes [2, 5, 2, 1], G = 4), the message
    (_edit_tensor("weights", 1, torch.zeros(4, 5, 3)),
     r"weights\[1\] has shape \(4, 5, 3\), expected \(4, 5, 2\) for sizes \[2, 5, 2, 1\] and 4 seeds"),
    (_edit_tensor("biases", 0, torch.zeros(3, 5)), r"biases\[0\] has shape \(3, 5\), expected \(4, 5\)"),
    (_edit_tensor("weights", 2, torch.zeros(4, 2, 1, dtype=torch.float64)),
     r"weights\[2\] is float64, but the file's dtype is float32"),
    (_edit_tensor("biases", 2, [0.0] * 4), r"biases\[2\] must be a dense tensor, got list"),
    (_set("weights", []), r"weights must be a list of 3 tensors \(one per layer\) for sizes \[2, 5, 2, 1\], got 0"),
    (_set("version", 2), r"format version 2, written by a newer fastmlp .*reads up to version 1: upgrade fastmlp"),
    (_set("version", 0), r"unknown format version 0"),
    (_set("version", "1"), r"unknown format version '1'"),
    (_set("format", "something.else"), r"not a population file: its format is 'something.else', not "
                                       r"'fastmlp.population'"),
    (_del("biases"), r"is damaged: missing 'biases'"),
    (_del("seeds"), r"is damaged: missing 'seeds'"),
    (_set("sizes", [2]), r"sizes must be a list of at least two ints >= 1, got \[2\]"),
    (_set("sizes", [2, 0, 2, 1]), r"sizes must be a list of at least two ints >= 1"),
    (_set("sizes", [2, 5, 3, 1]), r"weights\[0\] has shape \(4, 2, 5\), expected \(4, 2, 5\)|"
                                  r"weights\[1\] has shape \(4, 5, 2\), expected \(4, 5, 3\)"),
    (_set("activations", ["relu", "relu", "sigmoid"]), r"activations \['relu', 'relu', 'sigmoid'\]; this "
                                                       r"fastmlp implements \['tanh', 'tanh', 'sigmoid'\]"),
    (_set("dtype", "int32"), r"dtype must be one of float32, float64, float16, bfloat16, got 'int32'"),
    (_set("dtype", "float64"), r"weights\[0\] is float32, but the file's dtype is float64"),
    (_set("seeds", torch.tensor([0, 1, 1, 2])), r"seeds must be distinct"),
    (_set("seeds", torch.tensor([0, 1, -2, 3])), r"seeds must be >= 0"),
    (_set("seeds", torch.tensor([0.0, 1, 2, 3])), r"seeds must be a 1-D int64 tensor .*got float32 \(4,\)"),
    (_set("seeds", [0, 1, 2, 3]), r"seeds must be a 1-D int64 tensor of at least one seed, got list"),
    (_set("seeds", torch.arange(3)), r"weights\[0\] has shape \(4, 2, 5\), expected \(3, 2, 5\) .* and 3 seeds"),
    (_set("init", "xavier"), r"init: unknown init scheme 'xavier'"),
    (_set("init", 3), r"init must be a string such as 'glorot_uniform', got int"),
    (_set("gain", None), r"init and gain are both known or both None, got init='glorot_uniform', gain=None"),
    (_set("gain", float("nan")), r"gain must be a finite number, got nan"),
]


@pytest.mark.parametrize("edit,needle", LOAD_ERRORS)
def test_load_checks_everything(tmp_path, edit, needle):
    state = _state(tmp_path)
    edit(state)
    path = tmp_path / "runs" / "x" / "population.pt"
    path.parent.mkdir(parents=True)
    torch.save(state, path)
    with pytest.raises(PopulationFileError, match=needle) as e:
        Population.load(path)
    assert str(e.value).startswith(f"{path}: ") and e.value.path == str(path)
    assert isinstance(e.value, ValueError)


def test_load_accepts_extra_keys_and_copies_odd_layouts(tmp_path):
    state = _state(tmp_path, (2, 5, 1), 4)
    state["note"] = "written by hand"
    state["weights"] = [w.contiguous() for w in state["weights"]]  # networks-major
    state["biases"][1] = torch.nn.Parameter(state["biases"][1].clone())
    torch.save(state, tmp_path / "odd.pt")
    back = Population.load(tmp_path / "odd.pt")
    assert all(is_network_minor(t) and type(t) is torch.Tensor and not t.requires_grad
               for t in back.weights + back.biases)
    assert torch.equal(back.weights[0], state["weights"][0])


class _Something:
    pass


@pytest.mark.parametrize("write,needle", [
    (lambda p: torch.save(Population([2, 1], 2), p),
     r"holds a pickled Python object \(fastmlp\.population\.Population\), not a population file; fastmlp reads "
     r"only tensors, numbers and strings from a file and never runs code from one"),
    (lambda p: p.write_bytes(pickle.dumps(_Something(), protocol=2)),
     r"holds a pickled Python object \((tests\.)?test_persist\._Something\)"),
    (lambda p: p.write_bytes(pickle.dumps(_Something)),  # a class, and pickle's newest protocol
     r"is not a population file \(torch\.load\(weights_only=True\) refuses it: |holds a pickled Python object"),
    (lambda p: p.write_text("sizes,seeds\n2,5\n"), r"is not a population file \(torch\.load cannot read it: "),
    (lambda p: p.write_bytes(b""), r"is empty, not a population file \(a write that never finished\?\)"),
    (lambda p: p.write_bytes(b"PK\x03\x04" + bytes(100)), r"is not a population file \(torch\.load cannot read it: "),
    (lambda p: torch.save(torch.ones(3), p), r"is not a population file: it holds a Tensor, without the format "
                                              r"marker 'fastmlp\.population'"),
    (lambda p: torch.save({"losses": torch.ones(3)}, p), r"it holds a dict with keys \['losses'\], without the "
                                                          r"format marker"),
    (lambda p: torch.save([torch.ones(3)], p), r"it holds a list, without the format marker"),
])
def test_load_refuses_files_that_are_not_population_files(tmp_path, write, needle):
    path = tmp_path / "population.pt"
    write(path)
    with pytest.raises(PopulationFileError, match=needle) as e:
        Population.load(path)
    assert str(e.value).startswith(f"{path}: ")


def test_loading_a_pickled_object_runs_no_code(tmp_path):
    marker = tmp_path / "ran"
    payload = pickle.dumps(_RunsCode(str(marker)), protocol=2)
    (tmp_path / "evil.pt").write_bytes(payload)
    with pytest.raises(PopulationFileError, match=r"pickled Python object \(posix\.system\)"):
        Population.load(tmp_path / "evil.pt")
    assert not marker.exists()


class _RunsCode:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_missing_file_and_folder(tmp_path):
    missing = tmp_path / "runs" / "nope" / "population.pt"
    with pytest.raises(FileNotFoundError, match=r"no such population file: .*nope/population\.pt") as e:
        Population.load(missing)
    assert e.value.filename == str(missing)
    with pytest.raises(IsADirectoryError, match=r"is a folder, not a population file: ") as e:
        Population.load(tmp_path)
    assert e.value.filename == str(tmp_path)
    Population([2, 1], 2).save(tmp_path / "run" / "population.pt")
    with pytest.raises(IsADirectoryError, match=r"it holds .*run/population\.pt: load that"):
        Population.load(tmp_path / "run")


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
