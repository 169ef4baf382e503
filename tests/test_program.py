"""The one program description (fastmlp/program.py) and its Triton emitter.

The digests pin ``fused_unrolled.source(sizes, N)``: the emitter reproduced the generator's
source byte for byte when the program was split from its Triton spelling (commit 7f29ed5),
and the digests changed once since, on purpose, when the divergence freeze became a test of
the loss's bits and the derivatives products of differences (issue 17: the compiled
``(loss - loss) == 0`` froze every network on the GPU), and E stopped being specialised; and once more when the program began to note, on every epoch, the first
epoch whose loss is below eps (issue 18: TrackBelow; e_base and RECORD_EVERY runtime arguments, not specialised, so that a
thinned record runs the machine code of a full one).  A new digest is a new kernel: its
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
    ((2, 5, 3, 1), 5): "1be8682b884b08c42644f4951a90a56e5e34e4713839ecfa0aa66c29de9e0ab3",
    ((2, 5, 3, 1), 16): "969e4d22dfd77ee3abb974e84d8217696c9491d81cf1aa57d9cfa2469f7ddde4",
    ((2, 5, 3, 1), 17): "90c5daf1c2a81deb0becac24fda7bab84f7b72c0066e1a63e0262cb75a2586e3",
    ((2, 5, 3, 1), 100): "90c5daf1c2a81deb0becac24fda7bab84f7b72c0066e1a63e0262cb75a2586e3",
    ((2, 1), 3): "b8f9200cc49dbb64919e8c43d3b3dfba8c48e71d4af1ba5adc524bdac1f0ae4e",
    ((1, 1), 1): "d157c5154130d1748e7bb4cd9f75f2b3900b0bad948e3392732bbd59b0ae65d9",
    ((1, 3, 1), 7): "66b7c040edbab25e5cfc98011a33aa0aab31e85ab09f6e2da1be0e778cfbd5fc",
    ((3, 5, 5, 2), 4): "07010345a894de282317349b6c2c74cd1a49180852de44410dcf7d5febde5feb",
    ((2, 3, 1, 5, 2, 1), 5): "d8105473859a50a7aed72743c48e39194828facbfb4c8b817756ad53260708e2",
    ((2, 6, 6, 1), 5): "fef461fae2d6ba7b21413c573788dc60ae693d57a66d8aca5305659f65a86b10",
    ((2, 3, 1), 19): "e65bfd956895223c99862734128b9be30e12db8b672af949fa6c72869a9c5d7c",
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
