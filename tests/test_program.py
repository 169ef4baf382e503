"""The one program description (fastmlp/program.py) and its Triton emitter.

The digests pin ``fused_unrolled.source(sizes, N)``: the emitter reproduced the generator's
source byte for byte when the program was split from its Triton spelling (commit 7f29ed5),
and the digests changed once since, on purpose, when the divergence freeze became a test of
the loss's bits and the derivatives products of differences (issue 17: the compiled
``(loss - loss) == 0`` froze every network on the GPU).  A new digest is a new kernel: its
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
    ((2, 5, 3, 1), 5): "4f7615d0cec5de3bd719d6870ee4d475562887118e746388b681e015adaddebd",
    ((2, 5, 3, 1), 16): "84f35e86214093795615c2f90e531c163475825b31cd519ef5646d6b13761a67",
    ((2, 5, 3, 1), 17): "74766cbd7b3ab9473dc106ba0e4fad3976f8604791a4083ade07917ad3e89713",
    ((2, 5, 3, 1), 100): "74766cbd7b3ab9473dc106ba0e4fad3976f8604791a4083ade07917ad3e89713",
    ((2, 1), 3): "6e45ceae336da331cea0a38963e81c481d15461551438a73242c410eb32ba74b",
    ((1, 1), 1): "77e6e58a9a9c597eac500b6f0f6a048f85c0a452ab91be80bcf3de5d881e4695",
    ((1, 3, 1), 7): "5c03e972a464df291e52113883ef06dd75e68743ba82a0498970df83660d27d3",
    ((3, 5, 5, 2), 4): "13cb00971bef9db6633a1d6c4941913e95a032c065bfc559ef0b53b41d04b8e7",
    ((2, 3, 1, 5, 2, 1), 5): "c11a511c32bedd3499f20866f0649565c982fbcfa9ecd53ec82c9ada8fb9abcb",
    ((2, 6, 6, 1), 5): "a855a07e013be517aa5ffa75f89c19e4c1d95d6314040a613f692ebefd16946a",
    ((2, 3, 1), 19): "aa919d970afa6c5673ce1812d6bab07f063a7be7c0f72cf8eb6b9ad5e6bf5169",
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
