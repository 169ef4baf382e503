"""How sensitive each network's training is to rounding, measured: what a float32 run of it can
be held to.

Two correct float32 implementations of one network's training agree to a few ulps only while
the network is insensitive; a chaotic one (large lr, saturated units) amplifies every rounding
difference until the two trajectories have nothing in common, and no tolerance is right for it.
So a comparison of trajectories asks each network first: :func:`measure` trains the population
in float64 on the torch engine three times: as it is (the oracle); with every parameter
multiplied by ``1 + r`` after every update, ``r`` uniform in ``[-2^-24, 2^-24]`` (one float32
rounding of every parameter at every epoch); and with every parameter rounded to float32 after
every update (what a float32 run does systematically: an update below half an ulp is lost).
The larger of the two runs' differences from the oracle is the network's *spread*: how far
rounding alone moves it, epoch by epoch.

A float32 implementation is compared with ``rtol`` up to each network's *horizon*: ``LAG``
epochs before the first epoch at which ``MARGIN`` times the spread (its running maximum: the
noisy run can cross the oracle by chance) exceeds ``rtol`` relative to the loss, floored by
the network's largest loss.  Before it, rounding cannot explain a difference of ``rtol`` and a
wrong kernel shows; after it, a difference says nothing.  ``MARGIN`` covers what the model
leaves out: two implementations' roundings, the roundings inside the gradient, and
activations that are worse than one rounding (the exp2 tanh of the fused programs: ~3 ulps
of 1); ``LAG`` the few epochs by which such an implementation leaves the oracle earlier
where the spread grows geometrically (x2 an epoch near the horizons measured: 10 epochs
are a factor ~1000).  docs/testing.md gives the method, the measurements behind both
numbers and where they are used.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from .engine import get_backend
from .population import Population

__all__ = ["Sensitivity", "measure", "MARGIN", "LAG", "NOISE"]

# One float32 rounding, relative: the noise put on every parameter after every update.
NOISE = 2.0**-24
# What the spread of one noisy float64 run is multiplied by before it is compared with a
# tolerance (docs/testing.md, "Tolerances from conditioning": measured ratios and why 100).
MARGIN = 100.0
LAG = 10


@dataclass
class Sensitivity:
    """Per-network sensitivity to rounding (float64, on the population's device)."""

    losses: torch.Tensor  # [G, E] losses of the oracle run (float64 torch engine, no noise)
    final_loss: torch.Tensor  # [G] the oracle's loss after the last update
    spread: torch.Tensor  # [G, E] |loss - loss of the noisy run|
    final_spread: torch.Tensor  # [G] the same for the final loss
    param_gap: torch.Tensor  # [G] max |p - p_noisy| over the network's final parameters, / max |p|
    population: Population  # the oracle's trained population (float64)
    margin: float = MARGIN
    lag: int = LAG

    def _floor(self) -> torch.Tensor:
        return self.losses.abs().nan_to_num(0.0).amax(dim=1, keepdim=True)

    def horizon(self, rtol: float) -> torch.Tensor:
        """[G] int64: the epochs (from the first) over which a float32 run of each network can
        be held to ``rtol`` relative to the loss, floored by its largest loss; E when it is
        insensitive throughout.  A non-finite spread ends the horizon."""
        tol = rtol * (self.losses.abs() + self._floor())
        envelope = self.spread.nan_to_num(float("inf")).cummax(dim=1).values
        bad = ~(self.margin * envelope <= tol)  # a NaN loss counts as bad
        E = self.losses.shape[1]
        first = bad.to(torch.int8).argmax(dim=1).to(torch.long)
        return torch.where(bad.any(dim=1), (first - self.lag).clamp_min(0), torch.full_like(first, E))

    def compared(self, rtol: float) -> torch.Tensor:
        """[G, E] bool: the entries of the loss history held to ``rtol`` (epochs before the
        horizon)."""
        E = self.losses.shape[1]
        return torch.arange(E, device=self.losses.device)[None, :] < self.horizon(rtol)[:, None]

    def tolerance(self, rtol: float) -> torch.Tensor:
        """[G, E]: ``rtol`` relative to each loss, floored by the network's largest loss."""
        return rtol * (self.losses.abs() + self._floor())

    def final_stable(self, rtol: float) -> torch.Tensor:
        """[G] bool: the final loss is insensitive at ``rtol`` (relative to it, floored by the
        network's largest loss); also true of many networks sensitive mid-run that settle."""
        floor = self._floor()[:, 0]
        return self.margin * self.final_spread <= rtol * (self.final_loss.abs() + floor)

    def stable(self, rtol: float) -> torch.Tensor:
        """[G] bool: insensitive at ``rtol`` for every epoch and the final loss: a float32 run
        is held to ``rtol`` on its whole loss history and its final loss."""
        return (self.horizon(rtol) == self.losses.shape[1]) & self.final_stable(rtol)

    def parameter_tolerance(self, rtol: float) -> torch.Tensor:
        """[G]: what the final parameters of a float32 run can be held to, relative to the
        network's largest parameter: ``rtol``, or ``MARGIN`` times the measured gap where
        that is larger.  The noise walks along the loss's flat directions, which the loss
        does not see: after 2500 epochs the lab networks' gaps are ~1e-7 .. 1e-6, so their
        parameters are held to ~1e-5 .. 1e-4 where the loss is held to 1e-5.  Meaningful for
        :meth:`stable` networks only."""
        return torch.clamp(self.margin * self.param_gap, min=rtol)


def _as_float64(t, device) -> torch.Tensor:
    return torch.as_tensor(t).to(device=device, dtype=torch.float64)


def _run(pop, x, y, lr, epochs: int, perturb) -> tuple[torch.Tensor, torch.Tensor]:
    """Train ``pop`` in place on the torch engine, ``perturb(t)`` applied to every parameter
    tensor after every update: (losses [G, E], final loss [G])."""
    run = get_backend("torch").start(pop, x, y, lr)
    G, device = len(pop), x.device
    rows = torch.empty(epochs, G, dtype=torch.float64, device=device)
    for e in range(epochs):
        run.epoch(rows[e])
        if perturb is not None:
            for t in run.w + run.b:
                perturb(t)
    final = torch.empty(G, dtype=torch.float64, device=device)
    run.final_loss(final)
    run.write_back()
    return rows.t().contiguous(), final


def _gap(a: Population, b: Population) -> torch.Tensor:
    """[G]: max |a - b| over each network's parameters, / its largest |a|."""
    gap = torch.stack([(p - q).abs().flatten(1).amax(dim=1) for p, q in zip(a.weights + a.biases, b.weights + b.biases)],
                      dim=1).amax(dim=1)
    scale = torch.stack([p.abs().flatten(1).amax(dim=1) for p in a.weights + a.biases], dim=1).amax(dim=1)
    return gap / scale


def measure(x, y, population: Population, epochs: int, lr, *, seed: int = 0, noise: float = NOISE,
            margin: float = MARGIN, lag: int = LAG) -> Sensitivity:
    """Train ``population`` (not modified) in float64 on the torch engine for ``epochs`` epochs
    at ``lr`` (a float or [G]): as it is (the oracle), with ``noise`` on every parameter after
    every update, and (``noise`` 2^-24 or more: a float32 model) with every parameter rounded to
    float32 after every update.  The spread is the larger of the two runs' differences from the
    oracle: random noise stands for rounding in general, the rounding to float32 for what a
    float32 run does systematically (updates below half an ulp are lost: a plateau crossed
    later, a fast transition at another epoch, which random noise shows 40x smaller in the lab
    network at lr 1.97).  ``x`` [N, n_in] and ``y`` [N, n_out] (or [N]) are shared by all
    networks.  ``noise`` 2^-24 models float32 runs, 2^-53 float64 ones, 2^-11 tanh.approx."""
    device = population.device
    start = population.to(dtype=torch.float64)
    x = _as_float64(x, device)
    y = _as_float64(y, device)
    if y.dim() == 1:
        y = y[:, None]
    lr = _as_float64(lr, device)
    lr = lr.expand(len(start)).contiguous() if lr.dim() == 0 else lr
    gen = torch.Generator(device=device).manual_seed(seed)

    def noisy(t):
        r = torch.rand(t.shape, generator=gen, dtype=torch.float64, device=device)
        t.mul_(r.mul_(2 * noise).add_(1 - noise))

    def float32(t):
        t.copy_(t.to(torch.float32))

    clean = start.clone()
    losses, final = _run(clean, x, y, lr, epochs, None)
    spread = final_spread = gap = None
    for perturb in (noisy, float32) if noise >= NOISE else (noisy,):
        other = start.clone()
        l2, f2 = _run(other, x, y, lr, epochs, perturb)
        s, fs, g = (losses - l2).abs(), (final - f2).abs(), _gap(clean, other)
        # NaN (a run that diverged where the oracle did not) stays NaN: torch.maximum propagates it
        spread, final_spread, gap = (s, fs, g) if spread is None else \
            (torch.maximum(spread, s), torch.maximum(final_spread, fs), torch.maximum(gap, g))
    return Sensitivity(losses=losses, final_loss=final, spread=spread, final_spread=final_spread, param_gap=gap,
                       population=clean, margin=margin, lag=lag)
