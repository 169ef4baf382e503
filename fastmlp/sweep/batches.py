"""Stage 2, the plan: the spec's configurations as zero-padded populations (batches), in order.

Every configuration of one dataset whose architecture has the same *depth* (and widths of
the same class, see :func:`fastmlp.architecture.width_class`) rides in one population: the
hidden layers are zero-padded to the widest width at each layer, which is exact for tanh
hidden units (a padded unit has zero weights in and out and zero bias, so zero
pre-activation, zero output and zero gradients: it stays zero for ever, and the extra terms
it adds to each product are exact zeros; on the torch engine the loss curves are bitwise
those of the unpadded networks).  Each architecture's networks hold *exactly* the initial
weights of ``Population(arch_sizes, seeds, init, gain)`` (built unpadded, then embedded: the
init's element indexing and fan-in/fan-out depend on the real sizes).  Init schemes ride
along as stacked sub-populations and learning rates as the per-network ``lr [G]`` of
:func:`fastmlp.train`; different depths (and datasets) run one after another.  A population
whose loss history would pass ``HISTORY_BYTES`` is split along whole configurations.

:func:`check_backend` asks the backend registry about every population before any of them
trains.  :func:`todo` cuts the plan down to what a folder still lacks: the configurations
without a record, and the seeds that a configuration's record does not hold yet.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import torch

from ..architecture import Architecture, width_class
from ..engine import Problem, select_backend
from ..population import Population, network_minor
from ..validate import ArgumentError
from .spec import Config, SweepSpec, SweepSpecError, hidden_label

__all__ = ["Batch", "plan", "todo", "padded_population", "check_backend", "HISTORY_BYTES"]

# Loss history per population, at most: 2 GiB is 214k networks x 2500 epochs in float32.
HISTORY_BYTES = 2**31


@dataclass
class Batch:
    """One population: configurations of one dataset and one depth, padded to ``widths``, each
    trained on ``seeds``.  ``held`` is the most seeds any of its configurations' records
    already hold (their new seeds are merged into them), ``losses`` whether its records keep
    every loss history."""

    dataset: str
    widths: tuple[int, ...]
    configs: list[Config]
    seeds: tuple[int, ...]
    held: int = 0
    losses: bool = False

    @property
    def depth(self) -> int:
        return len(self.widths)

    @property
    def architectures(self) -> list[tuple[int, ...]]:
        """The hidden widths of its configurations, each once, in the spec's order."""
        return list(dict.fromkeys(c.hidden for c in self.configs))

    def architecture(self, n_in: int, n_out: int) -> Architecture:
        """The padded architecture ``[n_in, *widths, n_out]`` that trains."""
        return Architecture((n_in, *self.widths, n_out))

    @property
    def networks(self) -> int:
        return len(self.configs) * len(self.seeds)

    def describe(self) -> str:
        added = f" (seeds added to {self.held}: {_seed_range(self.seeds)})" if self.held else ""
        return (f"{self.dataset}, hidden {' '.join(hidden_label(h) for h in self.architectures)} "
                f"(padded to {hidden_label(self.widths)}): {len(self.configs)} configurations, "
                f"{self.networks} networks{added}")


def _seed_range(seeds: Sequence[int]) -> str:
    """``"64..127"`` for a run, else the count."""
    S = list(seeds)
    return f"{S[0]}..{S[-1]}" if S == list(range(S[0], S[0] + len(S))) else f"{len(S)} seeds"


def plan(spec: SweepSpec, history_bytes: int = HISTORY_BYTES) -> list[Batch]:
    """The populations a sweep trains, in order.

    Per dataset, architectures of the same depth whose widths fall in the same class at
    every layer (:func:`fastmlp.architecture.width_class`) share a population, padded to the widest; each
    population is split along whole configurations when its loss history would pass
    ``history_bytes``.  The plan depends on the spec only (never on what is already
    done), so a resumed sweep trains every network in the same population, at the same
    place, with the same padding as a fresh one: the same bits.
    """
    S = len(spec.seeds)
    per_batch = max(1, history_bytes // (S * spec.epochs * spec.torch_dtype.itemsize))
    batches = []
    for d in spec.datasets:
        groups: dict[tuple, list[tuple[int, ...]]] = {}
        for h in spec.hidden:
            groups.setdefault((len(h), *map(width_class, h)), []).append(h)
        for archs in groups.values():
            widths = tuple(max(h[l] for h in archs) for l in range(len(archs[0])))
            configs = [Config(d, h, i, lr) for h in archs for i in spec.inits for lr in spec.lrs]
            for k in range(0, len(configs), per_batch):
                batches.append(Batch(d, widths, configs[k:k + per_batch], spec.seeds))
    return batches


def todo(batches: Sequence[Batch], need: dict, held: dict, losses: dict) -> list[Batch]:
    """What is left of the plan ``batches``: per planned population, its configurations
    that ``need`` seeds (``need[cfg]``, in the spec's order), grouped by the seeds they need
    and by ``losses[cfg]`` (keep the loss histories), at the plan's padding.  ``held[cfg]``
    counts the seeds ``cfg``'s record already holds.  A population that needs everything is
    the planned one, unchanged: a resumed sweep trains it as a fresh one would."""
    out = []
    for b in batches:
        groups: dict[tuple, list[Config]] = {}
        for c in b.configs:
            if need[c]:
                groups.setdefault((tuple(need[c]), bool(losses[c])), []).append(c)
        for (seeds, keep), configs in groups.items():
            out.append(Batch(b.dataset, b.widths, configs, seeds, max(held.get(c, 0) for c in configs), keep))
    return out


def check_backend(batches: Sequence[Batch], spec: SweepSpec, data: dict, backend: str, device) -> None:
    """Refuse ``backend`` before any training when it cannot run on ``device`` or cannot train
    one of the populations (its padded architecture on its data set's N samples): raises
    :class:`SweepSpecError` ``("backend", ...)`` with the registry's reason."""
    for b in batches:
        x, y = data[b.dataset]
        problem = Problem(b.architecture(x.shape[1], y.shape[1]), x.shape[0], True, spec.torch_dtype)
        try:
            select_backend(backend, device, problem)
        except ArgumentError as e:
            raise SweepSpecError.of(e, "backend") from None


def padded_population(n_in: int, n_out: int, widths: tuple[int, ...], configs: Sequence[Config], seeds,
                      dtype: torch.dtype = torch.float32, device="cpu") -> tuple[Population, torch.Tensor]:
    """Stack every configuration's networks into one zero-padded population.

    Each configuration's block of ``len(seeds)`` networks holds exactly the weights of
    ``Population([n_in, *hidden, n_out], seeds, init, gain)``, embedded in the top-left corner of
    the padded ``[n_in, *widths, n_out]`` tensors (zeros elsewhere; biases zero as in every
    scheme).  Returns ``(population, lr [G])``.
    """
    S = len(seeds)
    G = S * len(configs)
    sizes = [n_in, *widths, n_out]
    weights = [network_minor((G, a, b), dtype, device, fill=0.0) for a, b in zip(sizes[:-1], sizes[1:])]
    biases = [network_minor((G, b), dtype, device, fill=0.0) for b in sizes[1:]]
    lr = torch.empty(G, dtype=dtype, device=device)
    current = None
    for k, cfg in enumerate(configs):
        if current is None or current[0] != (cfg.hidden, cfg.init):
            real = Population([n_in, *cfg.hidden, n_out], seeds, cfg.init.scheme, cfg.init.gain, dtype, device)
            current = ((cfg.hidden, cfg.init), real)
        real = current[1]
        block = slice(k * S, (k + 1) * S)
        for w, b, w_real, b_real in zip(weights, biases, real.weights, real.biases):
            a, c = w_real.shape[1:]
            w[block, :a, :c] = w_real
            b[block, :c] = b_real
        lr[block] = cfg.lr
    seed_t = torch.as_tensor(list(seeds), dtype=torch.int64, device=device).repeat(len(configs))
    return Population._from_parameters(weights, biases, seed_t, None, None), lr
