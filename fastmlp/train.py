"""The training loop: full-batch gradient descent for every network of a population at once.

Backend-agnostic: the loop validates the arguments, asks :func:`fastmlp.engine.select_backend`
for a backend, splits the population into chunks that fit in memory
(:func:`fastmlp.memory.plan_chunks`, with the backend's own memory model), and drives each chunk's
:class:`~fastmlp.engine.base.Run` block by block (the interface is stated in
``fastmlp/engine/base.py``).
"""
from __future__ import annotations

import math
import sys
import time
from dataclasses import dataclass, field

import torch

from . import distributed, stats
from .engine import Problem, select_backend
from .memory import budget, fmt_bytes, plan_chunks
from .population import Population
from .snapshots import Snapshots, block_bounds
from .validate import (ArgumentError, ArgumentTypeError, NotEnoughMemory, check_epochs, check_int, check_lr,
                       check_real, check_x, check_y)
from .validate import check_targets

__all__ = ["train", "TrainResult", "RECORD_BYTES", "default_record_every", "recorded_epochs"]

# The default loss record: every epoch while the history [rows, G] fits in this many bytes,
# else every k-th epoch for the smallest k that fits.  With the trained population and the
# per-network results beside it, the lab network's run folder stays under 256 MB up to 2**20
# networks (README.md, "Millions of seeds": its size by G).
RECORD_BYTES = 64 * 2**20
# Epoch numbers are int32 on the device (first_below): a run is shorter than this.
MAX_EPOCHS = 2**31 - 1


def default_record_every(G: int, epochs: int, itemsize: int, max_bytes: int = RECORD_BYTES) -> int:
    """The smallest k such that the history of every k-th epoch, ``ceil(epochs / k)`` rows of
    G losses, fits in ``max_bytes`` (1 when every epoch does; at least one row is kept)."""
    per_row = max(G, 1) * itemsize
    rows = max(1, max_bytes // per_row)
    return max(1, -(-epochs // rows))


def recorded_epochs(epochs: int, record_every: int) -> torch.Tensor:
    """The epochs a history of every ``record_every``-th epoch holds: ``0, k, 2k, ... < epochs``."""
    return torch.arange(0, epochs, record_every, dtype=torch.int64)


@dataclass
class TrainResult:
    """What :func:`train` returns.

    Attributes:
        population: the trained population (the same object that was passed in).
        losses: [G, rows]: ``losses[:, j]`` is each network's MSE at the start of epoch
            ``recorded_epochs[j] = j * record_every``, from the forward pass that feeds that
            epoch's gradient.  ``record_every = 1`` (every epoch, [G, epochs]) unless the
            history was thinned (``train``'s ``record_every``).
        final_loss: [G], the MSE after the last update.
        diverged: [G] bool; networks whose loss or parameters became non-finite.  They were
            frozen at that point; their later losses are non-finite.
        lr: [G], the learning rate of each network.
        snapshots: with ``snapshot_every``, the chosen networks' parameters every k epochs
            (:class:`~fastmlp.snapshots.Snapshots`), else None.
        record_every: the history keeps epochs ``0, k, 2k, ...``.
        eps: the loss threshold tracked on every epoch during training (None: none).
        first_below: [G] int64, the first epoch (0-based) at whose start the loss was below
            ``eps``, -1 where none was: from every epoch, thinned history or not.
    """

    population: Population
    losses: torch.Tensor
    final_loss: torch.Tensor
    diverged: torch.Tensor
    lr: torch.Tensor
    backend: str
    epochs: int
    wall_time_s: float
    n_chunks: int = 1
    extra: dict = field(default_factory=dict)
    snapshots: Snapshots | None = None
    record_every: int = 1
    eps: float | None = None
    first_below: torch.Tensor | None = None

    @property
    def recorded_epochs(self) -> torch.Tensor:
        """[rows] int64: the epoch of each column of ``losses``."""
        return recorded_epochs(self.epochs, self.record_every)

    def epochs_to_eps(self, eps: float | None = None) -> torch.Tensor:
        """[G] int64: the updates each network needed to bring its loss below ``eps`` (default:
        the tracked one): the first epoch e in ``0..epochs-1`` with loss < eps, ``epochs`` when
        only the final loss is, -1 for never (:func:`fastmlp.stats.epochs_to_eps`).  Exact for
        the ``eps`` tracked during training, and for any eps when every epoch was recorded; a
        thinned history cannot answer for another eps (ValueError)."""
        if eps is None:
            if self.eps is None:
                raise ValueError("no eps was tracked during training (train(..., eps=None)): name one")
            eps = self.eps
        eps = stats._check_eps(eps)
        if self.eps is not None and eps == self.eps and self.first_below is not None:
            out = self.first_below.clone()
            late = (out < 0) & (self.final_loss.to(out.device) < eps)
            out[late] = self.epochs
            return out
        if self.record_every != 1:
            raise ValueError(f"the loss history keeps one epoch in {self.record_every}, so the first epoch below "
                             f"eps={eps:g} is not in it; train(..., eps={eps:g}) tracks it on every epoch "
                             f"(tracked here: {self.eps})")
        return stats.epochs_to_eps(self.losses, self.final_loss, eps)

    @property
    def network_epochs_per_s(self) -> float:
        return len(self.population) * self.epochs / self.wall_time_s if self.wall_time_s > 0 else float("inf")

    def converged(self, eps: float = 0.01) -> torch.Tensor:
        """[G] bool: final loss below ``eps`` (and not diverged)."""
        return (self.final_loss < eps) & ~self.diverged

    def __repr__(self) -> str:
        G = len(self.population)
        return (f"TrainResult(G={G}, epochs={self.epochs}, backend={self.backend!r}, "
                f"converged(0.01)={int(self.converged().sum())}/{G}, diverged={int(self.diverged.sum())}, "
                f"wall_time_s={self.wall_time_s:.3f}, network_epochs_per_s={self.network_epochs_per_s:.3g})")


def train(x, y, population: Population, epochs: int, lr, backend: str = "auto", *,
          progress: bool | None = None, max_bytes: int | None = None, snapshot_every: int | None = None,
          snapshot_networks=None, record_every: int | None = None, eps: float | None = 0.01) -> TrainResult:
    """Train every network of ``population`` by full-batch gradient descent (the lab's ``train``).

    Args:
        x: inputs, [N, n_in] shared by all networks or [G, N, n_in] one set per network.
        y: targets, [N] (when n_out = 1), [N, n_out] or [G, N, n_out]; any numeric dtype.
        population: trained in place, and returned in the result.
        epochs: number of full-batch updates.
        lr: a float, or a tensor [G] with one learning rate per network.
        backend: "auto" or a registered backend (:func:`fastmlp.engine.names`: "fused",
            "triton", "torch"; see :mod:`fastmlp.engine`).
        progress: show a progress bar over epochs; default: when stderr is a terminal.
        max_bytes: memory the run may plan to use (default: 70% of the device's free memory).
        snapshot_every: keep the parameters of ``snapshot_networks`` after every k-th update
            (and at epoch 0 and the end) in ``result.snapshots``; their memory
            (:meth:`Snapshots.nbytes`) counts against ``max_bytes``.
        snapshot_networks: which networks (an index of the population, as ``population[...]``
            takes: ints, a slice or a bool mask); default all.
        record_every: keep the loss of epochs ``0, k, 2k, ...`` in ``result.losses``; default
            (None): every epoch while the history fits in ``RECORD_BYTES`` (64 MiB), else the
            smallest k that fits (:func:`default_record_every`); 1 keeps every epoch.
        eps: a loss threshold: the first epoch each network's loss fell below it is tracked
            on every epoch, on the device (``result.first_below``, ``result.epochs_to_eps()``),
            whatever the history keeps; None tracks nothing.

    A network whose loss or parameters become non-finite is frozen (no further updates)
    and flagged in ``diverged``; no other network's numbers change because of it.  A
    population too large for the memory is trained in chunks of seeds (the same results as
    one pass), or refused with a :class:`~fastmlp.validate.NotEnoughMemory` (a MemoryError)
    before anything is allocated.  Bad arguments raise
    :class:`~fastmlp.validate.ArgumentError` (a ValueError; ``err.arg`` names the argument)
    before any work.

    Under torch.distributed (a process group of several ranks, e.g. ``torchrun``) every
    rank passes the same arguments; each trains its block of the networks and every rank
    returns the full result (:mod:`fastmlp.distributed`).
    """
    if not isinstance(population, Population):
        raise ArgumentTypeError("population", f"population must be a fastmlp.Population, "
                                              f"got {type(population).__name__}")
    G, arch, dtype, device = len(population), population.arch, population.dtype, population.device
    x = check_x(x, arch.n_in, G, dtype, device)
    N = x.shape[-2]
    y = check_y(y, arch.n_out, N, G, dtype, device)
    check_targets(y, arch.output_act, stacklevel=2)  # a warning: targets the output cannot reach
    epochs = check_epochs(epochs)
    lr = check_lr(lr, G, dtype, device)
    if epochs > MAX_EPOCHS:
        raise ArgumentError("epochs", f"epochs must be at most {MAX_EPOCHS} (epoch numbers are int32 on the "
                                      f"device), got {epochs}")
    if eps is not None:
        eps = check_real("eps", eps, positive=True)
    itemsize = dtype.itemsize
    record_every = (default_record_every(G, epochs, itemsize) if record_every is None
                    else min(check_int("record_every", record_every, 1), max(epochs, 1)))  # the same rows
    if max_bytes is not None:
        max_bytes = check_int("max_bytes", max_bytes, 1)
    snap_plan = snaps = None
    if snapshot_every is not None:
        snap_plan, max_bytes = _plan_snapshots(population, snapshot_every, snapshot_networks, epochs, max_bytes)
    elif snapshot_networks is not None:
        raise ArgumentError("snapshot_networks", "snapshot_networks needs snapshot_every (how often to keep them)")
    shared = x.dim() == 2 and y.dim() == 2
    problem = Problem(arch, N, shared, dtype, G, epochs, record_every)
    chosen = select_backend(backend, device, problem)
    shard = distributed.current()
    lo, hi = shard.bounds(G) if shard is not None else (0, G)
    chunk = plan_chunks(chosen, problem, max(hi - lo, 1), device, max_bytes=max_bytes)  # its memory, not another's
    if progress is None:
        progress = sys.stderr.isatty()
    if snap_plan is not None:
        snaps = Snapshots.empty(population, *snap_plan)

    rows = problem.rows
    history = torch.empty(rows, G, dtype=dtype, device=device)  # epoch-major: one row per recorded epoch
    unrecorded = torch.empty(1, G, dtype=dtype, device=device)  # the first loss of a block off the record's grid
    final_loss = torch.empty(G, dtype=dtype, device=device)
    diverged = torch.empty(G, dtype=torch.bool, device=device)
    first_below = torch.full((G,), -1, dtype=torch.int64, device=device)
    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=epochs * (hi - lo), unit="net-epoch", unit_scale=True, desc=f"train [{chosen.name}]")
    # Between two blocks: a parameter check, a progress update, and a point where Ctrl-C
    # leaves the population consistent (write_back runs in the finally).
    per_block = max(1, min(epochs, chosen.epochs_per_block(problem, device)))
    if record_every <= per_block < epochs:  # blocks start on the record's grid (else _recording cuts them)
        per_block = per_block // record_every * record_every
    blocks = _recording(block_bounds(epochs, per_block, snaps.epochs if snaps else None), record_every)
    start = time.perf_counter()
    try:
        for g0 in range(lo, hi, chunk):
            g1 = min(hi, g0 + chunk)
            sub = population[g0:g1] if (g0, g1) != (0, G) else population
            xs, ys = (x if x.dim() == 2 else x[g0:g1]), (y if y.dim() == 2 else y[g0:g1])
            run = chosen.start(sub, xs, ys, lr[g0:g1], eps)
            try:
                if snaps is not None:
                    snaps.take(0, sub, g0)
                in_flight = None  # on a GPU: the previous block's completion (one block queued ahead)
                for e0, e1 in blocks:
                    if e0 % record_every == 0:  # on the record's grid: the rows of epochs e0, e0 + k, ...
                        rows_ = history[e0 // record_every:-(-e1 // record_every), g0:g1]
                    else:  # shorter than k, off the grid: its first loss only, aside (for a snapshot)
                        rows_ = unrecorded[:, g0:g1]
                    # always k: a compiled program's RECORD_EVERY is a constant, one machine code for every block
                    run.block(rows_, e1 - e0, record_every, e0)
                    if snaps is not None:
                        snaps.take_loss(e0, rows_[0], g0)  # the loss of the parameters snapshot at e0
                    run.check_parameters()
                    if snaps is not None and e1 in snaps.epochs:
                        run.write_back()
                        snaps.take(e1, sub, g0)
                    if device.type == "cuda":  # wait for the block before: the bar and Ctrl-C follow the GPU
                        done, in_flight = in_flight, torch.cuda.Event()
                        in_flight.record(torch.cuda.current_stream(device))
                        if done is not None:
                            done.synchronize()
                    if bar is not None:
                        bar.update((e1 - e0) * (g1 - g0))
                run.final_loss(final_loss[g0:g1])
                diverged[g0:g1] = ~run.active
                first_below[g0:g1] = run.first_below
                if snaps is not None:
                    snaps.take_loss(epochs, final_loss[g0:g1], g0)
            finally:
                run.write_back()
                # Before the next chunk starts: else its buffers come while this one's are
                # alive (measured: two chunks' worth, 1.5x the budget, on the torch engine).
                del run
        if device.type == "cuda":
            torch.cuda.synchronize(device)
    finally:
        if bar is not None:
            bar.close()
    wall = time.perf_counter() - start
    if shard is not None:  # every rank gets every rank's networks
        history = distributed.all_gather_networks(history, shard, G, dim=1)
        final_loss = distributed.all_gather_networks(final_loss, shard, G, dim=0)
        diverged = distributed.all_gather_networks(diverged, shard, G, dim=0)
        first_below = distributed.all_gather_networks(first_below, shard, G, dim=0)
        for t in population.weights + population.biases:
            t.copy_(distributed.all_gather_networks(t, shard, G, dim=0))
        if snaps is not None:
            for t in snaps.weights + snaps.biases + [snaps.loss]:
                t.copy_(distributed.broadcast_networks(t, snaps.networks, shard, G, dim=1))
    return TrainResult(population=population, losses=history.t(), final_loss=final_loss, diverged=diverged,
                       lr=lr, backend=chosen.name, epochs=epochs, wall_time_s=wall,
                       n_chunks=math.ceil(max(hi - lo, 1) / chunk),
                       extra={"world_size": shard.world_size if shard else 1}, snapshots=snaps,
                       record_every=record_every, eps=eps, first_below=first_below if eps is not None else None)


def _recording(blocks: list[tuple[int, int]], k: int) -> list[tuple[int, int]]:
    """``blocks`` cut at the first multiple of ``k`` after every start off that grid (a
    snapshot cut): each block then starts on the grid, where the program's rows are the run's
    epochs ``0, k, 2k ...``, or ends before the grid's next epoch (it records nothing kept)."""
    out = []
    for e0, e1 in blocks:
        nxt = -(-e0 // k) * k
        if e0 < nxt < e1:
            out += [(e0, nxt), (nxt, e1)]
        else:
            out.append((e0, e1))
    return out


def _plan_snapshots(population: Population, every, networks, epochs: int, max_bytes: int | None):
    """The snapshots' epochs and networks, and what is left of the budget for training;
    refused (before anything is allocated) when the snapshots alone would not fit."""
    at, idx = Snapshots.plan(population, every, epochs, networks)
    need = Snapshots.nbytes(population.arch, len(at), len(idx), population.dtype.itemsize)
    limit, source = budget(population.device, max_bytes)
    if need >= limit:
        raise NotEnoughMemory("snapshot_networks", f"{len(at)} snapshots of {len(idx)} networks need {fmt_bytes(need)}, "
                                                   f"but only {fmt_bytes(limit)} ({source}) can be used; keep fewer "
                                                   "networks (snapshot_networks) or fewer snapshots (a larger snapshot_every)")
    return (at, idx), limit - need
