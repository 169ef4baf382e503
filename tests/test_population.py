"""Population: shapes, layout, init schemes, seed independence, conversions."""
import math

import pytest
import torch

from fastmlp import INIT_SCHEMES, Population, train
from fastmlp.initializers import parse_init
from fastmlp.population import is_network_minor


def test_shapes_layout_and_repr():
    pop = Population([2, 5, 3, 1], 7)
    assert [tuple(w.shape) for w in pop.weights] == [(7, 2, 5), (7, 5, 3), (7, 3, 1)]
    assert [tuple(b.shape) for b in pop.biases] == [(7, 5), (7, 3), (7, 1)]
    assert all(is_network_minor(t) for t in pop.weights + pop.biases)
    assert all((b == 0).all() for b in pop.biases)
    assert pop.seeds.tolist() == list(range(7)) and len(pop) == 7 and pop.n_params == 15 + 18 + 4
    assert repr(pop) == ("Population(G=7, 2 -> 5 tanh -> 3 tanh -> 1 sigmoid, init=glorot_uniform, gain=1, "
                         "dtype=float32, device=cpu)")


def test_seed_alone_equals_seed_in_a_population_of_10000():
    big = Population([2, 5, 3, 1], 10_000)
    for s in (0, 1, 4321, 9_999):
        alone = Population([2, 5, 3, 1], [s])
        for w_big, w_alone in zip(big.weights, alone.weights):
            assert torch.equal(w_big[s], w_alone[0])  # bit for bit
    # Order and G do not matter either.
    shuffled = Population([2, 5, 3, 1], [9_999, 17, 3])
    assert torch.equal(shuffled.weights[1][0], big.weights[1][9_999])
    assert torch.equal(shuffled.weights[2][2], big.weights[2][3])


def test_different_seeds_and_layers_differ():
    pop = Population([4, 4, 4, 1], [0, 1, 2**40, 2**62])
    w = pop.weights[0].reshape(4, -1)
    assert len({tuple(r.tolist()) for r in w}) == 4
    assert not torch.equal(pop.weights[0][0], pop.weights[1][0])


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_glorot_uniform_statistics(dtype):
    pop = Population([20, 30, 1], 400, dtype=dtype)
    w = pop.weights[0]
    bound = math.sqrt(6 / 50)
    assert w.dtype == dtype
    assert w.abs().max() <= bound
    # Uniform on [-b, b): mean 0, variance b^2 / 3 (240,000 samples: 4-sigma bands).
    n = w.numel()
    assert abs(w.mean().item()) < 4 * bound / math.sqrt(3 * n)
    assert abs(w.var().item() / (bound**2 / 3) - 1) < 4 * math.sqrt(0.8 / n)


@pytest.mark.parametrize("init,expected_std", [
    ("glorot_normal", math.sqrt(2 / 50)), ("he_normal", math.sqrt(2 / 20)), ("lecun_normal", math.sqrt(1 / 20)),
    ("normal:0.3", 0.3), ("he_uniform", math.sqrt(6 / 20) / math.sqrt(3)), ("uniform:0.5", 0.5 / math.sqrt(3)),
    ("glorot_uniform", math.sqrt(6 / 50) / math.sqrt(3)),
])
def test_scheme_scales(init, expected_std):
    pop = Population([20, 30, 1], 400, init=init, gain=2.0)
    std = pop.weights[0].std().item()
    assert abs(std / (2.0 * expected_std) - 1) < 0.01, (init, std)


def test_normal_is_gaussian():
    w = Population([50, 50, 1], 200, init="normal:1").weights[0].flatten().double()
    # 500,000 samples: moments of N(0, 1).
    assert abs(w.mean()) < 0.01 and abs(w.std() - 1) < 0.01
    assert abs((w**4).mean() - 3) < 0.05
    assert abs((w.abs() < 1).double().mean() - 0.6827) < 0.005


def test_zeros_and_all_schemes_construct():
    assert all((w == 0).all() for w in Population([2, 3, 1], 3, init="zeros").weights)
    for name in INIT_SCHEMES:
        pop = Population([3, 4, 2], 5, init=name)
        assert all(torch.isfinite(w).all() for w in pop.weights)


def test_float64_and_device_and_to():
    p64 = Population([2, 5, 3, 1], 4, dtype=torch.float64)
    p32 = Population([2, 5, 3, 1], 4)
    assert p64.dtype == torch.float64
    # Same random bits: float32 keeps the top 24 of them, so they differ by < 2 ulp of [-1, 1).
    assert (p64.weights[0] - p32.weights[0].double()).abs().max() < 2 * 2.0**-23
    moved = p32.to(dtype=torch.float64)
    assert moved is not p32 and moved.dtype == torch.float64 and is_network_minor(moved.weights[1])
    assert p32.to("cpu") is p32


def test_network_roundtrip_and_from_networks():
    pop = Population([2, 5, 3, 1], 6)
    net = pop.network(4)
    assert net.sizes == [2, 5, 3, 1]
    assert torch.equal(net.layers[1].get_weight(), pop.weights[1][4])
    net.layers[1].linear.weight += 1  # a copy: the population is untouched
    assert not torch.equal(net.layers[1].get_weight(), pop.weights[1][4])
    back = Population.from_networks([pop.network(i) for i in range(6)])
    for a, b in zip(back.weights + back.biases, pop.weights + pop.biases):
        assert torch.equal(a, b)
    with pytest.raises(IndexError):
        pop.network(6)


def test_from_networks_keeps_the_seeds_it_is_given():
    # The issue: from_networks reset the seeds to 0..G-1, unpairing a rebuilt population.
    pop = Population([2, 5, 3, 1], [11, 3, 2**40])
    nets = [pop.network(i) for i in range(3)]
    assert Population.from_networks(nets).seeds.tolist() == [0, 1, 2]  # placeholders, as documented
    back = Population.from_networks(nets, seeds=pop.seeds)
    assert torch.equal(back.seeds, pop.seeds) and back.seeds.dtype == torch.int64
    assert all(torch.equal(a, b) for a, b in zip(back.weights + back.biases, pop.weights + pop.biases))
    assert all(is_network_minor(t) for t in back.weights + back.biases)
    assert Population.from_networks(nets, seeds=[7, 8, 9]).seeds.tolist() == [7, 8, 9]
    with pytest.raises(ValueError, match="from_networks: 2 seeds for 3 networks") as e:
        Population.from_networks(nets, seeds=[1, 2])
    assert e.value.arg == "seeds"
    with pytest.raises(ValueError, match="distinct"):
        Population.from_networks(nets, seeds=[1, 1, 2])
    with pytest.raises(TypeError, match="seeds must be ints"):
        Population.from_networks(nets, seeds=[1.0, 2, 3])


def test_slicing_and_clone():
    pop = Population([2, 5, 3, 1], 10)
    sub = pop[3:6]
    assert len(sub) == 3 and sub.seeds.tolist() == [3, 4, 5]
    assert torch.equal(sub.weights[0][0], pop.weights[0][3])
    c = pop.clone()
    c.weights[0].add_(1)
    assert not torch.equal(c.weights[0], pop.weights[0])


@pytest.mark.parametrize("kwargs,exc,needle", [
    (dict(sizes=[2], seeds=3), ValueError, "sizes"),
    (dict(sizes=[2, 0, 1], seeds=3), ValueError, "sizes"),
    (dict(sizes=[2, 1.5, 1], seeds=3), TypeError, "sizes"),
    (dict(sizes="2,3", seeds=3), TypeError, "sizes"),
    (dict(sizes=[2, 1], seeds=0), ValueError, "seeds"),
    (dict(sizes=[2, 1], seeds=[]), ValueError, "seeds"),
    (dict(sizes=[2, 1], seeds=[1, 2, 1]), ValueError, "distinct"),
    (dict(sizes=[2, 1], seeds=[-1]), ValueError, "seeds"),
    (dict(sizes=[2, 1], seeds=[1.0]), TypeError, "seeds"),
    (dict(sizes=[2, 1], seeds=3, init="xavier"), ValueError, "init"),
    (dict(sizes=[2, 1], seeds=3, init="normal:abc"), ValueError, "init"),
    (dict(sizes=[2, 1], seeds=3, init="he_normal:2"), ValueError, "init"),
    (dict(sizes=[2, 1], seeds=3, gain=float("nan")), ValueError, "gain"),
    (dict(sizes=[2, 1], seeds=3, dtype=torch.int32), TypeError, "dtype"),
])
def test_bad_arguments(kwargs, exc, needle):
    with pytest.raises(exc, match=needle):
        Population(**kwargs)


def test_parse_init():
    assert str(parse_init("normal:0.1")) == "normal:0.1"
    assert parse_init("Glorot_Uniform").name == "glorot_uniform"


def test_million_networks():
    # Speed is measured by bench/bench_init.py (the bar: < 2 s on the 2-core dev box), not
    # here; this checks that a million networks build and that the last one is seed 999999's.
    pop = Population([2, 5, 3, 1], 1_000_000)
    assert len(pop) == 1_000_000
    last = Population([2, 5, 3, 1], [999_999])
    assert all(torch.equal(w[-1], w1[0]) for w, w1 in zip(pop.weights, last.weights))


# -- indexing: every kind of index ---------------------------------------------------------
def test_int_index_is_a_view_of_one_network():
    pop = Population([2, 5, 3, 1], 4)
    one, last = pop[2], pop[-1]
    assert len(one) == 1 and one.seeds.tolist() == [2] and last.seeds.tolist() == [3]
    one.weights[0].add_(1.0)  # a view: the population sees it
    assert torch.equal(pop.weights[0][2], one.weights[0][0])


@pytest.mark.parametrize("index", [4, 10, -5])
def test_int_index_out_of_range_raises_index_error(index):
    with pytest.raises(IndexError, match="out of range"):
        Population([2, 5, 3, 1], 4)[index]


def test_bool_mask_selects_where_true():
    # The case: pop[result.converged()] returned seeds [1,1,1,1,1,0,1,1].
    pop = Population([2, 5, 3, 1], 8)
    flags = [True, True, True, True, True, False, True, True]
    for mask in (torch.tensor(flags), flags):
        sub = pop[mask]
        assert sub.seeds.tolist() == [0, 1, 2, 3, 4, 6, 7]
        for w_sub, w in zip(sub.weights + sub.biases, pop.weights + pop.biases):
            assert torch.equal(w_sub, w[[0, 1, 2, 3, 4, 6, 7]])


def test_mask_from_a_training_result(lab_data):
    x, y = lab_data
    pop = Population([2, 5, 3, 1], 16)
    r = train(x, y, pop, 50, torch.linspace(0.0, 3.0, 16))
    keep = r.converged(0.2)
    assert 0 < int(keep.sum()) < 16  # a real split: lr 0 networks stay put
    assert pop[keep].seeds.tolist() == [s for s, k in zip(range(16), keep.tolist()) if k]


def test_index_lists_and_tensors_copy_in_order():
    pop = Population([2, 5, 3, 1], 6)
    for index in ([5, 0, -2], torch.tensor([5, 0, -2]), (5, 0, 4)):
        sub = pop[index]
        assert sub.seeds.tolist() == [5, 0, 4]
        assert torch.equal(sub.weights[1][0], pop.weights[1][5])
    sub = pop[[1]]
    sub.weights[0].add_(1.0)  # a copy: the population does not see it
    assert not torch.equal(pop.weights[0][1], sub.weights[0][0])


@pytest.mark.parametrize("index,exc,needle", [
    ([], ValueError, "selects no network"),
    (torch.zeros(4, dtype=torch.bool), ValueError, "selects no network"),
    ([False] * 4, ValueError, "selects no network"),
    (slice(3, 3), ValueError, "selects no network"),
    (slice(10, 20), ValueError, "selects no network"),
    ([0, 4], IndexError, "index 4 is out of range"),
    (torch.tensor([-5]), IndexError, "out of range"),
    (torch.ones(3, dtype=torch.bool), IndexError, r"shape \[4\]"),
    ([True, False, True], IndexError, r"shape \[4\]"),
    (torch.tensor([0.0, 1.0]), TypeError, "ints or bools"),
    ([0, True], TypeError, "only ints or only bools"),
    ("0", TypeError, "indexed by"),
    (1.0, TypeError, "indexed by"),
    (slice(None, None, -1), ValueError, "step >= 1"),
])
def test_bad_indices(index, exc, needle):
    with pytest.raises(exc, match=needle):
        Population([2, 5, 3, 1], 4)[index]


def test_empty_selection_never_reaches_train(lab_data):
    # pop[10] on a population of 4 used to return an empty Population that train accepted.
    x, y = lab_data
    with pytest.raises(IndexError):
        train(x, y, Population([2, 5, 3, 1], 4)[10], 5, 0.1)


def test_numpy_masks_and_indices():
    np = pytest.importorskip("numpy")
    pop = Population([2, 5, 3, 1], 5)
    assert pop[np.array([True, False, True, False, True])].seeds.tolist() == [0, 2, 4]
    assert pop[np.array([4, 1])].seeds.tolist() == [4, 1]
    assert pop[np.int64(3)].seeds.tolist() == [3]
