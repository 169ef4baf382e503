"""Stage 1, the spec: what a sweep trains, parsed and validated before anything is touched.

:data:`DEFAULTS` is the one statement of the spec's defaults (``SweepSpec.build``,
:func:`fastmlp.sweep.sweep` and the ``fastmlp sweep`` flags read it); :data:`OPTION_DEFAULTS`
holds those of the sweep's other arguments (how it runs and what it draws, not what it
trains).  Every check raises :class:`SweepSpecError` naming the argument.
"""
from __future__ import annotations

import hashlib
import json
import math
import numbers
import re
from dataclasses import dataclass
from types import MappingProxyType
from typing import Mapping, Sequence

import torch

from ..datasets import get as get_dataset
from ..initializers import parse_init
from ..validate import (ArgumentError, check_device, check_gain, check_hidden, check_int, check_real, check_seeds,
                        flag_of)

__all__ = ["DEFAULTS", "OPTION_DEFAULTS", "GRID_KEYS", "SweepSpecError", "InitSpec", "Config", "SweepSpec",
           "device_of", "load_data", "data_digest", "seeds_text", "seeds_of_text"]

# The spec's defaults, keyed by the argument of sweep() / SweepSpec.build, in argument form.
DEFAULTS: Mapping[str, object] = MappingProxyType({
    "hidden": ((5, 3),),  # architectures: one 2-5-3-1 network on the lab's data
    "lr": (0.25,),
    "init": ("glorot_uniform",),
    "datasets": ("five_points",),
    "seeds": 256,  # a count: seeds 0..255
    "epochs": 2500,
    "eps": 0.01,
    "gain": 1.0,
    "dtype": "float32",
})
# The defaults of sweep()'s other arguments: they change how fast and what is drawn, not what.
OPTION_DEFAULTS: Mapping[str, object] = MappingProxyType({
    "device": None,  # cuda when available, else cpu
    "backend": "auto",
    "progress": None,  # progress bars when stderr is a terminal
    "plots": True,
    "formats": ("png", "pdf"),
    "save_losses": False,
    "max_bytes": None,  # memory a population may plan to use; default: fastmlp.memory.budget's share of free memory
})
# The keys of sweep.json that list values of the grid: a sweep may extend a folder by adding
# values to them, or reorder them; every other key must match the folder's.
GRID_KEYS = ("datasets", "hidden", "init", "lr", "seeds")

_SPEC_VERSION = 1


class SweepSpecError(ArgumentError):
    """A bad sweep spec; ``arg`` names the argument of :func:`~fastmlp.sweep.sweep`, ``flag``
    the CLI flag, ``message`` says what is wrong (the str is ``"arg: message"``)."""

    def __init__(self, arg: str, message: str):
        super().__init__(arg, message)
        self.flag = flag_of(arg)
        self.args = (f"{arg}: {message}",)

    def __reduce__(self):
        return type(self), (self.arg, self.message)

    @classmethod
    def of(cls, err: ArgumentError, arg: str | None = None) -> "SweepSpecError":
        """The sweep's error for an :class:`ArgumentError` of a lower layer."""
        return cls(arg or err.arg, err.message)


def num_label(v: float) -> str:
    """Shortest text that reads back as ``v`` (0.25, 1, 1e-05)."""
    short = f"{v:g}"
    return short if float(short) == v else repr(float(v))


def hidden_label(hidden: Sequence[int]) -> str:
    """``"5,3"``; ``"none"`` for no hidden layer."""
    return ",".join(map(str, hidden)) if hidden else "none"


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
            raise SweepSpecError.of(e, "init") from None
        return cls(scheme, float(gain))

    @property
    def label(self) -> str:
        return self.scheme if self.gain == 1.0 else f"{self.scheme}@{num_label(self.gain)}"

    def __str__(self) -> str:
        return self.label


def _checked(check, *args, **kwargs):
    """``check(*args)`` of :mod:`fastmlp.validate`, its error as the sweep's."""
    try:
        return check(*args, **kwargs)
    except ArgumentError as e:
        raise SweepSpecError.of(e) from None


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
    if not isinstance(seeds, (numbers.Integral, torch.Tensor)):
        _no_duplicates("seeds", _grid("seeds", seeds), [f"seed {s!r}" for s in _grid("seeds", seeds)])
    return tuple(_checked(check_seeds, seeds).tolist())


@dataclass(frozen=True)
class Config:
    """One point of the grid: trained on ``len(spec.seeds)`` seeds."""

    dataset: str
    hidden: tuple[int, ...]
    init: InitSpec
    lr: float

    @property
    def label(self) -> str:
        return f"{self.dataset} hidden {hidden_label(self.hidden)} {self.init.label} lr {num_label(self.lr)}"

    def key(self) -> dict:
        """The canonical description of the configuration: what its record names, and what
        its file name's digest is taken of."""
        return {"dataset": self.dataset, "hidden": list(self.hidden), "init": self.init.scheme,
                "gain": self.init.gain, "lr": self.lr}

    @property
    def filename(self) -> str:
        """``configs/<readable>-<hash>.pt``: readable, and unique even after sanitising."""
        digest = hashlib.sha1(json.dumps(list(self.key().values())).encode()).hexdigest()[:8]
        readable = f"{self.dataset}_h{'-'.join(map(str, self.hidden)) or 'none'}_{self.init.label}_lr{num_label(self.lr)}"
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
    eps: float = DEFAULTS["eps"]
    dtype: str = DEFAULTS["dtype"]

    @classmethod
    def build(cls, *, hidden=DEFAULTS["hidden"], lr=DEFAULTS["lr"], init=DEFAULTS["init"],
              datasets=DEFAULTS["datasets"], seeds=DEFAULTS["seeds"], epochs: int = DEFAULTS["epochs"],
              eps: float = DEFAULTS["eps"], gain: float = DEFAULTS["gain"], dtype=DEFAULTS["dtype"]) -> "SweepSpec":
        """Validate a grid; raises :class:`SweepSpecError` naming the argument."""
        if isinstance(hidden, str):
            hidden = [hidden]  # one architecture: "5,3"
        elif isinstance(hidden, (list, tuple)) and hidden and all(isinstance(w, numbers.Integral) for w in hidden):
            # [5, 3]: one 5-3 architecture, or two one-layer ones?  Ask rather than guess.
            raise SweepSpecError("hidden", f"give a list of architectures: [{list(hidden)}] for one, "
                                           f"{[[w] for w in hidden]} for {len(hidden)} one-layer ones")
        archs = [_checked(check_hidden, h) for h in _grid("hidden", hidden)]
        _no_duplicates("hidden", archs, [f"architecture {hidden_label(a)}" for a in archs])

        gain = _checked(check_gain, gain)
        inits = [InitSpec.parse(i, gain) for i in _grid("init", init)]
        _no_duplicates("init", inits, [f"init {i.label}" for i in inits])

        lrs = [_checked(check_real, "lr", v, minimum=0) for v in _grid("lr", lr)]
        _no_duplicates("lr", lrs, [f"lr {num_label(v)}" for v in lrs])

        names = _grid("datasets", datasets)
        for d in names:
            if not isinstance(d, str) or not d:
                raise SweepSpecError("datasets", f"data sets are names such as 'five_points' or 'csv:PATH', got {d!r}")
        _no_duplicates("datasets", names, [f"data set {d}" for d in names])

        epochs = _checked(check_int, "epochs", epochs, 1)
        eps = _checked(check_real, "eps", eps, positive=True)
        if isinstance(dtype, torch.dtype):
            dtype = str(dtype).removeprefix("torch.")
        if dtype not in ("float32", "float64"):
            raise SweepSpecError("dtype", f"must be float32 or float64, got {dtype!r}")
        return cls(tuple(names), tuple(archs), tuple(inits), tuple(lrs), _seeds_tuple(seeds), epochs, eps, dtype)

    @property
    def torch_dtype(self) -> torch.dtype:
        return getattr(torch, self.dtype)

    def configs(self) -> list[Config]:
        """Every configuration, in table order: dataset, architecture, init, lr."""
        return [Config(d, h, i, lr) for d in self.datasets for h in self.hidden for i in self.inits for lr in self.lrs]

    @property
    def networks(self) -> int:
        return len(self.configs()) * len(self.seeds)

    def describe(self) -> str:
        """``12 configurations (1 data sets x 3 architectures x 2 inits x 2 lrs) x 64 seeds = ...``"""
        return (f"{len(self.configs())} configurations ({len(self.datasets)} data sets x {len(self.hidden)} "
                f"architectures x {len(self.inits)} inits x {len(self.lrs)} lrs) x {len(self.seeds)} seeds = "
                f"{self.networks} networks, {self.epochs} epochs")

    def to_json(self) -> dict:
        return {
            "fastmlp_sweep": _SPEC_VERSION,
            "datasets": list(self.datasets),
            "hidden": [list(h) for h in self.hidden],
            "init": [i.label for i in self.inits],
            "lr": list(self.lrs),
            "seeds": seeds_text(self.seeds),
            "epochs": self.epochs,
            "eps": self.eps,
            "dtype": self.dtype,
        }


def seeds_text(seeds: Sequence[int]):
    """Seeds as sweep.json writes them: ``"a:b"`` for the run a..b-1, else the list."""
    S = list(seeds)
    return f"{S[0]}:{S[0] + len(S)}" if S == list(range(S[0], S[0] + len(S))) else S


def seeds_of_text(text) -> list[int]:
    """The inverse of :func:`seeds_text`; ValueError for anything else."""
    if isinstance(text, str):
        a, _, b = text.partition(":")
        return list(range(int(a), int(b)))
    if isinstance(text, list) and all(isinstance(s, int) and not isinstance(s, bool) for s in text):
        return list(text)
    raise ValueError(f"seeds must be 'a:b' or a list of ints, got {text!r}")


def data_digest(x: torch.Tensor, y: torch.Tensor) -> str:
    """A digest of a data set's shapes and values (read as float64)."""
    h = hashlib.sha256()
    for t in (x, y):
        t = t.detach().to("cpu", torch.float64).contiguous()
        h.update(str(tuple(t.shape)).encode())
        h.update(t.numpy().tobytes())
    return h.hexdigest()[:16]


def device_of(device) -> torch.device:
    """The sweep's device: ``device``, by default cuda when available, else cpu."""
    try:
        return check_device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    except ArgumentError as e:
        raise SweepSpecError.of(e, "device") from None


def load_data(spec: SweepSpec, device: torch.device) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    """Every data set of the spec, ``name -> (x, y)`` in the spec's dtype on ``device``; a name
    that does not load is a bad ``datasets`` argument."""
    data = {}
    for d in spec.datasets:
        try:
            x, y = get_dataset(d)
        except (ValueError, TypeError, OSError) as e:
            raise SweepSpecError("datasets", str(e)) from None
        data[d] = (x.to(device, spec.torch_dtype), y.to(device, spec.torch_dtype))
    return data
