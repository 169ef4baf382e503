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

The program itself (the statements above, samples, accumulators, freeze, SGD step) is
built once by ``fastmlp/program.py``, independent of the target; this module is its Triton
emitter, which only says how a lane value, a load, a store and a loop are spelled
(``fastmlp/program_numba.py`` renders the same program for numba).  The rendered
source is byte-identical to the generator's before that split (tests/test_program.py
checks digests), so the SASS counts of ``bench/roofline.py`` stand.

``python -m fastmlp.kernels.fused_unrolled 2,5,3,1 5`` prints the generated source.
"""
from __future__ import annotations

import functools
import linecache
import sys

import triton
import triton.language as tl

from .. import program
from ..architecture import THREAD_WORDS, UNROLL_SAMPLES, Architecture
from .activations import finite, fused_hidden_act, fused_output_act

__all__ = ["fits", "kernel", "source", "render", "UNROLL_SAMPLES", "MAX_WORDS"]

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


# How the Triton target spells the program's pieces (fastmlp/program.py holds the math).
def _act(kind: str, z: str) -> str:
    return f"fused_{kind}_act({z}, FAST_TANH)"


def _where(cond: str, a: str, b: str) -> str:
    return f"tl.where({cond}, {a}, {b})"


def _finite(a: str) -> str:
    return f"finite({a})"  # kernels/activations.py: on the value's bits


def _expr(e) -> str:
    return program.render_expr(e, act=_act, where=_where, finite=_finite)


def _rows(out: list, base: str, names, statement: str) -> None:
    """``statement`` (a format with ``{name}``) for each parameter at its row's address
    ``p_row``, walking the packed buffer one row (G elements) at a time from ``base``."""
    out.append(f"p_row = {base} + offs_g")
    for r, name in enumerate(names):
        if r:
            out.append("p_row += G")
        out.append(statement.format(name=name))


def _lines(s) -> list:
    """The Triton lines of one statement, loop bodies indented."""
    P = program
    if isinstance(s, P.Comment):
        return [f"# {s.text}"]
    if isinstance(s, P.Let):
        line = f"{s.name} {'+=' if s.acc else '='} {_expr(s.expr)}"
        return [f"{line}  # {s.note}" if s.note else line]
    if isinstance(s, P.LoadData):
        at = f"n * {s.per_sample} + {s.offset}" if s.per_sample else f"{s.offset}"
        return [f"{s.name} = tl.load({s.array}_ptr + {at})"]
    if isinstance(s, P.LoadParams):
        out = ["# ---- parameters: row r of the packed [P, G] buffer is at p_ptr + r * G + g ----"]
        _rows(out, "p_ptr", s.names, "{name} = tl.load(p_row, mask=mask_g, other=0.0)")
        return out
    if isinstance(s, P.StoreParams):
        out = ["# ---- results back to device memory (out_ptr is p_ptr: a second name, so that the",
               "# compiler recomputes these addresses instead of keeping the loads' live) ----"]
        _rows(out, "out_ptr", s.names, "tl.store(p_row, {name}, mask=mask_g)")
        return out
    if isinstance(s, P.StoreActive):
        return [f"tl.store(active_ptr + offs_g, {s.name}.to(tl.int8), mask=mask_g)"]
    if isinstance(s, P.StoreFirst):
        return [f"tl.store(first_ptr + offs_g, {s.name}, mask=mask_g)"]
    if isinstance(s, P.TrackBelow):  # eps in the parameters' dtype: the recorded loss's comparison
        return [f"{s.name}_below = ({s.name} < eps) & (first < 0)",
                f"first = tl.where({s.name}_below, e_base + e, first)"]
    if isinstance(s, P.RecordLoss):
        # Every RECORD_EVERY-th epoch, counted without a branch (a runtime e % k took 11 more
        # registers; an `if` let the compiler duplicate the rest of a small network's epoch)
        return ["hit = e == rec_at",
                f"tl.store(p_loss, {s.name}, mask=tl.where(hit, mask_g, False))",
                "p_loss += s_loss * hit  # a pointer increment: 64-bit, whatever E * G",
                "rec_at += RECORD_EVERY * hit"]
    if isinstance(s, (P.EpochLoop, P.SampleLoop)):
        head = "for e in range(E):" if isinstance(s, P.EpochLoop) else "for n in range(1, N):"
        return [head] + ["    " + line if line else "" for t in s.body for line in _lines(t)]
    raise TypeError(f"fused_unrolled: no Triton spelling for {s!r}")


def render(prog: "program.Program") -> str:
    """The Triton source of ``prog``: one thread per network, every lane value a ``[BLOCK_G]``
    variable, data values scalars shared by all threads (broadcast loads)."""
    sizes = prog.arch.sizes
    on = f"N = {prog.N} samples" if prog.unrolled else f"any N > {UNROLL_SAMPLES} samples"
    lines = [
        f'"""Generated by fastmlp.kernels.fused_unrolled for {"-".join(map(str, sizes))} on {on}."""',
        "@triton.jit(do_not_specialize=[\"E\", \"e_base\", \"RECORD_EVERY\"])  # one machine code for every block",
        "def fused_unrolled_kernel(x_ptr, y_ptr, p_ptr, out_ptr, lr_ptr, active_ptr, loss_ptr, s_loss, G, N, E,",
        "                          scale_ptr, first_ptr, e_base, RECORD_EVERY, FAST_TANH: tl.constexpr,",
        "                          BLOCK_G: tl.constexpr):",
    ]
    body = ["offs_g = tl.program_id(0) * BLOCK_G + tl.arange(0, BLOCK_G)",
            "inv_count = tl.load(scale_ptr)  # 1 / (N n_out), in the parameters' dtype",
            "grad_scale = tl.load(scale_ptr + 1)  # 2 / (N n_out)",
            "eps = tl.load(scale_ptr + 2)  # the loss threshold of TrackBelow",
            "mask_g = offs_g < G",
            "lr = tl.load(lr_ptr + offs_g, mask=mask_g, other=0.0)",
            "active = tl.load(active_ptr + offs_g, mask=mask_g, other=0) != 0",
            "first = tl.load(first_ptr + offs_g, mask=mask_g, other=0)  # int32: -1 until the loss is below eps",
            "p_loss = loss_ptr + offs_g",
            "rec_at = 0  # the next epoch whose loss is recorded"]
    body += [line for s in prog.body for line in _lines(s)]
    lines += ["    " + line if line else "" for line in body]
    return "\n".join(lines) + "\n"


def source(sizes, N: int) -> str:
    """The Triton source of the kernel for ``sizes`` trained on ``N`` samples."""
    return render(program.build(Architecture(tuple(int(s) for s in sizes)), int(N)))


@functools.lru_cache(maxsize=64)
def _compile(sizes: tuple, N: int):
    src = source(sizes, N)
    # inspect.getsource (which triton.jit reads) finds generated code through linecache;
    # the entry has no mtime, so linecache.checkcache never drops it.
    n = f"N={N}" if N <= UNROLL_SAMPLES else f"N>{UNROLL_SAMPLES}"
    filename = f"<fastmlp.kernels.fused_unrolled {'-'.join(map(str, sizes))} {n}>"
    linecache.cache[filename] = (len(src), None, src.splitlines(True), filename)
    namespace = {"triton": triton, "tl": tl, "fused_hidden_act": fused_hidden_act,
                 "fused_output_act": fused_output_act, "finite": finite, "__name__": __name__}
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
