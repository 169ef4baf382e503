"""Decision boundaries over training: one panel per network, one frame per snapshot
(``boundary_animation``), and writing an animation as GIF or MP4 (``save_animation``).

The frames come from ``result.snapshots`` (``train(..., snapshot_every=k)``): every frame's
predictions over the grid are computed up front, in one batched forward pass of the snapshot
parameters, so that drawing a frame only swaps image data and titles.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Optional, Sequence, Tuple, Union

import torch
from torch import Tensor

from ._common import (ArgumentError, ArgumentTypeError, _activations, _as_images, _check_grid_range, _check_int,
                      _check_panel_size, _check_plane_data, _check_position, _draw_points, _forward, _frame_plane,
                      _outer_labels, _plane_grid, _plane_panels)

# Panels drawn when ``networks`` is not given: the first ones of the snapshots.
MAX_DEFAULT_PANELS = 12
# Elements of the largest activation tensor the forward pass holds at once (float32: 64 MiB).
_FORWARD_ELEMENTS = 1 << 24


def _snapshots_of(result):
    """``result.snapshots`` of a TrainResult (or a Snapshots itself), checked."""
    if hasattr(result, "snapshots"):
        snaps = result.snapshots
        if snaps is None:
            raise ArgumentError("result", "result holds no snapshots: train with snapshot_every=k (and "
                                          "snapshot_networks=[...] for the networks to watch) to animate it")
    else:
        snaps = result
    if not all(hasattr(snaps, a) for a in ("epochs", "weights", "biases", "loss", "seeds", "sizes")):
        raise ArgumentTypeError("result", f"result must be a TrainResult with snapshots (or its Snapshots), "
                                          f"got {type(result).__name__}")
    if len(snaps.epochs) == 0:
        raise ArgumentError("result", "result.snapshots holds no snapshot")
    if snaps.sizes[0] != 2:
        raise ArgumentError("result", f"decision boundaries need 2-D inputs: the networks have "
                                      f"{snaps.sizes[0]} inputs (sizes {list(snaps.sizes)})")
    return snaps


def _choose_networks(networks, n: int) -> list:
    if networks is None:
        return list(range(min(n, MAX_DEFAULT_PANELS)))
    if isinstance(networks, Tensor):
        networks = networks.flatten().tolist()
    elif isinstance(networks, (int, str, bytes)) or not hasattr(networks, "__iter__"):
        raise ArgumentTypeError("networks", f"networks must be a list of positions among the snapshot "
                                            f"networks, got {type(networks).__name__}")
    chosen = [_check_position("networks", k, n, "snapshot network") for k in networks]
    if not chosen:
        raise ArgumentError("networks", "networks must name at least one snapshot network")
    return chosen


def _choose_frames(frames, S: int) -> list:
    """Snapshot indices: all of them, or ``frames`` evenly spaced ones with the first and last."""
    if frames is None or S == 1:
        return list(range(S))
    frames = _check_int("frames", frames, 2)
    if frames >= S:
        return list(range(S))
    # steps of (S - 1) / (frames - 1) >= 1: the rounded positions are distinct
    return torch.linspace(0, S - 1, frames, dtype=torch.float64).round().long().tolist()


def _frame_predictions(snaps, frames: list, nets: list, grid: Tensor, resolution: int) -> Tensor:
    """Images [F, k, R, R] (CPU float32) of the output of networks ``nets`` at snapshots ``frames``."""
    acts = _activations(snaps, "result")
    device = snaps.weights[0].device
    f_idx = torch.tensor(frames, device=device)
    n_idx = torch.tensor(nets, device=device)
    weights = [w.index_select(0, f_idx).index_select(1, n_idx) for w in snaps.weights]
    biases = [b.index_select(0, f_idx).index_select(1, n_idx) for b in snaps.biases]
    grid = grid.to(device, weights[0].dtype)
    # frames in chunks, so that snapshot_every=1 over a long run stays within memory
    per_frame = len(nets) * grid.shape[0] * max(snaps.sizes[1:])
    step = max(1, _FORWARD_ELEMENTS // per_frame)
    out = []
    with torch.no_grad():
        for f0 in range(0, len(frames), step):
            z = _forward([w[f0:f0 + step] for w in weights], [b[f0:f0 + step] for b in biases], acts, grid)[-1]
            out.append(z[..., 0].to("cpu", torch.float32))
    return _as_images(torch.cat(out), resolution)


def _freeze_layout(fig) -> None:
    """Lay ``fig`` out once (now, with the last frame's titles: the widest epochs) and keep
    that layout: a frame then moves nothing, and drawing it skips the layout solver. No
    layout engine at all, not 'none': savefig draws a figure that has any engine, even the
    placeholder 'none' leaves, twice (a layout pass first)."""
    import matplotlib

    fig.draw_without_rendering()
    with matplotlib.rc_context({"figure.autolayout": False, "figure.constrained_layout.use": False}):
        fig.set_layout_engine(None)


def frame_title(seed: int, epoch: int, loss: float) -> str:
    """A panel's title: ``"seed 17 · epoch 1200 · loss 3.1e-03"``."""
    return f"seed {seed} \u00b7 epoch {epoch} \u00b7 loss {loss:.1e}"


def boundary_animation(x: Tensor, y: Tensor, result, networks: Optional[Sequence[int]] = None, *,
                       frames: Optional[int] = None, grid_range: Optional[Tuple[float, float]] = None,
                       resolution: int = 50, ncols: int = 4, panel_size: Tuple[float, float] = (2.6, 2.6),
                       interval: int = 100, title: Optional[str] = None):
    """The decision boundaries of snapshot networks over training, as a matplotlib animation.

    ``result`` is a :class:`~fastmlp.train.TrainResult` whose ``train`` call had
    ``snapshot_every`` set (or its ``result.snapshots``). ``networks`` are positions among
    the snapshot networks (``result.snapshots.networks[k]`` is the k-th one's place in the
    population), one panel each, in that order, ``ncols`` per row; default: the first
    :data:`MAX_DEFAULT_PANELS`. ``frames`` caps the frames: that many evenly spaced
    snapshots, always the first (the initial networks) and the last (the trained ones);
    default: every snapshot. Each panel is titled with the seed, the epoch and the loss of
    that snapshot (:func:`frame_title`) and shows the prediction over a ``resolution``
    squared grid of ``grid_range`` (default: the data's extent widened by half of it on each
    side, (-2, 2) for the lab's five points) on a fixed [0, 1] colour scale, with ``x`` [N, 2]
    on top coloured by ``y``, as :func:`decision_boundaries` draws them. ``panel_size`` is
    each panel's (width, height) in inches; ``interval`` the milliseconds between frames;
    ``title`` an optional title over the panels.

    Every frame is computed before this returns; drawing one sets image data and titles
    only. The image of panel k is ``image[r, c]`` = the prediction at ``(x1, x2) = (axis[c],
    axis[r])`` with ``axis = linspace(*grid_range, resolution)`` (drawn with ``origin="lower"``).

    Returns a ``matplotlib.animation.FuncAnimation`` over a pyplot-free Figure (nothing is
    registered with pyplot); its ``figure`` attribute is that Figure, ``frame_epochs`` the
    epoch of every frame. Write it with :func:`save_animation`, e.g.
    ``save_animation(boundary_animation(x, y, result, networks=[0, 1], frames=50), "boundaries.gif")``,
    or show it in a notebook with ``anim.to_jshtml()``.
    """
    snaps = _snapshots_of(result)
    x, y = _check_plane_data(x, y)
    nets = _choose_networks(networks, len(snaps.seeds))
    chosen = _choose_frames(frames, len(snaps.epochs))
    resolution = _check_int("resolution", resolution, 2)
    ncols = _check_int("ncols", ncols, 1)
    interval = _check_int("interval", interval, 1)
    panel_size = _check_panel_size(panel_size)
    lo, hi = _check_grid_range(grid_range, x)

    _, _, grid = _plane_grid(lo, hi, resolution, torch.float64, "cpu")
    images = _frame_predictions(snaps, chosen, nets, grid, resolution).numpy()  # [F, k, R, R]
    epochs = [int(snaps.epochs[j]) for j in chosen]
    seeds = [int(s) for s in snaps.seeds.cpu()[nets]]
    loss = snaps.loss.index_select(0, torch.tensor(chosen, device=snaps.loss.device)).cpu()[:, nets].tolist()
    titles = [[frame_title(s, e, l) for s, l in zip(seeds, row)] for e, row in zip(epochs, loss)]

    fig, axes, cols = _plane_panels(len(nets), ncols, panel_size)
    shown, heads = [], []
    for k, ax in enumerate(axes):
        shown.append(ax.imshow(images[-1, k], origin="lower", extent=(lo, hi, lo, hi), vmin=0.0, vmax=1.0,
                               cmap="viridis", interpolation="bilinear"))
        _draw_points(ax, x, y)
        _frame_plane(ax, lo, hi)
        heads.append(ax.set_title(titles[-1][k], fontsize="small", y=1.0))  # y: no search for room per frame
    _outer_labels(axes, cols, "$x_1$", "$x_2$", shared=True)
    fig.colorbar(shown[0], ax=axes, label="predicted probability", shrink=0.9)
    if title:
        fig.suptitle(title)
    _freeze_layout(fig)

    def draw(f: int):
        for k, (im, head) in enumerate(zip(shown, heads)):
            im.set_data(images[f, k])
            head.set_text(titles[f][k])
        return shown + heads

    draw(0)
    from matplotlib.animation import FuncAnimation

    anim = FuncAnimation(fig, draw, frames=len(chosen), interval=interval, blit=False)
    anim.figure, anim.frame_epochs = fig, epochs
    return anim


def save_animation(anim, path: Union[str, os.PathLike], *, fps: Optional[float] = None, dpi: int = 72) -> Path:
    """Write ``anim`` to ``path``: ``.gif`` with matplotlib's Pillow writer, ``.mp4`` with its
    ffmpeg writer (H.264), which needs an ``ffmpeg`` matplotlib can find. ``fps`` defaults
    to the animation's own pace (1000 / interval); ``dpi`` sets the pixel size (at the
    default 72, the lab's 8 panels over 50 frames make an 813 x 388 GIF of 3.8 MB). Parent folders
    are created; everything is checked before anything is written. Returns the path.
    """
    from matplotlib.animation import Animation, FFMpegWriter, PillowWriter, writers

    if not isinstance(anim, Animation):
        raise ArgumentTypeError("anim", f"anim must be a matplotlib Animation, got {type(anim).__name__}")
    if not isinstance(path, (str, os.PathLike)):
        raise ArgumentTypeError("path", f"path must be a str or os.PathLike, got {type(path).__name__}")
    path = Path(path)
    kind = path.suffix.lower()
    if kind not in (".gif", ".mp4"):
        raise ArgumentError("path", f"path must end in .gif or .mp4, got {str(path)!r}")
    if kind == ".mp4" and not writers.is_available("ffmpeg"):
        raise ArgumentError("path", "writing .mp4 needs ffmpeg, and matplotlib finds none (install ffmpeg, or "
                                    "set matplotlib.rcParams['animation.ffmpeg_path']); write a .gif instead")
    if fps is None:
        fps = 1000.0 / getattr(anim, "_interval", 100)
    if isinstance(fps, bool) or not isinstance(fps, (int, float)) or not 0 < fps < float("inf"):
        raise ArgumentError("fps", f"fps must be a finite number > 0, got {fps!r}")
    dpi = _check_int("dpi", dpi, 1)
    path.parent.mkdir(parents=True, exist_ok=True)
    writer = PillowWriter(fps=fps) if kind == ".gif" else FFMpegWriter(fps=fps, codec="h264")
    anim.save(path, writer=writer, dpi=dpi)
    return path
