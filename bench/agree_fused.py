#!/usr/bin/env python
"""``backend="fused"`` against the float64 oracle, on the lab problem at scale.

The lab network (2-5-3-1, tanh, tanh, sigmoid; five points; MSE; full-batch gradient descent),
float32, seeds 0..G-1 (Glorot uniform), trained by ``fastmlp.train(..., backend="fused")``: on
CUDA the Triton kernel, on the CPU the numba program.  The oracle is the float64 torch engine
from the same initial parameters, measured by :func:`fastmlp.conditioning.measure`, which also
runs it with a float32 rounding's worth of noise on every parameter after every update and so
says, per network, up to which epoch (``horizon(rtol)``) and whether at the end a float32
implementation can be held to ``rtol`` at all.  (Noise in every epoch, not one nudge of the
initial parameters: at lr 1.97 a network whose one-ulp-nudged float64 run stays within 0.03 of
the tolerance spikes in every float32 implementation at epochs 78-98, an edge-of-stability
instability that rounding in every epoch sets off and an initial nudge, damped by then, does not.)  Two rows (``ROWS``):
the lab's lr 0.25 for every network, and one lr per network spread over linspace(0.05, 2.0),
which includes chaotic networks.

What must hold (a row fails otherwise).  The tolerance is the tests' float32 one, 1e-5 relative
(tests/conftest.py ``RTOL``), floored by the scale of each network's own loss curve (its maximum),
and a network is held to it only where the oracle says a float32 run can be:

* every network, its loss curve up to its horizon (``horizon(rtol)``; the whole curve for the
  ``stable`` ones): |fused - oracle| <= rtol * (|oracle| + scale);
* every network whose final loss can be held (``final_held``: the final-loss half of
  ``Sensitivity.stable``, most networks, also many whose curve cannot be held mid-run), its
  final loss, the same way;
* the converged fraction (final loss < 0.01 and not diverged: ``TrainResult.converged``'s
  default, the one fastmlp's results report): fused and oracle differ by at most ``Z``
  standard deviations of the difference of two independent draws of the outcomes of the
  networks whose final loss cannot be held (binomial at their oracle fraction, with one success
  and one failure added so that it is never 0 or 1), plus the held networks whose oracle final
  loss lies within the tolerance of 0.01 (they may fall on either side and still agree).

What is reported and not failed: the networks past their horizon, and those whose final loss
cannot be held (how many end off, the largest |difference| of their final loss).  Also: the
median and maximum |difference| of the final loss over all networks, the wall times, and the
same criteria applied to an independent float32 implementation, the torch engine ("torch f32
fails"): a network it fails too is one float32 cannot follow, whatever the oracle said.

Prints a table; its last line says whether the fused backend agrees with the float64 oracle
(``FAIL: ...`` when not, exit status 1).  Writes ``bench/results/agree-<device>-<date>.json``.

Usage:
  python bench/agree_fused.py --gpu                        # 2**16 networks x 2500 epochs, both rows (H200: ~1 min)
  python bench/agree_fused.py --seeds 64 --epochs 300      # CPU smoke (numba program; seconds)
"""
from __future__ import annotations

import inspect
import math
import sys
import time

import harness
import torch

SIZES = [2, 5, 3, 1]
RTOL = 1e-5  # the tests' float32 tolerance (tests/conftest.py RTOL[torch.float32])
# Converged fractions: Z standard deviations of the difference, two-sided normal tail 6e-5 (a
# correct backend fails this check about once in 16,000 runs).
Z = 4.0
CHUNK = 8192  # networks compared at a time ([CHUNK, epochs] float64 temporaries)
ROWS = {  # name -> (what it is, lr for G networks: float32, as the float32 run holds it; the oracle widens it exactly)
    "lab": ("lr 0.25", lambda G, dev: 0.25),
    "spread": ("lr linspace(0.05, 2.0)", lambda G, dev: torch.linspace(0.05, 2.0, G, device=dev)),
}


def converged_eps() -> float:
    """What fastmlp's results call converged: ``TrainResult.converged``'s default eps (0.01)."""
    from fastmlp.train import TrainResult

    return inspect.signature(TrainResult.converged).parameters["eps"].default


def _absdiff(a: torch.Tensor, e: torch.Tensor) -> torch.Tensor:
    """|a - e| in float64; 0 where both are non-finite (a diverged network, frozen in both), inf
    where only one is."""
    a, e = a.double(), e.double()
    fa, fe = torch.isfinite(a), torch.isfinite(e)
    d = (a - e).abs()
    d = torch.where(fa & fe, d, torch.where(fa | fe, torch.full_like(d, math.inf), torch.zeros_like(d)))
    return d


def _held(run, s, horizon, rtol: float) -> dict:
    """Per network, a float32 run (``TrainResult``) against the oracle: off anywhere on the loss
    curve, off before the horizon, the largest |difference| on the curve, |difference| of the
    final loss and whether it is off, the scale floor (the oracle curve's maximum)."""
    G, E = s.losses.shape
    dev = run.losses.device
    scale = torch.empty(G, dtype=torch.float64, device=dev)
    off_before_horizon = torch.empty(G, dtype=torch.bool, device=dev)
    off_anywhere = torch.empty(G, dtype=torch.bool, device=dev)
    curve_max = torch.empty(G, dtype=torch.float64, device=dev)
    epochs = torch.arange(E, device=dev)
    for lo in range(0, G, CHUNK):
        hi = min(G, lo + CHUNK)
        o = s.losses[lo:hi].to(dev, torch.float64)
        o_abs = torch.nan_to_num(o.abs(), nan=0.0, posinf=0.0)
        sc = o_abs.amax(1)
        d = _absdiff(run.losses[lo:hi], o)
        off = d > rtol * (o_abs + sc[:, None])
        scale[lo:hi], curve_max[lo:hi] = sc, d.amax(1)
        off_anywhere[lo:hi] = off.any(1)
        off_before_horizon[lo:hi] = (off & (epochs[None, :] < horizon[lo:hi, None])).any(1)
        del o, o_abs, d, off
    fo = s.final_loss.to(dev, torch.float64)
    dfin = _absdiff(run.final_loss, fo)
    tol_fin = rtol * (torch.nan_to_num(fo.abs(), nan=0.0, posinf=0.0) + scale)
    return dict(off_anywhere=off_anywhere, off_before_horizon=off_before_horizon, curve_max=curve_max,
                dfin=dfin, fin_off=dfin > tol_fin, tol_fin=tol_fin)


def final_held(s, rtol: float) -> torch.Tensor:
    """[G] bool: the networks whose final loss a float32 run can be held to ``rtol``
    (``Sensitivity.final_stable``, the final-loss half of ``Sensitivity.stable``)."""
    return s.final_stable(rtol)


def compare(fused, s, rtol: float, eps: float, peer=None) -> dict:
    """The fused run (``TrainResult``) against the oracle (``conditioning.measure``'s
    ``Sensitivity``): every number the row reports, and whether it passes.  ``peer``, a float32
    run of another implementation (the torch engine), is held the same way for the report
    only: a network off in both is one float32 cannot follow, whatever the oracle said of it."""
    dev = fused.losses.device
    horizon = s.horizon(rtol).to(dev)
    stable = s.stable(rtol).to(dev)
    held = final_held(s, rtol).to(dev)
    h = _held(fused, s, horizon, rtol)
    dfin, fin_off = h["dfin"], h["fin_off"]
    fo = s.final_loss.to(dev, torch.float64)
    conv_o = (fo < eps) & torch.isfinite(fo)
    conv_f = fused.converged(eps).to(dev)
    # Converged counts: only the networks whose final loss is not held may land on either side
    # of eps, as two independent draws; and the held ones within the tolerance of eps.
    n_loose = int((~held).sum())
    p = (int(conv_o[~held].sum()) + 1) / (n_loose + 2)
    boundary = int((held & ((fo - eps).abs() <= h["tol_fin"])).sum())
    allowed = Z * math.sqrt(2 * n_loose * p * (1 - p)) + boundary
    d_conv = int(conv_f.sum()) - int(conv_o.sum())
    finite = torch.isfinite(dfin)
    everyone = torch.ones_like(stable)

    def stat(t, mask, fn):
        t = t[mask & finite]
        return float(fn(t)) if t.numel() else None

    failing = h["off_before_horizon"] | (fin_off & held)
    row = dict(
        G=len(stable), epochs=s.losses.shape[1], rtol=rtol, eps=eps, margin=float(s.margin),
        stable=int(stable.sum()),  # the whole curve and the final loss held (conditioning.stable)
        final_held=int(held.sum()),
        horizon_median=int(horizon.double().median()), horizon_min=int(horizon.min()),
        converged_oracle=float(conv_o.double().mean()), converged_fused=float(conv_f.double().mean()),
        converged_diff_count=d_conv, converged_allowed_count=allowed, converged_boundary_held=boundary,
        converged_flips=int((conv_o != conv_f).sum()),
        final_diff_median=stat(dfin, everyone, torch.median),
        final_diff_max=stat(dfin, everyone, torch.max),
        final_diff_max_held=stat(dfin, held, torch.max),
        final_diff_max_not_held=stat(dfin, ~held, torch.max),
        final_ratio_max_held=stat(dfin / h["tol_fin"], held, torch.max),  # |d| / tolerance, < 1 to pass
        final_off=int(fin_off.sum()),  # networks whose final loss is outside the tolerance
        final_off_held=int((fin_off & held).sum()),  # must be 0
        final_off_not_held=int((fin_off & ~held).sum()),  # reported
        curve_off_before_horizon=int(h["off_before_horizon"].sum()),  # must be 0
        curve_off_stable=int((h["off_anywhere"] & stable).sum()),  # (a part of the one above)
        curve_off_after_horizon=int((h["off_anywhere"] & ~h["off_before_horizon"]).sum()),  # reported
        failing_networks=int(failing.sum()),
        failing_first=[int(i) for i in failing.nonzero().flatten()[:20]],
        diverged_fused=int(fused.diverged.sum()), diverged_oracle=int((~torch.isfinite(fo)).sum()),
    )
    if peer is not None:
        q = _held(peer, s, horizon, rtol)
        q_failing = q["off_before_horizon"] | (q["fin_off"] & held)
        row.update(peer=peer.backend, peer_failing=int(q_failing.sum()),
                   failing_peer_too=int((failing & q_failing).sum()),
                   peer_final_diff_max_held=stat(q["dfin"], held, torch.max))
    reasons = []
    if row["curve_off_before_horizon"]:
        reasons.append(f"{row['curve_off_before_horizon']} networks off on the loss curve before their horizon "
                       f"({row['curve_off_stable']} of them stable)")
    if row["final_off_held"]:
        reasons.append(f"{row['final_off_held']} networks off on a final loss that can be held (max |d| "
                       f"{_g(row['final_diff_max_held'], '.2e')}, {_g(row['final_ratio_max_held'], '.1f')}x the tolerance)")
    if abs(d_conv) > allowed:
        reasons.append(f"converged count differs by {d_conv:+d} (allowed +-{allowed:.1f}: {n_loose} networks whose "
                       f"final loss is not held, {boundary} held ones at the threshold)")
    if reasons and peer is not None:
        reasons.append(f"the float32 {peer.backend} engine fails {row['peer_failing']} networks the same way, "
                       f"{row['failing_peer_too']} of the {row['failing_networks']} that fused fails")
    row.update(ok=not reasons, reasons=reasons)
    return row


def run_row(name: str, G: int, E: int, dev, rtol: float, eps: float) -> dict:
    from fastmlp import Population, conditioning, datasets, train

    x, y = (t.to(dev) for t in datasets.five_points())
    pop = Population(SIZES, G, device=dev)
    lr = ROWS[name][1](G, dev)
    t0 = time.perf_counter()
    s = conditioning.measure(x, y, pop.clone(), E, lr)
    harness.sync(dev)
    t_oracle = time.perf_counter() - t0
    harness.log(f"  {name}: oracle (float64 torch engine, twice) {t_oracle:.1f} s")
    t0 = time.perf_counter()
    fused = train(x, y, pop.clone(), E, lr, backend="fused", progress=False, record_every=1)
    harness.sync(dev)
    t_fused = time.perf_counter() - t0
    harness.log(f"  {name}: fused {t_fused:.2f} s (compile included)")
    t0 = time.perf_counter()
    peer = train(x, y, pop.clone(), E, lr, backend="torch", progress=False, record_every=1)
    harness.sync(dev)
    t_peer = time.perf_counter() - t0
    harness.log(f"  {name}: float32 torch engine (diagnostic) {t_peer:.1f} s")
    row = dict(row=name, lr=ROWS[name][0], backend=fused.backend, **compare(fused, s, rtol, eps, peer),
               oracle_s=t_oracle, fused_s=t_fused, peer_s=t_peer)
    del s, fused, peer
    if dev.type == "cuda":
        torch.cuda.empty_cache()
    return row


def _g(v, fmt=".1e"):
    return "-" if v is None else format(v, fmt)


def verdict(rows: list[dict], G: int, E: int, rtol: float) -> str:
    """The one line that says whether the fused backend agrees with the float64 oracle."""
    what = f"{G} networks x {E} epochs, {len(rows)} rows, rtol {rtol:g}"
    if all(r["ok"] for r in rows):
        n = sum(r["G"] for r in rows)
        return (f"fused agrees with the float64 oracle: yes ({what}; every loss curve up to its horizon, "
                f"median horizon {'/'.join(str(r['horizon_median']) for r in rows)} epochs; "
                f"{sum(r['final_held'] for r in rows)} of {n} final losses; converged fractions within their noise)")
    bad = "; ".join(f"{r['lr']}: " + ", ".join(r["reasons"]) for r in rows if not r["ok"])
    return f"FAIL: fused does NOT agree with the float64 oracle ({what}): {bad}"


def main(argv=None) -> int:
    ap = harness.parser(__doc__, devices=True)
    ap.add_argument("--seeds", type=int, default=2**16, help="networks per row (default 2**16)")
    ap.add_argument("--epochs", type=int, default=2500, help="epochs (default 2500, the lab's)")
    ap.add_argument("--rows", default=",".join(ROWS),
                    help="comma-separated, from: " + "; ".join(f"{k} ({v[0]})" for k, v in ROWS.items()))
    args = ap.parse_args(argv)
    dev = harness.device(args, ap)
    names = [n.strip() for n in args.rows.split(",") if n.strip()]
    unknown = [n for n in names if n not in ROWS]
    if unknown:
        ap.error(f"--rows: unknown row {unknown[0]!r}; known: {', '.join(ROWS)}")
    try:
        from fastmlp import conditioning  # noqa: F401
    except ImportError as e:
        print(f"FAIL: fused vs the float64 oracle not checked: fastmlp.conditioning cannot be imported ({e})")
        return 2
    eps, env = converged_eps(), harness.environment(dev)
    G, E = args.seeds, args.epochs
    harness.log(f"agree_fused: {env['device']}, {G} networks x {E} epochs, rows {names}")
    t0 = time.perf_counter()
    rows = [run_row(n, G, E, dev, RTOL, eps) for n in names]
    wall = time.perf_counter() - t0
    harness.finish(env)

    print(f"# fused vs the float64 oracle: lab network {'-'.join(map(str, SIZES))}, five points, float32, "
          f"{G} networks (seeds 0..{G - 1}) x {E} epochs, {env['device']}, backend {rows[0]['backend']}")
    print(f"# rtol {RTOL:g} (floored by each curve's maximum); horizon: the epochs a float32 run can be held to it "
          f"(conditioning, margin {rows[0]['margin']:g}); stable: all epochs and the final loss; final held: the final "
          f"loss; converged: final loss < {eps:g}; 'off': outside the tolerance; torch f32 fails: the float32 torch "
          "engine held the same way (reported only)")
    print(harness.table(
        ["row", "stable", "final held", "horizon median", "converged oracle", "fused", "d count (allowed)",
         "median |d final|", "max |d final|", "off: curve < horizon", "off: final held", "final not held (reported)",
         "max |d final| not held", "torch f32 fails", "ok"],
        [[f"{r['row']}: {r['lr']}", r["stable"], r["final_held"], r["horizon_median"],
          f"{100 * r['converged_oracle']:.2f}%", f"{100 * r['converged_fused']:.2f}%",
          f"{r['converged_diff_count']:+d} (+-{r['converged_allowed_count']:.1f})", _g(r["final_diff_median"]),
          _g(r["final_diff_max"]), r["curve_off_before_horizon"], r["final_off_held"], r["final_off_not_held"],
          _g(r["final_diff_max_not_held"]), r.get("peer_failing", "-"), "yes" if r["ok"] else "NO"] for r in rows],
        left=1))
    line = verdict(rows, G, E, RTOL)
    ok = all(r["ok"] for r in rows)
    path = harness.write_json(args.out, "agree", env, dict(
        network=SIZES, dataset="five_points", dtype="float32", G=G, epochs=E, rtol=RTOL, eps=eps, z=Z,
        wall_s=wall, rows=rows, ok=ok, verdict=line), script=__file__, argv=argv,
        tag="" if (G, E) == (2**16, 2500) else f"-G{G}-E{E}")
    print(f"wrote {path} ({wall:.1f} s)")
    print(line)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
