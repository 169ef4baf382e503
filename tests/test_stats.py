"""fastmlp.stats on hand-made loss histories whose answers are known."""
import csv
import math

import pytest
import torch

from fastmlp import stats

NAN, INF = math.nan, math.inf


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
