"""The one-launch training program on the CPU: fastmlp/program.py rendered for ``numba.njit``.

``kernels/fused_unrolled.py`` renders the per-architecture program as a Triton kernel, one
thread per network; this module renders the *same* program (the math lives in
``fastmlp/program.py``) as Python source for numba, one SIMD lane per network:

* networks go in blocks of ``BLOCK`` = 16 (one AVX-512 vector of float32), the last block
  padded with zero networks (zero parameters, lr 0, frozen) to a whole vector, so that
  every network runs in the same instructions whatever G, its position or the thread
  count: a network's numbers are bit for bit its own (no scalar remainder loop);
* the program is cut into *regions*, the straight-line runs between its loops; each region
  becomes one ``for k in range(BLOCK)`` loop of scalar code, which LLVM vectorises across
  the lanes.  A lane value that lives beyond its region (parameters, lr, the gradient
  accumulators and the loss across the sample loop, the ``active`` flag as 1.0 / 0.0) has
  a row of one per-block ``[rows, BLOCK]`` buffer ``S``; the others are scalars of the
  region.  One buffer, because rows of one array at constant distances need no run-time
  alias checks: with a second (bool) array LLVM added them and a scalar copy of every lane
  loop, and the lab network ran at 13.5 M network-epochs/s instead of 28 M;
* divisions use ``error_model="numpy"``: Python's ZeroDivisionError check is a branch
  that keeps a lane loop scalar;
* shared data values are scalars loaded outside the lane loops (once per launch when the
  samples are unrolled, once per sample in the sample loop);
* the function is ``nogil`` and takes a range of blocks: :func:`fused_train` cuts the blocks
  in contiguous shares, one per thread (``threads``, default ``torch.get_num_threads()``), the
  caller's thread and a small pool; numba's ``parallel=True`` (``prange``) took 9-13 s of a
  cold compile in its parfor passes and lowering (cold compile now ~4.8 s, warm 0.26 s).  Every scalar is assigned
  once (numba's SSA and type inference on the renamed source: 2.3 s instead of 3.5 s).

Activations: the exp2 forms of kernels/activations.py (``tanh = 1 - 2 / (1 + 2^(2x log2 e))``,
``sigmoid = 1 / (1 + 2^(-x log2 e))``), with exp2 written out (range reduction, a Taylor
polynomial, the exponent built from the integer part): numba has no vector exp without
Intel's SVML, and a scalar libm call per lane blocks vectorisation.  Measured on the 2-core
AVX-512 dev box, one thread: this tanh 1057 M/s in float32 and 502 M/s in float64,
``math.tanh`` 66 M/s (scalar), so math.tanh is not taken.  exp2's error is ~1 ulp (Taylor
truncation: float32 degree 7 6e-9, float64 degree 13 4e-18), exp2(+inf) = inf, exp2(-inf)
= 0, NaN in, NaN out; tanh's absolute error is 1.8e-7 (float32) and 3.3e-16 (float64) on
[-30, 30], as the Triton interpreter's.  fastmath is on except ``nnan`` / ``ninf``, which would fold exp2's
NaN pass-through (``t == t``) to a constant.  The divergence test is :func:`finite` on the loss's bits (an
integer AND and compare, which no floating-point flag touches: see ``fastmlp.program.Finite``).

Contract of :func:`fused_train`: that of ``kernels.fused_train.fused_train`` (packed
network-minor ``[P, G]`` parameters as :func:`pack` builds them, lr ``[G]``, ``active``
``[G]`` int8 updated, loss rows every ``record_every`` epochs, float32 / float64, the same
divergence freeze).  numba is imported when a program is compiled, never by ``import fastmlp``.
"""
from __future__ import annotations

import functools
import math
import re
import threading
from concurrent.futures import ThreadPoolExecutor

import torch

from . import program as P
from . import program_numba_cache as _cache
from .numba_bits import finite, pow2  # noqa: F401  (the generated modules' intrinsics)
from .architecture import Architecture

__all__ = ["BLOCK", "pack", "unpack_into", "source", "render", "compiled", "module", "cache_dir", "is_cached", "pow2",
           "finite", "fused_train"]

# 16 lanes: one AVX-512 vector of float32 (LLVM splits it in two 256-bit halves on this
# CPU).  Lab network on five points, float32, 2 threads of the dev box, 2500 epochs:
# 31-33 M network-epochs/s at G = 64 .. 65536, 1.06 M at G = 1 (11-13 M float64, G = 8192).
BLOCK = 16
FASTMATH = frozenset({"nsz", "arcp", "contract", "afn", "reassoc"})  # not nnan / ninf: see above
# exp2 on [-1/2, 1/2]: the degree of its Taylor polynomial (ln2^k / k!), and the exponent bias.
_EXP2 = {"float32": (7, 127), "float64": (13, 1023)}


def _arch(weights) -> Architecture:
    return Architecture(tuple(w.shape[1] for w in weights) + (weights[-1].shape[2],))


def pack(weights, biases) -> torch.Tensor:
    """Network-minor packed parameters [P, G] (``Architecture.pack``: rows W1 row-major
    [n_in, n_out], b1, W2, ...), the buffer :func:`fused_train` trains in place."""
    return _arch(weights).pack(weights, biases)


def unpack_into(packed: torch.Tensor, weights, biases) -> None:
    """Copy packed parameters back into the population's tensors (any strides)."""
    _arch(weights).unpack_into(packed, weights, biases)


# ---- the numba spelling --------------------------------------------------------------------
def _lit(v: str) -> str:
    return f"F({v})" if v[0].isdigit() else v


def _act(kind: str, z: str) -> str:
    return f"_{'tanh' if kind == 'hidden' else 'sigmoid'}({z})"


def _where(cond: str, a: str, b: str) -> str:
    return f"({a} if {cond} else {b})"


def _finite(a: str) -> str:
    return f"_finite({a})"


def _expr(e) -> str:
    return P.render_expr(e, name=_lit, act=_act, where=_where, finite=_finite)


def _names(e) -> set:
    """Value names (and literals) an expression reads."""
    if isinstance(e, str):
        return {e}
    parts = {P.Sum: lambda e: e.terms, P.Mul: lambda e: e.factors, P.Sub: lambda e: (e.a, e.b),
             P.Paren: lambda e: (e.e,), P.Act: lambda e: (e.arg,), P.Where: lambda e: (e.cond, e.a, e.b),
             P.Finite: lambda e: (e.a,), P.And: lambda e: (e.a, e.b)}[type(e)](e)
    return set().union(*map(_names, parts))


def _regions(body) -> list:
    """Split a loop body into ``("data", [LoadData])``, ``("lanes", [Let/RecordLoss/Comment])``
    and ``("loop", SampleLoop)`` pieces, in order."""
    out = []
    for s in body:
        kind = "data" if isinstance(s, P.LoadData) else "loop" if isinstance(s, P.SampleLoop) else "lanes"
        if kind == "loop":
            out.append((kind, s))
        elif out and out[-1][0] == kind:
            out[-1][1].append(s)
        else:
            out.append((kind, [s]))
    return out


def _exposed(stmts, lane: set) -> tuple[set, set]:
    """Lane values a region reads before writing them (they come from elsewhere), and those
    it writes."""
    read, written = set(), set()
    for s in stmts:
        if isinstance(s, P.Let):
            uses = _names(s.expr) | ({s.name} if s.acc else set())
            read |= {v for v in uses if v in lane and v not in written}
            written.add(s.name)
        elif isinstance(s, P.RecordLoss) and s.name not in written:
            read.add(s.name)
    return read, written


def render(prog: P.Program, dtype: str, cache: bool = True) -> str:
    """The numba module source of ``prog`` for ``dtype`` ("float32" or "float64"); ``cache``:
    compiled code cached on disk, next to the module's file."""
    lets = [s for s in prog.walk() if isinstance(s, P.Let)]
    lane = set(prog.params) | {"lr", "active"} | {s.name for s in lets}
    epoch = next(s for s in prog.body if isinstance(s, P.EpochLoop))
    pieces = _regions(epoch.body)
    pieces += [r for kind, loop in pieces if kind == "loop" for r in _regions(loop.body)]
    keep = set(prog.params) | {"lr"}
    for kind, stmts in pieces:
        if kind == "lanes":
            keep |= _exposed(stmts, lane)[0]
    keep.add("active")
    row = {v: r for r, v in enumerate(list(prog.params) + sorted(keep - set(prog.params)) + ["_loss"])}
    at = lambda v, k: f"S[{row[v] * BLOCK} + {k}]"  # noqa: E731
    # One buffer for every lane value, flags as 1.0 / 0.0: rows of one array at constant
    # distances need no run-time alias checks (two arrays did: a scalar copy of every loop).
    get = lambda v, k: f"{at(v, k)} != F(0.0)" if v == "active" else at(v, k)  # noqa: E731
    put = lambda v: f"F(1.0) if {v} else F(0.0)" if v == "active" else v  # noqa: E731

    out = []

    def w(depth, line=""):
        out.append("    " * depth + line if line else "")

    # Every scalar assigned once (a new name ``h1_0__2``, ``loss__2 = loss + (...)``; a loop
    # index per lane loop): numba's SSA reconstruction and type inference take 1.2 s less.
    seen, dcur = {}, {}  # how often a name was assigned; the data names' current spelling
    loops = iter(range(1, 1 << 30))

    def fresh(v):
        seen[v] = seen.get(v, 0) + 1
        return v if seen[v] == 1 else f"{v}__{seen[v]}"

    def lanes(depth, stmts):
        read, written = _exposed(stmts, lane)
        k = f"k{next(loops)}"
        cur = {}
        name = lambda v: cur.get(v, dcur.get(v, v)) if not v[0].isdigit() else _lit(v)  # noqa: E731
        w(depth, f"for {k} in range(BLOCK):")
        for v in sorted(read, key=lambda v: (v not in row, row.get(v, 0), v)):
            cur[v] = fresh(v)
            w(depth + 1, f"{cur[v]} = {get(v, k)}")
        recorded, tracked = [], []
        for s in stmts:
            if isinstance(s, P.Comment):
                w(depth + 1, f"# {s.text}")
            elif isinstance(s, P.Let):
                e = P.render_expr(s.expr, name=name, act=_act, where=_where, finite=_finite)
                e = f"{name(s.name)} + ({e})" if s.acc else e
                cur[s.name] = fresh(s.name)
                w(depth + 1, f"{cur[s.name]} = {e}")
            elif isinstance(s, P.RecordLoss):
                w(depth + 1, f"{at('_loss', k)} = {name(s.name)}")
                recorded.append(s)
            elif isinstance(s, P.TrackBelow):  # after the region, from the loss's row (RecordLoss)
                tracked.append(s)
        for v in sorted(written & keep, key=lambda v: (v not in row, row.get(v, 0), v)):
            w(depth + 1, f"{at(v, k)} = {put(name(v))}")
        for _ in recorded:
            w(depth, "if e % RECORD_EVERY == 0:")
            w(depth + 1, f"for {k}r in range(nk):")
            w(depth + 2, f"loss_out[rec, g0 + {k}r] = S[{row['_loss'] * BLOCK} + {k}r]")
            w(depth + 1, "rec += 1")
        for _ in tracked:  # every epoch: eps is in the dtype F, the comparison of the recorded loss
            w(depth, f"for {k}t in range(nk):")
            w(depth + 1, f"if S[{row['_loss'] * BLOCK} + {k}t] < eps and first_out[g0 + {k}t] < 0:")
            w(depth + 2, f"first_out[g0 + {k}t] = e_base + e")

    def data(depth, stmts):
        for s in stmts:
            at_ = f"n * {s.per_sample} + {s.offset}" if s.per_sample else f"{s.offset}"
            dcur[s.name] = fresh(s.name)
            w(depth, f"{dcur[s.name]} = {s.array}[{at_}]")

    def body(depth, pieces):
        for kind, piece in pieces:
            if kind == "data":
                data(depth, piece)
            elif kind == "lanes":
                lanes(depth, piece)
            else:
                w(depth, "for n in range(1, N):")
                body(depth + 1, _regions(piece.body))

    sizes = "-".join(map(str, prog.arch.sizes))
    on = f"N = {prog.N} samples" if prog.unrolled else f"any N > {prog.N - 1} samples"
    degree, bias = _EXP2[dtype]
    coef = [f"F({math.log(2) ** k / math.factorial(k)!r})" for k in range(1, degree + 1)]
    poly = coef[-1]
    for c in reversed(coef[:-1]):  # Horner: c1 + f * (c2 + f * (...))
        poly = f"({c} + f * {poly})"
    w(0, f'"""Generated by fastmlp.program_numba for {sizes} on {on}, {dtype}, blocks of {BLOCK} networks."""')
    w(0, "import math")
    w(0)
    w(0, "import numba")
    w(0, "import numpy as np")
    w(0)
    w(0, "from fastmlp.numba_bits import finite, pow2")
    w(0)
    w(0, f"F = np.{dtype}")
    w(0, f"BLOCK = {BLOCK}")
    w(0, f"FASTMATH = {{{', '.join(map(repr, sorted(FASTMATH)))}}}")
    w(0, f"_pow2 = pow2({dtype!r})")
    w(0, f"_finite = finite({dtype!r})")
    w(0, f"CACHE = {cache}")
    w(0)
    w(0)
    w(0, "@numba.njit(fastmath=FASTMATH, error_model=\"numpy\", cache=CACHE)")
    w(0, "def _exp2(t):")
    w(1, f"tc = t if t > F({-bias}.0) else F({-bias}.0)  # 2^-bias: 0; 2^(bias + 1): inf")
    w(1, f"tc = tc if tc < F({bias + 1}.0) else F({bias + 1}.0)")
    # The biased exponent m = floor(tc + 1/2) + bias in [0, 2 bias + 1] by truncating a
    # positive number (math.floor is a libm call that would keep the lane loop scalar; an m
    # off by one only widens f to ~0.5 + ulp), in the float's width (int32 for float32).
    w(1, f"m = np.{'int32' if dtype == 'float32' else 'int64'}(tc + F({bias + 0.5}))")
    w(1, f"f = tc - F(m - {bias})  # in [-1/2, 1/2] (tc - (F(m) - bias) would be reassociated)")
    w(1, f"p = F(1.0) + f * {poly}")
    w(1, "p = p * _pow2(m)")
    w(1, "return p if t == t else t  # NaN in, NaN out")
    w(0)
    w(0)
    w(0, "@numba.njit(fastmath=FASTMATH, error_model=\"numpy\", cache=CACHE)")
    w(0, "def _tanh(x):")
    w(1, "return F(1.0) - F(2.0) / (F(1.0) + _exp2(F(2.8853900817779268) * x))")
    w(0)
    w(0)
    w(0, "@numba.njit(fastmath=FASTMATH, error_model=\"numpy\", cache=CACHE)")
    w(0, "def _sigmoid(x):")
    w(1, "return F(1.0) / (F(1.0) + _exp2(F(-1.4426950408889634) * x))")
    w(0)
    w(0)
    w(0, "@numba.njit(nogil=True, fastmath=FASTMATH, error_model=\"numpy\", cache=CACHE)")
    w(0, "def fused_cpu_train(x, y, p, lr_in, active_in, loss_out, first_out, G, N, E, inv_count, grad_scale, eps,")
    w(0, "                    e_base, RECORD_EVERY, blk0, blk1):")
    w(1, "for blk in range(blk0, blk1):")
    w(2, "g0 = blk * BLOCK")
    w(2, "nk = min(BLOCK, G - g0)")
    w(2, f"S = np.zeros({len(row) * BLOCK}, F)  # lane values that outlive a region, row r at r * BLOCK")
    w(2, "for k0 in range(nk):")
    for r, v in enumerate(prog.params):
        w(3, f"S[{r * BLOCK} + k0] = p[{r}, g0 + k0]")
    w(3, f"{at('lr', 'k0')} = lr_in[g0 + k0]")
    w(3, f"{at('active', 'k0')} = F(1.0) if active_in[g0 + k0] != 0 else F(0.0)  # padded lanes: 0, frozen")
    pre = [s for s in prog.body if isinstance(s, P.LoadData)]
    data(2, pre)
    w(2, "rec = 0")
    w(2, "for e in range(E):")
    body(3, _regions(epoch.body))
    w(2, "for kz in range(nk):")
    for r, v in enumerate(prog.params):
        w(3, f"p[{r}, g0 + kz] = S[{r * BLOCK} + kz]")
    w(3, f"active_in[g0 + kz] = 1 if {at('active', 'kz')} != F(0.0) else 0")
    # Literals F(c) as module constants (numba freezes globals): a call less to type each.
    text = "\n".join(out) + "\n"
    consts = list(dict.fromkeys(re.findall(r"\bF\((-?[0-9][0-9.e+-]*)\)", text)))
    name = {c: f"C{i}" for i, c in enumerate(consts)}
    text = re.sub(r"\bF\((-?[0-9][0-9.e+-]*)\)", lambda m: name[m.group(1)], text)
    defs = "".join(f"{name[c]} = F({c})\n" for c in consts)
    return text.replace("\nCACHE = ", f"\n{defs}CACHE = ", 1)


def source(sizes, N: int, dtype: str = "float32", cache: bool = True) -> str:
    """The numba source of the program for ``sizes`` on ``N`` samples (rendered once per
    process: ~12 ms for the lab network, and auto asks on every run)."""
    return _source(tuple(int(s) for s in sizes), int(N), dtype, cache)


@functools.lru_cache(maxsize=128)
def _source(sizes: tuple, N: int, dtype: str, cache: bool) -> str:
    return render(P.build(Architecture(sizes), N), dtype, cache)


cache_dir = _cache.cache_dir  # where generated modules and numba's compiled code are kept


def _tag(sizes, N: int, dtype: str) -> str:
    return f"{'_'.join(map(str, sizes))}_N{N}_{dtype}"


def is_cached(sizes, N: int, dtype: str) -> bool:
    """Whether a complete, intact compiled entry for ``sizes`` on ``N`` samples, for this
    process's CPU target, is on disk (the manifest, the versions, the source and every numba
    file's size and digest: see fastmlp/program_numba_cache.py); imports no numba and
    compiles nothing."""
    sizes, N = tuple(int(s) for s in sizes), int(N)
    src = source(sizes, N, dtype)
    return _cache.valid(_cache.entry(_tag(sizes, N, dtype), src), src)


def compiled(sizes: tuple, N: int, dtype: str):
    """The njit training function for ``sizes`` on ``N`` samples (one for every N beyond
    UNROLL_SAMPLES), compiled (or loaded from the disk cache); :func:`module` holds it and
    its helpers (``_exp2``, ``_tanh``, ``_sigmoid``)."""
    return module(tuple(int(s) for s in sizes), int(N), dtype).fused_cpu_train


@functools.lru_cache(maxsize=64)
def module(sizes: tuple, N: int, dtype: str):
    """The generated module for ``sizes`` on ``N`` samples, imported and compiled.

    The source goes to a file named by a digest of it, of the toolchain's versions and of the
    CPU target numba compiles for (one entry per CPU in a shared folder), and is imported
    from there, which lets numba cache the machine code on disk (``cache=True``).
    An entry that is not intact (program_numba_cache.valid) is deleted and rebuilt; when the
    folder is not writable the module is compiled in memory instead."""
    tag = _tag(sizes, N, dtype)
    mod = _cache.get(tag, source(sizes, N, dtype), lambda: source(sizes, N, dtype, cache=False), dtype)
    _LOADED.add((sizes, N, dtype))
    return mod


_LOADED: set = set()  # programs compiled or loaded in this process


def is_loaded(sizes, N: int, dtype: str) -> bool:
    """Whether this process holds the compiled program already (a call costs nothing more)."""
    return (tuple(int(s) for s in sizes), int(N), dtype) in _LOADED


_POOL: list = [None]  # the worker threads (one fewer than the most asked for: the caller works too)
_POOL_LOCK = threading.Lock()


def _pool(workers: int) -> ThreadPoolExecutor:
    with _POOL_LOCK:
        pool = _POOL[0]
        if pool is None or pool._max_workers < workers:
            if pool is not None:
                pool.shutdown(wait=False)
            pool = _POOL[0] = ThreadPoolExecutor(workers, thread_name_prefix="fastmlp-numba")
        return pool


def fused_train(x: torch.Tensor, y: torch.Tensor, packed: torch.Tensor, lr: torch.Tensor, active: torch.Tensor,
                loss_out: torch.Tensor, sizes, epochs: int, record_every: int = 1, fast_tanh: bool = False,
                variant: str | None = None, threads: int | None = None, first_below: torch.Tensor | None = None,
                eps: float = 0.0, e_base: int = 0) -> None:
    """Train for ``epochs`` epochs in place on ``packed`` [P, G] and ``active`` [G] (int8), on
    the CPU; x [N, n_in] and y [N, n_out] shared; lr [G]; loss_out [ceil(epochs /
    record_every), G] receives the loss at the start of every ``record_every``-th epoch;
    first_below [G] int32 (optional) the first epoch (``e_base`` + the launch's epoch) whose
    loss is below ``eps``, where it is still -1.
    ``kernels.fused_train.fused_train``'s contract; ``fast_tanh`` and ``variant`` (GPU
    choices) are accepted for the same signature and must be False / None or "unrolled".
    ``threads``: how many threads share the blocks (default ``torch.get_num_threads()``);
    the numbers do not depend on it."""
    sizes = [int(s) for s in sizes]
    arch = Architecture(sizes)
    N = x.shape[0]
    why = arch.fused_limits(N)
    if why is not None:
        raise ValueError(f"backend='fused' cannot train {why}; use backend='torch'")
    if fast_tanh or variant not in (None, "unrolled"):
        raise ValueError("fused_cpu: fast_tanh and the 'tiles' variant are GPU-only")
    threads = torch.get_num_threads() if threads is None else threads
    if isinstance(threads, bool) or not isinstance(threads, int) or threads < 1:
        raise ValueError(f"fused_train: threads must be a positive int, got {threads!r}")
    if packed.device.type != "cpu":
        raise ValueError(f"fused_train: the parameters must be on the CPU, got {packed.device}")
    N, G = P.check_launch(sizes, x, y, packed, lr, active, loss_out, epochs, record_every, first_below, e_base)
    if not active.is_contiguous():
        raise ValueError("fused_train: active must be contiguous")
    if epochs == 0 or G == 0:
        return
    if first_below is None:  # nothing to track: entries >= 0 never change
        first_below = torch.zeros(G, dtype=torch.int32)
    dtype = str(packed.dtype).removeprefix("torch.")
    fn = compiled(tuple(sizes), min(N, P.UNROLL_SAMPLES + 1), dtype)
    np_dt = packed.numpy().dtype.type
    count = N * sizes[-1]
    # Scales rounded to the parameters' dtype, as the Triton launcher's scale tensor.
    args = (x.contiguous().reshape(-1).numpy(), y.contiguous().reshape(-1).numpy(), packed.numpy(),
            lr.contiguous().numpy(), active.numpy(), loss_out.numpy(), first_below.numpy(), G, N, epochs,
            np_dt(1.0 / count), np_dt(2.0 / count), np_dt(eps), e_base, record_every)
    # Whole blocks in contiguous shares, one per thread (the caller takes the first); the
    # function releases the GIL (nogil), and every block is its own: no bit depends on the split.
    blocks = -(-G // BLOCK)
    T = min(threads, blocks)
    cut = [blocks * t // T for t in range(T + 1)]
    futures = [_pool(T - 1).submit(fn, *args, cut[t], cut[t + 1]) for t in range(1, T)]
    try:
        fn(*args, cut[0], cut[1])
    finally:
        for f in futures:
            f.result()
