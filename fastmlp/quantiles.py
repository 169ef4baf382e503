"""Quantiles over networks, computed on the device that holds the losses.

``nanquantiles(values [G, E], qs)`` is ``torch.nanquantile(values, q, dim=0)`` for a loss
history: NaN and +-inf are ignored alike, the order statistics are exact (a column's result is
the same bits whatever the other columns and the chunking), and memory is bounded by chunks of
epochs.  On a GPU each chunk is sorted on the device.  On the CPU a sort of 65536 x 2500
float32 takes ~5 s and ``torch.kthvalue`` ~1 s per order statistic, so the CPU searches
instead (``bench/bench_stats.py``: ~0.8 s for the band of 65536 x 2500 on 2 cores):

1. brackets around each wanted rank: for every 8th epoch, from a strided sample of it (every
   16th network), sorted as one 1-D int32 tensor of (epoch, value) keys (torch's radix sort:
   ~9 ns a key); for the epochs between, from the values found for those around them;
2. one pass over the epochs, in ~1 MiB blocks that stay in cache, classifies every value
   against every bracket with exactly rounded operations, counts the values below and inside
   each bracket, and keeps those inside (3-8% of the values);
3. where that is wide, the same again on those, with brackets placed by the sample points
   inside the first ones;
4. what is left is sorted as (epoch, value) int32 or int64 keys.

A bracket that misses its ranks (the counts say so, nothing is guessed) is searched again
wider, at last by a sort.  A sample window of one value becomes a bracket of that value,
counted and never kept: losses of exactly 0 can fill most of an epoch.
"""
from __future__ import annotations

import math
from typing import Sequence

import torch

__all__ = ["nanquantiles", "quantiles", "QUANTILE_BYTES"]

# Bytes of temporaries nanquantiles holds at once by default: it works on chunks of epochs.
QUANTILE_BYTES = 256 * 2**20
# The CPU classifies blocks of ~1 MiB (4 epochs of 65536 float32 losses), which stay in a
# core's L2: a bracket pass over 65536 x 2500 took 53 ms so, 86 ms in 4 MiB blocks.
_BLOCK = 2**18
_STRIDE = 16  # the sample that places the brackets: every 16th network (4096 of 65536)
_Z = 2.5  # bracket half-width in standard deviations of a sample rank: ~1% miss (searched again)
_SORT_BELOW = 4096  # rows this short, and every row on a GPU, are sorted outright
_SPACING, _NOISE, _DRIFT = 8, 3.0, 0.25  # see _search
_SIGN, _ROWBITS = -2**31, 6  # a sample sort orders 64 epochs at once: 6 bits of row, 25 of value


def nanquantiles(values: torch.Tensor, qs, *, max_bytes: int | None = None) -> torch.Tensor:
    """Quantiles of each column over its finite values: values [G, E] -> [len(qs), E] float64,
    on ``values``' device.

    The definition of ``torch.nanquantile(values, q, dim=0)``: linear interpolation at position
    ``q * (n - 1)`` among the column's ``n`` finite values sorted ascending (NaN and +-inf are
    ignored alike; a column without a finite value gives NaN).  A result depends on its
    column's values only, bit for bit.  ``values`` may have any strides; its [E, G] transpose
    with contiguous rows (an epoch-major history) is read in place.  Temporaries stay within
    ``max_bytes`` (default :data:`QUANTILE_BYTES`).
    """
    return _nanquantiles(values, qs, max_bytes, sort=values.device.type != "cpu")


def quantiles(values: torch.Tensor, qs: Sequence[float]) -> list[float]:
    """Quantiles of the finite values of a tensor (flattened), computed on its device (NaN where
    it has none)."""
    return nanquantiles(values.detach().reshape(-1, 1), qs)[:, 0].tolist()


def _nanquantiles(values, qs, max_bytes, sort: bool) -> torch.Tensor:
    if values.dim() != 2:
        raise ValueError(f"values must be [G, E], got shape {tuple(values.shape)}")
    q = torch.as_tensor(qs, dtype=torch.float64).detach().cpu().reshape(-1)
    if not bool(((q >= 0) & (q <= 1)).all()):
        raise ValueError(f"quantiles must lie in [0, 1], got {q.tolist()}")
    G, E = values.shape
    out = torch.full((len(q), E), math.nan, dtype=torch.float64, device=values.device)
    if G == 0 or E == 0 or len(q) == 0:
        return out
    dtype = values.dtype if values.dtype in (torch.float32, torch.float64) else (
        torch.float32 if values.is_floating_point() else torch.float64)
    sort = sort or G <= _SORT_BELOW
    per_row = G * (dtype.itemsize + 24 if sort else 3 * dtype.itemsize)  # a sort: int64 indices, scratch
    R = max(1, min(E, (QUANTILE_BYTES if max_bytes is None else max_bytes) // per_row))
    rows, q = values.detach().t(), q.to(values.device)  # rows [E, G]
    buf = torch.empty(R, G, dtype=dtype, device=values.device)
    for e0 in range(0, E, R):
        out[:, e0:e0 + R] = _chunk(rows[e0:e0 + R].to(dtype).contiguous(), q, sort, buf).t()
    return out


def _chunk(x: torch.Tensor, q: torch.Tensor, sort: bool, buf: torch.Tensor) -> torch.Tensor:
    """x [R, G] (rows contiguous) -> [R, Q] float64."""
    R, G = x.shape
    if sort:
        y = torch.nan_to_num(x, nan=math.inf, posinf=math.inf, neginf=math.inf, out=buf[:R])  # last in order
        n = G - torch.isinf(y).sum(1)
    elif not bool(torch.isfinite(x.sum(1)).all()):  # in blocks that stay in cache: (y - max) clamped to
        y, n = buf[:R], torch.empty(R, dtype=torch.int64)  # [0, 1] is 1 at +inf only (a bool count: 8x slower)
        B, big, sdt = max(1, _BLOCK // G), torch.finfo(x.dtype).max, x.dtype if G < 2**24 else torch.float64
        tmp = torch.empty(B, G, dtype=x.dtype)
        for i in range(0, R, B):
            yb = torch.nan_to_num(x[i:i + B], nan=math.inf, posinf=math.inf, neginf=math.inf, out=y[i:i + B])
            n[i:i + B] = G - torch.sub(yb, big, out=tmp[:len(yb)]).clamp_(0, 1).sum(1, dtype=sdt).long()
    else:
        y, n = x, torch.full((R,), G, dtype=torch.int64, device=x.device)
    pos = (q * (n[:, None] - 1)).clamp(min=0)  # torch.nanquantile's ranks, float64
    lo, hi = pos.floor().long(), pos.ceil().long()
    a = torch.full(lo.shape, math.inf, dtype=x.dtype, device=x.device)
    b = a.clone()
    if sort:
        a, b = _sorted_pairs(y, lo, hi)
    elif bool((n > 0).all()):
        a, b = _search(y, lo, hi)
    elif bool((n > 0).any()):  # epochs without a finite loss give NaN: not searched
        live = (n > 0).nonzero().squeeze(1)
        a[live], b[live] = _search(y[live], lo[live], hi[live])
    a, b = a.double(), b.double()
    w, d = pos - lo, b - a
    res = torch.where(w < 0.5, a + w * d, b - d * (1 - w))  # torch.lerp's two branches, each op rounded alone
    return res.masked_fill_((n == 0)[:, None], math.nan)


def _sorted_pairs(y: torch.Tensor, ka: torch.Tensor, kb: torch.Tensor):
    """Values of ranks ka, kb [N, K] of each row of y [N, L], by a sort."""
    if y.device.type != "cpu" or y.dtype != torch.float32:
        srt = torch.sort(y, dim=1).values
        return srt.gather(1, ka), srt.gather(1, kb)
    key = _mono_(y.view(torch.int32).clone()).long() & 0xFFFFFFFF  # see _sorted_flat
    key |= torch.arange(y.shape[0])[:, None] << 32
    srt = torch.sort(key.view(-1)).values.view(y.shape)
    return _unmono(srt.gather(1, ka).to(torch.int32)), _unmono(srt.gather(1, kb).to(torch.int32))


def _sorted_flat(vals: torch.Tensor, cnt: torch.Tensor, ka: torch.Tensor, kb: torch.Tensor):
    """The same for float32 rows stored one after another (row i: cnt[i] values), by sorts of
    int32 keys (row, value's order - the row's least), 64 rows at a time, where each row spans
    under 2**25 orders (~9 ns a value); else by one sort of int64 (row, value) keys (~20 ns)."""
    if vals.numel() == 0:
        return torch.full(ka.shape, math.inf), torch.full(kb.shape, math.inf)
    N = len(cnt)
    key = _mono_(vals.view(torch.int32).clone()).bitwise_xor_(_SIGN)  # signed order: the value order
    rows = torch.repeat_interleave(torch.arange(N), cnt)
    least = torch.full((N,), 2**31 - 1, dtype=torch.int32).scatter_reduce_(0, rows, key, "amin")
    most = torch.full((N,), -2**31, dtype=torch.int32).scatter_reduce_(0, rows, key, "amax")
    off = cnt.cumsum(0) - cnt
    pick = [torch.minimum(off[:, None] + k, (off + cnt - 1).clamp(min=0)[:, None]) for k in (ka, kb)]
    if int((most.long() - least.long()).max()) < 2**25:
        key -= least[rows]
        key |= (torch.arange(N, dtype=torch.int32) % 64 << 25)[rows]
        for g in range(0, N, 64):
            part = key[int(off[g]):int(off[min(g + 64, N) - 1] + cnt[min(g + 64, N) - 1])]
            part.copy_(torch.sort(part).values)
        key &= 2**25 - 1
        return tuple(_unmono((key[i] + least[rows[i]]) ^ _SIGN) for i in pick)
    key = (key ^ _SIGN).long() & 0xFFFFFFFF
    key |= rows << 32
    srt = torch.sort(key).values
    return tuple(_unmono(srt[i].to(torch.int32)) for i in pick)


def _mono_(bits: torch.Tensor) -> torch.Tensor:
    """In place: float32 bit patterns (int32) -> int32 whose order, read unsigned, is the float order."""
    bits ^= (bits >> 31) & 0x7FFFFFFF
    bits ^= _SIGN
    return bits


def _unmono(key: torch.Tensor) -> torch.Tensor:
    m = key ^ _SIGN
    return (m ^ ((m >> 31) & 0x7FFFFFFF)).view(torch.float32)


def _search(y: torch.Tensor, ka: torch.Tensor, kb: torch.Tensor):
    """Values of ranks ka <= kb [N, K] of each row of y [N, L] (+inf after the finite values),
    the rows being epochs of one history: every _SPACING-th row is searched from its sample;
    a row between two of them is bracketed by their values interpolated, widened by _DRIFT
    of their difference and _NOISE standard deviations of a rank at the density they
    measured (rows of independent draws differ by about one).  7 rows in 8 need no sample
    and no second pass, and keep a narrower union.  A row whose bracket misses is searched
    from its sample, and so is every row of a chunk whose searched rows fall outside the
    brackets their own neighbours make for them (a history that is not smooth)."""
    N, L = y.shape
    A = torch.arange(0, N + _SPACING - 1, _SPACING).clamp(max=N - 1).unique()
    if len(A) < 4:
        return _select(y, ka, kb)[:2]
    a0, b0, scale = _select(y[A], ka[A], kb[A])
    a0, b0 = a0.double(), b0.double()
    noise = _NOISE * torch.sqrt((ka + 0.5) * (L - ka - 0.5) / L)  # [N, K], in ranks

    def around(i, l, r):  # between rows A[l] and A[r]: interpolated, +- noise and _DRIFT of the change
        f = ((i - A[l]) / (A[r] - A[l]).clamp(min=1)).double()[:, None]
        m = noise[i] * torch.maximum(scale[l], scale[r])
        lo, hi = a0[l] + f * (a0[r] - a0[l]), b0[l] + f * (b0[r] - b0[l])
        return lo - m - _DRIFT * (a0[r] - a0[l]).abs(), hi + m + _DRIFT * (b0[r] - b0[l]).abs()

    k = torch.arange(1, len(A) - 1)
    lo, hi = around(A[k], k - 1, k + 1)  # each searched row from the searched rows around it
    if float(((lo <= a0[k]) & (b0[k] <= hi)).double().mean()) < 0.9:
        return _select(y, ka, kb)[:2]
    left = torch.searchsorted(A, torch.arange(N), right=True) - 1
    lo, hi = around(torch.arange(N), left, (left + 1).clamp(max=len(A) - 1))
    lo[A], hi[A] = a0, b0
    a, b = _finish(y, ka, kb, _bracket_pass(y, lo, hi, ka, kb), None, lambda r: _select(y[r], ka[r], kb[r])[:2])
    a[A], b[A] = a0.to(a.dtype), b0.to(b.dtype)
    return a, b


def _select(y: torch.Tensor, ka: torch.Tensor, kb: torch.Tensor, z: float | None = None):
    """Values of ranks ka <= kb [N, K] of each row of y [N, L], brackets placed by each row's
    sample (z: their half-width, default _Z); and per bracket the values per rank inside it
    (a density, for _search)."""
    N, L = y.shape
    z = _Z if z is None else z
    smp = _sample(y)
    S = smp[2].shape[1]
    jlo, jhi = _sample_index(ka, L, S, -z), _sample_index(kb, L, S, z)
    lo, hi = _bounds(smp, jlo, jhi, y)
    first = _bracket_pass(y, lo, hi, ka, kb)

    def inside(below, m):  # second brackets, placed by the sample points inside the first ones
        jl, n_s, mm = jlo.clamp(0, S - 1), jhi.clamp(0, S - 1) - jlo.clamp(0, S - 1) + 1, m.clamp(min=1)
        ilo, ihi = jl + _sample_index(ka - below, mm, n_s, -z), jl + _sample_index(kb - below, mm, n_s, z)
        return _bounds(smp, torch.where(ilo <= jlo, -1, ilo), torch.where(ihi >= jhi, S, ihi), None, lo, hi)

    def redo(r):  # rows whose brackets missed: wider, at last sorted
        return _select(y[r], ka[r], kb[r], 2 * z)[:2] if z < 10 else _sorted_pairs(y[r], ka[r], kb[r])

    return (*_finish(y, ka, kb, first, inside, redo), (hi - lo) / first[7].clamp(min=1))


def _finish(y, ka, kb, first, inside, redo):
    """From a first bracket pass to the values: a second pass (inside) when the union is
    wide, a sort of what is left, the ranks that one-value brackets settled, and redo(rows)
    for the rows whose brackets missed."""
    u, vals, cnt, ka1, kb1, ok, below, m, ta, tb = first
    W = u.shape[1]
    ka1, kb1, miss = ka1.clamp(0, W - 1), kb1.clamp(0, W - 1), None
    if inside is not None and W > _SORT_BELOW:
        lo2, hi2 = inside(below, m)
        done = ~ta.isnan()
        u1, ka0, kb0 = u, ka1, kb1
        u, vals, cnt, ka1, kb1, ok2, _, _, ta2, tb2 = _bracket_pass(u, lo2, hi2, ka1, kb1)
        ka1, kb1 = ka1.clamp(0, u.shape[1] - 1), kb1.clamp(0, u.shape[1] - 1)
        ta, tb = torch.where(done, ta, ta2), torch.where(done, tb, tb2)
        miss = (~(ok2 | done)).any(1) & ok.all(1)  # missed inside the first brackets: sort those
    if y.dtype == torch.float32:
        a, b = _sorted_flat(vals, cnt, ka1, kb1)
    else:
        a, b = _sorted_pairs(u, ka1, kb1)
    if miss is not None and bool(miss.any()):
        r = miss.nonzero().squeeze(1)
        a[r], b[r] = _sorted_pairs(u1[r], ka0[r], kb0[r])
    done = ~ta.isnan()
    a, b = torch.where(done, ta.to(a.dtype), a), torch.where(done, tb.to(b.dtype), b)
    bad = ~ok.all(1)
    if bool(bad.any()):  # a bracket missed its ranks: those rows again (wider), at last sorted
        r = bad.nonzero().squeeze(1)
        a[r], b[r] = redo(r)
    return a, b


def _sample(y: torch.Tensor):
    """Every _STRIDE-th value of each row: (values [N, S], their keys, the keys sorted).  A key
    holds the top 25 bits of the value's order; one sort of (row, key) orders 64 rows."""
    s = y[:, ::_STRIDE].contiguous()
    N, S = s.shape
    low, g = (1 << (31 - _ROWBITS)) - 1, 1 << _ROWBITS
    ku = (_mono_(s.to(torch.float32, copy=True).view(torch.int32)) >> (_ROWBITS + 1)) & low
    k = ku | (torch.arange(N, dtype=torch.int32, device=y.device) % g << (31 - _ROWBITS))[:, None]
    idx = torch.empty(min(N, g) * S, dtype=torch.int64, device=y.device)
    for r in range(0, N, g):
        part = k[r:r + g].view(-1)
        torch.sort(part.clone(), out=(part, idx[:part.numel()]))
    return s, ku, k.bitwise_and_(low)


def _sample_index(k: torch.Tensor, L, S, z: float) -> torch.Tensor:
    """Where rank k of L values falls in a sample of S of them, moved z standard deviations."""
    p = (k.double() + 0.5) / L
    j = p * S - 0.5 + z * torch.sqrt(S * p * (1 - p)) + math.copysign(2, z)
    return (j.floor() if z < 0 else j.ceil()).long()


def _bounds(smp, jlo, jhi, y, lo_out=None, hi_out=None):
    """Bracket ends (float64) from the sorted sample: the value at index jlo rounded down, at jhi
    rounded up; outside the sample the given ends, or the row's least and greatest finite
    value.  Where the sample is one value from jlo to jhi, both ends are that value."""
    s, ku, k = smp
    S, sh = k.shape[1], _ROWBITS + 1
    klo, khi = k.gather(1, jlo.clamp(0, S - 1)), k.gather(1, jhi.clamp(0, S - 1))
    lo, hi = _unmono(klo << sh).double(), _unmono((khi << sh) | ((1 << sh) - 1)).double()
    low, high = jlo < 0, (jhi >= S) | ~torch.isfinite(hi)
    if lo_out is None and bool(low.any()):
        lo_out = y.amin(1, keepdim=True).double()
    if hi_out is None and bool(high.any()):
        hi_out = torch.where(torch.isinf(y), -math.inf, y).amax(1, keepdim=True).double()
    lo = lo if lo_out is None else torch.where(low, lo_out, lo)
    hi = hi if hi_out is None else torch.where(high, hi_out, hi)
    one = ~low & ~high & (klo == khi)  # one key throughout: one value, if the sample's values agree
    for j in one.any(0).nonzero().flatten().tolist():
        eq = ku == klo[:, j:j + 1]
        vmin = torch.where(eq, s, math.inf).amin(1).double()
        tie = one[:, j] & (vmin == torch.where(eq, s, -math.inf).amax(1).double())
        lo[:, j], hi[:, j] = torch.where(tie, vmin, lo[:, j]), torch.where(tie, vmin, hi[:, j])
    return lo, hi


def _bracket_pass(y, lo, hi, ka, kb):
    """Classify y [N, L] against the brackets [lo, hi] [N, K]: count exactly, keep the union.

    Returns the union rows u [N, W] (the values inside some bracket, in row order, +inf
    after), the same as one tensor ``vals`` with ``cnt`` values a row, the ranks of ka and kb
    in u, ok (both ranks inside their bracket), the values below and inside each bracket, and
    the values of the ranks that a one-value bracket (lo == hi: counted, never kept) settles
    (NaN where none)."""
    N, L = y.shape
    K = lo.shape[1]
    info = torch.finfo(y.dtype)
    lo, hi = lo.clamp(-info.max, info.max), hi.clamp(-info.max, info.max)
    tie = lo == hi
    c = lo / 2 + hi / 2  # |y - c| < h holds [lo, hi] and what rounding adds (no subnormal h: slow)
    h = (hi / 2 - lo / 2 + (lo.abs() + hi.abs()) * info.eps).clamp(info.smallest_normal, info.max)
    # A one-value bracket scales y - c by 2**149 (2**1074 in float64) in two exact steps of
    # normal numbers: any other value is at least 1 away.
    e = -math.log2(info.smallest_normal * info.eps)
    sc = torch.where(tie, 2.0**(e // 2 + 25), torch.ones_like(h)).to(y.dtype) if bool(tie.any()) else None
    h = torch.where(tie, 2.0**(e // 2 + 25 - e), h)
    c, h = c.to(y.dtype), h.to(y.dtype)
    skip = (2 * tie).to(y.dtype)  # added to |t|: a one-value bracket never marks the union
    R = max(1, min(N, _BLOCK // L))
    t, acc = torch.empty(2, R, L, dtype=y.dtype, device=y.device)
    mask = torch.empty(R, L, dtype=torch.bool, device=y.device)
    sdt = y.dtype if L < 2**24 else torch.float64  # a float32 sum of +-1 is exact below 2**24
    st, sa = torch.empty(2, N, K, dtype=sdt, device=y.device)
    sa.zero_()
    vals, cnt, ends = [], torch.empty(N, dtype=torch.int64, device=y.device), torch.arange(R + 1, device=y.device) * L
    for r0 in range(0, N, R):
        x = y[r0:r0 + R]
        r = x.shape[0]
        for j in range(K):
            ties = bool(tie[r0:r0 + r, j].any())
            tj = _classify(x, c[r0:r0 + r, j:j + 1], h[r0:r0 + r, j:j + 1], acc[:r] if j == 0 else t[:r],
                           sc[r0:r0 + r, j:j + 1] if ties else None)
            torch.sum(tj, 1, dtype=sdt, out=st[r0:r0 + r, j])  # above - below
            if ties:  # what a one-value bracket holds is counted here: it is not kept
                torch.sum(tj.abs_(), 1, dtype=sdt, out=sa[r0:r0 + r, j])  # above + below
                tj.add_(skip[r0:r0 + r, j:j + 1])
            if j:
                acc[:r].mul_(tj)  # 0 where some bracket holds the value
        idx = torch.logical_not(acc[:r], out=mask[:r]).view(-1).nonzero().squeeze(1)
        vals.append(x.reshape(-1)[idx])
        cnt[r0:r0 + r] = torch.searchsorted(idx, ends[:r + 1]).diff()
    vals = torch.cat(vals)
    W = max(int(cnt.max()), 1)
    u = torch.full((N, W), math.inf, dtype=y.dtype, device=y.device)
    u.masked_scatter_(torch.arange(W, device=y.device) < cnt[:, None], vals)
    m, ub = torch.empty(2, N, K, dtype=torch.int64, device=y.device)
    tu = torch.empty_like(u)
    for j in range(K):  # inside and below each bracket within u: the same operations, the same classes
        tj = _classify(u, c[:, j:j + 1], h[:, j:j + 1], tu, None if sc is None else sc[:, j:j + 1])
        s1, s2 = tj.sum(1, dtype=sdt).long(), tj.abs_().sum(1, dtype=sdt).long()
        m[:, j], ub[:, j] = W - s2, (s2 - s1) // 2
    m = torch.where(tie, L - sa.long(), m)
    below = (L - m - st.long()) // 2
    ok = (below <= ka) & (kb < below + m)
    ta, tb, settled = _runs(y, lo, below, m, ka, kb, tie)
    return u, vals, cnt, ka - below + ub, kb - below + ub, ok | settled, below, m, ta, tb


def _runs(y, v, below, m, ka, kb, tie):
    """Ranks settled by one-value brackets: ranks in the run of v (ranks below..below+m-1), and
    a pair with one rank in the run and the other just past it (the next value up or down)."""
    ina, inb = tie & (below <= ka) & (ka < below + m), tie & (below <= kb) & (kb < below + m)
    ta, tb = torch.where(ina, v, math.nan), torch.where(inb, v, math.nan)
    up, down = ina & ~inb & (kb == below + m), inb & ~ina & (ka == below - 1)
    for j in up.any(0).nonzero().flatten().tolist():
        nxt = torch.where(y > v[:, j:j + 1].to(y.dtype), y, math.inf).amin(1).double()
        tb[:, j] = torch.where(up[:, j], nxt, tb[:, j])
    for j in down.any(0).nonzero().flatten().tolist():
        prv = torch.where(y < v[:, j:j + 1].to(y.dtype), y, -math.inf).amax(1).double()
        ta[:, j] = torch.where(down[:, j], prv, ta[:, j])
    settled = ~ta.isnan() & ~tb.isnan()
    return torch.where(settled, ta, math.nan), torch.where(settled, tb, math.nan), settled


def _classify(x, c, h, out, scale=None):
    """-1, 0, 1: below, inside, above the bracket |x - c| < h (sub, div and trunc are exactly
    rounded, so a value gets the same class in every pass)."""
    torch.sub(x, c, out=out)
    if scale is not None:
        out.mul_(scale)
    return out.div_(h, rounding_mode="trunc").clamp_(-1, 1)
