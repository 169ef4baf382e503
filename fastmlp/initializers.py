"""Weight initialisation schemes, drawn from a counter-based generator.

Every weight of network ``s`` is a pure function of ``(seed s, sizes, scheme, gain)``:
element ``p`` of the flattened parameter vector (layer by layer, each ``[n_in, n_out]``
row-major) takes its random bits from ``hash(seed, 4 * p + draw)``.  Nothing depends on
how many networks are generated together, on a network's position among them, or on
the device: the hashing is exact integer arithmetic, and only the final conversion to
floating point rounds.  (torch's own generators are sequential: the values a network
gets from them depend on everything drawn before it.)

The mixer is a 32-bit integer finaliser (xor-shift / multiply, "lowbias32" constants,
C. Wellons' hash-prospector), applied twice per value with the per-seed key injected in
between.  It is evaluated in int64 tensors holding 32-bit values, so every op is an
ordinary torch op on any device.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from .validate import ArgumentError, ArgumentTypeError

_M32 = 0xFFFFFFFF
# Networks hashed per block: keeps the int64 temporaries in cache (measured on the
# 2-core dev box: 1M lab networks in 0.20 s with 16384, 0.99 s with one block).
_BLOCK = 16384


def _mix32_(x: torch.Tensor) -> torch.Tensor:
    """In-place 32-bit avalanche mix of int64 tensors holding values in [0, 2**32)."""
    x.bitwise_xor_(x >> 16)
    x.mul_(0x7FEB352D).bitwise_and_(_M32)
    x.bitwise_xor_(x >> 15)
    x.mul_(0x846CA68B).bitwise_and_(_M32)
    x.bitwise_xor_(x >> 16)
    return x


def seed_keys(seeds: torch.Tensor) -> torch.Tensor:
    """Two 32-bit keys per seed (int64 [G] -> int64 [2, G]); seeds are 0 <= s < 2**63."""
    lo = seeds & _M32
    hi = seeds >> 32
    k1 = _mix32_(lo ^ _mix32_(hi ^ 0x9E3779B9))
    k2 = _mix32_(k1 ^ 0x85EBCA6B)
    return torch.stack([k1, k2])


def random_bits(keys: torch.Tensor, n_values: int, draw: int) -> torch.Tensor:
    """32 random bits for counters 0..n_values-1 of every seed: int64 [n_values, G].

    ``draw`` (0..3) selects an independent stream for the same element (Box-Muller
    needs two uniforms, float64 needs two 32-bit words).
    """
    device = keys.device
    ctr = torch.arange(n_values, dtype=torch.int64, device=device) * 4 + draw
    ctr = _mix32_(ctr)[:, None]
    G = keys.shape[1]
    out = torch.empty(n_values, G, dtype=torch.int64, device=device)
    for g0 in range(0, G, _BLOCK):
        k1 = keys[0, g0:g0 + _BLOCK][None, :]
        k2 = keys[1, g0:g0 + _BLOCK][None, :]
        v = ctr ^ k1
        _mix32_(v)
        v.add_(k2).bitwise_and_(_M32)
        out[:, g0:g0 + _BLOCK] = _mix32_(v)
    return out


def uniform01(keys: torch.Tensor, n_values: int, dtype: torch.dtype, draw: int = 0) -> torch.Tensor:
    """Uniform values in [0, 1) with the full mantissa of ``dtype``: [n_values, G]."""
    if dtype == torch.float64:
        hi = random_bits(keys, n_values, draw).to(torch.float64)
        lo = (random_bits(keys, n_values, draw + 1) >> 11).to(torch.float64)
        return (hi * 2.0**21 + lo) * 2.0**-53
    # 24 bits fill a float32 mantissa exactly (float16/bfloat16 round from it).
    return ((random_bits(keys, n_values, draw) >> 8).to(torch.float32) * 2.0**-24).to(dtype)


def standard_normal(keys: torch.Tensor, n_values: int, dtype: torch.dtype) -> torch.Tensor:
    """Box-Muller standard normals: [n_values, G]."""
    work = torch.float64 if dtype == torch.float64 else torch.float32
    u1 = uniform01(keys, n_values, work, draw=0)
    u2 = uniform01(keys, n_values, work, draw=2)
    radius = torch.sqrt(-2.0 * torch.log1p(-u1))  # 1 - u1 in (0, 1]: log never sees 0
    return (radius * torch.cos(2.0 * math.pi * u2)).to(dtype)


@dataclass(frozen=True)
class InitScheme:
    """How one weight matrix [n_in, n_out] is drawn: a distribution and its scale."""

    name: str
    distribution: str  # "uniform" (on [-scale, scale)), "normal" (std = scale) or "zeros"
    param: float | None = None  # the user's std / bound for "normal" / "uniform"

    def scale(self, n_in: int, n_out: int, gain: float) -> float:
        fan_avg = (n_in + n_out) / 2.0
        return gain * {
            "glorot_uniform": lambda: math.sqrt(3.0 / fan_avg),  # = sqrt(6 / (n_in + n_out))
            "glorot_normal": lambda: math.sqrt(1.0 / fan_avg),  # = sqrt(2 / (n_in + n_out))
            "he_uniform": lambda: math.sqrt(6.0 / n_in),
            "he_normal": lambda: math.sqrt(2.0 / n_in),
            "lecun_normal": lambda: math.sqrt(1.0 / n_in),
            "lecun_uniform": lambda: math.sqrt(3.0 / n_in),
            "normal": lambda: self.param,
            "uniform": lambda: self.param,
            "zeros": lambda: 0.0,
        }[self.name]()

    def __str__(self) -> str:
        return self.name if self.param is None else f"{self.name}:{self.param:g}"


_DISTRIBUTION = {
    "glorot_uniform": "uniform",
    "glorot_normal": "normal",
    "he_uniform": "uniform",
    "he_normal": "normal",
    "lecun_normal": "normal",
    "lecun_uniform": "uniform",
    "normal": "normal",
    "uniform": "uniform",
    "zeros": "zeros",
}
INIT_SCHEMES = tuple(_DISTRIBUTION)
_DEFAULT_PARAM = {"normal": 1.0, "uniform": 1.0}


def parse_init(spec: "str | InitScheme") -> InitScheme:
    """``"glorot_uniform"``, ``"normal:0.1"`` (std), ``"uniform:0.5"`` (bound) -> InitScheme."""
    if isinstance(spec, InitScheme):
        return spec
    if not isinstance(spec, str):
        raise ArgumentTypeError("init", f"init must be a string such as 'glorot_uniform', got {type(spec).__name__}")
    name, _, arg = spec.strip().lower().partition(":")
    if name not in _DISTRIBUTION:
        raise ArgumentError("init", f"unknown init scheme {spec!r}; expected one of {', '.join(INIT_SCHEMES)} "
                         "(normal and uniform take an optional ':value', e.g. 'normal:0.1')")
    param = None
    if name in _DEFAULT_PARAM:
        try:
            param = float(arg) if arg else _DEFAULT_PARAM[name]
        except ValueError:
            raise ArgumentError("init", f"init {spec!r} has a non-numeric value after ':'") from None
        if not math.isfinite(param) or param < 0:
            raise ArgumentError("init", f"init {spec!r} needs a finite value >= 0 after ':'")
    elif arg:
        raise ArgumentError("init", f"init {name!r} takes no ':value' (only normal and uniform do), got {spec!r}")
    return InitScheme(name, _DISTRIBUTION[name], param)


def init_weights(keys: torch.Tensor, sizes: list[int], scheme: InitScheme, gain: float,
                 dtype: torch.dtype) -> list[torch.Tensor]:
    """Initial weights for every network, network-minor: list of [n_in, n_out, G] tensors."""
    G = keys.shape[1]
    shapes = list(zip(sizes[:-1], sizes[1:]))
    n_total = sum(a * b for a, b in shapes)
    if scheme.distribution == "zeros":
        flat = torch.zeros(n_total, G, dtype=dtype, device=keys.device)
    elif scheme.distribution == "uniform":
        flat = uniform01(keys, n_total, dtype).mul_(2.0).sub_(1.0)  # [-1, 1)
    else:
        flat = standard_normal(keys, n_total, dtype)
    out, p = [], 0
    for n_in, n_out in shapes:
        w = flat[p:p + n_in * n_out].view(n_in, n_out, G)
        out.append(w.mul_(scheme.scale(n_in, n_out, gain)))
        p += n_in * n_out
    return out
