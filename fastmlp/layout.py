"""The network-minor memory layout every population tensor uses.

A tensor of logical shape ``[G, *rest]`` (networks axis first, as every docstring writes
it) is stored as a contiguous ``[*rest, G]`` block, like torch's channels_last: element
``[g, i, j]`` of a weight lives at ``(i * n_out + j) * G + g``, so neighbouring networks
are neighbours in memory.  The tiny per-network products then become long vector
operations on a CPU and coalesced loads on a GPU.  Indexing, slicing and every torch op
behave as for any strided tensor; ``.contiguous()`` gives the networks-major copy.
"""
from __future__ import annotations

from collections.abc import Sequence

import torch

__all__ = ["network_minor", "is_network_minor", "as_network_minor"]


def network_minor(shape: Sequence[int], dtype: torch.dtype, device, *, fill: float | None = None) -> torch.Tensor:
    """A new tensor of logical ``shape = [G, *rest]`` stored as ``[*rest, G]``."""
    G, *rest = shape
    t = torch.empty(*rest, G, dtype=dtype, device=device)
    if fill is not None:
        t.fill_(fill)
    return t.permute(t.dim() - 1, *range(t.dim() - 1))


def is_network_minor(t: torch.Tensor) -> bool:
    """True when ``t`` ([G, ...]) is a permuted view of a contiguous ``[..., G]`` tensor."""
    return t.permute(*range(1, t.dim()), 0).is_contiguous()


def as_network_minor(t: torch.Tensor) -> torch.Tensor:
    """``t`` itself when already network-minor, else a network-minor copy."""
    if is_network_minor(t):
        return t
    out = network_minor(t.shape, t.dtype, t.device)
    out.copy_(t)
    return out
