"""Backends: one module of ops each, chosen in exactly one place (:func:`select_backend`).

=========  ==========================================  =====================================
backend    runs on                                     what it is
=========  ==========================================  =====================================
torch      any device (the CPU path)                   batched torch ops, ``engine/torch.py``
triton     CUDA (or CPU with ``TRITON_INTERPRET=1``)   fused per-layer Triton kernels
fused      CUDA (or CPU with ``TRITON_INTERPRET=1``)   one launch runs many epochs, weights in
                                                       registers (``engine/fused.py``); small
                                                       networks, data shared by all networks
=========  ==========================================  =====================================

``"auto"`` picks the fastest backend that can run, silently; a backend named explicitly
that cannot run raises a ValueError naming the reason and the fallback.
"""
from __future__ import annotations

import importlib
import importlib.util
import os

import torch as _torch  # aliased: the submodule fastmlp.engine.torch would shadow it

BACKENDS = ("auto", "torch", "triton", "fused")


def triton_available() -> bool:
    """True when the triton package can be imported (without importing it)."""
    return importlib.util.find_spec("triton") is not None


def triton_interpreter() -> bool:
    """True when ``TRITON_INTERPRET=1``: Triton kernels then run on the CPU, slowly."""
    return os.environ.get("TRITON_INTERPRET", "0") not in ("", "0")


def select_backend(backend: str, device: _torch.device, sizes=None, n_samples: int | None = None,
                   shared_data: bool = True) -> str:
    """Resolve ``backend`` for tensors on ``device``; raise ValueError when it cannot run.

    ``sizes``, ``n_samples`` and ``shared_data`` (x and y shared by all networks) decide
    whether the one-launch ``fused`` kernel can take the problem.
    """
    if not isinstance(backend, str) or backend not in BACKENDS:
        raise ValueError(f"backend must be one of {', '.join(map(repr, BACKENDS))}, got {backend!r}")
    device = _torch.device(device)
    if backend == "auto":
        if device.type == "cuda" and triton_available() and _has_triton_engine():
            fits = sizes is not None and n_samples is not None and _fused_limits(sizes, n_samples, shared_data) is None
            return "fused" if fits else "triton"
        return "torch"
    if backend in ("triton", "fused"):
        if not triton_available():
            raise ValueError(f"backend={backend!r} needs the triton package (pip install triton, Linux); "
                             "use backend='torch' instead")
        if device.type != "cuda" and not (device.type == "cpu" and triton_interpreter()):
            raise ValueError(f"backend={backend!r} needs the population on a CUDA device, but it is on {device}; "
                             "move it with population.to('cuda'), use backend='torch', or set "
                             "TRITON_INTERPRET=1 to run the kernels in Triton's (slow) CPU interpreter")
        if not _has_triton_engine():
            raise ValueError(f"backend={backend!r} is not available in this build; use backend='torch'")
    if backend == "fused" and sizes is not None and n_samples is not None:
        why = _fused_limits(sizes, n_samples, shared_data)
        if why is not None:
            raise ValueError(f"backend='fused' cannot train {why}; use backend='triton' (per-layer kernels) "
                             "or backend='torch'")
    return backend


def _fused_limits(sizes, n_samples: int, shared_data: bool) -> str | None:
    if not shared_data:
        return "per-network x or y (the fused kernel reads one data set shared by all networks)"
    from ..kernels.fused_train import fused_limits

    return fused_limits(sizes, n_samples)


def _has_triton_engine() -> bool:
    return importlib.util.find_spec("fastmlp.engine.triton") is not None


def get_ops(backend: str):
    """The ops module of a resolved backend (``linear_act_fwd``, ``output_delta``, ...).
    ``fused`` trains whole blocks of epochs at once (``engine/fused.py``); its per-layer
    ops, used outside the epoch loop, are the torch engine's."""
    return importlib.import_module(f"fastmlp.engine.{backend}")
