"""Fractions over a grid of configurations: one annotated heatmap per panel
(``converged_heatmaps``: converged fraction over init x learning rate, a panel per
architecture)."""
from __future__ import annotations

import math
from typing import Optional, Sequence

import torch

from ..validate import ArgumentError
from ._common import _check_panels, _outer_labels, _panel_grid


def _percent(v: float) -> str:
    """A fraction as a percentage that never rounds to 0% or 100% when it is not."""
    if 0.0 < v < 0.005 or 0.995 <= v < 1.0:
        return f"{v:.1%}" if 0.0005 <= v <= 0.9995 else ("<0.1%" if v < 0.5 else ">99.9%")
    return f"{v:.0%}"


def converged_heatmaps(panels, row_labels: Sequence[str], col_labels: Sequence[str], *,
                       row_name: str = "init", col_name: str = "learning rate",
                       value_name: str = "converged fraction", ncols: int = 3,
                       title: Optional[str] = None):
    """One annotated heatmap per panel of a fraction over (row, column), e.g. converged
    fraction over init (rows) x learning rate (columns), one panel per architecture.

    ``panels`` maps a panel title to a tensor [len(row_labels), len(col_labels)] of values
    in [0, 1] (NaN = not run: left blank). One colour scale (0..1) for every panel.
    Returns the Figure.
    """
    panels = _check_panels(panels, f"a [{len(row_labels)}, {len(col_labels)}] tensor")
    R, C = len(row_labels), len(col_labels)
    if R < 1 or C < 1:
        raise ArgumentError('row_labels', "row_labels and col_labels must be non-empty")
    longest = max(len(str(r)) for r in row_labels)
    width = 0.62 * C + 0.075 * longest + 0.9
    fig, axes, _ = _panel_grid(len(panels), ncols, (width, 0.42 * R + 1.2))
    image = None
    for k, (ax, (panel_title, values)) in enumerate(zip(axes, panels)):
        v = torch.as_tensor(values, dtype=torch.float64).detach().cpu()
        if tuple(v.shape) != (R, C):
            raise ArgumentError('panels', f"panel {panel_title!r}: values must be [{R}, {C}], got {tuple(v.shape)}")
        image = ax.imshow(v.numpy(), vmin=0.0, vmax=1.0, cmap="viridis", aspect="auto")
        for i in range(R):
            for j in range(C):
                val = float(v[i, j])
                if math.isnan(val):
                    continue
                ax.text(j, i, _percent(val), ha="center", va="center", fontsize="small",
                        color="black" if val > 0.6 else "white")
        ax.set_xticks(range(C), [str(c) for c in col_labels])
        ax.set_yticks(range(R), [str(r) for r in row_labels] if k % ncols == 0 else [""] * R)
        ax.set_title(panel_title, fontsize="medium")
        ax.tick_params(length=0)
    _outer_labels(axes, ncols, col_name, row_name)
    fig.colorbar(image, ax=axes, label=value_name, shrink=0.9)
    if title:
        fig.suptitle(title)
    return fig
