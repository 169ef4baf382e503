"""The one-launch training kernel (backend='fused') against the torch engine and the reference.

Without a GPU it runs in Triton's interpreter (tests/conftest.py sets TRITON_INTERPRET=1);
tests/aot_fused.py compiles it for sm_80 and sm_90 and reports registers and spills.
"""
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from fastmlp import Population, train
from fastmlp.reference import train as reference_train
from tests.conftest import assert_rel_close, five_points

fk = pytest.importorskip("fastmlp.kernels.fused_train", reason="needs triton")

CUDA = torch.cuda.is_available()
DEV = "cuda" if CUDA else "cpu"
ROOT = Path(__file__).resolve().parents[1]

CASES = [  # (sizes, N): the lab network, widths 1, 3, 5, depth 0..4
    ([2, 5, 3, 1], 5),
    ([2, 1], 3),
    ([1, 3, 1], 7),
    ([3, 5, 5, 2], 4),
    ([2, 3, 1, 5, 2, 1], 5),
]


def _data(sizes, N, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(N, sizes[0], generator=g) * 4 - 2
    y = (torch.rand(N, sizes[-1], generator=g) > 0.5).float()
    return x, y


@pytest.mark.parametrize("sizes,N", CASES, ids=[f"N{n}-" + "x".join(map(str, s)) for s, n in CASES])
def test_fused_matches_torch_engine_and_reference(sizes, N):
    G, epochs, lr = 3, 30, torch.tensor([0.25, 0.5, 1.0])
    x, y = _data(sizes, N)
    fused = Population(sizes, [3, 14, 15], device=DEV)
    nets = [fused.network(i) for i in range(G)]
    ref = Population(sizes, [3, 14, 15], device=DEV)
    r_fused = train(x, y, fused, epochs, lr, backend="fused")
    r_torch = train(x, y, ref, epochs, lr, backend="torch")
    assert r_fused.backend == "fused"
    assert_rel_close(r_fused.losses, r_torch.losses, msg="loss curves vs torch engine")
    assert_rel_close(r_fused.final_loss, r_torch.final_loss)
    for a, b in zip(fused.weights + fused.biases, ref.weights + ref.biases):
        assert_rel_close(a, b, msg="final parameters vs torch engine")
    for i, net in enumerate(nets):
        _, losses = reference_train(x, y, net, epochs, float(lr[i]))
        assert_rel_close(r_fused.losses[i], losses, msg=f"loss curve of network {i} vs reference")
        for l, layer in enumerate(net.layers):
            assert_rel_close(fused.weights[l][i], layer.get_weight(), msg=f"W{l} of network {i} vs reference")


def test_launcher_writes_every_output():
    # Direct launch with NaN-poisoned outputs: every recorded loss must be written.
    sizes, N, G, epochs = [2, 5, 3, 1], 5, 5, 12
    x, y = five_points()
    pop = Population(sizes, G, device=DEV)
    packed = fk.pack(pop.weights, pop.biases)
    before = packed.clone()
    active = torch.ones(G, dtype=torch.int8, device=DEV)
    loss = torch.full((epochs // 3, G), float("nan"), device=DEV)
    fk.fused_train(x.to(DEV), y.to(DEV), packed, torch.full((G,), 0.25, device=DEV), active, loss, sizes, epochs,
                   record_every=3)
    assert torch.isfinite(loss).all() and not torch.equal(packed, before)
    ref = Population(sizes, G, device=DEV)
    r = train(x, y, ref, epochs, 0.25, backend="torch")
    assert_rel_close(loss, r.losses.t()[::3])
    unpacked = Population(sizes, G, device=DEV)
    fk.unpack_into(packed, unpacked.weights, unpacked.biases)
    for a, b in zip(unpacked.weights + unpacked.biases, ref.weights + ref.biases):
        assert_rel_close(a, b)


def test_float64():
    sizes, N = [2, 5, 3, 1], 5
    x, y = five_points()
    a = Population(sizes, 2, dtype=torch.float64, device=DEV)
    b = Population(sizes, 2, dtype=torch.float64, device=DEV)
    ra = train(x, y, a, 20, 0.5, backend="fused")
    rb = train(x, y, b, 20, 0.5, backend="torch")
    assert_rel_close(ra.losses, rb.losses)
    for p, q in zip(a.weights, b.weights):
        assert_rel_close(p, q)


@pytest.mark.filterwarnings("ignore:invalid value encountered:RuntimeWarning")  # inf * 0, on purpose
def test_divergence_is_isolated_and_frozen():
    x, y = five_points()
    G, bad = 4, 2
    pop, clean = Population([2, 5, 3, 1], G, device=DEV), Population([2, 5, 3, 1], G, device=DEV)
    pop.weights[1][bad, 0, 0] = float("inf")
    start = [w[bad].clone() for w in pop.weights[:1] + pop.biases]
    r = train(x, y, pop, 15, 0.25, backend="fused")
    r_clean = train(x, y, clean, 15, 0.25, backend="fused")
    assert r.diverged.tolist() == [g == bad for g in range(G)]
    keep = torch.arange(G) != bad
    assert torch.equal(r.losses[keep], r_clean.losses[keep])
    for w, w_clean in zip(pop.weights + pop.biases, clean.weights + clean.biases):
        assert torch.equal(w[keep], w_clean[keep])
    for w, w0 in zip(pop.weights[:1] + pop.biases, start):  # frozen: not one bit moved
        assert torch.equal(w[bad], w0)


def test_launches_in_blocks_of_epochs(monkeypatch):
    # 7 launches of at most 3 epochs give the same numbers as the per-layer loop.
    import importlib

    train_mod = importlib.import_module("fastmlp.train")
    monkeypatch.setattr(train_mod, "_FUSED_BLOCK", 3)
    x, y = five_points()
    a, b = Population([2, 5, 3, 1], 3, device=DEV), Population([2, 5, 3, 1], 3, device=DEV)
    calls = []
    real = fk.fused_train
    monkeypatch.setattr(fk, "fused_train", lambda *args, **kw: calls.append(args[-1]) or real(*args, **kw))
    ra = train(x, y, a, 20, 0.25, backend="fused")
    rb = train(x, y, b, 20, 0.25, backend="torch")
    assert calls == [3] * 6 + [2]
    assert_rel_close(ra.losses, rb.losses)


def test_limits_name_the_limit_and_the_fallback():
    x, y = five_points()
    with pytest.raises(ValueError, match=r"width 33.*backend='triton'"):
        train(x, y, Population([2, 33, 1], 2, device=DEV), 1, 0.1, backend="fused")
    with pytest.raises(ValueError, match=r"5 hidden layers.*backend='triton'"):
        train(x, y, Population([2, 3, 3, 3, 3, 3, 1], 2, device=DEV), 1, 0.1, backend="fused")
    with pytest.raises(ValueError, match=r"per-network x.*backend='triton'"):
        train(x.expand(2, 5, 2), y, Population([2, 3, 1], 2, device=DEV), 1, 0.1, backend="fused")
    assert fk.fused_limits([2, 32, 32, 32, 32, 1], 64) is None


@pytest.mark.skipif(CUDA, reason="checks the CPU rules")
def test_auto_on_cpu_is_torch_and_fused_needs_the_interpreter(monkeypatch):
    x, y = five_points()
    assert train(x, y, Population([2, 5, 3, 1], 2), 1, 0.1).backend == "torch"
    monkeypatch.setenv("TRITON_INTERPRET", "0")
    with pytest.raises(ValueError, match="CUDA"):
        train(x, y, Population([2, 5, 3, 1], 2), 1, 0.1, backend="fused")


def test_block_g_rule():
    assert fk.block_g([2, 5, 3, 1]) == 128  # one network per thread
    assert [fk.block_g(s) for s in ([2, 8, 8, 1], [2, 16, 16, 1], [2, 32, 32, 1])] == [32, 8, 2]
    assert fk.config([2, 5, 3, 1], G=3)["BLOCK_G"] == 4


@pytest.fixture(scope="module")
def aot():
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    out = subprocess.run([sys.executable, str(ROOT / "tests" / "aot_fused.py")], capture_output=True, text=True,
                         env=env, timeout=600)
    assert out.returncode == 0, out.stderr[-3000:]
    return json.loads(out.stdout)


def test_aot_compiles_without_spills(aot):
    print("\nfused_train AOT (Triton %s): config / tanh / cap -> BLOCK_G, registers, stack, local" % aot["triton"])
    for r in aot["rows"]:
        print(f"  {r['config']:<12} {'approx' if r['fast_tanh'] else 'exp':<6} sm_{r['cap']}: "
              f"BLOCK_G {r['block_g']:>3}, {r['regs']} regs, stack {r['stack']}, local {r['local']}")
    assert {r["cap"] for r in aot["rows"]} == {80, 90}
    assert len(aot["rows"]) == 4 * 2 * 2
    for r in aot["rows"]:
        assert r["stack"] == 0 and r["local"] == 0, r  # no spills
        assert r["regs"] <= 255


@pytest.mark.cuda
@pytest.mark.skipif(not CUDA, reason="needs CUDA")
@pytest.mark.parametrize("fast", [False, True], ids=["exp-tanh", "approx-tanh"])
def test_fused_at_scale_cuda(fast):
    G, epochs = 65536, 200
    x, y = (t.cuda() for t in five_points())
    lr = torch.linspace(0.05, 2.0, G, device="cuda")
    a, b = Population([2, 5, 3, 1], G, device="cuda"), Population([2, 5, 3, 1], G, device="cuda")
    packed = fk.pack(a.weights, a.biases)
    active = torch.ones(G, dtype=torch.int8, device="cuda")
    loss = torch.full((epochs, G), float("nan"), device="cuda")
    fk.fused_train(x, y, packed, lr, active, loss, [2, 5, 3, 1], epochs, fast_tanh=fast)
    rb = train(x, y, b, epochs, lr, backend="torch")
    if fast:  # its own tolerance row: tanh.approx.f32 is good to ~6e-4 relative per evaluation
        torch.testing.assert_close(loss, rb.losses.t(), rtol=2e-2, atol=1e-4)
    else:
        assert_rel_close(loss, rb.losses.t())
