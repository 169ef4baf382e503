"""The one program description (fastmlp/program.py) and its Triton emitter.

The digests pin ``fused_unrolled.source(sizes, N)``: the emitter reproduced the generator's
source byte for byte when the program was split from its Triton spelling (commit 7f29ed5),
and the digests changed once since, on purpose, when the divergence freeze became a test of
the loss's bits and the derivatives products of differences (issue 17: the compiled
``(loss - loss) == 0`` froze every network on the GPU), and E stopped being specialised; and once more when the program began to note, on every epoch, the first
epoch whose loss is below eps (issue 18: TrackBelow, e_base not specialised either).  A new digest is a new kernel: its
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
    ((2, 5, 3, 1), 5): "72110c706ce7129c6c5f46fdef008ef28fee68002ae4eb06258805f02cc57a5f",
    ((2, 5, 3, 1), 16): "a1a9a52615cbe1f81e1d1e81ec4a3b161e3680631643009af86e187171ffa870",
    ((2, 5, 3, 1), 17): "337242bd0dffad9c8c6fbe244adfa0e7d12ca84b17040d3dff342b266f4a9ac2",
    ((2, 5, 3, 1), 100): "337242bd0dffad9c8c6fbe244adfa0e7d12ca84b17040d3dff342b266f4a9ac2",
    ((2, 1), 3): "9823bbf9255d56827259a762f2af2f14f03c07396c36b0405dd237b4fe5efe2e",
    ((1, 1), 1): "0581b2a4d1f2147a4b61542ddf90c836129ab57695453b1dc914f0aff948e74e",
    ((1, 3, 1), 7): "f285034b9dcdd4fe29a5020aa7e1d096604c8fd8e7adff6f38b087f2a5bbc80b",
    ((3, 5, 5, 2), 4): "145b53dc886b7b922142d647afe1164447b811ae207f798841f35826807e3650",
    ((2, 3, 1, 5, 2, 1), 5): "08001810d76ab6ec797e594ffc6b4f34579425fd1477f2f8f5af0752fae0a8dc",
    ((2, 6, 6, 1), 5): "ed8ab38083916dd9f91dbe75d724fd02dfebe881efd7be8204a22db269fb3ea9",
    ((2, 3, 1), 19): "559c3fa397a863c82cca8f3a3745d1f3baf42decca23c3959fafc86c6cdfcde1",
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
