"""Figures for a population of networks: loss curves, decision boundaries, heatmaps.

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

A new kind of picture gets a module of its own beside these and a line in
``__all__`` below: an animation of the boundaries over training, or maps of each
hidden unit over the input plane, sit next to ``boundaries``.
"""
from ._common import save
from .boundaries import boundary_gallery, decision_boundaries
from .curves import epochs_ecdf, loss_bands, loss_curves
from .heatmaps import converged_heatmaps

__all__ = [
    # input plane
    "boundary_gallery", "decision_boundaries",
    # configurations
    "converged_heatmaps",
    # loss over epochs
    "epochs_ecdf", "loss_bands", "loss_curves",
    # writing
    "save",
]
