"""Figures for a population of networks: loss curves and decision boundaries.

matplotlib is imported inside the functions, so ``import fastmlp`` does not need
it. Figures are built as ``matplotlib.figure.Figure`` objects, not through
pyplot: nothing is registered with pyplot's global figure list (no leak when
plotting in a loop, no GUI backend needed), and nothing calls ``plt.show``.
Every function returns its Figure; in a notebook it displays as a cell's last
expression, elsewhere pass it to ``save``.
"""
from __future__ import annotations

import math
import numbers
import os
from pathlib import Path
from typing import Callable, List, Optional, Sequence, Tuple, Union

import torch
from torch import Tensor

__all__ = ["boundary_gallery", "converged_heatmaps", "decision_boundaries", "epochs_ecdf", "loss_bands",
           "loss_curves", "save"]

# Quantile band drawn around the median.
_BAND = (0.05, 0.95)
# Elements sorted at once when computing quantiles (2**25 float64: 256 MiB):
# bounds memory for losses [G, epochs] with millions of networks.
_QUANTILE_CHUNK = 2**25


def _new_figure(figsize: Tuple[float, float]):
    from matplotlib.figure import Figure

    return Figure(figsize=figsize, layout="constrained")


def _nanquantiles(values: Tensor, qs: Sequence[float]) -> Tensor:
    """Quantiles over dim 0 ignoring NaN: values [G, E] -> [len(qs), E] float64.

    Same as ``torch.nanquantile(values, q, dim=0)`` (linear interpolation), which
    refuses a reduced dimension over 2**24 elements ("quantile() input tensor is
    too large", torch 2.13), i.e. populations over 16.7M networks. A column with
    no finite value gives NaN.
    """
    G, E = values.shape
    q = torch.tensor(list(qs), dtype=torch.float64, device=values.device)
    out = []
    step = max(1, _QUANTILE_CHUNK // max(G, 1))
    for start in range(0, E, step):
        chunk = values[:, start:start + step].to(torch.float64)
        # torch.sort puts NaN after every number (ascending).
        srt = torch.sort(chunk, dim=0).values
        count = (~torch.isnan(chunk)).sum(dim=0)  # [e]
        pos = q[:, None] * (count - 1).clamp(min=0)  # [Q, e]
        lo = pos.floor().long()
        hi = pos.ceil().long()
        v_lo = srt.gather(0, lo)
        v_hi = srt.gather(0, hi)
        res = v_lo + (pos - lo) * (v_hi - v_lo)
        res = torch.where(count[None, :] > 0, res, torch.full_like(res, math.nan))
        out.append(res)
    return torch.cat(out, dim=1) if out else torch.empty(len(qs), 0, dtype=torch.float64)


def loss_curves(losses: Tensor, *, ax=None, label: Optional[str] = None,
                title: Optional[str] = None):
    """Median loss over networks with a shaded 5-95% band, per epoch, log y.

    ``losses`` [G, epochs] (a 1-D [epochs] history is taken as G=1). Diverged
    networks may hold nan/inf: inf counts as nan, and each epoch's quantiles are
    taken over its finite values only. A loss of exactly 0 (float32 sigmoids
    saturate, so an MSE can reach 0) cannot be drawn on a log axis: curves are
    floored at the smallest positive loss present, and a note on the axis says
    so. Epochs are numbered from 1 (``losses[:, 0]`` is epoch 1).

    Draws on ``ax`` if given (several calls on one axis compare runs; each
    call takes the axis' next colour), else on a new Figure. Returns the Figure.
    """
    if not isinstance(losses, Tensor):
        losses = torch.as_tensor(losses)
    if losses.dim() == 1:
        losses = losses[None, :]
    if losses.dim() != 2 or losses.shape[0] < 1 or losses.shape[1] < 1:
        raise ValueError(
            f"losses must be [G, epochs] with G, epochs >= 1, got shape {tuple(losses.shape)}")
    losses = losses.detach()
    if not losses.is_floating_point():
        losses = losses.to(torch.float64)
    G, epochs = losses.shape
    losses = torch.where(torch.isinf(losses), torch.full_like(losses, math.nan), losses)
    lo_q, hi_q = _BAND
    band = _nanquantiles(losses, (lo_q, 0.5, hi_q)).cpu()  # [3, epochs]

    floor = None
    if (band <= 0).any():  # only then pay for a pass over all losses
        positive = losses[losses > 0]
        floor = positive.min().item() if positive.numel() else 1e-30
        band = band.clamp(min=floor)  # clamp keeps NaN as NaN

    from matplotlib.ticker import MaxNLocator

    if ax is None:
        fig = _new_figure((6.4, 4.0))
        ax = fig.add_subplot()
    else:
        fig = ax.figure

    epoch = torch.arange(1, epochs + 1).numpy()
    lo, med, hi = (band[i].numpy() for i in range(3))
    name = f"{label}: " if label else ""
    nets = "1 network" if G == 1 else f"{G} networks"
    # A single epoch is a single point: give it a marker, a line would be invisible.
    marker = "o" if epochs == 1 else None
    (line,) = ax.plot(epoch, med, marker=marker,
                      label=f"{name}median of {nets}" if G > 1 else f"{name}{nets}")
    if G > 1:
        band_label = f"{name}{lo_q:.0%}\u2013{hi_q:.0%} of networks"
        if epochs > 1:
            ax.fill_between(epoch, lo, hi, color=line.get_color(), alpha=0.25, linewidth=0,
                            label=band_label)
        else:  # fill_between draws nothing for one x: show the band as an error bar
            ax.errorbar(epoch, med, yerr=[med - lo, hi - med], color=line.get_color(),
                        capsize=4, linestyle="none", label=band_label)
    if floor is not None:
        ax.text(0.01, 0.01, f"losses of 0 drawn at {floor:.1e}", transform=ax.transAxes,
                ha="left", va="bottom", fontsize="small")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    if not torch.isfinite(band).any():
        ax.text(0.5, 0.5, "no finite loss", transform=ax.transAxes,
                ha="center", va="center")
    ax.set_yscale("log")
    y_min, y_max = ax.dataLim.intervaly
    if not (math.isfinite(y_min) and math.isfinite(y_max) and y_min > 0):
        # Nothing drawable on this axis (every loss nan/inf): the default (0, 1)
        # limits cannot be log-scaled, and saving would raise.
        ax.set_ylim(1e-4, 1.0)
    x_min, x_max = ax.dataLim.intervalx
    if not (math.isfinite(x_min) and math.isfinite(x_max) and x_max - x_min >= 1):
        # A single epoch (or none drawable): matplotlib would centre +-0.05 around
        # it, with fractional ticks; show the epochs 1..epochs with room around.
        ax.set_xlim(0, epochs + 1)
    ax.set_xlabel("epoch")
    ax.set_ylabel("MSE loss")
    if title is not None:
        ax.set_title(title)
    ax.grid(True, which="major", alpha=0.3)
    ax.legend()
    return fig


def _check_grid_range(grid_range) -> Tuple[float, float]:
    try:
        lo, hi = (float(v) for v in grid_range)
    except (TypeError, ValueError):
        raise TypeError(f"grid_range must be two numbers (lo, hi), got {grid_range!r}") from None
    if not (math.isfinite(lo) and math.isfinite(hi) and lo < hi):
        raise ValueError(f"grid_range must be finite with lo < hi, got {grid_range!r}")
    return lo, hi


def _check_int(name: str, value, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise TypeError(f"{name} must be an int, got {type(value).__name__}")
    if value < minimum:
        raise ValueError(f"{name} must be >= {minimum}, got {value}")
    return int(value)


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
    x = torch.as_tensor(x).detach()
    y = torch.as_tensor(y).detach()
    if x.dim() != 2 or x.shape[1] != 2:
        raise ValueError(
            f"decision boundaries need 2-D inputs: x must be [N, 2], got shape {tuple(x.shape)}")
    if y.numel() != x.shape[0]:
        raise ValueError(f"y must hold one label per row of x ({x.shape[0]}), "
                         f"got shape {tuple(y.shape)}")
    if isinstance(indices, Tensor):
        indices = indices.flatten().tolist()
    indices = [_check_int("indices[]", i, 0) for i in indices]
    if not indices:
        raise ValueError("indices must name at least one network")
    if titles is not None:
        titles = list(titles)
        if len(titles) != len(indices):
            raise ValueError(f"titles must have one entry per index: {len(indices)} indices, "
                             f"{len(titles)} titles")
    ncols = _check_int("ncols", ncols, 1)
    resolution = _check_int("resolution", resolution, 2)
    lo, hi = _check_grid_range(grid_range)

    dtype = x.dtype if x.is_floating_point() else torch.float32
    axis = torch.linspace(lo, hi, resolution, dtype=dtype, device=x.device)
    grid_x, grid_y = torch.meshgrid(axis, axis, indexing="ij")  # the lab's (default) indexing
    grid = torch.stack([grid_x.flatten(), grid_y.flatten()], dim=1)  # [M, 2]

    with torch.no_grad():
        pred = torch.as_tensor(predict(grid)).detach()
    M = grid.shape[0]
    if pred.dim() == 3 and pred.shape[2] == 1:
        pred = pred[..., 0]
    if pred.dim() != 2 or pred.shape[1] != M:
        raise ValueError(f"predict(grid [{M}, 2]) must return [G, {M}] or [G, {M}, 1], "
                         f"got shape {tuple(pred.shape)}")
    G = pred.shape[0]
    bad = [i for i in indices if i >= G]
    if bad:
        raise ValueError(f"indices {bad} out of range for {G} networks")
    # Only the chosen networks leave the device.
    pred = pred[torch.tensor(indices, device=pred.device)].to("cpu", torch.float64)
    pred = pred.clamp(0.0, 1.0)  # levels span [0, 1]; NaN (diverged) stays blank

    gx = grid_x.to("cpu", torch.float64).numpy()
    gy = grid_y.to("cpu", torch.float64).numpy()
    px = x.to("cpu", torch.float64).numpy()
    py = y.reshape(-1).to("cpu", torch.float64).numpy()

    count = len(indices)
    cols = min(ncols, count)
    rows = math.ceil(count / cols)
    fig = _new_figure((2.9 * cols + 0.9, 2.9 * rows + 0.2))
    axes = fig.subplots(rows, cols, squeeze=False)
    levels = torch.linspace(0, 1, 11).tolist()
    used = []
    contour = None
    for k, ax in enumerate(axes.flat):
        if k >= count:
            ax.set_visible(False)
            continue
        used.append(ax)
        contour = ax.contourf(gx, gy, pred[k].reshape(gx.shape).numpy(), levels=levels,
                              vmin=0.0, vmax=1.0)
        # vmin/vmax: labels keep their colours even when only one class is present.
        ax.scatter(px[:, 0], px[:, 1], c=py, cmap="jet", vmin=0.0, vmax=1.0,
                   edgecolors="white", linewidths=0.6, s=28, zorder=3)
        ax.set_xlim(lo, hi)
        ax.set_ylim(lo, hi)
        ax.set_aspect("equal")
        ax.set_title(titles[k] if titles is not None else f"network {indices[k]}",
                     fontsize="medium")
        # Axis labels on the outer subplots only: the bottom one of each column
        # (the last row may be short) and the first column.
        if k + cols >= count:
            ax.set_xlabel("$x_1$")
        else:
            ax.tick_params(labelbottom=False)
        if k % cols == 0:
            ax.set_ylabel("$x_2$")
        else:
            ax.tick_params(labelleft=False)
    fig.colorbar(contour, ax=used, label="predicted probability", shrink=0.9)
    return fig


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
        raise ValueError("formats must name at least one format, e.g. ('png',)")
    supported = fig.canvas.get_supported_filetypes()
    unknown = [f for f in formats if f not in supported]
    if unknown:
        raise ValueError(f"unsupported formats {unknown}; supported: {sorted(supported)}")
    base = Path(path_without_suffix)
    if not base.name:
        raise ValueError(f"path_without_suffix needs a file name, got {path_without_suffix!r}")
    base.parent.mkdir(parents=True, exist_ok=True)
    paths = []
    for fmt in formats:
        path = base.with_name(f"{base.name}.{fmt}")
        fig.savefig(path, format=fmt, dpi=150)
        paths.append(path)
    return paths


# ----------------------------------------------------------------------- sweeps
# Figures of a sweep (fastmlp.sweep): a grid of configurations, one panel per
# (architecture, init) and one curve per learning rate. They take precomputed
# numbers (quantile curves, fractions, epochs-to-eps), not TrainResults, so a
# resumed sweep can draw them from its saved configuration files.

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
        raise TypeError(f"panels must map a panel title to {what}, got {type(panels).__name__}")
    panels = list(panels.items())
    if not panels:
        raise ValueError("panels must hold at least one panel")
    return panels


def loss_bands(panels, *, ncols: int = 4, title: Optional[str] = None, max_points: int = 500,
               band: Tuple[float, float] = _BAND):
    """Median loss and a shaded band per curve, from precomputed quantiles, log y.

    ``panels`` maps a panel title to a list of ``(label, q)`` with ``q`` [3, epochs] =
    (low quantile, median, high quantile) of the loss over networks at each epoch (e.g.
    ``stats.loss_quantile_curves(losses, (0.05, 0.5, 0.95))``); ``band`` names the low
    and high quantiles for the legend. Curves with the same label get the same colour in
    every panel and one shared legend. Curves are thinned to at most ``max_points``
    epochs (every k-th, the last one kept). Losses of 0 are drawn at the smallest
    positive value. Returns the Figure.
    """
    panels = _check_panels(panels, "a list of (label, quantiles [3, epochs])")
    colors = _label_colors(panels)
    labels = list(colors)
    fig, axes, _ = _panel_grid(len(panels), ncols, (3.3, 2.6), extra_height=0.5)
    handles = {}
    for ax, (panel_title, curves) in zip(axes, panels):
        for label, q in curves:
            q = torch.as_tensor(q).detach().to("cpu", torch.float64)
            if q.dim() != 2 or q.shape[0] != 3 or q.shape[1] < 1:
                raise ValueError(f"panel {panel_title!r}, curve {label!r}: quantiles must be [3, epochs], "
                                 f"got shape {tuple(q.shape)}")
            epochs = q.shape[1]
            step = max(1, math.ceil(epochs / max_points))
            keep = torch.arange(0, epochs, step)
            if keep[-1] != epochs - 1:
                keep = torch.cat([keep, torch.tensor([epochs - 1])])
            q = q[:, keep]
            positive = q[q > 0]
            floor = positive.min().item() if positive.numel() else 1e-30
            q = q.clamp(min=floor)
            epoch = (keep + 1).numpy()
            (line,) = ax.plot(epoch, q[1].numpy(), color=colors[label], linewidth=1.3,
                              marker="o" if epochs == 1 else None)  # one epoch: a point, not a line
            ax.fill_between(epoch, q[0].numpy(), q[2].numpy(), color=colors[label], alpha=0.15,
                            linewidth=0)
            handles.setdefault(label, line)
        ax.set_title(panel_title, fontsize="medium")
        ax.grid(True, which="major", alpha=0.3)
    # One scale for every panel, so that panels compare at a glance (set by hand: shared
    # axes cost matplotlib's layout ~2x here), decades only (minor log ticks: same reason).
    y_min = min(ax.dataLim.intervaly[0] for ax in axes)
    y_max = max(ax.dataLim.intervaly[1] for ax in axes)
    if not (math.isfinite(y_min) and math.isfinite(y_max) and y_min > 0):
        y_min, y_max = 1e-4, 1.0
    x_max = max(ax.dataLim.intervalx[1] for ax in axes)
    from matplotlib.ticker import LogLocator

    for ax in axes:
        ax.set_yscale("log")
        ax.set_ylim(y_min / 1.5, y_max * 1.5)
        ax.set_xlim(0, max(x_max, 2))
        if y_max / y_min < 30:  # less than a decade or two: label 1, 2, 5 x 10^k too
            ax.yaxis.set_major_locator(LogLocator(subs=(1.0, 2.0, 5.0)))
        ax.yaxis.set_minor_locator(_null_locator())
    _outer_labels(axes, ncols, "epoch", "MSE loss", shared=True)
    lo, hi = band
    fig.legend([handles[k] for k in labels], labels, loc="outside lower center",
               ncols=min(len(labels), 6), title=f"median of the networks; shaded: {lo:.0%}\u2013{hi:.0%}")
    if title:
        fig.suptitle(title)
    return fig


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
        raise ValueError("row_labels and col_labels must be non-empty")
    longest = max(len(str(r)) for r in row_labels)
    width = 0.62 * C + 0.075 * longest + 0.9
    fig, axes, _ = _panel_grid(len(panels), ncols, (width, 0.42 * R + 1.2))
    image = None
    for k, (ax, (panel_title, values)) in enumerate(zip(axes, panels)):
        v = torch.as_tensor(values, dtype=torch.float64).detach().cpu()
        if tuple(v.shape) != (R, C):
            raise ValueError(f"panel {panel_title!r}: values must be [{R}, {C}], got {tuple(v.shape)}")
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


def epochs_ecdf(panels, epochs: int, *, eps: float, ncols: int = 4, title: Optional[str] = None):
    """Empirical CDF of the epochs each network needed to reach a loss below ``eps``.

    ``panels`` maps a panel title to a list of ``(label, epochs_to [S])`` with
    ``epochs_to`` from :func:`fastmlp.stats.epochs_to_eps` (-1 = never reached). The
    curve at epoch e is the fraction of all S networks whose loss is below ``eps`` after
    e updates, so it levels off at the converged fraction: networks that never got there
    keep it below 1. Log x from 1 to ``epochs``; same label, same colour in every panel.
    Returns the Figure.
    """
    panels = _check_panels(panels, "a list of (label, epochs_to [S])")
    epochs = _check_int("epochs", epochs, 1)
    colors = _label_colors(panels)
    labels = list(colors)
    fig, axes, _ = _panel_grid(len(panels), ncols, (3.3, 2.5), extra_height=0.5)
    handles = {}
    for ax, (panel_title, curves) in zip(axes, panels):
        any_reached = False
        for label, e in curves:
            e = torch.as_tensor(e).detach().to("cpu", torch.int64).flatten()
            S = e.numel()
            if S == 0:
                raise ValueError(f"panel {panel_title!r}, curve {label!r}: no networks")
            reached = torch.sort(e[e >= 0]).values.clamp(min=1).to(torch.float64)
            xs = torch.cat([torch.tensor([1.0]), reached, torch.tensor([float(epochs)])])
            ys = torch.cat([torch.tensor([0.0]), torch.arange(1, reached.numel() + 1) / S,
                            torch.tensor([reached.numel() / S])])
            (line,) = ax.step(xs.numpy(), ys.numpy(), where="post", color=colors[label], linewidth=1.3)
            handles.setdefault(label, line)
            any_reached = any_reached or reached.numel() > 0
        if not any_reached:
            ax.text(0.5, 0.5, f"no network reached\nloss < {eps:g}", transform=ax.transAxes,
                    ha="center", va="center", fontsize="small")
        ax.set_xscale("log")
        ax.set_xlim(1, max(epochs, 10))  # a run of a few epochs still gets a readable decade
        ax.set_ylim(-0.02, 1.02)
        ax.xaxis.set_minor_locator(_null_locator())  # decades only: minor log ticks double the layout time
        ax.set_title(panel_title, fontsize="medium")
        ax.grid(True, which="major", alpha=0.3)
    _outer_labels(axes, ncols, "epoch", f"fraction with loss < {eps:g}", shared=True)
    fig.legend([handles[k] for k in labels], labels, loc="outside lower center", ncols=min(len(labels), 6))
    if title:
        fig.suptitle(title)
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
        raise ValueError("rows must hold at least one (row_label, predict, titles)")
    k = len(rows[0][2])
    if k < 1 or any(len(r[2]) != k for r in rows):
        raise ValueError(f"every row needs the same number (>= 1) of networks, got {[len(r[2]) for r in rows]}")

    def predict(grid):
        out = []
        for _label, fn, _titles in rows:
            p = torch.as_tensor(fn(grid)).detach()
            if p.dim() == 3 and p.shape[2] == 1:
                p = p[..., 0]
            if p.dim() != 2 or p.shape[0] != k:
                raise ValueError(f"row {_label!r}: predict must return [{k}, M] or [{k}, M, 1], "
                                 f"got {tuple(p.shape)}")
            out.append(p.to("cpu", torch.float64))
        return torch.cat(out)

    titles = [f"{label}\n{t}" for label, _fn, ts in rows for t in ts]
    fig = decision_boundaries(x, y, predict, list(range(k * len(rows))), titles=titles, ncols=k,
                              grid_range=grid_range, resolution=resolution)
    if title:
        fig.suptitle(title)
    return fig
