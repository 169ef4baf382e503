"""Loss over epochs: one run's median and band (``loss_curves``), a sweep's precomputed
quantile bands (``loss_bands``), and the epochs each network needed to reach a loss
(``epochs_ecdf``)."""
from __future__ import annotations

import math
from typing import Optional, Tuple

import torch
from torch import Tensor

from ..stats import nanquantiles
from ..validate import ArgumentError
from ._common import (_check_int, _check_panels, _label_colors, _new_figure, _null_locator,
                      _outer_labels, _panel_grid)

# Quantile band drawn around the median.
_BAND = (0.05, 0.95)


def _check_epochs(epochs, E: int) -> Tensor:
    """The recorded epoch of each of E columns (0-based; default 0..E-1) as int64 [E]."""
    if epochs is None:
        return torch.arange(E)
    e = torch.as_tensor(epochs).detach().cpu()
    if e.dim() != 1 or len(e) != E or e.is_complex() or e.dtype == torch.bool:
        raise ArgumentError("epochs", f"epochs must be 1-D with one epoch per column ({E}), got {tuple(e.shape)}")
    if e.is_floating_point() and not bool((torch.isfinite(e) & (e == e.round())).all()):
        raise ArgumentError("epochs", "epochs must be whole numbers")
    e = e.long()
    if E and (int(e.min()) < 0 or not bool((e[1:] > e[:-1]).all())):
        raise ArgumentError("epochs", "epochs must be increasing epoch numbers >= 0")
    return e


def _least_positive(losses: Tensor) -> Optional[float]:
    """The smallest positive loss, in chunks of epochs on the losses' device (None: none)."""
    step = max(1, 2**24 // max(1, losses.shape[0]))
    m = min((float(torch.where(losses[:, k:k + step] > 0, losses[:, k:k + step], math.inf).amin())
             for k in range(0, losses.shape[1], step)), default=math.inf)
    return m if math.isfinite(m) else None


def loss_curves(losses: Tensor, *, ax=None, label: Optional[str] = None, title: Optional[str] = None,
                epochs=None, sample=None):
    """Median loss over networks with a shaded 5-95% band, per epoch, log y.

    ``losses`` [G, E] (a 1-D [E] history is taken as G=1), on any device: the quantiles
    are computed there (:func:`fastmlp.stats.nanquantiles`) and only the [3, E] band comes
    to the CPU. Diverged networks may hold nan/inf: each epoch's quantiles are taken over
    its finite values only. Column j holds the loss at the start of epoch ``epochs[j]``
    (0-based as recorded: a thinned history keeps every k-th epoch; default ``0..E-1``);
    the x axis numbers epochs from 1, so column j is drawn at ``epochs[j] + 1``.
    ``sample``: indices of a few networks whose own curves are drawn as thin lines (the
    figure shows statistics and a sample, never every curve). A loss of exactly 0 (float32
    sigmoids saturate, so an MSE can reach 0) cannot be drawn on a log axis: curves are
    floored at the smallest positive loss present, and a note on the axis says so.

    Draws on ``ax`` if given (several calls on one axis compare runs; each call takes the
    axis' next colour), else on a new Figure. Returns the Figure.
    """
    if not isinstance(losses, Tensor):
        losses = torch.as_tensor(losses)
    if losses.dim() == 1:
        losses = losses[None, :]
    if losses.dim() != 2 or losses.shape[0] < 1 or losses.shape[1] < 1:
        raise ArgumentError(
            "losses", f"losses must be [G, epochs] with G, epochs >= 1, got shape {tuple(losses.shape)}")
    losses = losses.detach()
    G, E = losses.shape
    epoch = (_check_epochs(epochs, E) + 1).numpy()
    picked = torch.zeros(0, dtype=torch.int64) if sample is None else torch.as_tensor(sample).reshape(-1)
    if picked.is_floating_point() or picked.dtype == torch.bool or (
            len(picked) and (int(picked.min()) < -G or int(picked.max()) >= G)):
        raise ArgumentError("sample", f"sample must be network indices in [0, {G}), got {sample!r}")
    lo_q, hi_q = _BAND
    band = nanquantiles(losses, (lo_q, 0.5, hi_q)).cpu()  # [3, E]
    curves = losses[picked.to(losses.device)].to("cpu", torch.float64)  # [n, E]
    curves = torch.where(torch.isfinite(curves), curves, math.nan)

    floor = None
    if (band <= 0).any() or (curves <= 0).any():  # only then pay for a pass over all losses
        floor = _least_positive(losses) or 1e-30
        band, curves = band.clamp(min=floor), curves.clamp(min=floor)  # clamp keeps NaN as NaN

    from matplotlib.ticker import MaxNLocator

    if ax is None:
        fig = _new_figure((6.4, 4.0))
        ax = fig.add_subplot()
    else:
        fig = ax.figure

    lo, med, hi = (band[i].numpy() for i in range(3))
    name = f"{label}: " if label else ""
    nets = "1 network" if G == 1 else f"{G} networks"
    # A single epoch is a single point: give it a marker, a line would be invisible.
    marker = "o" if E == 1 else None
    (line,) = ax.plot(epoch, med, marker=marker, linewidth=1.8, zorder=3,
                      label=f"{name}median of {nets}" if G > 1 else f"{name}{nets}")
    for k, c in enumerate(curves):
        ax.plot(epoch, c.numpy(), color=line.get_color(), linewidth=0.6, alpha=0.45, marker=marker,
                markersize=3, label=f"{name}{len(curves)} of the networks" if k == 0 else None)
    if G > 1:
        band_label = f"{name}{lo_q:.0%}\u2013{hi_q:.0%} of networks"
        if E > 1:
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
        # it, with fractional ticks; show it with an epoch of room either side.
        ax.set_xlim(epoch[0] - 1, epoch[-1] + 1)
    ax.set_xlabel("epoch")
    ax.set_ylabel("MSE loss")
    if title is not None:
        ax.set_title(title)
    ax.grid(True, which="major", alpha=0.3)
    ax.legend()
    return fig


# ----------------------------------------------------------------------- sweeps
# Figures of a sweep (fastmlp.sweep). They take precomputed numbers (quantile curves,
# epochs-to-eps), not TrainResults, so a resumed sweep can draw them from its saved
# configuration files.

def loss_bands(panels, *, ncols: int = 4, title: Optional[str] = None, max_points: int = 500,
               band: Tuple[float, float] = _BAND, epochs=None):
    """Median loss and a shaded band per curve, from precomputed quantiles, log y.

    ``panels`` maps a panel title to a list of ``(label, q)`` with ``q`` [3, K] =
    (low quantile, median, high quantile) of the loss over networks at each of K recorded
    epochs (e.g. ``stats.loss_quantile_curves(losses, (0.05, 0.5, 0.95))``), or of
    ``(label, q, epochs)`` with that curve's recorded epochs; ``epochs`` (0-based, as
    recorded) is the default for every curve, and every epoch ``0..K-1`` the default of
    that; the x axis numbers epochs from 1. ``band`` names the low and high quantiles for
    the legend. Curves with the same label get the same colour in every panel and one
    shared legend. Curves are thinned to at most ``max_points`` points (every k-th, the
    last one kept). Losses of 0 are drawn at the smallest positive value. Returns the Figure.
    """
    panels = _check_panels(panels, "a list of (label, quantiles [3, epochs])")
    colors = _label_colors([(t, [(c[0], None) for c in curves]) for t, curves in panels])
    labels = list(colors)
    fig, axes, _ = _panel_grid(len(panels), ncols, (3.3, 2.6), extra_height=0.5)
    handles = {}
    for ax, (panel_title, curves) in zip(axes, panels):
        for label, q, *at in curves:
            q = torch.as_tensor(q).detach().to("cpu", torch.float64)
            if q.dim() != 2 or q.shape[0] != 3 or q.shape[1] < 1:
                raise ArgumentError('panels', f"panel {panel_title!r}, curve {label!r}: quantiles must be [3, epochs], "
                                 f"got shape {tuple(q.shape)}")
            K = q.shape[1]
            at = _check_epochs(at[0] if at else epochs, K)
            step = max(1, math.ceil(K / max_points))
            keep = torch.arange(0, K, step)
            if keep[-1] != K - 1:
                keep = torch.cat([keep, torch.tensor([K - 1])])
            q = q[:, keep]
            positive = q[q > 0]
            floor = positive.min().item() if positive.numel() else 1e-30
            q = q.clamp(min=floor)
            epoch = (at[keep] + 1).numpy()
            (line,) = ax.plot(epoch, q[1].numpy(), color=colors[label], linewidth=1.3,
                              marker="o" if K == 1 else None)  # one epoch: a point, not a line
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
                raise ArgumentError('panels', f"panel {panel_title!r}, curve {label!r}: no networks")
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
