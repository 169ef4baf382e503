"""Stage 3, the run: train one planned population, and cut it back into one record per
configuration (statistics, curves, the trained unpadded parameters).

Before the first population, :func:`estimate` prints the work, the peak memory
(``Architecture.train_bytes``, the memory model :func:`fastmlp.train` plans its chunks with)
and, for a large sweep, a time measured on a throw-away population.
"""
from __future__ import annotations

from typing import Iterator, Sequence

import torch

from .. import stats
from ..memory import fmt_bytes
from ..population import Population
from ..train import TrainResult, train
from .batches import Batch, padded_population
from .spec import Config, SweepSpec

__all__ = ["estimate", "train_batch", "config_records"]

# Sweeps of at least this many network-epochs get a measured time estimate first: a probe
# of min(G, 8192) networks x 12 epochs per padded architecture (~0.1 s on the 2-core dev box).
ESTIMATE_ABOVE = 10**7
PROBE_NETWORKS = 8192


def _fmt_s(s: float) -> str:
    return f"{s:.1f} s" if s < 120 else f"{s / 60:.1f} min"


def _probe_seconds(x, y, sizes, G: int, dtype, device, backend) -> float:
    """Seconds per network-epoch for ``sizes``, measured on a throw-away population of
    ``G`` networks (the cost per network falls with G: probe near the real size)."""
    warm, epochs = 2, 10
    pop = Population(sizes, G, dtype=dtype, device=device)
    train(x, y, pop, warm, 0.1, backend=backend, progress=False)
    r = train(x, y, pop, epochs, 0.1, backend=backend, progress=False)
    return r.wall_time_s / (G * epochs)


def estimate(todo: Sequence[Batch], spec: SweepSpec, data: dict, device, backend) -> str:
    """One line: the work, its memory, and (for a large sweep) a measured time estimate."""
    S, itemsize = len(spec.seeds), spec.torch_dtype.itemsize
    ne = sum(len(b.configs) for b in todo) * S * spec.epochs
    peak, est_s, rates = 0, 0.0, {}
    large = ne >= ESTIMATE_ABOVE
    for b in todo:
        x, y = data[b.dataset]
        arch = b.architecture(x.shape[1], y.shape[1])
        G = len(b.configs) * S
        peak = max(peak, arch.train_bytes(G, x.shape[0], spec.epochs, itemsize))
        if large:
            key = (b.dataset, arch.sizes)
            if key not in rates:
                rates[key] = _probe_seconds(x, y, list(arch.sizes), min(G, PROBE_NETWORKS), spec.torch_dtype,
                                            device, backend)
            est_s += rates[key] * G * spec.epochs
    when = f"about {_fmt_s(est_s)} of training on {device} (probed)" if large else "a small sweep"
    return f"estimate: {ne:.3g} network-epochs, {when}; peak memory about {fmt_bytes(peak)} (the largest population)"


def train_batch(batch: Batch, spec: SweepSpec, x, y, device, backend, progress) -> tuple[Population, TrainResult]:
    """Build the batch's padded population and train it: ``(population, train result)``."""
    pop, lr = padded_population(x.shape[1], y.shape[1], batch.widths, batch.configs, spec.seeds, spec.torch_dtype,
                                device)
    return pop, train(x, y, pop, spec.epochs, lr, backend=backend, progress=progress)


def config_records(batch: Batch, spec: SweepSpec, pop: Population, result: TrainResult, x, y,
                   save_losses: bool = False) -> Iterator[tuple[Config, dict]]:
    """``(configuration, record)`` for each configuration of a trained batch, one at a time
    (a record holds CPU copies of its block: with ``save_losses`` its loss history).

    Raises RuntimeError when a zero-padded unit changed during training (padding was not
    exact on that backend)."""
    n_in, n_out = x.shape[1], y.shape[1]
    S = len(spec.seeds)
    losses = result.losses  # [G, epochs], a view of an epoch-major buffer
    epochs_to = stats.epochs_to_eps(losses, result.final_loss, spec.eps)
    acc = stats.accuracy(pop.predict(x), y)
    diverged = result.diverged
    for k, cfg in enumerate(batch.configs):
        block = slice(k * S, (k + 1) * S)
        sizes = [n_in, *cfg.hidden, n_out]
        weights, biases = [], []
        for l, (a, c) in enumerate(zip(sizes[:-1], sizes[1:])):
            w, b = pop.weights[l][block], pop.biases[l][block]
            # Exactness guard: a padded unit must have stayed exactly zero in every network
            # that did not diverge (a diverged one may hold inf * 0 = nan there).
            ok = ~diverged[block]
            if (w[ok][:, a:, :].any() or w[ok][:, :, c:].any() or b[ok][:, c:].any()):
                raise RuntimeError(f"{cfg.label}: a zero-padded unit changed during training on backend "
                                   f"{result.backend!r}; padding is not exact there (please report it)")
            weights.append(w[:, :a, :c].contiguous().cpu())
            biases.append(b[:, :c].contiguous().cpu())
        row = stats.config_stats(result.final_loss[block], diverged[block], epochs_to[block], acc[block], spec.eps)
        record = {
            "config": {"dataset": cfg.dataset, "hidden": list(cfg.hidden), "init": cfg.init.label,
                       "scheme": cfg.init.scheme, "gain": cfg.init.gain, "lr": cfg.lr, "sizes": sizes},
            "stats": row,
            "seeds": torch.tensor(spec.seeds, dtype=torch.int64),
            "final_loss": result.final_loss[block].cpu().clone(),
            "diverged": diverged[block].cpu().clone(),
            "accuracy": acc[block].cpu().clone(),
            "epochs_to_eps": epochs_to[block].cpu().clone(),
            "loss_quantiles": stats.loss_quantile_curves(losses[block]),
            "loss_quantile_levels": stats.CURVE_QUANTILES,
            "weights": weights,
            "biases": biases,
            "population": {"networks": len(pop), "sizes": [n_in, *batch.widths, n_out], "backend": result.backend,
                           "device": str(pop.device), "wall_time_s": result.wall_time_s},
        }
        if save_losses:
            record["losses"] = losses[block].cpu().clone()
        yield cfg, record
