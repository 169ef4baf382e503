"""fastmlp.datasets: the lab's five points, the generators, CSV loading, the registry."""
import math
import warnings

import pytest
import torch

from fastmlp import Population, datasets, train
from fastmlp.datasets import DATASETS, circles, five_points, get, load_csv, moons, spirals, xor
from fastmlp.validate import TargetRangeWarning

GENERATORS = {"xor": xor, "circles": circles, "moons": moons, "spirals": spirals}


def test_five_points_exact():
    x, y = five_points()
    assert x.dtype == torch.float32 and y.dtype == torch.float32
    assert x.shape == (5, 2) and y.shape == (5, 1)
    assert torch.equal(x, torch.tensor([[0., 0.], [1., 0.], [0., -1.], [-1., 0.], [0., 1.]]))
    assert torch.equal(y, torch.tensor([[1.], [0.], [0.], [0.], [0.]]))


@pytest.mark.parametrize("name", sorted(GENERATORS))
@pytest.mark.parametrize("n", [1, 2, 7, 100])
def test_generator_shape_dtype_balance(name, n):
    x, y = GENERATORS[name](n=n, seed=3)
    assert x.shape == (n, 2) and y.shape == (n, 1)
    assert x.dtype == torch.float32 and y.dtype == torch.float32
    assert x.is_contiguous() and y.is_contiguous()
    assert torch.isfinite(x).all()
    assert set(y.flatten().tolist()) <= {0.0, 1.0}
    ones = int(y.sum().item())
    assert ones == n // 2  # balanced: class 0 takes the odd sample


@pytest.mark.parametrize("name", sorted(GENERATORS))
def test_generator_fits_plot_grid(name):
    x, _ = GENERATORS[name](n=400, seed=0)
    # Noise can push a few points out; the bulk must sit in the lab's [-2, 2] grid.
    inside = (x.abs() <= 2).all(dim=1).float().mean().item()
    assert inside >= 0.99
    assert x.abs().max().item() < 2.5


@pytest.mark.parametrize("name", sorted(GENERATORS))
def test_generator_deterministic_per_seed(name):
    fn = GENERATORS[name]
    x1, y1 = fn(n=50, seed=11)
    x2, y2 = fn(n=50, seed=11)
    assert torch.equal(x1, x2) and torch.equal(y1, y2)
    x3, _ = fn(n=50, seed=12)
    assert not torch.equal(x1, x3)


@pytest.mark.parametrize("name", sorted(GENERATORS))
def test_generator_leaves_global_rng_alone(name):
    torch.manual_seed(1234)
    expected = torch.rand(3)
    torch.manual_seed(1234)
    GENERATORS[name](n=20, seed=5)
    assert torch.equal(torch.rand(3), expected)


def test_generator_without_noise_is_exact():
    x, y = circles(n=8, noise=0.0, factor=0.5, seed=0)
    r = x.norm(dim=1)
    torch.testing.assert_close(r[y[:, 0] == 0], torch.ones(4), rtol=0, atol=1e-6)
    torch.testing.assert_close(r[y[:, 0] == 1], torch.full((4,), 0.5), rtol=0, atol=1e-6)
    x, y = xor(n=8, noise=0.0, seed=0)
    assert torch.equal(x.abs(), torch.ones(8, 2))
    # label 1 exactly where the signs differ
    assert torch.equal(y[:, 0], (x[:, 0] * x[:, 1] < 0).float())


@pytest.mark.parametrize("name", sorted(GENERATORS))
@pytest.mark.parametrize("bad,exc", [(0, ValueError), (-3, ValueError), (2.5, TypeError),
                                     (True, TypeError), ("10", TypeError)])
def test_generator_rejects_bad_n(name, bad, exc):
    with pytest.raises(exc, match=r"\bn\b"):
        GENERATORS[name](n=bad)


@pytest.mark.parametrize("name", sorted(GENERATORS))
@pytest.mark.parametrize("bad,exc", [(-0.1, ValueError), (math.nan, ValueError),
                                     (math.inf, ValueError), ("0.1", TypeError)])
def test_generator_rejects_bad_noise(name, bad, exc):
    with pytest.raises(exc, match="noise"):
        GENERATORS[name](noise=bad)


@pytest.mark.parametrize("name", sorted(GENERATORS))
@pytest.mark.parametrize("bad,exc", [(-1, ValueError), (1.5, TypeError), (None, TypeError)])
def test_generator_rejects_bad_seed(name, bad, exc):
    with pytest.raises(exc, match="seed"):
        GENERATORS[name](seed=bad)


@pytest.mark.parametrize("bad,exc", [(1.0, ValueError), (-0.5, ValueError), (math.nan, ValueError),
                                     (None, TypeError)])
def test_circles_rejects_bad_factor(bad, exc):
    with pytest.raises(exc, match="factor"):
        circles(factor=bad)


@pytest.mark.parametrize("bad,exc", [(0, ValueError), (-1.0, ValueError), (math.inf, ValueError),
                                     ("2", TypeError)])
def test_spirals_rejects_bad_turns(bad, exc):
    with pytest.raises(exc, match="turns"):
        spirals(turns=bad)


# --------------------------------------------------------------------------- CSV

def _write(tmp_path, text, name="data.csv"):
    path = tmp_path / name
    path.write_text(text)
    return path


def test_load_csv_without_header(tmp_path):
    path = _write(tmp_path, "0,0,1\n1,0,0\n0,-1,0\n")
    x, y = load_csv(path)
    assert x.dtype == torch.float32 and y.dtype == torch.float32
    assert torch.equal(x, torch.tensor([[0., 0.], [1., 0.], [0., -1.]]))
    assert torch.equal(y, torch.tensor([[1.], [0.], [0.]]))


def test_load_csv_with_header_blank_lines_and_spaces(tmp_path):
    path = _write(tmp_path, "x1, x2, x3, label\n\n 0.5, -1e-3, 2, 1\n   \n,,,\n3,4,5,0\n\n")
    x, y = load_csv(str(path), dtype=torch.float64)
    assert x.dtype == torch.float64 and x.shape == (2, 3) and y.shape == (2, 1)
    assert torch.equal(x, torch.tensor([[0.5, -1e-3, 2.], [3., 4., 5.]], dtype=torch.float64))
    assert torch.equal(y, torch.tensor([[1.], [0.]], dtype=torch.float64))


def test_load_csv_bom_header(tmp_path):
    path = tmp_path / "bom.csv"
    path.write_bytes("\ufeffa,b,label\n1,2,1\n".encode("utf-8"))
    x, y = load_csv(path)
    assert torch.equal(x, torch.tensor([[1., 2.]])) and torch.equal(y, torch.tensor([[1.]]))


def test_load_csv_ragged_row_names_line(tmp_path):
    path = _write(tmp_path, "a,b,label\n1,2,0\n\n3,4\n")
    with pytest.raises(ValueError, match=r"data\.csv.*line 4\b"):
        load_csv(path)


def test_load_csv_ragged_against_header(tmp_path):
    path = _write(tmp_path, "a,b,label\n1,2,0,7\n")
    with pytest.raises(ValueError, match=r"line 2\b"):
        load_csv(path)


@pytest.mark.parametrize("cell", ["abc", "", "nan", "inf"])
def test_load_csv_bad_cell_names_line_and_column(tmp_path, cell):
    path = _write(tmp_path, f"1,2,0\n3,{cell},1\n")
    with pytest.raises(ValueError, match=r"data\.csv.*line 2, column 2"):
        load_csv(path)


@pytest.mark.parametrize("text", ["", "\n\n", "a,b,label\n", "a,b,label\n\n  \n"])
def test_load_csv_no_data_rows(tmp_path, text):
    path = _write(tmp_path, text)
    with pytest.raises(ValueError, match="no data rows"):
        load_csv(path)


def test_load_csv_needs_two_columns(tmp_path):
    path = _write(tmp_path, "1\n0\n")
    with pytest.raises(ValueError, match="2 columns"):
        load_csv(path)


def test_load_csv_rejects_integer_dtype(tmp_path):
    path = _write(tmp_path, "1,0\n")
    with pytest.raises(TypeError, match="dtype"):
        load_csv(path, dtype=torch.int64)


# ----------------------------------------------------------------------- registry

def test_registry_names():
    assert set(DATASETS) == {"five_points", "xor", "circles", "moons", "spirals"}
    assert DATASETS["five_points"] is five_points


@pytest.mark.parametrize("name", sorted(GENERATORS))
def test_get_passes_kwargs(name):
    x, y = get(name, n=10, seed=4)
    x2, y2 = GENERATORS[name](n=10, seed=4)
    assert torch.equal(x, x2) and torch.equal(y, y2)


def test_get_five_points():
    x, y = get("five_points")
    assert torch.equal(x, five_points()[0]) and torch.equal(y, five_points()[1])


def test_get_csv(tmp_path):
    path = _write(tmp_path, "x,y,label\n1,2,1\n")
    x, y = get(f"csv:{path}")
    assert torch.equal(x, torch.tensor([[1., 2.]])) and torch.equal(y, torch.tensor([[1.]]))


def test_get_unknown_lists_known_names():
    with pytest.raises(ValueError, match="nope") as info:
        get("nope")
    for name in DATASETS:
        assert name in str(info.value)
    assert "csv:" in str(info.value)


def test_get_rejects_non_string():
    with pytest.raises(TypeError, match="name"):
        get(3)


def test_module_exports():
    for name in datasets.__all__:
        assert hasattr(datasets, name)


# ------------------------------------------------ targets the sigmoid output cannot reach

@pytest.mark.parametrize("labels,found", [((0, 1, 2), "[0, 2]"), ((-1, 1, 1), "[-1, 1]")])
@pytest.mark.parametrize("header", [True, False], ids=["header", "no-header"])
def test_load_csv_warns_about_labels_outside_0_1(tmp_path, labels, found, header):
    rows = "".join(f"{i},{i + 1},{label}\n" for i, label in enumerate(labels))
    path = _write(tmp_path, ("x1,x2,target\n" if header else "") + rows)
    with pytest.warns(TargetRangeWarning) as record:
        x, y = load_csv(path)
    assert len(record) == 1 and issubclass(record[0].category, UserWarning)
    message = str(record[0].message)
    assert "data.csv" in message and found in message and "[0, 1]" in message
    assert ("column 3, 'target'" if header else "column 3)") in message
    assert record[0].filename == __file__  # pointed at the caller's line
    assert y.flatten().tolist() == [float(v) for v in labels]  # still loaded as they are


@pytest.mark.parametrize("labels", [(0, 1, 1), (0, 0.5, 1), (0.25, 0.25, 0.75)])
def test_load_csv_labels_within_0_1_do_not_warn(tmp_path, labels):
    path = _write(tmp_path, "".join(f"{i},{label}\n" for i, label in enumerate(labels)))
    with warnings.catch_warnings(record=True) as record:
        warnings.simplefilter("always")
        load_csv(path)
    assert record == []


@pytest.mark.parametrize("labels,found", [((0, 1, 2), "[0, 2]"), ((-1, 1, 1), "[-1, 1]")])
def test_train_warns_about_targets_outside_0_1(labels, found):
    x = torch.tensor([[0.0], [1.0], [2.0]])
    y = torch.tensor([[0.0, v] for v in labels])  # column 1 is out of range, column 0 is not
    with pytest.warns(TargetRangeWarning) as record:
        train(x, y, Population([1, 2], 2), 1, 0.1, backend="torch", progress=False)
    assert len(record) == 1
    message = str(record[0].message)
    assert message.startswith("y: column 1 holds targets in " + found) and "sigmoid" in message
    assert record[0].filename == __file__


def test_train_with_targets_in_0_1_does_not_warn():
    x, y = five_points()
    with warnings.catch_warnings(record=True) as record:
        warnings.simplefilter("always")
        train(x, y, Population([2, 1], 2), 1, 0.1, backend="torch", progress=False)
    assert record == []
