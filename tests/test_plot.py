"""fastmlp.plot: loss curves, sweep figures, decision boundaries, saving (matplotlib Agg,
no display). Each figure test checks what was drawn (panels, titles, lines and their data,
legend entries, colour limits), so a function that returned an empty Figure fails it."""
import math

import numpy as np
import pytest
import torch

matplotlib = pytest.importorskip("matplotlib", reason="plots need matplotlib")
matplotlib.use("Agg")
from matplotlib.collections import PathCollection  # noqa: E402
from matplotlib.contour import ContourSet  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402

from fastmlp import plot  # noqa: E402
from fastmlp.datasets import five_points, xor  # noqa: E402
from fastmlp.plot import decision_boundaries, loss_curves, save  # noqa: E402
from fastmlp.validate import ArgumentError  # noqa: E402

BAND_LABEL = "5%\u201395% of networks"


def _losses(G=20, epochs=30, seed=0):
    g = torch.Generator().manual_seed(seed)
    rate = 0.05 + 0.2 * torch.rand(G, 1, generator=g)
    return 0.25 * torch.exp(-rate * torch.arange(epochs)[None, :])


def _render(fig):
    fig.canvas.draw()  # layout and tick computation raise here if anything is off


def _legend(legend):
    assert legend is not None, "no legend drawn"
    return [t.get_text() for t in legend.get_texts()]


def _ydata(line):
    return torch.as_tensor(line.get_ydata(), dtype=torch.float64)


def _median(losses):
    return torch.quantile(losses.double(), 0.5, dim=0)


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
    assert texts == ["median of 20 networks", BAND_LABEL]
    (line,) = ax.get_lines()
    assert line.get_xdata().tolist() == list(range(1, 31))  # epochs from 1
    # torch.median picks the lower middle value for even G; a median averages the two
    torch.testing.assert_close(_ydata(line), _median(_losses()), rtol=1e-12, atol=0)
    # the shaded band spans the 5% quantile (bottom edge) to the 95% quantile (top edge)
    (band,) = ax.collections
    edge = band.get_paths()[0].vertices[:, 1]
    q = torch.quantile(_losses().double(), torch.tensor([0.05, 0.95], dtype=torch.float64), dim=0)
    assert edge.min() == pytest.approx(q[0].min().item(), rel=1e-12)
    assert edge.max() == pytest.approx(q[1].max().item(), rel=1e-12)
    _render(fig)


def test_loss_curves_ignores_nan_and_inf_rows():
    losses = _losses(G=5, epochs=10)
    clean_median = torch.quantile(losses.double(), 0.5, dim=0)
    bad = torch.cat([losses, torch.full((1, 10), math.nan), torch.full((1, 10), math.inf)])
    fig = loss_curves(bad)
    (ax,) = fig.axes
    med = _ydata(ax.get_lines()[0])
    torch.testing.assert_close(med, clean_median, rtol=1e-6, atol=0)
    assert _legend(ax.get_legend()) == ["median of 7 networks", BAND_LABEL]  # all rows counted
    _render(fig)


def test_loss_curves_diverging_mid_run():
    losses = _losses(G=4, epochs=10)
    losses[0, 5:] = math.inf  # one network diverges at epoch 6
    losses[1, 7:] = math.nan
    fig = loss_curves(losses)
    (ax,) = fig.axes
    med = _ydata(ax.get_lines()[0])
    assert med.shape == (10,) and torch.isfinite(med).all()
    # each epoch's median is over the networks still finite at that epoch
    finite = torch.where(torch.isinf(losses), torch.full_like(losses, math.nan), losses).double()
    torch.testing.assert_close(med, torch.nanquantile(finite, 0.5, dim=0), rtol=1e-12, atol=0)
    _render(fig)


@pytest.mark.parametrize("shape", [(1, 30), (20, 1), (1, 1)], ids=["G1", "E1", "G1-E1"])
def test_loss_curves_small_shapes(shape):
    G, E = shape
    losses = _losses(*shape)
    fig = loss_curves(losses, label="run")
    (ax,) = fig.axes
    assert ax.get_yscale() == "log"
    median = ax.get_lines()[0]
    assert median.get_xdata().tolist() == list(range(1, E + 1))
    torch.testing.assert_close(_ydata(median), _median(losses), rtol=1e-12, atol=0)
    # one epoch is one point: it gets a marker, and the x axis shows epochs 0..2 around it
    assert median.get_marker() == ("o" if E == 1 else "None")
    if E == 1:
        assert ax.get_xlim() == (0.0, 2.0)
    if G == 1:  # one network: no band, and the legend says so
        assert _legend(ax.get_legend()) == ["run: 1 network"]
        assert not ax.collections and not ax.containers
    else:  # one epoch: the band is an error bar (fill_between would draw nothing)
        assert _legend(ax.get_legend()) == [f"run: median of {G} networks", f"run: {BAND_LABEL}"]
        assert len(ax.containers) == 1
    _render(fig)


def test_loss_curves_one_dimensional_history():
    history = _losses(G=1)[0]  # [epochs]: one network's history
    fig = loss_curves(history, title="one run")
    (ax,) = fig.axes
    (line,) = ax.get_lines()
    assert line.get_xdata().tolist() == list(range(1, 31))
    # the median of one network is its history, drawn as given
    torch.testing.assert_close(_ydata(line), history.double(), rtol=0, atol=0)
    assert not ax.collections  # no band around a single network
    assert _legend(ax.get_legend()) == ["1 network"]
    assert ax.get_title() == "one run"
    assert ax.get_xlabel() == "epoch" and ax.get_ylabel() == "MSE loss"
    assert ax.get_yscale() == "log"
    # same drawing as the [1, epochs] history
    (line_2d,) = loss_curves(history[None, :]).axes[0].get_lines()
    assert np.array_equal(line_2d.get_ydata(), line.get_ydata())
    _render(fig)


def test_loss_curves_all_nan_still_renders():
    fig = loss_curves(torch.full((3, 4), math.nan))
    (ax,) = fig.axes
    assert ax.get_yscale() == "log"
    med = _ydata(ax.get_lines()[0])
    assert med.shape == (4,) and torch.isnan(med).all()
    assert [t.get_text() for t in ax.texts] == ["no finite loss"]
    assert ax.get_ylim() == pytest.approx((1e-4, 1.0))  # log-scalable limits in place of (0, 1)
    _render(fig)


def test_loss_curves_exact_zero_losses_render():
    losses = _losses(G=6, epochs=10)
    losses[:, 5:] = 0.0  # float32 sigmoids can saturate to an exact fit
    floor = losses[losses > 0].min().item()
    fig = loss_curves(losses)
    (ax,) = fig.axes
    med = _ydata(ax.get_lines()[0])
    # zeros are drawn at the smallest positive loss, and a note on the axis says so
    torch.testing.assert_close(med, _median(losses).clamp(min=floor), rtol=1e-12, atol=0)
    assert (med[5:] == floor).all()
    assert [t.get_text() for t in ax.texts] == [f"losses of 0 drawn at {floor:.1e}"]
    _render(fig)


def test_loss_curves_at_the_recorded_epochs_with_a_sample_of_networks():
    losses = _losses(G=40, epochs=12)
    losses[3, 6:] = math.inf  # a network that diverged
    recorded = torch.arange(0, 12 * 5, 5)  # a history of every 5th epoch
    fig = loss_curves(losses, epochs=recorded, sample=[0, 3, 7])
    (ax,) = fig.axes
    median, *sampled = ax.get_lines()
    assert median.get_xdata().tolist() == (recorded + 1).tolist()  # epochs numbered from 1
    assert median.get_linewidth() > 1 >= max(ln.get_linewidth() for ln in sampled)
    finite = torch.where(torch.isinf(losses), torch.full_like(losses, math.nan), losses).double()
    torch.testing.assert_close(_ydata(median), torch.nanquantile(finite, 0.5, dim=0), rtol=1e-12, atol=0)
    assert len(sampled) == 3  # the networks' own curves, as recorded (non-finite: not drawn)
    for ln, i in zip(sampled, (0, 3, 7)):
        torch.testing.assert_close(_ydata(ln), finite[i], rtol=0, atol=0, equal_nan=True)
    assert _legend(ax.get_legend()) == ["median of 40 networks", "3 of the networks", BAND_LABEL]
    _render(fig)
    for bad, arg in (([0, 1], "epochs"), (torch.arange(12).flip(0), "epochs"), ([40], "sample"), ([0.5], "sample")):
        with pytest.raises(ArgumentError) as err:
            loss_curves(losses, **{arg: bad})
        assert err.value.arg == arg


def test_loss_bands_at_the_recorded_epochs():
    q = _quantiles(epochs=6)
    fig = plot.loss_bands({"p": [("a", q), ("b", q * 2, torch.arange(0, 12, 2))]}, epochs=torch.arange(0, 30, 5))
    (ax,) = [ax for ax in fig.axes if ax.get_visible()]
    a, b = ax.get_lines()
    assert a.get_xdata().tolist() == [1, 6, 11, 16, 21, 26] and b.get_xdata().tolist() == [1, 3, 5, 7, 9, 11]
    _render(fig)


def test_loss_curves_on_given_axis():
    fig = Figure()
    ax = fig.add_subplot()
    assert loss_curves(_losses(), ax=ax, label="a") is fig
    loss_curves(_losses(seed=1) * 2, ax=ax, label="b")
    assert fig.axes == [ax]  # drawn on the given axis, no new one
    assert len(ax.get_lines()) == 2 and len(ax.collections) == 2  # a median and a band per call
    assert ax.get_lines()[0].get_color() != ax.get_lines()[1].get_color()
    torch.testing.assert_close(_ydata(ax.get_lines()[1]), _median(_losses(seed=1) * 2), rtol=1e-6, atol=0)
    assert _legend(ax.get_legend()) == ["a: median of 20 networks", f"a: {BAND_LABEL}",
                                        "b: median of 20 networks", f"b: {BAND_LABEL}"]
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


def _contour(ax) -> ContourSet:
    (cs,) = [c for c in ax.collections if isinstance(c, ContourSet)]
    return cs


def _filled_layers(cs):
    """Indices of the contour intervals that hold any area."""
    return [k for k, path in enumerate(cs.get_paths()) if len(path.vertices)]


def _colorbar_axes(fig, label):
    return [ax for ax in fig.axes if ax.get_ylabel() == label and not ax.get_title()]


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
        # the prediction: filled contours at levels 0, 0.1, ..., 1 on a fixed 0..1 colour scale
        cs = _contour(ax)
        assert np.allclose(cs.levels, np.linspace(0, 1, 11))
        assert (cs.norm.vmin, cs.norm.vmax) == (0.0, 1.0)
        # the data on top, coloured by label on the same 0..1 scale
        (points,) = [c for c in ax.collections if isinstance(c, PathCollection)]
        assert np.array_equal(points.get_offsets(), x.double().numpy())
        assert np.array_equal(points.get_array(), y.reshape(-1).double().numpy())
        assert (points.norm.vmin, points.norm.vmax) == (0.0, 1.0)
    (cbar,) = _colorbar_axes(fig, "predicted probability")  # one colorbar for every panel
    assert cbar.get_ylim() == (0.0, 1.0)
    # axis labels on the outer panels only
    assert sum(ax.get_ylabel() == "$x_2$" for ax in shown) == grid_shape[0]
    assert sum(ax.get_xlabel() == "$x_1$" for ax in shown) == grid_shape[1]
    _render(fig)


def test_decision_boundaries_draws_each_network_in_order():
    x, y = five_points()
    # predictions constant per network: network g predicts g / 4 everywhere
    def predict(grid):
        return (torch.arange(5.0)[:, None] / 4).expand(5, grid.shape[0])

    fig = decision_boundaries(x, y, predict, [4, 0, 1], resolution=7)
    shown = _visible_plot_axes(fig)
    assert [ax.get_title() for ax in shown] == ["network 4", "network 0", "network 1"]
    # each panel draws its own network's predictions: 1.0 fills the top interval (0.9, 1],
    # 0.0 the bottom one [0, 0.1], 0.25 the interval (0.2, 0.3]
    for ax, g, layer in zip(shown, [4, 0, 1], [9, 0, 2]):
        cs = _contour(ax)
        assert cs.zmin == cs.zmax == g / 4
        assert _filled_layers(cs) == [layer]
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


# ------------------------------------------------------------------ sweep figures

def _quantiles(scale=1.0, epochs=4):
    med = scale * 0.2 * 0.5 ** torch.arange(epochs, dtype=torch.float64)
    return torch.stack([med / 2, med, med * 2])  # [3, epochs]: low, median, high


def test_loss_bands_panels_colours_and_one_scale():
    panels = {"a": [("lr 0.5", _quantiles()), ("lr 2", _quantiles(2))],
              "b": [("lr 0.5", _quantiles(0.5))],
              "c": [("lr 1", _quantiles(epochs=1))]}
    fig = plot.loss_bands(panels, ncols=2, title="t")
    assert len(fig.axes) == 4  # 2 x 2, the fourth hidden
    shown = [ax for ax in fig.axes if ax.get_visible()]
    assert [ax.get_title() for ax in shown] == ["a", "b", "c"]
    assert fig.get_suptitle() == "t"
    for ax, (_title, curves) in zip(shown, panels.items()):
        lines = ax.get_lines()
        assert len(lines) == len(curves) and len(ax.collections) == len(curves)  # median + band each
        for line, (_label, q) in zip(lines, curves):
            assert line.get_xdata().tolist() == list(range(1, q.shape[1] + 1))
            torch.testing.assert_close(_ydata(line), q[1], rtol=1e-12, atol=0)
        assert ax.get_yscale() == "log"
    assert shown[2].get_lines()[0].get_marker() == "o"  # one epoch: a point
    # one y scale for every panel, from the lowest low quantile to the highest high one
    assert len({ax.get_ylim() for ax in shown}) == 1
    lo, hi = shown[0].get_ylim()
    assert lo == pytest.approx(_quantiles(0.5)[0].min().item() / 1.5)
    assert hi == pytest.approx(_quantiles(2)[2].max().item() * 1.5)
    # same label, same colour in every panel; one shared legend, labels in order of appearance
    a_lr05, a_lr2 = (line.get_color() for line in shown[0].get_lines())
    assert shown[1].get_lines()[0].get_color() == a_lr05 != a_lr2
    (legend,) = fig.legends
    assert _legend(legend) == ["lr 0.5", "lr 2", "lr 1"]
    assert legend.get_title().get_text() == "median of the networks; shaded: 5%\u201395%"
    _render(fig)


def test_loss_bands_thins_long_curves_and_floors_zeros():
    med = 0.2 * torch.exp(-0.002 * torch.arange(1200, dtype=torch.float64))
    q = torch.stack([med / 2, med, med * 2])
    q[0, 600:] = 0.0  # an exact fit in the low quantile
    fig = plot.loss_bands({"p": [("x", q)]}, max_points=500)
    (ax,) = [ax for ax in fig.axes if ax.get_visible()]
    (line,) = ax.get_lines()
    keep = list(range(0, 1200, 3)) + [1199]  # every 3rd epoch and the last one
    assert line.get_xdata().tolist() == [k + 1 for k in keep]
    torch.testing.assert_close(_ydata(line), q[1, keep], rtol=1e-12, atol=0)
    (band,) = ax.collections
    positive = q[:, keep][q[:, keep] > 0].min().item()
    assert band.get_paths()[0].vertices[:, 1].min() == pytest.approx(positive, rel=1e-12)
    _render(fig)


def test_converged_heatmaps_values_annotations_and_scale():
    values = {"p": torch.tensor([[0.0, 0.5], [0.996, math.nan]], dtype=torch.float64),
              "q": torch.tensor([[1.0, 0.7], [0.2, 0.3]], dtype=torch.float64)}
    fig = plot.converged_heatmaps(values, ["i1", "i2"], ["0.1", "1"], ncols=1, title="T")
    panels = [ax for ax in fig.axes if ax.get_title()]
    assert [ax.get_title() for ax in panels] == ["p", "q"]
    assert fig.get_suptitle() == "T"
    for ax, v in zip(panels, values.values()):
        (image,) = ax.images
        assert (image.norm.vmin, image.norm.vmax) == (0.0, 1.0)  # one scale for every panel
        assert np.array_equal(np.ma.filled(image.get_array(), np.nan), v.numpy(), equal_nan=True)
        assert [t.get_text() for t in ax.get_xticklabels()] == ["0.1", "1"]
        assert [t.get_text() for t in ax.get_yticklabels()] == ["i1", "i2"]
    # a NaN cell (not run) is left blank; 99.6% is not rounded up to 100%
    assert [t.get_text() for t in panels[0].texts] == ["0%", "50%", "99.6%"]
    assert [t.get_color() for t in panels[0].texts] == ["white", "white", "black"]
    assert [t.get_text() for t in panels[1].texts] == ["100%", "70%", "20%", "30%"]
    assert panels[1].get_xlabel() == "learning rate" and panels[0].get_ylabel() == "init"
    (cbar,) = _colorbar_axes(fig, "converged fraction")
    assert cbar.get_ylim() == (0.0, 1.0)
    _render(fig)


def test_epochs_ecdf_steps_levels_and_empty_panel():
    panels = {"p": [("lr 1", torch.tensor([3, 10, -1, -1])), ("lr 2", torch.tensor([0, 5]))],
              "q": [("lr 1", torch.tensor([-1]))]}
    fig = plot.epochs_ecdf(panels, epochs=40, eps=0.01, title="E")
    shown = [ax for ax in fig.axes if ax.get_visible()]
    assert [ax.get_title() for ax in shown] == ["p", "q"]
    assert fig.get_suptitle() == "E"
    lr1, lr2 = shown[0].get_lines()
    # two of four networks reached eps (at 3 and 10): the curve levels off at 0.5
    assert lr1.get_xdata().tolist() == [1.0, 3.0, 10.0, 40.0]
    assert lr1.get_ydata().tolist() == [0.0, 0.25, 0.5, 0.5]
    # epoch 0 is drawn at 1 (log x); both networks reached eps
    assert lr2.get_xdata().tolist() == [1.0, 1.0, 5.0, 40.0]
    assert lr2.get_ydata().tolist() == [0.0, 0.5, 1.0, 1.0]
    assert lr1.get_drawstyle() == "steps-post"
    (never,) = shown[1].get_lines()
    assert never.get_ydata().tolist() == [0.0, 0.0]
    assert never.get_color() == lr1.get_color() != lr2.get_color()
    assert [t.get_text() for t in shown[1].texts] == ["no network reached\nloss < 0.01"]
    assert not shown[0].texts
    for ax in shown:
        assert ax.get_xscale() == "log" and ax.get_xlim() == (1.0, 40.0)
    assert shown[0].get_ylabel() == "fraction with loss < 0.01"
    (legend,) = fig.legends
    assert _legend(legend) == ["lr 1", "lr 2"]
    _render(fig)


def test_boundary_gallery_rows_of_networks():
    x, y = five_points()

    def constant(values):
        return lambda grid: torch.tensor(values)[:, None].expand(len(values), grid.shape[0])

    rows = [("row A", constant([0.0, 1.0, 0.25]), ["a0", "a1", "a2"]),
            ("row B", lambda grid: _predict(grid), ["b0", "b1", "b2"])]
    fig = plot.boundary_gallery(x, y, rows, title="G", resolution=9)
    shown = _visible_plot_axes(fig)
    assert [ax.get_title() for ax in shown] == ["row A\na0", "row A\na1", "row A\na2",
                                                "row B\nb0", "row B\nb1", "row B\nb2"]
    assert len(fig.axes) == 6 + 1  # a row per group, one colorbar
    assert fig.get_suptitle() == "G"
    for ax, v in zip(shown[:3], [0.0, 1.0, 0.25]):  # row A's networks, in order
        assert _contour(ax).zmin == _contour(ax).zmax == v
    # row B: the logistic networks vary over the plane
    assert all(_contour(ax).zmin < 0.5 < _contour(ax).zmax for ax in shown[3:])
    assert sum(ax.get_ylabel() == "$x_2$" for ax in shown) == 2  # first column, both rows
    with pytest.raises(ValueError, match="same number"):
        plot.boundary_gallery(x, y, [rows[0], ("short", constant([0.0]), ["c0"])])
    _render(fig)


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
