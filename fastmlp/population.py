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

import torch

from .architecture import Architecture
from .engine import torch as ops
from .initializers import InitScheme, init_weights, parse_init, seed_keys
from .layout import as_network_minor, is_network_minor, network_minor
from .reference import NeuralNetwork
from .validate import ArgumentError, check_dtype, check_device, check_gain, check_index, check_network_index, check_seeds, check_sizes, check_x

__all__ = ["Population", "network_minor", "is_network_minor", "as_network_minor", "check_sizes"]


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
        seeds_t = check_seeds(seeds)
        self.init = parse_init(init)
        self.gain = check_gain(gain)
        dtype = check_dtype(dtype)
        device = check_device(device)
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
            raise ArgumentError("nets", "from_networks: need at least one network")
        sizes = nets[0].sizes
        for k, net in enumerate(nets):
            if net.sizes != sizes:
                raise ArgumentError("nets", f"from_networks: network {k} has sizes {net.sizes}, network 0 has {sizes}")
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
        i = check_network_index(i, len(self))
        return NeuralNetwork.from_parameters([w[i] for w in self.weights], [b[i] for b in self.biases])

    # -- views and copies -----------------------------------------------------------------
    def __getitem__(self, index) -> "Population":
        """A sub-population.

        * an int ``i`` or a slice: a view (training it trains those networks here);
        * ints (a list or an int tensor, negative counting from the end) or a bool mask
          (a list or a bool tensor of length G: the networks where it is true, in order,
          e.g. ``pop[result.converged()]``): a copy.

        An int out of range raises IndexError (as does a mask of another length); an index
        that selects no network raises ValueError.
        """
        index = check_index(index, len(self), self.device)
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
    def arch(self) -> Architecture:
        """The :class:`~fastmlp.architecture.Architecture` every network shares."""
        arch = self.__dict__.get("_arch")
        if arch is None or list(arch.sizes) != self.sizes:
            arch = self._arch = Architecture(self.sizes)
        return arch

    @property
    def n_params(self) -> int:
        """Parameters per network."""
        return self.arch.n_params

    def describe(self) -> str:
        return self.arch.describe()

    def __repr__(self) -> str:
        init = f", init={self.init}, gain={self.gain:g}" if self.init is not None else ""
        return (f"Population(G={len(self)}, {self.describe()}{init}, "
                f"dtype={str(self.dtype).replace('torch.', '')}, device={self.device})")

    # -- inference ------------------------------------------------------------------------
    @torch.no_grad()
    def predict(self, x: torch.Tensor) -> torch.Tensor:
        """Outputs of every network: x [N, n_in] or [G, N, n_in] -> [G, N, n_out]."""
        z = check_x(x, self.sizes[0], len(self), self.dtype, self.device)
        for w, b, act in zip(self.weights, self.biases, self.arch.acts):
            z = ops.linear_act_fwd(z, w, b, act)
        return z
