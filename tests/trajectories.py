"""Comparing loss trajectories across backends with tolerances from each network's conditioning.

The method is docs/testing.md's ("Tolerances from conditioning"): ``fastmlp.conditioning``
measures how far one rounding per parameter and epoch moves each network (a float64 run with
noise against one without); a trajectory is held to the dtype's tolerance (conftest.RTOL) up
to the network's horizon, where rounding alone could move it by that much, and not after.
"""
from __future__ import annotations

import torch

from fastmlp import Population, conditioning


def assert_within_horizon(actual: torch.Tensor, sens: conditioning.Sensitivity, rtol: float, msg: str = "",
                          min_compared: float = 0.5, expected: torch.Tensor | None = None) -> torch.Tensor:
    """``actual`` [G, E] losses against ``expected`` (default: the oracle ``sens.losses``) at
    ``rtol`` before each network's horizon.  Also fails when fewer than ``min_compared`` of
    the entries are compared (a test must compare something).  Returns the horizons [G]."""
    actual = actual.detach().to(device=sens.losses.device, dtype=torch.float64)
    oracle = sens.losses if expected is None else expected.detach().to(device=sens.losses.device, dtype=torch.float64)
    assert actual.shape == sens.losses.shape, f"{msg}: shape {tuple(actual.shape)} != {tuple(sens.losses.shape)}"
    h = sens.horizon(rtol)
    compared = sens.compared(rtol)
    assert compared.float().mean() >= min_compared, \
        f"{msg}: {compared.float().mean():.1%} of the losses are compared (horizons {h.tolist()[:16]}...)"
    tol = sens.tolerance(rtol)
    bad = ~((actual - oracle).abs() <= tol) & compared  # NaN where the oracle is finite: bad
    if bad.any():
        g, e = (int(i) for i in bad.nonzero()[0])
        raise AssertionError(
            f"{msg}: {int(bad.sum())} of {int(compared.sum())} compared losses are off by more than rtol {rtol:g}; "
            f"first: network {g} epoch {e}: {actual[g, e].item():.10g} against {oracle[g, e].item():.10g} "
            f"(tolerance {tol[g, e].item():.3g}, horizon {int(h[g])}, rounding spread {sens.spread[g, e].item():.3g})")
    return h


def assert_insensitive(x, y, population, epochs: int, lr, dtype: torch.dtype = torch.float32, msg: str = ""):
    """Measure that a test case's networks are insensitive at ``dtype``'s tolerance over the
    whole run (every epoch, the final loss; docs/testing.md), so a test that compares the
    case tightly at every epoch stands on a measurement, not on its luck on one machine.
    ``population`` is not modified.  Returns the :class:`~fastmlp.conditioning.Sensitivity`."""
    from tests.conftest import RTOL

    noise = conditioning.NOISE if dtype == torch.float32 else 2.0**-53
    sens = conditioning.measure(x, y, population, epochs, lr, noise=noise)
    ok = sens.stable(RTOL[dtype])
    assert ok.all(), (f"{msg}: networks {ok.logical_not().nonzero()[:, 0].tolist()} are sensitive at {RTOL[dtype]:g} "
                      f"within {epochs} epochs (horizons {sens.horizon(RTOL[dtype]).tolist()}): compare them up to "
                      "their horizons (assert_within_horizon), not over the whole run")
    return sens


def assert_same_training(x, y, result, expected, epochs: int, lr, msg: str = ""):
    """A backend's ``result`` (a TrainResult, or anything with ``population``, ``losses`` and
    ``final_loss``, which may be None) against ``expected`` (the torch engine's, same
    seeds, sizes and dtype), with tolerances from the networks' conditioning: loss curves up
    to each network's horizon, final losses and parameters of the networks insensitive over
    the whole run (parameters at each network's measured tolerance).  The sensitivity is
    measured on a fresh copy of the population on the CPU (the seeds give its start)."""
    from tests.conftest import RTOL

    pop = result.population
    rtol = RTOL[pop.dtype]
    start = Population(pop.sizes, pop.seeds.cpu(), init=pop.init, gain=pop.gain, dtype=pop.dtype)
    lr = lr.cpu() if torch.is_tensor(lr) else lr
    noise = conditioning.NOISE if pop.dtype == torch.float32 else 2.0**-53
    sens = conditioning.measure(x.cpu(), y.cpu(), start, epochs, lr, noise=noise)
    assert_within_horizon(result.losses, sens, rtol, msg=f"{msg} loss curves", expected=expected.losses)
    ok = sens.stable(rtol)
    floor = sens.losses.abs().amax(dim=1)[ok]
    if getattr(result, "final_loss", None) is not None:
        a, b = (t.detach().cpu().double()[ok] for t in (result.final_loss, expected.final_loss))
        assert ((a - b).abs() <= rtol * (b.abs() + floor)).all(), f"{msg} final losses: {a} against {b}"
    tol = sens.parameter_tolerance(rtol)[ok]
    ref = expected.population
    scale = torch.stack([t.detach().cpu().double().abs().flatten(1).amax(dim=1) for t in ref.weights + ref.biases],
                        dim=1).amax(dim=1)[ok]
    for i, (p, q) in enumerate(zip(pop.weights + pop.biases, ref.weights + ref.biases)):
        off = (p.detach().cpu().double()[ok] - q.detach().cpu().double()[ok]).flatten(1).abs().amax(dim=1) / scale
        assert (off <= tol).all(), f"{msg} final parameters (tensor {i}): {(off / tol).max():.3g} x the tolerance"
    return sens
