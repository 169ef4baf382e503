"""Argument checks for every public entry point, in one place.

Each check takes the value a user passed and returns it in canonical form (a tensor of the
right dtype and device, a list of ints, ...) or raises an :class:`ArgumentError` that
carries the argument's name as data (``err.arg``) beside the message.  Callers never read
the message to find out what was wrong: the command line maps ``err.arg`` to its flag
(``fastmlp.cli``), a sweep names it in its own error.

Everything is checked before any work starts: a check never allocates more than the
canonical copy of its argument.
"""
from __future__ import annotations

import math
import numbers
import os
import tempfile
import warnings
from collections.abc import Iterable
from pathlib import Path

import torch

from .layout import as_network_minor

__all__ = ["FLAGS", "ArgumentError", "ArgumentTypeError", "NotEnoughMemory", "check_int", "check_real", "check_choice",
           "check_sizes", "check_hidden", "check_seeds", "check_gain", "check_dtype", "check_device", "check_x", "check_y",
           "check_lr", "check_epochs", "check_network_index", "check_index", "OUTPUT_RANGES", "TargetRangeWarning",
           "check_targets", "check_out_dir"]


# The command-line flag of each argument name that errors carry (fastmlp.cli maps them).
FLAGS = {"sizes": "--hidden", "hidden": "--hidden", "seeds": "--seeds", "init": "--init", "gain": "--gain",
         "dtype": "--dtype", "device": "--device", "backend": "--backend", "epochs": "--epochs", "lr": "--lr",
         "x": "--dataset", "y": "--dataset", "datasets": "--dataset", "dataset": "--dataset", "name": "--dataset",
         "path": "--dataset", "eps": "--eps", "out": "--out", "formats": "--formats",
         "record_every": "--record-every"}


# The writability probe of check_out_dir: a folder of this prefix, created and removed at once
# (a sweep's emptiness check ignores one that a concurrent check has not removed yet).
PROBE_PREFIX = ".fastmlp-probe-"


def flag_of(arg: str | None) -> str:
    """The command-line flag for argument ``arg`` (``--arg`` when it has no entry in FLAGS)."""
    return FLAGS.get(arg, f"--{arg.replace('_', '-')}") if arg else "error"


class ArgumentError(ValueError):
    """A bad argument: ``arg`` names it (the parameter of the public function), ``message``
    says what is wrong; ``str(err)`` is the message."""

    def __init__(self, arg: str, message: str):
        self.arg, self.message = arg, message
        super().__init__(message)


class ArgumentTypeError(ArgumentError, TypeError):
    """An argument of the wrong type (a TypeError as well as an :class:`ArgumentError`)."""


class NotEnoughMemory(MemoryError):
    """The work cannot fit in the memory it may use; ``arg`` names the argument that sizes it."""

    def __init__(self, arg: str, message: str):
        self.arg, self.message = arg, message
        super().__init__(message)


def _is_int(v) -> bool:
    return isinstance(v, numbers.Integral) and not isinstance(v, bool)


def check_int(arg: str, v, minimum: int | None = None) -> int:
    if not _is_int(v):
        raise ArgumentTypeError(arg, f"{arg} must be an int, got {type(v).__name__}")
    if minimum is not None and v < minimum:
        raise ArgumentError(arg, f"{arg} must be >= {minimum}, got {v}")
    return int(v)


def check_real(arg: str, v, minimum: float | None = None, positive: bool = False) -> float:
    """A finite real number (not a bool), ``>= minimum`` / ``> 0`` when asked."""
    if isinstance(v, bool) or not isinstance(v, numbers.Real):
        raise ArgumentTypeError(arg, f"{arg} must be a finite number, got {type(v).__name__}")
    v = float(v)
    if not math.isfinite(v):
        raise ArgumentError(arg, f"{arg} must be a finite number, got {v}")
    if minimum is not None and v < minimum:
        raise ArgumentError(arg, f"{arg} must be a finite number >= {minimum:g}, got {v:g}")
    if positive and v <= 0:
        raise ArgumentError(arg, f"{arg} must be a finite number > 0, got {v:g}")
    return v


def check_choice(arg: str, v, choices) -> str:
    if not isinstance(v, str) or v not in choices:
        raise ArgumentError(arg, f"{arg} must be one of {', '.join(map(repr, choices))}, got {v!r}")
    return v


# -- a population -------------------------------------------------------------------------
def check_sizes(sizes) -> list[int]:
    """``[n_in, h_1, ..., n_out]``: at least two ints >= 1."""
    if isinstance(sizes, (str, bytes)) or not isinstance(sizes, Iterable):
        raise ArgumentTypeError("sizes", f"sizes must be a sequence of ints [n_in, h_1, ..., n_out], got {sizes!r}")
    sizes = list(sizes)
    if len(sizes) < 2:
        raise ArgumentError("sizes", f"sizes needs at least 2 entries [n_in, n_out], got {sizes}")
    for s in sizes:
        if not _is_int(s):
            raise ArgumentTypeError("sizes", f"sizes must hold ints, got {sizes}")
        if s < 1:
            raise ArgumentError("sizes", f"sizes: every width must be >= 1, got {sizes}")
    return [int(s) for s in sizes]


def check_hidden(hidden) -> tuple[int, ...]:
    """Hidden widths: ``"5,3"``, ``[5, 3]`` or one int; ``""``, ``"none"`` or ``[]`` for none."""
    h = hidden
    if isinstance(h, str):
        text = h.strip().lower()
        if text in ("", "none", "-"):
            return ()
        try:
            h = [int(p) for p in text.split(",")]
        except ValueError:
            raise ArgumentError("hidden", f"expected comma-separated positive ints such as 5,3, got {text!r}") from None
    if _is_int(h):
        h = [h]
    try:
        widths = tuple(h)
    except TypeError:
        raise ArgumentTypeError("hidden", f"each architecture is a list of hidden widths such as [5, 3], "
                                          f"got {hidden!r}") from None
    for w in widths:
        if not _is_int(w) or w < 1:
            raise ArgumentError("hidden", f"hidden widths must be ints >= 1, got {list(widths)}")
    return tuple(int(w) for w in widths)


def check_seeds(seeds) -> torch.Tensor:
    """A count G (seeds 0..G-1) or distinct ints in [0, 2**63) -> int64 [G] on the CPU."""
    if isinstance(seeds, bool):
        raise ArgumentTypeError("seeds", "seeds must be an int (number of networks) or an iterable of ints")
    if _is_int(seeds):
        if seeds < 1:
            raise ArgumentError("seeds", f"seeds: the number of networks must be >= 1, got {seeds}")
        return torch.arange(int(seeds), dtype=torch.int64)
    if isinstance(seeds, torch.Tensor):
        if seeds.dtype.is_floating_point or seeds.dtype == torch.bool or seeds.dim() != 1:
            raise ArgumentTypeError("seeds", f"seeds: a tensor of seeds must be 1-D integer, got {seeds.dtype} "
                                             f"{tuple(seeds.shape)}")
        values = seeds.to(torch.int64, copy=True).cpu()
    elif isinstance(seeds, Iterable) and not isinstance(seeds, (str, bytes)):
        items = list(seeds)
        for s in items:
            if not _is_int(s):
                raise ArgumentTypeError("seeds", f"seeds must be ints, got {s!r}")
            if not 0 <= s < 2**63:
                raise ArgumentError("seeds", f"seeds must be in [0, 2**63), got {s}")
        values = torch.tensor([int(s) for s in items], dtype=torch.int64)
    else:
        raise ArgumentTypeError("seeds", f"seeds must be an int or an iterable of ints, got {type(seeds).__name__}")
    if values.numel() == 0:
        raise ArgumentError("seeds", "seeds: need at least one seed (G >= 1)")
    if (values < 0).any():
        raise ArgumentError("seeds", "seeds must be non-negative")
    if torch.unique(values).numel() != values.numel():
        raise ArgumentError("seeds", "seeds must be distinct (duplicate seeds give identical networks)")
    return values


def check_gain(gain) -> float:
    return check_real("gain", gain)


def check_dtype(dtype) -> torch.dtype:
    """A floating torch dtype, or its name ("float32", "float64")."""
    if isinstance(dtype, str) and isinstance(getattr(torch, dtype, None), torch.dtype):
        dtype = getattr(torch, dtype)
    if not isinstance(dtype, torch.dtype) or not dtype.is_floating_point:
        raise ArgumentTypeError("dtype", f"dtype must be a floating torch.dtype, got {dtype!r}")
    return dtype


def check_device(device) -> torch.device:
    """A device torch can allocate on here: an unknown name, or CUDA on a build or machine
    without it, is refused with torch's reason."""
    try:
        device = torch.device(device)
        torch.empty(0, device=device)
    except (RuntimeError, AssertionError, TypeError) as e:  # CPU-only torch asserts on "cuda"
        raise ArgumentError("device", f"device {str(device)!r} cannot be used: {e}") from None
    return device


def check_network_index(i, G: int) -> int:
    """One network of G: an int in [-G, G) -> its position in [0, G); IndexError outside."""
    if not _is_int(i):
        raise ArgumentTypeError("index", f"a network index is an int, got {type(i).__name__}")
    if not -G <= i < G:
        raise IndexError(f"network index {i} is out of range for a population of {G}")
    return int(i) % G


def check_index(index, G: int, device) -> slice | torch.Tensor:
    """A population index -> a slice (a view) or int64 indices (a copy); see ``Population.__getitem__``."""
    if _is_int(index):
        index = check_network_index(index, G)
        return slice(index, index + 1)
    if isinstance(index, slice):
        if index.step is not None and (not _is_int(index.step) or index.step < 1):
            raise ArgumentError("index", f"a population slice takes a step >= 1 (a view), got {index.step!r}; "
                                         "reverse with a list of indices instead")
        if len(range(*index.indices(G))) == 0:
            raise ArgumentError("index", f"{index} selects no network of a population of {G}")
        return index
    if not isinstance(index, torch.Tensor) and hasattr(index, "__array__"):  # numpy arrays and the like
        try:
            index = torch.as_tensor(index)
        except (TypeError, RuntimeError) as e:
            raise ArgumentTypeError("index", f"cannot read the index {type(index).__name__} as a tensor: {e}") from None
    if isinstance(index, torch.Tensor):
        t = index
    elif isinstance(index, Iterable) and not isinstance(index, (str, bytes)):
        items = list(index)
        if items and all(isinstance(v, bool) for v in items):
            t = torch.tensor(items, dtype=torch.bool)
        elif all(_is_int(v) for v in items):
            t = torch.tensor([int(v) for v in items], dtype=torch.int64)
        else:
            raise ArgumentTypeError("index", "a population index list must hold only ints or only bools")
    else:
        raise ArgumentTypeError("index", f"a population is indexed by an int, a slice, ints or a bool mask, "
                                         f"got {type(index).__name__}")
    if t.dtype == torch.bool:
        if t.dim() != 1 or t.shape[0] != G:
            raise IndexError(f"a bool mask must have shape [{G}] (one flag per network), got {list(t.shape)}")
        t = torch.nonzero(t.cpu()).flatten()
    elif t.dtype.is_floating_point or t.is_complex() or t.dim() > 1:
        raise ArgumentTypeError("index", f"population indices must be a 1-D tensor of ints or bools, got "
                                         f"{t.dtype} {list(t.shape)}")
    t = t.reshape(-1).to(torch.int64).cpu()
    if t.numel() == 0:
        raise ArgumentError("index", "the index selects no network")
    if ((t < -G) | (t >= G)).any():
        bad = int(t[(t < -G) | (t >= G)][0])
        raise IndexError(f"network index {bad} is out of range for a population of {G}")
    return (t % G).to(device)


# -- training data and hyper-parameters ---------------------------------------------------
def _as_numeric_tensor(v, name: str) -> torch.Tensor:
    if not isinstance(v, torch.Tensor):
        try:
            v = torch.as_tensor(v)
        except (TypeError, ValueError, RuntimeError) as e:
            raise ArgumentTypeError(name, f"{name} must be a tensor or array-like of numbers, "
                                          f"got {type(v).__name__}") from e
    if v.is_complex():
        raise ArgumentTypeError(name, f"{name} must hold real numbers, got dtype {v.dtype}")
    return v


def check_x(x, n_in: int, G: int, dtype, device) -> torch.Tensor:
    """x [N, n_in] or [G, N, n_in] -> tensor of dtype/device (per-network: network-minor)."""
    x = _as_numeric_tensor(x, "x")
    if x.dim() not in (2, 3) or x.shape[-1] != n_in or (x.dim() == 3 and x.shape[0] != G):
        raise ArgumentError("x", f"x must be [N, {n_in}] (shared by all networks) or [{G}, N, {n_in}] "
                                 f"(one input set per network), got {list(x.shape)}")
    if x.shape[-2] == 0:
        raise ArgumentError("x", "x has N = 0 samples; need at least one")
    x = x.to(device=device, dtype=dtype)
    if not torch.isfinite(x).all():
        raise ArgumentError("x", "x contains non-finite values (nan or inf)")
    return x.contiguous() if x.dim() == 2 else as_network_minor(x)


def check_y(y, n_out: int, N: int, G: int, dtype, device) -> torch.Tensor:
    """y [N], [N, n_out] or [G, N, n_out] -> [N, n_out] or [G, N, n_out] of dtype/device."""
    y = _as_numeric_tensor(y, "y")
    if y.dim() == 1 and n_out == 1:
        y = y.unsqueeze(1)
    ok = (y.dim() == 2 and tuple(y.shape) == (N, n_out)) or (y.dim() == 3 and tuple(y.shape) == (G, N, n_out))
    if not ok:
        allowed = f"[{N}, {n_out}] or [{G}, {N}, {n_out}]" + (f" or [{N}]" if n_out == 1 else "")
        raise ArgumentError("y", f"y must be {allowed} to match x (N = {N}) and the output width {n_out}, "
                                 f"got {list(y.shape)}")
    y = y.to(device=device, dtype=dtype)
    if not torch.isfinite(y).all():
        raise ArgumentError("y", "y contains non-finite values (nan or inf)")
    return y.contiguous() if y.dim() == 2 else as_network_minor(y)


def check_lr(lr, G: int, dtype, device) -> torch.Tensor:
    """A number >= 0, or one per network ([G]) -> lr [G] of dtype/device."""
    if isinstance(lr, torch.Tensor) and lr.dim() == 0:
        lr = lr.item()
    if isinstance(lr, numbers.Real) and not isinstance(lr, bool):
        if not math.isfinite(lr) or lr < 0:
            raise ArgumentError("lr", f"lr must be a finite number >= 0, got {lr}")
        return torch.full((G,), float(lr), dtype=dtype, device=device)
    if isinstance(lr, torch.Tensor):
        if lr.dim() != 1 or lr.shape[0] != G:
            raise ArgumentError("lr", f"lr as a tensor must have shape [{G}] (one rate per network), "
                                      f"got {list(lr.shape)}")
        if not lr.dtype.is_floating_point:
            lr = lr.to(dtype)
        if not torch.isfinite(lr).all() or (lr < 0).any():
            raise ArgumentError("lr", "lr must hold finite values >= 0")
        return lr.to(device=device, dtype=dtype).contiguous()
    raise ArgumentTypeError("lr", f"lr must be a float or a tensor of shape [{G}], got {type(lr).__name__}")


def check_epochs(epochs, minimum: int = 0) -> int:
    return check_int("epochs", epochs, minimum)


# -- targets against the output activation ------------------------------------------------
# The values each output activation can reach (its closure): a target outside cannot be fit.
OUTPUT_RANGES = {"sigmoid": (0.0, 1.0), "tanh": (-1.0, 1.0)}


class TargetRangeWarning(UserWarning):
    """Targets outside the range of the output activation: no network can fit them, and the
    loss stays above a floor however long it trains (labels 0/1/2, or -1/1, for a sigmoid)."""


def check_targets(y: torch.Tensor, output_act: str = "sigmoid", columns=None, source: str = "y",
                  stacklevel: int = 1) -> None:
    """Warn (:class:`TargetRangeWarning`) for each output column of ``y`` ([..., n_out]) whose
    values leave the range of ``output_act`` (:data:`OUTPUT_RANGES`); the message names the
    column (``columns[j]``, default ``column j``), the range found and the range allowed.

    ``stacklevel`` 1 attributes the warning to the caller of this function, 2 to its caller."""
    lo, hi = OUTPUT_RANGES[output_act]
    if y.numel() == 0:
        return
    flat = y.detach().reshape(-1, y.shape[-1])
    found = zip(flat.amin(dim=0).tolist(), flat.amax(dim=0).tolist())
    for j, (a, b) in enumerate(found):
        if a < lo or b > hi:
            name = columns[j] if columns is not None else f"column {j}"
            warnings.warn(TargetRangeWarning(
                f"{source}: {name} holds targets in [{a:g}, {b:g}], outside [{lo:g}, {hi:g}], the range of the "
                f"{output_act} output: no network can fit them (rescale them into [{lo:g}, {hi:g}])"),
                stacklevel=stacklevel + 1)


# -- output folders -----------------------------------------------------------------------
def check_out_dir(out, arg: str = "out", replaced: bool = False) -> Path:
    """A folder the caller is about to write, checked before any work; returns its absolute path.

    Refused (:class:`ArgumentError` about ``arg``): ``""`` (it would mean the current
    directory), a path that is a file or runs through one, and a place where no folder can be
    created (a read-only or missing file system, ``/proc``, no permission): a probe folder is
    made and removed where the writing will happen, so what is checked is what will be done.

    ``replaced=False``: files go inside ``out`` (created when missing), so the probe is made in
    ``out`` or its nearest existing ancestor.  ``replaced=True``: ``out`` is built beside itself
    and moved into place as a whole (a run folder, :func:`fastmlp.results.save_run`): the probe
    is made in its parent; a symlink is followed (its target is replaced, the link stays); and
    ``out`` may not be the current directory or hold it.
    """
    if not isinstance(out, (str, os.PathLike)) or isinstance(os.fspath(out), bytes):
        raise ArgumentTypeError(arg, f"{arg} must be a path (str or os.PathLike), got {type(out).__name__}")
    text = os.fspath(out)
    if not text:
        raise ArgumentError(arg, "an empty path would name the current directory; name a folder")
    if "\0" in text:
        raise ArgumentError(arg, f"{text!r} holds a NUL character")
    path = Path(os.path.realpath(text) if replaced else os.path.abspath(text))
    if replaced:
        cwd = Path(os.path.realpath(os.getcwd()))
        if path == cwd or path in cwd.parents:
            raise ArgumentError(arg, f"{text!r} is the current directory or holds it; a run folder is replaced as a "
                                     "whole: name a folder inside it")
    # os.path's tests, not Path's: they answer False where a folder on the way cannot be read
    if os.path.lexists(path) and not os.path.isdir(path):
        raise ArgumentError(arg, f"{text!r} is a file, not a folder" if os.path.exists(path) else
                                 f"{text!r} is a link to nothing")
    base = path.parent if replaced or not os.path.isdir(path) else path
    while not os.path.lexists(base):  # the nearest existing ancestor: the folders below it get created
        base = base.parent
    if not os.path.isdir(base):
        raise ArgumentError(arg, f"cannot create {text!r}: {base} is a file, not a folder")
    try:
        os.rmdir(tempfile.mkdtemp(dir=base, prefix=PROBE_PREFIX))
    except OSError as e:
        raise ArgumentError(arg, f"cannot write {text!r}: no folder can be created in {base} "
                                 f"({e.strerror or e})") from None
    return path
