"""fastmlp.plot: loss curves, decision boundaries, saving (matplotlib Agg, no display)."""
import math

import pytest
import torch

matplotlib = pytest.importorskip("matplotlib", reason="plots need matplotlib")
matplotlib.use("Agg")
from matplotlib.figure import Figure  # noqa: E402

from fastmlp import plot  # noqa: E402
from fastmlp.datasets import five_points, xor  # noqa: E402
from fastmlp.plot import _nanquantiles, decision_boundaries, loss_curves, save  # noqa: E402


def _losses(G=20, epochs=30, seed=0):
    g = torch.Generator().manual_seed(seed)
    rate = 0.05 + 0.2 * torch.rand(G, 1, generator=g)
    return 0.25 * torch.exp(-rate * torch.arange(epochs)[None, :])


def _render(fig):
    fig.canvas.draw()  # layout and tick computation raise here if anything is off


# --------------------------------------------------------------------- quantiles

@pytest.mark.parametrize("G,E", [(1, 1), (1, 5), (7, 3), (50, 40)], ids=lambda v: str(v))
def test_nanquantiles_matches_torch(G, E):
    g = torch.Generator().manual_seed(G * 100 + E)
    v = torch.rand(G, E, generator=g, dtype=torch.float64)
    v[torch.rand(G, E, generator=g) < 0.3] = math.nan
    if E > 2:
        v[:, 1] = math.nan  # a column with no value at all
    qs = (0.05, 0.5, 0.95)
    got = _nanquantiles(v, qs)
    want = torch.stack([torch.nanquantile(v, q, dim=0) for q in qs])
    torch.testing.assert_close(got, want, rtol=1e-12, atol=1e-12, equal_nan=True)


def test_nanquantiles_chunked(monkeypatch):
    monkeypatch.setattr(plot, "_QUANTILE_CHUNK", 10)  # force several chunks of epochs
    v = torch.rand(4, 23, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    got = _nanquantiles(v, (0.5,))
    torch.testing.assert_close(got[0], torch.quantile(v, 0.5, dim=0), rtol=1e-12, atol=1e-12)


# -------------------------------------------------------------------- loss curves

def test_loss_curves_figure_log_axis_labels():
    fig = loss_curves(_losses(), title="demo")
    assert isinstance(fig, Figure)
    (ax,) = fig.axes
    assert ax.get_yscale() == "log"
    assert ax.get_xlabel() == "epoch" and ax.get_ylabel() == "MSE loss"
    assert ax.get_title() == "demo"
    assert ax.get_legend() is not None
    texts = [t.get_text() for t in ax.get_legend().get_texts()]
    assert any("median" in t for t in texts) and any("95%" in t for t in texts)
    (line,) = ax.get_lines()
    med = torch.as_tensor(line.get_ydata())
    # torch.median picks the lower middle value for even G; a median averages the two
    torch.testing.assert_close(med, torch.quantile(_losses().double(), 0.5, dim=0), rtol=1e-12, atol=0)
    _render(fig)


def test_loss_curves_ignores_nan_and_inf_rows():
    losses = _losses(G=5, epochs=10)
    clean_median = torch.quantile(losses.double(), 0.5, dim=0)
    bad = torch.cat([losses, torch.full((1, 10), math.nan), torch.full((1, 10), math.inf)])
    fig = loss_curves(bad)
    med = torch.as_tensor(fig.axes[0].get_lines()[0].get_ydata())
    torch.testing.assert_close(med, clean_median, rtol=1e-6, atol=0)
    _render(fig)


def test_loss_curves_diverging_mid_run():
    losses = _losses(G=4, epochs=10)
    losses[0, 5:] = math.inf  # one network diverges at epoch 6
    losses[1, 7:] = math.nan
    fig = loss_curves(losses)
    med = torch.as_tensor(fig.axes[0].get_lines()[0].get_ydata())
    assert torch.isfinite(med).all()
    _render(fig)


@pytest.mark.parametrize("shape", [(1, 30), (20, 1), (1, 1)], ids=["G1", "E1", "G1-E1"])
def test_loss_curves_small_shapes(shape):
    fig = loss_curves(_losses(*shape), label="run")
    ax = fig.axes[0]
    assert ax.get_yscale() == "log"
    _render(fig)


def test_loss_curves_one_dimensional_history():
    fig = loss_curves(_losses(G=1)[0])
    _render(fig)


def test_loss_curves_all_nan_still_renders():
    fig = loss_curves(torch.full((3, 4), math.nan))
    assert fig.axes[0].get_yscale() == "log"
    _render(fig)


def test_loss_curves_exact_zero_losses_render():
    losses = _losses(G=6, epochs=10)
    losses[:, 5:] = 0.0  # float32 sigmoids can saturate to an exact fit
    fig = loss_curves(losses)
    med = torch.as_tensor(fig.axes[0].get_lines()[0].get_ydata())
    assert (med > 0).all()
    _render(fig)


def test_loss_curves_on_given_axis():
    fig = Figure()
    ax = fig.add_subplot()
    assert loss_curves(_losses(), ax=ax, label="a") is fig
    loss_curves(_losses(seed=1) * 2, ax=ax, label="b")
    assert len(ax.get_lines()) == 2
    assert ax.get_lines()[0].get_color() != ax.get_lines()[1].get_color()
    _render(fig)


def test_loss_curves_rejects_bad_shape():
    with pytest.raises(ValueError, match="losses"):
        loss_curves(torch.zeros(2, 3, 4))


# ---------------------------------------------------------- decision boundaries

# Three fake "networks": logistic functions of the grid, [G, M, 1] like a population.
_W = torch.tensor([[3.0, 0.0], [0.0, 3.0], [-2.0, 2.0]])


def _predict(grid):
    assert grid.shape[1] == 2
    return torch.sigmoid(grid @ _W.T).T[..., None]


def _visible_plot_axes(fig):
    # the colorbar is an axes too: it has a label but no title
    return [ax for ax in fig.axes if ax.get_visible() and ax.get_title()]


@pytest.mark.parametrize("indices,ncols,grid_shape", [
    ([0, 1, 2], 4, (1, 3)),
    ([2, 0, 1, 1, 2], 2, (3, 2)),
    ([1], 4, (1, 1)),
], ids=["3-in-1-row", "5-in-3x2", "single"])
def test_decision_boundaries_axes_and_titles(indices, ncols, grid_shape):
    x, y = xor(n=40, seed=0)
    titles = [f"seed {i}, loss 3.1e-04" for i in indices]
    fig = decision_boundaries(x, y, _predict, indices, titles=titles, ncols=ncols)
    assert isinstance(fig, Figure)
    shown = _visible_plot_axes(fig)
    assert [ax.get_title() for ax in shown] == titles
    hidden = [ax for ax in fig.axes if not ax.get_visible()]
    assert len(hidden) == grid_shape[0] * grid_shape[1] - len(indices)
    assert len(fig.axes) == grid_shape[0] * grid_shape[1] + 1  # + one shared colorbar
    for ax in shown:
        assert ax.get_xlim() == (-2.0, 2.0) and ax.get_ylim() == (-2.0, 2.0)
        assert len(ax.collections) >= 1  # the scattered data
    _render(fig)


def test_decision_boundaries_draws_each_network_in_order():
    x, y = five_points()
    # predictions constant per network: network g predicts g / 4 everywhere
    def predict(grid):
        return (torch.arange(5.0)[:, None] / 4).expand(5, grid.shape[0])

    fig = decision_boundaries(x, y, predict, [4, 0], resolution=7)
    shown = _visible_plot_axes(fig)
    assert [ax.get_title() for ax in shown] == ["network 4", "network 0"]
    _render(fig)


def test_decision_boundaries_grid_is_the_labs():
    seen = {}

    def predict(grid):
        seen["grid"] = grid
        return torch.zeros(1, grid.shape[0])

    x, y = five_points()
    decision_boundaries(x, y, predict, [0], resolution=50)
    r = torch.linspace(-2, 2, 50)
    gx, gy = torch.meshgrid(r, r, indexing="ij")
    assert torch.equal(seen["grid"], torch.stack([gx.flatten(), gy.flatten()]).T)


@pytest.mark.parametrize("shape", [(5, 3), (5,), (5, 1)])
def test_decision_boundaries_requires_2d_inputs(shape):
    x = torch.zeros(shape)
    y = torch.zeros(5, 1)
    with pytest.raises(ValueError, match="2-D"):
        decision_boundaries(x, y, _predict, [0])


def test_decision_boundaries_checks_indices_titles_and_predict():
    x, y = five_points()
    with pytest.raises(ValueError, match="out of range"):
        decision_boundaries(x, y, _predict, [3])
    with pytest.raises(ValueError, match="indices"):
        decision_boundaries(x, y, _predict, [])
    with pytest.raises(ValueError, match="titles"):
        decision_boundaries(x, y, _predict, [0, 1], titles=["one"])
    with pytest.raises(ValueError, match="predict"):
        decision_boundaries(x, y, lambda g: torch.zeros(3, 7), [0])


# ---------------------------------------------------------------------------- save

def test_save_writes_nonempty_files(tmp_path):
    fig = loss_curves(_losses())
    base = tmp_path / "deep" / "er" / "lr0.25"
    paths = save(fig, base, formats=("png", "pdf", "svg"))
    assert [p.name for p in paths] == ["lr0.25.png", "lr0.25.pdf", "lr0.25.svg"]
    for p in paths:
        assert p.is_file() and p.stat().st_size > 0
    assert paths[0].read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_save_default_png_and_single_string(tmp_path):
    fig = decision_boundaries(*five_points(), _predict, [0])
    (p,) = save(fig, str(tmp_path / "db"))
    assert p.name == "db.png" and p.stat().st_size > 0
    (q,) = save(fig, tmp_path / "db2", formats="pdf")
    assert q.name == "db2.pdf" and q.stat().st_size > 0


def test_save_rejects_unknown_format_before_writing(tmp_path):
    fig = loss_curves(_losses())
    with pytest.raises(ValueError, match="unsupported"):
        save(fig, tmp_path / "out", formats=("png", "nope"))
    assert not list(tmp_path.iterdir())


def test_no_pyplot_figures_leak():
    plt = pytest.importorskip("matplotlib.pyplot")
    before = len(plt.get_fignums())
    loss_curves(_losses())
    decision_boundaries(*five_points(), _predict, [0, 1])
    assert len(plt.get_fignums()) == before
