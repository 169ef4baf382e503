"""Snapshots: the parameters of chosen networks at regular epochs of a training run.

``train(..., snapshot_every=k, snapshot_networks=idx)`` keeps, for the networks ``idx``, the
parameters they hold after ``0, k, 2k, ...`` updates and after the last one.  The training loop
cuts its blocks at those epochs (a block ends at every multiple of ``k`` as well as every
``backend.block_epochs``), asks the run to write its parameters back into the population there
(``Run.write_back``, which any backend allows between two blocks) and copies the chosen
networks' rows.  A run's numbers do not depend on where its blocks end, so a snapshot is bit for
bit what a run stopped at that epoch would hold.

Memory: ``len(epochs) * len(idx) * n_params * itemsize`` bytes on the population's device, counted
against the run's budget before anything trains.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from .architecture import Architecture
from .layout import network_minor
from .population import Population
from .validate import ArgumentError, ArgumentTypeError, check_index, check_int

__all__ = ["Snapshots", "snapshot_epochs", "block_bounds"]


def snapshot_epochs(every: int, epochs: int) -> list[int]:
    """``0, every, 2 every, ...`` and ``epochs`` (once, even when it is a multiple)."""
    return sorted(set(range(0, epochs, every)) | {epochs})


def block_bounds(epochs: int, block: int, snapshots: list[int] | None = None) -> list[tuple[int, int]]:
    """``(e0, e1)`` of every block: at most ``block`` epochs, and ending at every snapshot epoch."""
    cuts = set(range(block, epochs, block)) | {epochs}
    if snapshots:
        cuts |= {e for e in snapshots if 0 < e < epochs}
    ends = sorted(cuts)
    return list(zip([0, *ends[:-1]], ends))


@dataclass
class Snapshots:
    """What ``TrainResult.snapshots`` holds.

    Attributes:
        epochs: the epochs of the snapshots: ``epochs[j]`` updates had been applied at snapshot j.
        networks: [n] int64, the networks' positions in the trained population.
        seeds: [n] int64, their seeds.
        weights: per layer ``[S, n, n_in, n_out]``; ``weights[l][j, i]`` is network ``networks[i]``'s
            ``W`` of layer ``l`` at ``epochs[j]``.
        biases: per layer ``[S, n, n_out]``.
        loss: [S, n], the MSE of those parameters (from the run's loss history: the loss at
            the start of the next epoch, or the final loss).
        sizes: the architecture's widths.
    """

    epochs: list[int]
    networks: torch.Tensor
    seeds: torch.Tensor
    weights: list[torch.Tensor]
    biases: list[torch.Tensor]
    loss: torch.Tensor
    sizes: list[int]

    def __len__(self) -> int:
        return len(self.epochs)

    @staticmethod
    def nbytes(arch: Architecture, n_snapshots: int, n_networks: int, itemsize: int) -> int:
        return n_snapshots * n_networks * (arch.n_params * itemsize + itemsize)

    @classmethod
    def plan(cls, population, every, epochs: int, networks) -> tuple[list[int], torch.Tensor]:
        """``(snapshot epochs, network positions)`` for ``networks`` (an index of ``population``;
        None: all) every ``every`` epochs of an ``epochs``-long run; checked, nothing allocated."""
        every = check_int("snapshot_every", every, 1)
        G = len(population)
        if networks is None:
            idx = torch.arange(G)
        else:
            try:
                index = check_index(networks, G, "cpu")
            except ArgumentError as e:  # ArgumentTypeError too: the same class, named for this argument
                raise type(e)("snapshot_networks", f"snapshot_networks: {e.message}") from None
            except IndexError as e:
                raise ArgumentError("snapshot_networks", f"snapshot_networks: {e}") from None
            idx = torch.arange(G)[index] if isinstance(index, slice) else index
        if len(torch.unique(idx)) != len(idx):
            raise ArgumentError("snapshot_networks", "snapshot_networks names a network twice")
        return snapshot_epochs(every, epochs), idx

    @classmethod
    def empty(cls, population, epochs: list[int], idx: torch.Tensor) -> "Snapshots":
        """Room for the snapshots of networks ``idx`` at ``epochs`` (from :meth:`plan`)."""
        S, n, dtype, device = len(epochs), len(idx), population.dtype, population.device
        weights = [torch.empty(S, n, a, b, dtype=dtype, device=device) for a, b in population.arch.layers]
        biases = [torch.empty(S, n, b, dtype=dtype, device=device) for _, b in population.arch.layers]
        return cls(epochs, idx.to(device), population.seeds[idx.to(population.seeds.device)].clone(), weights,
                   biases, torch.empty(S, n, dtype=dtype, device=device), list(population.sizes))

    def take(self, epoch: int, chunk, g0: int) -> None:
        """Copy, from ``chunk`` (networks ``g0..`` of the population, parameters written back),
        the chosen networks it holds at ``epoch`` (a snapshot epoch)."""
        if epoch not in self.epochs:
            return
        j = self.epochs.index(epoch)
        local = (self.networks >= g0) & (self.networks < g0 + len(chunk))
        if not bool(local.any()):
            return
        rows, at = self.networks[local] - g0, torch.nonzero(local).flatten()
        for l, (w, b) in enumerate(zip(chunk.weights, chunk.biases)):
            self.weights[l][j, at] = w[rows]
            self.biases[l][j, at] = b[rows]

    def take_loss(self, epoch: int, loss: torch.Tensor, g0: int) -> None:
        """Copy, from ``loss`` ([g]: networks ``g0..``), the chosen networks' loss of their
        parameters at ``epoch``: the loss recorded at the start of that epoch, or the final loss.
        The training loop calls it as it goes, so a thinned loss history loses none of them."""
        if epoch not in self.epochs:
            return
        local = (self.networks >= g0) & (self.networks < g0 + len(loss))
        if bool(local.any()):
            self.loss[self.epochs.index(epoch), torch.nonzero(local).flatten()] = loss[self.networks[local] - g0]

    def population(self, j: int):
        """The chosen networks at snapshot ``j`` as a :class:`~fastmlp.Population` (a copy), in the
        order of ``networks``: for plots such as :func:`fastmlp.plot.unit_maps`."""
        if isinstance(j, bool) or not isinstance(j, int):
            raise ArgumentTypeError("j", f"a snapshot is chosen by an int, got {type(j).__name__}")
        if not -len(self) <= j < len(self):
            raise IndexError(f"snapshot {j} is out of range for {len(self)} snapshots")

        def copy(t):
            out = network_minor(t.shape, t.dtype, t.device)
            out.copy_(t)
            return out

        return Population._from_parameters([copy(w[j]) for w in self.weights], [copy(b[j]) for b in self.biases],
                                           self.seeds.clone(), None, None)

    def __repr__(self) -> str:
        return (f"Snapshots({len(self)} epochs {self.epochs[0]}..{self.epochs[-1]}, "
                f"{len(self.networks)} networks, sizes {self.sizes})")
