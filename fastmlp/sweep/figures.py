"""Stage 5 (report), the figures: loss curves, epochs to eps, converged fractions and the
gallery of decision boundaries, one set per data set, drawn from the records.

Matplotlib and :mod:`fastmlp.plot` are imported when a figure is drawn or a format is
checked, never when the sweep is imported.
"""
from __future__ import annotations

import math
import multiprocessing
import os
import re
import sys
import traceback
import warnings
from pathlib import Path
from typing import Callable

import torch

from .. import plot, stats
from ..population import Population, network_minor
from ..results import pick_boundary_networks
from .run import CURVE_POINTS
from .spec import Config, SweepSpec, SweepSpecError, hidden_label, num_label

__all__ = ["check_formats", "plot_jobs", "draw"]

# Resolution of the sweep's PNGs: 100 dpi draws the Bar's 12-panel figures at 1360 px wide
# (240 KB; 150 dpi: 390 KB and 1.6x the time).
_DPI = 100
# Networks of each architecture drawn in the gallery of decision boundaries.
_GALLERY = 6
# The gallery shows, for every architecture, the configuration with the first init of the
# grid and the learning rate nearest the lab's.
_LAB_LR = 0.25


def check_formats(formats) -> list[str]:
    """The figure formats, lower case without dots; raises :class:`SweepSpecError`
    ``("formats", ...)`` for one matplotlib cannot write."""
    from matplotlib.backend_bases import FigureCanvasBase

    formats = [formats] if isinstance(formats, str) else list(formats)
    formats = [str(f).lstrip(".").lower() for f in formats]
    supported = FigureCanvasBase.get_supported_filetypes()
    bad = [f for f in formats if f not in supported]
    if not formats or bad:
        what = f"unsupported figure formats {bad}" if bad else "no figure format given"
        raise SweepSpecError("formats", f"{what}; supported: {', '.join(sorted(supported))}")
    return formats


def _every_epoch(q: torch.Tensor, at: torch.Tensor, epochs: int) -> torch.Tensor:
    """Curves ``q [k, len(at)]`` kept at the epochs ``at``, as ``[k, epochs]``: exact at
    ``at``, linear in between (the figure, thinned to ``CURVE_POINTS`` epochs as the records
    are, draws the kept values themselves)."""
    q = q.to(torch.float64)
    if len(at) == 1:
        return q.expand(-1, epochs).clone()
    e = torch.arange(epochs)
    j = torch.searchsorted(at, e).clamp(1, len(at) - 1)  # at[j - 1] <= e <= at[j]
    a, b = at[j - 1].double(), at[j].double()
    w = ((e.double() - a) / (b - a)).clamp(0, 1)
    out = q[:, j - 1] * (1 - w) + q[:, j] * w
    out[:, at] = q
    return out


def plot_jobs(spec: SweepSpec, records: dict, data: dict) -> list[tuple[str, bool, Callable]]:
    """The figures of a sweep as ``(file name without suffix, pure, build)``: ``build()``
    returns the Figure; ``pure`` jobs only draw numbers already computed (no training-engine
    work), so a forked worker may draw them."""
    jobs = []
    q = stats.CURVE_QUANTILES
    lo, med, hi = q.index(0.05), q.index(0.5), q.index(0.95)
    # One row per architecture, one column per init; a single init: architectures side by side.
    ncols = len(spec.inits) if len(spec.inits) > 1 else min(4, len(spec.hidden))
    heat_cols = min(3, len(spec.hidden))
    # A title longer than a narrow figure would be clipped: the details go on a second line.
    sep = ": " if ncols >= 3 else "\n"
    S = len(spec.seeds)
    for d in spec.datasets:
        sfx = "" if len(spec.datasets) == 1 else "_" + re.sub(r"[^A-Za-z0-9._-]+", "_", d)
        where = f"{d}, {S} seeds per configuration, {spec.epochs} epochs"

        def rec(h, i, lr, d=d):
            return records[Config(d, h, i, lr)]

        def band(r):
            return _every_epoch(r["loss_quantiles"][[lo, med, hi]], r["curve_epochs"], spec.epochs)

        bands = {f"{hidden_label(h)} | {i.label}": [(f"lr {num_label(lr)}", band(rec(h, i, lr))) for lr in spec.lrs]
                 for h in spec.hidden for i in spec.inits}
        jobs.append((f"loss_curves{sfx}", True, lambda bands=bands, where=where: plot.loss_bands(
            bands, ncols=ncols, max_points=CURVE_POINTS, title=f"Loss per configuration (hidden | init){sep}{where}")))

        ecdf = {f"{hidden_label(h)} | {i.label}": [(f"lr {num_label(lr)}", rec(h, i, lr)["epochs_to_eps"])
                                                for lr in spec.lrs]
                for h in spec.hidden for i in spec.inits}
        jobs.append((f"epochs_to_eps{sfx}", True, lambda ecdf=ecdf, where=where: plot.epochs_ecdf(
            ecdf, spec.epochs, eps=spec.eps, ncols=ncols,
            title=f"Epochs to reach loss < {spec.eps:g} (hidden | init){sep}{where}")))

        heat = {f"hidden {hidden_label(h)}": torch.tensor([[rec(h, i, lr)["stats"]["converged_fraction"]
                                                            for lr in spec.lrs] for i in spec.inits])
                for h in spec.hidden}
        jobs.append((f"converged{sfx}", True, lambda heat=heat, where=where: plot.converged_heatmaps(
            heat, [i.label for i in spec.inits], [num_label(v) for v in spec.lrs], ncols=heat_cols,
            value_name=f"converged (final loss < {spec.eps:g})",
            title=f"Converged fraction{': ' if heat_cols >= 3 else chr(10)}{where}")))

        x, y = data[d]
        if x.shape[1] == 2:
            init = spec.inits[0]
            lr = min(spec.lrs, key=lambda v: (abs(math.log(v / _LAB_LR)) if v > 0 else math.inf, v))
            rows = []
            for h in spec.hidden:
                r = rec(h, init, lr)
                idx = pick_boundary_networks(r["final_loss"], min(_GALLERY, S))
                pop = Population._from_parameters([network_minor(w[idx].shape, w.dtype, "cpu").copy_(w[idx])
                                                   for w in r["weights"]],
                                                  [network_minor(b[idx].shape, b.dtype, "cpu").copy_(b[idx])
                                                   for b in r["biases"]],
                                                  r["seeds"][idx], None, None)
                titles = [f"seed {int(r['seeds'][i])}, loss {float(r['final_loss'][i]):.1e}" for i in idx]
                rows.append((f"hidden {hidden_label(h)}", pop.predict, titles))
            title = (f"Decision boundaries, best to worst final loss: {d}, {init.label}, lr {num_label(lr)}, "
                     f"{spec.epochs} epochs")
            jobs.append((f"boundaries{sfx}", False, lambda x=x, y=y, rows=rows, title=title: plot.boundary_gallery(
                x, y, rows, title=title)))
    return jobs


def _draw(jobs, out: Path, formats: list[str]) -> None:
    for name, _pure, build in jobs:
        fig = build()
        for k, fmt in enumerate(formats):
            # _DPI, not plot.save's 150: the 12-panel figures of a sweep stay readable, under
            # 300 KB, and 35% faster to draw.
            fig.savefig(out / f"{name}.{fmt}", format=fmt, dpi=_DPI)
            if k == 0:
                # Lay the figure out once: the constrained layout is most of the drawing
                # time, and it comes out the same for every format.
                fig.set_layout_engine("none")


def _draw_in_child(jobs, out: Path, formats: list[str]) -> None:
    """Body of the forked plotting worker: draw, exit 0; any error: traceback, exit 1."""
    code = 0
    try:
        torch.set_num_threads(1)  # never enter the parent's OpenMP pool from a forked child
        _draw(jobs, out, formats)
    except BaseException:
        traceback.print_exc()
        code = 1
    finally:
        sys.stderr.flush()
        os._exit(code)  # no atexit handlers or finalizers of the parent's objects


def draw(spec: SweepSpec, records: dict, data: dict, out: Path, formats, worker: bool = True) -> list[str]:
    """Draw every figure of the sweep into ``out``; returns the file names.

    ``records`` maps each :class:`Config` to its record, ``data`` each data set to its CPU
    ``(x, y)``.  Matplotlib draws on one core, and the figures are most of what a sweep adds
    to its training, so where ``fork`` exists the pure figures (loss curves, ECDF) are drawn
    by a forked worker while this process draws the others: the Bar sweep's eight files in
    3.9 s instead of 7.0 s on the idle 2-core dev box (no gain while another job holds a
    core).  The worker touches no engine and runs torch with one thread; ``worker=False``
    draws everything here.
    """
    formats = list(formats)
    jobs = plot_jobs(spec, records, data)
    files = [f"{name}.{fmt}" for name, _, _ in jobs for fmt in formats]
    pure = [j for j in jobs if j[1] and j[0].startswith(("loss_curves", "epochs_to_eps"))]
    rest = [j for j in jobs if j not in pure]
    if not (worker and pure and rest and (os.cpu_count() or 1) > 1
            and "fork" in multiprocessing.get_all_start_methods()):
        _draw(jobs, out, formats)
        return files
    with warnings.catch_warnings():
        # Python >= 3.12 warns about fork() in a process with threads (torch's idle pool):
        # the child never uses them (see _draw_in_child).
        warnings.simplefilter("ignore", DeprecationWarning)
        worker = multiprocessing.get_context("fork").Process(target=_draw_in_child, args=(pure, out, formats),
                                                             daemon=True)
        worker.start()
    try:
        _draw(rest, out, formats)
    finally:
        worker.join()
    if worker.exitcode != 0:
        raise RuntimeError(f"the plotting worker failed (exit code {worker.exitcode}; its traceback is above)")
    return files
