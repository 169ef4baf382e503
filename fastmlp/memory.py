"""How much a training run may allocate, and how it splits when that is not enough.

The bytes themselves come from one model, :meth:`Architecture.train_bytes`; this module
adds the budget (a fraction of the device's free memory, or the caller's ``max_bytes``)
and the chunk plan that both :func:`fastmlp.train` and the sweep planner use.
"""
from __future__ import annotations

import os

import torch

from .architecture import Architecture
from .validate import NotEnoughMemory

__all__ = ["available_bytes", "budget", "plan_chunks", "check_fits", "MEMORY_FRACTION", "ALIGN", "fmt_bytes"]

# Fraction of the free memory a training run may plan to use.
MEMORY_FRACTION = 0.7
# Chunks of networks (and distributed shards) are multiples of this: vector-width aligned,
# so a network computes the same bits whichever chunk it lands in.
ALIGN = 64

_GIB = 2.0**30


def available_bytes(device: torch.device) -> int:
    """Free memory on ``device``: CUDA's free bytes, or the host's MemAvailable."""
    device = torch.device(device)
    if device.type == "cuda":
        return torch.cuda.mem_get_info(device)[0]
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


def plan_chunks(arch: Architecture, G: int, N: int, epochs: int, itemsize: int, device,
                x_per_network: bool = False, y_per_network: bool = False, max_bytes: int | None = None) -> int:
    """Networks per chunk (G when one pass fits, else a multiple of ``ALIGN``); raises
    :class:`NotEnoughMemory` (a MemoryError) when not even ``ALIGN`` networks fit."""
    limit, source = budget(device, max_bytes)
    history = arch.history_bytes(G, epochs, itemsize)
    per_net = arch.working_bytes(N, itemsize, x_per_network, y_per_network)
    if history + per_net * min(G, ALIGN) > limit:
        raise NotEnoughMemory(
            "seeds", f"training {G} networks for {epochs} epochs needs {history / _GIB:.2f} GiB for the loss history "
            f"[G, epochs] plus {per_net * G / _GIB:.2f} GiB of working memory, but only {limit / _GIB:.2f} GiB "
            f"({source}) can be used; train fewer seeds or epochs")
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
