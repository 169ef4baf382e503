"""The Triton engine: the four ops of ``fastmlp.engine.torch``, each one fused kernel.

Same signatures and results as the torch engine (its oracle); the work is done by the
launchers of :mod:`fastmlp.kernels` (one ``@triton.jit`` kernel per op), imported when
an op first runs, so ``import fastmlp`` never imports triton.  Runs on CUDA, or on the
CPU under ``TRITON_INTERPRET=1`` (which must be set before the kernels are first
imported).

Limits (``BACKEND.limits``): float32 / float64, layer widths up to
``architecture.KERNEL_MAX_WIDTH`` (128).
"""
from __future__ import annotations

import torch

from ..architecture import KERNEL_MAX_WIDTH as MAX_WIDTH
from ..layout import network_minor
from .base import LayerBackend, Problem, triton_available, triton_interpreter

__all__ = ["linear_act_fwd", "output_delta", "delta_bwd", "grad_update", "MAX_WIDTH", "BACKEND"]


def _kernels():
    from .. import kernels  # imports triton

    return kernels


def linear_act_fwd(x: torch.Tensor, w: torch.Tensor, b: torch.Tensor, act: str,
                   out: torch.Tensor | None = None) -> torch.Tensor:
    """``act(x @ w + b)``: x [N, n_in] or [G, N, n_in], w [G, n_in, n_out], b [G, n_out] -> [G, N, n_out]."""
    return _kernels().linear_act_fwd(x, w, b, act, out=out)


def output_delta(z_out: torch.Tensor, y: torch.Tensor, delta: torch.Tensor | None = None,
                 loss: torch.Tensor | None = None, tmp: torch.Tensor | None = None):
    """``(delta [G, N, n_out], loss [G])`` of the sigmoid + MSE output layer, one kernel
    (``tmp``, the torch engine's scratch, is not needed)."""
    return _kernels().output_delta(z_out, y, delta=delta, loss=loss)


def delta_bwd(delta: torch.Tensor, w: torch.Tensor, z_prev: torch.Tensor,
              out: torch.Tensor | None = None, tmp: torch.Tensor | None = None) -> torch.Tensor:
    """``(delta @ w^T) * (1 - z_prev**2)`` -> [G, N, n_in], one kernel (``tmp`` not needed)."""
    return _kernels().delta_bwd(delta, w, z_prev, out=out)


def grad_update(z_prev: torch.Tensor, delta: torch.Tensor, w: torch.Tensor, b: torch.Tensor,
                lr: torch.Tensor, frozen: torch.Tensor | None = None,
                weight_grad: torch.Tensor | None = None, bias_grad: torch.Tensor | None = None,
                keep_grads: bool = True):
    """SGD step of one layer in place on ``w``, ``b``; returns ``(weight_grad, bias_grad)``.

    As the torch engine, the gradients are returned, in buffers allocated when not given.
    With ``keep_grads=False`` (the training loop) the kernel does not write them at all:
    ``params * itemsize`` fewer bytes per network and epoch (148 of the ~1.8 KB the lab
    network's epoch moves per network in float32); given buffers are left untouched and
    ``(None, None)`` is returned.
    """
    k = _kernels()
    if not keep_grads:
        k.grad_update(z_prev, delta, w, b, lr, frozen=frozen)
        return None, None
    if weight_grad is None and bias_grad is None:
        weight_grad = network_minor(w.shape, w.dtype, w.device)
        bias_grad = network_minor(b.shape, b.dtype, b.device)
    return k.grad_update(z_prev, delta, w, b, lr, frozen=frozen, weight_grad=weight_grad, bias_grad=bias_grad)


def triton_unavailable(device: torch.device, what: str) -> str | None:
    """Why Triton kernels cannot run on ``device`` here (shared with the fused backend)."""
    if not triton_available():
        return f"needs the triton package (pip install triton, Linux) to run {what}"
    if device.type != "cuda" and not (device.type == "cpu" and triton_interpreter()):
        return (f"needs the population on a CUDA device, but it is on {device} (move it with population.to('cuda'), "
                "or set TRITON_INTERPRET=1 to run the kernels in Triton's slow CPU interpreter)")
    return None


class TritonBackend(LayerBackend):
    """Per-layer kernels, composed by the same :class:`~fastmlp.engine.base.LayerRun` as torch."""

    name = "triton"
    ops_module = __name__
    auto_devices = ("cuda",)
    torch_bmm = False  # LayerRun's buffers; every product is a kernel of its own

    def unavailable(self, device):
        return triton_unavailable(device, "its per-layer kernels")

    def limits(self, problem: Problem):
        if problem.dtype not in (torch.float32, torch.float64):
            return f"{problem.dtype} parameters (the kernels take float32 and float64)"
        return problem.arch.kernel_limits()


BACKEND = TritonBackend()
