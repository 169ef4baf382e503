"""The one-launch backend: ``kernels/fused_train.py`` trains a block of epochs per launch.

Parameters are packed once into a ``[P, G]`` network-minor buffer; each block of epochs is
one kernel launch that keeps every network's weights in registers; the population's
tensors are written back between blocks only when the loop asks (the end, Ctrl-C).
The kernels are imported when a run starts, so asking whether this backend takes a
problem (``BACKEND.limits``) reads only the :class:`~fastmlp.architecture.Architecture`.

Limits: data shared by all networks, float32 / float64, and
``Architecture.fused_limits`` (at most 4 hidden layers, widths up to 32, N up to 4096).
"""
from __future__ import annotations

import torch

from .base import Backend, Problem, finite_loss, finite_parameters
from .torch import linear_act_fwd, output_delta
from .triton import triton_unavailable

__all__ = ["FusedRun", "FusedBackend", "BACKEND"]


class FusedRun:
    """Packed parameters and launches for one chunk of networks (a :class:`~fastmlp.engine.base.Run`)."""

    def __init__(self, pop, x: torch.Tensor, y: torch.Tensor, lr: torch.Tensor, variant: str | None = None):
        from ..kernels import fused_train  # imports triton

        self._fk, self.variant = fused_train, variant
        self.pop, self.x, self.y, self.lr = pop, x, y, lr
        self.packed = fused_train.pack(pop.weights, pop.biases)
        self.active_i8 = torch.ones(len(pop), dtype=torch.int8, device=pop.device)
        self._synced = True  # the population's tensors hold what `packed` holds

    @property
    def active(self) -> torch.Tensor:
        return self.active_i8 != 0

    def block(self, history_rows: torch.Tensor) -> None:
        """Train ``len(history_rows)`` epochs in one launch, recording every epoch's loss."""
        self._fk.fused_train(self.x, self.y, self.packed, self.lr, self.active_i8, history_rows, self.pop.sizes,
                             history_rows.shape[0], variant=self.variant)
        self._synced = False

    def check_parameters(self) -> None:
        self.active_i8.mul_(finite_parameters(self.packed, network_dim=-1).to(torch.int8))

    def write_back(self) -> None:
        if not self._synced:
            self._fk.unpack_into(self.packed, self.pop.weights, self.pop.biases)
            self._synced = True

    def final_loss(self, out: torch.Tensor) -> None:
        """Loss of the current parameters, with the torch engine's ops."""
        self.write_back()
        z = self.x
        for w, b, act in zip(self.pop.weights, self.pop.biases, self.pop.arch.acts):
            z = linear_act_fwd(z, w, b, act)
        output_delta(z, self.y, loss=out)
        finite = finite_loss(out, torch.empty_like(out), torch.empty_like(out, dtype=torch.bool))
        self.active_i8.mul_(finite.to(torch.int8))


class FusedBackend(Backend):
    name = "fused"
    # Epochs per launch.  Overhead per launch: one parameter check and a progress update
    # (bench/bench_train.py measures it against one launch for all epochs).
    block_epochs = 250
    auto_devices = ("cuda",)
    # Which kernel: None picks by rule (the generated one-thread program when a network fits
    # a thread, else the tile kernel); "unrolled" or "tiles" forces one (tests, benchmarks).
    variant: str | None = None

    def unavailable(self, device):
        return triton_unavailable(device, "its one-launch kernels")

    def limits(self, problem: Problem):
        if not problem.shared_data:
            return "per-network x or y (the fused program reads one data set shared by all networks)"
        if problem.dtype not in (torch.float32, torch.float64):
            return f"{problem.dtype} parameters (the fused program takes float32 and float64)"
        return problem.arch.fused_limits(problem.N)

    def start(self, pop, x, y, lr) -> FusedRun:
        return FusedRun(pop, x, y, lr, self.variant)


BACKEND = FusedBackend()
