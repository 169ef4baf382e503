"""What every figure of fastmlp.plot shares: a pyplot-free Figure, a grid of panels,
one colour per curve label, outer-only axis labels, integer checks, and ``save``; and what
the pictures of the input plane share (``boundaries``, ``animation``, ``units``): the data
check, the lab's grid, the points drawn on top, and the networks' forward pass over the grid."""
from __future__ import annotations

import math
import numbers
import os
from pathlib import Path
from typing import List, Optional, Sequence, Tuple, Union

import torch
from torch import Tensor

from ..validate import ArgumentError, ArgumentTypeError, check_int


def _new_figure(figsize: Tuple[float, float]):
    from matplotlib.figure import Figure

    return Figure(figsize=figsize, layout="constrained")


_check_int = check_int  # (name, value, minimum), fastmlp.validate's


def save(fig, path_without_suffix: Union[str, os.PathLike],
         formats: Union[str, Sequence[str]] = ("png",)) -> List[Path]:
    """Write ``fig`` as ``path_without_suffix.<fmt>`` for each format; returns the paths.

    Parent folders are created. The suffix is appended, never substituted, so a
    name with dots ("lr0.25") is kept whole. Every format is checked before
    anything is written.
    """
    if isinstance(formats, str):
        formats = (formats,)
    formats = [f.lstrip(".").lower() for f in formats]
    if not formats:
        raise ArgumentError('formats', "formats must name at least one format, e.g. ('png',)")
    supported = fig.canvas.get_supported_filetypes()
    unknown = [f for f in formats if f not in supported]
    if unknown:
        raise ArgumentError('formats', f"unsupported formats {unknown}; supported: {sorted(supported)}")
    base = Path(path_without_suffix)
    if not base.name:
        raise ArgumentError('path_without_suffix', f"path_without_suffix needs a file name, got {path_without_suffix!r}")
    base.parent.mkdir(parents=True, exist_ok=True)
    paths = []
    for fmt in formats:
        path = base.with_name(f"{base.name}.{fmt}")
        fig.savefig(path, format=fmt, dpi=150)
        paths.append(path)
    return paths


# ------------------------------------------------------------------ panel grids
# A sweep's figures (curves.loss_bands, curves.epochs_ecdf, heatmaps.converged_heatmaps):
# one panel per (architecture, init), one curve per learning rate.

def _panel_grid(count: int, ncols: int, panel_size: Tuple[float, float], extra_height: float = 0.0):
    cols = max(1, min(ncols, count))
    rows = math.ceil(count / cols)
    # 5.5 inches at least: room for a two-line suptitle above a single panel.
    fig = _new_figure((max(5.5, panel_size[0] * cols + 0.4), panel_size[1] * rows + extra_height))
    axes = fig.subplots(rows, cols, squeeze=False)
    for k, ax in enumerate(axes.flat):
        if k >= count:
            ax.set_visible(False)
    return fig, list(axes.flat)[:count], cols


def _null_locator():
    from matplotlib.ticker import NullLocator

    return NullLocator()


def _label_colors(panels) -> dict:
    """One colour per curve label, in order of first appearance across the panels."""
    labels: List[str] = []
    for _, curves in panels:
        for label, _values in curves:
            if label not in labels:
                labels.append(label)
    return dict(zip(labels, _curve_colors(len(labels))))


def _curve_colors(n: int):
    from matplotlib import colormaps

    # viridis without its yellow end (unreadable on white): low lr dark, high lr light.
    cmap = colormaps["viridis"]
    return [cmap(0.85 * k / max(n - 1, 1)) for k in range(n)]


def _check_panels(panels, what: str):
    if not hasattr(panels, "items"):
        raise ArgumentTypeError('panels', f"panels must map a panel title to {what}, got {type(panels).__name__}")
    panels = list(panels.items())
    if not panels:
        raise ArgumentError('panels', "panels must hold at least one panel")
    return panels


def _outer_labels(axes, ncols: int, xlabel: str, ylabel: str, shared: bool = False) -> None:
    """Axis labels on the bottom panel of each column and on the first column only (and,
    for ``shared`` axes, tick labels there only)."""
    count = len(axes)
    cols = max(1, min(ncols, count))
    for k, ax in enumerate(axes):
        if k + cols >= count:
            ax.set_xlabel(xlabel)
        elif shared:
            ax.tick_params(labelbottom=False)
        if k % cols == 0:
            ax.set_ylabel(ylabel)
        elif shared:
            ax.tick_params(labelleft=False)


def _check_panel_size(panel_size) -> Tuple[float, float]:
    try:
        w, h = (float(v) for v in panel_size)
    except (TypeError, ValueError):
        raise ArgumentTypeError('panel_size', f"panel_size must be two numbers (width, height) in inches, "
                                              f"got {panel_size!r}") from None
    if not (math.isfinite(w) and math.isfinite(h) and w > 0 and h > 0):
        raise ArgumentError('panel_size', f"panel_size must be positive and finite, got {panel_size!r}")
    return w, h


def _check_position(arg: str, v, n: int, what: str) -> int:
    """One of ``n`` things: an int in [-n, n) -> its position in [0, n)."""
    if not isinstance(v, numbers.Integral) or isinstance(v, bool):
        if isinstance(v, Tensor) and v.numel() == 1 and not v.dtype.is_floating_point:
            v = int(v)
        else:
            raise ArgumentTypeError(arg, f"{arg} must be an int, got {type(v).__name__}")
    if not -n <= v < n:
        raise ArgumentError(arg, f"{arg}: {what} {int(v)} is out of range for {n}")
    return int(v) % n


# ------------------------------------------------------------------ the input plane
# decision_boundaries, boundary_animation and unit_maps draw functions of a 2-D input over
# the lab's grid, with the data on top.

def _check_plane_data(x, y, what: str = "decision boundaries") -> Tuple[Tensor, Tensor]:
    x = torch.as_tensor(x).detach()
    y = torch.as_tensor(y).detach()
    if x.dim() != 2 or x.shape[1] != 2:
        raise ArgumentError("x", f"{what} need 2-D inputs: x must be [N, 2], got shape {tuple(x.shape)}")
    if y.numel() != x.shape[0]:
        raise ArgumentError("y", f"y must hold one label per row of x ({x.shape[0]}), "
                                 f"got shape {tuple(y.shape)}")
    return x, y


def _check_grid_range(grid_range, x: Optional[Tensor] = None) -> Tuple[float, float]:
    """``(lo, hi)``; None (with ``x``): the data's extent over both inputs, widened by half of
    it on each side (the lab's five points in [-1, 1] give its (-2, 2))."""
    if grid_range is None and x is not None:
        v = x[torch.isfinite(x)].double()
        lo, hi = (float(v.min()), float(v.max())) if v.numel() else (0.0, 0.0)
        pad = (hi - lo) / 2 if hi > lo else 1.0
        return lo - pad, hi + pad
    try:
        lo, hi = (float(v) for v in grid_range)
    except (TypeError, ValueError):
        raise ArgumentTypeError('grid_range', f"grid_range must be two numbers (lo, hi), got {grid_range!r}") from None
    if not (math.isfinite(lo) and math.isfinite(hi) and lo < hi):
        raise ArgumentError('grid_range', f"grid_range must be finite with lo < hi, got {grid_range!r}")
    return lo, hi


def _plane_grid(lo: float, hi: float, resolution: int, dtype, device) -> Tuple[Tensor, Tensor, Tensor]:
    """The lab's grid: ``(grid_x, grid_y)`` [R, R] of ``meshgrid(linspace(lo, hi, R))`` with its
    default "ij" indexing, and the points ``grid`` [R * R, 2], ``grid[i * R + j] = (axis[i], axis[j])``."""
    axis = torch.linspace(lo, hi, resolution, dtype=dtype, device=device)
    grid_x, grid_y = torch.meshgrid(axis, axis, indexing="ij")
    return grid_x, grid_y, torch.stack([grid_x.flatten(), grid_y.flatten()], dim=1)


def _as_images(values: Tensor, resolution: int) -> Tensor:
    """Values over :func:`_plane_grid`'s points [..., R * R] -> images [..., R, R] for ``imshow``
    with ``origin="lower"``: ``image[r, c]`` is the value at ``(x1, x2) = (axis[c], axis[r])``."""
    return values.reshape(*values.shape[:-1], resolution, resolution).transpose(-1, -2)


def _draw_points(ax, x: Tensor, y: Tensor) -> None:
    """The data on top of a panel, coloured by label with cmap 'jet' (0 blue, 1 red), as the lab."""
    px = x.to("cpu", torch.float64).numpy()
    py = y.reshape(-1).to("cpu", torch.float64).numpy()
    # vmin/vmax: labels keep their colours even when only one class is present.
    ax.scatter(px[:, 0], px[:, 1], c=py, cmap="jet", vmin=0.0, vmax=1.0,
               edgecolors="white", linewidths=0.6, s=28, zorder=3)


def _frame_plane(ax, lo: float, hi: float) -> None:
    ax.set_xlim(lo, hi)
    ax.set_ylim(lo, hi)
    ax.set_aspect("equal")


def _plane_panels(count: int, ncols: int, panel_size: Tuple[float, float]):
    """``count`` square panels, ``ncols`` a row, room for one colorbar on the right; the
    panels beyond ``count`` hidden. Returns ``(fig, axes[:count], cols)``."""
    cols = min(ncols, count)
    rows = math.ceil(count / cols)
    fig = _new_figure((panel_size[0] * cols + 0.9, panel_size[1] * rows + 0.2))
    axes = list(fig.subplots(rows, cols, squeeze=False).flat)
    for ax in axes[count:]:
        ax.set_visible(False)
    return fig, axes[:count], cols


# The activations Architecture.acts names, their ranges, and the colormap a map of them uses.
_ACTIVATIONS = {"tanh": (torch.tanh, (-1.0, 1.0), "RdBu_r"),
                "sigmoid": (torch.sigmoid, (0.0, 1.0), "viridis")}


def _activations(networks, arg: str) -> List[str]:
    """Every layer's activation: ``networks.arch.acts`` (a Population), else the lab's tanh
    hidden layers and sigmoid output (a Snapshots names only its sizes)."""
    n_layers = len(networks.sizes) - 1
    acts = getattr(getattr(networks, "arch", None), "acts", None)
    acts = list(acts) if acts is not None else ["tanh"] * (n_layers - 1) + ["sigmoid"]
    unknown = sorted(set(acts) - set(_ACTIVATIONS))
    if len(acts) != n_layers or unknown:
        raise ArgumentError(arg, f"{arg}: cannot draw activations {acts} (known: {sorted(_ACTIVATIONS)})")
    return acts


def _forward(weights: Sequence[Tensor], biases: Sequence[Tensor], acts: Sequence[str], grid: Tensor) -> List[Tensor]:
    """Every layer's output over ``grid`` [M, n_in] for networks stacked along any leading
    axes: ``weights[l]`` [..., n_in, n_out], ``biases[l]`` [..., n_out] -> [..., M, n_out] per
    layer; ``z = act(z @ W + b)`` as the lab's layers."""
    z, out = grid, []
    for w, b, act in zip(weights, biases, acts):
        z = _ACTIVATIONS[act][0](torch.matmul(z, w) + b.unsqueeze(-2))
        out.append(z)
    return out
