"""Comparing loss trajectories across backends with tolerances from each network's conditioning.

The method is docs/testing.md's ("Tolerances from conditioning"): ``fastmlp.conditioning``
measures how far one rounding per parameter and epoch moves each network (a float64 run with
noise against one without); a trajectory is held to the dtype's tolerance (conftest.RTOL) up
to the network's horizon, where rounding alone could move it by that much, and not after.
"""
from __future__ import annotations

import torch

from fastmlp import conditioning


def assert_within_horizon(actual: torch.Tensor, sens: conditioning.Sensitivity, rtol: float, msg: str = "",
                          min_horizon: int = 10) -> torch.Tensor:
    """``actual`` [G, E] losses against the oracle ``sens.losses`` at ``rtol`` before each
    network's horizon.  Also fails when some network is compared for fewer than
    ``min_horizon`` epochs (a test must compare something).  Returns the horizons [G]."""
    actual = actual.detach().to(device=sens.losses.device, dtype=torch.float64)
    assert actual.shape == sens.losses.shape, f"{msg}: shape {tuple(actual.shape)} != {tuple(sens.losses.shape)}"
    h = sens.horizon(rtol)
    assert int(h.min()) >= min(min_horizon, actual.shape[1]), f"{msg}: a network is compared for {int(h.min())} epochs only"
    compared = sens.compared(rtol)
    tol = sens.tolerance(rtol)
    bad = ~((actual - sens.losses).abs() <= tol) & compared  # NaN where the oracle is finite: bad
    if bad.any():
        g, e = (int(i) for i in bad.nonzero()[0])
        raise AssertionError(
            f"{msg}: {int(bad.sum())} of {int(compared.sum())} compared losses are off by more than rtol {rtol:g}; "
            f"first: network {g} epoch {e}: {actual[g, e].item():.10g} against {sens.losses[g, e].item():.10g} "
            f"(tolerance {tol[g, e].item():.3g}, horizon {int(h[g])}, rounding spread {sens.spread[g, e].item():.3g})")
    return h
