"""The one program description (fastmlp/program.py) and its Triton emitter.

The digests are of ``fused_unrolled.source(sizes, N)`` as the generator wrote it before the
program was split from its Triton spelling (commit 7f29ed5): the emitter must reproduce that
source byte for byte, so the kernel's behaviour and its SASS counts (bench/roofline.py) are
unchanged by construction.
"""
import hashlib
import subprocess
import sys

import pytest

from fastmlp import program
from fastmlp.architecture import UNROLL_SAMPLES, Architecture

DIGESTS = {  # (sizes, N) -> sha256 of the generated Triton source
    ((2, 5, 3, 1), 5): "eaf1e0241fcdc17dba572433e526e3c8486c32d671382d8460a19149b47ff525",
    ((2, 5, 3, 1), 16): "8cc168974cd766a9820f531e0dfada50d22f8b6f100e2a258175525440b5f9f3",
    ((2, 5, 3, 1), 17): "01fa3c221bb299fdfedcdecc59ee7642a385831708cd9174bef448980475d20f",
    ((2, 5, 3, 1), 100): "01fa3c221bb299fdfedcdecc59ee7642a385831708cd9174bef448980475d20f",
    ((2, 1), 3): "d288c82c11bd84308b8771a066079a1c2ef09d0c3b81dafaf5603326a8ce0b3d",
    ((1, 1), 1): "e6379b277a385a1a6bb2a2c8605022f6d880d51aa0d02baec13a3e53b3119187",
    ((1, 3, 1), 7): "769eb1ac393a7fc9b82ba52a74e0ec74ae4f286b9172dbfc6efeb27a086b9958",
    ((3, 5, 5, 2), 4): "b3814d5be1a2a23b5102921539379a8ec78590bdd92a766e6cadc3dbb16aaf05",
    ((2, 3, 1, 5, 2, 1), 5): "e25782a8fd0a7dc5efc537251f00b32f3f02bdda03913f05f1e042e10351ddc3",
    ((2, 6, 6, 1), 5): "f2bc62186a3b6400a0f8e6256159c0baea162a81b15844568347b36faa106650",
    ((2, 3, 1), 19): "31bd3fc9c71d7e83abfbb53ba6251309a60c246f06e84a71bf0320b7ac7bb7cb",
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
    assert program.render_expr(program.Finite("loss"), name=lambda v: v) == "((loss - loss) == 0.0)"
