"""Stage 3, the run: fit the populations to memory, train one, and cut it back into one
record per configuration; the record format, and the merging of records.

Memory: a population's peak is :func:`fastmlp.memory.peak_bytes` for the backend that will
train it (the loss history and ``Backend.working_bytes``: the model :func:`fastmlp.train`
plans its chunks with) plus, on the CPU, the records being written (on a GPU they are host
memory, and reach it in pieces within the freed working memory).
:func:`fit` splits a population that would not fit the budget along its configurations,
then a configuration along its seeds (in blocks of ``fastmlp.memory.ALIGN``), and refuses
only what cannot fit even then, before anything trains.  After training, the statistics
work in pieces no larger than the working memory ``train`` has just released.

A **record** holds plain values and tensors only (``torch.load(weights_only=True)`` reads it):

=================  ============================================================================
``format``         :data:`RECORD_FORMAT`
``identity``       what it holds: ``config`` (:meth:`Config.key`), ``epochs``, ``eps``,
                   ``dtype``, ``data_sha256`` (its data set) and ``seeds_sha256`` (its seeds)
per seed [S]       ``seeds``, ``final_loss``, ``diverged``, ``accuracy``, ``epochs_to_eps``,
                   ``loss_curves`` [S, K] (the loss at the ``curve_epochs`` [K]), ``weights``
                   and ``biases`` (unpadded), and with save_losses ``losses`` [S, epochs]
derived            ``stats`` (the table row), ``loss_quantiles`` [5, K] over the seeds,
                   ``config`` (the table's description of the configuration)
``populations``    the populations that trained its seeds (size, backend, device, time)
=================  ============================================================================

Everything derived is a function of the identity and the per-seed data, so records of the
same configuration on other seeds :func:`combine` into the record a sweep over all those seeds
writes (bit for bit when the per-seed numbers are), and :func:`select` restricts one to some
seeds.  A record read back is checked (:func:`check`) and then trusted for its identity, its
per-seed values, its populations and its loss quantiles, which are checked for shape only:
recomputing them sorts S losses at every curve point (about 0.15 s per configuration of 4096
seeds on the 2-core dev box).  The cheap derived values, ``stats`` and ``config``, are
recomputed on load (:func:`select` always does), so a damaged table row in a file never
reaches the table.
"""
from __future__ import annotations

import hashlib
import math
import numbers
from dataclasses import replace
from typing import Iterator, Sequence

import torch

from .. import stats
from ..engine import Problem, get_backend, select_backend
from ..memory import ALIGN, fmt_bytes, peak_bytes
from ..population import Population
from ..train import TrainResult, train
from ..validate import NotEnoughMemory
from .batches import Batch, padded_population
from .spec import Config, InitSpec, SweepSpec

__all__ = ["RECORD_FORMAT", "CURVE_POINTS", "curve_epochs", "identity", "check", "derive", "combine", "select",
           "batch_bytes", "fit", "estimate", "train_batch", "config_records"]

# Sweeps of at least this many network-epochs get a measured time estimate first: a probe
# of min(G, 8192) networks x 12 epochs per padded architecture (~0.1 s on the 2-core dev box).
ESTIMATE_ABOVE = 10**7
PROBE_NETWORKS = 8192

RECORD_FORMAT = 2
# Epochs at which a record keeps every seed's loss (and the quantiles over seeds): the ones
# the loss-curve figure draws (fastmlp.plot.loss_bands with max_points=CURVE_POINTS: every
# k-th epoch and the last).  2 KiB per seed in float32.
CURVE_POINTS = 500
# Per-seed values of a record besides the parameters: name -> dtype (None: the spec's).
_PER_SEED = {"seeds": torch.int64, "final_loss": None, "diverged": torch.bool, "accuracy": torch.float64,
             "epochs_to_eps": torch.int64, "loss_curves": None}


def curve_epochs(epochs: int) -> torch.Tensor:
    """The epochs (indices of ``losses[:, e]``) a record keeps curves at: every
    ``ceil(epochs / CURVE_POINTS)``-th and the last."""
    keep = torch.arange(0, epochs, max(1, math.ceil(epochs / CURVE_POINTS)))
    return keep if keep[-1] == epochs - 1 else torch.cat([keep, torch.tensor([epochs - 1])])


def _seeds_digest(seeds: torch.Tensor) -> str:
    return hashlib.sha256(seeds.to(torch.int64).contiguous().numpy().tobytes()).hexdigest()[:16]


def identity(cfg: Config, spec: SweepSpec, data_sha256: str) -> dict:
    """What a record of ``cfg`` must name, but for its seeds (:func:`derive` adds their digest)."""
    return {"config": cfg.key(), "epochs": spec.epochs, "eps": spec.eps, "dtype": spec.dtype,
            "data_sha256": data_sha256}


def _label(key) -> str:
    try:
        return Config(key["dataset"], tuple(key["hidden"]), InitSpec(key["init"], key["gain"]), key["lr"]).label
    except (TypeError, KeyError):
        return repr(key)


def check(rec, want: dict, sizes: Sequence[int]) -> str | None:
    """Why ``rec`` cannot stand for the configuration of identity ``want`` with layer
    ``sizes`` (None when it can): another configuration, other training, a malformed part."""
    if not isinstance(rec, dict):
        return f"holds a {type(rec).__name__}, not a configuration record"
    if rec.get("format") != RECORD_FORMAT:
        return ("is from an older fastmlp and does not name what it holds" if "format" not in rec else
                f"has record format {rec['format']!r}, not {RECORD_FORMAT}")
    got = rec.get("identity")
    if not isinstance(got, dict):
        return "does not name what it holds"
    if got.get("config") != want["config"]:
        return f"holds another configuration ({_label(got.get('config'))})"
    for k in want:
        if got.get(k) != want[k]:
            return f"was trained with {k} {got.get(k)!r}, this sweep has {want[k]!r}"
    dtype = getattr(torch, want["dtype"])
    seeds = rec.get("seeds")
    if not isinstance(seeds, torch.Tensor) or seeds.dim() != 1 or seeds.dtype != torch.int64:
        return "has no seeds"
    S, K, E = len(seeds), len(curve_epochs(want["epochs"])), want["epochs"]
    shapes = {k: (dt or dtype, (S,)) for k, dt in _PER_SEED.items()}
    shapes["loss_curves"] = (dtype, (S, K))
    if "losses" in rec:
        shapes["losses"] = (dtype, (S, E))
    for k, (dt, shape) in shapes.items():
        t = rec.get(k)
        if not isinstance(t, torch.Tensor) or t.dtype != dt or tuple(t.shape) != shape:
            return f"has a malformed {k!r}"
    layers = list(zip(sizes[:-1], sizes[1:]))
    for k, shape in (("weights", lambda a, c: (S, a, c)), ("biases", lambda a, c: (S, c))):
        ts = rec.get(k)
        if not isinstance(ts, list) or len(ts) != len(layers) or any(
                not isinstance(t, torch.Tensor) or t.dtype != dtype or tuple(t.shape) != shape(a, c)
                for t, (a, c) in zip(ts, layers)):
            return f"has malformed {k!r}"
    if len(set(seeds.tolist())) != S or got.get("seeds_sha256") != _seeds_digest(seeds):
        return "has seeds that do not match its seed digest"
    at = rec.get("curve_epochs")
    if not isinstance(at, torch.Tensor) or not torch.equal(at, curve_epochs(E)):
        return "has malformed 'curve_epochs'"
    pops = rec.get("populations")
    if not isinstance(pops, list) or not pops or not all(_population_ok(p) for p in pops):
        return "has malformed 'populations'"
    q, levels, Q = rec.get("loss_quantiles"), rec.get("loss_quantile_levels"), stats.CURVE_QUANTILES
    if (not isinstance(q, torch.Tensor) or q.dtype != torch.float32 or tuple(q.shape) != (len(Q), K)
            or not isinstance(levels, (list, tuple)) or tuple(levels) != Q):
        return "has malformed 'loss_quantiles'"
    return None  # stats and config are not looked at: select() recomputes them


def _count(v) -> bool:
    return isinstance(v, numbers.Integral) and not isinstance(v, bool) and v >= 1


def _population_ok(p) -> bool:
    """One entry of a record's ``populations``, as :func:`config_records` writes it."""
    if not isinstance(p, dict):
        return False
    t, sizes = p.get("wall_time_s"), p.get("sizes")
    return (_count(p.get("networks")) and _count(p.get("seeds")) and isinstance(p.get("backend"), str)
            and isinstance(p.get("device"), str) and isinstance(t, numbers.Real) and not isinstance(t, bool)
            and math.isfinite(t) and t >= 0 and isinstance(sizes, list) and len(sizes) >= 2
            and all(_count(n) for n in sizes))


def _quantile_curves(curves: torch.Tensor, scratch: int) -> torch.Tensor:
    """``stats.loss_quantile_curves`` in slices of epochs (each epoch's quantiles are its own:
    the same bits), so that its float64 copies and sort stay within ``scratch`` bytes."""
    cols = max(1, scratch // (64 * max(1, curves.shape[0])))
    return torch.cat([stats.loss_quantile_curves(curves[:, k:k + cols]) for k in range(0, curves.shape[1], cols)],
                     dim=1)


def _describe(rec: dict) -> dict:
    """Fill in (in place) what ``rec`` derives cheaply from its identity and per-seed values:
    the seed digest, the configuration's description and the statistics (the table row)."""
    rec["identity"] = {**rec["identity"], "seeds_sha256": _seeds_digest(rec["seeds"])}
    key, w = rec["identity"]["config"], rec["weights"]
    init = InitSpec(key["init"], key["gain"])
    rec["config"] = {"dataset": key["dataset"], "hidden": list(key["hidden"]), "init": init.label,
                     "scheme": init.scheme, "gain": init.gain, "lr": key["lr"],
                     "sizes": [w[0].shape[1], *(t.shape[2] for t in w)]}
    rec["stats"] = stats.config_stats(rec["final_loss"], rec["diverged"], rec["epochs_to_eps"], rec["accuracy"],
                                      rec["identity"]["eps"])
    return rec


def derive(rec: dict, scratch: int | None = None) -> dict:
    """Fill in (in place) everything ``rec`` derives from its identity and per-seed values:
    :func:`_describe`'s and the loss quantile curves, with at most ``scratch`` bytes of
    temporaries (default: an eighth of what its loss curves take)."""
    scratch = rec["loss_curves"].nbytes // 8 if scratch is None else scratch
    _describe(rec)
    rec["loss_quantiles"] = _quantile_curves(rec["loss_curves"], scratch)
    rec["loss_quantile_levels"] = stats.CURVE_QUANTILES
    return rec


def _per_seed(rec: dict) -> list[str]:
    return [*_PER_SEED, *(["losses"] if "losses" in rec else [])]


def combine(parts: Sequence[dict]) -> dict:
    """One record from records of the same configuration on disjoint seeds, in order
    (the loss histories only if every part has them)."""
    if len(parts) == 1:
        return parts[0]
    rec = dict(parts[0])
    if not all("losses" in p for p in parts):
        rec.pop("losses", None)
    for k in _per_seed(rec):
        rec[k] = torch.cat([p[k] for p in parts])
    for k in ("weights", "biases"):
        rec[k] = [torch.cat(ts) for ts in zip(*(p[k] for p in parts))]
    rec["populations"] = [q for p in parts for q in p["populations"]]
    return derive(rec)


def select(rec: dict, seeds: Sequence[int]) -> dict:
    """``rec`` restricted to ``seeds`` (which it holds), in that order, its derived values
    recomputed (when it holds exactly those seeds, the cheap ones: its loss quantiles were
    checked on load)."""
    have = rec["seeds"].tolist()
    if have == list(seeds):
        return _describe(dict(rec))
    where = {s: i for i, s in enumerate(have)}
    idx = torch.tensor([where[s] for s in seeds], dtype=torch.int64)
    out = dict(rec)
    for k in _per_seed(rec):
        out[k] = rec[k][idx]
    for k in ("weights", "biases"):
        out[k] = [t[idx] for t in rec[k]]
    return derive(out)


# -- memory ---------------------------------------------------------------------------------
def _problem(batch: Batch, spec: SweepSpec, data: dict) -> Problem:
    """What ``train`` is asked when it trains ``batch`` (its backend is chosen for it)."""
    x, y = data[batch.dataset]
    return Problem(batch.architecture(x.shape[1], y.shape[1]), x.shape[0], True, spec.torch_dtype, batch.networks,
                   spec.epochs)


def batch_bytes(batch: Batch, spec: SweepSpec, data: dict, device, backend: str = "auto") -> tuple[int, int]:
    """``(training, records)``: the peak bytes of training ``batch`` in one pass on the backend
    ``train`` picks for it (:func:`fastmlp.memory.peak_bytes`: each backend has its own
    working memory) and, on the CPU, of the records it writes: three times
    the largest one (the record in the folder, read back; the new part with the merged
    record; the scratch of its statistics), 0 on other devices: records are host memory, and
    :func:`config_records` moves them there in pieces no larger than the working memory
    ``train`` has freed (``training`` already counts it)."""
    problem = _problem(batch, spec, data)
    arch, isz, E = problem.arch, spec.torch_dtype.itemsize, spec.epochs
    training = peak_bytes(select_backend(backend, device, problem), problem, batch.networks, device)
    if torch.device(device).type != "cpu":
        return training, 0
    per_seed = 25 + isz * (1 + len(curve_epochs(E)) + arch.n_params + E * batch.losses)
    return training, 3 * per_seed * (len(batch.seeds) + batch.held)


def _largest(fits, hi: int) -> int:
    """The largest n in 0..hi with fits(n), for a fits that holds up to some n and not after."""
    lo = 0
    while lo < hi:
        mid = (lo + hi + 1) // 2
        lo, hi = (mid, hi) if fits(mid) else (lo, mid - 1)
    return lo


def fit(todo: Sequence[Batch], spec: SweepSpec, data: dict, device, limit: int, source: str,
        backend: str = "auto") -> list[Batch]:
    """The populations of ``todo``, split until each fits ``limit`` bytes: along whole
    configurations, then one configuration's seeds in blocks of ``ALIGN``.  Raises
    :class:`~fastmlp.validate.NotEnoughMemory` ``("seeds", ...)`` with the sizes when not
    even ``ALIGN`` networks of one configuration (and its record) fit."""
    def fits(b):
        return sum(batch_bytes(b, spec, data, device, backend)) <= limit

    out = []
    for b in todo:
        C = len(b.configs)
        k = _largest(lambda n: fits(replace(b, configs=b.configs[:n])), C)
        if k:
            k = -(-C // -(-C // k))  # as many pieces as needed, of even size
            out += [replace(b, configs=b.configs[i:i + k]) for i in range(0, C, k)]
            continue
        S = len(b.seeds)  # one configuration: its record whole, its seeds trained in blocks

        def piece(n, b=b, S=S):
            return replace(b, configs=b.configs[:1], seeds=b.seeds[:n], held=b.held + S - n)
        m = ALIGN * _largest(lambda n: fits(piece(n * ALIGN)), S // ALIGN)
        if not m:
            smallest = piece(min(S, ALIGN))
            training, records = batch_bytes(smallest, spec, data, device, backend)
            raise NotEnoughMemory("seeds", (
                f"{b.configs[0].label}: {smallest.networks} networks of one configuration for {spec.epochs} epochs need about "
                f"{fmt_bytes(training)} to train" + (f" and {fmt_bytes(records)} for its record" if records else "")
                + f", but only {fmt_bytes(limit)} ({source}) can be used; train fewer seeds or epochs, or free memory"))
        m = ALIGN * -(-S // (ALIGN * -(-S // m)))  # as many blocks as needed, of even size
        out += [replace(b, configs=[c], seeds=b.seeds[i:i + m], held=b.held + i)
                for c in b.configs for i in range(0, S, m)]
    return out


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


def estimate(todo: Sequence[Batch], spec: SweepSpec, data: dict, device, backend, limit: int,
             source: str) -> tuple[str, int]:
    """``(one line: the work, its memory against the budget and, for a large sweep, a
    measured time, the peak bytes)``."""
    ne = sum(b.networks for b in todo) * spec.epochs
    peak, est_s, rates = 0, 0.0, {}
    large = ne >= ESTIMATE_ABOVE
    for b in todo:
        x, y = data[b.dataset]
        arch = b.architecture(x.shape[1], y.shape[1])
        peak = max(peak, sum(batch_bytes(b, spec, data, device, backend)))
        if large:
            key = (b.dataset, arch.sizes)
            if key not in rates:
                rates[key] = _probe_seconds(x, y, list(arch.sizes), min(b.networks, PROBE_NETWORKS),
                                            spec.torch_dtype, device, backend)
            est_s += rates[key] * b.networks * spec.epochs
    when = f"about {_fmt_s(est_s)} of training on {device} (probed)" if large else "a small sweep"
    return (f"estimate: {ne:.3g} network-epochs, {when}; peak memory about {fmt_bytes(peak)} (the largest "
            f"population), of {fmt_bytes(limit)} it may use ({source})"), peak


def train_batch(batch: Batch, spec: SweepSpec, x, y, device, backend, progress,
                max_bytes: int | None = None) -> tuple[Population, TrainResult]:
    """Build the batch's padded population and train it: ``(population, train result)``."""
    pop, lr = padded_population(x.shape[1], y.shape[1], batch.widths, batch.configs, batch.seeds,
                                spec.torch_dtype, device)
    # Every epoch recorded: the loss curves keep log-spaced epochs (curve_epochs), and the
    # sweep's batches bound the history's memory themselves (batches.HISTORY_BYTES).
    return pop, train(x, y, pop, spec.epochs, lr, backend=backend, progress=progress, max_bytes=max_bytes,
                      record_every=1, eps=spec.eps)


def config_records(batch: Batch, spec: SweepSpec, pop: Population, result: TrainResult, x, y,
                   data_sha256: str) -> Iterator[tuple[Config, dict]]:
    """``(configuration, record)`` for each configuration of a trained batch, one at a time
    (a record holds CPU copies of its block; with ``batch.losses`` its loss history).

    Raises RuntimeError when a zero-padded unit changed during training (padding was not
    exact on that backend)."""
    n_in, n_out, N = x.shape[1], y.shape[1], x.shape[0]
    S, E, isz = len(batch.seeds), spec.epochs, spec.torch_dtype.itemsize
    losses = result.losses  # [G, epochs], a view of an epoch-major buffer
    diverged = result.diverged
    # train()'s working memory (its backend's, as the estimate counted it) is free again but
    # for the parameters: the statistics below, and the copies of the loss curves (and
    # histories) to the host, work in pieces within it.  A piece of `rows` networks holds, per
    # network, a forward pass (predict; cuBLAS's copies on a GPU), accuracy's float64 copy and
    # three byte masks of the outputs, epochs_to_eps's two [E] byte masks, and a row of curves
    # or of history.  (On a GPU, copying a whole block at once puts an [S, K] (or [S, E])
    # temporary on the device beside the history: for the lab network over 500 epochs, 2000
    # bytes a network beside the estimate's 3168, a peak 1.3x the estimate.)
    arch = batch.architecture(n_in, n_out)
    per_net = get_backend(result.backend).working_bytes(Problem(arch, N, True, spec.torch_dtype), pop.device)
    scratch = len(pop) * (per_net - arch.n_params * isz)
    at = curve_epochs(E).to(losses.device)
    piece = (isz * arch.forward_words(N, cublas=pop.device.type == "cuda") + 11 * N * n_out + 2 * E
             + isz * (len(at) + E * batch.losses))
    rows = max(1, min(S, scratch // piece))
    seeds = torch.tensor(batch.seeds, dtype=torch.int64)
    to_eps = result.epochs_to_eps(spec.eps)  # tracked on every epoch during training
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
        epochs_to, acc = [], []
        curves = torch.empty(S, len(at), dtype=losses.dtype)
        history = torch.empty(S, E, dtype=losses.dtype) if batch.losses else None
        for g in range(block.start, block.stop, rows):
            part, here = slice(g, min(block.stop, g + rows)), slice(g - block.start, min(S, g - block.start + rows))
            epochs_to.append(to_eps[part].cpu())
            acc.append(stats.accuracy(pop[part].predict(x), y).cpu())
            curves[here] = losses[part][:, at]  # indexing copies: [rows, K] on the device
            if history is not None:
                history[here] = losses[part]
        record = {
            "format": RECORD_FORMAT,
            "identity": identity(cfg, spec, data_sha256),
            "seeds": seeds.clone(),
            "final_loss": result.final_loss[block].cpu().clone(),
            "diverged": diverged[block].cpu().clone(),
            "accuracy": torch.cat(acc),
            "epochs_to_eps": torch.cat(epochs_to),
            "loss_curves": curves,
            "curve_epochs": curve_epochs(E),
            "weights": weights,
            "biases": biases,
            "populations": [{"networks": len(pop), "sizes": [n_in, *batch.widths, n_out], "seeds": S,
                             "backend": result.backend, "device": str(pop.device),
                             "wall_time_s": result.wall_time_s}],
        }
        if history is not None:
            record["losses"] = history
        del weights, biases, epochs_to, acc, curves, history
        yield cfg, derive(record, scratch)
        del record
