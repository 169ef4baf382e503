"""Backends: one module each behind one interface (``engine/base.py``), chosen in one place.

=========  ==========================================  =====================================
backend    runs on                                     what it is
=========  ==========================================  =====================================
fused      CUDA (or CPU with ``TRITON_INTERPRET=1``)   one launch runs many epochs, weights in
                                                       registers (``engine/fused.py``); small
                                                       networks, data shared by all networks
triton     CUDA (or CPU with ``TRITON_INTERPRET=1``)   fused per-layer Triton kernels
                                                       (``engine/triton.py``), widths <= 128
torch      any device (the CPU path)                   batched torch ops, ``engine/torch.py``
=========  ==========================================  =====================================

The registry below is the only place that knows backend names; its order is the order in
which ``"auto"`` tries them: the first that runs on the device (``auto_devices``), is
available (``unavailable``) and takes the problem (``limits``) is picked, silently.  A
backend named explicitly that cannot run raises an :class:`~fastmlp.validate.ArgumentError`
(``arg == "backend"``) naming the reason and the backend ``"auto"`` would use instead.
"""
from __future__ import annotations

import torch as _torch  # aliased: the submodule fastmlp.engine.torch would shadow it

from ..validate import ArgumentError, ArgumentTypeError
from . import fused, torch, triton
from .base import (Backend, LayerBackend, LayerRun, Problem, Run, finite_loss, finite_parameters, triton_available,
                   triton_interpreter)

__all__ = ["Backend", "LayerBackend", "LayerRun", "Run", "Problem", "register", "unregister", "names",
           "get_backend", "select_backend", "warm_up", "finite_loss", "finite_parameters", "triton_available",
           "triton_interpreter"]

_REGISTRY: dict[str, Backend] = {}


def register(backend: Backend, *, before: str | None = None) -> Backend:
    """Add ``backend`` under ``backend.name``; ``"auto"`` tries it after those registered
    before it, or just before the backend named ``before``."""
    if not isinstance(backend, Backend):
        raise ArgumentTypeError("backend", f"register() takes a fastmlp.engine.Backend, got {type(backend).__name__}")
    name = backend.name
    if not isinstance(name, str) or not name.isidentifier() or name == "auto":
        raise ArgumentError("backend", f"a backend needs a name that is an identifier other than 'auto', got {name!r}")
    if name in _REGISTRY:
        raise ArgumentError("backend", f"a backend named {name!r} is registered already")
    if before is not None and before not in _REGISTRY:
        raise ArgumentError("before", f"no backend named {before!r} to register before")
    items = list(_REGISTRY.items())
    at = len(items) if before is None else [k for k, _ in items].index(before)
    items.insert(at, (name, backend))
    _REGISTRY.clear()
    _REGISTRY.update(items)
    return backend


def unregister(name: str) -> None:
    """Remove a registered backend ("torch", every other backend's fallback, stays)."""
    if name == "torch":
        raise ArgumentError("backend", "the torch backend is every other backend's fallback and cannot be removed")
    _REGISTRY.pop(name, None)


def names() -> tuple[str, ...]:
    """Every accepted ``backend=`` value: "auto", then the registered backends in auto order."""
    return ("auto", *_REGISTRY)


def get_backend(name: str) -> Backend:
    if not isinstance(name, str) or name not in _REGISTRY:
        raise ArgumentError("backend", f"backend must be one of {', '.join(map(repr, names()))}, got {name!r}")
    return _REGISTRY[name]


def _runs(b: Backend, device: _torch.device, problem: Problem | None) -> bool:
    return b.unavailable(device) is None and (problem is None or b.limits(problem) is None)


def _auto(device: _torch.device, problem: Problem | None, skip: str | None = None) -> Backend:
    for name, b in _REGISTRY.items():
        if name == skip or (b.auto_devices is not None and device.type not in b.auto_devices):
            continue
        if _runs(b, device, problem) and (problem is None or b.worth_it(problem, device)):
            return b
    return _REGISTRY["torch"]


def warm_up(device, problem: Problem) -> list[str]:
    """Ask every backend that ``"auto"`` would prefer for ``problem`` but passed over only
    because of a one-off cost (:meth:`Backend.worth_it`) to prepare for the next run in the
    background; returns the names of those that started (the CLI calls this after a run)."""
    device = _torch.device(device)
    started = []
    for name, b in _REGISTRY.items():
        if b.auto_devices is not None and device.type not in b.auto_devices:
            continue
        if not _runs(b, device, problem):
            continue
        if b.worth_it(problem, device):
            break  # auto picks this one (or one before it): nothing to prepare
        if b.warm_up(problem, device):
            started.append(name)
    return started


def select_backend(backend: str, device, problem: Problem | None = None) -> Backend:
    """The backend that trains ``problem`` on ``device``: ``backend`` itself, or for "auto"
    the first of the registry that can.  Without ``problem`` only the device is checked
    (and "auto" answers with the first backend that runs on the device at all); raises
    ArgumentError(arg="backend") when it cannot run."""
    device = _torch.device(device)
    if backend == "auto":
        return _auto(device, problem)
    chosen = get_backend(backend)
    why = chosen.unavailable(device)
    if why is None and problem is not None:
        limit = chosen.limits(problem)
        why = None if limit is None else f"cannot train {limit}"
    if why is not None:
        fallback = _auto(device, problem, skip=backend).name
        raise ArgumentError("backend", f"backend={backend!r} {why}; use backend={fallback!r} instead "
                                       f"(what backend='auto' picks here)")
    return chosen


for _b in (fused.BACKEND, triton.BACKEND, torch.BACKEND):
    register(_b)
del _b
