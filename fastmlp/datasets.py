"""Small 2-D classification data sets, and CSV loading.

Every loader returns ``(x, y)`` with ``x`` float32 ``[N, n_in]`` and ``y`` float32
``[N, 1]`` (labels 0/1 for the generators), the shapes the lab's ``NeuralNetwork``
and a population's shared ``x [N, n_in]`` expect.

The generators are seeded through a local ``torch.Generator``: the global RNG is
never read nor advanced, so generating data does not change the networks'
initialisation. Classes are balanced (counts differ by at most one, for odd ``n``),
and samples come in a seeded random order. Coordinates lie roughly within
``[-2, 2]`` (noise can push a few points past it), the grid that
``plot.decision_boundaries`` and the lab's ``plot_decision_boundary`` draw.

Use ``get(name, **kwargs)`` to pick a data set by name (``DATASETS`` lists them);
``get("csv:PATH")`` loads a file with ``load_csv``.
"""
from __future__ import annotations

import csv
import math
import os
from typing import Callable, Dict, List, Tuple, Union

import torch
from torch import Tensor

from .validate import ArgumentError, ArgumentTypeError, check_int, check_real, check_targets

__all__ = [
    "DATASETS",
    "circles",
    "five_points",
    "get",
    "load_csv",
    "moons",
    "spirals",
    "xor",
]

Dataset = Tuple[Tensor, Tensor]


# --------------------------------------------------------------------------- checks

def _check_n(n: object) -> int:
    return check_int("n", n, 1)


def _check_noise(noise: object) -> float:
    return check_real("noise", noise, minimum=0)


def _generator(seed: object) -> torch.Generator:
    seed = check_int("seed", seed, 0)
    if seed >= 2**64:
        raise ArgumentError("seed", f"seed must be in [0, 2**64), got {seed}")
    g = torch.Generator()
    g.manual_seed(seed)
    return g


def _finish(x: Tensor, labels: Tensor, noise: float, g: torch.Generator) -> Dataset:
    """Add Gaussian noise of std ``noise``, shuffle, cast: x [N, 2], labels [N]."""
    if noise > 0:
        x = x + noise * torch.randn(x.shape, generator=g, dtype=x.dtype)
    perm = torch.randperm(x.shape[0], generator=g)
    x = x[perm].to(torch.float32).contiguous()
    y = labels[perm].to(torch.float32).reshape(-1, 1).contiguous()
    return x, y


def _split(n: int) -> Tuple[int, int]:
    """Sizes of class 0 and class 1: balanced, class 0 takes the odd one."""
    return n - n // 2, n // 2


# ----------------------------------------------------------------------- data sets

def five_points() -> Dataset:
    """The lab's data set: the origin (label 1) and its four neighbours (label 0).

    Returns x float32 [5, 2], y float32 [5, 1]. The lab builds ``y`` as a 1-D
    integer tensor; here it is a float column so that ``y - y_pred`` has the
    prediction's shape [N, 1] (a [N] target would broadcast to [N, N]).
    """
    x = torch.tensor([[0, 0], [1, 0], [0, -1], [-1, 0], [0, 1]], dtype=torch.float32)
    y = torch.tensor([[1], [0], [0], [0], [0]], dtype=torch.float32)
    return x, y


def xor(n: int = 100, noise: float = 0.2, seed: int = 0) -> Dataset:
    """Four Gaussian blobs of std ``noise`` centred on (+-1, +-1).

    Label 1 where the coordinates' signs differ ((1, -1) and (-1, 1)), 0 where
    they agree. The blobs get n/4 points each (within one).
    """
    n, noise, g = _check_n(n), _check_noise(noise), _generator(seed)
    # Corner k = i % 4, ordered so that its label k % 2 alternates: balanced classes.
    corners = torch.tensor([[1.0, 1.0], [1.0, -1.0], [-1.0, -1.0], [-1.0, 1.0]],
                           dtype=torch.float64)
    k = torch.arange(n) % 4
    return _finish(corners[k], k % 2, noise, g)


def circles(n: int = 100, noise: float = 0.05, factor: float = 0.5,
            seed: int = 0) -> Dataset:
    """Two concentric circles (as scikit-learn's ``make_circles``).

    Outer circle of radius 1: label 0; inner circle of radius ``factor``
    (0 <= factor < 1): label 1, like the lab's centre point. Points are evenly
    spaced in angle, then moved by Gaussian noise of std ``noise``.
    """
    n, noise, g = _check_n(n), _check_noise(noise), _generator(seed)
    factor = check_real("factor", factor, minimum=0)
    if factor >= 1:
        raise ArgumentError("factor", f"factor must be in [0, 1), got {factor}")
    n_out, n_in = _split(n)

    def ring(m: int, radius: float) -> Tensor:
        t = torch.arange(m, dtype=torch.float64) * (2 * math.pi / max(m, 1))
        return radius * torch.stack([torch.cos(t), torch.sin(t)], dim=1)

    x = torch.cat([ring(n_out, 1.0), ring(n_in, factor)])
    labels = torch.cat([torch.zeros(n_out), torch.ones(n_in)])
    return _finish(x, labels, noise, g)


def moons(n: int = 100, noise: float = 0.1, seed: int = 0) -> Dataset:
    """Two interleaving half circles (as scikit-learn's ``make_moons``), centred.

    Upper moon: label 0, lower moon: label 1. scikit-learn's moons span
    x1 in [-1, 2], x2 in [-0.5, 1]; they are shifted by (-0.5, -0.25) here so
    that they sit in the middle of the [-2, 2] plotting grid:
    x1 in [-1.5, 1.5], x2 in [-0.75, 0.75] (before noise of std ``noise``).
    """
    n, noise, g = _check_n(n), _check_noise(noise), _generator(seed)
    n_up, n_down = _split(n)

    def arc(m: int) -> Tensor:
        # linspace(0, pi, 1) is [0]: a single point still lands on the arc.
        return torch.linspace(0, math.pi, m, dtype=torch.float64)

    t_up, t_down = arc(n_up), arc(n_down)
    up = torch.stack([torch.cos(t_up), torch.sin(t_up)], dim=1)
    down = torch.stack([1 - torch.cos(t_down), 0.5 - torch.sin(t_down)], dim=1)
    x = torch.cat([up, down]) - torch.tensor([0.5, 0.25], dtype=torch.float64)
    labels = torch.cat([torch.zeros(n_up), torch.ones(n_down)])
    return _finish(x, labels, noise, g)


# Radii of the spiral arms: from _SPIRAL_R0 (the arms do not meet at the origin,
# where the classes would be inseparable) out to _SPIRAL_R0 + _SPIRAL_DR = 1.8,
# inside the [-2, 2] grid with room for noise.
_SPIRAL_R0 = 0.2
_SPIRAL_DR = 1.6


def spirals(n: int = 100, noise: float = 0.05, turns: float = 1.5,
            seed: int = 0) -> Dataset:
    """Two interleaved spiral arms, the second the first rotated by 180 degrees.

    Each arm winds ``turns`` times (> 0) around the origin while its radius grows
    linearly from 0.2 to 1.8; arm 0 has label 0, arm 1 label 1. Points are
    evenly spaced along the radius, then moved by Gaussian noise of std
    ``noise``. Neighbouring arms are 0.8 / turns apart radially, so keep
    ``noise`` well below that (more turns: harder for a small network).
    """
    n, noise, g = _check_n(n), _check_noise(noise), _generator(seed)
    turns = check_real("turns", turns, positive=True)
    n0, n1 = _split(n)

    def arm(m: int, phase: float) -> Tensor:
        t = torch.linspace(0, 1, m, dtype=torch.float64)
        r = _SPIRAL_R0 + _SPIRAL_DR * t
        angle = 2 * math.pi * turns * t + phase
        return r[:, None] * torch.stack([torch.cos(angle), torch.sin(angle)], dim=1)

    x = torch.cat([arm(n0, 0.0), arm(n1, math.pi)])
    labels = torch.cat([torch.zeros(n0), torch.ones(n1)])
    return _finish(x, labels, noise, g)


# ----------------------------------------------------------------------------- CSV

def _parse_number(cell: str) -> float:
    value = float(cell.strip())  # ValueError on a non-numeric cell
    if not math.isfinite(value):
        raise ValueError("not finite")
    return value


def load_csv(path: Union[str, os.PathLike], *, dtype: torch.dtype = torch.float32) -> Dataset:
    """Load rows ``x1,...,xk,label``: returns x [N, k], y [N, 1] of ``dtype``.

    - An optional header: the first non-blank line is a header when one of its
      cells is not a number (so a first data row with a typo is read as a
      header; the next rows are still checked).
    - Blank lines are skipped, and so are lines whose cells are all empty
      (``,,`` from a spreadsheet export); cells may have spaces around them.
    - Every value must be a finite number (``nan``/``inf`` are rejected).  Labels
      outside [0, 1], the range of the networks' sigmoid output (0/1/2, -1/1), are
      loaded but warned about: a :class:`~fastmlp.validate.TargetRangeWarning` (a
      UserWarning) names the file, the column and the range found.

    Raises ValueError naming the file and the 1-based line number for a row
    whose number of cells differs from the first row's (header included), with
    the 1-based column too for a cell that is not a finite number; and for a
    file with no data rows or fewer than 2 columns.
    """
    if not (isinstance(dtype, torch.dtype) and dtype.is_floating_point):
        raise ArgumentTypeError("dtype", f"dtype must be a floating-point torch.dtype, got {dtype!r}")
    path = os.fspath(path)
    rows: List[List[float]] = []
    width = None  # cells per row, fixed by the first non-blank line
    first = True
    header = None
    # utf-8-sig: a byte-order mark (spreadsheet exports) is not part of the first cell.
    with open(path, newline="", encoding="utf-8-sig") as f:
        reader = csv.reader(f)
        line = 0
        for cells in reader:
            # reader.line_num counts physical lines read so far: for a row it is
            # the line the row ends on (a quoted cell may span lines).
            line = reader.line_num
            if all(not c.strip() for c in cells):
                continue  # blank line
            if width is None:
                width = len(cells)
                if width < 2:
                    raise ArgumentError(
                        "path", f"{path}: line {line}: need at least 2 columns "
                        f"(features then label), got {width}")
            elif len(cells) != width:
                raise ArgumentError(
                    "path", f"{path}: line {line}: expected {width} cells like the first "
                    f"row, got {len(cells)}")
            values = []
            for col, cell in enumerate(cells, start=1):
                try:
                    values.append(_parse_number(cell))
                except ValueError:
                    if first:
                        values, header = None, cells  # header line
                        break
                    raise ArgumentError(
                        "path", f"{path}: line {line}, column {col}: {cell.strip()!r} "
                        f"is not a finite number") from None
            first = False
            if values is not None:
                rows.append(values)
    if not rows:
        raise ArgumentError("path", f"{path}: no data rows")
    data = torch.tensor(rows, dtype=torch.float64).to(dtype)
    label = f", {header[-1].strip()!r}" if header is not None and header[-1].strip() else ""
    check_targets(data[:, -1:], columns=[f"the label column (column {width}{label})"], source=path, stacklevel=2)
    return data[:, :-1].contiguous(), data[:, -1:].contiguous()


# ------------------------------------------------------------------------ registry

DATASETS: Dict[str, Callable[..., Dataset]] = {
    "five_points": five_points,
    "xor": xor,
    "circles": circles,
    "moons": moons,
    "spirals": spirals,
}

_CSV_PREFIX = "csv:"


def get(name: str, **kwargs) -> Dataset:
    """The data set called ``name`` (a key of ``DATASETS``), built with ``kwargs``.

    ``"csv:PATH"`` loads ``PATH`` with ``load_csv(PATH, **kwargs)``; a file that cannot be
    read raises an ArgumentError about ``name`` too (not the bare OSError).
    """
    if not isinstance(name, str):
        raise ArgumentTypeError("name", f"name must be a str, got {type(name).__name__}")
    if name.startswith(_CSV_PREFIX):
        path = name[len(_CSV_PREFIX):]
        if not path:
            raise ArgumentError("name", "name 'csv:' needs a path: 'csv:PATH'")
        try:
            return load_csv(path, **kwargs)
        except OSError as e:
            raise ArgumentError("name", f"cannot read {path!r}: {e.strerror or e}") from None
    try:
        fn = DATASETS[name]
    except KeyError:
        known = ", ".join(sorted(DATASETS))
        raise ArgumentError(
            "name", f"unknown data set {name!r}; known: {known}, or 'csv:PATH'") from None
    return fn(**kwargs)
