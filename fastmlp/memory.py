"""How much a training run may allocate, and how it splits when that is not enough.

The bytes themselves come from one model: the loss history
(:meth:`Architecture.history_bytes`) and the working memory of the backend that trains
(``Backend.working_bytes``, whose formulas are :meth:`Architecture.working_bytes`), added
up by :func:`peak_bytes`; this module adds the budget (a fraction of the device's free
memory, or the caller's ``max_bytes``) and the chunk plan that both :func:`fastmlp.train`
and the sweep planner use.
"""
from __future__ import annotations

import os

import torch

from .engine.base import Backend, Problem
from .validate import NotEnoughMemory

__all__ = ["available_bytes", "budget", "peak_bytes", "plan_chunks", "check_fits", "MEMORY_FRACTION", "ALIGN",
           "fmt_bytes"]

# Fraction of the free memory a training run may plan to use.
MEMORY_FRACTION = 0.7
# Chunks of networks (and distributed shards) are multiples of this: vector-width aligned,
# so a network computes the same bits whichever chunk it lands in.
ALIGN = 64

_GIB = 2.0**30


def available_bytes(device: torch.device) -> int:
    """Free memory on ``device``: on CUDA the driver's free bytes plus what torch's caching
    allocator holds unused (reserved, not allocated: blocks it hands out again, and gives back
    to retry an allocation that would not fit otherwise; after one large run in a process the
    driver alone reports that run's memory as taken), else the host's MemAvailable."""
    device = torch.device(device)
    if device.type == "cuda":
        cached = torch.cuda.memory_reserved(device) - torch.cuda.memory_allocated(device)
        return torch.cuda.mem_get_info(device)[0] + cached
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")


def budget(device: torch.device, max_bytes: int | None = None) -> tuple[int, str]:
    """``(bytes a run may use, where that number comes from)``."""
    if max_bytes is not None:
        return int(max_bytes), "max_bytes"
    return int(available_bytes(device) * MEMORY_FRACTION), f"{MEMORY_FRACTION:.0%} of the free memory on {device}"


def fmt_bytes(n: float) -> str:
    """``n`` bytes for a person: 512 B, 1.5 KiB, 2.3 GiB."""
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if n < 1024 or unit == "TiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024


def peak_bytes(backend: Backend, problem: Problem, G: int, device) -> int:
    """Peak bytes of training ``G`` networks of ``problem`` (for ``problem.epochs`` epochs) on
    ``backend`` in one pass: the loss history (:meth:`Architecture.history_bytes`) and each
    network's working memory (:meth:`Backend.working_bytes <fastmlp.engine.base.Backend.working_bytes>`)."""
    return (problem.arch.history_bytes(G, problem.rows, problem.dtype.itemsize)
            + G * backend.working_bytes(problem, device))


def plan_chunks(backend: Backend, problem: Problem, G: int, device, max_bytes: int | None = None) -> int:
    """Networks per chunk of a run of ``G`` networks of ``problem`` on ``backend`` (G when one
    pass fits, else a multiple of ``ALIGN``); raises :class:`NotEnoughMemory` (a MemoryError)
    when not even ``ALIGN`` networks fit."""
    limit, source = budget(device, max_bytes)
    history = problem.arch.history_bytes(G, problem.rows, problem.dtype.itemsize)  # whole, chunked or not
    per_net = backend.working_bytes(problem, device)
    if history + per_net * min(G, ALIGN) > limit:
        raise NotEnoughMemory(
            "seeds", f"training {G} networks for {problem.epochs} epochs needs {history / _GIB:.2f} GiB for the loss "
            f"history [G, epochs] plus {per_net * G / _GIB:.2f} GiB of working memory (backend {backend.name!r}), "
            f"but only {limit / _GIB:.2f} GiB ({source}) can be used; train fewer seeds or epochs")
    if history + per_net * G <= limit:
        return G
    chunk = (limit - history) // per_net
    return max(ALIGN, chunk // ALIGN * ALIGN)


def check_fits(arg: str, needed: int, device, what: str, advice: str, detail: str = "",
               max_bytes: int | None = None) -> None:
    """Raise :class:`NotEnoughMemory` (naming ``arg``) when ``needed`` bytes exceed the
    :func:`budget`: "``what`` needs N bytes ``detail``, but only M (where M comes from) can be
    used; ``advice``"."""
    limit, source = budget(device, max_bytes)
    if needed > limit:
        raise NotEnoughMemory(arg, f"{what} needs {fmt_bytes(needed)}{detail}, but only {fmt_bytes(limit)} "
                                   f"({source}) can be used; {advice}")
