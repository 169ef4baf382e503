"""numba intrinsics that work on a float's bits, for the generated CPU program
(fastmlp/program_numba.py): a bit cast and integer operations that LLVM vectorises across a
block's lanes, and that no fast-math flag can rewrite.

* :func:`pow2` builds ``2^(m - bias)`` from a biased exponent (exp2's last step);
* :func:`finite` is the divergence test (``fastmlp.program.Finite``): the exponent field is
  not all ones.

numba is imported when one of them is first asked for, never by ``import fastmlp``.
"""
from __future__ import annotations

import functools

__all__ = ["pow2", "finite"]


@functools.lru_cache(maxsize=None)
def pow2(dtype: str):
    """``2^(m - bias)`` in ``dtype`` for a biased exponent m in [0, 2 bias + 1] (0: 0.0, the
    top: inf), built from its bits (a shift, a bit cast: vectorisable), a numba intrinsic."""
    from llvmlite import ir
    from numba import types
    from numba.extending import intrinsic

    def make(ftype, bits, mant):
        @intrinsic
        def pow2(typingctx, m):
            def codegen(context, builder, sig, args):
                int_t = ir.IntType(bits)
                i = args[0] if args[0].type == int_t else builder.trunc(args[0], int_t)
                return builder.bitcast(builder.shl(i, ir.Constant(int_t, mant)), ftype)
            return (types.float32 if bits == 32 else types.float64)(m), codegen
        return pow2
    return make(ir.FloatType(), 32, 23) if dtype == "float32" else make(ir.DoubleType(), 64, 52)


@functools.lru_cache(maxsize=None)
def finite(dtype: str):
    """``x`` is neither NaN nor +-inf, tested on its bits (the exponent field is not all
    ones: a bit cast, an AND, an integer compare, vectorisable), a numba intrinsic: the
    divergence test of the program (``fastmlp.program.Finite``), which no fast-math flag
    can fold or rewrite."""
    from llvmlite import ir
    from numba import types
    from numba.extending import intrinsic

    def make(ftype, bits, mask):
        @intrinsic
        def finite(typingctx, x):
            def codegen(context, builder, sig, args):
                int_t = ir.IntType(bits)
                b = builder.and_(builder.bitcast(args[0], int_t), ir.Constant(int_t, mask))
                return builder.icmp_unsigned("!=", b, ir.Constant(int_t, mask))
            return types.boolean(types.float32 if bits == 32 else types.float64), codegen
        return finite
    return make(ir.FloatType(), 32, 0x7F800000) if dtype == "float32" else make(ir.DoubleType(), 64, 0x7FF0000000000000)
