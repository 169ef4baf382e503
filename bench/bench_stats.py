#!/usr/bin/env python
"""Time ``fastmlp.stats.nanquantiles``: the loss band (5%, median, 95%) of a training history.

The history is an epoch-major [E, G] float32 buffer viewed [G, E], as ``TrainResult.losses``
is, filled on the device with decaying losses (a log-normal spread, a few exact zeros, 1% of
the networks diverged: NaN or inf from a random epoch on).  The bars: <= 1 s for 65536 x 2500
on the 2-core CPU, <= 0.5 s for 2**20 x 2500 on one H200.  Median of ``--repeats`` after a
warm-up; ``time.perf_counter``, CUDA synchronized around each call.

Beside it, at ``--old-G`` x ``--old-E`` (the old method takes ~4 us a value): the method it
replaces (fastmlp/plot/curves.py's _nanquantiles before: float64 torch.sort down dim 0) and
``torch.nanquantile`` in float64, for the speed-up and the agreement.  The roofline: one read
of the history (G*E*4 bytes) at the rate a plain ``sum`` over it reaches on this device, and
what a radix sort of the same values would move.

Usage:
  python bench/bench_stats.py                          # 65536 x 2500 on the CPU
  python bench/bench_stats.py --device cuda            # 2**20 x 2500 on the GPU
  python bench/bench_stats.py --G 8192 --E 300 --repeats 2 --out /tmp/b
"""
from __future__ import annotations

import math
import sys

import harness
import torch

from fastmlp import stats

BAND = (0.05, 0.5, 0.95)
BARS_S = {"cpu": 1.0, "cuda": 0.5}


def history(G: int, E: int, device, seed: int = 0) -> torch.Tensor:
    """Losses [G, E] over an epoch-major buffer: decaying, spread, some 0, 1% diverged."""
    g = torch.Generator(device=device).manual_seed(seed)
    rate = 0.0005 + 0.004 * torch.rand(G, generator=g, device=device)
    buf = torch.randn(E, G, generator=g, device=device).mul_(0.5).exp_().mul_(0.2)  # log-normal spread
    for e0 in range(0, E, 256):  # decay, by blocks of epochs (bounded temporaries)
        e = torch.arange(e0, min(E, e0 + 256), device=device, dtype=torch.float32)[:, None]
        buf[e0:e0 + 256].mul_(torch.exp(-rate[None, :] * e))
    buf.view(-1)[torch.randint(0, E * G, (E * G // 1000,), generator=g, device=device)] = 0.0
    bad = torch.randperm(G, generator=g, device=device)[:G // 100]
    start = torch.randint(1, E, (len(bad),), generator=g, device=device)
    after = torch.arange(E, device=device)[:, None] >= start[None, :]  # [E, bad]
    buf[:, bad] = torch.where(after, torch.where(bad % 2 == 0, math.nan, math.inf)[None, :].float(), buf[:, bad])
    return buf.t()


def old_nanquantiles(values: torch.Tensor, qs) -> torch.Tensor:
    """The method replaced (fastmlp/plot/curves.py before): float64 sort down dim 0 in
    chunks of 2**25 values, after turning inf into NaN."""
    values = torch.where(torch.isinf(values), torch.full_like(values, math.nan), values)
    G, E = values.shape
    q = torch.tensor(list(qs), dtype=torch.float64, device=values.device)
    out = []
    for start in range(0, E, max(1, 2**25 // max(G, 1))):
        chunk = values[:, start:start + max(1, 2**25 // max(G, 1))].to(torch.float64)
        srt = torch.sort(chunk, dim=0).values
        count = (~torch.isnan(chunk)).sum(dim=0)
        pos = q[:, None] * (count - 1).clamp(min=0)
        lo, hi = pos.floor().long(), pos.ceil().long()
        v_lo, v_hi = srt.gather(0, lo), srt.gather(0, hi)
        res = v_lo + (pos - lo) * (v_hi - v_lo)
        out.append(torch.where(count[None, :] > 0, res, torch.full_like(res, math.nan)))
    return torch.cat(out, dim=1)


def reference(values: torch.Tensor, qs) -> torch.Tensor:
    v = values.double()
    v = torch.where(torch.isfinite(v), v, torch.full_like(v, math.nan))
    return torch.stack([torch.nanquantile(v, q, dim=0) for q in qs])


def timed(fn, device, repeats: int) -> tuple[dict, object]:
    fn()  # warm-up
    s = harness.Samples()
    for _ in range(repeats):
        wall, cpu, s.result = harness.clock(fn, device)
        s.wall.append(wall)
        s.cpu.append(cpu)
    return s.stats(), s.result


def main(argv=None) -> int:
    ap = harness.parser(__doc__, devices=True)
    ap.add_argument("--device", choices=["cpu", "cuda"], help="the same as --gpu for cuda (default cpu)")
    ap.add_argument("--G", type=int, help="networks (default 65536 on the CPU, 2**20 on CUDA)")
    ap.add_argument("--E", type=int, default=2500, help="epochs (default 2500)")
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--old-G", type=int, default=65536, help="size of the comparison with the old method")
    ap.add_argument("--old-E", type=int, default=100)
    args = ap.parse_args(argv)
    args.gpu = args.gpu or args.device == "cuda"
    device = harness.device(args, ap)
    G = args.G or (2**20 if device.type == "cuda" else 65536)
    env = harness.environment(device)
    harness.log(f"history {G} x {args.E} on {device} ...")
    losses = history(G, args.E, device)

    main_t, band = timed(lambda: stats.nanquantiles(losses, BAND), device, args.repeats)
    read_t, _ = timed(lambda: losses.sum(), device, args.repeats)  # one read of the history, strided as given
    nbytes = G * args.E * 4
    thin = stats.nanquantiles(losses[:, ::7], BAND)  # a thinned history: the same bits at its epochs
    assert torch.equal(thin, band[:, ::7]), "a thinned history's quantiles differ from the full one's"

    oG, oE = min(args.old_G, G), min(args.old_E, args.E)
    small = losses[:oG, :oE]
    new_s, q_new = timed(lambda: stats.nanquantiles(small, BAND), device, args.repeats)
    old_s, q_old = timed(lambda: old_nanquantiles(small, BAND), device, max(1, min(3, args.repeats)))
    want = reference(small, BAND)
    harness.finish(env)

    def rel(a):
        d = ((a - want).abs() / want.abs().clamp(min=1e-300)).nan_to_num(0.0)
        return float(d.max())

    bar = BARS_S[device.type]
    rows = [{"what": f"nanquantiles {G} x {args.E}", **main_t, "values_per_s": G * args.E / main_t["median_s"]},
            {"what": f"one read (sum) {G} x {args.E}", **read_t, "values_per_s": G * args.E / read_t["median_s"]},
            {"what": f"nanquantiles {oG} x {oE}", **new_s, "values_per_s": oG * oE / new_s["median_s"]},
            {"what": f"old float64 sort {oG} x {oE}", **old_s, "values_per_s": oG * oE / old_s["median_s"]}]
    agreement = {"max_rel_diff_vs_torch_nanquantile": rel(q_new), "bit_equal_to_torch_nanquantile": bool(
        torch.equal(q_new, want)), "old_max_rel_diff_vs_torch_nanquantile": rel(q_old),
        "thinned_history_bit_equal": True}
    # A radix sort of the values with their int64 indices: 4 passes of 8 bits, each reading and
    # writing keys and indices, plus the histogram reads (torch.sort on CUDA: cub's radix sort).
    sort_bytes = 4 * G * args.E * (4 + 8) * 2
    roofline = {"bytes_read_once": nbytes, "read_rate_GBps": nbytes / read_t["median_s"] / 1e9,
                "one_read_s": read_t["median_s"], "reads_equivalent": main_t["median_s"] / read_t["median_s"],
                "radix_sort_bytes": sort_bytes, "radix_sort_s_at_read_rate": sort_bytes / (nbytes / read_t["median_s"])}

    print(f"# bench_stats: {harness.describe(env)}")
    print(f"# median of {args.repeats} after a warm-up; quantiles {BAND} of an epoch-major float32 history\n")
    print(harness.table(["what", "median s", "min s", "max s", "values/s"],
                        [[r["what"], f"{r['median_s']:.3f}", f"{r['min_s']:.3f}", f"{r['max_s']:.3f}",
                          harness.rate(r["values_per_s"])] for r in rows], left=1))
    ok = main_t["median_s"] <= bar
    print(f"\nbar <= {bar:g} s for {G} x {args.E} on {device.type}: {'met' if ok else 'NOT met'}"
          f" ({main_t['median_s']:.3f} s); speed-up over the old method at {oG} x {oE}: "
          f"{old_s['median_s'] / new_s['median_s']:.1f}x")
    print(f"roofline: one read of {nbytes / 1e9:.2f} GB takes {read_t['median_s'] * 1e3:.1f} ms "
          f"({roofline['read_rate_GBps']:.1f} GB/s): nanquantiles costs {roofline['reads_equivalent']:.1f} reads; "
          f"a radix sort would move {sort_bytes / 1e9:.1f} GB "
          f"({roofline['radix_sort_s_at_read_rate']:.2f} s at that rate)")
    print(f"agreement at {oG} x {oE}: max relative difference to torch.nanquantile "
          f"{agreement['max_rel_diff_vs_torch_nanquantile']:.1e} (old method "
          f"{agreement['old_max_rel_diff_vs_torch_nanquantile']:.1e}); thinned history bit-equal")
    tag = "" if (G, args.E) == ((2**20 if device.type == "cuda" else 65536), 2500) else f"-G{G}-E{args.E}"
    path = harness.write_json(args.out, "stats", env, {
        "G": G, "E": args.E, "quantiles": list(BAND), "repeats": args.repeats, "bar_s": bar, "bar_met": ok,
        "rows": rows, "agreement": agreement, "roofline": roofline}, script=__file__, argv=argv, tag=tag)
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
