"""The one-launch backend: ``kernels/fused_train.py`` trains a block of epochs per launch.

The training loop (``fastmlp.train``) calls :class:`FusedRun` instead of composing per-layer
ops: parameters are packed once into a ``[P, G]`` network-minor buffer, each block of
epochs is one kernel launch that keeps every network's weights in registers, and the
population's tensors are written back between blocks only when the loop asks (parameter
checks, Ctrl-C, the end).  The per-layer ops of this module are the torch engine's: they
serve the final forward pass and ``Population.predict``.
"""
from __future__ import annotations

import torch

from ..kernels import fused_train as _fk
from ..population import Population
from .torch import delta_bwd, grad_update, linear_act_fwd, output_delta  # noqa: F401  (per-layer ops)

__all__ = ["FusedRun", "linear_act_fwd", "output_delta", "delta_bwd", "grad_update"]


class FusedRun:
    """Buffers and launches for one chunk of networks; the same surface as the loop's ``_Run``."""

    def __init__(self, pop: Population, x: torch.Tensor, y: torch.Tensor, lr: torch.Tensor):
        if x.dim() != 2 or y.dim() != 2:
            raise ValueError("backend='fused' needs x and y shared by all networks; use backend='triton'")
        self.pop, self.x, self.y, self.lr = pop, x, y, lr
        self.sizes = pop.sizes
        self.packed = _fk.pack(pop.weights, pop.biases)
        self.active_i8 = torch.ones(len(pop), dtype=torch.int8, device=pop.device)
        self._synced = True  # the population's tensors hold what `packed` holds

    @property
    def active(self) -> torch.Tensor:
        return self.active_i8 != 0

    def block(self, history_rows: torch.Tensor) -> None:
        """Train ``len(history_rows)`` epochs in one launch, recording every epoch's loss."""
        _fk.fused_train(self.x, self.y, self.packed, self.lr, self.active_i8, history_rows, self.sizes,
                        history_rows.shape[0])
        self._synced = False

    def check_parameters(self) -> None:
        """Freeze networks with a non-finite parameter."""
        finite = torch.isfinite(self.packed).all(dim=0)
        self.active_i8.mul_(finite.to(torch.int8))

    def write_back(self) -> None:
        if not self._synced:
            _fk.unpack_into(self.packed, self.pop.weights, self.pop.biases)
            self._synced = True

    def forward_loss(self, loss_out: torch.Tensor) -> None:
        """Loss of the current parameters (the final loss), with the torch engine's ops."""
        self.write_back()
        z = self.x
        L = len(self.pop.weights)
        for l, (w, b) in enumerate(zip(self.pop.weights, self.pop.biases)):
            z = linear_act_fwd(z, w, b, "sigmoid" if l == L - 1 else "tanh")
        output_delta(z, self.y, loss=loss_out)
        self.active_i8.mul_((loss_out - loss_out == 0).to(torch.int8))
