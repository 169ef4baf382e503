"""fastmlp.stats on hand-made loss histories whose answers are known."""
import csv
import math

import pytest
import torch

from fastmlp import quantiles as fq
from fastmlp import stats

NAN, INF = math.nan, math.inf
CUDA = torch.cuda.is_available()


def _history():
    """Five networks x 4 epochs (losses after 0..3 updates) and their final losses."""
    losses = torch.tensor([
        [0.50, 0.20, 0.009, 0.001],  # below 0.01 after 2 updates
        [0.50, 0.40, 0.300, 0.200],  # never
        [0.005, 0.004, 0.003, 0.002],  # from the start: 0 updates
        [0.30, 0.20, 0.100, 0.050],  # only the final loss gets there: 4 updates
        [0.30, NAN, NAN, NAN],  # diverged after one update
    ])
    final = torch.tensor([0.0005, 0.15, 0.001, 0.008, NAN])
    diverged = torch.tensor([False, False, False, False, True])
    return losses, final, diverged


def test_epochs_to_eps_known_answers():
    losses, final, _ = _history()
    assert stats.epochs_to_eps(losses, final, 0.01).tolist() == [2, -1, 0, 4, -1]
    # Without the final loss, only the history counts.
    assert stats.epochs_to_eps(losses, None, 0.01).tolist() == [2, -1, 0, -1, -1]
    # A threshold nothing reaches, and one everything finite reaches at once.
    assert stats.epochs_to_eps(losses, final, 1e-9).tolist() == [-1] * 5
    assert stats.epochs_to_eps(losses, final, 1.0).tolist() == [0, 0, 0, 0, 0]


def test_epochs_to_eps_strided_and_blocked(monkeypatch):
    """The training loop's losses are a transposed view; blocks of networks give the same answer."""
    losses, final, _ = _history()
    epoch_major = losses.t().contiguous()  # [epochs, G], as train() stores it
    want = stats.epochs_to_eps(losses, final, 0.01)
    monkeypatch.setattr(stats, "_BLOCK", 2)
    assert torch.equal(stats.epochs_to_eps(epoch_major.t(), final, 0.01), want)


@pytest.mark.parametrize("eps", [0.0, -0.1, NAN, INF, True])
def test_eps_must_be_positive_finite(eps):
    losses, final, diverged = _history()
    with pytest.raises(ValueError, match="eps"):
        stats.epochs_to_eps(losses, final, eps)
    with pytest.raises(ValueError, match="eps"):
        stats.config_stats(final, diverged, torch.zeros(5, dtype=torch.int64), torch.ones(5), eps)


def test_accuracy_thresholds_both_sides_and_nan_is_wrong():
    y = torch.tensor([[1.0], [0.0], [0.0], [0.0]])
    pred = torch.tensor([
        [[0.9], [0.1], [0.2], [0.4]],  # all right
        [[0.4], [0.1], [0.2], [0.6]],  # two wrong
        [[0.5], [0.5], [0.5], [0.5]],  # 0.5 is not above the threshold: the three zeros right
        [[NAN], [NAN], [NAN], [NAN]],  # diverged
    ])
    assert stats.accuracy(pred, y).tolist() == [1.0, 0.5, 0.75, 0.0]
    assert stats.accuracy(pred, y[:, 0]).tolist() == [1.0, 0.5, 0.75, 0.0]  # labels [N]
    with pytest.raises(ValueError, match="does not match"):
        stats.accuracy(pred, y[:3])


def test_config_stats_known_answers():
    losses, final, diverged = _history()
    epochs_to = stats.epochs_to_eps(losses, final, 0.01)
    acc = torch.tensor([1.0, 0.8, 1.0, 1.0, 0.0])
    row = stats.config_stats(final, diverged, epochs_to, acc, 0.01)
    assert row["networks"] == 5
    assert row["converged"] == 3 and row["converged_fraction"] == 0.6  # 0.0005, 0.001, 0.008
    assert row["diverged"] == 1
    assert row["reached_eps"] == 3 and row["never_reached"] == 2
    # Reached after 0, 2, 4 updates: quartiles by linear interpolation.
    assert (row["epochs_to_eps_q25"], row["epochs_to_eps_median"], row["epochs_to_eps_q75"]) == (1.0, 2.0, 3.0)
    assert row["accuracy_mean"] == pytest.approx(0.76) and row["perfect_fraction"] == 0.6
    # Final-loss quantiles over the four finite losses 0.0005, 0.001, 0.008, 0.15.
    finite = torch.tensor([0.0005, 0.001, 0.008, 0.15], dtype=torch.float64)
    for q in stats.FINAL_QUANTILES:
        want = torch.quantile(finite, q).item()
        assert row[f"final_loss_q{round(q * 100):02d}"] == pytest.approx(want, rel=1e-6)
    assert row["final_loss_q50"] == pytest.approx((0.001 + 0.008) / 2, rel=1e-6)


def test_config_stats_nobody_converges():
    final = torch.full((3,), 0.16)
    row = stats.config_stats(final, torch.zeros(3, dtype=torch.bool), torch.full((3,), -1), torch.full((3,), 0.8),
                             0.01)
    assert row["converged_fraction"] == 0.0 and row["never_reached"] == 3
    assert math.isnan(row["epochs_to_eps_median"])
    assert "-" in stats.format_table([{"dataset": "d", "hidden": "5,3", "init": "i", "lr": 0.1, **row}])


def test_config_stats_shape_mismatch():
    with pytest.raises(ValueError, match=r"\[S\]"):
        stats.config_stats(torch.ones(3), torch.zeros(2, dtype=torch.bool), torch.zeros(3), torch.ones(3), 0.01)


# ------------------------------------------------------------------ nanquantiles

def _reference(v: torch.Tensor, qs) -> torch.Tensor:
    """torch.nanquantile in float64 with +-inf counted as NaN: [G, E] -> [Q, E]."""
    v = v.double()
    v = torch.where(torch.isfinite(v), v, torch.full_like(v, NAN))
    return torch.stack([torch.nanquantile(v, q, dim=0) for q in qs])


def _history_like(G, E, seed=0, zeros=0.0, bad=0.0):
    """An epoch-major [E, G] float32 buffer of decaying losses, viewed [G, E] (as
    TrainResult.losses is): some losses exactly 0, some NaN or +-inf (diverged)."""
    g = torch.Generator().manual_seed(seed)
    rate = 0.002 + 0.01 * torch.rand(G, generator=g)
    h = (0.25 * torch.exp(-rate[None, :] * torch.arange(E)[:, None]) * torch.exp(0.3 * torch.randn(E, G, generator=g)))
    h[torch.rand(E, G, generator=g) < zeros] = 0.0
    u = torch.rand(E, G, generator=g)
    h[u < bad] = NAN
    h[(u >= bad) & (u < 1.5 * bad)] = INF
    h[(u >= 1.5 * bad) & (u < 2 * bad)] = -INF
    return h.t()


QS = (0.0, 0.05, 0.25, 0.5, 0.75, 0.95, 1.0)
CASES = {  # (G, E, zeros, bad): the sorting path (G <= 4096) and the search (larger G)
    "G1-E1": (1, 1, 0, 0), "G1": (1, 9, 0, 0.2), "E1": (5000, 1, 0, 0.1), "G3": (3, 40, 0, 0.3),
    "G300-nonfinite": (300, 30, 0.1, 0.2), "G9000": (9000, 40, 0, 0), "G9000-nonfinite": (9000, 40, 0.05, 0.1),
    "G9000-zeros": (9000, 40, 0.6, 0.05), "G20000-few-finite": (20000, 6, 0, 0.499),
}


@pytest.mark.parametrize("case", list(CASES))
def test_nanquantiles_is_torch_nanquantile_of_the_finite_values(case):
    G, E, zeros, bad = CASES[case]
    v = _history_like(G, E, seed=G + E, zeros=zeros, bad=bad)
    if E > 2:
        v[:, 1] = NAN  # a column without a finite value
        v[:, 2] = v[:, 2].nan_to_num(posinf=NAN)  # one with NaN and -inf only
        v[:, 2][torch.isfinite(v[:, 2])] = NAN
    got = stats.nanquantiles(v, QS)
    assert got.dtype == torch.float64 and got.shape == (len(QS), E)
    torch.testing.assert_close(got, _reference(v, QS), rtol=1e-12, atol=0, equal_nan=True)


@pytest.mark.parametrize("G", [40, 9000])
def test_nanquantiles_ties_and_runs(G):
    # few distinct values: runs of one value hold the wanted ranks, or end right at them
    g = torch.Generator().manual_seed(1)
    v = (torch.rand(G, 30, generator=g) * 6).floor() / 8
    v[:, ::3] = 0.0  # every third epoch all zeros
    v[: G // 2, 1::3] = 0.25  # half the networks stuck at one loss
    qs = (0.05, 0.1, 0.5, 0.9, 1 / 3, 2 / 3)
    torch.testing.assert_close(stats.nanquantiles(v, qs), _reference(v, qs), rtol=1e-12, atol=0, equal_nan=True)


def test_nanquantiles_reads_any_strides_and_dtypes():
    v = _history_like(9000, 33, zeros=0.05, bad=0.05)  # a transposed epoch-major buffer
    want = stats.nanquantiles(v, QS)
    assert torch.equal(stats.nanquantiles(v.contiguous(), QS), want)  # network-major memory
    assert torch.equal(stats.nanquantiles(v[:, ::2], QS), want[:, ::2])  # strided columns
    small = v[:100]
    assert torch.equal(stats.nanquantiles(small.half(), QS), stats.nanquantiles(small.half().float(), QS))
    ints = torch.randint(0, 5, (50, 7))
    torch.testing.assert_close(stats.nanquantiles(ints, QS), _reference(ints, QS), rtol=1e-12, atol=0)
    torch.testing.assert_close(stats.nanquantiles(v.double(), QS), _reference(v, QS), rtol=1e-12, atol=0,
                               equal_nan=True)


def test_nanquantiles_depends_on_each_column_only(monkeypatch):
    """Bit for bit: a column's quantiles whatever the other columns, their order, and the
    chunking (a thinned history against the full one at the same epochs)."""
    v = _history_like(9000, 64, zeros=0.02, bad=0.02)
    want = stats.nanquantiles(v, QS)
    assert torch.equal(stats.nanquantiles(v[:, ::7], QS), want[:, ::7])
    cols = torch.randperm(64, generator=torch.Generator().manual_seed(3))[:20]
    assert torch.equal(stats.nanquantiles(v[:, cols], QS), want[:, cols])
    assert torch.equal(stats.nanquantiles(v, QS, max_bytes=1), want)  # one epoch at a time
    monkeypatch.setattr(fq, "_BLOCK", 4096)  # blocks of part of an epoch's row... of one row
    monkeypatch.setattr(fq, "_SPACING", 2)
    assert torch.equal(stats.nanquantiles(v, QS, max_bytes=9000 * 4 * 3 * 5), want)


def test_nanquantiles_searches_again_where_a_bracket_misses(monkeypatch):
    # brackets of a tenth of a standard deviation miss most ranks: every fallback, then a sort
    v = _history_like(6000, 20, bad=0.01)
    want = _reference(v, QS)
    monkeypatch.setattr(fq, "_Z", 0.1)
    torch.testing.assert_close(stats.nanquantiles(v, QS), want, rtol=1e-12, atol=0, equal_nan=True)
    # epochs that are not alike: the neighbours' brackets are not used
    monkeypatch.setattr(fq, "_Z", 2.5)
    w = v * torch.logspace(-6, 0, 20)[torch.randperm(20, generator=torch.Generator().manual_seed(0))]
    torch.testing.assert_close(stats.nanquantiles(w, QS), _reference(w, QS), rtol=1e-12, atol=0, equal_nan=True)


def test_one_value_brackets_settle_the_ranks_in_their_run_and_next_to_it():
    y = torch.tensor([[0.0, 0.0, 0.0, 1.0, 2.0, 0.0, 3.0, -1.0]])  # sorted: -1, 0, 0, 0, 0, 1, 2, 3
    v, below, m = torch.zeros(1, 4, dtype=torch.float64), torch.ones(1, 4, dtype=torch.long), torch.full((1, 4), 4)
    ka, kb = torch.tensor([[1, 4, 0, 5]]), torch.tensor([[2, 5, 1, 6]])  # in, up, down, outside the run
    ta, tb, settled = fq._runs(y, v, below, m, ka, kb, torch.ones(1, 4, dtype=torch.bool))
    assert settled.tolist() == [[True, True, True, False]]
    assert ta[0, :3].tolist() == [0.0, 0.0, -1.0] and tb[0, :3].tolist() == [0.0, 1.0, 0.0]


def test_nanquantiles_checks_its_arguments():
    with pytest.raises(ValueError, match=r"\[G, E\]"):
        stats.nanquantiles(torch.ones(3), (0.5,))
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        stats.nanquantiles(torch.ones(3, 2), (0.5, 1.5))
    assert stats.nanquantiles(torch.ones(0, 4), (0.5,)).isnan().all()
    assert stats.nanquantiles(torch.ones(3, 0), (0.5,)).shape == (1, 0)


@pytest.mark.cuda
@pytest.mark.skipif(not CUDA, reason="needs CUDA")
def test_nanquantiles_on_cuda_is_the_cpu_result():
    v = _history_like(9000, 50, zeros=0.1, bad=0.05)
    got = stats.nanquantiles(v.cuda(), QS)
    assert got.device.type == "cuda"
    assert torch.equal(got.cpu(), stats.nanquantiles(v, QS))
    assert torch.equal(stats.nanquantiles(v.cuda(), QS, max_bytes=1).cpu(), got.cpu())


def test_quantiles_of_the_finite_values():
    v = torch.tensor([3.0, NAN, 1.0, INF, 2.0, -INF])
    assert stats.quantiles(v, (0.0, 0.5, 1.0)) == [1.0, 2.0, 3.0]
    assert all(math.isnan(x) for x in stats.quantiles(torch.tensor([NAN]), (0.5,)))
    assert all(math.isnan(x) for x in stats.quantiles(torch.zeros(0), (0.25, 0.5)))


def test_loss_quantile_curves_are_the_float64_quantiles_rounded():
    v = _history_like(9000, 40, zeros=0.05, bad=0.05)
    q = stats.loss_quantile_curves(v)
    assert q.dtype == torch.float32 and q.device.type == "cpu"
    assert torch.equal(q, _reference(v, stats.CURVE_QUANTILES).float())  # as before: nanquantile in float64


def test_loss_quantile_curves_ignore_nonfinite():
    losses = torch.tensor([[1.0, 2.0, NAN], [3.0, INF, NAN], [5.0, 4.0, NAN]])
    q = stats.loss_quantile_curves(losses, (0.0, 0.5, 1.0))
    assert q.shape == (3, 3) and q.dtype == torch.float32
    assert q[:, 0].tolist() == [1.0, 3.0, 5.0]
    assert q[:, 1].tolist() == [2.0, 3.0, 4.0]  # inf ignored like nan
    assert torch.isnan(q[:, 2]).all()  # an epoch with no finite loss


def test_tables_and_csv(tmp_path):
    losses, final, diverged = _history()
    row = stats.config_stats(final, diverged, stats.epochs_to_eps(losses, final, 0.01), torch.ones(5), 0.01)
    rows = [{"dataset": "five_points", "hidden": "5,3", "init": "he_normal", "lr": 0.25, **row}]
    text = stats.format_table(rows)
    assert "converged" in text.splitlines()[0] and "60.0%" in text and "2 [1-3]" in text
    md = stats.markdown_table(rows)
    assert md.startswith("| dataset |") and md.count("\n") == 2
    stats.write_csv(rows, tmp_path / "r.csv")
    (back,) = list(csv.DictReader(open(tmp_path / "r.csv")))
    assert back["hidden"] == "5,3" and float(back["converged_fraction"]) == 0.6
    assert float(back["final_loss_q50"]) == row["final_loss_q50"]  # full precision
