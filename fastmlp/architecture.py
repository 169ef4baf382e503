"""One architecture, every fact about it: sizes, parameter count, packed layout, memory, limits.

An :class:`Architecture` is the value that the population, the training loop, the engines,
the sweep planner, the kernels and the benchmarks all read, so that a number which must
equal another number is computed once (tiny-cuda-nn keeps its width rules in one header
for the same reason).  It imports no GPU library: asking whether a backend can take a
problem never imports Triton.

The per-backend limits are data here, and the kernels import them:

=========================  =====  ===========================================================
``SMALL_CONTRACTION``      16     the torch engine evaluates contractions up to this length as
                                  broadcast multiply-add loops, longer ones with bmm; widths
                                  in one :func:`width_class` never straddle it
``KERNEL_MAX_WIDTH``       128    widest layer of the per-layer Triton kernels
``FUSED_MAX_HIDDEN``       4      hidden layers of the one-launch program
``FUSED_MAX_WIDTH``        32     every width of the one-launch program, inputs included
``FUSED_MAX_SAMPLES``      4096   N of the one-launch program (bounds the time of an epoch)
``UNROLL_SAMPLES``         16     N up to which the generated program unrolls the samples
``THREAD_WORDS``           164    words one network may take in the generated program
=========================  =====  ===========================================================
"""
from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property

import torch

from .initializers import _BLOCK as _INIT_BLOCK
from .validate import ArgumentError, check_sizes

__all__ = ["Architecture", "width_class", "next_pow2", "ACTIVATIONS", "SMALL_CONTRACTION", "KERNEL_MAX_WIDTH",
           "FUSED_MAX_HIDDEN", "FUSED_MAX_WIDTH", "FUSED_MAX_SAMPLES", "UNROLL_SAMPLES", "THREAD_WORDS"]

ACTIVATIONS = ("tanh", "sigmoid")

# 16: at G = 8192 on the 2-core dev box, the multiply-add loop beats bmm up to K ~ 24
# (bench/bench_train.py).
SMALL_CONTRACTION = 16
# Per-layer kernels: a network's weight matrix at 128 is already 64 KiB (float32), a product
# better served by tensor-core batched matmul (the torch engine); see kernels/_launch.py.
KERNEL_MAX_WIDTH = 128
FUSED_MAX_HIDDEN = 4
FUSED_MAX_WIDTH = 32
FUSED_MAX_SAMPLES = 4096
UNROLL_SAMPLES = 16
# Peak bytes per drawn weight while fastmlp.initializers.init_weights runs (its live
# temporaries, read off the code and measured with the process's peak RSS): uniform holds
# the 32-bit draws as int64 and their shift (float64: two draws and their 53-bit sum);
# normal adds the Box-Muller terms to two uniforms.  Keyed by (distribution, work itemsize).
INIT_DRAW_BYTES = {("uniform", 4): 16, ("uniform", 8): 32, ("normal", 4): 20, ("normal", 8): 40}
# Per network while a population is created: every int64 that check_seeds and seed_keys
# allocate (the seeds, two keys and the hashing's temporaries: 17 words), counted as if none
# were given back, since the allocator may keep freed blocks of this size resident.
INIT_SEED_BYTES = 17 * 8
# From AOT compiles (Triton 3.9, float32, sm_80 / sm_90 registers): 2-5-3-1 (100 words)
# 127 / 127, 2-6-6-1 on N = 5 (164) 217 / 231, on N = 7 (170) - / 255, 2-8-6-1 (202)
# 255 / 255, 2-8-8-1 (244) spills 56 bytes on sm_80.  The bound keeps a margin below 255,
# and tests/aot_fused.py compiles a network of exactly this many words.
THREAD_WORDS = 164


def _bmm_copy(N: int, a: int, b: int) -> int:
    """Words per network cuBLAS's copies of one network-minor product of a layer a -> b take:
    [N, a] and [a, b] (or [N, b] and [b, a], or [a, N] and [N, b]) operands and the result."""
    return N * (a + b) + a * b


def next_pow2(n: int) -> int:
    """The smallest power of two >= n (1 for n <= 1)."""
    return 1 if n <= 1 else 1 << (int(n) - 1).bit_length()


def width_class(w: int) -> int:
    """Widths that may be zero-padded to one another: 1..16, then 17..32, 33..64, ...

    Padding adds exact zeros to every sum, so a padded network computes the same bits as the
    unpadded one *if the backend evaluates both products the same way*.  The torch engine
    switches from a multiply-add loop to bmm above ``SMALL_CONTRACTION``: a 3-wide network
    padded to 20 would change algorithm and rounding (measured: 1e-5 relative after 300
    epochs at lr 2, and another trajectory for a few chaotic seeds).  Within a class padding
    is bitwise on the torch engine (tests/test_sweep.py); power-of-two classes also keep a
    kernel's next-power-of-two block, with the padded lanes holding the zeros a mask loads.
    """
    return 0 if w <= SMALL_CONTRACTION else (w - 1).bit_length()


@dataclass(frozen=True)
class Architecture:
    """``sizes = (n_in, h_1, ..., h_k, n_out)`` with ``hidden_act`` hidden layers and an
    ``output_act`` output layer (the lab's: tanh and sigmoid, the only ones implemented)."""

    sizes: tuple[int, ...]
    hidden_act: str = "tanh"
    output_act: str = "sigmoid"

    def __post_init__(self):
        object.__setattr__(self, "sizes", tuple(check_sizes(self.sizes)))
        if (self.hidden_act, self.output_act) != ACTIVATIONS:
            raise ArgumentError("activation", f"only tanh hidden layers and a sigmoid output are implemented, got "
                                              f"{self.hidden_act!r} and {self.output_act!r}")

    @classmethod
    def of(cls, sizes) -> "Architecture":
        """``sizes`` itself when it is an Architecture, else the architecture of these sizes."""
        return sizes if isinstance(sizes, Architecture) else cls(sizes)

    # -- shape ----------------------------------------------------------------------------
    @property
    def n_in(self) -> int:
        return self.sizes[0]

    @property
    def n_out(self) -> int:
        return self.sizes[-1]

    @property
    def hidden(self) -> tuple[int, ...]:
        return self.sizes[1:-1]

    @property
    def n_layers(self) -> int:
        return len(self.sizes) - 1

    @property
    def layers(self) -> list[tuple[int, int]]:
        """``(n_in, n_out)`` of every layer, input first."""
        return list(zip(self.sizes[:-1], self.sizes[1:]))

    @property
    def acts(self) -> list[str]:
        """The activation of every layer."""
        return [self.hidden_act] * (self.n_layers - 1) + [self.output_act]

    @property
    def units(self) -> int:
        """Inputs, hidden units and outputs."""
        return sum(self.sizes)

    @cached_property
    def n_params(self) -> int:
        """Parameters per network: ``sum(n_in * n_out + n_out)`` over the layers."""
        return sum(a * b + b for a, b in self.layers)

    @cached_property
    def offsets(self) -> tuple[tuple[int, int], ...]:
        """Rows of ``(W_l, b_l)`` in the packed ``[n_params, G]`` buffer: W_l row-major
        ``[n_in, n_out]`` then b_l, layer after layer."""
        out, row = [], 0
        for a, b in self.layers:
            w_row, b_row = row, row + a * b
            out.append((w_row, b_row))
            row = b_row + b
        return tuple(out)

    def pack(self, weights, biases) -> torch.Tensor:
        """The packed network-minor ``[n_params, G]`` buffer of a population's parameters
        (rows at :attr:`offsets`), as the one-launch programs read it."""
        G = weights[0].shape[0]
        packed = torch.empty(self.n_params, G, dtype=weights[0].dtype, device=weights[0].device)
        self.unpack_into(packed, weights, biases, reverse=True)
        return packed

    def unpack_into(self, packed: torch.Tensor, weights, biases, reverse: bool = False) -> None:
        """Copy ``packed [n_params, G]`` into the population's tensors (any strides);
        ``reverse`` copies the other way."""
        G = packed.shape[1]
        for (a, b), (w_row, b_row), w, bias in zip(self.layers, self.offsets, weights, biases):
            w_rows = packed[w_row:b_row].view(a, b, G).permute(2, 0, 1)
            b_rows = packed[b_row:b_row + b].t()
            if reverse:
                w_rows.copy_(w)
                b_rows.copy_(bias)
            else:
                w.copy_(w_rows)
                bias.copy_(b_rows)

    def padded(self) -> "Architecture":
        """Every width rounded up to a power of two (the tile kernel's tiles)."""
        return Architecture(tuple(next_pow2(s) for s in self.sizes))

    def describe(self) -> str:
        hidden = "".join(f" -> {h} {self.hidden_act}" for h in self.hidden)
        return f"{self.n_in}{hidden} -> {self.n_out} {self.output_act}"

    # -- memory (one model, for train's chunk planner and the sweep planner) -------------
    def working_bytes(self, N: int, itemsize: int, x_per_network: bool = False, y_per_network: bool = False, *,
                      program: str = "layers", cublas: bool = False) -> int:
        """Peak bytes per network of a training run besides its loss history, for the kind
        of run a backend declares (``Backend.working_memory``; ``Backend.working_bytes``
        asks here):

        * ``"layers"``, an epoch of four per-layer ops (``engine.base.LayerRun``, the torch
          and Triton engines): the parameters, a chunk's compact copy, the gradients and the
          parameter check's scratch (4 P words), three activation-sized buffers per layer
          (z, delta, scratch: 3 N x the widths);
        * ``"fused"``, one program per block of epochs (``engine.fused.FusedRun``): the
          parameters and their packed copy (2 P), the parameter check's flags (P bytes; a
          CPU heap may keep their pages for the next allocation) and the final loss, a
          forward pass with the torch engine (:meth:`forward_words`);

        both: lr, loss and flags (8 words), and x or y when they are per network.

        ``cublas``: the run calls the torch engine's bmm on CUDA.  cuBLAS multiplies
        matrices with a unit stride along their rows or columns; a network-minor tensor
        has it along the batch axis, so ATen copies both operands and the result of each
        such product to contiguous temporaries (``baddbmm_out_cuda_impl`` with
        ``prepare_batch_matrix_for_cublas``): N (a + b) + a b words for a layer a -> b, the
        largest of them on top of the buffers.  On the CPU bmm copies nothing (measured:
        docs/sweeps.md).  Which products are bmm: :meth:`bmm_layers`.
        """
        isz = itemsize
        if program == "layers":
            words = 4 * self.n_params + 3 * N * sum(self.sizes[1:])
            if cublas:
                words += max((_bmm_copy(N, a, b) for a, b in self.bmm_layers(N, x_per_network)), default=0)
        elif program == "fused":
            words = 2 * self.n_params + -(-self.n_params // isz) + self.forward_words(N, cublas)
        else:
            raise ValueError(f"program must be 'layers' or 'fused', got {program!r}")
        words += 8 + N * self.n_in * x_per_network + N * self.n_out * y_per_network
        return words * isz

    def bmm_layers(self, N: int, x_per_network: bool = False) -> list[tuple[int, int]]:
        """The layers ``(a, b)`` whose products the torch engine's epoch evaluates with bmm
        (``engine/torch.py``): those with a per-network input (every layer but a first one
        on shared x, which is one GEMM) where the forward's contraction (a), the gradient's
        (N) or, above the first layer, the backward delta's (b) is longer than
        ``SMALL_CONTRACTION``."""
        return [(a, b) for l, (a, b) in enumerate(self.layers)
                if (l > 0 or x_per_network) and max(a, N, b if l > 0 else 0) > SMALL_CONTRACTION]

    def forward_words(self, N: int, cublas: bool = False) -> int:
        """Peak words per network of a forward pass and loss with the torch engine's ops on
        new buffers (``FusedRun.final_loss``; ``Population.predict`` holds less): at a layer
        a -> b its input and output (N (a + b), N b at the first: x is shared), with
        ``cublas`` and a > ``SMALL_CONTRACTION`` (a bmm) the product's copies; at the loss
        the output, delta and scratch (3 N n_out)."""
        per_layer = (N * b + N * a * (l > 0) + (_bmm_copy(N, a, b) if cublas and a > SMALL_CONTRACTION else 0)
                     for l, (a, b) in enumerate(self.layers))
        return max(*per_layer, 3 * N * self.n_out)

    def history_bytes(self, G: int, epochs: int, itemsize: int) -> int:
        """The loss history ``[epochs, G]`` (``epochs``: the rows it keeps), the final loss, a
        row for a loss not kept, and the first epoch below eps (int64 for the result, int32 and
        two flags in a run)."""
        return G * ((epochs + 2) * itemsize + 8 + 4 + 2)

    def init_bytes(self, G: int, itemsize: int, distribution: str) -> int:
        """Peak bytes of creating ``G`` networks (:class:`fastmlp.Population`): the seeds
        and keys, then the larger of drawing the weights (``distribution`` "uniform",
        "normal" or "zeros", with the hashing's per-block temporaries) and the finished
        parameters.  An upper bound of what the process's resident size grows by
        (tests/test_persist.py measures it)."""
        n_weights = sum(a * b for a, b in self.layers)
        if distribution == "zeros":
            draw = n_weights * itemsize
        else:
            work = 8 if itemsize == 8 else 4  # half precisions are drawn in float32, then cast
            draw = n_weights * (INIT_DRAW_BYTES[distribution, work] + (itemsize if itemsize < work else 0))
            draw += 2 * 8 * n_weights * min(G, _INIT_BLOCK) / G  # two int64 blocks while hashing
        return int(G * (INIT_SEED_BYTES + max(draw, self.n_params * itemsize)))

    # -- per-backend limits ---------------------------------------------------------------
    def kernel_limits(self) -> str | None:
        """None when the per-layer Triton kernels take every layer, else why not."""
        if max(self.sizes) > KERNEL_MAX_WIDTH:
            return f"a layer of width {max(self.sizes)} (the per-layer kernels take widths up to {KERNEL_MAX_WIDTH})"
        return None

    def fused_limits(self, N: int) -> str | None:
        """None when the one-launch program takes this architecture on ``N`` samples, else why not."""
        if len(self.hidden) > FUSED_MAX_HIDDEN:
            return f"{len(self.hidden)} hidden layers (the fused program takes at most {FUSED_MAX_HIDDEN})"
        if max(self.sizes) > FUSED_MAX_WIDTH:
            return f"a layer of width {max(self.sizes)} (the fused program takes widths up to {FUSED_MAX_WIDTH})"
        if N > FUSED_MAX_SAMPLES:
            return f"N = {N} samples (the fused program takes at most {FUSED_MAX_SAMPLES})"
        return None

    def thread_words(self, N: int) -> int:
        """Words one network takes in the generated one-thread program: parameters and
        gradients, the samples held in registers (all N up to ``UNROLL_SAMPLES``, else one),
        and its units (lab network on five points: 2 * 37 + 5 * 3 + 11 = 100)."""
        held = N if N <= UNROLL_SAMPLES else 1
        return 2 * self.n_params + held * (self.n_in + self.n_out) + self.units

    def fits_thread(self, N: int) -> bool:
        """True when one thread holds a network of the generated program (``THREAD_WORDS``)."""
        return self.thread_words(N) <= THREAD_WORDS
