"""The Triton kernels (fastmlp.kernels) against the torch engine, their oracle.

Without a GPU the kernels run in Triton's interpreter (tests/conftest.py sets
TRITON_INTERPRET=1 before anything imports them) on odd tiny shapes; an ahead-of-time
compile (tests/aot_compile.py, in a subprocess without the interpreter) checks that every
configuration the launchers choose also compiles for sm_80 and sm_90, without spills.
Tests marked ``cuda`` run the same comparisons at G = 65536 on a GPU.

Inputs of the op tests are small dyadic rationals (k / 8, k / 16): every product and sum
is exact in float32, so a float32 kernel must match the float64 oracle to the rounding of
its activations alone -- any indexing slip shows as an O(1) error, at tight tolerances.
"""
from __future__ import annotations

import importlib
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from fastmlp import Population, train
from fastmlp.engine import torch as E
from fastmlp.population import as_network_minor, network_minor
from fastmlp.reference import train as reference_train
from tests.conftest import assert_rel_close, five_points, triton_interpreter_broken
from tests.trajectories import assert_insensitive

K = pytest.importorskip("fastmlp.kernels", reason="triton is not installed")
_launch = importlib.import_module("fastmlp.kernels._launch")
_fwd = importlib.import_module("fastmlp.kernels.linear_act")
_od = importlib.import_module("fastmlp.kernels.output_delta")
_bwd = importlib.import_module("fastmlp.kernels.delta_bwd")
_upd = importlib.import_module("fastmlp.kernels.grad_update")

CUDA = torch.cuda.is_available()
INTERPRET = _launch.interpreting()
# Small-shape tests: on the GPU when there is one (compiled kernels), else in the interpreter.
DEVICE = "cpu" if INTERPRET else "cuda"
if not CUDA and not INTERPRET:
    pytest.skip("no CUDA device and TRITON_INTERPRET is off: the kernels cannot run", allow_module_level=True)

cuda = pytest.mark.cuda
needs_cuda = pytest.mark.skipif(not CUDA, reason="needs a CUDA device")
_BROKEN = triton_interpreter_broken() if INTERPRET else None


@pytest.fixture(autouse=True)
def _interpreter_runs(request):
    """In the interpreter, the tests that launch kernels need one that works (the ahead-of-time
    compiles run in a subprocess without it)."""
    if _BROKEN and "aot" not in request.fixturenames:
        pytest.skip(_BROKEN)


WIDTHS = [1, 2, 3, 5, 17]
GS = [1, 3]
NS = [1, 5, 7]
LAYOUTS = ["nm", "contig"]  # network-minor (the fast layout) and plain contiguous


# ---------------------------------------------------------------------------------------
# Helpers
# ---------------------------------------------------------------------------------------
def dyadic(shape, gen, denom=8, lo=-16, hi=16, dtype=torch.float32):
    """Random k / denom, k in [lo, hi]: exact in float32, products and short sums too.
    On the generator's device (a CUDA generator draws the large GPU cases in place)."""
    return (torch.randint(lo, hi + 1, shape, generator=gen, device=gen.device, dtype=torch.int32) / denom).to(dtype)


def arrange(t: torch.Tensor, layout: str, per_network: bool = True) -> torch.Tensor:
    """A copy of ``t`` on DEVICE in ``layout``: "nm" network-minor, "contig" contiguous,
    "strided" every other network of a twice as large buffer (stride 2 along G, padded).
    Shared tensors (per_network=False): "nm" is column-major, the others row-major."""
    t = t.to(DEVICE)
    if not per_network:
        return t.t().contiguous().t() if layout == "nm" else t.contiguous()
    if layout == "nm":
        return as_network_minor(t.clone())
    if layout == "contig":
        return t.contiguous().clone()
    if layout == "strided":
        big = torch.full((2 * t.shape[0], *t.shape[1:]), float("nan"), dtype=t.dtype, device=t.device)
        big[::2] = t
        return big[::2]
    raise ValueError(layout)


def nan_buffer(shape, dtype, layout: str) -> torch.Tensor:
    """An output buffer filled with NaN: an element no program writes fails the test."""
    return arrange(torch.full(shape, float("nan"), dtype=dtype), layout)


def f64(t):
    return None if t is None else t.double()


def case_id(G, N, sizes, shared, layout, extra=""):
    return f"G{G}-N{N}-{'x'.join(map(str, sizes))}-{'shared' if shared else 'pernet'}-{layout}{extra}"


def _cases(two_widths: bool):
    """Every width (pair), shared and per-network x, the two layouts alternating between
    pairs (so each of the four combinations meets every width); G, N cycle through their
    values.  (All four combinations for every pair would double the interpreter's time.)"""
    out = []
    pairs = [(a, b) for a in WIDTHS for b in WIDTHS] if two_widths else [(None, b) for b in WIDTHS]
    i = 0
    for p, (n_in, n_out) in enumerate(pairs):
        for shared in (True, False):
            for layout in (LAYOUTS if not two_widths else [LAYOUTS[(p + shared) % 2]]):
                G, N = GS[i % 2], NS[(i // 2) % 3]
                sizes = (n_out,) if n_in is None else (n_in, n_out)
                out.append(pytest.param(G, N, n_in, n_out, shared, layout, id=case_id(G, N, sizes, shared, layout)))
                i += 1
    # Several programs along G (BLOCK_G = 64 for width 5) and along the width (chunks of 32),
    # stride-2 networks, and the widest layer.
    for G, N, n_in, n_out, shared, layout in [(70, 3, 5, 5, False, "strided"), (3, 2, 33, 40, False, "nm"),
                                              (2, 3, 40, 33, True, "contig"), (1, 1, 128, 33, False, "nm"),
                                              (2, 2, 3, 128, True, "nm")]:
        sizes = (n_out,) if not two_widths else (n_in, n_out)
        out.append(pytest.param(G, N, n_in, n_out, shared, layout, id=case_id(G, N, sizes, shared, layout)))
    return out


PAIR_CASES = _cases(two_widths=True)
OUT_CASES = _cases(two_widths=False)


def _fwd_inputs(G, N, n_in, n_out, shared, layout, dtype, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = dyadic((N, n_in) if shared else (G, N, n_in), g, 8, dtype=dtype)
    w = dyadic((G, n_in, n_out), g, 16, dtype=dtype)
    b = dyadic((G, n_out), g, 16, dtype=dtype)
    return arrange(x, layout, not shared), arrange(w, layout), arrange(b, layout)


# ---------------------------------------------------------------------------------------
# The four ops, small shapes (interpreter on CPU, compiled on a GPU)
# ---------------------------------------------------------------------------------------
@pytest.mark.parametrize("G,N,n_in,n_out,shared,layout", PAIR_CASES)
def test_linear_act_fwd(G, N, n_in, n_out, shared, layout):
    dtype = torch.float32
    x, w, b = _fwd_inputs(G, N, n_in, n_out, shared, layout, dtype)
    for act in ("tanh", "sigmoid"):
        out = nan_buffer((G, N, n_out), dtype, layout)
        got = K.linear_act_fwd(x, w, b, act, out=out)
        assert got is out
        assert_rel_close(got, E.linear_act_fwd(f64(x), f64(w), f64(b), act), dtype, msg=act)


@pytest.mark.parametrize("G,N,n_out,shared,layout", [(p.values[0], p.values[1], p.values[3], p.values[4], p.values[5])
                                                      for p in OUT_CASES], ids=[p.id for p in OUT_CASES])
def test_output_delta(G, N, n_out, shared, layout):
    dtype = torch.float32
    g = torch.Generator().manual_seed(1)
    z = arrange(dyadic((G, N, n_out), g, 64, 1, 63, dtype), layout)      # sigmoid outputs in (0, 1)
    y = arrange(dyadic((N, n_out) if shared else (G, N, n_out), g, 1, 0, 1, dtype), layout, not shared)
    delta, loss = nan_buffer((G, N, n_out), dtype, layout), torch.full((G,), float("nan"), dtype=dtype, device=DEVICE)
    got_delta, got_loss = K.output_delta(z, y, delta=delta, loss=loss)
    assert got_delta is delta and got_loss is loss
    ref_delta, ref_loss = E.output_delta(f64(z), f64(y))
    assert_rel_close(delta, ref_delta, dtype, msg="delta")
    assert_rel_close(loss, ref_loss, dtype, msg="loss")


@pytest.mark.parametrize("G,N,n_in,n_out,shared,layout", PAIR_CASES)
def test_delta_bwd(G, N, n_in, n_out, shared, layout):
    # (`shared` does not apply: z_prev is a hidden layer's output, always per network.)
    dtype = torch.float32
    g = torch.Generator().manual_seed(2)
    delta = arrange(dyadic((G, N, n_out), g, 16, dtype=dtype), layout)
    w = arrange(dyadic((G, n_in, n_out), g, 16, dtype=dtype), layout)
    z_prev = arrange(dyadic((G, N, n_in), g, 64, -63, 63, dtype), layout)  # tanh outputs in (-1, 1)
    out = nan_buffer((G, N, n_in), dtype, layout)
    assert K.delta_bwd(delta, w, z_prev, out=out) is out
    assert_rel_close(out, E.delta_bwd(f64(delta), f64(w), f64(z_prev)), dtype)


def _update_inputs(G, N, n_in, n_out, shared, layout, dtype, seed=3):
    g = torch.Generator().manual_seed(seed)
    z_prev = arrange(dyadic((N, n_in) if shared else (G, N, n_in), g, 8, dtype=dtype), layout, not shared)
    delta = arrange(dyadic((G, N, n_out), g, 16, dtype=dtype), layout)
    w = arrange(dyadic((G, n_in, n_out), g, 16, dtype=dtype), layout)
    b = arrange(dyadic((G, n_out), g, 16, dtype=dtype), layout)
    lr = arrange(dyadic((G,), g, 8, 1, 4, dtype), layout)                  # 0.125 .. 0.5
    return z_prev, delta, w, b, lr


@pytest.mark.parametrize("G,N,n_in,n_out,shared,layout", PAIR_CASES)
def test_grad_update(G, N, n_in, n_out, shared, layout):
    dtype = torch.float32
    z_prev, delta, w, b, lr = _update_inputs(G, N, n_in, n_out, shared, layout, dtype)
    w_ref, b_ref = f64(w).clone(), f64(b).clone()
    wg_ref, bg_ref = E.grad_update(f64(z_prev), f64(delta), w_ref, b_ref, f64(lr))
    wg, bg = nan_buffer(w.shape, dtype, layout), nan_buffer(b.shape, dtype, layout)
    frozen = torch.zeros(G, dtype=torch.bool, device=DEVICE) if G > 1 else None  # both paths
    got = K.grad_update(z_prev, delta, w, b, lr, frozen=frozen, weight_grad=wg, bias_grad=bg)
    assert got[0] is wg and got[1] is bg
    assert_rel_close(wg, wg_ref, dtype, msg="weight_grad")
    assert_rel_close(bg, bg_ref, dtype, msg="bias_grad")
    assert_rel_close(w, w_ref, dtype, msg="w")
    assert_rel_close(b, b_ref, dtype, msg="b")


@pytest.mark.parametrize("shared", [True, False], ids=["shared", "pernet"])
def test_grad_update_without_gradient_buffers(shared):
    dtype = torch.float32
    z_prev, delta, w, b, lr = _update_inputs(3, 5, 5, 3, shared, "nm", dtype)
    w_ref, b_ref = f64(w).clone(), f64(b).clone()
    E.grad_update(f64(z_prev), f64(delta), w_ref, b_ref, f64(lr))
    assert K.grad_update(z_prev, delta, w, b, lr) == (None, None)
    assert_rel_close(w, w_ref, dtype)
    assert_rel_close(b, b_ref, dtype)


@pytest.mark.parametrize("engine", ["torch", "triton"])
def test_engine_grad_update_keep_grads_false(engine):
    # What the training loop asks: the same update, bitwise, and no gradients back; the
    # Triton engine does not write the given buffers at all (they stay NaN).
    ops = importlib.import_module(f"fastmlp.engine.{engine}")
    dtype = torch.float32
    z_prev, delta, w, b, lr = _update_inputs(3, 5, 5, 3, True, "nm", dtype)
    w1, b1, w2, b2 = w.clone(), b.clone(), w.clone(), b.clone()
    frozen = torch.tensor([False, True, False], device=w.device)
    ops.grad_update(z_prev, delta, w1, b1, lr, frozen=frozen)
    wg, bg = nan_buffer(w.shape, dtype, "nm"), nan_buffer(b.shape, dtype, "nm")
    assert ops.grad_update(z_prev, delta, w2, b2, lr, frozen=frozen, weight_grad=wg, bias_grad=bg,
                           keep_grads=False) == (None, None)
    assert torch.equal(w1, w2) and torch.equal(b1, b2) and not torch.equal(w1, w)
    if engine == "triton":
        assert torch.isnan(wg).all() and torch.isnan(bg).all()


@pytest.mark.parametrize("layout", ["nm", "contig", "strided"])
def test_grad_update_frozen_networks_bitwise_untouched(layout):
    dtype = torch.float32
    G, N, n_in, n_out = 4, 5, 3, 2
    z_prev, delta, w, b, lr = _update_inputs(G, N, n_in, n_out, False, layout, dtype)
    delta[1] = float("nan")                      # a diverged network: its gradient is nan
    w[2, 0, 0] = float("inf")
    frozen = torch.tensor([False, True, True, False], device=DEVICE)
    w0, b0 = w.clone(), b.clone()
    w_ref, b_ref = f64(w).clone(), f64(b).clone()
    wg_ref, bg_ref = E.grad_update(f64(z_prev), f64(delta), w_ref, b_ref, f64(lr), frozen=frozen)
    wg, bg = nan_buffer(w.shape, dtype, layout), nan_buffer(b.shape, dtype, layout)
    K.grad_update(z_prev, delta, w, b, lr, frozen=frozen, weight_grad=wg, bias_grad=bg)
    for g in (1, 2):
        assert torch.equal(w[g].view(torch.int32), w0[g].view(torch.int32)), f"frozen network {g}'s w moved"
        assert torch.equal(b[g].view(torch.int32), b0[g].view(torch.int32)), f"frozen network {g}'s b moved"
    for g in (0, 3):
        assert_rel_close(w[g], w_ref[g], dtype)
        assert_rel_close(b[g], b_ref[g], dtype)
    assert_rel_close(wg, wg_ref, dtype)  # 0 for frozen networks, as the torch engine
    assert_rel_close(bg, bg_ref, dtype)


@pytest.mark.parametrize("G,N,n_in,n_out,shared,layout", [
    pytest.param(3, 5, 2, 5, True, "nm", id=case_id(3, 5, (2, 5), True, "nm")),
    pytest.param(1, 7, 17, 3, False, "contig", id=case_id(1, 7, (17, 3), False, "contig")),
    pytest.param(3, 1, 5, 17, False, "nm", id=case_id(3, 1, (5, 17), False, "nm")),
    pytest.param(70, 2, 3, 1, True, "strided", id=case_id(70, 2, (3, 1), True, "strided")),
])
def test_float64_ops(G, N, n_in, n_out, shared, layout):
    """float64 kernels on random (not dyadic) values at the float64 tolerance."""
    dtype = torch.float64
    g = torch.Generator().manual_seed(4)
    rnd = lambda *s: torch.randn(*s, generator=g, dtype=dtype)  # noqa: E731
    x = arrange(rnd(*((N, n_in) if shared else (G, N, n_in))), layout, not shared)
    w, b = arrange(rnd(G, n_in, n_out), layout), arrange(rnd(G, n_out), layout)
    for act in ("tanh", "sigmoid"):
        assert_rel_close(K.linear_act_fwd(x, w, b, act, out=nan_buffer((G, N, n_out), dtype, layout)),
                         E.linear_act_fwd(x, w, b, act), msg=act)
    z = torch.sigmoid(arrange(rnd(G, N, n_out), layout))
    y = arrange(torch.rand(*((N, n_out) if shared else (G, N, n_out)), generator=g, dtype=dtype), layout, not shared)
    d, loss = K.output_delta(z, y, delta=nan_buffer((G, N, n_out), dtype, layout))
    d_ref, loss_ref = E.output_delta(z, y)
    assert_rel_close(d, d_ref, msg="delta")
    assert_rel_close(loss, loss_ref, msg="loss")
    zp = torch.tanh(arrange(rnd(G, N, n_in), layout))
    assert_rel_close(K.delta_bwd(d, w, zp, out=nan_buffer((G, N, n_in), dtype, layout)), E.delta_bwd(d, w, zp))
    lr = arrange(torch.rand(G, generator=g, dtype=dtype), layout)
    zp = x if shared else zp
    w2, b2 = w.clone(), b.clone()
    wg_ref, bg_ref = E.grad_update(zp, d, w2, b2, lr)
    wg, bg = K.grad_update(zp, d, w, b, lr, weight_grad=nan_buffer(w.shape, dtype, layout),
                           bias_grad=nan_buffer(b.shape, dtype, layout))
    for a, e, name in [(wg, wg_ref, "weight_grad"), (bg, bg_ref, "bias_grad"), (w, w2, "w"), (b, b2, "b")]:
        assert_rel_close(a, e, msg=name)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=["f32", "f64"])
def test_activations_over_the_range(dtype):
    """tanh / sigmoid through a 1-input layer (w = 1, b = 0): relative accuracy from 1e-30 to
    the saturated tails, across the series / exp switch points, without overflow."""
    mags = [0.0, 1e-30, 1e-6, 1e-4, 0.01, 0.049, 0.05, 0.051, 0.1, 0.199, 0.2, 0.201, 0.5, 1.0, 2.0, 5.0,
            9.0, 20.0, 50.0, 100.0, 1e4, 1e30]
    v = torch.tensor(mags + [-m for m in mags[1:]], dtype=dtype)
    x = v[:, None].to(DEVICE)                                       # shared x [N, 1]
    w = torch.ones(1, 1, 1, dtype=dtype, device=DEVICE)
    b = torch.zeros(1, 1, dtype=dtype, device=DEVICE)
    for act, fn in (("tanh", torch.tanh), ("sigmoid", torch.sigmoid)):
        got = K.linear_act_fwd(x, w, b, act)[0, :, 0]
        assert torch.isfinite(got).all(), act
        assert_rel_close(got, fn(v.double()), dtype, msg=act)


def test_int64_indexing_path_matches():
    """The IDX64 variant (chosen when an offset can pass 2**31 - 1) computes the same."""
    x, w, b = _fwd_inputs(3, 5, 5, 3, False, "nm", torch.float32)
    ref = K.linear_act_fwd(x, w, b, "tanh")
    launch = _fwd._launch_args(x, w, b, "tanh", out := nan_buffer((3, 5, 3), torch.float32, "nm"))
    assert launch.constexprs["IDX64"] is False
    launch.constexprs["IDX64"] = True
    launch()
    assert torch.equal(out, ref)
    z_prev, delta, w, b, lr = _update_inputs(3, 5, 5, 3, True, "nm", torch.float32)
    w2, b2 = w.clone(), b.clone()
    K.grad_update(z_prev, delta, w, b, lr)
    launch = _upd._launch_args(z_prev, delta, w2, b2, lr, None, None, None)
    launch.constexprs["IDX64"] = True
    launch()
    assert torch.equal(w, w2) and torch.equal(b, b2)


def test_needs_int64_rule():
    meta = torch.device("meta")
    assert not _launch.needs_int64(torch.empty(2**20, 5, 5, device=meta))
    assert not _launch.needs_int64(torch.empty(2**24, 16, 8, device=meta))             # 2**31 elements: fits
    assert _launch.needs_int64(torch.empty(2**24 + 1, 16, 8, device=meta))
    assert not _launch.needs_int64(torch.empty(1, device=meta).expand(2**32))          # stride 0


# ---------------------------------------------------------------------------------------
# Launcher validation
# ---------------------------------------------------------------------------------------
def _ok_fwd(dtype=torch.float32):
    return _fwd_inputs(3, 5, 2, 5, False, "nm", dtype)


def test_launchers_reject_shape_mismatches():
    x, w, b = _ok_fwd()
    with pytest.raises(ValueError, match="x must be"):
        K.linear_act_fwd(x[..., :1], w, b, "tanh")
    with pytest.raises(ValueError, match="b must have shape"):
        K.linear_act_fwd(x, w, b[:, :2], "tanh")
    with pytest.raises(ValueError, match="out must have shape"):
        K.linear_act_fwd(x, w, b, "tanh", out=torch.empty(3, 5, 4, device=DEVICE))
    with pytest.raises(ValueError, match="act must be"):
        K.linear_act_fwd(x, w, b, "relu")
    z = torch.rand(3, 5, 1, device=DEVICE)
    with pytest.raises(ValueError, match="y must be"):
        K.output_delta(z, torch.rand(4, 1, device=DEVICE))
    with pytest.raises(ValueError, match="z_prev must have shape"):
        K.delta_bwd(torch.rand(3, 5, 5, device=DEVICE), w, torch.rand(3, 5, 3, device=DEVICE))
    z_prev, delta, w, b, lr = _update_inputs(3, 5, 2, 5, False, "nm", torch.float32)
    with pytest.raises(ValueError, match="lr must have shape"):
        K.grad_update(z_prev, delta, w, b, lr[:2])
    with pytest.raises(ValueError, match="z_prev must be"):
        K.grad_update(z_prev[:, :4], delta, w, b, lr)
    with pytest.raises(TypeError, match="frozen must be a bool"):
        K.grad_update(z_prev, delta, w, b, lr, frozen=torch.zeros(3, device=DEVICE))
    with pytest.raises(ValueError, match="at least one network"):
        K.linear_act_fwd(x[:, :0], w, b, "tanh")


@pytest.mark.parametrize("op", ["linear_act_fwd", "output_delta", "delta_bwd", "grad_update"])
def test_width_over_the_limit_names_the_torch_backend(op):
    big = _launch.MAX_WIDTH + 1
    t = lambda *s: torch.zeros(*s, device=DEVICE)  # noqa: E731
    with pytest.raises(ValueError, match=rf"up to {_launch.MAX_WIDTH}.*backend='torch'"):
        if op == "linear_act_fwd":
            K.linear_act_fwd(t(2, big), t(1, big, 1), t(1, 1), "tanh")
        elif op == "output_delta":
            K.output_delta(t(1, 2, big), t(2, big))
        elif op == "delta_bwd":
            K.delta_bwd(t(1, 2, 1), t(1, big, 1), t(1, 2, big))
        else:
            K.grad_update(t(2, 1), t(1, 2, big), t(1, 1, big), t(1, big), t(1))


def test_launchers_reject_dtypes_and_devices(monkeypatch):
    x, w, b = _ok_fwd()
    with pytest.raises(TypeError, match="float32 or float64.*backend='torch'"):
        K.linear_act_fwd(x.half(), w.half(), b.half(), "tanh")
    with pytest.raises(TypeError, match="float32 or float64"):
        K.output_delta(torch.ones(1, 2, 1, dtype=torch.int64, device=DEVICE), torch.ones(2, 1, device=DEVICE))
    with pytest.raises(TypeError, match="expected torch.float32"):
        K.linear_act_fwd(x.double(), w, b, "tanh")
    with pytest.raises(TypeError, match="torch.Tensor"):
        K.delta_bwd([[1.0]], w, w)
    if INTERPRET:  # CPU tensors are refused unless the interpreter is on
        monkeypatch.setenv("TRITON_INTERPRET", "0")
        with pytest.raises(ValueError, match="CUDA.*backend='torch'"):
            K.linear_act_fwd(x, w, b, "tanh")
    else:  # on a GPU: CPU tensors are refused, mixed devices too
        with pytest.raises(ValueError, match="CUDA"):
            K.linear_act_fwd(x.cpu(), w.cpu(), b.cpu(), "tanh")
        with pytest.raises(ValueError, match="is on"):
            K.linear_act_fwd(x.cpu(), w, b, "tanh")


# ---------------------------------------------------------------------------------------
# Training runs: triton vs torch engine vs the reference engine
# ---------------------------------------------------------------------------------------
def _train_three_ways(sizes, N, seeds, epochs, lr, dtype, x, y):
    pops = {k: Population(sizes, seeds, dtype=dtype, device=DEVICE) for k in ("triton", "torch")}
    # The reference engine, the oracle, trains on the CPU whatever DEVICE is (a CPU copy's networks).
    nets = [pops["torch"].to("cpu").network(i) for i in range(len(seeds))]
    results = {k: train(x, y, pops[k], epochs, lr, backend=k, progress=False) for k in pops}
    return pops, nets, results


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32], ids=["f64", "f32"])
def test_training_matches_torch_engine_and_reference(dtype):
    """The lab's setup, three seeds, 12 epochs in the interpreter (20 on a GPU): loss curves and
    final weights."""
    x, y = five_points()
    seeds, epochs, lr = [0, 7, 12345], 12 if INTERPRET else 20, 0.25
    # insensitive over the whole run at the dtype's tolerance, measured (docs/testing.md):
    # every epoch and parameter is compared tightly
    assert_insensitive(x, y, Population([2, 5, 3, 1], seeds, dtype=dtype), epochs, lr, dtype)
    pops, nets, r = _train_three_ways([2, 5, 3, 1], 5, seeds, epochs, lr, dtype, x, y)
    assert r["triton"].backend == "triton" and not r["triton"].diverged.any()
    assert_rel_close(r["triton"].losses, r["torch"].losses, dtype, msg="loss curves vs torch engine")
    assert_rel_close(r["triton"].final_loss, r["torch"].final_loss, dtype)
    for l in range(3):
        assert_rel_close(pops["triton"].weights[l], pops["torch"].weights[l], dtype, msg=f"W{l}")
        assert_rel_close(pops["triton"].biases[l], pops["torch"].biases[l], dtype, msg=f"b{l}")
    for i, net in enumerate(nets):
        net, ref_losses = reference_train(x.to(dtype), y.to(dtype), net, epochs, lr)
        assert_rel_close(r["triton"].losses[i], ref_losses, dtype, msg=f"loss curve of network {i}")
        for l, layer in enumerate(net.layers):
            assert_rel_close(pops["triton"].weights[l][i], layer.get_weight(), dtype, msg=f"net {i} W{l}")
            assert_rel_close(pops["triton"].biases[l][i], layer.get_bias(), dtype, msg=f"net {i} b{l}")


def test_training_odd_network_per_network_data():
    """Per-network x and y, widths 3-17-2, N = 4, float64, 5 epochs, against the reference."""
    sizes, N, G, epochs, lr = [3, 17, 2], 4, 2, 5, 0.5
    g = torch.Generator().manual_seed(5)
    x = torch.rand(G, N, 3, generator=g, dtype=torch.float64) * 4 - 2
    y = (torch.rand(G, N, 2, generator=g) > 0.5).double()
    assert_insensitive(x, y, Population(sizes, [3, 4], dtype=torch.float64), epochs, lr, torch.float64)
    pops, nets, r = _train_three_ways(sizes, N, [3, 4], epochs, lr, torch.float64, x, y)
    assert_rel_close(r["triton"].losses, r["torch"].losses)
    for i, net in enumerate(nets):
        net, ref_losses = reference_train(x[i], y[i], net, epochs, lr)
        assert_rel_close(r["triton"].losses[i], ref_losses)
        for l, layer in enumerate(net.layers):
            assert_rel_close(pops["triton"].weights[l][i], layer.get_weight())


@pytest.mark.filterwarnings("ignore:invalid value encountered:RuntimeWarning")  # inf * 0, on purpose
def test_training_divergence_is_isolated():
    """A network with an infinite weight is frozen; the others train as without it."""
    x, y = five_points()
    G, bad, epochs = 4, 2, 3
    pop, ref = Population([2, 5, 3, 1], G, device=DEVICE), Population([2, 5, 3, 1], G, device=DEVICE)
    pop.weights[1][bad, 2, 1] = float("inf")
    frozen_w0 = pop.weights[0][bad].clone()
    r = train(x, y, pop, epochs, 0.25, backend="triton")
    r_ref = train(x, y, ref, epochs, 0.25, backend="triton")
    assert r.diverged.tolist() == [g == bad for g in range(G)]
    others = torch.arange(G, device=r.losses.device) != bad
    assert torch.equal(r.losses[others], r_ref.losses[others])
    assert torch.equal(pop.weights[0][bad], frozen_w0)


# ---------------------------------------------------------------------------------------
# Ahead-of-time compile for sm_80 / sm_90 (no GPU needed)
# ---------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def aot():
    script = Path(__file__).with_name("aot_compile.py")
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    env["PYTHONPATH"] = os.pathsep.join([str(Path(__file__).parents[1]), env.get("PYTHONPATH", "")])
    proc = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, env=env, timeout=600)
    assert proc.returncode == 0, f"aot_compile.py failed:\n{proc.stderr[-4000:]}"
    return json.loads(proc.stdout.strip().splitlines()[-1])


@pytest.mark.slow
@pytest.mark.xdist_group("aot_kernels")
def test_aot_compile_every_launch_for_sm80_and_sm90(aot):
    rows = aot["rows"]
    assert {r["cap"] for r in rows} == {80, 90}
    kernels = {r["kernel"] for r in rows}
    assert kernels == {"_linear_act_fwd_kernel", "_output_delta_kernel", "_delta_bwd_kernel", "_grad_update_kernel"}
    configs = {r["config"] for r in rows}
    assert any("lab" in c and "shared-x" in c for c in configs) and any("per-net-x" in c for c in configs)
    for width in (32, 64, 128):
        assert any(c.startswith(f"{width}-") for c in configs)
    print(f"\nAOT (triton {aot['triton']}): {aot['compiled']} kernels in {aot['seconds']} s; "
          f"registers / stack bytes per target")
    print(f"{'configuration':30s} {'op':22s} {'sm_80':>9s} {'sm_90':>9s}  BLOCK_G x BLOCK_W")
    by_key = {}
    for r in rows:
        by_key.setdefault((r["config"], r["op"]), {})[r["cap"]] = r
    for (config, op), caps in by_key.items():
        c = caps[80]["constexprs"]
        bw = c.get("BLOCK_J", c.get("BLOCK_I"))
        print(f"{config:30s} {op:22s} " + " ".join(f"{caps[cap]['regs']:>5d}/{caps[cap]['stack']:<3d}" for cap in (80, 90))
              + f"  {c['BLOCK_G']} x {bw}")
    assert all(r["local"] == 0 for r in rows), "local memory in a kernel"


@pytest.mark.slow
@pytest.mark.xdist_group("aot_kernels")
def test_aot_lab_network_has_no_spills(aot):
    lab = [r for r in aot["rows"] if r["group"] == "lab"]
    assert lab
    spilled = [(r["config"], r["op"], r["cap"], r["stack"]) for r in lab if r["stack"] or r["local"]]
    assert not spilled, f"spills (stack bytes) in lab-network kernels: {spilled}"


# ---------------------------------------------------------------------------------------
# On a GPU: the same comparisons at G = 65536
# ---------------------------------------------------------------------------------------
G_GPU = 65536
GPU_CASES = [  # (n_in, n_out, N): the lab's layers, odd widths, several width chunks, the widest
    (2, 5, 5), (5, 3, 5), (3, 1, 5), (17, 5, 7), (5, 33, 3), (128, 128, 2)]


@cuda
@needs_cuda
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=["f32", "f64"])
@pytest.mark.parametrize("shared", [True, False], ids=["shared", "pernet"])
@pytest.mark.parametrize("n_in,n_out,N", GPU_CASES, ids=[f"{a}x{b}-N{n}" for a, b, n in GPU_CASES])
def test_ops_at_scale_cuda(n_in, n_out, N, shared, dtype):
    # G = 65536, except for 128 x 128 (a float64 weight tensor alone would be 8.6 GB): 4096.
    G, dev = (G_GPU if n_in * n_out <= 1024 else 4096), "cuda"
    gen = torch.Generator(device=dev).manual_seed(n_in * 1000 + n_out)
    nm = lambda t: as_network_minor(t.to(dev))  # noqa: E731
    nan = lambda shape: nm(torch.full(shape, float("nan"), dtype=dtype))  # noqa: E731
    x = dyadic((N, n_in), gen, 8, dtype=dtype).to(dev) if shared else nm(dyadic((G, N, n_in), gen, 8, dtype=dtype))
    w, b = nm(dyadic((G, n_in, n_out), gen, 16, dtype=dtype)), nm(dyadic((G, n_out), gen, 16, dtype=dtype))
    for act in ("tanh", "sigmoid"):
        assert_rel_close(K.linear_act_fwd(x, w, b, act, out=nan((G, N, n_out))),
                         E.linear_act_fwd(f64(x), f64(w), f64(b), act), dtype, msg=act)
    z = nm(dyadic((G, N, n_out), gen, 64, 1, 63, dtype))
    y = dyadic((N, n_out), gen, 1, 0, 1, dtype).to(dev) if shared else nm(dyadic((G, N, n_out), gen, 1, 0, 1, dtype))
    delta, loss = K.output_delta(z, y, delta=nan((G, N, n_out)))
    d_ref, l_ref = E.output_delta(f64(z), f64(y))
    assert_rel_close(delta, d_ref, dtype, msg="delta")
    assert_rel_close(loss, l_ref, dtype, msg="loss")
    delta = nm(dyadic((G, N, n_out), gen, 16, dtype=dtype))
    zp = nm(dyadic((G, N, n_in), gen, 64, -63, 63, dtype))
    assert_rel_close(K.delta_bwd(delta, w, zp, out=nan((G, N, n_in))), E.delta_bwd(f64(delta), f64(w), f64(zp)),
                     dtype, msg="delta_bwd")
    lr = nm(dyadic((G,), gen, 8, 1, 4, dtype))
    frozen = torch.zeros(G, dtype=torch.bool, device=dev)
    frozen[::7] = True
    zp = x if shared else nm(dyadic((G, N, n_in), gen, 8, dtype=dtype))
    w_ref, b_ref = f64(w).clone(), f64(b).clone()
    wg_ref, bg_ref = E.grad_update(f64(zp), f64(delta), w_ref, b_ref, f64(lr), frozen=frozen)
    w0 = w.clone()
    wg, bg = K.grad_update(zp, delta, w, b, lr, frozen=frozen, weight_grad=nan(w.shape), bias_grad=nan(b.shape))
    for a, e, name in [(wg, wg_ref, "weight_grad"), (bg, bg_ref, "bias_grad"), (w, w_ref, "w"), (b, b_ref, "b")]:
        assert_rel_close(a, e, dtype, msg=name)
    assert torch.equal(w[frozen], w0[frozen])


@cuda
@needs_cuda
def test_training_at_scale_cuda():
    """Lab network, G = 65536, 20 epochs: triton vs torch engine (float64: curves and weights;
    float32: curves), and a few seeds vs the reference engine."""
    x, y = five_points()
    seeds, epochs, lr = G_GPU, 20, 0.25
    for dtype in (torch.float64, torch.float32):  # measured insensitive (every 256th network)
        assert_insensitive(x, y, Population([2, 5, 3, 1], torch.arange(G_GPU)[::256], dtype=dtype), epochs, lr, dtype)
    pops, nets, r = {}, None, {}
    for dtype in (torch.float64, torch.float32):
        for k in ("triton", "torch"):
            pops[k, dtype] = Population([2, 5, 3, 1], seeds, dtype=dtype, device="cuda")
        nets = nets or [pops["torch", torch.float64].to("cpu").network(i) for i in (0, 1, G_GPU - 1)]
        for k in ("triton", "torch"):
            r[k, dtype] = train(x, y, pops[k, dtype], epochs, lr, backend=k, progress=False)
        assert r["triton", dtype].backend == "triton"
        assert_rel_close(r["triton", dtype].losses, r["torch", dtype].losses, dtype, msg=f"{dtype} loss curves")
    for l in range(3):
        assert_rel_close(pops["triton", torch.float64].weights[l], pops["torch", torch.float64].weights[l])
    for i, net in zip((0, 1, G_GPU - 1), nets):
        net, ref_losses = reference_train(x.double(), y.double(), net, epochs, lr)
        assert_rel_close(r["triton", torch.float64].losses[i], ref_losses)


@cuda
@needs_cuda
def test_lab_network_registers_and_spills_cuda():
    """The compiled kernels of one lab-network epoch on this GPU: registers, no spills."""
    from tests.aot_compile import training_launches

    rows = []
    for x_shared in (True, False):
        launches = training_launches([2, 5, 3, 1], 5, G_GPU, torch.float32, x_shared, device="cuda")
        for op, launch in launches:
            kernel = launch()
            rows.append((op, "shared" if x_shared else "pernet", kernel.n_regs, kernel.n_spills))
    torch.cuda.synchronize()
    print("\n" + "\n".join(f"{op:22s} {xs:7s} regs {regs:4d} spills {sp}" for op, xs, regs, sp in rows))
    assert all(sp == 0 for *_, sp in rows), rows


@cuda
@needs_cuda
def test_int64_offsets_at_scale_cuda():
    """z past 2**31 elements: offsets pass int32, the launcher switches to IDX64.  (2**31
    elements exactly, N = 128, still fit: the largest offset is 2**31 - 1, test_needs_int64_rule;
    N = 129 puts the last sample of every network past it.)"""
    G, N, dev = 2**21, 129, "cuda"
    if torch.cuda.mem_get_info()[0] < 12 * 2**30:
        pytest.skip("needs ~10 GiB of free GPU memory")
    x = torch.linspace(-2, 2, N, device=dev)[:, None]
    w = as_network_minor(torch.linspace(-1, 1, G * 8, device=dev).reshape(G, 1, 8))
    b = as_network_minor(torch.zeros(G, 8, device=dev))
    z = network_minor((G, N, 8), torch.float32, dev, fill=float("nan"))  # 8.06 GiB
    assert _launch.needs_int64(z) and _fwd._launch_args(x, w, b, "tanh", z).constexprs["IDX64"] is True
    K.linear_act_fwd(x, w, b, "tanh", out=z)
    tail = slice(G - 1000, G)
    assert_rel_close(z[tail], torch.tanh(x.double()[None] * w[tail].double()), torch.float32)
    del z
