"""A population: G networks of one architecture, stacked along a leading networks axis.

Shapes follow one convention everywhere (networks axis first):
``weights[l]`` is ``[G, n_in, n_out]`` and ``biases[l]`` is ``[G, n_out]``, so that network
``g`` computes ``z = x @ weights[l][g] + biases[l][g]`` exactly as the lab's ``Linear``.

Memory layout: the tensors are *network-minor* (like torch's channels_last): element
``[g, i, j]`` of a weight lives at ``(i * n_out + j) * G + g``, so neighbouring networks
are neighbours in memory.  The tiny per-network products then become long vector
operations on CPU, and coalesced loads on a GPU.  Indexing, slicing and every torch op
behave as for any strided tensor; ``.contiguous()`` gives the networks-major copy.

Keeping what was trained: :meth:`Population.save` / :meth:`Population.load` write and read
one file (the format: :mod:`fastmlp.checkpoint`); :meth:`Population.to_module` gives one
network as a plain ``torch.nn.Sequential`` and :meth:`Population.from_modules` stacks such
modules back into a population.
"""
from __future__ import annotations

import numbers

import torch
from torch import nn

from . import checkpoint
from .architecture import Architecture
from .engine import torch as ops
from .initializers import InitScheme, init_weights, parse_init, seed_keys
from .layout import as_network_minor, is_network_minor, network_minor
from .memory import check_fits, fmt_bytes
from .reference import NeuralNetwork
from .validate import (ArgumentError, ArgumentTypeError, check_dtype, check_device, check_gain, check_index,
                       check_network_index, check_seeds, check_sizes, check_x)

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

    A population too large for the memory is refused before anything is allocated, with a
    :class:`~fastmlp.validate.NotEnoughMemory` (a MemoryError) that gives the sizes.
    """

    def __init__(self, sizes, seeds, init: "str | InitScheme" = "glorot_uniform", gain: float = 1.0,
                 dtype: torch.dtype = torch.float32, device="cpu"):
        self.sizes = check_sizes(sizes)
        # A count is checked against the memory before check_seeds allocates its 0..G-1.
        count = isinstance(seeds, numbers.Integral) and not isinstance(seeds, bool) and seeds >= 1
        seeds_t = None if count else check_seeds(seeds)
        self.init = parse_init(init)
        self.gain = check_gain(gain)
        dtype = check_dtype(dtype)
        device = check_device(device)
        self._arch = Architecture(self.sizes)
        _check_memory(self._arch, int(seeds) if count else len(seeds_t), self.init, dtype, device)
        if seeds_t is None:
            seeds_t = check_seeds(seeds)
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
    def _stacked(cls, per_net, seeds, dtype, device) -> "Population":
        """A population of ``per_net[g] = [(W_l [n_in, n_out], b_l [n_out]), ...]``, cast to
        ``dtype``/``device``; init and gain unknown (None).  Stacking along a last axis
        ``[n_in, n_out, G]`` is the network-minor layout itself: one copy, no transpose."""
        weights, biases = [], []
        for layer in zip(*per_net):
            weights.append(torch.stack([w.detach().to(device, dtype) for w, _ in layer], dim=-1).permute(2, 0, 1))
            biases.append(torch.stack([b.detach().to(device, dtype) for _, b in layer], dim=-1).t())
        return cls._from_parameters(weights, biases, seeds, None, None)

    @classmethod
    def from_networks(cls, nets, seeds=None) -> "Population":
        """Stack ``reference.NeuralNetwork`` objects of one architecture into a population.

        ``seeds``: the seed of each network (checked as ``Population``'s, one per network),
        to keep a population paired with the seeds it was drawn from; by default ``0..G-1``,
        placeholders, as the networks carry no seed.  Init and gain are unknown (None)."""
        nets = list(nets)
        if not nets:
            raise ArgumentError("nets", "from_networks: need at least one network")
        sizes = nets[0].sizes
        for k, net in enumerate(nets):
            if net.sizes != sizes:
                raise ArgumentError("nets", f"from_networks: network {k} has sizes {net.sizes}, network 0 has {sizes}")
        dtype, device = nets[0].layers[0].get_weight().dtype, nets[0].layers[0].get_weight().device
        seeds = _seeds_for(seeds, len(nets), device, "from_networks")
        per_net = [[(layer.get_weight(), layer.get_bias()) for layer in net.layers] for net in nets]
        return cls._stacked(per_net, seeds, dtype, device)

    @classmethod
    def from_modules(cls, modules, seeds=None) -> "Population":
        """Stack ``torch.nn.Sequential`` modules of one architecture into a population: each
        ``Linear(n_in, h_1), Tanh(), ..., Linear(h_k, n_out), Sigmoid()`` with biases, as
        :meth:`to_module` makes them; all of one dtype and device.

        ``seeds`` as in :meth:`from_networks` (default ``0..G-1``, placeholders); init and
        gain are unknown (None).  The parameters are copied.  One module alone (not in a
        list) makes a population of one."""
        if isinstance(modules, nn.Module):
            modules = [modules]
        elif isinstance(modules, (str, bytes)) or not hasattr(modules, "__iter__"):
            raise ArgumentTypeError("modules", f"from_modules takes torch.nn.Sequential modules (a list of them, or "
                                               f"one), got {type(modules).__name__}")
        modules = list(modules)
        if not modules:
            raise ArgumentError("modules", "from_modules: need at least one module")
        sizes, dtype, device = _module_architecture(modules[0], 0)
        for k, m in enumerate(modules[1:], 1):
            got = _module_architecture(m, k)
            if got != (sizes, dtype, device):
                raise ArgumentError("modules", f"from_modules: module {k} is {_fmt_arch(got)}, module 0 is "
                                               f"{_fmt_arch((sizes, dtype, device))}")
        seeds = _seeds_for(seeds, len(modules), device, "from_modules")
        per_net = [[(lin.weight.t(), lin.bias) for lin in list(m)[::2]] for m in modules]
        return cls._stacked(per_net, seeds, dtype, device)

    def to_module(self, i: int) -> nn.Sequential:
        """Network ``i`` as a plain ``torch.nn.Sequential`` of ``nn.Linear`` and activation
        modules (``Tanh`` hidden, ``Sigmoid`` output) computing what it computes, in its dtype
        and on its device; the parameters are copies.  ``nn.Linear.weight`` is
        ``[n_out, n_in]``: network ``i``'s ``W_l`` transposed."""
        i = check_network_index(i, len(self))
        layers = []
        for (n_in, n_out), w, b, act in zip(self.arch.layers, self.weights, self.biases, self.arch.acts):
            lin = nn.utils.skip_init(nn.Linear, n_in, n_out, dtype=self.dtype, device=self.device)  # no RNG draw
            with torch.no_grad():
                lin.weight.copy_(w[i].t())
                lin.bias.copy_(b[i])
            layers += [lin, _ACT_MODULES[act]()]
        return nn.Sequential(*layers)

    # -- keeping a population: one file (fastmlp/checkpoint.py) ----------------------------
    def save(self, path) -> None:
        """Write the population to the file ``path`` (str or Path), all or nothing: parameters,
        seeds, sizes, init and gain, dtype.  :meth:`load` reads it back bit for bit."""
        checkpoint.write(self, path)

    @classmethod
    def load(cls, path, device=None) -> "Population":
        """The population saved in ``path``, on ``device`` (default: the CPU), network-minor,
        so that it trains exactly as the saved one would have.  The file is checked, and
        never runs code (:mod:`fastmlp.checkpoint`): a file that is not a population file
        raises :class:`~fastmlp.checkpoint.PopulationFileError` (a ValueError) that names it
        and what is wrong; a missing one FileNotFoundError, a folder IsADirectoryError."""
        if device is not None:
            device = check_device(device)
        c = checkpoint.read(path)
        pop = cls._from_parameters(c.weights, c.biases, c.seeds, c.init, c.gain)
        return pop.to(device) if device is not None else pop

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


# -- helpers --------------------------------------------------------------------------------
_ACT_MODULES = {"tanh": nn.Tanh, "sigmoid": nn.Sigmoid}  # fastmlp's activations as torch modules


def _check_memory(arch: Architecture, G: int, init: InitScheme, dtype: torch.dtype, device) -> None:
    """Refuse a population whose creation would not fit (the model: Architecture.init_bytes)."""
    needed = arch.init_bytes(G, dtype.itemsize, init.distribution)
    params = G * arch.n_params * dtype.itemsize
    check_fits("seeds", needed, device,
               f"creating {G} networks of {arch.describe()} in {str(dtype).replace('torch.', '')} ({init} init)",
               "create fewer networks at a time (Population(sizes, range(a, b)) draws seeds a..b-1 exactly as a "
               "larger population does)",
               detail=f" ({fmt_bytes(params)} of parameters, the rest for the seeds and drawing the weights)")


def _seeds_for(seeds, G: int, device, caller: str) -> torch.Tensor:
    """The seeds of ``G`` stacked networks: given (checked, one per network) or 0..G-1."""
    if seeds is None:
        return torch.arange(G, device=device)
    t = check_seeds(seeds)
    if len(t) != G:
        raise ArgumentError("seeds", f"{caller}: {len(t)} seeds for {G} networks; give one seed per network")
    return t.to(device)


def _fmt_arch(arch) -> str:
    sizes, dtype, device = arch
    return f"sizes {sizes}, {str(dtype).replace('torch.', '')} on {device}"


def _module_architecture(m, k: int):
    """``(sizes, dtype, device)`` of module ``k`` for from_modules, or an ArgumentError that says
    what in it a population cannot hold."""
    if not isinstance(m, nn.Sequential):
        raise ArgumentTypeError("modules", f"from_modules: module {k} is a {type(m).__name__}, not a "
                                           "torch.nn.Sequential of Linear and activation modules")
    children = list(m)
    linears = children[::2]
    if len(children) < 2 or len(children) % 2 or not all(type(c) is nn.Linear for c in linears):
        raise ArgumentError("modules", f"from_modules: module {k} must alternate nn.Linear and an activation "
                                       f"(Linear, Tanh, ..., Linear, Sigmoid), got {_layer_names(children)}")
    sizes = [linears[0].in_features] + [lin.out_features for lin in linears]
    for l, lin in enumerate(linears):
        if lin.bias is None:
            raise ArgumentError("modules", f"from_modules: module {k}, layer {l}: nn.Linear without a bias "
                                           "(every fastmlp layer has one)")
        if l and lin.in_features != sizes[l]:
            raise ArgumentError("modules", f"from_modules: module {k}, layer {l} takes {lin.in_features} inputs "
                                           f"but layer {l - 1} gives {sizes[l]}")
    acts = Architecture(sizes).acts
    if [type(c) for c in children[1::2]] != [_ACT_MODULES[a] for a in acts]:
        raise ArgumentError("modules", f"from_modules: module {k} has the activations {_layer_names(children[1::2])}; "
                                       f"a fastmlp population has {', '.join(_ACT_MODULES[a].__name__ for a in acts)}")
    params = [p for lin in linears for p in (lin.weight, lin.bias)]
    dtype, device = params[0].dtype, params[0].device
    if not dtype.is_floating_point or any(p.dtype != dtype or p.device != device for p in params):
        found = sorted({f"{str(p.dtype).replace('torch.', '')} on {p.device}" for p in params})
        raise ArgumentError("modules", f"from_modules: module {k}'s parameters must share one floating dtype and "
                                       f"device, got {', '.join(found)}")
    return sizes, dtype, device


def _layer_names(children) -> str:
    return "[" + ", ".join(type(c).__name__ for c in children) + "]"
