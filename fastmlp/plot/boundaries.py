"""Predictions over the input plane: one panel per network (``decision_boundaries``),
and rows of groups of networks (``boundary_gallery``), as the lab draws them."""
from __future__ import annotations

from typing import Callable, Optional, Sequence, Tuple

import torch
from torch import Tensor

from ._common import (ArgumentError, _check_grid_range, _check_int, _check_plane_data, _draw_points, _frame_plane,
                      _outer_labels, _plane_grid, _plane_panels)


def decision_boundaries(x: Tensor, y: Tensor, predict: Callable[[Tensor], Tensor],
                        indices: Sequence[int], *, titles: Optional[Sequence[str]] = None,
                        ncols: int = 4, grid_range: Tuple[float, float] = (-2.0, 2.0),
                        resolution: int = 50):
    """One subplot per network in ``indices``: its prediction over a grid, and the data.

    ``x`` [N, 2], ``y`` [N] or [N, 1] (labels 0/1). ``predict`` takes the grid
    [M, 2] (M = resolution**2, on ``x``'s device and floating dtype) and returns
    probabilities for all networks, [G, M] or [G, M, 1] (e.g. a population's
    ``predict``); it is called once. As in the lab: ``contourf`` of a network's
    predictions over ``linspace(*grid_range, resolution)`` squared, with the
    points on top coloured by label with cmap 'jet' (0 blue, 1 red). Contour
    levels span [0, 1] with one colorbar for all subplots. Subplots follow the
    order of ``indices``, ``ncols`` per row; ``titles`` (one per index, e.g.
    "seed 12, loss 3.1e-04") default to "network i". Returns the Figure.
    """
    x, y = _check_plane_data(x, y)
    if isinstance(indices, Tensor):
        indices = indices.flatten().tolist()
    indices = [_check_int("indices[]", i, 0) for i in indices]
    if not indices:
        raise ArgumentError('indices', "indices must name at least one network")
    if titles is not None:
        titles = list(titles)
        if len(titles) != len(indices):
            raise ArgumentError('titles', f"titles must have one entry per index: {len(indices)} indices, "
                             f"{len(titles)} titles")
    ncols = _check_int("ncols", ncols, 1)
    resolution = _check_int("resolution", resolution, 2)
    lo, hi = _check_grid_range(grid_range)

    dtype = x.dtype if x.is_floating_point() else torch.float32
    grid_x, grid_y, grid = _plane_grid(lo, hi, resolution, dtype, x.device)  # the lab's, [M, 2]

    with torch.no_grad():
        pred = torch.as_tensor(predict(grid)).detach()
    M = grid.shape[0]
    if pred.dim() == 3 and pred.shape[2] == 1:
        pred = pred[..., 0]
    if pred.dim() != 2 or pred.shape[1] != M:
        raise ArgumentError("predict", f"predict(grid [{M}, 2]) must return [G, {M}] or [G, {M}, 1], "
                         f"got shape {tuple(pred.shape)}")
    G = pred.shape[0]
    bad = [i for i in indices if i >= G]
    if bad:
        raise ArgumentError('indices', f"indices {bad} out of range for {G} networks")
    # Only the chosen networks leave the device.
    pred = pred[torch.tensor(indices, device=pred.device)].to("cpu", torch.float64)
    pred = pred.clamp(0.0, 1.0)  # levels span [0, 1]; NaN (diverged) stays blank

    gx = grid_x.to("cpu", torch.float64).numpy()
    gy = grid_y.to("cpu", torch.float64).numpy()

    fig, axes, cols = _plane_panels(len(indices), ncols, (2.9, 2.9))
    levels = torch.linspace(0, 1, 11).tolist()
    contour = None
    for k, ax in enumerate(axes):
        contour = ax.contourf(gx, gy, pred[k].reshape(gx.shape).numpy(), levels=levels,
                              vmin=0.0, vmax=1.0)
        _draw_points(ax, x, y)
        _frame_plane(ax, lo, hi)
        ax.set_title(titles[k] if titles is not None else f"network {indices[k]}",
                     fontsize="medium")
    # Axis labels on the outer subplots only: the bottom one of each column (the last row
    # may be short) and the first column.
    _outer_labels(axes, cols, "$x_1$", "$x_2$", shared=True)
    fig.colorbar(contour, ax=axes, label="predicted probability", shrink=0.9)
    return fig


def boundary_gallery(x: Tensor, y: Tensor, rows, *, title: Optional[str] = None,
                     grid_range: Tuple[float, float] = (-2.0, 2.0), resolution: int = 50):
    """Decision boundaries of several groups of networks, one group a row (as in the lab).

    ``rows`` is a list of ``(row_label, predict, titles)``: ``predict(grid [M, 2])`` returns
    [k, M] or [k, M, 1] for the row's k networks (e.g. a small population's ``predict``),
    ``titles`` one string per network. Every row must have the same k. Panels are titled
    ``"row_label\\ntitle"``. Built on :func:`decision_boundaries`. Returns the Figure.
    """
    rows = list(rows)
    if not rows:
        raise ArgumentError('rows', "rows must hold at least one (row_label, predict, titles)")
    k = len(rows[0][2])
    if k < 1 or any(len(r[2]) != k for r in rows):
        raise ArgumentError('rows', f"every row needs the same number (>= 1) of networks, got {[len(r[2]) for r in rows]}")

    def predict(grid):
        out = []
        for _label, fn, _titles in rows:
            p = torch.as_tensor(fn(grid)).detach()
            if p.dim() == 3 and p.shape[2] == 1:
                p = p[..., 0]
            if p.dim() != 2 or p.shape[0] != k:
                raise ArgumentError('rows', f"row {_label!r}: predict must return [{k}, M] or [{k}, M, 1], "
                                 f"got {tuple(p.shape)}")
            out.append(p.to("cpu", torch.float64))
        return torch.cat(out)

    titles = [f"{label}\n{t}" for label, _fn, ts in rows for t in ts]
    fig = decision_boundaries(x, y, predict, list(range(k * len(rows))), titles=titles, ncols=k,
                              grid_range=grid_range, resolution=resolution)
    if title:
        fig.suptitle(title)
    return fig
