"""The one program description (fastmlp/program.py) and its Triton emitter.

The digests pin ``fused_unrolled.source(sizes, N)``: the emitter reproduced the generator's
source byte for byte when the program was split from its Triton spelling (commit 7f29ed5),
and the digests changed once since, on purpose, when the divergence freeze became a test of
the loss's bits and the derivatives products of differences (issue 17: the compiled
``(loss - loss) == 0`` froze every network on the GPU), and E stopped being specialised.  A new digest is a new kernel: its
SASS counts (bench/roofline.py) and its compiled freeze (tests/test_compiled_code.py) are to
be checked again.
"""
import hashlib
import subprocess
import sys

import pytest

from fastmlp import program
from fastmlp.architecture import UNROLL_SAMPLES, Architecture

DIGESTS = {  # (sizes, N) -> sha256 of the generated Triton source
    ((2, 5, 3, 1), 5): "370a7e563393f12fbabafe961f12ccd8b0b930ff08585e98c66be7ad14a78db0",
    ((2, 5, 3, 1), 16): "4119d1a2787a6ec8004d974475afd30e72a4d4b80b87e0681e1e0ba64209c681",
    ((2, 5, 3, 1), 17): "bea22741552eefd1c0ae612428e2b22e5e31e84476e63ce76ebc516706a26e6c",
    ((2, 5, 3, 1), 100): "bea22741552eefd1c0ae612428e2b22e5e31e84476e63ce76ebc516706a26e6c",
    ((2, 1), 3): "0ae2ee7110e81ff185f7fcc7b4569c192dbb5126a5a827732da1f048093717f4",
    ((1, 1), 1): "f1f08a014bea574640b002ed476979476c7764c8dddf691c03abd4cdefae5777",
    ((1, 3, 1), 7): "8caba698cc989566601bfe2287b90f9d4ced91ef02b7ede55420b27d19e14b92",
    ((3, 5, 5, 2), 4): "25a9bcc072f29e6ac8e1c369bb960f3c632d57dd127008f92d9b633125f940ba",
    ((2, 3, 1, 5, 2, 1), 5): "abc52a82cb5183e73a6ae3166dfcbebe01b8c5c65a0d7d8a00a3434fe6be0ab4",
    ((2, 6, 6, 1), 5): "9b9868f03dfbbfcc7cba17493788c321e38e7a8b8e8727c009901afbd4a64b27",
    ((2, 3, 1), 19): "df049ccdac43c992accc1d54ae1022a5adf37b71ac0f2522140da3ee15af973a",
}


@pytest.mark.parametrize("sizes,N", list(DIGESTS), ids=[f"N{n}-" + "x".join(map(str, s)) for s, n in DIGESTS])
def test_triton_emitter_is_byte_identical(sizes, N):
    fu = pytest.importorskip("fastmlp.kernels.fused_unrolled", reason="needs triton")
    src = fu.source(list(sizes), N)
    assert hashlib.sha256(src.encode()).hexdigest() == DIGESTS[sizes, N]


def test_module_entry_prints_the_source():
    pytest.importorskip("fastmlp.kernels.fused_unrolled", reason="needs triton")
    out = subprocess.run([sys.executable, "-m", "fastmlp.kernels.fused_unrolled", "2,5,3,1", "5"], capture_output=True,
                         text=True, check=True).stdout
    assert hashlib.sha256(out.encode()).hexdigest() == DIGESTS[(2, 5, 3, 1), 5]


def test_program_imports_no_gpu_library_and_no_numba():
    code = ("import sys, fastmlp.program as p; p.build((2, 5, 3, 1), 5); "
            "print(sorted(m for m in ('triton', 'numba') if m in sys.modules))")
    assert subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          check=True).stdout.strip() == "[]"


@pytest.mark.parametrize("sizes,N", [((2, 5, 3, 1), 5), ((2, 1), 3), ((2, 3, 1, 5, 2, 1), 5), ((2, 3, 1), 19)])
def test_program_is_the_architecture(sizes, N):
    arch = Architecture(sizes)
    prog = program.build(arch, N)
    assert prog.unrolled == (N <= UNROLL_SAMPLES)
    assert len(prog.params) == arch.n_params
    stmts = list(prog.walk())
    acts = [s for s in stmts if isinstance(s, program.Let) and isinstance(s.expr, program.Act)]
    held = N if prog.unrolled else 2  # the sample loop's body is written once, after sample 0
    assert len(acts) == held * (arch.units - arch.n_in)
    assert sum(a.expr.kind == "output" for a in acts) == held * arch.n_out
    # every gradient initialised once (the first sample) before any accumulation
    grads = {f"g{p}" for p in prog.params}
    first = {}
    for s in stmts:
        if isinstance(s, program.Let) and s.name in grads:
            first.setdefault(s.name, s.acc)
    assert first == dict.fromkeys(grads, False)
    loads = [s for s in stmts if isinstance(s, program.LoadData)]
    assert len(loads) == (N if prog.unrolled else 2) * (arch.n_in + arch.n_out)
    assert sum(isinstance(s, program.SampleLoop) for s in stmts) == (not prog.unrolled)
    assert sum(isinstance(s, program.RecordLoss) for s in stmts) == 1


def test_render_expr_spells_by_target():
    e = program.Where("active", program.Sub("w", program.Mul(("step", "gw"))), "w")
    where = lambda c, a, b: f"{a} if {c} else {b}"  # noqa: E731
    assert program.render_expr(e, name=str.upper, where=where) == "W - STEP * GW if ACTIVE else W"
    # Finite has no default spelling: a target that forgets it fails at render time
    with pytest.raises(TypeError, match="Finite"):
        program.render_expr(program.Finite("loss"), name=lambda v: v)
    assert program.render_expr(program.And("active", program.Finite("loss")), finite=lambda a: f"fin({a})") \
        == "active & fin(loss)"
