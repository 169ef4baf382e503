"""The population file: what :meth:`Population.save` writes and :meth:`Population.load` reads.

One file holds one population, as ``torch.save`` of a dict of plain values:

============  ==================================================================================
key           value
============  ==================================================================================
format        ``"fastmlp.population"``: the marker that says what the file is
version       ``1``, the layout of this dict (:data:`VERSION`); a reader refuses a newer one
fastmlp       the version of fastmlp that wrote it (for people; never checked)
sizes         ``[n_in, h_1, ..., n_out]``, ints
activations   the activation of every layer, ``["tanh", ..., "sigmoid"]``
dtype         ``"float32"`` or ``"float64"`` (``"float16"``, ``"bfloat16"``): every tensor's
seeds         int64 ``[G]``, distinct and >= 0: network ``g`` was drawn from seed ``seeds[g]``
init, gain    the init scheme's canonical string (``parse_init`` reads it back exactly) and the
              gain; both ``None`` for networks of unknown origin (``from_networks``, ``from_modules``)
weights       one tensor per layer, ``[G, n_in, n_out]``, stored network-minor
biases        one tensor per layer, ``[G, n_out]``, stored network-minor
============  ==================================================================================

Why ``torch.save`` and ``torch.load(weights_only=True)``, not safetensors: fastmlp already
depends on torch and on nothing that reads safetensors, and torch's restricted unpickler is
enough for a file of tensors, strings, numbers and lists: with ``weights_only=True`` it
rebuilds only those (and torch's own tensor types), and refuses any other Python object
instead of calling its code.  Loading a population file therefore never runs code from the
file.  The tensors keep their strides through ``torch.save``, so a population comes back in
the network-minor layout it was saved in and trains bit for bit as the original would.

Everything read is checked (marker, version, keys, sizes, every shape against the sizes and
G, one dtype, the seeds) and every problem is a :class:`PopulationFileError` naming the file.
Parameters may be non-finite: a diverged network is kept as it was.

Saving is all or nothing (:func:`fastmlp.files.atomic_write`): a reader sees the old file or the new one.
This module does not import :mod:`fastmlp.population` (which imports it): it writes any
object with a population's attributes and reads a file into :class:`Contents`.
"""
from __future__ import annotations

import errno
import math
import os
import pickle
import re
import warnings
from dataclasses import dataclass
from pathlib import Path

import torch

from ._version import __version__
from .architecture import Architecture
from .files import atomic_write
from .initializers import InitScheme, parse_init
from .layout import is_network_minor, network_minor
from .validate import ArgumentError, ArgumentTypeError

__all__ = ["PopulationFileError", "Contents", "write", "read", "FORMAT", "VERSION", "DTYPES"]

FORMAT = "fastmlp.population"
VERSION = 1
KEYS = ("format", "version", "sizes", "activations", "dtype", "seeds", "init", "gain", "weights", "biases")
DTYPES = {"float32": torch.float32, "float64": torch.float64, "float16": torch.float16, "bfloat16": torch.bfloat16}


class PopulationFileError(ValueError):
    """A file that is not a population file this fastmlp can read; ``str(err)`` is
    ``"PATH: what is wrong"``, ``err.path`` and ``err.problem`` the two parts."""

    def __init__(self, path, problem: str):
        self.path, self.problem = str(path), problem
        super().__init__(f"{path}: {problem}")


@dataclass
class Contents:
    """What a population file holds, checked: CPU tensors, network-minor, own storage."""

    sizes: list[int]
    weights: list[torch.Tensor]
    biases: list[torch.Tensor]
    seeds: torch.Tensor
    init: InitScheme | None
    gain: float | None


def _init_text(scheme: InitScheme) -> str:
    # str(scheme) prints the std / bound with 6 digits; repr keeps every bit of the float.
    return scheme.name if scheme.param is None else f"{scheme.name}:{scheme.param!r}"


def _check_path(path) -> str:
    if not isinstance(path, (str, os.PathLike)) or isinstance(os.fspath(path), bytes):
        raise ArgumentTypeError("path", f"path must be a str or os.PathLike, got {type(path).__name__}")
    text = os.fspath(path)
    if not text:
        raise ArgumentError("path", "path is empty; name a file such as population.pt")
    return text


def _compact_cpu(t: torch.Tensor) -> torch.Tensor:
    """A network-minor CPU copy with a storage of its own (a view would save its whole base)."""
    out = network_minor(t.shape, t.dtype, "cpu")
    out.copy_(t.detach())
    return out


def write(pop, path) -> None:
    """Write population ``pop`` to ``path`` (all or nothing; parent folders are created)."""
    text = _check_path(path)
    if os.path.isdir(text):
        raise ArgumentError("path", f"{text} is a folder; name the file to write, "
                                    f"e.g. {os.path.join(text, 'population.pt')}")
    dtype_name = str(pop.dtype).replace("torch.", "")
    if dtype_name not in DTYPES:
        raise ArgumentError("population", f"a population file holds {', '.join(DTYPES)} parameters, not {dtype_name}")
    init = None if pop.init is None else _init_text(pop.init)
    if init is not None and parse_init(init) != pop.init:  # the string must say exactly what the scheme is
        raise ArgumentError("population", f"init scheme {pop.init!r} does not survive as text ({init!r})")
    state = {
        "format": FORMAT, "version": VERSION, "fastmlp": __version__,
        "sizes": [int(s) for s in pop.sizes], "activations": list(pop.arch.acts), "dtype": dtype_name,
        "seeds": pop.seeds.detach().to("cpu", torch.int64, copy=True).contiguous(),
        "init": init, "gain": None if pop.gain is None else float(pop.gain),
        "weights": [_compact_cpu(w) for w in pop.weights], "biases": [_compact_cpu(b) for b in pop.biases],
    }
    try:  # never write a file that read() would refuse
        _check(state, text)
    except PopulationFileError as e:
        raise ArgumentError("population", f"cannot save this population to {text}: {e.problem}") from None
    atomic_write(Path(text), lambda tmp: torch.save(state, tmp))


def read(path) -> Contents:
    """Read and check the population file at ``path``; nothing in it is ever executed."""
    text = _check_path(path)
    if not os.path.exists(text):
        raise FileNotFoundError(errno.ENOENT, "no such population file", text)
    if os.path.isdir(text):
        inside = os.path.join(text, "population.pt")
        hint = f" (it holds {inside}: load that)" if os.path.isfile(inside) else ""
        raise IsADirectoryError(errno.EISDIR, f"is a folder, not a population file{hint}", text)
    if os.path.getsize(text) == 0:
        raise PopulationFileError(text, "is empty, not a population file (a write that never finished?)")
    try:
        with warnings.catch_warnings():  # torch's warnings about a foreign pickle: our error says it better
            warnings.simplefilter("ignore")
            state = torch.load(text, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:  # weights_only refused something: say what, not how to bypass it
        found = re.search(r"(?:Unsupported global: GLOBAL|unsupported GLOBAL) ([\w.]+)", str(e))
        if found:
            raise PopulationFileError(text, f"holds a pickled Python object ({found.group(1)}), not a population "
                                            "file; fastmlp reads only tensors, numbers and strings from a file and "
                                            "never runs code from one (write populations with Population.save)"
                                      ) from None
        detail = re.search(r"WeightsUnpickler error:\s*(\S.*)", str(e))
        raise PopulationFileError(text, f"is not a population file (torch.load(weights_only=True) refuses it: "
                                        f"{detail.group(1).strip() if detail else _first_line(e)})") from None
    except (OSError, MemoryError):
        raise
    except Exception as e:  # torch.load of a foreign file fails in many ways (KeyError, EOFError, RuntimeError, ...)
        raise PopulationFileError(text, f"is not a population file (torch.load cannot read it: "
                                        f"{_first_line(e)})") from None
    return _check(state, text)


def _first_line(e: BaseException) -> str:
    """``Type: the first line of the message`` (160 characters at most)."""
    line = (str(e).strip().splitlines() or [""])[0]
    line = line if len(line) <= 160 else line[:157] + "..."
    return f"{type(e).__name__}: {line}" if line else type(e).__name__


def _check(state, where: str) -> Contents:
    """Check a population file's dict; every problem is a PopulationFileError about ``where``."""
    def bad(problem: str):
        return PopulationFileError(where, problem)

    if not isinstance(state, dict) or "format" not in state:
        what = (f"a dict with keys {sorted(map(str, state))[:8]}" if isinstance(state, dict)
                else f"a {type(state).__name__}")
        raise bad(f"is not a population file: it holds {what}, without the format marker {FORMAT!r}")
    if not isinstance(state["format"], str) or state["format"] != FORMAT:
        raise bad(f"is not a population file: its format is {state['format']!r}, not {FORMAT!r}")
    version = state.get("version")
    if not isinstance(version, int) or isinstance(version, bool) or version < 1:
        raise bad(f"has an unknown format version {version!r}")
    if version > VERSION:
        raise bad(f"has format version {version}, written by a newer fastmlp ({state.get('fastmlp', '?')}); this "
                  f"fastmlp ({__version__}) reads up to version {VERSION}: upgrade fastmlp to read it")
    missing = [k for k in KEYS if k not in state]
    if missing:
        raise bad(f"is damaged: missing {', '.join(map(repr, missing))}")

    sizes = state["sizes"]
    if (not isinstance(sizes, list) or len(sizes) < 2
            or not all(isinstance(s, int) and not isinstance(s, bool) and s >= 1 for s in sizes)):
        raise bad(f"sizes must be a list of at least two ints >= 1, got {sizes!r}")
    arch = Architecture(sizes)
    if not isinstance(state["activations"], list) or state["activations"] != arch.acts:
        raise bad(f"its networks use the activations {state['activations']!r}; this fastmlp implements "
                  f"{arch.acts!r} for sizes {sizes}")
    dtype = DTYPES.get(state["dtype"]) if isinstance(state["dtype"], str) else None
    if dtype is None:
        raise bad(f"dtype must be one of {', '.join(DTYPES)}, got {state['dtype']!r}")

    seeds = state["seeds"]
    if not isinstance(seeds, torch.Tensor) or seeds.dtype != torch.int64 or seeds.dim() != 1 or len(seeds) == 0:
        got = (f"{str(seeds.dtype).replace('torch.', '')} {tuple(seeds.shape)}" if isinstance(seeds, torch.Tensor)
               else type(seeds).__name__)
        raise bad(f"seeds must be a 1-D int64 tensor of at least one seed, got {got}")
    G = len(seeds)
    if (seeds < 0).any():
        raise bad("seeds must be >= 0")
    if torch.unique(seeds).numel() != G:
        raise bad("seeds must be distinct")

    init, gain = state["init"], state["gain"]
    if (init is None) != (gain is None):
        raise bad(f"init and gain are both known or both None, got init={init!r}, gain={gain!r}")
    if init is not None:
        if not isinstance(init, str):
            raise bad(f"init must be a string such as 'glorot_uniform', got {type(init).__name__}")
        try:
            init = parse_init(init)
        except ArgumentError as e:
            raise bad(f"init: {e.message}") from None
        try:  # an int too large for a float overflows here
            finite = not isinstance(gain, bool) and isinstance(gain, (int, float)) and math.isfinite(gain)
        except OverflowError:
            finite = False
        if not finite:
            raise bad(f"gain must be a finite number, got {gain!r}"[:200])
        gain = float(gain)

    tensors, seen = {}, set()
    shapes = {"weights": [(G, a, b) for a, b in arch.layers], "biases": [(G, b) for _, b in arch.layers]}
    for name, expected in shapes.items():
        items = state[name]
        if not isinstance(items, list) or len(items) != len(expected):
            n = len(items) if isinstance(items, list) else type(items).__name__
            raise bad(f"{name} must be a list of {len(expected)} tensors (one per layer) for sizes {sizes}, got {n}")
        for l, (t, shape) in enumerate(zip(items, expected)):
            if not isinstance(t, torch.Tensor) or t.layout != torch.strided:
                raise bad(f"{name}[{l}] must be a dense tensor, got {type(t).__name__}")
            if tuple(t.shape) != shape:
                raise bad(f"{name}[{l}] has shape {tuple(t.shape)}, expected {shape} for sizes {sizes} and {G} seeds")
            if t.dtype != dtype:
                found = str(t.dtype).replace("torch.", "")
                raise bad(f"{name}[{l}] is {found}, but the file's dtype is {state['dtype']}")
        tensors[name] = [_owned(t, seen) for t in items]
    return Contents(sizes, tensors["weights"], tensors["biases"], _owned(seeds, seen), init, gain)


def _owned(t: torch.Tensor, seen: set) -> torch.Tensor:
    """``t`` when it is a plain network-minor tensor alone on a storage of its size (what
    :func:`write` stores), else such a copy: a loaded population owns its memory."""
    storage = t.untyped_storage()
    plain = (type(t) is torch.Tensor and not t.requires_grad and is_network_minor(t) and t.storage_offset() == 0
             and storage.nbytes() == t.numel() * t.element_size() and storage.data_ptr() not in seen)
    if not plain:
        t = _compact_cpu(t) if t.dim() > 1 else t.detach().clone(memory_format=torch.contiguous_format)
        storage = t.untyped_storage()
    seen.add(storage.data_ptr())
    return t


