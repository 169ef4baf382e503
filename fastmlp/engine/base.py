"""The backend interface: what the training loop asks of a backend, and may assume.

The loop (:func:`fastmlp.train`) splits a population into chunks of networks and, for
each chunk, asks the selected :class:`Backend` to :meth:`~Backend.start` a :class:`Run`;
then, for every block of ``backend.epochs_per_block(problem, device)`` epochs (at most; a
block also ends at every snapshot epoch), it calls ``run.block(rows)``
and ``run.check_parameters()``; at the end ``run.final_loss(out)``; and, whatever
happened (Ctrl-C included), ``run.write_back()``.  A backend promises:

* ``block(rows, epochs, record_every, e_base)`` trains ``epochs`` epochs of full-batch
  gradient descent (the run's epochs ``e_base ..``) and writes into ``rows[i]`` ([g]) each
  network's MSE at the start of the block's epoch ``i * record_every`` -- the loss of the
  forward pass that feeds that epoch's gradient (the lab's ``losses``); ``rows`` has
  ``ceil(epochs / record_every)`` rows (the loop starts a recording block on a multiple of
  ``record_every``, so the rows are the run's epochs ``0, k, 2k, ...``);
* on every epoch, recorded or not, ``run.first_below`` ([g] int32, -1 until then) takes
  the first epoch whose loss is below the ``eps`` the run was started with, compared in
  the parameters' dtype (no ``eps``: it stays -1);
* a network whose loss turns non-finite (:func:`finite_loss`, the one expression every
  backend uses) is frozen from that epoch on: never updated again, its later losses still
  recorded; ``run.active`` ([g] bool) is False for it.  Nothing about it may change any
  other network's numbers;
* ``check_parameters()`` freezes the networks with a non-finite parameter;
* ``final_loss(out)`` writes the MSE of the current parameters and freezes the non-finite;
* after ``write_back()`` the population's tensors hold the trained parameters, so the
  population is consistent between any two blocks; the loop may call it between blocks
  (for snapshots) and go on training.

The loop may assume nothing else: a backend keeps its parameters wherever it likes
between blocks (the fused backend keeps a packed copy).  Adding a backend is a module
with a :class:`Backend` subclass and one :func:`fastmlp.engine.register` call
(docs/backends.md).
"""
from __future__ import annotations

import importlib
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

import torch

from ..architecture import Architecture
from ..layout import as_network_minor, network_minor
from ..optional import triton_available, triton_interpreter

__all__ = ["Backend", "LayerBackend", "LayerRun", "Run", "Problem", "finite_loss", "finite_parameters",
           "triton_available", "triton_interpreter"]


_EXPONENT = {torch.float32: (torch.int32, 0x7F800000), torch.float64: (torch.int64, 0x7FF0000000000000)}


def finite_loss(loss: torch.Tensor, scratch: torch.Tensor, out: torch.Tensor) -> torch.Tensor:
    """``out = loss is neither nan nor +-inf``, tested on the bits (the exponent field is not
    all ones), allocation-free; ``scratch`` has ``loss``'s shape and dtype.

    The divergence test of every backend: the fused programs test the same bits in their
    registers (``fastmlp.program.Finite``, ``kernels/activations.finite``).  Integer
    operations, because a float test such as ``loss - loss == 0`` is what compilers rewrite
    (it froze every network of the first GPU run: docs/backends.md)."""
    int_t, mask = _EXPONENT[loss.dtype]
    bits = scratch.view(int_t)
    torch.bitwise_and(loss.view(int_t), mask, out=bits)
    return torch.ne(bits, mask, out=out)


def finite_parameters(t: torch.Tensor, network_dim: int = 0) -> torch.Tensor:
    """``[g]`` bool: every parameter of network g in ``t`` is finite.  The networks run along
    ``network_dim``: 0 for a population tensor ``[g, ...]``, -1 for a packed ``[P, g]`` buffer.
    The parameter check of every backend."""
    return torch.isfinite(t).movedim(network_dim, 0).flatten(1).all(dim=1)


@dataclass(frozen=True)
class Problem:
    """What a backend is asked to train: decides whether it can (:meth:`Backend.limits`)."""

    arch: Architecture
    N: int
    shared_data: bool  # x and y shared by all networks
    dtype: torch.dtype
    G: int = 0  # networks and epochs of the run (0: not known), for backends that weigh a
    epochs: int = 0  # one-off cost (a compile) against the work
    record_every: int = 1  # the loss history keeps epochs 0, k, 2k, ... (its memory)

    @property
    def rows(self) -> int:
        """Rows of the loss history: ``ceil(epochs / record_every)``."""
        return -(-self.epochs // self.record_every)


@runtime_checkable
class Run(Protocol):
    """One chunk of networks being trained (see the module docstring for the contract)."""

    @property
    def active(self) -> torch.Tensor: ...  # [g] bool: networks still training

    @property
    def first_below(self) -> torch.Tensor: ...  # [g] int32: first epoch with loss < eps, -1: not yet

    def block(self, history_rows: torch.Tensor, epochs: int | None = None, record_every: int = 1,
              e_base: int = 0) -> None: ...  # [ceil(epochs / record_every), g]

    def check_parameters(self) -> None: ...

    def final_loss(self, out: torch.Tensor) -> None: ...  # [g]

    def write_back(self) -> None: ...


class Backend:
    """A way to train a chunk of networks.  Subclasses set ``name`` and implement :meth:`start`;
    :meth:`unavailable` and :meth:`limits` say when they cannot run (None: they can)."""

    name: str = ""
    # Epochs per block: between two blocks the loop checks parameters, updates the progress
    # bar and can be interrupted with the population consistent.
    block_epochs: int = 50
    # Device types on which backend="auto" may pick this backend (None: every type).
    auto_devices: tuple[str, ...] | None = None
    # What a run holds, as data for working_bytes (Architecture.working_bytes): "layers" (an
    # epoch of per-layer ops on LayerRun's buffers) or "fused" (a packed copy of the
    # parameters, one launch per block); and whether it calls the torch engine's bmm (on
    # CUDA, cuBLAS copies their network-minor operands).  The defaults, the torch engine's,
    # bound every backend of this package from above.
    working_memory: str = "layers"
    torch_bmm: bool = True

    def unavailable(self, device: torch.device) -> str | None:
        """Why this backend cannot run on ``device`` here (a missing package, ...), or None."""
        return None

    def limits(self, problem: Problem) -> str | None:
        """Why this backend cannot train ``problem`` ("a layer of width 40 (...)"), or None."""
        return None

    def worth_it(self, problem: Problem, device: torch.device) -> bool:
        """Whether ``"auto"`` should pick this backend for ``problem`` (it can run and takes it):
        False when a one-off cost, such as a cold compile, would make the run slower than the
        next backend in the auto order.  Never asked for a backend named explicitly."""
        return True

    def epochs_per_block(self, problem: Problem, device: torch.device) -> int:
        """Epochs between two checks of the loop (``block_epochs`` unless the backend knows better)."""
        return self.block_epochs

    def working_bytes(self, problem: Problem, device: torch.device) -> int:
        """Peak bytes per network of a run of ``problem`` on ``device``, besides the loss
        history: what :func:`fastmlp.memory.plan_chunks` and the sweep's planner budget for.
        The formulas are ``Architecture.working_bytes`` for ``working_memory`` and
        ``torch_bmm`` (data shared or not: both x and y counted per network when not)."""
        per_network = not problem.shared_data
        return problem.arch.working_bytes(problem.N, problem.dtype.itemsize, per_network, per_network,
                                          program=self.working_memory,
                                          cublas=self.torch_bmm and torch.device(device).type == "cuda")

    def warm_up(self, problem: Problem, device: torch.device) -> bool:
        """Start preparing, in the background, what would make :meth:`worth_it` true for the
        next run of ``problem`` (a compile into the disk cache); True when something started."""
        return False

    def start(self, pop, x: torch.Tensor, y: torch.Tensor, lr: torch.Tensor, eps: float | None = None) -> Run:
        """Buffers for training ``pop`` (a chunk: a view of the user's population) on checked
        ``x``, ``y`` and ``lr [g]``; ``eps``: the loss threshold ``run.first_below`` tracks."""
        raise NotImplementedError

    def __repr__(self) -> str:
        return f"<fastmlp backend {self.name!r}>"


class LayerBackend(Backend):
    """A backend made of the four per-layer ops of ``fastmlp.engine.torch`` (``linear_act_fwd``,
    ``output_delta``, ``delta_bwd``, ``grad_update``), composed by :class:`LayerRun`."""

    ops_module: str = ""  # the module holding the ops, imported when a run starts

    def ops(self):
        return importlib.import_module(self.ops_module)

    def start(self, pop, x, y, lr, eps=None) -> "LayerRun":
        return LayerRun(pop, x, y, lr, self.ops(), eps)


class LayerRun:
    """An epoch as the lab writes it, one op call per layer and step; buffers allocated once
    (an epoch allocates nothing)."""

    def __init__(self, pop, x, y, lr, ops, eps: float | None = None):
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
        widths = pop.arch.sizes[1:]
        self.z = [network_minor((G, N, n), dtype, device) for n in widths]
        self.delta = [network_minor((G, N, n), dtype, device) for n in widths]
        self.tmp = [network_minor((G, N, n), dtype, device) for n in widths]
        self.wg = [network_minor(w.shape, dtype, device) for w in self.w]
        self.bg = [network_minor(b.shape, dtype, device) for b in self.b]
        self.active = torch.ones(G, dtype=torch.bool, device=device)
        self.frozen = torch.zeros(G, dtype=torch.bool, device=device)
        self.all_active = torch.ones((), dtype=torch.bool, device=device)
        self.scratch = torch.empty(G, dtype=dtype, device=device)
        self.finite = torch.empty(G, dtype=torch.bool, device=device)
        # On the CPU reading a flag is free, so the frozen mask is applied only when some
        # network is frozen; on a GPU the mask is always passed (no host sync per epoch).
        self.cheap_sync = device.type == "cpu"
        self.acts = pop.arch.acts
        self.first_below = torch.full((G,), -1, dtype=torch.int32, device=device)
        # eps as a 0-d tensor of the parameters' dtype: the kernels' comparison (a Python
        # float against a float32 row compares in float32 too)
        self.eps = None if eps is None else torch.tensor(eps, dtype=dtype, device=device)
        self.below = torch.empty(G, dtype=torch.bool, device=device)
        self.not_yet = torch.empty(G, dtype=torch.bool, device=device)
        self.unrecorded = torch.empty(G, dtype=dtype, device=device)  # the loss of an epoch not recorded

    def forward_loss(self, loss_out: torch.Tensor) -> None:
        ops, inp = self.ops, self.x
        for l, act in enumerate(self.acts):
            ops.linear_act_fwd(inp, self.w[l], self.b[l], act, out=self.z[l])
            inp = self.z[l]
        ops.output_delta(self.z[-1], self.y, delta=self.delta[-1], loss=loss_out, tmp=self.tmp[-1])
        self.active.logical_and_(finite_loss(loss_out, self.scratch, self.finite))

    def block(self, history_rows: torch.Tensor, epochs: int | None = None, record_every: int = 1,
              e_base: int = 0) -> None:
        for i in range(len(history_rows) if epochs is None else epochs):
            row = history_rows[i // record_every] if i % record_every == 0 else self.unrecorded
            self.epoch(row)
            if self.eps is not None:  # first_below = e where loss < eps and first_below < 0
                torch.lt(row, self.eps, out=self.below)
                torch.lt(self.first_below, 0, out=self.not_yet)
                self.below &= self.not_yet
                self.first_below.masked_fill_(self.below, e_base + i)

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
        for t in self.w + self.b:
            self.active &= finite_parameters(t)

    def final_loss(self, out: torch.Tensor) -> None:
        self.forward_loss(out)

    def write_back(self) -> None:
        for t, t0, copied in zip(self.w + self.b, self.pop.weights + self.pop.biases, self.copied):
            if copied:
                t0.copy_(t)
