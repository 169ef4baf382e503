"""The batched torch engine and the training loop, against per-seed reference networks."""
import weakref

import pytest
import torch

from fastmlp import Population, engine, memory, train
from fastmlp.architecture import Architecture
from fastmlp.reference import train as reference_train
from tests.conftest import assert_rel_close, five_points

ARCHS = [  # (sizes, N): odd shapes, the lab network, depth 0..4, widths 1..17
    ([2, 5, 3, 1], 5),
    ([2, 1], 7),
    ([3, 17, 2], 6),
    ([1, 1, 1, 1, 1], 1),
    ([4, 5, 3, 4, 2, 3], 9),
    ([2, 20, 18, 1], 19),  # contractions longer than engine.torch.SMALL: the bmm paths
]


def _data(sizes, N, G=None, seed=0):
    g = torch.Generator().manual_seed(seed)
    shape = (N, sizes[0]) if G is None else (G, N, sizes[0])
    x = torch.rand(shape, generator=g) * 4 - 2
    y = (torch.rand(shape[:-1] + (sizes[-1],), generator=g) > 0.5).float()
    return x, y


def _ids(archs):
    return [f"N{N}-" + "x".join(map(str, s)) for s, N in archs]


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32], ids=["f64", "f32"])
@pytest.mark.parametrize("sizes,N", ARCHS, ids=_ids(ARCHS))
def test_engine_matches_reference_networks(sizes, N, dtype):
    G, epochs, lr = 3, 200, 0.25
    x, y = _data(sizes, N)
    pop = Population(sizes, [5, 11, 42], dtype=dtype)
    nets = [pop.network(i) for i in range(G)]
    result = train(x, y, pop, epochs, lr, backend="torch", progress=False)
    for i, net in enumerate(nets):
        net, ref_losses = reference_train(x.to(dtype), y.to(dtype), net, epochs, lr)
        assert_rel_close(result.losses[i], ref_losses, dtype, msg=f"loss curve of network {i}")
        for l, layer in enumerate(net.layers):
            assert_rel_close(pop.weights[l][i], layer.get_weight(), dtype, msg=f"net {i} W{l}")
            assert_rel_close(pop.biases[l][i], layer.get_bias(), dtype, msg=f"net {i} b{l}")
        assert_rel_close(result.final_loss[i], net.get_loss(x.to(dtype), y.to(dtype)), dtype)
    assert not result.diverged.any()


def test_lab_run_result_fields(lab_data):
    x, _ = lab_data
    y = torch.tensor([1, 0, 0, 0, 0])  # the lab's int64 labels, shape [5]
    pop = Population([2, 5, 3, 1], 64)
    r = train(x, y, pop, 2500, 0.25, backend="torch", progress=False)
    assert r.population is pop and r.backend == "torch" and r.epochs == 2500
    assert r.losses.shape == (64, 2500) and r.final_loss.shape == (64,) and r.diverged.dtype == torch.bool
    assert r.wall_time_s > 0 and r.network_epochs_per_s > 0
    # Measured on the dev box: 61/64 seeds of the lab's setup end below 0.01.
    assert r.converged(0.01).sum() >= 56
    # losses[:, e] is the loss at the start of epoch e: epoch 0 is the untrained network's.
    fresh = Population([2, 5, 3, 1], 64)
    assert torch.equal(r.losses[:, 0], train(x, y, fresh, 0, 0.25).final_loss)


def test_zero_epochs_leaves_weights_and_reports_initial_loss(lab_data):
    x, y = lab_data
    pop = Population([2, 5, 3, 1], 4)
    before = [w.clone() for w in pop.weights]
    r = train(x, y, pop, 0, 0.25)
    assert r.losses.shape == (4, 0)
    assert all(torch.equal(a, b) for a, b in zip(before, pop.weights))
    expected = torch.stack([pop.network(i).get_loss(x, y) for i in range(4)])
    assert_rel_close(r.final_loss, expected)


def test_per_seed_lr_equals_separate_runs(lab_data):
    x, y = lab_data
    lrs = torch.tensor([0.05, 0.25, 1.0, 3.0], dtype=torch.float64)
    together = Population([2, 5, 3, 1], [7, 8, 9, 10], dtype=torch.float64)
    r = train(x, y, together, 300, lrs)
    for i, seed in enumerate([7, 8, 9, 10]):
        alone = Population([2, 5, 3, 1], [seed], dtype=torch.float64)
        ra = train(x, y, alone, 300, float(lrs[i]))
        assert_rel_close(r.losses[i], ra.losses[0])
        for w, wa in zip(together.weights, alone.weights):
            assert_rel_close(w[i], wa[0])


def test_divergence_is_isolated(lab_data):
    # Network `bad` starts with an infinite weight: its first forward pass gives 0 * inf = nan.
    x, y = lab_data
    G, bad = 16, 5
    pop, ref = Population([2, 5, 3, 1], G), Population([2, 5, 3, 1], G)
    pop.weights[1][bad, 2, 1] = float("inf")
    r = train(x, y, pop, 200, 0.25)
    r_ref = train(x, y, ref, 200, 0.25)
    assert r.diverged.tolist() == [g == bad for g in range(G)]
    assert r.losses[bad].isnan().all()
    others = torch.arange(G) != bad
    assert torch.equal(r.losses[others], r_ref.losses[others])  # bitwise
    for w, w_ref in zip(pop.weights + pop.biases, ref.weights + ref.biases):
        assert torch.equal(w[others], w_ref[others])
    # Frozen: the diverged network's finite parameters never moved.
    for w, w_ref in zip(pop.weights[:1] + pop.biases, Population([2, 5, 3, 1], G).weights[:1]
                        + Population([2, 5, 3, 1], G).biases):
        assert torch.equal(w[bad], w_ref[bad])


def test_overflowing_update_freezes_the_network():
    # A single sigmoid layer on huge inputs and tiny weights (so it is not saturated) with a
    # huge rate: the first update overflows to inf and the next loss is nan.  Training
    # longer must not move the frozen network.
    x = torch.tensor([[1e30, 0.0], [0.0, -1e30], [0.0, 0.0]])
    y = torch.tensor([1.0, 0.0, 1.0])
    lrs = torch.tensor([1e-31, 1e10])
    short, long = Population([2, 1], 2, init="uniform:1e-30"), Population([2, 1], 2, init="uniform:1e-30")
    r_short = train(x, y, short, 5, lrs)
    r_long = train(x, y, long, 50, lrs)
    assert r_short.diverged.tolist() == [False, True] and r_long.diverged.tolist() == [False, True]
    assert torch.isfinite(r_long.losses[1, 0]) and r_long.losses[1, 1:].isnan().all()
    for a, b in zip(short.weights + short.biases, long.weights + long.biases):
        assert torch.equal(a[1].isnan(), b[1].isnan())
        assert torch.equal(a[1].nan_to_num(), b[1].nan_to_num())


def test_shared_and_per_network_x_agree(lab_data):
    x, y = lab_data
    G = 5
    p1, p2 = Population([2, 5, 3, 1], G), Population([2, 5, 3, 1], G)
    r1 = train(x, y, p1, 100, 0.25)
    r2 = train(x.expand(G, 5, 2).clone(), y.expand(G, 5, 1).clone(), p2, 100, 0.25)
    assert_rel_close(r2.losses, r1.losses)
    for a, b in zip(p1.weights, p2.weights):
        assert_rel_close(b, a)


def test_per_network_data_is_per_network():
    sizes, N, G = [2, 4, 1], 6, 3
    x, y = _data(sizes, N, G=G)
    pop = Population(sizes, G, dtype=torch.float64)
    nets = [pop.network(i) for i in range(G)]
    r = train(x, y, pop, 50, 0.5)
    for i in range(G):
        _, ref = reference_train(x[i].double(), y[i].double(), nets[i], 50, 0.5)
        assert_rel_close(r.losses[i], ref)


def test_chunked_training_equals_one_pass(lab_data):
    x, y = lab_data
    G, epochs = 300, 120
    lrs = torch.linspace(0.05, 2.0, G)
    one = Population([2, 5, 3, 1], G)
    r_one = train(x, y, one, epochs, lrs, backend="torch")
    assert r_one.n_chunks == 1
    arch = Architecture([2, 5, 3, 1])
    budget = arch.history_bytes(G, epochs, 4) + 100 * arch.working_bytes(5, 4)  # room for ~100 networks at a time
    chunked = Population([2, 5, 3, 1], G)
    r_chunked = train(x, y, chunked, epochs, lrs, backend="torch", max_bytes=budget)
    assert r_chunked.n_chunks == 5  # chunks of 64
    assert torch.equal(r_chunked.losses, r_one.losses)
    assert torch.equal(r_chunked.final_loss, r_one.final_loss)
    for a, b in zip(chunked.weights + chunked.biases, one.weights + one.biases):
        assert torch.equal(a, b)


def test_one_chunk_is_alive_at_a_time(lab_data, monkeypatch):
    """A chunk's run (its buffers) is released before the next chunk's starts: alive beside it,
    a chunked run peaked at two chunks' working memory (measured: 1.5x its budget)."""
    backend, runs, alive = engine.get_backend("torch"), [], []
    start = backend.start

    def counting_start(*a, **k):
        alive.append(sum(r() is not None for r in runs))
        run = start(*a, **k)
        runs.append(weakref.ref(run))
        return run

    monkeypatch.setattr(backend, "start", counting_start)
    x, y = lab_data
    G, epochs = 256, 3
    arch = Architecture([2, 5, 3, 1])
    problem = engine.Problem(arch, 5, True, torch.float32, G, epochs)
    r = train(x, y, Population(arch.sizes, G), epochs, 0.5, backend="torch",
              max_bytes=memory.peak_bytes(backend, problem, 64, "cpu") + arch.history_bytes(G - 64, epochs, 4))
    assert r.n_chunks == 4 and alive == [0, 0, 0, 0]


# Words per network of 2-8-1 on N = 1000 samples (P = 33): the torch engine's buffers,
# 4 P + 3 N (8 + 1) + 8; on CUDA its largest bmm (the hidden layer's gradient, z^T [8, N] @
# delta [N, 1]) adds cuBLAS's copies of both operands and the result, N (8 + 1) + 8 * 1; the
# one-launch program: 2 P + P bytes + the forward pass at the output layer, N (8 + 1), + 8.
WORDS_2_8_1 = {("torch", "cpu"): 27140, ("torch", "cuda"): 27140 + 9008, ("triton", "cpu"): 27140,
               ("triton", "cuda"): 27140, ("fused", "cpu"): 66 + 9 + 9000 + 8, ("fused", "cuda"): 9083}


@pytest.mark.parametrize("backend,device", list(WORDS_2_8_1), ids=lambda v: str(v))
def test_working_memory_is_the_backends_own(backend, device):
    problem = engine.Problem(Architecture([2, 8, 1]), 1000, True, torch.float32)
    assert engine.get_backend(backend).working_bytes(problem, device) == 4 * WORDS_2_8_1[backend, device]


def test_working_memory_on_cuda_counts_the_largest_bmms_copies():
    """The copies of one product at a time: the largest layer's, and only for products the
    torch engine evaluates with bmm (contractions longer than SMALL_CONTRACTION)."""
    arch = Architecture([2, 24, 20, 1])
    cpu, cuda = (arch.working_bytes(1000, 4, cublas=c) // 4 for c in (False, True))
    assert cuda - cpu == 1000 * (24 + 20) + 24 * 20  # layer 2: delta_bwd, its gradient, its forward
    lab = Architecture([2, 5, 3, 1])  # on the lab's five points every product is a loop
    assert lab.working_bytes(5, 4, cublas=True) == lab.working_bytes(5, 4)
    assert lab.working_bytes(5, 4, True, True, cublas=True) == lab.working_bytes(5, 4, True, True)
    # the fused program's forward pass: the 24-wide input of layer 2 is a bmm (copies on CUDA)
    assert arch.forward_words(1000, cublas=True) - arch.forward_words(1000) == 1000 * (24 + 20) + 24 * 20
    assert arch.forward_words(1000) == 1000 * (24 + 20)


def test_chunks_are_planned_for_the_backend_that_trains(lab_data):
    """train plans with the chosen backend's working memory: a budget for all networks on the
    one-launch program is one pass there, and chunks on the torch engine."""
    if engine.get_backend("fused").unavailable(torch.device("cpu")) is not None:
        pytest.skip(engine.get_backend("fused").unavailable(torch.device("cpu")))
    x, y = lab_data
    G, epochs = 512, 4
    arch = Architecture([2, 5, 3, 1])
    problem = engine.Problem(arch, 5, True, torch.float32, G, epochs)
    budget = memory.peak_bytes(engine.get_backend("fused"), problem, G, "cpu")
    assert budget < memory.peak_bytes(engine.get_backend("torch"), problem, G, "cpu") / 2
    fused = train(x, y, Population(arch.sizes, G), epochs, 0.5, backend="fused", max_bytes=budget)
    layers = train(x, y, Population(arch.sizes, G), epochs, 0.5, backend="torch", max_bytes=budget)
    assert (fused.n_chunks, layers.n_chunks) == (1, 3)  # 132 against 291 words a network: chunks of 192


def test_too_large_is_refused_before_allocating(lab_data):
    x, y = lab_data
    pop = Population([2, 5, 3, 1], 100)
    before = pop.weights[0].clone()
    with pytest.raises(MemoryError, match=r"GiB.*loss history.*max_bytes") as e:
        train(x, y, pop, 2500, 0.25, max_bytes=1000)
    assert e.value.arg == "seeds"
    assert torch.equal(pop.weights[0], before)


X, Y = five_points()


@pytest.mark.parametrize("kwargs,exc,needle", [
    (dict(x=torch.zeros(5, 3)), ValueError, "x must be"),
    (dict(x=torch.zeros(4, 5, 2)), ValueError, "x must be"),
    (dict(x=torch.zeros(0, 2), y=torch.zeros(0, 1)), ValueError, "N = 0"),
    (dict(x=X.clone().fill_(float("nan"))), ValueError, "x contains non-finite"),
    (dict(y=torch.zeros(4, 1)), ValueError, "y must be"),
    (dict(y=torch.zeros(5, 2)), ValueError, "y must be"),
    (dict(y=torch.tensor([1.0, float("inf"), 0, 0, 0])), ValueError, "y contains non-finite"),
    (dict(lr=-0.1), ValueError, "lr"),
    (dict(lr=float("nan")), ValueError, "lr"),
    (dict(lr=torch.ones(2)), ValueError, "lr"),
    (dict(lr=torch.tensor([0.1, 0.1, float("inf")])), ValueError, "lr"),
    (dict(lr="fast"), TypeError, "lr"),
    (dict(epochs=-1), ValueError, "epochs"),
    (dict(epochs=2.5), TypeError, "epochs"),
    (dict(backend="cuda"), ValueError, "backend"),
    (dict(population="pop"), TypeError, "population"),
    (dict(x="abc"), TypeError, "x"),
])
def test_bad_inputs_rejected_before_work(kwargs, exc, needle):
    pop = Population([2, 5, 3, 1], 3)
    before = [w.clone() for w in pop.weights]
    args = dict(x=X, y=Y, population=pop, epochs=10, lr=0.25)
    args.update(kwargs)
    with pytest.raises(exc, match=needle):
        train(**args)
    assert all(torch.equal(a, b) for a, b in zip(before, pop.weights))


def test_triton_backend_without_cuda_is_refused(monkeypatch):
    monkeypatch.delenv("TRITON_INTERPRET", raising=False)
    with pytest.raises(ValueError, match="CUDA|triton"):
        train(X, Y, Population([2, 5, 3, 1], 2), 1, 0.1, backend="triton")


def test_lr_tensor_dtype_and_zero_lr(lab_data):
    x, y = lab_data
    pop = Population([2, 5, 3, 1], 3)
    before = [w.clone() for w in pop.weights]
    r = train(x, y, pop, 10, torch.zeros(3, dtype=torch.float64))
    assert r.lr.dtype == torch.float32
    assert all(torch.equal(a, b) for a, b in zip(before, pop.weights))
    assert torch.equal(r.losses[:, 0], r.losses[:, -1])


def test_progress_bar_runs(lab_data, capsys):
    x, y = lab_data
    train(x, y, Population([2, 5, 3, 1], 3), 120, 0.25, progress=True)
    assert "net-epoch" in capsys.readouterr().err
