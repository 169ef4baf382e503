"""fastmlp.plot's pictures of training you can watch: the decision boundaries over training
(boundary_animation, save_animation) and one network's hidden units over the input plane
(unit_maps). Each test checks what was drawn: panels, frames, titles, colour limits, and that
the images hold the networks' predictions over the grid."""
import re
import subprocess

import pytest
import torch

matplotlib = pytest.importorskip("matplotlib", reason="plots need matplotlib")
matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402  (only to check that nothing is registered with it)
from matplotlib.animation import FuncAnimation, writers  # noqa: E402
from matplotlib.collections import PathCollection  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402

from fastmlp import Population, plot, train  # noqa: E402
from fastmlp.datasets import five_points  # noqa: E402
from fastmlp.plot import animation as anim_module  # noqa: E402
from fastmlp.plot import boundary_animation, save_animation, unit_maps  # noqa: E402
from fastmlp.validate import ArgumentError, ArgumentTypeError  # noqa: E402

EPOCHS, EVERY = 600, 60  # 11 snapshots: epochs 0, 60, ..., 600
R = 12  # grid resolution: small, the tests stay fast


@pytest.fixture(scope="module")
def lab():
    """Eight lab networks trained with snapshots of every one (the torch engine: no compile)."""
    x, y = five_points()
    pop = Population([2, 5, 3, 1], seeds=range(10, 18))
    result = train(x, y, pop, epochs=EPOCHS, lr=1.0, backend="torch", progress=False, snapshot_every=EVERY)
    return x, y, result


@pytest.fixture(autouse=True)
def no_pyplot_figures():
    assert plt.get_fignums() == []
    yield
    assert plt.get_fignums() == [], "a figure was registered with pyplot"


def _grid(lo=-2.0, hi=2.0, n=R):
    axis = torch.linspace(lo, hi, n)
    gx, gy = torch.meshgrid(axis, axis, indexing="ij")  # the lab's grid
    return torch.stack([gx.flatten(), gy.flatten()], dim=1)


def _image(values, n=R):
    """Values over _grid [n * n] as the image drawn with origin="lower": row = x2, column = x1."""
    return torch.as_tensor(values).reshape(n, n).T


def _panels(fig):
    return [ax for ax in fig.axes if ax.get_visible() and ax.images and ax.get_title()]


def _step(anim):
    """Every frame, drawn as the animation draws it: (titles, images, colour limits) per frame."""
    anim._init_draw()  # what a first draw or a save does first (frame 0)
    out = []
    for f in anim.new_frame_seq():
        anim._draw_frame(f)
        panels = _panels(anim.figure)
        out.append(([ax.get_title() for ax in panels],
                    [torch.tensor(ax.images[0].get_array().data, dtype=torch.float64) for ax in panels],
                    [ax.images[0].get_clim() for ax in panels]))
    return out


def _title(seed, epoch, loss):
    return f"seed {seed} \u00b7 epoch {epoch} \u00b7 loss {loss:.1e}"


# ------------------------------------------------------------------ boundary_animation

def test_animation_panels_frames_titles_and_images(lab):
    x, y, result = lab
    snaps = result.snapshots
    anim = boundary_animation(x, y, result, networks=[1, 3, 4], frames=5, resolution=R)
    assert isinstance(anim, FuncAnimation) and isinstance(anim.figure, Figure)
    fig = anim.figure
    panels = _panels(fig)
    assert len(panels) == 3 and len(fig.axes) == 3 + 1  # one row of 3, one colorbar
    # 5 evenly spaced snapshots of 11, the first and the last among them
    assert anim.frame_epochs == [0, 120, 300, 480, 600]  # snapshots round(linspace(0, 10, 5))
    frames = _step(anim)
    assert len(frames) == 5
    seeds = [int(snaps.seeds[k]) for k in (1, 3, 4)]
    first_titles, first_images, _ = frames[0]
    last_titles, last_images, _ = frames[-1]
    assert first_titles == [_title(s, 0, float(snaps.loss[0, k])) for s, k in zip(seeds, (1, 3, 4))]
    # the last snapshot is the trained network: its loss is the run's final loss
    assert last_titles == [_title(s, EPOCHS, float(result.final_loss[snaps.networks[k]]))
                           for s, k in zip(seeds, (1, 3, 4))]
    assert frames[2][0][0] == _title(seeds[0], 300, float(snaps.loss[5, 1]))
    for _titles, _images, clims in frames:
        assert clims == [(0.0, 1.0)] * 3  # one fixed colour scale for every frame
    # the last frame's images are the trained population's predictions over the grid
    predicted = result.population.predict(_grid())[..., 0]  # [G, M]
    for k, image in zip((1, 3, 4), last_images):
        torch.testing.assert_close(image, _image(predicted[int(snaps.networks[k])]).double(), rtol=0, atol=1e-6)
    # training moved the boundaries
    assert all((a - b).abs().max() > 0.2 for a, b in zip(first_images, last_images))
    for ax in panels:
        # a frame only swaps data: one image and the points, over the default (-2, 2) plane
        assert len(ax.images) == 1 and ax.images[0].get_extent() == [-2.0, 2.0, -2.0, 2.0]
        (points,) = [c for c in ax.collections if isinstance(c, PathCollection)]
        assert (points.get_offsets() == x.double().numpy()).all()
        assert (points.get_array() == y.reshape(-1).double().numpy()).all()
        assert ax.get_xlim() == (-2.0, 2.0) and ax.get_ylim() == (-2.0, 2.0)
    fig.canvas.draw()


def test_animation_frame_choice_and_default_networks(lab, monkeypatch):
    x, y, result = lab
    epochs = result.snapshots.epochs
    for frames, want in [(None, epochs), (2, [0, EPOCHS]), (4, [0, 180, 420, 600]), (50, epochs)]:
        anim = boundary_animation(x, y, result, networks=[0], frames=frames, resolution=4)
        assert anim.frame_epochs == want
        assert len(list(anim.new_frame_seq())) == len(want)
        anim._init_draw()
    # default: every snapshot network (8 here), up to MAX_DEFAULT_PANELS of them
    anim = boundary_animation(x, y, result, frames=2, resolution=4)
    assert len(_panels(anim.figure)) == 8
    assert [ax.get_title().split(" \u00b7 ")[0] for ax in _panels(anim.figure)] == \
           [f"seed {s}" for s in range(10, 18)]
    anim._init_draw()
    monkeypatch.setattr(anim_module, "MAX_DEFAULT_PANELS", 3)
    anim = boundary_animation(x, y, result.snapshots, frames=2, resolution=4, ncols=2, grid_range=(-1, 3))
    panels = _panels(anim.figure)
    assert len(panels) == 3 and len(anim.figure.axes) == 4 + 1  # 2 x 2, one hidden; a colorbar
    assert panels[0].images[0].get_extent() == [-1.0, 3.0, -1.0, 3.0]
    anim._init_draw()


def test_animation_errors(lab):
    x, y, result = lab
    pop = Population([2, 3, 1], seeds=2)
    plain = train(x, y, pop, epochs=3, lr=0.5, backend="torch", progress=False)
    with pytest.raises(ArgumentError, match="snapshot_every") as e:
        boundary_animation(x, y, plain)
    assert e.value.arg == "result"
    with pytest.raises(ArgumentTypeError) as e:
        boundary_animation(x, y, pop)
    assert e.value.arg == "result"
    for bad, arg in [(dict(networks=[8]), "networks"), (dict(networks=[]), "networks"),
                     (dict(networks=3), "networks"), (dict(frames=1), "frames"), (dict(resolution=1), "resolution"),
                     (dict(panel_size=(0, 2)), "panel_size"), (dict(grid_range=(1, 1)), "grid_range")]:
        with pytest.raises(ArgumentError) as e:
            boundary_animation(x, y, result, **bad)
        assert e.value.arg == arg, bad
    with pytest.raises(ArgumentError, match="2-D") as e:
        boundary_animation(torch.zeros(5, 3), y, result)
    assert e.value.arg == "x"
    three = train(torch.zeros(4, 3), torch.zeros(4, 1), Population([3, 2, 1], seeds=1), epochs=2, lr=0.1,
                  backend="torch", progress=False, snapshot_every=1)
    with pytest.raises(ArgumentError, match="3 inputs") as e:
        boundary_animation(x, y, three)
    assert e.value.arg == "result"


# ------------------------------------------------------------------------ save_animation

def test_save_gif_frames_and_size(lab, tmp_path):
    Image = pytest.importorskip("PIL.Image")
    x, y, result = lab
    # the lab's picture: 8 panels at the default size and dpi; 4 frames of the 50 a run writes
    anim = boundary_animation(x, y, result, frames=4)
    path = save_animation(anim, tmp_path / "deep" / "boundaries.gif")
    assert path == tmp_path / "deep" / "boundaries.gif"
    with Image.open(path) as im:
        assert im.format == "GIF" and im.n_frames == 4
        assert im.info["duration"] == 100  # the animation's interval
        w, h = im.size
    assert (w, h) == tuple(int(v * 72) for v in anim.figure.get_size_inches())  # default dpi 72
    size = path.stat().st_size
    assert size / 4 * 50 < 5e6, f"{size / 4 * 50 / 1e6:.1f} MB for 50 frames"  # under 5 MB at 50 frames
    # fps and dpi
    small = save_animation(boundary_animation(x, y, result, networks=[0], frames=3, resolution=R),
                           tmp_path / "small.GIF", fps=4, dpi=30)
    with Image.open(small) as im:
        assert im.n_frames == 3 and im.info["duration"] == 250


def test_save_mp4(lab, tmp_path):
    if not writers.is_available("ffmpeg"):
        pytest.skip("no ffmpeg for matplotlib")
    x, y, result = lab
    path = save_animation(boundary_animation(x, y, result, networks=[0, 1], frames=3, resolution=R),
                          tmp_path / "b.mp4", dpi=40)
    assert path.stat().st_size > 0 and path.read_bytes()[4:8] == b"ftyp"
    # ffmpeg reads it back: one video stream of 3 frames
    out = subprocess.run([matplotlib.rcParams["animation.ffmpeg_path"], "-i", str(path), "-map", "0:v:0", "-c",
                          "copy", "-f", "null", "-"], capture_output=True, text=True, timeout=60)
    assert re.findall(r"frame=\s*(\d+)", out.stderr)[-1:] == ["3"], out.stderr


def test_save_errors_write_nothing(lab, tmp_path, monkeypatch):
    x, y, result = lab
    anim = boundary_animation(x, y, result, networks=[0], frames=2, resolution=4)
    anim._init_draw()
    with pytest.raises(ArgumentError, match=r"\.gif or \.mp4") as e:
        save_animation(anim, tmp_path / "b.png")
    assert e.value.arg == "path"
    monkeypatch.setattr(writers, "is_available", lambda name: False)
    with pytest.raises(ArgumentError, match="ffmpeg") as e:
        save_animation(anim, tmp_path / "out" / "b.mp4")
    assert e.value.arg == "path"
    with pytest.raises(ArgumentError) as e:
        save_animation(anim, tmp_path / "b.gif", fps=0)
    assert e.value.arg == "fps"
    with pytest.raises(ArgumentTypeError) as e:
        save_animation(anim.figure, tmp_path / "b.gif")
    assert e.value.arg == "anim"
    assert not list(tmp_path.iterdir())


# ------------------------------------------------------------------------------ unit_maps

def _forward(pop, i, grid):
    """Every layer's output of network i over grid, by hand: tanh hidden layers, sigmoid output."""
    z, out = grid, []
    for l, (w, b) in enumerate(zip(pop.weights, pop.biases)):
        z = z @ w[i] + b[i]
        z = torch.sigmoid(z) if l == len(pop.weights) - 1 else torch.tanh(z)
        out.append(z)
    return out


def test_unit_maps_panels_titles_limits_and_data(lab):
    x, y, result = lab
    pop = result.population
    fig = unit_maps(pop, 2, x, y, resolution=R)
    assert isinstance(fig, Figure)
    panels = _panels(fig)
    assert [ax.get_title() for ax in panels] == [f"layer 1 \u00b7 unit {u}" for u in range(1, 6)] + \
           [f"layer 2 \u00b7 unit {u}" for u in range(1, 4)] + ["output"]
    assert len(fig.axes) == 3 * 5 + 2  # a row per layer, 5 wide (6 hidden); two colorbars
    assert sum(not ax.get_visible() for ax in fig.axes) == 6
    assert [ax.get_ylabel() for ax in panels if ax.get_ylabel()] == ["layer 1", "layer 2", "output"]
    assert fig.get_suptitle() == "network 2 \u00b7 seed 12"
    layers = _forward(pop, 2, _grid())
    want = [layers[0][:, u] for u in range(5)] + [layers[1][:, u] for u in range(3)] + [layers[2][:, 0]]
    for ax, values in zip(panels, want):
        (image,) = ax.images
        torch.testing.assert_close(torch.tensor(image.get_array().data), _image(values), rtol=0, atol=1e-6)
        assert image.get_extent() == [-2.0, 2.0, -2.0, 2.0]
    for ax in panels[:-1]:  # tanh units: [-1, 1] on a diverging colormap, no data points
        assert ax.images[0].get_clim() == (-1.0, 1.0) and ax.images[0].get_cmap().name == "RdBu_r"
        assert not ax.collections
    out = panels[-1]
    assert out.images[0].get_clim() == (0.0, 1.0)
    torch.testing.assert_close(torch.tensor(out.images[0].get_array().data),
                               _image(pop.predict(_grid())[2, :, 0]), rtol=0, atol=1e-6)
    (points,) = [c for c in out.collections if isinstance(c, PathCollection)]
    assert (points.get_offsets() == x.double().numpy()).all()
    bars = sorted(ax.get_ylabel() for ax in fig.axes if not ax.get_title() and ax.get_visible())
    assert bars == ["hidden unit (tanh)", "output (sigmoid)"]
    fig.canvas.draw()


def test_unit_maps_of_a_snapshot(lab):
    x, y, result = lab
    snaps = result.snapshots
    start = snaps.population(0)  # the initial networks, in the order of snaps.networks
    fig = unit_maps(start, 1, x, y, resolution=R, title=f"epoch {snaps.epochs[0]}")
    assert fig.get_suptitle() == "epoch 0"
    out = _panels(fig)[-1]
    torch.testing.assert_close(torch.tensor(out.images[0].get_array().data),
                               _image(start.predict(_grid())[1, :, 0]), rtol=0, atol=1e-6)
    trained = unit_maps(snaps.population(-1), 1, x, y, resolution=R)
    assert trained.get_suptitle() == "network 1 \u00b7 seed 11"
    end = _panels(trained)[-1].images[0].get_array().data
    torch.testing.assert_close(torch.tensor(end), _image(result.population.predict(_grid())[1, :, 0]),
                               rtol=0, atol=1e-6)
    assert abs(end - out.images[0].get_array().data).max() > 0.2


def test_unit_maps_depth_zero_and_wide_layers():
    x, y = five_points()
    fig = unit_maps(Population([2, 1], seeds=3), 1, x, y, resolution=R)
    assert [ax.get_title() for ax in _panels(fig)] == ["output"]
    assert len(fig.axes) == 1 + 1  # the output row alone, its colorbar
    # a layer wider than ncols wraps onto more rows; two outputs, one panel each
    labels = torch.stack([y[:, 0], 1 - y[:, 0]], dim=1)  # [5, 2]: a column per output
    fig = unit_maps(Population([2, 7, 2], seeds=1), 0, x, labels, resolution=R, ncols=4)
    assert [ax.get_title() for ax in _panels(fig)] == [f"layer 1 \u00b7 unit {u}" for u in range(1, 8)] + \
           ["output \u00b7 unit 1", "output \u00b7 unit 2"]
    assert len(fig.axes) == 3 * 4 + 2
    assert [ax.get_ylabel() for ax in _panels(fig) if ax.get_ylabel()] == ["layer 1", "output"]
    for ax, column in zip(_panels(fig)[-2:], labels.T):  # each output's points coloured by its column
        (points,) = [c for c in ax.collections if isinstance(c, PathCollection)]
        assert (points.get_array() == column.double().numpy()).all()
    fig.canvas.draw()
    # one label per point serves every output
    assert len(_panels(unit_maps(Population([2, 2], seeds=1), 0, x, y, resolution=R))) == 2


def test_unit_maps_errors():
    x, y = five_points()
    with pytest.raises(ArgumentError, match="3 inputs") as e:
        unit_maps(Population([3, 4, 1], seeds=2), 0, torch.zeros(5, 3), y)
    assert e.value.arg == "population"
    pop = Population([2, 3, 1], seeds=2)
    with pytest.raises(ArgumentError, match="out of range") as e:
        unit_maps(pop, 2, x, y)
    assert e.value.arg == "i"
    with pytest.raises(ArgumentTypeError) as e:
        unit_maps(pop, 0.5, x, y)
    assert e.value.arg == "i"
    with pytest.raises(ArgumentError, match="2-D") as e:
        unit_maps(pop, 0, torch.zeros(5, 3), y)
    assert e.value.arg == "x"
    with pytest.raises(ArgumentTypeError) as e:
        unit_maps(torch.zeros(3), 0, x, y)
    assert e.value.arg == "population"


def test_exported():
    assert {"boundary_animation", "save_animation", "unit_maps"} <= set(plot.__all__)
