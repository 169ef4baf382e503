"""Device helpers: the two activations and their derivatives, from the saved output.

Each activation comes with its derivative written as a function of the activation's
*output*, as ``fastmlp.engine.torch`` computes it: ``tanh'(z_in) = (1 - z_out) (1 + z_out)``
and ``sigmoid'(z_in) = z_out (1 - z_out)``; only ``z_out`` is kept per layer.  Both are
products of differences, never ``c - a * b``: the compiler contracts that into one FMA on a
GPU (fp fusion is on in Triton's compiles) and not in the interpreter or on the CPU, and
near saturation (z_out -> +-1, or 1) the two differ in most of the derivative's digits.
:func:`finite` is the divergence test of every fused kernel, on the value's bits.

Both run in compiled code (sm_80, sm_90) and in Triton's interpreter, in float32 and
float64.  Written with ``tl.exp`` only: Triton's core language has no ``tl.tanh``, and
``libdevice.tanh`` does not run in the interpreter (Triton 3.9: "cannot convert None ...
to tensor").
"""
import triton
import triton.language as tl

# Codes of the ACT constexpr of the forward kernel.
ACT_TANH = 0
ACT_SIGMOID = 1
ACTS = {"tanh": ACT_TANH, "sigmoid": ACT_SIGMOID}


@triton.jit
def tanh(x):
    """tanh(x) for float32 / float64 tensors.

    ``(1 - e) / (1 + e)`` with ``e = exp(-2|x|)`` (``e`` <= 1: never overflows) and the sign
    restored.  Its relative error grows like eps / (2|x|) near 0 because ``1 - e`` cancels
    (float32: 1.3e-2 at x = 1e-6, 3e-5 at 1e-4, 3e-7 at 0.1), so small |x| takes the odd
    Taylor series up to x**11 instead, whose relative truncation error is
    ~ (21844 / 6081075) |x|**12: 1.5e-11 at the float32 switch |x| = 0.2 (where the
    exp form is down to ~1.5e-7) and 9e-19 at the float64 switch |x| = 0.05 (exp form
    ~1e-15 there).  Both branches are computed and one is selected: no divergence.
    """
    ax = tl.abs(x)
    if x.dtype == tl.float64:
        small = ax < 0.05
    else:
        small = ax < 0.2
    e = tl.exp(-2.0 * ax)
    t = (1.0 - e) / (1.0 + e)
    t = tl.where(x < 0, -t, t)
    xs = tl.where(small, x, 0.0)  # the series only sees small |x|: no overflow for huge x
    x2 = xs * xs
    # Horner form of x - x^3/3 + 2x^5/15 - 17x^7/315 + 62x^9/2835 - 1382x^11/155925.
    p = -1382.0 / 155925.0
    p = p * x2 + 62.0 / 2835.0
    p = p * x2 - 17.0 / 315.0
    p = p * x2 + 2.0 / 15.0
    p = p * x2 - 1.0 / 3.0
    s = xs + xs * (x2 * p)
    return tl.where(small, s, t)


@triton.jit
def tanh_grad(z_out):
    """tanh' from tanh's output: ``(1 - z_out) (1 + z_out)`` (= 1 - z_out**2, but nothing
    to contract: see the module docstring)."""
    return (1.0 - z_out) * (1.0 + z_out)


@triton.jit
def sigmoid(x):
    """1 / (1 + exp(-x)) without overflow: with ``e = exp(-|x|)`` (in (0, 1]),
    ``1 / (1 + e)`` for x >= 0 and ``e / (1 + e)`` for x < 0 (which also keeps the
    relative precision of tiny outputs instead of flushing them to 0 early)."""
    e = tl.exp(-tl.abs(x))
    r = 1.0 / (1.0 + e)
    return tl.where(x >= 0, r, e * r)


@triton.jit
def sigmoid_grad(z_out):
    """sigmoid' from sigmoid's output: ``z_out (1 - z_out)`` (the lab's form)."""
    return z_out * (1.0 - z_out)


@triton.jit
def finite(x):
    """True where ``x`` is neither NaN nor +-inf, tested on its bits: the exponent field is
    not all ones.  An integer AND and compare, so no floating-point setting of the compiler
    (contraction, fast math) and no approximate instruction can change the answer; the
    float test ``(x - x) == 0`` it replaces became ``fma(a, b, -round(a * b)) == 0`` on the
    GPU when ``x = a * b`` and froze every network (../shared/gpu-runs/2026-12-04).
    kernels/aot.py's ``freeze_predicate`` checks the compiled PTX for it."""
    if x.dtype == tl.float64:
        bits = x.to(tl.int64, bitcast=True) & 0x7FF0000000000000
        ok = bits != 0x7FF0000000000000
    else:
        bits = x.to(tl.int32, bitcast=True) & 0x7F800000
        ok = bits != 0x7F800000
    return ok


@triton.jit
def tanh_exp2(x):
    """tanh(x) as ``1 - 2 / (1 + 2**(2 x log2 e))``: one exp2, one reciprocal, branch free.

    The short form for compute-bound kernels (the fused training kernels): 8 instructions on
    sm_90 (2 MUFU) against ~25 for :func:`tanh`.  Exact at the ends (exp2 overflow gives 1,
    underflow -1) and NaN in, NaN out.  Its error is *absolute*, about one ulp of 1
    (float32: 1.8e-7 at most in the interpreter; tests/test_fused.py bounds it at 5e-7 to
    leave room for the GPU's approximate exp2 and reciprocal), so the relative error of
    outputs near 0 grows like 1e-7 / |x|.  That loses nothing that training keeps: a hidden unit's output enters
    sums with O(1) terms, whose own rounding is of the same size.
    """
    return 1.0 - 2.0 / (1.0 + tl.exp2(2.8853900817779268 * x))


@triton.jit
def sigmoid_exp2(x):
    """sigmoid(x) as ``1 / (1 + 2**(-x log2 e))``: 7 instructions on sm_90.  Large negative
    x gives exactly 0 (exp2 overflows) rather than a tiny positive value."""
    return 1.0 / (1.0 + tl.exp2(-1.4426950408889634 * x))


@triton.jit
def tanh_approx(x):
    """``tanh.approx.f32``: one MUFU instruction (sm_75+), max relative error ~2**-10.7.
    GPU only (inline PTX does not run in the interpreter); never the checked default."""
    return tl.inline_asm_elementwise("tanh.approx.f32 $0, $1;", "=f,f", [x], dtype=tl.float32,
                                     is_pure=True, pack=1)


@triton.jit
def fused_hidden_act(x, FAST_TANH: tl.constexpr):
    """The fused kernels' hidden activation: :func:`tanh_exp2`, or ``tanh.approx.f32``."""
    if FAST_TANH:
        y = tanh_approx(x)
    else:
        y = tanh_exp2(x)
    return y


@triton.jit
def fused_output_act(x, FAST_TANH: tl.constexpr):
    """The fused kernels' output activation: :func:`sigmoid_exp2`, or
    ``sigmoid(x) = (1 + tanh(x / 2)) / 2`` on ``tanh.approx.f32``."""
    if FAST_TANH:
        y = 0.5 * tanh_approx(0.5 * x) + 0.5
    else:
        y = sigmoid_exp2(x)
    return y


@triton.jit
def apply_act(x, ACT: tl.constexpr):
    """``tanh`` (ACT_TANH = 0, hidden layers) or ``sigmoid`` (ACT_SIGMOID = 1, output)."""
    if ACT == 0:
        y = tanh(x)
    else:
        y = sigmoid(x)
    return y
