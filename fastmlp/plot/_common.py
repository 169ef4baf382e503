"""What every figure of fastmlp.plot shares: a pyplot-free Figure, a grid of panels,
one colour per curve label, outer-only axis labels, integer checks, and ``save``."""
from __future__ import annotations

import math
import os
from pathlib import Path
from typing import List, Sequence, Tuple, Union

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
