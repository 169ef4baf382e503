"""One-launch training with one thread per network and one register per weight.

The tile kernel (``fused_train.py``) computes on power-of-two tiles, so the lab network
2-5-3-1 costs 2-8-4-1 arithmetic, and a generic kernel must zero gradient tiles and loop
over samples.  For networks small enough that a thread can hold all of one network's
parameters and their gradients in registers, this module writes the kernel *for the
architecture*: straight-line Triton source in which every weight, bias, gradient,
activation and data value is its own ``[BLOCK_G]`` variable (one register per thread),
generated, compiled by ``triton.jit`` and cached.  In it

* there is no padding: a network-epoch does exactly the lab's multiply-adds and
  activations, plus the SGD step (``bench/roofline.py`` counts them in the SASS);
* the samples are unrolled (N <= ``UNROLL_SAMPLES``) and the data is loaded once, before
  the epoch loop, as scalars shared by all threads (broadcast loads); more samples run in
  a loop that loads each sample's scalars (L1 hits);
* the first sample *initialises* the gradient accumulators (``g = a * d``) and the others
  add to them (``g += a * d``, one FFMA): nothing is zeroed per epoch (with a sample loop,
  sample 0 is peeled off before it);
* layout, signature and semantics are the tile kernel's (packed network-minor parameters
  ``[P, G]``, ``active`` flags, loss rows), so the launcher ``fused_train.fused_train``
  picks whichever kernel applies (:func:`fits`) and both are tested the same way.

``python -m fastmlp.kernels.fused_unrolled 2,5,3,1 5`` prints the generated source.
"""
from __future__ import annotations

import functools
import linecache
import sys

import triton
import triton.language as tl

from ..architecture import THREAD_WORDS, UNROLL_SAMPLES, Architecture
from .activations import fused_hidden_act, fused_output_act

__all__ = ["fits", "kernel", "source", "UNROLL_SAMPLES", "MAX_WORDS"]

# UNROLL_SAMPLES (N up to which the samples are unrolled, data in registers) and MAX_WORDS
# (the per-thread budget, with the AOT measurements behind it) are fastmlp.architecture's
# UNROLL_SAMPLES and THREAD_WORDS; Architecture.thread_words counts a network's words.
MAX_WORDS = THREAD_WORDS


def fits(sizes, N) -> bool:
    """True when the generated kernel takes ``sizes`` on ``N`` samples:
    ``2 * parameters + held * (inputs + outputs) + units <= MAX_WORDS``, ``held`` = N
    samples unrolled (N <= UNROLL_SAMPLES) or 1 in the sample loop (lab network on five
    points: 2 * 37 + 5 * 3 + 11 = 100).  N itself is bounded by ``fused_limits``."""
    return Architecture(sizes).fits_thread(N)


class _Writer:
    def __init__(self):
        self.lines: list[str] = []
        self.depth = 0

    def __call__(self, line: str = "") -> None:
        self.lines.append("    " * self.depth + line if line else "")


def _rows(w, base: str, params, statement: str) -> None:
    """``statement`` (a format with ``{name}``) for each parameter at its row's address
    ``p_row``, walking the packed buffer one row (G elements) at a time from ``base``."""
    w(f"p_row = {base} + offs_g")
    for r, name in enumerate(params):
        if r:
            w("p_row += G")
        w(statement.format(name=name))


def _sample(w, sizes, xs, ys, first: bool, label: str) -> None:
    """One sample's forward pass, loss, output delta, gradient accumulation and deltas, on the
    data names ``xs`` / ``ys``; ``first`` initialises the loss and the accumulators."""
    L = len(sizes) - 1
    acc = "=" if first else "+="
    w(f"# ---- {label}: forward ----")
    h = list(xs)
    for l in range(1, L + 1):
        out = []
        for j in range(sizes[l]):
            z = " + ".join([f"b{l}_{j}"] + [f"{h[i]} * w{l}_{i}_{j}" for i in range(sizes[l - 1])])
            name = f"h{l}_{j}" if l < L else f"o{j}"
            act = "fused_hidden_act" if l < L else "fused_output_act"
            w(f"{name} = {act}({z}, FAST_TANH)")
            out.append(name)
        h = out
    w(f"# ---- {label}: loss and output delta ----")
    for j, yj in enumerate(ys):
        w(f"diff = o{j} - {yj}")
        w(f"loss {'=' if first and j == 0 else '+='} diff * diff")
        w(f"d{L}_{j} = diff * grad_scale * (o{j} - o{j} * o{j})")
    w(f"# ---- {label}: gradients, deltas down the layers ----")
    for l in range(L, 0, -1):
        below = list(xs) if l == 1 else [f"h{l - 1}_{i}" for i in range(sizes[l - 1])]
        for j in range(sizes[l]):
            w(f"gb{l}_{j} {acc} d{l}_{j}")
            for i in range(sizes[l - 1]):
                w(f"gw{l}_{i}_{j} {acc} {below[i]} * d{l}_{j}")
        if l > 1:
            for i in range(sizes[l - 1]):
                s = " + ".join(f"w{l}_{i}_{j} * d{l}_{j}" for j in range(sizes[l]))
                w(f"d{l - 1}_{i} = ({s}) * (1.0 - {below[i]} * {below[i]})")


def source(sizes, N: int) -> str:
    """The Triton source of the kernel for ``sizes`` trained on ``N`` samples."""
    sizes = [int(s) for s in sizes]
    L = len(sizes) - 1
    D0, DO = sizes[0], sizes[-1]
    unrolled = N <= UNROLL_SAMPLES
    w = _Writer()
    on = f"N = {N} samples" if unrolled else f"any N > {UNROLL_SAMPLES} samples"
    w(f'"""Generated by fastmlp.kernels.fused_unrolled for {"-".join(map(str, sizes))} on {on}."""')
    w("@triton.jit")
    w("def fused_unrolled_kernel(x_ptr, y_ptr, p_ptr, out_ptr, lr_ptr, active_ptr, loss_ptr, s_loss, G, N, E,")
    w("                          scale_ptr, RECORD_EVERY: tl.constexpr, FAST_TANH: tl.constexpr,")
    w("                          BLOCK_G: tl.constexpr):")
    w.depth = 1
    w("offs_g = tl.program_id(0) * BLOCK_G + tl.arange(0, BLOCK_G)")
    w("inv_count = tl.load(scale_ptr)  # 1 / (N n_out), in the parameters' dtype")
    w("grad_scale = tl.load(scale_ptr + 1)  # 2 / (N n_out)")
    w("mask_g = offs_g < G")
    w("lr = tl.load(lr_ptr + offs_g, mask=mask_g, other=0.0)")
    w("active = tl.load(active_ptr + offs_g, mask=mask_g, other=0) != 0")
    w("p_loss = loss_ptr + offs_g")

    # Parameters in packed order (W_l row-major [n_in, n_out], then b_l), one row per name.
    params = []
    for l in range(1, L + 1):
        params += [f"w{l}_{i}_{j}" for i in range(sizes[l - 1]) for j in range(sizes[l])]
        params += [f"b{l}_{j}" for j in range(sizes[l])]
    w("# ---- parameters: row r of the packed [P, G] buffer is at p_ptr + r * G + g ----")
    _rows(w, "p_ptr", params, "{name} = tl.load(p_row, mask=mask_g, other=0.0)")
    if unrolled:
        w("# ---- the data, shared by every network: scalars, loaded once ----")
        for n in range(N):
            for i in range(D0):
                w(f"x{n}_{i} = tl.load(x_ptr + {n * D0 + i})")
            for j in range(DO):
                w(f"y{n}_{j} = tl.load(y_ptr + {n * DO + j})")

    w("for e in range(E):")
    w.depth = 2
    if unrolled:
        for n in range(N):
            _sample(w, sizes, [f"x{n}_{i}" for i in range(D0)], [f"y{n}_{j}" for j in range(DO)], n == 0,
                    f"sample {n}")
    else:
        # Sample 0 peeled (it initialises the accumulators), then a loop over the others; the
        # data are scalar loads of the same address in every thread (L1 hits after the first).
        xs, ys = [f"x_{i}" for i in range(D0)], [f"y_{j}" for j in range(DO)]
        for first in (True, False):
            if not first:
                w("for n in range(1, N):")
                w.depth = 3
            for i, x in enumerate(xs):
                w(f"{x} = tl.load(x_ptr + {i})" if first else f"{x} = tl.load(x_ptr + n * {D0} + {i})")
            for j, y in enumerate(ys):
                w(f"{y} = tl.load(y_ptr + {j})" if first else f"{y} = tl.load(y_ptr + n * {DO} + {j})")
            _sample(w, sizes, xs, ys, first, "sample 0" if first else "samples 1 .. N-1")
        w.depth = 2
    w("# ---- end of epoch: record the loss, freeze the diverged, one SGD step ----")
    w("loss = loss * inv_count")
    w("if e % RECORD_EVERY == 0:")
    w("    tl.store(p_loss, loss, mask=mask_g)")
    w("    p_loss += s_loss  # a pointer increment: 64-bit, whatever E * G")
    w("active = active & ((loss - loss) == 0.0)  # 0 only when the loss is finite")
    w("step = tl.where(active, lr, 0.0)")
    for name in params:
        w(f"{name} = tl.where(active, {name} - step * g{name}, {name})")
    w.depth = 1
    w("# ---- results back to device memory (out_ptr is p_ptr: a second name, so that the")
    w("# compiler recomputes these addresses instead of keeping the loads' live) ----")
    _rows(w, "out_ptr", params, "tl.store(p_row, {name}, mask=mask_g)")
    w("tl.store(active_ptr + offs_g, active.to(tl.int8), mask=mask_g)")
    return "\n".join(w.lines) + "\n"


@functools.lru_cache(maxsize=64)
def _compile(sizes: tuple, N: int):
    src = source(sizes, N)
    # inspect.getsource (which triton.jit reads) finds generated code through linecache;
    # the entry has no mtime, so linecache.checkcache never drops it.
    n = f"N={N}" if N <= UNROLL_SAMPLES else f"N>{UNROLL_SAMPLES}"
    filename = f"<fastmlp.kernels.fused_unrolled {'-'.join(map(str, sizes))} {n}>"
    linecache.cache[filename] = (len(src), None, src.splitlines(True), filename)
    namespace = {"triton": triton, "tl": tl, "fused_hidden_act": fused_hidden_act,
                 "fused_output_act": fused_output_act, "__name__": __name__}
    exec(compile(src, filename, "exec"), namespace)
    return namespace["fused_unrolled_kernel"]


def kernel(sizes, N: int):
    """The jitted kernel for ``sizes`` on ``N`` samples, generated once per process: one per
    N up to ``UNROLL_SAMPLES``, one for every larger N (the sample loop reads N at run time)."""
    if not fits(sizes, N):
        raise ValueError(f"fused_unrolled: {list(sizes)} on N = {N} does not fit one thread's registers")
    return _compile(tuple(int(s) for s in sizes), min(int(N), UNROLL_SAMPLES + 1))


if __name__ == "__main__":
    sys.stdout.write(source([int(s) for s in sys.argv[1].split(",")], int(sys.argv[2])))
