"""Sweeps: the lab's closing experiments over a grid, many seeds per configuration.

A configuration is one ``(dataset, hidden widths, init scheme with gain, learning rate)``;
every configuration trains the same seeds, so comparisons between configurations are
paired (seed s starts from the same weights whatever the lr, see ``Population``).

:func:`sweep` runs the stages in order, one module each, each importing only those before it:

==============  ==========================================================================
``spec``        :class:`SweepSpec` parsed and validated from the arguments (:data:`DEFAULTS`),
                the device, the data sets; every error is a :class:`SweepSpecError`
``batches``     :func:`plan`: configurations of one data set and depth (and width class)
                as one zero-padded population, a :class:`Batch`; the backend is asked
                about every batch before any trains
``run``         train one batch, cut it into one record per configuration; the estimate
``records``     the folder: ``sweep.json``, ``configs/*.pt``, resume
``report``      the table, ``results.csv``, ``summary.md``, :class:`SweepResult`
``figures``     the report's plots (a forked worker draws some of them)
==============  ==========================================================================

The sweep folder::

    sweep.json        the spec (canonical JSON); a folder with another spec is refused
    configs/*.pt      one file per configuration, written atomically when its population
                      finishes: statistics, loss quantile curves, per-seed final loss,
                      accuracy, epochs to eps, trained parameters (and, with
                      save_losses, the whole loss history)
    results.csv       one row per configuration; summary.md the same table, the spec,
                      the environment and the timings
    loss_curves, converged, epochs_to_eps, boundaries  (.png and .pdf)

Re-running the same sweep into the same folder skips every population whose
configurations are all saved; an interruption loses only the population in flight.
"""
from __future__ import annotations

import time
from pathlib import Path
from typing import Callable, Sequence

from .. import distributed, stats
from . import figures, records, report, run
from .batches import Batch, check_backend, padded_population, plan
from .records import SPEC_FILE
from .report import SweepResult
from .spec import DEFAULTS, OPTION_DEFAULTS, Config, InitSpec, SweepSpec, SweepSpecError, device_of, load_data

__all__ = ["sweep", "SweepSpec", "SweepSpecError", "SweepResult", "InitSpec", "Config", "plan", "Batch",
           "padded_population", "SPEC_FILE", "DEFAULTS", "OPTION_DEFAULTS"]


def _print(msg: str) -> None:
    print(msg, flush=True)


def _quiet(msg: str) -> None:
    pass


def sweep(out, *, hidden=DEFAULTS["hidden"], lr=DEFAULTS["lr"], init=DEFAULTS["init"],
          datasets=DEFAULTS["datasets"], seeds=DEFAULTS["seeds"], epochs: int = DEFAULTS["epochs"],
          eps: float = DEFAULTS["eps"], gain: float = DEFAULTS["gain"], dtype=DEFAULTS["dtype"],
          device=OPTION_DEFAULTS["device"], backend: str = OPTION_DEFAULTS["backend"],
          progress: bool | None = OPTION_DEFAULTS["progress"], plots: bool = OPTION_DEFAULTS["plots"],
          formats: Sequence[str] = OPTION_DEFAULTS["formats"], save_losses: bool = OPTION_DEFAULTS["save_losses"],
          log: Callable[[str], None] | None = _print, command: str | None = None) -> SweepResult:
    """Train every configuration of a grid on the same seeds; write statistics and plots.

    Args:
        out: the sweep folder (created; resumed when it holds this sweep's ``sweep.json``).
        hidden: architectures, each a list of hidden widths (``[[5, 3], [8], [4, 4, 4]]``)
            or a string ``"5,3"``.
        lr: learning rates.
        init: init schemes, ``"scheme[:value][@gain]"`` (``"he_normal"``, ``"normal:0.1"``,
            ``"glorot_uniform@4"``); ``gain`` is the gain of those without ``@``.
        datasets: names for :func:`fastmlp.datasets.get` (``"five_points"``, ``"csv:PATH"``).
        seeds: a count S (seeds 0..S-1) or a list; every configuration trains these seeds.
        epochs, eps: training length, and the loss below which a network has converged.
        dtype: "float32" or "float64".  device: default cuda when available, else cpu.
        backend: passed to :func:`fastmlp.train` unchanged; checked against every
            population (its padded widths, its data set's N) before any training.
        progress: progress bars (default: when stderr is a terminal).
        plots, formats: draw the figures, in these formats.
        save_losses: also keep every network's loss history in the configuration files.
        log: where the plan, the estimates and the table are printed (None: silent).
        command: the command line, recorded in summary.md.

    The defaults are :data:`DEFAULTS` (the spec) and :data:`OPTION_DEFAULTS` (the others).
    Raises :class:`SweepSpecError` (an :class:`~fastmlp.validate.ArgumentError` naming the
    argument) for a bad grid, device, backend or format, or a folder that holds another
    sweep, before any training starts.
    """
    t_start = time.perf_counter()
    # Under torch.distributed every rank runs this function: `train` shards each population
    # over the ranks and gathers it back, rank 0 writes every file and prints.
    main_rank = distributed.is_main()
    log = log if (log and main_rank) else _quiet
    progress = progress if main_rank else False

    # spec -> plan: every argument is checked before the folder is touched.
    spec = SweepSpec.build(hidden=hidden, lr=lr, init=init, datasets=datasets, seeds=seeds, epochs=epochs,
                           eps=eps, gain=gain, dtype=dtype)
    device = device_of(device)
    data = load_data(spec, device)
    batches = plan(spec)
    check_backend(batches, spec, data, backend, device)
    if plots:
        formats = figures.check_formats(formats)

    # records: claim the folder, or resume it.
    out, folder_spec = Path(out), records.spec_json(spec, data)
    resuming = records.claim(out, folder_spec)
    todo = [b for b in batches if not records.done(out, b)]
    trained = sum(len(b.configs) for b in todo)
    skipped = len(spec.configs()) - trained
    log(f"sweep: {spec.describe()}, in {len(batches)} populations -> {out}")
    if resuming:
        log(f"resuming: {skipped} configurations already in {out}, {len(todo)} populations to train")

    # run: each population trains, then its configurations' records are saved.
    timings = {}
    t = time.perf_counter()
    if todo:
        log(run.estimate(todo, spec, data, device, backend))
    timings["estimate"] = time.perf_counter() - t
    train_s, t = 0.0, time.perf_counter()
    for k, b in enumerate(todo, 1):
        log(f"[{k}/{len(todo)}] {b.describe(len(spec.seeds))}")
        x, y = data[b.dataset]
        pop, res = run.train_batch(b, spec, x, y, device, backend, progress)
        for cfg, record in run.config_records(b, spec, pop, res, x, y, save_losses):
            if main_rank:
                records.save(out, cfg, record)
        train_s += res.wall_time_s
        log(f"      trained in {res.wall_time_s:.2f} s "
            f"({len(pop) * spec.epochs / res.wall_time_s:.3g} network-epochs/s)")
    timings["training"] = train_s
    timings["populations: build, statistics, files"] = time.perf_counter() - t - train_s
    distributed.barrier()  # every configuration file is on disk before anyone reads them

    # report: the table, then the figures, then the summary of it all.
    t = time.perf_counter()
    found = records.load(out, spec)
    rows = [report.row(r) for r in found.values()]
    log(stats.format_table(rows))
    files = list(report.TABLE_FILES)
    if main_rank:
        report.write_csv(out, rows)
        timings["table"] = time.perf_counter() - t
        t = time.perf_counter()
        if plots:
            files += figures.draw(spec, found, {d: (x.cpu(), y.cpu()) for d, (x, y) in data.items()}, out, formats)
        timings["plots"] = time.perf_counter() - t
    result = SweepResult(out=out, spec=spec, rows=rows, records=list(found.values()), trained=trained,
                         skipped=skipped, wall_time_s=time.perf_counter() - t_start, train_time_s=train_s,
                         files=files, timings=timings)
    if main_rank:
        report.write_summary(result, folder_spec, device, command)
        log(f"sweep done in {result.wall_time_s:.1f} s ({trained} configurations trained, {skipped} found done; "
            f"{result.timings_text()}); wrote {out}/: {', '.join(files)}")
    return result
