"""Seeds beyond one device: shard a population's networks across the ranks of torch.distributed.

Networks never talk to each other, so the only communication is one gather at the end of
a training run: every rank trains a contiguous block of the seeds on its own device, then
all ranks exchange their blocks (loss history, final loss, divergence flags and the trained
parameters), so that every rank ends with exactly the result a single process computes.

``fastmlp.train`` shards by itself whenever a process group with more than one rank is
initialised -- by ``torchrun -m fastmlp ...`` (the CLI calls :func:`init_from_env`) or by the
user's own ``torch.distributed.init_process_group``.

Bytes gathered per network: ``(epochs + 1) * itemsize`` of losses, one flag, and
``params * itemsize`` of parameters (lab network, 2500 epochs, float32: 10.2 KB).
"""
from __future__ import annotations

import datetime
import os
from dataclasses import dataclass

import torch
import torch.distributed as dist

from .memory import ALIGN
from .validate import ArgumentError

__all__ = ["Shard", "current", "init_from_env", "is_main", "barrier", "on_main", "all_gather_networks",
           "broadcast_networks"]

# Shard boundaries are multiples of ALIGN networks (the chunk alignment of fastmlp.memory):
# with vector-aligned blocks a network's arithmetic is the same whichever rank trains it
# (bitwise on the CPU).


@dataclass(frozen=True)
class Shard:
    rank: int
    world_size: int

    def bounds(self, G: int) -> tuple[int, int]:
        """This rank's networks ``[g0, g1)`` of ``G``: contiguous, aligned blocks."""
        return self.block(G, self.rank)

    def block(self, G: int, rank: int) -> tuple[int, int]:
        blocks = -(-G // ALIGN)
        lo = blocks * rank // self.world_size
        hi = blocks * (rank + 1) // self.world_size
        return min(G, lo * ALIGN), min(G, hi * ALIGN)


def current() -> Shard | None:
    """The shard of this process when a multi-rank process group is initialised, else None."""
    if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
        return Shard(dist.get_rank(), dist.get_world_size())
    return None


def is_main() -> bool:
    """True on rank 0, and in a plain single process: the one that writes files and prints."""
    return not (dist.is_available() and dist.is_initialized()) or dist.get_rank() == 0


def barrier() -> None:
    if current() is not None:
        dist.barrier()


def init_from_env(timeout_s: float = 600.0) -> torch.device | None:
    """Initialise the process group when launched by torchrun (RANK / WORLD_SIZE set).

    Returns this rank's device (``cuda:LOCAL_RANK`` with nccl when CUDA is available, the
    CPU with gloo otherwise), or None outside torchrun.
    """
    if "RANK" not in os.environ or "WORLD_SIZE" not in os.environ:
        return None
    if dist.is_initialized():
        return _device()
    if torch.cuda.is_available():
        local = int(os.environ.get("LOCAL_RANK", 0))
        torch.cuda.set_device(local)
        dist.init_process_group("nccl", timeout=datetime.timedelta(seconds=timeout_s))
    else:
        dist.init_process_group("gloo", timeout=datetime.timedelta(seconds=timeout_s))
    return _device()


def _device() -> torch.device:
    if dist.get_backend() == "nccl":
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device("cpu")


def on_main(fn):
    """``fn()`` on rank 0 alone, its result given to every rank; an :class:`ArgumentError` it
    raises is raised on every rank (same class, argument and message).  For decisions about
    files that rank 0 writes: another rank looking for itself could catch rank 0 mid-write."""
    if current() is None:
        return fn()
    box = [None]
    if is_main():
        try:
            box[0] = ("ok", fn())
        except ArgumentError as e:
            box[0] = ("error", (type(e), e.arg, e.message))
    dist.broadcast_object_list(box, src=0)
    kind, value = box[0]
    if kind == "error":
        cls, arg, message = value
        raise cls(arg, message)
    return value


def all_gather_networks(t: torch.Tensor, shard: Shard, G: int, dim: int) -> torch.Tensor:
    """Gather along ``dim`` the blocks of ``t`` that every rank holds for its networks.

    ``t`` holds all G networks along ``dim``, but only this rank's block is meaningful;
    returns a tensor with every rank's block in place.  Blocks differ in size by at most
    ALIGN, so each is padded to the largest for the collective.
    """
    moved = t.movedim(dim, 0)
    sizes = [shard.block(G, r) for r in range(shard.world_size)]
    width = max(hi - lo for lo, hi in sizes)
    g0, g1 = sizes[shard.rank]
    send = torch.zeros((width, *moved.shape[1:]), dtype=moved.dtype, device=moved.device)
    send[:g1 - g0] = moved[g0:g1]
    recv = [torch.empty_like(send) for _ in sizes]
    if send.dtype == torch.bool:  # gloo and nccl gather bytes, not bools
        recv_u8 = [r.to(torch.uint8) for r in recv]
        dist.all_gather(recv_u8, send.to(torch.uint8))
        recv = [r.bool() for r in recv_u8]
    else:
        dist.all_gather(recv, send)
    out = moved.clone()
    for (lo, hi), block in zip(sizes, recv):
        out[lo:hi] = block[:hi - lo]
    return out.movedim(0, dim)


def broadcast_networks(t: torch.Tensor, networks: torch.Tensor, shard: Shard, G: int, dim: int) -> torch.Tensor:
    """Share a tensor of chosen networks (``t`` runs along ``dim`` over the global positions
    ``networks``; each rank has filled the entries of the networks it trains): returns it with
    every entry from the rank that owns it, the same on every rank (snapshots)."""
    moved = t.movedim(dim, 0)
    out = moved.clone()
    where = networks.to(moved.device)
    for r in range(shard.world_size):
        lo, hi = shard.block(G, r)
        mask = (where >= lo) & (where < hi)
        if not bool(mask.any()):
            continue
        part = moved[mask].contiguous() if r == shard.rank else torch.empty_like(moved[mask])
        dist.broadcast(part, src=r)
        out[mask] = part
    return out.movedim(0, dim)
