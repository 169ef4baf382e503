"""The one-launch training program of an architecture, built once, rendered by each target.

tinygrad's renderers turn one list of UOps into CUDA, Metal or C source and differ only in
spellings; here :func:`build` turns an :class:`~fastmlp.architecture.Architecture` and a
sample count into one target-independent program, and each target says how a lane value,
a load, a store and a loop are written:

* ``kernels/fused_unrolled.py`` renders it as a Triton kernel, one thread per network;
* ``fastmlp/program_numba.py`` renders it as Python source for ``numba.njit``, one SIMD
  lane per network of a block.

The program is a list of statements over named scalar values.  A *lane value* belongs to
one network (a weight ``w{l}_{i}_{j}``, a bias ``b{l}_{j}``, their gradients ``gw...`` /
``gb...``, activations ``h{l}_{j}``, outputs ``o{j}``, deltas ``d{l}_{j}``, ``diff``,
``loss``, ``lr``, ``active``, ``step``); a *data value* (``x{n}_{i}``, ``y{n}_{j}``, or
``x_{i}`` / ``y_{j}`` in the sample loop) and the scales ``inv_count`` = 1 / (N n_out) and
``grad_scale`` = 2 / (N n_out) are shared by every network.  The math is written once, in
:func:`_sample` and :func:`build`:

* parameters are loaded in packed order (W_l row-major ``[n_in, n_out]``, then b_l);
* samples are unrolled up to ``UNROLL_SAMPLES`` (data loaded once, before the epoch loop),
  beyond that sample 0 is peeled and a sample loop loads each sample's data;
* the first sample *initialises* the loss and the gradient accumulators, the others add;
* at the end of an epoch: loss scaling, the loss recorded every ``RECORD_EVERY`` epochs,
  the first epoch whose loss fell below ``eps`` noted (every epoch, recorded or not), the divergence freeze ``active &= finite(loss)`` (a test of the loss's exponent bits),
  one SGD step that leaves a frozen network's parameters bit for bit;
* the parameters, the ``active`` flags and the first epochs below ``eps`` are stored back.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from .architecture import UNROLL_SAMPLES, Architecture

__all__ = ["Program", "build", "render_expr", "Sum", "Mul", "Sub", "Paren", "Act", "Where", "Finite", "And",
           "Comment", "Let", "LoadParams", "StoreParams", "LoadData", "EpochLoop", "SampleLoop", "RecordLoss",
           "TrackBelow", "StoreActive", "StoreFirst"]


# ---- expressions: a value name or a literal ("1.0") is a str; the rest are these nodes ----
@dataclass(frozen=True)
class Sum:
    terms: tuple  # a + b + c


@dataclass(frozen=True)
class Mul:
    factors: tuple  # a * b * c


@dataclass(frozen=True)
class Sub:
    a: object
    b: object  # a - b


@dataclass(frozen=True)
class Paren:
    e: object  # (e)


@dataclass(frozen=True)
class Act:
    kind: str  # "hidden" (tanh) or "output" (sigmoid)
    arg: object


@dataclass(frozen=True)
class Where:
    cond: object
    a: object
    b: object  # a where cond else b, lane by lane


@dataclass(frozen=True)
class Finite:
    """True when ``a`` is neither NaN nor +-inf: its exponent bits are not all ones.

    Every target tests the *bits* of the value (an integer AND and compare on its bit
    pattern), never float arithmetic on it: ``(a - a) == 0`` was contracted by NVPTX into
    ``fma(x, y, -round(x * y))`` when ``a = x * y`` (the product's rounding error, almost
    never 0), which froze every network on the first GPU run, and fast-math flags (``nnan``,
    ``ninf``) let a compiler fold a float test to a constant.  No floating-point setting
    applies to integer operations.  ``render_expr`` has no default spelling for it: each
    target supplies its own (``finite=``)."""
    a: object


@dataclass(frozen=True)
class And:
    a: object
    b: object


# ---- statements ----------------------------------------------------------------------------
@dataclass(frozen=True)
class Comment:
    text: str


@dataclass(frozen=True)
class Let:
    name: str
    expr: object
    acc: bool = False  # name += expr
    note: str = ""  # a comment at the end of the line


@dataclass(frozen=True)
class LoadParams:
    names: tuple  # row r of the packed [P, G] buffer into names[r]


@dataclass(frozen=True)
class StoreParams:
    names: tuple


@dataclass(frozen=True)
class LoadData:
    name: str
    array: str  # "x" [N, n_in] or "y" [N, n_out], row-major, shared
    offset: int  # element offset within the sample (or absolute, when per_sample is 0)
    per_sample: int = 0  # elements per sample: the address is n * per_sample + offset (sample loop)


@dataclass(frozen=True)
class EpochLoop:
    body: tuple  # for e in range(E)


@dataclass(frozen=True)
class SampleLoop:
    body: tuple  # for n in range(1, N)


@dataclass(frozen=True)
class RecordLoss:
    name: str  # row e // RECORD_EVERY of the loss history, when e % RECORD_EVERY == 0


@dataclass(frozen=True)
class TrackBelow:
    """``first = e_base + e where first < 0 and name < eps else first``, every epoch: the
    epoch (of the whole run: ``e_base`` is the block's first) at whose start the loss first
    fell below ``eps``, -1 while it has not.  ``eps`` is in the parameters' dtype, so the test
    is the comparison a recorded float loss gets against ``eps`` (``stats.epochs_to_eps``);
    NaN is never below.  Computed on every epoch, so a thinned loss record loses nothing of it."""
    name: str


@dataclass(frozen=True)
class StoreActive:
    name: str


@dataclass(frozen=True)
class StoreFirst:
    name: str  # the lane value TrackBelow updates, back to its [G] int32 buffer


@dataclass(frozen=True)
class Program:
    arch: Architecture
    N: int  # the sample count it was built for (any N > UNROLL_SAMPLES when not unrolled)
    unrolled: bool
    params: tuple  # lane-value names in packed order
    body: tuple  # statements

    def walk(self, body=None):
        """Every statement, depth first (loops before their bodies)."""
        for s in self.body if body is None else body:
            yield s
            if isinstance(s, (EpochLoop, SampleLoop)):
                yield from self.walk(s.body)


def render_expr(e, name=lambda v: v, act=None, where=None, finite=None) -> str:
    """Python-syntax source of expression ``e``; a target supplies the spelling of a value
    name or literal (``name``), of an activation (``act(kind, arg_source)``), of a
    lane-wise select (``where(cond, a, b)``) and of the finiteness test on a value's bits
    (``finite(arg_source)``, see :class:`Finite`)."""
    r = lambda x: render_expr(x, name, act, where, finite)  # noqa: E731
    if isinstance(e, str):
        return name(e)
    if isinstance(e, Sum):
        return " + ".join(map(r, e.terms))
    if isinstance(e, Mul):
        return " * ".join(map(r, e.factors))
    if isinstance(e, Sub):
        return f"{r(e.a)} - {r(e.b)}"
    if isinstance(e, Paren):
        return f"({r(e.e)})"
    if isinstance(e, Act):
        return act(e.kind, r(e.arg))
    if isinstance(e, Where):
        return where(r(e.cond), r(e.a), r(e.b))
    if isinstance(e, Finite):
        if finite is None:
            raise TypeError("render_expr: this target gives no spelling of Finite (finite=...)")
        return finite(r(e.a))
    if isinstance(e, And):
        return f"{r(e.a)} & {r(e.b)}"
    raise TypeError(f"not an expression: {e!r}")


def _sample(arch: Architecture, xs, ys, first: bool, label: str) -> list:
    """One sample's forward pass, loss, output delta, gradient accumulation and deltas, on the
    data names ``xs`` / ``ys``; ``first`` initialises the loss and the accumulators."""
    sizes, L = arch.sizes, arch.n_layers
    acc = not first
    out = [Comment(f"---- {label}: forward ----")]
    h = list(xs)
    for l in range(1, L + 1):
        names = []
        for j in range(sizes[l]):
            z = Sum((f"b{l}_{j}",) + tuple(Mul((h[i], f"w{l}_{i}_{j}")) for i in range(sizes[l - 1])))
            names.append(f"h{l}_{j}" if l < L else f"o{j}")
            out.append(Let(names[-1], Act("hidden" if l < L else "output", z)))
        h = names
    out.append(Comment(f"---- {label}: loss and output delta ----"))
    for j, yj in enumerate(ys):
        o = f"o{j}"
        out.append(Let("diff", Sub(o, yj)))
        out.append(Let("loss", Mul(("diff", "diff")), acc=not (first and j == 0)))
        # sigmoid' = o (1 - o), the lab's form: only products of differences, so no compiler
        # can contract it (o - o * o is fma(-o, o, o) on a GPU and not on a CPU, which
        # differ by up to half an ulp of o**2: most of o (1 - o) when o is near 1).
        out.append(Let(f"d{L}_{j}", Mul(("diff", "grad_scale", Paren(Mul((o, Paren(Sub("1.0", o)))))))))
    out.append(Comment(f"---- {label}: gradients, deltas down the layers ----"))
    for l in range(L, 0, -1):
        below = list(xs) if l == 1 else [f"h{l - 1}_{i}" for i in range(sizes[l - 1])]
        for j in range(sizes[l]):
            out.append(Let(f"gb{l}_{j}", f"d{l}_{j}", acc))
            for i in range(sizes[l - 1]):
                out.append(Let(f"gw{l}_{i}_{j}", Mul((below[i], f"d{l}_{j}")), acc))
        if l > 1:
            for i in range(sizes[l - 1]):
                s = Sum(tuple(Mul((f"w{l}_{i}_{j}", f"d{l}_{j}")) for j in range(sizes[l])))
                # tanh' = (1 - h) (1 + h) for the same reason (1 - h * h contracts); the
                # torch engine multiplies in the same order (fastmlp/engine/torch.py).
                h = below[i]
                out.append(Let(f"d{l - 1}_{i}", Mul((Paren(s), Paren(Sub("1.0", h)), Paren(Sum(("1.0", h)))))))
    return out


def param_names(arch: Architecture) -> tuple:
    """Lane-value names of the parameters in packed order (``Architecture.offsets``)."""
    names = []
    for l, (a, b) in enumerate(arch.layers, start=1):
        names += [f"w{l}_{i}_{j}" for i in range(a) for j in range(b)]
        names += [f"b{l}_{j}" for j in range(b)]
    return tuple(names)


def build(arch, N: int) -> Program:
    """The training program of ``arch`` on ``N`` samples (one program serves every N beyond
    ``UNROLL_SAMPLES``: the sample loop reads N at run time)."""
    arch = Architecture.of(arch)
    D0, DO = arch.n_in, arch.n_out
    unrolled = N <= UNROLL_SAMPLES
    params = param_names(arch)
    body = [LoadParams(params)]
    epoch = []
    if unrolled:
        body.append(Comment("---- the data, shared by every network: scalars, loaded once ----"))
        for n in range(N):
            body += [LoadData(f"x{n}_{i}", "x", n * D0 + i) for i in range(D0)]
            body += [LoadData(f"y{n}_{j}", "y", n * DO + j) for j in range(DO)]
        for n in range(N):
            epoch += _sample(arch, [f"x{n}_{i}" for i in range(D0)], [f"y{n}_{j}" for j in range(DO)], n == 0,
                             f"sample {n}")
    else:
        # Sample 0 peeled (it initialises the accumulators), then a loop over the others.
        xs, ys = [f"x_{i}" for i in range(D0)], [f"y_{j}" for j in range(DO)]
        epoch += [LoadData(x, "x", i) for i, x in enumerate(xs)] + [LoadData(y, "y", j) for j, y in enumerate(ys)]
        epoch += _sample(arch, xs, ys, True, "sample 0")
        loop = [LoadData(x, "x", i, D0) for i, x in enumerate(xs)] + [LoadData(y, "y", j, DO) for j, y in enumerate(ys)]
        epoch.append(SampleLoop(tuple(loop + _sample(arch, xs, ys, False, "samples 1 .. N-1"))))
    epoch += [Comment("---- end of epoch: record the loss, freeze the diverged, one SGD step ----"),
              Let("loss", Mul(("loss", "inv_count"))),
              RecordLoss("loss"),
              TrackBelow("loss"),
              Let("active", And("active", Finite("loss")), note="a test of the loss's bits: see Finite"),
              Let("step", Where("active", "lr", "0.0"))]
    epoch += [Let(p, Where("active", Sub(p, Mul(("step", f"g{p}"))), p)) for p in params]
    body += [EpochLoop(tuple(epoch)), StoreParams(params), StoreActive("active"), StoreFirst("first")]
    return Program(arch, N if unrolled else UNROLL_SAMPLES + 1, unrolled, params, tuple(body))


def check_launch(sizes, x, y, packed, lr, active, loss_out, epochs: int, record_every: int,
                 first_below=None, e_base: int = 0) -> tuple[int, int]:
    """The launch contract of every target's ``fused_train`` (kernels/fused_train.py,
    fastmlp/program_numba.py): x [N, n_in] and y [N, n_out] shared by all networks, packed a
    contiguous [P, G] float32 / float64 buffer, loss_out [ceil(epochs / record_every), G] with
    unit stride along G, x, y, lr and loss_out in the parameters' dtype, active int8 and
    first_below (when given) a contiguous [G] int32, all on the parameters' device; e_base an
    int >= 0 with e_base + epochs < 2**31.  Raises ValueError / TypeError naming the argument;
    returns (N, G)."""
    N = x.shape[0]
    if x.dim() != 2 or tuple(x.shape) != (N, sizes[0]) or tuple(y.shape) != (N, sizes[-1]):
        raise ValueError(f"fused_train: x must be [N, {sizes[0]}] and y [N, {sizes[-1]}] (shared by all "
                         f"networks), got {list(x.shape)} and {list(y.shape)}")
    G = packed.shape[1]
    P = Architecture(sizes).n_params
    if tuple(packed.shape) != (P, G) or not packed.is_contiguous():
        raise ValueError(f"fused_train: packed must be a contiguous [{P}, {G}] tensor, got {list(packed.shape)}")
    if packed.dtype not in (torch.float32, torch.float64):
        raise TypeError(f"fused_train: parameters must be float32 or float64, got {packed.dtype}")
    rows = -(-epochs // record_every)
    if tuple(loss_out.shape) != (rows, G) or (G > 1 and loss_out.stride(1) != 1):
        raise ValueError(f"fused_train: loss_out must be a [{rows}, {G}] tensor with unit stride along G")
    for name, t, dt in (("x", x, packed.dtype), ("y", y, packed.dtype), ("lr", lr, packed.dtype),
                        ("active", active, torch.int8), ("loss_out", loss_out, packed.dtype)):
        if t.dtype != dt or t.device != packed.device:
            raise ValueError(f"fused_train: {name} must be {dt} on {packed.device}, got {t.dtype} on {t.device}")
    if first_below is not None and (first_below.dtype != torch.int32 or tuple(first_below.shape) != (G,)
                                    or not first_below.is_contiguous() or first_below.device != packed.device):
        raise ValueError(f"fused_train: first_below must be a contiguous [{G}] int32 tensor on {packed.device}")
    if isinstance(e_base, bool) or not isinstance(e_base, int) or not 0 <= e_base <= 2**31 - 1 - epochs:
        raise ValueError(f"fused_train: e_base must be an int in [0, 2**31 - 1 - epochs], got {e_base!r}")
    return N, G
