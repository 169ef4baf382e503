"""The training loop: full-batch gradient descent for every network of a population at once.

Backend-agnostic: an epoch is the lab's forward pass, output delta, delta recursion and
SGD update, each a call into the chosen backend's ops (``fastmlp.engine``).
"""
from __future__ import annotations

import math
import numbers
import sys
import time
from dataclasses import dataclass, field

import torch

from . import distributed
from .engine import get_ops, select_backend
from .population import Population, as_network_minor, is_network_minor, network_minor

__all__ = ["train", "TrainResult"]

# Fraction of the free memory a training run may plan to use.
_MEMORY_FRACTION = 0.7
# Epochs per launch of the fused backend.  Overhead per launch: one parameter check and
# a progress update (bench/bench_train.py measures it against one launch for all epochs).
_FUSED_BLOCK = 250
# Chunks of seeds are multiples of this (vector-width aligned, so a network computes the
# same bits whichever chunk it lands in).
_CHUNK_ALIGN = 64


@dataclass
class TrainResult:
    """What :func:`train` returns.

    Attributes:
        population: the trained population (the same object that was passed in).
        losses: [G, epochs]; ``losses[:, e]`` is each network's MSE at the start of epoch
            ``e``, from the forward pass that feeds that epoch's gradient.
        final_loss: [G], the MSE after the last update.
        diverged: [G] bool; networks whose loss or parameters became non-finite.  They were
            frozen at that point; their later losses are non-finite.
        lr: [G], the learning rate of each network.
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


# ---------------------------------------------------------------------------------------
# Validation: everything is checked before any work starts.
# ---------------------------------------------------------------------------------------
def _as_numeric_tensor(v, name: str) -> torch.Tensor:
    if not isinstance(v, torch.Tensor):
        try:
            v = torch.as_tensor(v)
        except (TypeError, ValueError, RuntimeError) as e:
            raise TypeError(f"{name} must be a tensor or array-like of numbers, got {type(v).__name__}") from e
    if v.is_complex():
        raise TypeError(f"{name} must hold real numbers, got dtype {v.dtype}")
    return v


def _check_x(x, n_in: int, G: int, dtype, device) -> torch.Tensor:
    """x [N, n_in] or [G, N, n_in] -> tensor of dtype/device (per-network: network-minor)."""
    x = _as_numeric_tensor(x, "x")
    if x.dim() not in (2, 3) or x.shape[-1] != n_in or (x.dim() == 3 and x.shape[0] != G):
        raise ValueError(f"x must be [N, {n_in}] (shared by all networks) or [{G}, N, {n_in}] "
                         f"(one input set per network), got {list(x.shape)}")
    if x.shape[-2] == 0:
        raise ValueError("x has N = 0 samples; need at least one")
    x = x.to(device=device, dtype=dtype)
    if not torch.isfinite(x).all():
        raise ValueError("x contains non-finite values (nan or inf)")
    return x.contiguous() if x.dim() == 2 else as_network_minor(x)


def _check_y(y, n_out: int, N: int, G: int, dtype, device) -> torch.Tensor:
    """y [N], [N, n_out] or [G, N, n_out] -> [N, n_out] or [G, N, n_out] of dtype/device."""
    y = _as_numeric_tensor(y, "y")
    if y.dim() == 1 and n_out == 1:
        y = y.unsqueeze(1)
    ok = (y.dim() == 2 and tuple(y.shape) == (N, n_out)) or (y.dim() == 3 and tuple(y.shape) == (G, N, n_out))
    if not ok:
        allowed = f"[{N}, {n_out}] or [{G}, {N}, {n_out}]" + (f" or [{N}]" if n_out == 1 else "")
        raise ValueError(f"y must be {allowed} to match x (N = {N}) and the output width {n_out}, "
                         f"got {list(y.shape)}")
    y = y.to(device=device, dtype=dtype)
    if not torch.isfinite(y).all():
        raise ValueError("y contains non-finite values (nan or inf)")
    return y.contiguous() if y.dim() == 2 else as_network_minor(y)


def _check_lr(lr, G: int, dtype, device) -> torch.Tensor:
    if isinstance(lr, torch.Tensor) and lr.dim() == 0:
        lr = lr.item()
    if isinstance(lr, numbers.Real) and not isinstance(lr, bool):
        if not math.isfinite(lr) or lr < 0:
            raise ValueError(f"lr must be a finite number >= 0, got {lr}")
        return torch.full((G,), float(lr), dtype=dtype, device=device)
    if isinstance(lr, torch.Tensor):
        if lr.dim() != 1 or lr.shape[0] != G:
            raise ValueError(f"lr as a tensor must have shape [{G}] (one rate per network), got {list(lr.shape)}")
        if not lr.dtype.is_floating_point:
            lr = lr.to(dtype)
        if not torch.isfinite(lr).all() or (lr < 0).any():
            raise ValueError("lr must hold finite values >= 0")
        return lr.to(device=device, dtype=dtype).contiguous()
    raise TypeError(f"lr must be a float or a tensor of shape [{G}], got {type(lr).__name__}")


def _check_epochs(epochs) -> int:
    if isinstance(epochs, bool) or not isinstance(epochs, numbers.Integral):
        raise TypeError(f"epochs must be an int, got {type(epochs).__name__}")
    if epochs < 0:
        raise ValueError(f"epochs must be >= 0, got {epochs}")
    return int(epochs)


# ---------------------------------------------------------------------------------------
# Memory planning
# ---------------------------------------------------------------------------------------
def _available_bytes(device: torch.device) -> int:
    """Free memory on ``device``: CUDA's free bytes, or the host's MemAvailable."""
    if device.type == "cuda":
        return torch.cuda.mem_get_info(device)[0]
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    import os

    return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")


def _working_bytes_per_network(sizes, N: int, itemsize: int, x_per_net: bool, y_per_net: bool) -> int:
    """Bytes the loop needs per network besides the loss history."""
    P = sum(a * b + b for a, b in zip(sizes[:-1], sizes[1:]))
    acts = N * sum(sizes[1:])
    per = 2 * P + 2 * P + 3 * acts + 8  # params (+ a chunk's copy), grads, z/delta/scratch, lr/loss
    per += N * sizes[0] * x_per_net + N * sizes[-1] * y_per_net
    return per * itemsize


def _plan_chunks(G: int, epochs: int, sizes, N: int, itemsize: int, x_per_net: bool, y_per_net: bool,
                 device: torch.device) -> int:
    """Networks per chunk (G when one pass fits); MemoryError when nothing fits."""
    budget = int(_available_bytes(device) * _MEMORY_FRACTION)
    history = G * (epochs + 1) * itemsize
    per_net = _working_bytes_per_network(sizes, N, itemsize, x_per_net, y_per_net)
    gib = 2.0**30
    if history + per_net * min(G, _CHUNK_ALIGN) > budget:
        raise MemoryError(
            f"training {G} networks for {epochs} epochs needs {history / gib:.2f} GiB for the loss history "
            f"[G, epochs] plus {per_net * G / gib:.2f} GiB of working memory, but only {budget / gib:.2f} GiB "
            f"({_MEMORY_FRACTION:.0%} of the free memory on {device}) can be used; train fewer seeds or epochs")
    if history + per_net * G <= budget:
        return G
    chunk = (budget - history) // per_net
    return max(_CHUNK_ALIGN, chunk // _CHUNK_ALIGN * _CHUNK_ALIGN)


# ---------------------------------------------------------------------------------------
# The loop
# ---------------------------------------------------------------------------------------
class _Run:
    """Buffers for one chunk of networks, allocated once (the epochs allocate nothing)."""

    def __init__(self, pop: Population, x, y, lr, ops):
        self.ops = ops
        self.x, self.y, self.lr = x, y, lr
        G, dtype, device = len(pop), pop.dtype, pop.device
        N = x.shape[-2]
        # Work on the population's own tensors when they are network-minor (the usual
        # case); a strided view (a slice of a bigger population) gets a compact copy.
        self.pop = pop
        self.w = [as_network_minor(w) for w in pop.weights]
        self.b = [as_network_minor(b) for b in pop.biases]
        self.copied = [w is not w0 for w, w0 in zip(self.w, pop.weights)] + \
                      [b is not b0 for b, b0 in zip(self.b, pop.biases)]
        widths = pop.sizes[1:]
        self.z = [network_minor((G, N, n), dtype, device) for n in widths]
        self.delta = [network_minor((G, N, n), dtype, device) for n in widths]
        self.tmp = [network_minor((G, N, n), dtype, device) for n in widths]
        self.wg = [network_minor(w.shape, dtype, device) for w in self.w]
        self.bg = [network_minor(b.shape, dtype, device) for b in self.b]
        self.active = torch.ones(G, dtype=torch.bool, device=device)
        self.frozen = torch.zeros(G, dtype=torch.bool, device=device)
        self.all_active = torch.ones((), dtype=torch.bool, device=device)
        self.absloss = torch.empty(G, dtype=dtype, device=device)
        self.finite = torch.empty(G, dtype=torch.bool, device=device)
        # On the CPU reading a flag is free, so the frozen mask is applied only when some
        # network is frozen; on a GPU the mask is always passed (no host sync per epoch).
        self.cheap_sync = device.type == "cpu"
        self.acts = ["tanh"] * (len(widths) - 1) + ["sigmoid"]

    def forward_loss(self, loss_out: torch.Tensor) -> None:
        ops, inp = self.ops, self.x
        for l, act in enumerate(self.acts):
            ops.linear_act_fwd(inp, self.w[l], self.b[l], act, out=self.z[l])
            inp = self.z[l]
        ops.output_delta(self.z[-1], self.y, delta=self.delta[-1], loss=loss_out, tmp=self.tmp[-1])
        # Freeze networks whose loss is non-finite: |nan| < inf and inf < inf are False.
        torch.abs(loss_out, out=self.absloss)
        torch.lt(self.absloss, math.inf, out=self.finite)
        self.active.logical_and_(self.finite)

    def block(self, history_rows: torch.Tensor) -> None:
        """One epoch per row of ``history_rows`` [epochs, G] (each row gets that epoch's loss)."""
        for row in history_rows:
            self.epoch(row)

    def epoch(self, loss_out: torch.Tensor) -> None:
        self.forward_loss(loss_out)
        ops = self.ops
        frozen = None
        if not self.cheap_sync or not bool(torch.all(self.active, out=self.all_active)):
            frozen = torch.logical_not(self.active, out=self.frozen)
        for l in reversed(range(len(self.acts))):
            if l > 0:  # delta of the layer below, with this layer's weights before the update
                ops.delta_bwd(self.delta[l], self.w[l], self.z[l - 1], out=self.delta[l - 1], tmp=self.tmp[l - 1])
            ops.grad_update(self.z[l - 1] if l > 0 else self.x, self.delta[l], self.w[l], self.b[l], self.lr,
                            frozen=frozen, weight_grad=self.wg[l], bias_grad=self.bg[l], keep_grads=False)

    def check_parameters(self) -> None:
        """Freeze networks with a non-finite parameter (checked between blocks of epochs)."""
        for t in self.w + self.b:
            self.active &= torch.isfinite(t).flatten(1).all(dim=1)

    def write_back(self) -> None:
        for t, t0, copied in zip(self.w + self.b, self.pop.weights + self.pop.biases, self.copied):
            if copied:
                t0.copy_(t)


def train(x, y, population: Population, epochs: int, lr, backend: str = "auto", *,
          progress: bool | None = None) -> TrainResult:
    """Train every network of ``population`` by full-batch gradient descent (the lab's ``train``).

    Args:
        x: inputs, [N, n_in] shared by all networks or [G, N, n_in] one set per network.
        y: targets, [N] (when n_out = 1), [N, n_out] or [G, N, n_out]; any numeric dtype.
        population: trained in place, and returned in the result.
        epochs: number of full-batch updates.
        lr: a float, or a tensor [G] with one learning rate per network.
        backend: "auto", "torch", "triton" or "fused" (see :mod:`fastmlp.engine`).
        progress: show a progress bar over epochs; default: when stderr is a terminal.

    A network whose loss or parameters become non-finite is frozen (no further updates)
    and flagged in ``diverged``; no other network's numbers change because of it.  A
    population too large for the free memory is trained in chunks of seeds (the same
    results as one pass), or refused before anything is allocated.

    Under torch.distributed (a process group of several ranks, e.g. ``torchrun``) every
    rank passes the same arguments; each trains its block of the networks and every rank
    returns the full result (:mod:`fastmlp.distributed`).
    """
    if not isinstance(population, Population):
        raise TypeError(f"population must be a fastmlp.Population, got {type(population).__name__}")
    G, sizes, dtype, device = len(population), population.sizes, population.dtype, population.device
    x = _check_x(x, sizes[0], G, dtype, device)
    N = x.shape[-2]
    y = _check_y(y, sizes[-1], N, G, dtype, device)
    epochs = _check_epochs(epochs)
    lr = _check_lr(lr, G, dtype, device)
    backend = select_backend(backend, device, sizes, N, shared_data=x.dim() == 2 and y.dim() == 2)
    ops = get_ops(backend)
    shard = distributed.current()
    lo, hi = shard.bounds(G) if shard is not None else (0, G)
    chunk = _plan_chunks(max(hi - lo, 1), epochs, sizes, N, dtype.itemsize, x.dim() == 3, y.dim() == 3, device)
    if progress is None:
        progress = sys.stderr.isatty()

    history = torch.empty(epochs, G, dtype=dtype, device=device)  # epoch-major: one row per epoch
    final_loss = torch.empty(G, dtype=dtype, device=device)
    diverged = torch.empty(G, dtype=torch.bool, device=device)
    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=epochs * (hi - lo), unit="net-epoch", unit_scale=True, desc=f"train [{backend}]")
    # Epochs between progress updates and parameter checks (and, for the fused backend,
    # per kernel launch: Ctrl-C stops between launches with the population consistent).
    block = max(1, min(epochs, _FUSED_BLOCK if backend == "fused" else 50))
    start = time.perf_counter()
    try:
        for g0 in range(lo, hi, chunk):
            g1 = min(hi, g0 + chunk)
            sub = population[g0:g1] if (g0, g1) != (0, G) else population
            xs, ys = (x if x.dim() == 2 else x[g0:g1]), (y if y.dim() == 2 else y[g0:g1])
            run = ops.FusedRun(sub, xs, ys, lr[g0:g1]) if backend == "fused" else _Run(sub, xs, ys, lr[g0:g1], ops)
            try:
                for e0 in range(0, epochs, block):
                    run.block(history[e0:min(epochs, e0 + block), g0:g1])
                    run.check_parameters()
                    if bar is not None:
                        bar.update((min(epochs, e0 + block) - e0) * (g1 - g0))
                run.forward_loss(final_loss[g0:g1])
                diverged[g0:g1] = ~run.active
            finally:
                run.write_back()
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
        for t in population.weights + population.biases:
            t.copy_(distributed.all_gather_networks(t, shard, G, dim=0))
    return TrainResult(population=population, losses=history.t(), final_loss=final_loss, diverged=diverged,
                       lr=lr, backend=backend, epochs=epochs, wall_time_s=wall,
                       n_chunks=math.ceil(max(hi - lo, 1) / chunk),
                       extra={"world_size": shard.world_size if shard else 1})
