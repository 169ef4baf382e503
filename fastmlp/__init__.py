"""fastmlp: the lab's hand-derived backpropagation, for many networks at once.

data (:mod:`fastmlp.datasets`) -> :class:`Population` (of one :class:`Architecture`) -> engine
(:mod:`fastmlp.engine`, one interface, one module per backend)
-> :func:`train` -> :class:`TrainResult` -> plots (:mod:`fastmlp.plot`);
:func:`sweep` runs the lab's closing experiments over a grid of configurations.
"""
import time as _time

STARTED = _time.perf_counter()  # the command line's "imports" phase runs from here

from ._version import __version__  # noqa: E402
from .architecture import Architecture  # noqa: E402
from .initializers import INIT_SCHEMES  # noqa: E402
from .population import Population  # noqa: E402
from .train import TrainResult, train  # noqa: E402
from .sweep import sweep  # noqa: E402

__all__ = ["Architecture", "Population", "train", "TrainResult", "sweep", "INIT_SCHEMES", "__version__"]
