"""A population: G networks of one architecture, stacked along a leading networks axis.

Shapes follow one convention everywhere (networks axis first):
``weights[l]`` is ``[G, n_in, n_out]`` and ``biases[l]`` is ``[G, n_out]``, so that network
``g`` computes ``z = x @ weights[l][g] + biases[l][g]`` exactly as the lab's ``Linear``.

Memory layout: the tensors are *network-minor* (like torch's channels_last): element
``[g, i, j]`` of a weight lives at ``(i * n_out + j) * G + g``, so neighbouring networks
are neighbours in memory.  The tiny per-network products then become long vector
operations on CPU, and coalesced loads on a GPU.  Indexing, slicing and every torch op
behave as for any strided tensor; ``.contiguous()`` gives the networks-major copy.
"""
from __future__ import annotations

import numbers
from collections.abc import Iterable, Sequence

import torch

from .initializers import InitScheme, init_weights, parse_init, seed_keys

__all__ = ["Population", "network_minor", "is_network_minor", "check_sizes"]


def network_minor(shape: Sequence[int], dtype: torch.dtype, device, *, fill: float | None = None) -> torch.Tensor:
    """A new tensor of logical ``shape = [G, *rest]`` stored as ``[*rest, G]``."""
    G, *rest = shape
    t = torch.empty(*rest, G, dtype=dtype, device=device)
    if fill is not None:
        t.fill_(fill)
    return t.permute(t.dim() - 1, *range(t.dim() - 1))


def is_network_minor(t: torch.Tensor) -> bool:
    """True when ``t`` ([G, ...]) is a permuted view of a contiguous ``[..., G]`` tensor."""
    return t.permute(*range(1, t.dim()), 0).is_contiguous()


def as_network_minor(t: torch.Tensor) -> torch.Tensor:
    """``t`` itself when already network-minor, else a network-minor copy."""
    if is_network_minor(t):
        return t
    out = network_minor(t.shape, t.dtype, t.device)
    out.copy_(t)
    return out


def check_sizes(sizes) -> list[int]:
    """Validate ``[n_in, h_1, ..., n_out]``: at least two positive integers."""
    if isinstance(sizes, (str, bytes)) or not isinstance(sizes, Iterable):
        raise TypeError(f"sizes must be a sequence of ints [n_in, h_1, ..., n_out], got {sizes!r}")
    sizes = list(sizes)
    if len(sizes) < 2:
        raise ValueError(f"sizes needs at least 2 entries [n_in, n_out], got {sizes}")
    for s in sizes:
        if isinstance(s, bool) or not isinstance(s, numbers.Integral):
            raise TypeError(f"sizes must hold ints, got {sizes}")
        if s < 1:
            raise ValueError(f"sizes: every width must be >= 1, got {sizes}")
    return [int(s) for s in sizes]


def _check_seeds(seeds) -> torch.Tensor:
    if isinstance(seeds, bool):
        raise TypeError("seeds must be an int (number of networks) or an iterable of ints")
    if isinstance(seeds, numbers.Integral):
        if seeds < 1:
            raise ValueError(f"seeds: the number of networks must be >= 1, got {seeds}")
        return torch.arange(int(seeds), dtype=torch.int64)
    if isinstance(seeds, torch.Tensor):
        if seeds.dtype.is_floating_point or seeds.dtype == torch.bool or seeds.dim() != 1:
            raise TypeError(f"seeds: a tensor of seeds must be 1-D integer, got {seeds.dtype} {tuple(seeds.shape)}")
        values = seeds.to(torch.int64, copy=True).cpu()
    elif isinstance(seeds, Iterable) and not isinstance(seeds, (str, bytes)):
        items = list(seeds)
        for s in items:
            if isinstance(s, bool) or not isinstance(s, numbers.Integral):
                raise TypeError(f"seeds must be ints, got {s!r}")
            if not 0 <= s < 2**63:
                raise ValueError(f"seeds must be in [0, 2**63), got {s}")
        values = torch.tensor([int(s) for s in items], dtype=torch.int64)
    else:
        raise TypeError(f"seeds must be an int or an iterable of ints, got {type(seeds).__name__}")
    if values.numel() == 0:
        raise ValueError("seeds: need at least one seed (G >= 1)")
    if (values < 0).any():
        raise ValueError("seeds must be non-negative")
    if torch.unique(values).numel() != values.numel():
        raise ValueError("seeds must be distinct (duplicate seeds give identical networks)")
    return values


class Population:
    """G networks ``sizes = [n_in, h_1, ..., h_k, n_out]``: tanh hidden layers, sigmoid output.

    Args:
        sizes: layer widths, input first; ``[2, 5, 3, 1]`` is the lab's network.
        seeds: ``G`` (seeds ``0..G-1``) or an iterable of distinct non-negative ints.
        init: a scheme from :data:`fastmlp.initializers.INIT_SCHEMES`; ``"normal:0.1"``
            and ``"uniform:0.5"`` set the std / bound.  Biases start at zero (as the lab).
        gain: multiplies the scheme's scale.
        dtype, device: of every parameter.

    Network ``s``'s initial weights depend only on ``(s, sizes, init, gain)`` — never on
    ``G`` or on where ``s`` sits in ``seeds`` — so sweeps over configurations are paired.
    """

    def __init__(self, sizes, seeds, init: "str | InitScheme" = "glorot_uniform", gain: float = 1.0,
                 dtype: torch.dtype = torch.float32, device="cpu"):
        self.sizes = check_sizes(sizes)
        seeds_t = _check_seeds(seeds)
        self.init = parse_init(init)
        if isinstance(gain, bool) or not isinstance(gain, numbers.Real) or not gain == gain or abs(gain) == float("inf"):
            raise ValueError(f"gain must be a finite number, got {gain!r}")
        if not isinstance(dtype, torch.dtype) or not dtype.is_floating_point:
            raise TypeError(f"dtype must be a floating torch.dtype, got {dtype!r}")
        self.gain = float(gain)
        device = torch.device(device)
        self.seeds = seeds_t.to(device)
        keys = seed_keys(self.seeds)
        G = len(seeds_t)
        self.weights = [w.permute(2, 0, 1) for w in init_weights(keys, self.sizes, self.init, self.gain, dtype)]
        self.biases = [network_minor((G, n), dtype, device, fill=0.0) for n in self.sizes[1:]]

    # -- construction from / to the reference engine -------------------------------------
    @classmethod
    def _from_parameters(cls, weights, biases, seeds, init, gain) -> "Population":
        pop = cls.__new__(cls)
        pop.sizes = [weights[0].shape[1]] + [w.shape[2] for w in weights]
        pop.seeds, pop.init, pop.gain = seeds, init, gain
        pop.weights, pop.biases = list(weights), list(biases)
        return pop

    @classmethod
    def from_networks(cls, nets) -> "Population":
        """Stack ``reference.NeuralNetwork`` objects of one architecture into a population.

        The result's seeds are ``0..G-1`` (placeholders: the networks carry no seed)."""
        nets = list(nets)
        if not nets:
            raise ValueError("from_networks: need at least one network")
        sizes = nets[0].sizes
        for k, net in enumerate(nets):
            if net.sizes != sizes:
                raise ValueError(f"from_networks: network {k} has sizes {net.sizes}, network 0 has {sizes}")
        dtype, device = nets[0].layers[0].get_weight().dtype, nets[0].layers[0].get_weight().device
        weights, biases = [], []
        for l, (n_in, n_out) in enumerate(zip(sizes[:-1], sizes[1:])):
            w = network_minor((len(nets), n_in, n_out), dtype, device)
            b = network_minor((len(nets), n_out), dtype, device)
            for g, net in enumerate(nets):
                w[g] = net.layers[l].get_weight()
                b[g] = net.layers[l].get_bias()
            weights.append(w)
            biases.append(b)
        return cls._from_parameters(weights, biases, torch.arange(len(nets), device=device), None, None)

    def network(self, i: int):
        """Network ``i`` as a ``reference.NeuralNetwork`` holding a copy of its parameters."""
        from .reference import NeuralNetwork

        if not -len(self) <= i < len(self):
            raise IndexError(f"network index {i} out of range for a population of {len(self)}")
        return NeuralNetwork.from_parameters([w[i] for w in self.weights], [b[i] for b in self.biases])

    # -- views and copies -----------------------------------------------------------------
    def __getitem__(self, index) -> "Population":
        """A sub-population: a view for an int or a slice (training it trains those networks
        here), a copy for a list / tensor of indices."""
        if isinstance(index, numbers.Integral):
            index = slice(index, index + 1 if index != -1 else None)
        elif not isinstance(index, slice):
            index = torch.as_tensor(index, dtype=torch.int64, device=self.device)
        return self._from_parameters([w[index] for w in self.weights], [b[index] for b in self.biases],
                                     self.seeds[index], self.init, self.gain)

    def clone(self) -> "Population":
        return self._from_parameters([as_network_minor(w.clone()) for w in self.weights],
                                     [as_network_minor(b.clone()) for b in self.biases],
                                     self.seeds.clone(), self.init, self.gain)

    def to(self, device=None, dtype: torch.dtype | None = None) -> "Population":
        """A copy on ``device`` / in ``dtype`` (self when nothing changes), network-minor."""
        device = torch.device(device) if device is not None else self.device
        dtype = dtype or self.dtype
        if device == self.device and dtype == self.dtype:
            return self

        def move(t):
            out = network_minor(t.shape, dtype, device)
            out.copy_(t)
            return out

        return self._from_parameters([move(w) for w in self.weights], [move(b) for b in self.biases],
                                     self.seeds.to(device), self.init, self.gain)

    # -- properties -----------------------------------------------------------------------
    def __len__(self) -> int:
        return self.weights[0].shape[0]

    @property
    def G(self) -> int:
        return len(self)

    @property
    def dtype(self) -> torch.dtype:
        return self.weights[0].dtype

    @property
    def device(self) -> torch.device:
        return self.weights[0].device

    @property
    def n_params(self) -> int:
        """Parameters per network."""
        return sum(a * b + b for a, b in zip(self.sizes[:-1], self.sizes[1:]))

    def describe(self) -> str:
        hidden = "".join(f" -> {h} tanh" for h in self.sizes[1:-1])
        return f"{self.sizes[0]}{hidden} -> {self.sizes[-1]} sigmoid"

    def __repr__(self) -> str:
        init = f", init={self.init}, gain={self.gain:g}" if self.init is not None else ""
        return (f"Population(G={len(self)}, {self.describe()}{init}, "
                f"dtype={str(self.dtype).replace('torch.', '')}, device={self.device})")

    # -- inference ------------------------------------------------------------------------
    @torch.no_grad()
    def predict(self, x: torch.Tensor) -> torch.Tensor:
        """Outputs of every network: x [N, n_in] or [G, N, n_in] -> [G, N, n_out]."""
        from .engine import torch as ops
        from .train import _check_x

        z = _check_x(x, self.sizes[0], len(self), self.dtype, self.device)
        n_layers = len(self.weights)
        for l, (w, b) in enumerate(zip(self.weights, self.biases)):
            z = ops.linear_act_fwd(z, w, b, "sigmoid" if l == n_layers - 1 else "tanh")
        return z
