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
``run``         fit the populations to memory, train one, cut it into one record per
                configuration; the record format (identity, merging); the estimate
``lock``        ``<out>/.lock``: one sweep writes a folder at a time
``records``     the folder: ``sweep.json``, ``configs/*.pt`` checked on load, extension
``report``      the table, ``results.csv``, ``summary.md``, :class:`SweepResult`
``figures``     the report's plots (a forked worker draws some of them)
==============  ==========================================================================

The sweep folder::

    sweep.json        what the folder holds (canonical JSON): epochs, eps, dtype, data
                      digests, and the union of the grids run into it
    .lock             while a sweep writes the folder: its pid, host and start time
    configs/*.pt      one file per configuration, written atomically when its population
                      finishes: what it holds (identity), per-seed final loss, accuracy,
                      epochs to eps, loss curves and trained parameters (and, with
                      save_losses, the whole loss history), statistics, loss quantiles
    results.csv       one row per configuration; summary.md the same table, the spec,
                      the environment and the timings
    loss_curves, converged, epochs_to_eps, boundaries  (.png and .pdf)

Re-running a sweep into its folder trains only what the folder lacks: configurations with no
sound record, and seeds a record does not hold yet (merged into it); so does a sweep that
adds values to the grid or reorders it.  An interruption loses only the population in flight.
"""
from __future__ import annotations

import time
from pathlib import Path
from typing import Callable, Sequence

import torch
import torch.distributed as dist

from .. import distributed, memory, stats
from ..validate import ArgumentError, check_int, check_out_dir
from . import figures, lock, records, report, run
from .batches import Batch, check_backend, padded_population, plan, todo
from .records import SPEC_FILE
from .report import SweepResult
from .spec import (DEFAULTS, OPTION_DEFAULTS, Config, InitSpec, SweepSpec, SweepSpecError, data_digest, device_of,
                   load_data)

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
          max_bytes: int | None = OPTION_DEFAULTS["max_bytes"], log: Callable[[str], None] | None = _print,
          command: str | None = None) -> SweepResult:
    """Train every configuration of a grid on the same seeds; write statistics and plots.

    Args:
        out: the sweep folder (created; extended when it holds a compatible sweep); ``""``
            is refused (it would be the current directory), ``"."`` is fine.
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
        max_bytes: memory one population may use (default: :func:`fastmlp.memory.budget`, a
            share of the device's free memory); a population that would need more is split.
        log: where the plan, the estimates, the table and any record retrained are printed
            (None: silent).
        command: the command line, recorded in summary.md.

    The folder keeps every record it ever got: a sweep into it trains what it lacks of the
    requested grid (configurations, or seeds of a configuration) and reports exactly the
    requested grid, in the requested order.  The defaults are :data:`DEFAULTS` (the spec)
    and :data:`OPTION_DEFAULTS` (the others).  Raises :class:`SweepSpecError` (an
    :class:`~fastmlp.validate.ArgumentError` naming the argument) for an ``out`` that is not a
    folder one can write (checked first), a bad grid, device, backend or format, a folder
    that holds a sweep this one cannot extend or that another sweep is writing, and
    :class:`~fastmlp.validate.NotEnoughMemory` for a configuration that cannot fit in
    memory, before any training starts.
    """
    t_start = time.perf_counter()
    try:  # "", not a path, a file, no place to write: refused before anything is loaded
        check_out_dir(out, "out")  # files go inside out: "." (resuming in the folder one is in) is fine
    except ArgumentError as e:
        raise SweepSpecError.of(e) from None
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
    digests = {d: data_digest(*data[d]) for d in spec.datasets}
    batches = plan(spec)
    check_backend(batches, spec, data, backend, device)
    if plots:
        formats = figures.check_formats(formats)
    if max_bytes is not None:
        try:
            max_bytes = check_int("max_bytes", max_bytes, 1)
        except ArgumentError as e:
            raise SweepSpecError.of(e) from None
    limit, source = memory.budget(device, max_bytes)
    if distributed.current() is not None:  # every rank must cut the populations alike: the smallest budget
        t = torch.tensor([limit], dtype=torch.int64, device=device)
        dist.all_reduce(t, op=dist.ReduceOp.MIN)
        limit = int(t.item())

    out = Path(out)
    with lock.held(out, log, take=main_rank):  # released however the sweep ends
        # records: may this sweep write the folder, what does it hold, what is left to train?
        asked = records.spec_json(spec, digests)
        folder_spec, resuming = records.claim(out, asked)
        log(f"sweep: {spec.describe()}, in {len(batches)} populations -> {out}")
        held = records.scan(out, spec, data, digests, log)
        need, have, keep = _needs(spec, held, save_losses, out, log)
        work = run.fit(todo(batches, need, have, keep), spec, data, device, limit, source, backend)
        if main_rank:
            records.write_spec(out, folder_spec)
        configs = spec.configs()
        trained = sum(1 for c in configs if need[c])
        skipped = len(configs) - trained
        if resuming:
            added = sum(1 for c in configs if need[c] and have[c])
            log(f"resuming: {skipped} configurations already in {out}, {added} more with seeds to add; "
                f"{len(work)} populations to train")

        # run: each population trains, then its configurations' records are saved (merged into
        # the record there when the folder holds some of the configuration's seeds).
        timings, peak = {}, 0
        t = time.perf_counter()
        if work:
            line, peak = run.estimate(work, spec, data, device, backend, limit, source)
            log(line)
        timings["estimate"] = time.perf_counter() - t
        train_s, t = 0.0, time.perf_counter()
        on_disk = {c for c in configs if have[c]}
        for k, b in enumerate(work, 1):
            log(f"[{k}/{len(work)}] {b.describe()}")
            x, y = data[b.dataset]
            pop, res = run.train_batch(b, spec, x, y, device, backend, progress, max_bytes=max_bytes)
            for cfg, record in run.config_records(b, spec, pop, res, x, y, digests[b.dataset]):
                if main_rank:
                    old = records.read(out, cfg, spec, data, digests)[0] if cfg in on_disk else None
                    records.save(out, cfg, record if old is None else run.combine([old, record]))
                    on_disk.add(cfg)
                record = old = None  # one configuration's record in memory at a time
            train_s += res.wall_time_s
            log(f"      trained in {res.wall_time_s:.2f} s "
                f"({len(pop) * spec.epochs / res.wall_time_s:.3g} network-epochs/s)")
            del pop, res
        timings["training"] = train_s
        timings["populations: build, statistics, files"] = time.perf_counter() - t - train_s
        distributed.barrier()  # every configuration file is on disk before anyone reads them

        # report: the table, then the figures, then the summary of it all.
        t = time.perf_counter()
        found = records.load(out, spec, data, digests)
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
                             files=files, timings=timings, trained_networks=sum(b.networks for b in work),
                             peak_bytes=peak)
        if main_rank:
            report.write_summary(result, asked, folder_spec, device, command)
            log(f"sweep done in {result.wall_time_s:.1f} s ({trained} configurations trained, {skipped} found done; "
                f"{result.timings_text()}); wrote {out}/: {', '.join(files)}")
        return result


def _needs(spec: SweepSpec, held: dict, save_losses: bool, out: Path, log) -> tuple[dict, dict, dict]:
    """Per configuration: the seeds to train, the seeds its record holds (0: no record to
    merge into), and whether its records keep loss histories."""
    need, have, keep = {}, {}, {}
    for cfg, h in held.items():
        if h is not None and save_losses and not h.losses:
            log(f"{records.config_path(out, cfg)} has no loss histories (save_losses): retraining it")
            h = None
        known = set(h.seeds) if h else set()
        need[cfg] = tuple(s for s in spec.seeds if s not in known)
        have[cfg] = len(known)
        keep[cfg] = save_losses or bool(h and h.losses)
    return need, have, keep
