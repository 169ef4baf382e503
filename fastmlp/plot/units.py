"""What every unit of one network computes over the input plane (``unit_maps``): a small map
per hidden unit, one row per hidden layer, and the output's decision boundary last, as the
neuron thumbnails of the TensorFlow Playground."""
from __future__ import annotations

from typing import Optional, Tuple

import torch
from torch import Tensor

from ._common import (_ACTIVATIONS, ArgumentError, ArgumentTypeError, _activations, _as_images, _check_grid_range,
                      _check_int, _check_panel_size, _check_plane_data, _check_position, _draw_points, _forward,
                      _frame_plane, _new_figure, _null_locator, _plane_grid)

_ACT_LABELS = {"tanh": "hidden unit (tanh)", "sigmoid": "output (sigmoid)"}


def _rows(sizes, ncols: int):
    """``(layer, first unit, units)`` of every row of panels: each layer from a new row, at
    most ``ncols`` units a row (a wider layer wraps)."""
    rows = []
    for layer, width in enumerate(sizes[1:], start=1):
        rows += [(layer, u0, min(ncols, width - u0)) for u0 in range(0, width, ncols)]
    return rows


def unit_maps(population, i: int, x: Tensor, y: Tensor, *, grid_range: Optional[Tuple[float, float]] = None,
              resolution: int = 40, ncols: int = 8, panel_size: Tuple[float, float] = (1.5, 1.5),
              title: Optional[str] = None):
    """Network ``i`` of ``population``, unit by unit: each hidden unit's activation over the
    input plane, and the output's prediction with the data on top.

    One row of panels per hidden layer (``ncols`` at most: a wider layer wraps onto more
    rows), one panel per unit titled "layer l · unit u" (both from 1), the row labelled
    "layer l" on its left; the output last, on a row of its own titled "output" (with
    ``x`` [N, 2] coloured by ``y`` on top, as :func:`decision_boundaries` draws them). The
    maps span ``grid_range`` (default: the data's extent widened by half of it on each side,
    (-2, 2) for the lab's five points) on a ``resolution`` squared grid, ``image[r, c]`` being
    the value at ``(x1, x2) = (axis[c], axis[r])``. Colour limits are fixed by the activation:
    [-1, 1] on a diverging colormap for the tanh units, [0, 1] for the sigmoid output, with
    one colorbar each. A network without hidden layers ([2, 1]) has the output row alone.
    ``panel_size`` is each panel's (width, height) in inches; the figure's title is ``title``,
    default "network i · seed s".

    ``population`` is a :class:`~fastmlp.Population` or anything holding ``sizes``,
    ``weights[l]`` [G, n_in, n_out] and ``biases[l]`` [G, n_out] (``seeds`` optional), such as
    a snapshot of training: ``unit_maps(result.snapshots.population(j), k, x, y,
    title=f"epoch {result.snapshots.epochs[j]}")`` draws the k-th snapshot network at
    snapshot j. The networks need 2 inputs. Returns the Figure.
    """
    if not all(hasattr(population, a) for a in ("sizes", "weights", "biases")):
        raise ArgumentTypeError("population", f"population must be a fastmlp.Population (sizes, weights, biases), "
                                              f"got {type(population).__name__}")
    sizes = [int(s) for s in population.sizes]
    if sizes[0] != 2:
        raise ArgumentError("population", f"unit maps are drawn over a 2-D input plane: the networks have "
                                          f"{sizes[0]} inputs (sizes {sizes})")
    i = _check_position("i", i, population.weights[0].shape[0], "network")
    acts = _activations(population, "population")
    y = torch.as_tensor(y).detach()
    if sizes[-1] > 1 and y.dim() == 2 and y.shape[1] == sizes[-1]:  # one column of labels per output
        x, _ = _check_plane_data(x, y[:, 0], "unit maps")
        labels = [y[:, u] for u in range(sizes[-1])]
    else:
        x, y = _check_plane_data(x, y, "unit maps")
        labels = [y] * sizes[-1]
    resolution = _check_int("resolution", resolution, 2)
    ncols = _check_int("ncols", ncols, 1)
    panel_size = _check_panel_size(panel_size)
    lo, hi = _check_grid_range(grid_range, x)

    weights = [w[i] for w in population.weights]
    _, _, grid = _plane_grid(lo, hi, resolution, weights[0].dtype, weights[0].device)
    with torch.no_grad():
        layers = _forward(weights, [b[i] for b in population.biases], acts, grid)  # [M, n_l] each
    images = [_as_images(z.t().to("cpu", torch.float32), resolution).numpy() for z in layers]  # [n_l, R, R]

    rows = _rows(sizes, ncols)
    cols = max(n for _, _, n in rows)
    fig = _new_figure((panel_size[0] * cols + 1.6, panel_size[1] * len(rows) + 0.5))
    grid_axes = fig.subplots(len(rows), cols, squeeze=False)
    out_layer = len(sizes) - 1
    drawn = {}  # activation -> one image drawn with it (for the colorbars)
    for r, (layer, u0, n) in enumerate(rows):
        act = acts[layer - 1]
        (vmin, vmax), cmap = _ACTIVATIONS[act][1], _ACTIVATIONS[act][2]
        for c, ax in enumerate(grid_axes[r]):
            if c >= n:
                ax.set_visible(False)
                continue
            u = u0 + c
            im = ax.imshow(images[layer - 1][u], origin="lower", extent=(lo, hi, lo, hi), vmin=vmin, vmax=vmax,
                           cmap=cmap, interpolation="bilinear")
            drawn.setdefault(act, im)
            _frame_plane(ax, lo, hi)
            ax.xaxis.set_major_locator(_null_locator())
            ax.yaxis.set_major_locator(_null_locator())
            if layer == out_layer:
                _draw_points(ax, x, labels[u])
                ax.set_title("output" if sizes[-1] == 1 else f"output \u00b7 unit {u + 1}", fontsize="small")
            else:
                ax.set_title(f"layer {layer} \u00b7 unit {u + 1}", fontsize="small")
            if c == 0 and u0 == 0:
                ax.set_ylabel("output" if layer == out_layer else f"layer {layer}")
    for act, im in drawn.items():
        # beside the whole width of its rows (the hidden panels too: at the right edge), as
        # long as them and about a fifth of a panel wide
        axes = [ax for (layer, _, _), row in zip(rows, grid_axes) if acts[layer - 1] == act for ax in row]
        n_rows = sum(acts[layer - 1] == act for layer, _, _ in rows)
        fig.colorbar(im, ax=axes, label=_ACT_LABELS.get(act, act), shrink=0.9, aspect=5 * n_rows)
    seeds = getattr(population, "seeds", None)
    default = f"network {i}" + (f" \u00b7 seed {int(seeds[i])}" if seeds is not None else "")
    fig.suptitle(default if title is None else title)
    return fig
