"""Optional dependencies: whether they are here, without importing them.

``import fastmlp`` and the torch engine need neither Triton nor numba; the backends that do
ask here first (a leaf module: the kernels import it too, without importing the engine).
"""
from __future__ import annotations

import importlib.util
import os

__all__ = ["triton_available", "triton_interpreter"]


def triton_available() -> bool:
    """True when the triton package can be imported (without importing it)."""
    return importlib.util.find_spec("triton") is not None


def triton_interpreter() -> bool:
    """True when ``TRITON_INTERPRET=1``: Triton kernels then run on the CPU, slowly."""
    return os.environ.get("TRITON_INTERPRET", "0") not in ("", "0")
