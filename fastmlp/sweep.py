"""Sweeps: the lab's closing experiments over a grid, many seeds per configuration.

A configuration is one ``(dataset, hidden widths, init scheme with gain, learning rate)``;
every configuration trains the same seeds, so comparisons between configurations are
paired (seed s starts from the same weights whatever the lr, see ``Population``).

How the grid becomes populations (the sweep machinery must cost little next to training):

* every configuration of one dataset whose architecture has the same *depth* (and widths
  of the same class, see :func:`fastmlp.architecture.width_class`) rides in one population: the hidden layers
  are zero-padded to the widest width at each layer, which is exact for tanh hidden units
  (a padded unit has zero weights in and out and zero bias, so zero pre-activation, zero
  output and zero gradients: it stays zero for ever, and the extra terms it adds to each
  product are exact zeros; on the torch engine the loss curves are bitwise those of the
  unpadded networks);
* each architecture's networks hold *exactly* the initial weights of
  ``Population(arch_sizes, seeds, init, gain)`` (built unpadded, then embedded: the init's
  element indexing and fan-in/fan-out depend on the real sizes);
* init schemes ride along as stacked sub-populations and learning rates as the per-network
  ``lr [G]`` of :func:`fastmlp.train`;
* different depths (and datasets) run one after another.  A population whose loss history
  would pass ``_HISTORY_BYTES`` is split along whole configurations.

The sweep folder::

    sweep.json        the spec (canonical JSON); a folder with another spec is refused
    configs/*.pt      one file per configuration, written atomically when its population
                      finishes: statistics, loss quantile curves, per-seed final loss,
                      accuracy, epochs to eps, trained parameters (and, with
                      save_losses, the whole loss history)
    results.csv       one row per configuration; summary.md the same table, the spec,
                      the environment and the timings
    loss_curves, converged, epochs_to_eps, boundaries  (.png and .pdf)

Re-running the same sweep into the same folder skips every population whose
configurations are all saved; an interruption loses only the population in flight.
"""
from __future__ import annotations

import hashlib
import json
import math
import numbers
import re
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Sequence

import torch

from . import stats
from .architecture import Architecture, width_class
from .engine import select_backend
from .initializers import parse_init
from .population import Population, network_minor
from .results import atomic_write, environment, pick_boundary_networks
from .train import train

__all__ = ["sweep", "SweepSpec", "SweepSpecError", "SweepResult", "InitSpec", "Config", "plan", "SPEC_FILE"]

SPEC_FILE = "sweep.json"
_SPEC_VERSION = 1
# Loss history per population, at most: 2 GiB is 214k networks x 2500 epochs in float32.
_HISTORY_BYTES = 2**31
# Sweeps of at least this many network-epochs get a measured time estimate first: a probe
# of min(G, 8192) networks x 12 epochs per padded architecture (~0.1 s on the 2-core dev box).
_ESTIMATE_ABOVE = 10**7
_PROBE_NETWORKS = 8192
# Draw the loss curves and ECDFs in a forked worker while this process draws the rest
# (see _plots); False draws everything here.
_PLOT_WORKER = True
# Resolution of the sweep's PNGs: 100 dpi draws the Bar's 12-panel figures at 1360 px wide
# (240 KB; 150 dpi: 390 KB and 1.6x the time).
_DPI = 100
# Networks of each architecture drawn in the gallery of decision boundaries.
_GALLERY = 6
# The gallery shows, for every architecture, the configuration with the first init of the
# grid and the learning rate nearest the lab's.
_LAB_LR = 0.25

# Argument of sweep() -> command-line flag, for error messages.
_FLAGS = {"hidden": "--hidden", "lr": "--lr", "init": "--init", "datasets": "--dataset", "seeds": "--seeds",
          "epochs": "--epochs", "eps": "--eps", "gain": "--gain", "dtype": "--dtype", "out": "--out",
          "device": "--device", "backend": "--backend", "formats": "--formats"}


class SweepSpecError(ValueError):
    """A bad sweep spec; ``arg`` names the argument of :func:`sweep`, ``flag`` the CLI flag,
    ``message`` says what is wrong (the str is ``"arg: message"``)."""

    def __init__(self, arg: str, message: str):
        self.arg, self.flag, self.message = arg, _FLAGS.get(arg, f"--{arg}"), message
        super().__init__(f"{arg}: {message}")


def _num_label(v: float) -> str:
    """Shortest text that reads back as ``v`` (0.25, 1, 1e-05)."""
    short = f"{v:g}"
    return short if float(short) == v else repr(float(v))


# ---------------------------------------------------------------------------------------
# The spec
# ---------------------------------------------------------------------------------------
@dataclass(frozen=True)
class InitSpec:
    """An init scheme and its gain: parsed from ``"scheme[:value][@gain]"`` (``"he_normal"``,
    ``"normal:0.1"``, ``"glorot_uniform@4"``)."""

    scheme: str
    gain: float = 1.0

    @classmethod
    def parse(cls, text, default_gain: float = 1.0) -> "InitSpec":
        if isinstance(text, InitSpec):
            return text
        if not isinstance(text, str):
            raise SweepSpecError("init", f"expected a string such as 'he_normal' or 'normal:0.1@2', got {text!r}")
        scheme, at, gain_text = text.partition("@")
        gain = default_gain
        if at:
            try:
                gain = float(gain_text)
            except ValueError:
                raise SweepSpecError("init", f"{text!r}: the gain after '@' must be a number") from None
        if not math.isfinite(gain):
            raise SweepSpecError("init" if at else "gain", f"the gain must be finite, got {gain}")
        try:
            scheme = str(parse_init(scheme))
        except (ValueError, TypeError) as e:
            raise SweepSpecError("init", str(e).removeprefix("init: ")) from None
        return cls(scheme, float(gain))

    @property
    def label(self) -> str:
        return self.scheme if self.gain == 1.0 else f"{self.scheme}@{_num_label(self.gain)}"

    def __str__(self) -> str:
        return self.label


def _hidden_label(hidden: Sequence[int]) -> str:
    return ",".join(map(str, hidden)) if hidden else "none"


def _parse_hidden(h) -> tuple[int, ...]:
    if isinstance(h, str):
        text = h.strip().lower()
        if text in ("", "none", "-"):
            return ()
        try:
            h = [int(p) for p in text.split(",")]
        except ValueError:
            raise SweepSpecError("hidden", f"expected comma-separated positive ints such as 5,3, got {text!r}") from None
    if isinstance(h, numbers.Integral) and not isinstance(h, bool):
        h = [h]
    try:
        widths = tuple(h)
    except TypeError:
        raise SweepSpecError("hidden", f"each architecture is a list of hidden widths such as [5, 3], got {h!r}") from None
    for w in widths:
        if isinstance(w, bool) or not isinstance(w, numbers.Integral) or w < 1:
            raise SweepSpecError("hidden", f"hidden widths must be ints >= 1, got {list(widths)}")
    return tuple(int(w) for w in widths)


def _grid(arg: str, values) -> list:
    if isinstance(values, (str, bytes, numbers.Number)):
        values = [values]
    try:
        values = list(values)
    except TypeError:
        raise SweepSpecError(arg, f"expected a list of values, got {values!r}") from None
    if not values:
        raise SweepSpecError(arg, "the grid is empty: give at least one value")
    return values


def _no_duplicates(arg: str, values: list, labels: list[str]) -> None:
    seen = set()
    for v, label in zip(values, labels):
        if v in seen:
            raise SweepSpecError(arg, f"{label} is given twice")
        seen.add(v)


def _seeds_tuple(seeds) -> tuple[int, ...]:
    if isinstance(seeds, bool):
        raise SweepSpecError("seeds", f"expected a count or a list of seeds, got {seeds!r}")
    if isinstance(seeds, numbers.Integral):
        if seeds < 1:
            raise SweepSpecError("seeds", f"need at least one seed per configuration, got {seeds}")
        return tuple(range(int(seeds)))
    values = _grid("seeds", seeds)
    for s in values:
        if isinstance(s, bool) or not isinstance(s, numbers.Integral) or not 0 <= s < 2**63:
            raise SweepSpecError("seeds", f"seeds must be ints in [0, 2**63), got {s!r}")
    _no_duplicates("seeds", values, [f"seed {s}" for s in values])
    return tuple(int(s) for s in values)


@dataclass(frozen=True)
class Config:
    """One point of the grid: trained on ``len(spec.seeds)`` seeds."""

    dataset: str
    hidden: tuple[int, ...]
    init: InitSpec
    lr: float

    @property
    def label(self) -> str:
        return f"{self.dataset} hidden {_hidden_label(self.hidden)} {self.init.label} lr {_num_label(self.lr)}"

    @property
    def filename(self) -> str:
        """``configs/<readable>-<hash>.pt``: readable, and unique even after sanitising."""
        key = json.dumps([self.dataset, list(self.hidden), self.init.scheme, self.init.gain, self.lr])
        digest = hashlib.sha1(key.encode()).hexdigest()[:8]
        readable = f"{self.dataset}_h{'-'.join(map(str, self.hidden)) or 'none'}_{self.init.label}_lr{_num_label(self.lr)}"
        return re.sub(r"[^A-Za-z0-9._@-]+", "_", readable)[:100] + f"-{digest}.pt"


@dataclass(frozen=True)
class SweepSpec:
    """What a sweep trains: the grid, the seeds, the epochs and the convergence threshold.

    Build it with :meth:`build` (which validates and canonicalises); its JSON form is the
    folder's ``sweep.json``.  The device and backend are not part of it: they change how
    fast, not what.
    """

    datasets: tuple[str, ...]
    hidden: tuple[tuple[int, ...], ...]
    inits: tuple[InitSpec, ...]
    lrs: tuple[float, ...]
    seeds: tuple[int, ...]
    epochs: int
    eps: float = 0.01
    dtype: str = "float32"

    @classmethod
    def build(cls, *, hidden=((5, 3),), lr=(0.25,), init=("glorot_uniform",), datasets=("five_points",),
              seeds=256, epochs: int = 2500, eps: float = 0.01, gain: float = 1.0,
              dtype="float32") -> "SweepSpec":
        """Validate a grid; raises :class:`SweepSpecError` naming the argument."""
        if isinstance(hidden, str):
            hidden = [hidden]  # one architecture: "5,3"
        elif isinstance(hidden, (list, tuple)) and hidden and all(isinstance(w, numbers.Integral) for w in hidden):
            # [5, 3]: one 5-3 architecture, or two one-layer ones?  Ask rather than guess.
            raise SweepSpecError("hidden", f"give a list of architectures: [{list(hidden)}] for one, "
                                           f"{[[w] for w in hidden]} for {len(hidden)} one-layer ones")
        archs = [_parse_hidden(h) for h in _grid("hidden", hidden)]
        _no_duplicates("hidden", archs, [f"architecture {_hidden_label(a)}" for a in archs])

        if isinstance(gain, bool) or not isinstance(gain, numbers.Real) or not math.isfinite(gain):
            raise SweepSpecError("gain", f"must be a finite number, got {gain!r}")
        inits = [InitSpec.parse(i, float(gain)) for i in _grid("init", init)]
        _no_duplicates("init", inits, [f"init {i.label}" for i in inits])

        lrs = []
        for v in _grid("lr", lr):
            if isinstance(v, bool) or not isinstance(v, numbers.Real) or not math.isfinite(v) or v < 0:
                raise SweepSpecError("lr", f"learning rates must be finite numbers >= 0, got {v!r}")
            lrs.append(float(v))
        _no_duplicates("lr", lrs, [f"lr {_num_label(v)}" for v in lrs])

        names = _grid("datasets", datasets)
        for d in names:
            if not isinstance(d, str) or not d:
                raise SweepSpecError("datasets", f"data sets are names such as 'five_points' or 'csv:PATH', got {d!r}")
        _no_duplicates("datasets", names, [f"data set {d}" for d in names])

        if isinstance(epochs, bool) or not isinstance(epochs, numbers.Integral) or epochs < 1:
            raise SweepSpecError("epochs", f"must be an int >= 1, got {epochs!r}")
        if isinstance(eps, bool) or not isinstance(eps, numbers.Real) or not math.isfinite(eps) or eps <= 0:
            raise SweepSpecError("eps", f"the convergence threshold must be a finite number > 0, got {eps!r}")
        if isinstance(dtype, torch.dtype):
            dtype = str(dtype).removeprefix("torch.")
        if dtype not in ("float32", "float64"):
            raise SweepSpecError("dtype", f"must be float32 or float64, got {dtype!r}")
        return cls(tuple(names), tuple(archs), tuple(inits), tuple(lrs), _seeds_tuple(seeds), int(epochs),
                   float(eps), dtype)

    @property
    def torch_dtype(self) -> torch.dtype:
        return getattr(torch, self.dtype)

    def configs(self) -> list[Config]:
        """Every configuration, in table order: dataset, architecture, init, lr."""
        return [Config(d, h, i, lr) for d in self.datasets for h in self.hidden for i in self.inits for lr in self.lrs]

    @property
    def networks(self) -> int:
        return len(self.configs()) * len(self.seeds)

    def to_json(self) -> dict:
        S = self.seeds
        contiguous = S == tuple(range(S[0], S[0] + len(S)))
        return {
            "fastmlp_sweep": _SPEC_VERSION,
            "datasets": list(self.datasets),
            "hidden": [list(h) for h in self.hidden],
            "init": [i.label for i in self.inits],
            "lr": list(self.lrs),
            "seeds": f"{S[0]}:{S[0] + len(S)}" if contiguous else list(S),
            "epochs": self.epochs,
            "eps": self.eps,
            "dtype": self.dtype,
        }


# ---------------------------------------------------------------------------------------
# Plan: the populations
# ---------------------------------------------------------------------------------------
@dataclass
class Batch:
    """One population: configurations of one dataset and one depth, padded to ``widths``."""

    dataset: str
    widths: tuple[int, ...]
    configs: list[Config]

    @property
    def depth(self) -> int:
        return len(self.widths)


def plan(spec: SweepSpec, history_bytes: int = _HISTORY_BYTES) -> list[Batch]:
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
                batches.append(Batch(d, widths, configs[k:k + per_batch]))
    return batches


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


# ---------------------------------------------------------------------------------------
# The run folder
# ---------------------------------------------------------------------------------------
def _canonical(obj) -> str:
    return json.dumps(obj, sort_keys=True, indent=1) + "\n"


def _data_digest(x: torch.Tensor, y: torch.Tensor) -> str:
    h = hashlib.sha256()
    for t in (x, y):
        t = t.detach().to("cpu", torch.float64).contiguous()
        h.update(str(tuple(t.shape)).encode())
        h.update(t.numpy().tobytes())
    return h.hexdigest()[:16]


def _claim_folder(out: Path, spec_json: dict) -> bool:
    """Write ``sweep.json`` into ``out``, or check the one there; True when resuming."""
    path = out / SPEC_FILE
    if path.exists():
        try:
            found = json.loads(path.read_text())
        except (OSError, ValueError) as e:
            raise SweepSpecError("out", f"{path} is not a readable sweep spec ({e}); use another folder") from None
        if found != spec_json:
            keys = sorted(k for k in set(found) | set(spec_json) if found.get(k) != spec_json.get(k))
            diff = "; ".join(f"{k}: folder has {json.dumps(found.get(k))}, this sweep {json.dumps(spec_json.get(k))}"
                             for k in keys)
            raise SweepSpecError("out", f"{out} holds a different sweep ({diff}); refusing to mix them: "
                                        "use another folder, or repeat the folder's sweep to resume it")
        return True
    if out.exists() and any(out.iterdir()):
        raise SweepSpecError("out", f"{out} is not empty and holds no {SPEC_FILE}; refusing to write a sweep "
                                    "into it: use a new or empty folder")
    out.mkdir(parents=True, exist_ok=True)
    atomic_write(path, lambda p: Path(p).write_text(_canonical(spec_json)))
    return False


@dataclass
class SweepResult:
    """What :func:`sweep` returns: the table and where everything was written."""

    out: Path
    spec: SweepSpec
    rows: list[dict]
    records: list[dict] = field(repr=False)
    trained: int  # configurations trained by this call
    skipped: int  # configurations found finished in the folder
    wall_time_s: float
    train_time_s: float
    files: list[str]
    timings: dict = field(default_factory=dict)  # seconds per phase of this call

    def table(self) -> str:
        return stats.format_table(self.rows)


def _log_default(msg: str) -> None:
    print(msg, flush=True)


def _fmt_bytes(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if n < 1024 or unit == "TiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024


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


def _estimate(todo: list[Batch], spec: SweepSpec, data: dict, device, backend) -> str:
    """One line: the work, its memory, and (for a large sweep) a measured time estimate."""
    S, itemsize = len(spec.seeds), spec.torch_dtype.itemsize
    ne = sum(len(b.configs) for b in todo) * S * spec.epochs
    peak, est_s, rates = 0, 0.0, {}
    large = ne >= _ESTIMATE_ABOVE
    for b in todo:
        x, y = data[b.dataset]
        sizes = [x.shape[1], *b.widths, y.shape[1]]
        G = len(b.configs) * S
        peak = max(peak, Architecture(sizes).train_bytes(G, x.shape[0], spec.epochs, itemsize))
        if large:
            key = (b.dataset, tuple(sizes))
            if key not in rates:
                rates[key] = _probe_seconds(x, y, sizes, min(G, _PROBE_NETWORKS), spec.torch_dtype, device, backend)
            est_s += rates[key] * G * spec.epochs
    when = f"about {_fmt_s(est_s)} of training on {device} (probed)" if large else "a small sweep"
    return f"estimate: {ne:.3g} network-epochs, {when}; peak memory about {_fmt_bytes(peak)} (the largest population)"


def _run_batch(batch: Batch, spec: SweepSpec, x, y, out: Path, device, backend, progress, save_losses,
               write: bool = True) -> float:
    dtype = spec.torch_dtype
    n_in, n_out = x.shape[1], y.shape[1]
    S = len(spec.seeds)
    pop, lr = padded_population(n_in, n_out, batch.widths, batch.configs, spec.seeds, dtype, device)
    result = train(x, y, pop, spec.epochs, lr, backend=backend, progress=progress)
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
        if write:
            atomic_write(out / "configs" / cfg.filename, lambda p, r=record: torch.save(r, p))
    return result.wall_time_s


def _row(record: dict) -> dict:
    c = record["config"]
    return {"dataset": c["dataset"], "hidden": _hidden_label(c["hidden"]), "init": c["init"], "lr": c["lr"],
            "sizes": "-".join(map(str, c["sizes"])), **record["stats"],
            "backend": record["population"]["backend"], "population_networks": record["population"]["networks"],
            "population_wall_time_s": record["population"]["wall_time_s"]}


# ---------------------------------------------------------------------------------------
# Plots
# ---------------------------------------------------------------------------------------
def _plot_jobs(spec: SweepSpec, records: dict, data: dict) -> list[tuple[str, bool, Callable]]:
    """The figures of a sweep as ``(file name without suffix, pure, build)``: ``build()``
    returns the Figure; ``pure`` jobs only draw numbers already computed (no training-engine
    work), so a forked worker may draw them."""
    from . import plot

    jobs = []
    q = stats.CURVE_QUANTILES
    lo, med, hi = q.index(0.05), q.index(0.5), q.index(0.95)
    # One row per architecture, one column per init; a single init: architectures side by side.
    ncols = len(spec.inits) if len(spec.inits) > 1 else min(4, len(spec.hidden))
    heat_cols = min(3, len(spec.hidden))
    # A title longer than a narrow figure would be clipped: the details go on a second line.
    sep = ": " if ncols >= 3 else "\n"
    S = len(spec.seeds)
    for d in spec.datasets:
        sfx = "" if len(spec.datasets) == 1 else "_" + re.sub(r"[^A-Za-z0-9._-]+", "_", d)
        where = f"{d}, {S} seeds per configuration, {spec.epochs} epochs"

        def rec(h, i, lr, d=d):
            return records[Config(d, h, i, lr)]

        bands = {f"{_hidden_label(h)} | {i.label}": [(f"lr {_num_label(lr)}", rec(h, i, lr)["loss_quantiles"][[lo, med, hi]])
                                                  for lr in spec.lrs]
                 for h in spec.hidden for i in spec.inits}
        jobs.append((f"loss_curves{sfx}", True, lambda bands=bands, where=where: plot.loss_bands(
            bands, ncols=ncols, title=f"Loss per configuration (hidden | init){sep}{where}")))

        ecdf = {f"{_hidden_label(h)} | {i.label}": [(f"lr {_num_label(lr)}", rec(h, i, lr)["epochs_to_eps"])
                                                 for lr in spec.lrs]
                for h in spec.hidden for i in spec.inits}
        jobs.append((f"epochs_to_eps{sfx}", True, lambda ecdf=ecdf, where=where: plot.epochs_ecdf(
            ecdf, spec.epochs, eps=spec.eps, ncols=ncols,
            title=f"Epochs to reach loss < {spec.eps:g} (hidden | init){sep}{where}")))

        heat = {f"hidden {_hidden_label(h)}": torch.tensor([[rec(h, i, lr)["stats"]["converged_fraction"]
                                                             for lr in spec.lrs] for i in spec.inits])
                for h in spec.hidden}
        jobs.append((f"converged{sfx}", True, lambda heat=heat, where=where: plot.converged_heatmaps(
            heat, [i.label for i in spec.inits], [_num_label(v) for v in spec.lrs], ncols=heat_cols,
            value_name=f"converged (final loss < {spec.eps:g})",
            title=f"Converged fraction{': ' if heat_cols >= 3 else chr(10)}{where}")))

        x, y = data[d]
        if x.shape[1] == 2:
            init = spec.inits[0]
            lr = min(spec.lrs, key=lambda v: (abs(math.log(v / _LAB_LR)) if v > 0 else math.inf, v))
            rows = []
            for h in spec.hidden:
                r = rec(h, init, lr)
                idx = pick_boundary_networks(r["final_loss"], min(_GALLERY, S))
                pop = Population._from_parameters([network_minor(w[idx].shape, w.dtype, "cpu").copy_(w[idx])
                                                   for w in r["weights"]],
                                                  [network_minor(b[idx].shape, b.dtype, "cpu").copy_(b[idx])
                                                   for b in r["biases"]],
                                                  r["seeds"][idx], None, None)
                titles = [f"seed {int(r['seeds'][i])}, loss {float(r['final_loss'][i]):.1e}" for i in idx]
                rows.append((f"hidden {_hidden_label(h)}", pop.predict, titles))
            title = (f"Decision boundaries, best to worst final loss: {d}, {init.label}, lr {_num_label(lr)}, "
                     f"{spec.epochs} epochs")
            jobs.append((f"boundaries{sfx}", False, lambda x=x, y=y, rows=rows, title=title: plot.boundary_gallery(
                x, y, rows, title=title)))
    return jobs


def _check_formats(formats) -> list[str]:
    from matplotlib.backend_bases import FigureCanvasBase

    formats = [formats] if isinstance(formats, str) else list(formats)
    formats = [str(f).lstrip(".").lower() for f in formats]
    supported = FigureCanvasBase.get_supported_filetypes()
    bad = [f for f in formats if f not in supported]
    if not formats or bad:
        what = f"unsupported figure formats {bad}" if bad else "no figure format given"
        raise SweepSpecError("formats", f"{what}; supported: {', '.join(sorted(supported))}")
    return formats


def _draw(jobs, out: Path, formats: list[str]) -> None:
    for name, _pure, build in jobs:
        fig = build()
        for k, fmt in enumerate(formats):
            # _DPI, not plot.save's 150: the 12-panel figures of a sweep stay readable, under
            # 300 KB, and 35% faster to draw.
            fig.savefig(out / f"{name}.{fmt}", format=fmt, dpi=_DPI)
            if k == 0:
                # Lay the figure out once: the constrained layout is most of the drawing
                # time, and it comes out the same for every format.
                fig.set_layout_engine("none")


def _draw_in_child(jobs, out: Path, formats: list[str]) -> None:
    """Body of the forked plotting worker: draw, exit 0; any error: traceback, exit 1."""
    import os
    import traceback

    code = 0
    try:
        torch.set_num_threads(1)  # never enter the parent's OpenMP pool from a forked child
        _draw(jobs, out, formats)
    except BaseException:
        traceback.print_exc()
        code = 1
    finally:
        sys.stderr.flush()
        os._exit(code)  # no atexit handlers or finalizers of the parent's objects


def _plots(spec: SweepSpec, records: dict, data: dict, out: Path, formats) -> list[str]:
    """Draw every figure of the sweep into ``out``; returns the file names.

    Matplotlib draws on one core, and the figures are most of what a sweep adds to its
    training, so where ``fork`` exists the pure figures (loss curves, ECDF) are drawn by a
    forked worker while this process draws the others: the Bar sweep's eight files in 3.9 s
    instead of 7.0 s on the idle 2-core dev box (no gain while another job holds a core).
    The worker touches no engine and runs torch with one thread.
    """
    import multiprocessing
    import os
    import warnings

    formats = list(formats)
    jobs = _plot_jobs(spec, records, data)
    files = [f"{name}.{fmt}" for name, _, _ in jobs for fmt in formats]
    pure = [j for j in jobs if j[1] and j[0].startswith(("loss_curves", "epochs_to_eps"))]
    rest = [j for j in jobs if j not in pure]
    if not (_PLOT_WORKER and pure and rest and (os.cpu_count() or 1) > 1
            and "fork" in multiprocessing.get_all_start_methods()):
        _draw(jobs, out, formats)
        return files
    with warnings.catch_warnings():
        # Python >= 3.12 warns about fork() in a process with threads (torch's idle pool):
        # the child never uses them (see _draw_in_child).
        warnings.simplefilter("ignore", DeprecationWarning)
        worker = multiprocessing.get_context("fork").Process(target=_draw_in_child, args=(pure, out, formats),
                                                             daemon=True)
        worker.start()
    try:
        _draw(rest, out, formats)
    finally:
        worker.join()
    if worker.exitcode != 0:
        raise RuntimeError(f"the plotting worker failed (exit code {worker.exitcode}; its traceback is above)")
    return files


# ---------------------------------------------------------------------------------------
# The entry point
# ---------------------------------------------------------------------------------------
def sweep(out, *, hidden=((5, 3),), lr=(0.25,), init=("glorot_uniform",), datasets=("five_points",),
          seeds=256, epochs: int = 2500, eps: float = 0.01, gain: float = 1.0, dtype="float32",
          device=None, backend: str = "auto", progress: bool | None = None, plots: bool = True,
          formats: Sequence[str] = ("png", "pdf"), save_losses: bool = False,
          log: Callable[[str], None] | None = _log_default, command: str | None = None) -> SweepResult:
    """Train every configuration of a grid on the same seeds; write statistics and plots.

    Args:
        out: the sweep folder (created; resumed when it holds this sweep's ``sweep.json``).
        hidden: architectures, each a list of hidden widths (``[[5, 3], [8], [4, 4, 4]]``)
            or a string ``"5,3"``.
        lr: learning rates.
        init: init schemes, ``"scheme[:value][@gain]"`` (``"he_normal"``, ``"normal:0.1"``,
            ``"glorot_uniform@4"``); ``gain`` is the gain of those without ``@``.
        datasets: names for :func:`fastmlp.datasets.get` (``"five_points"``, ``"csv:PATH"``).
        seeds: a count S (seeds 0..S-1) or a list; every configuration trains these seeds.
        epochs, eps: training length, and the loss below which a network has converged.
        dtype: "float32" or "float64".  device: default cuda when available, else cpu.
        backend: passed to :func:`fastmlp.train` unchanged.
        progress: progress bars (default: when stderr is a terminal).
        plots, formats: draw the figures, in these formats.
        save_losses: also keep every network's loss history in the configuration files.
        log: where the plan, the estimates and the table are printed (None: silent).
        command: the command line, recorded in summary.md.

    Raises :class:`SweepSpecError` (a ValueError naming the argument) for a bad grid or a
    folder that holds another sweep, before any training starts.
    """
    from . import datasets as ds
    from . import distributed

    t_start = time.perf_counter()
    # Under torch.distributed every rank runs this function: `train` shards each population
    # over the ranks and gathers it back, rank 0 writes every file and prints.
    main_rank = distributed.is_main()
    log = log if (log and main_rank) else (lambda msg: None)
    if not main_rank:
        progress = False
    spec = SweepSpec.build(hidden=hidden, lr=lr, init=init, datasets=datasets, seeds=seeds, epochs=epochs,
                           eps=eps, gain=gain, dtype=dtype)
    try:
        device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
        torch.empty(0, device=device)
    except (RuntimeError, AssertionError) as e:  # unknown device, or CUDA not available
        raise SweepSpecError("device", str(e)) from None
    try:
        select_backend(backend, device)  # a backend that cannot run is refused before any work
    except ValueError as e:
        raise SweepSpecError("backend", str(e)) from None
    data = {}
    for d in spec.datasets:
        try:
            x, y = ds.get(d)
        except (ValueError, TypeError, OSError) as e:
            raise SweepSpecError("datasets", str(e)) from None
        data[d] = (x.to(device, spec.torch_dtype), y.to(device, spec.torch_dtype))
    spec_json = {**spec.to_json(), "data_sha256": {d: _data_digest(*data[d]) for d in spec.datasets}}
    if plots:
        formats = _check_formats(formats)
    out = Path(out)
    if main_rank:
        resuming = _claim_folder(out, spec_json)
    distributed.barrier()
    if not main_rank:  # rank 0 has written or checked the spec: read it, as a resume would
        resuming = _claim_folder(out, spec_json)

    batches = plan(spec)
    done = lambda b: all((out / "configs" / c.filename).exists() for c in b.configs)  # noqa: E731
    todo = [b for b in batches if not done(b)]
    n_skipped = sum(len(b.configs) for b in batches if done(b))
    S = len(spec.seeds)
    log(f"sweep: {len(spec.configs())} configurations ({len(spec.datasets)} data sets x {len(spec.hidden)} "
        f"architectures x {len(spec.inits)} inits x {len(spec.lrs)} lrs) x {S} seeds = {spec.networks} networks, "
        f"{spec.epochs} epochs, in {len(batches)} populations -> {out}")
    if resuming:
        log(f"resuming: {n_skipped} configurations already in {out}, {len(todo)} populations to train")

    timings = {}
    t = time.perf_counter()
    if todo:
        log(_estimate(todo, spec, data, device, backend))
    timings["estimate"] = time.perf_counter() - t

    train_s = 0.0
    t = time.perf_counter()
    for k, b in enumerate(todo, 1):
        x, y = data[b.dataset]
        G = len(b.configs) * S
        archs = sorted({c.hidden for c in b.configs}, key=spec.hidden.index)
        log(f"[{k}/{len(todo)}] {b.dataset}, hidden {' '.join(_hidden_label(h) for h in archs)} "
            f"(padded to {_hidden_label(b.widths)}): {len(b.configs)} configurations, {G} networks")
        wall = _run_batch(b, spec, x, y, out, device, backend, progress, save_losses, write=main_rank)
        train_s += wall
        log(f"      trained in {wall:.2f} s ({G * spec.epochs / wall:.3g} network-epochs/s)")
    timings["training"] = train_s
    timings["populations: build, statistics, files"] = time.perf_counter() - t - train_s
    distributed.barrier()  # every configuration file is on disk before anyone reads them

    t = time.perf_counter()
    records, rows = {}, []
    for cfg in spec.configs():
        path = out / "configs" / cfg.filename
        try:
            records[cfg] = torch.load(path, weights_only=False)
        except Exception as e:  # a file damaged outside the sweep: say which, and what to do
            raise RuntimeError(f"cannot read {path} ({e}); delete it and rerun the sweep to retrain it") from None
        rows.append(_row(records[cfg]))

    log(stats.format_table(rows))
    files = [SPEC_FILE, "results.csv", "summary.md"]
    if not main_rank:
        return SweepResult(out=out, spec=spec, rows=rows, records=[records[c] for c in spec.configs()],
                           trained=sum(len(b.configs) for b in todo), skipped=n_skipped,
                           wall_time_s=time.perf_counter() - t_start, train_time_s=train_s, files=files,
                           timings=timings)
    atomic_write(out / "results.csv", lambda p: stats.write_csv(rows, p))
    timings["table"] = time.perf_counter() - t
    t = time.perf_counter()
    if plots:
        files += _plots(spec, records, {d: (x.cpu(), y.cpu()) for d, (x, y) in data.items()}, out, formats)
    timings["plots"] = time.perf_counter() - t
    wall = time.perf_counter() - t_start
    result = SweepResult(out=out, spec=spec, rows=rows, records=[records[c] for c in spec.configs()],
                         trained=sum(len(b.configs) for b in todo), skipped=n_skipped, wall_time_s=wall,
                         train_time_s=train_s, files=files, timings=timings)
    atomic_write(out / "summary.md", lambda p: Path(p).write_text(_summary_md(result, spec_json, device, command)))
    log(f"sweep done in {wall:.1f} s ({result.trained} configurations trained, {result.skipped} found done; "
        + ", ".join(f"{k} {v:.1f} s" for k, v in timings.items()) + f"); wrote {out}/: {', '.join(files)}")
    return result


def _summary_md(result: SweepResult, spec_json: dict, device, command: str | None) -> str:
    env = environment(device)
    lines = [f"# Sweep {result.out.name}", ""]
    if command:
        lines += ["```", command, "```", ""]
    lines += [f"{len(result.rows)} configurations x {len(result.spec.seeds)} seeds, {result.spec.epochs} epochs; "
              f"converged means final loss < {result.spec.eps:g}; accuracy thresholds outputs and labels at 0.5; "
              "epochs to eps counts updates until the loss first drops below eps (median and quartiles over the "
              "networks that got there; `never` counts the others).", "",
              stats.markdown_table(result.rows), "",
              f"This call: {result.trained} configurations trained ({result.train_time_s:.1f} s of training), "
              f"{result.skipped} found done, {result.wall_time_s:.1f} s in all ("
              + ", ".join(f"{k} {v:.1f} s" for k, v in result.timings.items()) + ").", ""]
    pngs = [f for f in result.files if f.endswith(".png")]
    if pngs:
        lines += ["## Figures", ""] + [f"![{f}]({f})" for f in pngs] + [""]
    lines += ["## Spec (sweep.json)", "", "```json", _canonical(spec_json).rstrip(), "```", "",
              "## Environment", "", "```json", json.dumps(env, indent=1), "```", ""]
    return "\n".join(lines)
