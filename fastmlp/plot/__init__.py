"""Figures for a population of networks: loss curves, decision boundaries (also as an
animation over training), the maps of hidden units, heatmaps.

matplotlib is imported inside the functions, so ``import fastmlp`` does not need
it. Figures are built as ``matplotlib.figure.Figure`` objects, not through
pyplot: nothing is registered with pyplot's global figure list (no leak when
plotting in a loop, no GUI backend needed), and nothing calls ``plt.show``.
Every function returns its Figure; in a notebook it displays as a cell's last
expression, elsewhere pass it to ``save``.

One module per kind of picture. They import torch and ``_common``, never another
fastmlp module, so ``fastmlp.results`` and ``fastmlp.sweep`` (which import this
package inside their functions) and this package cannot form an import cycle:

- ``_common``: what every figure shares (a pyplot-free Figure, panel grids, curve
  colours, outer axis labels) and ``save``.
- ``curves``: loss over epochs (``loss_curves``, ``loss_bands``) and the epochs to
  reach a loss (``epochs_ecdf``).
- ``heatmaps``: fractions over a grid of configurations (``converged_heatmaps``).
- ``boundaries``: predictions over the input plane, one panel per network
  (``decision_boundaries``, ``boundary_gallery``).
- ``animation``: those predictions over training, one frame per snapshot of
  ``train(..., snapshot_every=k)`` (``boundary_animation``), and writing an animation
  as GIF or MP4 (``save_animation``).
- ``units``: one network's every hidden unit and its output as maps over the input
  plane, layer by layer (``unit_maps``).

``_common`` also holds what the pictures of the input plane share: the lab's grid, the
data drawn on top, and the forward pass of stacked parameters over the grid (plot modules
read parameters, they never call fastmlp's engines). A new kind of picture gets a module of
its own beside these and a line in ``__all__`` below.
"""
from ._common import save
from .animation import boundary_animation, save_animation
from .boundaries import boundary_gallery, decision_boundaries
from .curves import epochs_ecdf, loss_bands, loss_curves
from .heatmaps import converged_heatmaps
from .units import unit_maps

__all__ = [
    # input plane
    "boundary_gallery", "decision_boundaries", "unit_maps",
    # input plane over training
    "boundary_animation",
    # configurations
    "converged_heatmaps",
    # loss over epochs
    "epochs_ecdf", "loss_bands", "loss_curves",
    # writing
    "save", "save_animation",
]
