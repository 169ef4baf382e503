"""fastmlp: the lab's hand-derived backpropagation, for many networks at once.

data (:mod:`fastmlp.datasets`) -> :class:`Population` (of one :class:`Architecture`) -> engine
(:mod:`fastmlp.engine`, one interface, one module per backend)
-> :func:`train` -> :class:`TrainResult` -> plots (:mod:`fastmlp.plot`);
:func:`sweep` runs the lab's closing experiments over a grid of configurations.
"""
from ._version import __version__
from .architecture import Architecture
from .initializers import INIT_SCHEMES
from .population import Population
from .train import TrainResult, train
from .sweep import sweep

__all__ = ["Architecture", "Population", "train", "TrainResult", "sweep", "INIT_SCHEMES", "__version__"]
