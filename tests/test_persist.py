"""Keeping what was trained: Population.save / load (fastmlp/checkpoint.py), the file checked
field by field (to_module, memory and training across a save: tests/test_persist_use.py)."""
import os
import pickle
import stat
from pathlib import Path

import pytest
import torch

from fastmlp import Population
from fastmlp.checkpoint import FORMAT, VERSION, PopulationFileError
from fastmlp.initializers import parse_init
from fastmlp.layout import is_network_minor
from fastmlp.validate import ArgumentError, ArgumentTypeError

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
    (_set("gain", 10**400), r"gain must be a finite number, got 1000000"),  # too large for a float
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


