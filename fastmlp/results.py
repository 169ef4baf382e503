"""Results: statistics of a training run and its run folder (summary.json, losses.pt,
population.pt, plots), written all or nothing."""
from __future__ import annotations

import errno
import importlib.metadata
import json
import math
import os
import platform
import re
import shutil
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

import torch

from . import plot, stats
from ._version import __version__
from .memory import fmt_bytes
from .files import alive as _alive, exchange as _exchange, sync as _sync, umask as _umask
from .population import Population
from .train import TrainResult, train
from .validate import ArgumentError, check_out_dir

__all__ = ["summarize", "save_run", "format_summary", "pick_boundary_networks", "environment",
           "cpu_name", "check_run_folder", "is_run_folder", "recover_run_folder", "load_losses", "run_bytes",
           "check_disk", "format_phases", "LOSSES_FORMAT"]

QUANTILES = (0.0, 0.05, 0.25, 0.5, 0.75, 0.95, 1.0)


def environment(device: torch.device | str | None = None) -> dict:
    """Versions and hardware, for every file a run or benchmark writes."""
    env = {
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "platform": platform.platform(),
        "cpu": cpu_name(),
        "threads": torch.get_num_threads(),
    }
    try:  # the installed version, without importing triton
        env["triton"] = importlib.metadata.version("triton")
    except importlib.metadata.PackageNotFoundError:
        env["triton"] = None
    env["fastmlp"] = __version__
    if device is not None and torch.device(device).type == "cuda":
        env["gpu"] = torch.cuda.get_device_name(torch.device(device))
    return env


def cpu_name() -> str:
    """The CPU model from /proc/cpuinfo (platform's guess elsewhere)."""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def summarize(result: TrainResult, eps: float = 0.01) -> dict:
    """Numbers that describe a run: convergence, divergence, final-loss quantiles, the epochs
    to ``eps`` (when tracked during training or computable), speed.  Computed on the
    population's device; a few numbers come to the host."""
    final = result.final_loss.detach()
    q = stats.quantiles(final, QUANTILES)
    G = len(final)
    try:
        to_eps = result.epochs_to_eps(eps)
    except ValueError:  # a thinned history and another eps than the tracked one
        to_eps = None
    reached = None if to_eps is None else to_eps[to_eps >= 0]
    e25, e50, e75 = stats.quantiles(reached, (0.25, 0.5, 0.75)) if reached is not None else (math.nan,) * 3
    return {
        "networks": G,
        "epochs": result.epochs,
        "backend": result.backend,
        "wall_time_s": result.wall_time_s,
        "network_epochs_per_s": result.network_epochs_per_s,
        "eps": eps,
        "converged_fraction": float(result.converged(eps).sum()) / G,
        "diverged": int(result.diverged.sum()),
        "final_loss_quantiles": {f"q{int(p * 100):02d}": v for p, v in zip(QUANTILES, q)},
        "epochs_to_eps": None if reached is None else {
            "reached": int(reached.numel()), "q25": e25, "median": e50, "q75": e75},
        "record_every": result.record_every,
        "recorded_epochs": len(result.recorded_epochs),
        "chunks": result.n_chunks,
    }


def pick_boundary_networks(final_loss: torch.Tensor, k: int = 8) -> list[int]:
    """``k`` networks spread from the best to the worst final loss (non-finite last)."""
    final = final_loss.detach().double().cpu().nan_to_num(nan=math.inf)
    order = torch.argsort(final, stable=True)
    G = len(order)
    k = min(k, G)
    positions = [round(i * (G - 1) / max(k - 1, 1)) for i in range(k)]
    return [int(order[p]) for p in positions]


# --animate: the gallery's networks over training, about this many frames
ANIMATION_FRAMES = 50


def animation_run(result: TrainResult, x: torch.Tensor, y: torch.Tensor, lr, n_networks: int = 8,
                  frames: int = ANIMATION_FRAMES) -> TrainResult:
    """The gallery's networks (:func:`pick_boundary_networks`) trained again on their own, from
    the same seeds and on the same backend, with a snapshot every ``epochs / (frames - 1)`` epochs:
    what ``boundaries.gif`` shows.  Replaying a few seeds costs far less than keeping snapshots of
    every network of a large run.  On the CPU program (bitwise independent of G) the replay is the
    run itself, bit for bit; on the torch engine it agrees to float rounding."""
    pop = result.population
    idx = pick_boundary_networks(result.final_loss, n_networks)
    lr = lr[idx] if isinstance(lr, torch.Tensor) and lr.dim() == 1 else lr
    again = Population(pop.sizes, pop.seeds[idx].cpu().tolist(), init=pop.init, gain=pop.gain, dtype=pop.dtype,
                       device=pop.device)
    every = max(1, math.ceil(result.epochs / max(frames - 1, 1)))
    return train(x, y, again, result.epochs, lr, backend=result.backend, progress=False, snapshot_every=every)


def _write_animation(folder: Path, x, y, replay: TrainResult) -> str:
    anim = plot.boundary_animation(x.cpu(), y.cpu(), replay, frames=ANIMATION_FRAMES,
                                   title=f"{replay.population.describe()}: the gallery's networks over training")
    plot.save_animation(anim, folder / "boundaries.gif")
    return "boundaries.gif"


SUMMARY = "summary.json"
_LEFTOVER = re.compile(r"\.(?P<name>.+)\.(?P<kind>tmp|old)-(?P<pid>\d+)-(?P<tag>[a-z0-9_]+)")


def _after(step: str) -> None:
    """Called after each step of a run folder's write ("began", "wrote losses.pt", ...,
    "flushed", "moved", "removed the old folder"); does nothing.  Tests replace it to kill the
    process at a chosen step."""


def is_run_folder(path) -> bool:
    """A folder that a run wrote: its summary.json is a JSON object with "config" and "files"."""
    try:
        summary = json.loads((Path(path) / SUMMARY).read_text())
    except (OSError, ValueError):
        return False
    return isinstance(summary, dict) and "config" in summary and isinstance(summary.get("files"), list)


def _complete(path: Path) -> bool:
    """A run folder holding every file its summary.json lists."""
    if not is_run_folder(path):
        return False
    files = json.loads((path / SUMMARY).read_text())["files"]
    return all(isinstance(f, str) and (path / f).is_file() for f in files)


def recover_run_folder(path) -> None:
    """Finish or clear what interrupted writes of the run folder ``path`` left beside it.

    A move killed between its two renames (no folder at ``path``, and both ``.old`` and a
    complete ``.tmp`` of one write) is completed; a lone ``.old`` with no folder at ``path``
    is put back (a failed move); every other leftover of a process no longer running is
    removed.  Runs first in :func:`check_run_folder` and so in every :func:`save_run`."""
    path = Path(os.path.realpath(path))
    try:
        entries = os.listdir(path.parent)
    except OSError:
        return
    found = {}
    for entry in entries:
        m = _LEFTOVER.fullmatch(entry)
        if m and m["name"] == path.name and not _alive(int(m["pid"])):
            found.setdefault(f"{m['pid']}-{m['tag']}", {})[m["kind"]] = path.parent / entry
    for parts in found.values():
        if "old" in parts and not os.path.lexists(path):
            new = parts.get("tmp")
            if new is not None and _complete(new):
                os.rename(new, path)
            else:
                os.rename(parts.pop("old"), path)
            _sync(path.parent)
        for p in parts.values():
            if os.path.lexists(p):
                shutil.rmtree(p, ignore_errors=True)


def _check_replaceable(path: Path, text: str, overwrite: bool) -> None:
    if not path.is_dir() or not any(path.iterdir()):
        return  # nothing there, or an empty folder: nothing to lose
    if not is_run_folder(path):
        raise ArgumentError("out", f"{text!r} is not empty and holds no run (no {SUMMARY} of fastmlp's): refusing "
                                   "to replace it, even when forced; name a new or empty folder")
    if not overwrite:
        raise ArgumentError("out", f"{text!r} holds a previous run: refusing to replace it unless forced "
                                   "(--force; overwrite=True); or name another folder")


def check_run_folder(out, overwrite: bool = False) -> Path:
    """Check, before any work, that a run folder can be written at ``out``; returns the path
    it will be written at (absolute, a symlink followed).

    Finishes interrupted writes first (:func:`recover_run_folder`), then refuses
    (:class:`~fastmlp.validate.ArgumentError` about "out") what
    :func:`~fastmlp.validate.check_out_dir` refuses, a folder holding a previous run unless
    ``overwrite``, and a non-empty folder that holds no run even then: replacing is for run
    folders, never for a folder named by mistake (a home directory, a project)."""
    path = check_out_dir(out, "out", replaced=True)
    recover_run_folder(path)
    _check_replaceable(path, os.fspath(out), overwrite)
    return path


def _move_into_place(tmp: Path, path: Path, tag: str, overwrite: bool) -> Path | None:
    """Move the complete folder ``tmp`` to ``path``; returns the replaced folder to remove.
    Without ``overwrite`` one plain rename, which the system refuses over a non-empty folder:
    a run that another process moved into place a moment ago is never replaced."""
    if not overwrite or not os.path.lexists(path):
        try:
            os.rename(tmp, path)
        except OSError as e:
            if e.errno in (errno.ENOTEMPTY, errno.EEXIST):
                raise ArgumentError("out", f"{path} was filled by another process while this one wrote") from None
            raise
        return None
    if _exchange(tmp, path):
        return tmp  # it holds the old folder now
    old = path.parent / f".{path.name}.old-{tag}"
    os.rename(path, old)
    _after("moved the old folder aside")
    try:
        os.rename(tmp, path)
    except OSError:
        os.rename(old, path)  # should this fail too, recover_run_folder puts it back later
        raise
    return old


def _keep_beside(tmp: Path, path: Path) -> Path:
    """Rename the finished folder ``tmp`` to a new name beside ``path`` (``NAME-PID``, ``NAME-PID-2``...)."""
    for k in range(1, 1000):
        kept = path.with_name(f"{path.name}-{os.getpid()}" + (f"-{k}" if k > 1 else ""))
        try:
            os.rename(tmp, kept)  # refused over a non-empty folder: try the next name
            return kept
        except OSError as e:
            if e.errno not in (errno.ENOTEMPTY, errno.EEXIST):
                raise
    raise FileExistsError(f"no free name beside {path}")


# losses.pt: 2 names the epochs its columns hold ("epochs", "record_every") and carries the
# first epoch below eps tracked during training; 1 (no "format" key) held every epoch.
LOSSES_FORMAT = 2


def load_losses(folder) -> dict:
    """A run folder's losses.pt, any format, as format 2: ``losses [G, rows]``, ``epochs
    [rows]`` (the epoch of each column), ``record_every``, ``total_epochs``, ``final_loss``,
    ``diverged``, ``lr``, ``seeds``, ``eps`` and ``first_below`` (None when not tracked)."""
    path = Path(folder) / "losses.pt"
    d = torch.load(path, map_location="cpu", weights_only=True)  # tensors and numbers: never code
    fmt = d.get("format", 1) if isinstance(d, dict) else None
    need = {"losses", "final_loss", "diverged", "lr", "seeds"} | ({"epochs", "record_every", "total_epochs", "eps",
                                                                   "first_below"} if fmt == 2 else set())
    if fmt not in (1, LOSSES_FORMAT) or not need <= set(d):
        raise ValueError(f"{path}: not a losses.pt of fastmlp's (format {fmt!r}; needs {sorted(need)}): "
                         "written by a newer fastmlp, or not by fastmlp")
    if fmt == 1:  # every epoch, nothing tracked
        E = d["losses"].shape[1]
        d.update(format=LOSSES_FORMAT, epochs=torch.arange(E), record_every=1, total_epochs=E, eps=None,
                 first_below=None)
    elif d["first_below"] is not None:
        d["first_below"] = d["first_below"].long()
    return d


def run_bytes(arch, G: int, rows: int, itemsize: int, animation: bool = False) -> int:
    """Bytes a run folder of ``G`` networks of ``arch`` with ``rows`` recorded epochs takes:
    losses.pt (the history, and per network the final loss, flag, lr, seed and first epoch below
    eps), population.pt (parameters and seeds), the figures (at most 2 MB, the GIF 8 MB), and
    1 MB of headers: an upper estimate, checked by tests/test_run_folder.py."""
    losses = G * rows * itemsize + rows * 8 + G * (2 * itemsize + 1 + 8 + 4)
    population = G * (arch.n_params * itemsize + 8)
    return losses + population + (2 + (8 if animation else 0)) * 2**20 + 2**20


def check_disk(out, need: int) -> None:
    """Refuse (``ArgumentError`` about "out"), before any work, a run folder of ``need`` bytes
    where the file system of ``out`` has less free space (the new folder is written beside the
    old one, which is removed only once the new one is in place)."""
    path = Path(os.path.realpath(out))
    while not path.exists():
        path = path.parent
    free = shutil.disk_usage(path).free
    if need > free:
        raise ArgumentError("out", f"the run folder would take about {fmt_bytes(need)}, but {path} has "
                                   f"{fmt_bytes(free)} free; keep fewer epochs (--record-every), seeds, or "
                                   f"write elsewhere")


def _write_files(folder: Path, result: TrainResult, x, y, summary: dict, n_boundaries: int,
                 animation: TrainResult | None = None, phases: dict | None = None) -> list[str]:
    """Every file of a run folder, into ``folder``; summary.json last.  Returns their names.
    ``phases`` gets the seconds of "write" (the tensors) and "plots" added to it."""
    pop, config = result.population, summary["config"]
    phases = {} if phases is None else phases
    t0 = time.perf_counter()
    first = result.first_below
    torch.save({"format": LOSSES_FORMAT, "losses": result.losses.cpu(), "epochs": result.recorded_epochs,
                "record_every": result.record_every, "total_epochs": result.epochs,
                "final_loss": result.final_loss.cpu(), "diverged": result.diverged.cpu(), "lr": result.lr.cpu(),
                "seeds": pop.seeds.cpu(), "eps": result.eps,
                "first_below": None if first is None else first.to(torch.int32).cpu()},  # int32: 4 B a network
               folder / "losses.pt")
    files = [SUMMARY, "losses.pt"]
    _after("wrote losses.pt")
    pop.save(folder / "population.pt")  # the trained networks: Population.load reads them back
    files.append("population.pt")
    _after("wrote population.pt")
    t1 = time.perf_counter()
    phases["write"] = phases.get("write", 0.0) + t1 - t0
    sample = pick_boundary_networks(result.final_loss, n_boundaries)
    fig = plot.loss_curves(result.losses, epochs=result.recorded_epochs, sample=sample,
                           title=f"{pop.describe()}\n{len(pop)} networks, "
                           f"lr {config.get('lr', '')}, {config.get('init', '')}")
    plot.save(fig, folder / "loss_curves")
    files.append("loss_curves.png")
    _after("wrote loss_curves.png")
    if pop.sizes[0] == 2 and x.dim() == 2:
        idx = sample
        chosen = pop[idx]
        titles = [f"seed {int(pop.seeds[i])}, loss {float(result.final_loss[i]):.1e}" for i in idx]
        fig = plot.decision_boundaries(x.cpu(), y.cpu(), lambda grid: chosen.predict(grid.to(pop.device)).cpu(),
                                       list(range(len(idx))), titles=titles)
        plot.save(fig, folder / "boundaries")
        files.append("boundaries.png")
        _after("wrote boundaries.png")
    if animation is not None:
        files.append(_write_animation(folder, x, y, animation))
        _after("wrote boundaries.gif")
    t2 = time.perf_counter()
    phases["plots"] = phases.get("plots", 0.0) + t2 - t1
    summary["phases_s"] = {k: round(v, 4) for k, v in phases.items()}
    summary["files"] = files
    (folder / SUMMARY).write_text(json.dumps(summary, indent=2) + "\n")
    _after(f"wrote {SUMMARY}")
    return files


def save_run(result: TrainResult, x: torch.Tensor, y: torch.Tensor, out, config: dict,
             n_boundaries: int = 8, eps: float = 0.01, overwrite: bool = False,
             animation: TrainResult | None = None, phases: dict | None = None, disk_checked: bool = False) -> dict:
    """Write the run folder ``out``, all or nothing, and return its summary.

    Files: summary.json (config, statistics, environment, and "files": the list of the
    folder's files), losses.pt (losses, final loss, diverged, lr and seeds of every network),
    population.pt (the trained networks, for :meth:`fastmlp.Population.load`),
    loss_curves.png, boundaries.png (2-D inputs only), and with ``animation`` (a run with
    snapshots, :func:`animation_run`) boundaries.gif.

    A reader of ``out`` sees the folder that was there (or none) until the new one is complete
    and then only the new one: never a mix of two runs, never a file of an older run beside
    the new ones, whatever point the process is killed at (how: the comment above
    :func:`recover_run_folder`).  A folder holding a previous run is refused unless
    ``overwrite``, and replaced as a whole when it is given; a non-empty folder that holds no
    run is always refused (:func:`check_run_folder`), and so is a folder the disk cannot hold
    (:func:`check_disk`, before anything is written; ``disk_checked``: the caller did so before
    training, as the command line does, and an upper estimate should not throw the run away now).

    ``phases`` (seconds by phase: the command line passes its "imports", "setup" and "train")
    gets "statistics", "write" (the tensors, and the flush) and "plots" added, and goes into
    summary.json as "phases_s" (without the flush of summary.json itself and the move).
    """
    if result.epochs < 1:
        raise ArgumentError("epochs", f"a run folder needs at least one epoch of losses, got {result.epochs}")
    path = check_run_folder(out, overwrite)
    pop = result.population
    if not disk_checked:
        check_disk(path, run_bytes(pop.arch, len(pop), result.losses.shape[1], pop.dtype.itemsize,
                                   animation is not None))
    phases = {} if phases is None else phases
    t0 = time.perf_counter()
    summary = {"config": config, **summarize(result, eps), "world_size": result.extra.get("world_size", 1),
               "environment": environment(result.population.device)}
    phases["statistics"] = time.perf_counter() - t0
    path.parent.mkdir(parents=True, exist_ok=True)
    prefix = f".{path.name}.tmp-{os.getpid()}-"
    tmp = Path(tempfile.mkdtemp(dir=path.parent, prefix=prefix))
    _after("began")
    try:
        files = _write_files(tmp, result, x, y, summary, n_boundaries, animation, phases)
        t0 = time.perf_counter()
        for name in files:
            _sync(tmp / name)
        os.chmod(tmp, 0o777 & ~_umask())  # mkdtemp's 0700 -> what a plain mkdir would give
        _sync(tmp)
        _after("flushed")
        try:  # again: a run may have appeared there since the check before training
            _check_replaceable(path, os.fspath(out), overwrite)
            replaced = _move_into_place(tmp, path, tmp.name[len(f".{path.name}.tmp-"):], overwrite)  # PID-XXXX
        except ArgumentError as e:  # keep this run beside it rather than lose it
            kept = _keep_beside(tmp, path)
            raise ArgumentError("out", f"{e.message}; this run was kept in {kept} instead") from None
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    _sync(path.parent)
    phases["write"] = phases.get("write", 0.0) + time.perf_counter() - t0
    _after("moved")
    if replaced is not None:
        shutil.rmtree(replaced, ignore_errors=True)
        _after("removed the old folder")
    return summary


def format_summary(summary: dict) -> str:
    q = summary["final_loss_quantiles"]
    lines = [
        f"{summary['networks']} networks x {summary['epochs']} epochs on {summary['backend']} "
        f"in {summary['wall_time_s']:.2f} s ({summary['network_epochs_per_s']:.3g} network-epochs/s)",
        f"converged (final loss < {summary['eps']:g}): {summary['converged_fraction']:.1%}, "
        f"diverged: {summary['diverged']}",
        "final loss quantiles: " + ", ".join(f"{k[1:]}% {v:.2e}" for k, v in q.items()),
    ]
    to = summary.get("epochs_to_eps")
    if to and to["reached"]:
        lines.append(f"epochs to loss < {summary['eps']:g}: median {to['median']:.0f} "
                     f"[{to['q25']:.0f}-{to['q75']:.0f}] over the {to['reached']} networks that got there")
    if summary.get("record_every", 1) > 1:
        lines.append(f"loss history: one epoch in {summary['record_every']} ({summary['recorded_epochs']} of "
                     f"{summary['epochs']}; --record-every 1 keeps all)")
    return "\n".join(lines)


def format_phases(phases: dict) -> str:
    """``time: imports 1.2 s, setup 0.1 s, train 3.4 s, ...; outside training 2.0 s``."""
    outside = sum(v for k, v in phases.items() if k != "train")
    return ("time: " + ", ".join(f"{k} {v:.2f} s" for k, v in phases.items())
            + f"; outside training {outside:.2f} s")
