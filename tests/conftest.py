"""Shared test helpers: the tolerance table, the lab's data, and NaN-poisoned buffers."""
from __future__ import annotations

import os
import re

import pytest
import torch

# Triton kernels run in Triton's CPU interpreter when there is no GPU.  The @triton.jit
# decorator reads TRITON_INTERPRET when a kernel module is imported (Triton 3.x), so it is
# set here, before any test module imports fastmlp.kernels.  An explicit setting wins.
if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")
# The CLI compiles the CPU fused program in a detached process when auto passes it over for
# its cold compile; tests that want it (tests/test_backends.py) turn it back on.
os.environ.setdefault("FASTMLP_BACKGROUND_COMPILE", "0")


# Where CUDA exists the kernels are compiled, and each test says where it runs: on the GPU
# (populations on "cuda"), or, for a test about the interpreter itself, in a subprocess with
# TRITON_INTERPRET=1 (this process imported the kernels compiled).
def triton_interpreter_broken() -> str | None:
    """Why the installed Triton's CPU interpreter cannot run this project's kernels (a skip
    reason), or None.  Known: Triton <= 3.6 converts a loop bound to a Python int with
    ``int(ndarray)``, which numpy >= 2.4 refuses ("only 0-dimensional arrays can be converted
    to Python scalars", seen on the H200 box: Triton 3.6.0, numpy 2.5.2); fixed upstream by
    triton-lang/triton#9172 (``int(data.squeeze())``, in Triton 3.9 here)."""
    try:
        import numpy
        import triton
    except ImportError:
        return None
    version = lambda v: tuple(map(int, re.match(r"(\d+)\.(\d+)", v).groups()))  # noqa: E731
    if version(triton.__version__) <= (3, 6) and version(numpy.__version__) >= (2, 4):
        return (f"Triton {triton.__version__}'s interpreter fails with numpy {numpy.__version__} "
                f"(int() of a 1-element array; triton-lang/triton#9172): use numpy < 2.4 or a newer Triton")
    return None


# One table of tolerances (relative): a tolerance loose enough to hide a bug is a bug.
RTOL = {torch.float64: 1e-10, torch.float32: 1e-5}


def assert_rel_close(actual: torch.Tensor, expected: torch.Tensor, dtype: torch.dtype | None = None, msg: str = ""):
    """Elementwise |a - e| <= rtol * (|e| + max|e|): relative to each element, with a floor
    relative to the tensor's scale, so an entry that passes near zero is held to the
    precision of the tensor rather than to an impossible one of its own."""
    rtol = RTOL[dtype or expected.dtype]
    actual, expected = actual.detach().cpu().double(), expected.detach().cpu().double()
    assert actual.shape == expected.shape, f"{msg} shape {tuple(actual.shape)} != {tuple(expected.shape)}"
    assert torch.isfinite(actual).all() == torch.isfinite(expected).all(), f"{msg} finiteness differs"
    scale = expected.abs().max().item() if expected.numel() else 0.0
    torch.testing.assert_close(actual, expected, rtol=rtol, atol=rtol * scale, msg=lambda m: f"{msg}\n{m}")


def five_points():
    x = torch.tensor([[0, 0], [1, 0], [0, -1], [-1, 0], [0, 1]], dtype=torch.float32)
    y = torch.tensor([[1], [0], [0], [0], [0]], dtype=torch.float32)
    return x, y


@pytest.fixture
def lab_data():
    return five_points()


# Under pytest-xdist (make test runs one worker per core), each worker runs torch with one
# thread: the workers fill the cores, and two-thread ops would only make them compete.
if os.environ.get("PYTEST_XDIST_WORKER"):
    torch.set_num_threads(1)


def pytest_collection_modifyitems(config, items):
    """The long tests (marked ``slow``) first: pytest-xdist hands tests out in this order, so a
    long one starts while the short ones fill the other worker instead of running alone at the
    end (the notebook, ~20 s warm and ~110 s on an empty compile cache, was collected last).
    A stable sort: the order is otherwise the collection's."""
    items.sort(key=lambda item: item.get_closest_marker("slow") is None)
