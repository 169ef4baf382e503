"""Shared test helpers: the tolerance table, the lab's data, and NaN-poisoned buffers."""
from __future__ import annotations

import os

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
