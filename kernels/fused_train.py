"""One-launch training: every epoch of BLOCK_G small networks in one program, weights on-chip.

Two kernels, one launcher.  :func:`fused_train` launches the kernel generated for the
architecture (``kernels/fused_unrolled.py``: one thread per network, one register per
weight, samples unrolled) whenever a network fits one thread's registers -- the lab
network does -- and the tile kernel of this module otherwise (:func:`variant`).  Both take
the same arguments and keep the same contract; the rest of this docstring is the tile kernel.

A program owns ``BLOCK_G`` neighbouring networks and runs ``E`` epochs of full-batch gradient
descent for them without touching device memory except to read the data (a few hundred
bytes, cached) and, once per epoch, to write each network's loss.  Weights, biases and their
gradient accumulators live in registers for the whole launch.

Tensors inside the kernel are shaped with the *networks axis last*: a weight tile is
``[K_PAD, M_PAD, BLOCK_G]`` (input unit, output unit, network).  Triton's default blocked
layout hands the last (fastest) axis to the 32 lanes of a warp first, so with
``BLOCK_G = 32 * num_warps`` each thread holds whole networks: every contraction
(``tl.sum`` over a unit axis) is a chain of in-thread FMAs, no shuffles, and loads and
stores of the network-minor parameters are coalesced along G.

Each epoch goes sample by sample (the gradient of the mean loss is a sum over samples, and
the weights do not change within an epoch): forward through the layers, output delta,
delta recursion, accumulate ``z_prev^T delta`` into the gradient tiles; after the last
sample, one SGD step.  Only one sample's activations are alive at a time, so N does not
cost registers.

Widths are padded to powers of two inside the kernel (tensor shapes must be); padded units
hold zero weights and zero biases and stay exactly zero (pre-activation 0, tanh 0, zero
outgoing weights, zero deltas), and padded outputs are masked out of the loss.  The cost
is arithmetic on the padding: the lab network 2-5-3-1 computes on 2-8-4-1 tiles.
"""
from __future__ import annotations

import torch
import triton
import triton.language as tl

from ..architecture import FUSED_MAX_HIDDEN as MAX_HIDDEN
from ..architecture import FUSED_MAX_SAMPLES as MAX_SAMPLES
from ..architecture import FUSED_MAX_WIDTH as MAX_WIDTH
from ..architecture import Architecture, next_pow2
from ..program import check_launch
from . import fused_unrolled
from .activations import finite, fused_hidden_act, fused_output_act

__all__ = ["fused_train", "fused_limits", "variant", "kernel_for", "config", "MAX_HIDDEN", "MAX_WIDTH", "MAX_SAMPLES"]

# MAX_HIDDEN (5 layer slots in the kernel), MAX_WIDTH (every width, inputs and outputs
# included) and MAX_SAMPLES (N is a runtime loop: this only bounds the time of a launch)
# are fastmlp.architecture's FUSED_* limits, which the fused backend checks.
NUM_WARPS = 4
# Per-thread budget for the parameter + gradient tiles of one network (float32 words) at
# one network per thread.  The lab network needs 2 * (2*8 + 8*4 + 4*1 + 8 + 4 + 1) = 130.
_PARAM_REGS = 160
# Words per program when a network spreads over threads (see block_g): ~70 per thread.
_SPREAD_WORDS = 9000


@triton.jit
def _load_tile(p_ptr, OFF: tl.constexpr, K: tl.constexpr, M: tl.constexpr,
               KP: tl.constexpr, MP: tl.constexpr, offs_g, mask_g, G):
    """Rows OFF .. OFF+K*M of the packed parameters as a [KP, MP, BLOCK_G] tile (0 padded)."""
    offs_k = tl.arange(0, KP)[:, None, None]
    offs_m = tl.arange(0, MP)[None, :, None]
    row = OFF + offs_k * M + offs_m
    mask = (offs_k < K) & (offs_m < M) & mask_g[None, None, :]
    return tl.load(p_ptr + row.to(tl.int64) * G + offs_g[None, None, :], mask=mask, other=0.0)


@triton.jit
def _store_tile(p_ptr, t, OFF: tl.constexpr, K: tl.constexpr, M: tl.constexpr,
                KP: tl.constexpr, MP: tl.constexpr, offs_g, mask_g, G):
    offs_k = tl.arange(0, KP)[:, None, None]
    offs_m = tl.arange(0, MP)[None, :, None]
    row = OFF + offs_k * M + offs_m
    mask = (offs_k < K) & (offs_m < M) & mask_g[None, None, :]
    tl.store(p_ptr + row.to(tl.int64) * G + offs_g[None, None, :], t, mask=mask)


@triton.jit
def _load_vec(p_ptr, OFF: tl.constexpr, M: tl.constexpr, MP: tl.constexpr, offs_g, mask_g, G):
    """Rows OFF .. OFF+M of the packed parameters as a [MP, BLOCK_G] tile (0 padded)."""
    offs_m = tl.arange(0, MP)[:, None]
    mask = (offs_m < M) & mask_g[None, :]
    return tl.load(p_ptr + (OFF + offs_m).to(tl.int64) * G + offs_g[None, :], mask=mask, other=0.0)


@triton.jit
def _store_vec(p_ptr, t, OFF: tl.constexpr, M: tl.constexpr, MP: tl.constexpr, offs_g, mask_g, G):
    offs_m = tl.arange(0, MP)[:, None]
    mask = (offs_m < M) & mask_g[None, :]
    tl.store(p_ptr + (OFF + offs_m).to(tl.int64) * G + offs_g[None, :], t, mask=mask)


@triton.jit
def _dense(h, w, b):
    """z_in [MP, BG] = sum_k h[k] * w[k, :] + b  with h [KP, BG] (or [KP, 1] for shared x)."""
    return tl.sum(h[:, None, :] * w, axis=0) + b


@triton.jit
def _back(d, w, h):
    """delta of the layer below: (w @ d) * tanh'(h), from its saved output h [KP, BG];
    tanh' = (1 - h) (1 + h), which no compiler can contract (activations.tanh_grad)."""
    return tl.sum(w * d[None, :, :], axis=1) * (1.0 - h) * (1.0 + h)


# E is never specialised: Triton compiles a separate kernel for an int argument equal to 1
# (where the installed version still does), and a one-epoch block (a snapshot cut, the last
# of a run) must run the same machine code as the others, or blocks would not be bitwise
# what one launch computes on a GPU.
@triton.jit(do_not_specialize=["E", "e_base", "RECORD_EVERY"])
def _fused_train_kernel(
        x_ptr, y_ptr,                       # x [N, D0], y [N, D_out], contiguous, shared
        p_ptr, out_ptr,                     # packed parameters [P, G]: W1, b1, W2, b2, ... rows (in, out)
        lr_ptr, active_ptr,                 # [G] learning rates, [G] int8 (1 = training)
        loss_ptr, s_loss,                   # [ceil(E / RECORD_EVERY), G] loss history, row stride
        G, N, E,                            # runtime: networks, samples, epochs
        scale_ptr,                          # [1/(N D_out), 2/(N D_out), eps] in the parameters' dtype
        first_ptr, e_base,                  # [G] int32 first epoch with loss < eps (-1: not yet); the block's first epoch
        RECORD_EVERY,                       # the loss of every RECORD_EVERY-th epoch is stored (runtime: one machine code)
        NUM_LAYERS: tl.constexpr,
        D0: tl.constexpr, D1: tl.constexpr, D2: tl.constexpr, D3: tl.constexpr, D4: tl.constexpr,
        D5: tl.constexpr,
        P0: tl.constexpr, P1: tl.constexpr, P2: tl.constexpr, P3: tl.constexpr, P4: tl.constexpr,
        P5: tl.constexpr,
        FAST_TANH: tl.constexpr, BLOCK_G: tl.constexpr):
    # Packed row offsets of each layer's weight and bias (constexpr arithmetic).
    OW1: tl.constexpr = 0
    OB1: tl.constexpr = OW1 + D0 * D1
    OW2: tl.constexpr = OB1 + D1
    OB2: tl.constexpr = OW2 + D1 * D2
    OW3: tl.constexpr = OB2 + D2
    OB3: tl.constexpr = OW3 + D2 * D3
    OW4: tl.constexpr = OB3 + D3
    OB4: tl.constexpr = OW4 + D3 * D4
    OW5: tl.constexpr = OB4 + D4
    OB5: tl.constexpr = OW5 + D4 * D5

    pid = tl.program_id(0)
    offs_g = pid * BLOCK_G + tl.arange(0, BLOCK_G)
    inv_count = tl.load(scale_ptr)
    grad_scale = tl.load(scale_ptr + 1)
    eps = tl.load(scale_ptr + 2)
    mask_g = offs_g < G

    # ---- parameters into registers (zero beyond the real widths and networks) ----------
    w1 = _load_tile(p_ptr, OW1, D0, D1, P0, P1, offs_g, mask_g, G)
    b1 = _load_vec(p_ptr, OB1, D1, P1, offs_g, mask_g, G)
    if NUM_LAYERS >= 2:
        w2 = _load_tile(p_ptr, OW2, D1, D2, P1, P2, offs_g, mask_g, G)
        b2 = _load_vec(p_ptr, OB2, D2, P2, offs_g, mask_g, G)
    if NUM_LAYERS >= 3:
        w3 = _load_tile(p_ptr, OW3, D2, D3, P2, P3, offs_g, mask_g, G)
        b3 = _load_vec(p_ptr, OB3, D3, P3, offs_g, mask_g, G)
    if NUM_LAYERS >= 4:
        w4 = _load_tile(p_ptr, OW4, D3, D4, P3, P4, offs_g, mask_g, G)
        b4 = _load_vec(p_ptr, OB4, D4, P4, offs_g, mask_g, G)
    if NUM_LAYERS >= 5:
        w5 = _load_tile(p_ptr, OW5, D4, D5, P4, P5, offs_g, mask_g, G)
        b5 = _load_vec(p_ptr, OB5, D5, P5, offs_g, mask_g, G)
    lr = tl.load(lr_ptr + offs_g, mask=mask_g, other=0.0)
    active = tl.load(active_ptr + offs_g, mask=mask_g, other=0) != 0
    first = tl.load(first_ptr + offs_g, mask=mask_g, other=0)

    # The output layer's width and padded width.
    if NUM_LAYERS == 1:
        DO: tl.constexpr = D1
        PO: tl.constexpr = P1
    elif NUM_LAYERS == 2:
        DO: tl.constexpr = D2
        PO: tl.constexpr = P2
    elif NUM_LAYERS == 3:
        DO: tl.constexpr = D3
        PO: tl.constexpr = P3
    elif NUM_LAYERS == 4:
        DO: tl.constexpr = D4
        PO: tl.constexpr = P4
    else:
        DO: tl.constexpr = D5
        PO: tl.constexpr = P5
    p_loss = loss_ptr + offs_g
    rec_at = 0  # the next epoch whose loss is recorded
    offs_in = tl.arange(0, P0)
    offs_out = tl.arange(0, PO)
    mask_in = offs_in < D0
    mask_out = offs_out < DO

    for e in range(E):
        gw1 = tl.zeros_like(w1)
        gb1 = tl.zeros_like(b1)
        if NUM_LAYERS >= 2:
            gw2 = tl.zeros_like(w2)
            gb2 = tl.zeros_like(b2)
        if NUM_LAYERS >= 3:
            gw3 = tl.zeros_like(w3)
            gb3 = tl.zeros_like(b3)
        if NUM_LAYERS >= 4:
            gw4 = tl.zeros_like(w4)
            gb4 = tl.zeros_like(b4)
        if NUM_LAYERS >= 5:
            gw5 = tl.zeros_like(w5)
            gb5 = tl.zeros_like(b5)
        loss = tl.zeros([BLOCK_G], dtype=w1.dtype)
        for n in range(N):
            # x[n] and y[n]: the same address for every thread (broadcast loads, L1 hits).
            h0 = tl.load(x_ptr + n * D0 + offs_in, mask=mask_in, other=0.0)[:, None]
            yn = tl.load(y_ptr + n * DO + offs_out, mask=mask_out, other=0.0)[:, None]
            # ---- forward: hidden layers tanh, output layer sigmoid ----------------------
            if NUM_LAYERS == 1:
                out = fused_output_act(_dense(h0, w1, b1), FAST_TANH)
            else:
                h1 = fused_hidden_act(_dense(h0, w1, b1), FAST_TANH)
                if NUM_LAYERS == 2:
                    out = fused_output_act(_dense(h1, w2, b2), FAST_TANH)
                else:
                    h2 = fused_hidden_act(_dense(h1, w2, b2), FAST_TANH)
                    if NUM_LAYERS == 3:
                        out = fused_output_act(_dense(h2, w3, b3), FAST_TANH)
                    else:
                        h3 = fused_hidden_act(_dense(h2, w3, b3), FAST_TANH)
                        if NUM_LAYERS == 4:
                            out = fused_output_act(_dense(h3, w4, b4), FAST_TANH)
                        else:
                            h4 = fused_hidden_act(_dense(h3, w4, b4), FAST_TANH)
                            out = fused_output_act(_dense(h4, w5, b5), FAST_TANH)
            # ---- output delta and loss: MSE over the N * D_out elements ------------------
            diff = tl.where(mask_out[:, None], out - yn, 0.0)
            loss += tl.sum(diff * diff, axis=0)
            d = diff * grad_scale * (out * (1.0 - out))  # sigmoid' (activations.sigmoid_grad)
            # ---- backward: accumulate z_prev^T delta, then the delta of the layer below --
            if NUM_LAYERS == 5:
                gw5 += h4[:, None, :] * d[None, :, :]
                gb5 += d
                d = _back(d, w5, h4)
            if NUM_LAYERS >= 4:
                gw4 += h3[:, None, :] * d[None, :, :]
                gb4 += d
                d = _back(d, w4, h3)
            if NUM_LAYERS >= 3:
                gw3 += h2[:, None, :] * d[None, :, :]
                gb3 += d
                d = _back(d, w3, h2)
            if NUM_LAYERS >= 2:
                gw2 += h1[:, None, :] * d[None, :, :]
                gb2 += d
                d = _back(d, w2, h1)
            gw1 += h0[:, None, :] * d[None, :, :]
            gb1 += d
        loss = loss * inv_count
        hit = e == rec_at  # every RECORD_EVERY-th epoch: a count without a branch (fused_unrolled.py)
        tl.store(p_loss, loss, mask=tl.where(hit, mask_g, False))
        p_loss += s_loss * hit  # a pointer increment: 64-bit, whatever E * G
        rec_at += RECORD_EVERY * hit
        # The first epoch whose loss is below eps, on every epoch (fastmlp.program.TrackBelow).
        first = tl.where((loss < eps) & (first < 0), e_base + e, first)
        # A network whose loss is non-finite stops here (a test of the loss's bits).
        active = active & finite(loss)
        # ---- SGD step; frozen networks keep their parameters bit for bit ------------------
        step = tl.where(active, lr, 0.0)
        live = active[None, :]
        w1 = tl.where(live[None, :, :], w1 - step[None, None, :] * gw1, w1)
        b1 = tl.where(live, b1 - step[None, :] * gb1, b1)
        if NUM_LAYERS >= 2:
            w2 = tl.where(live[None, :, :], w2 - step[None, None, :] * gw2, w2)
            b2 = tl.where(live, b2 - step[None, :] * gb2, b2)
        if NUM_LAYERS >= 3:
            w3 = tl.where(live[None, :, :], w3 - step[None, None, :] * gw3, w3)
            b3 = tl.where(live, b3 - step[None, :] * gb3, b3)
        if NUM_LAYERS >= 4:
            w4 = tl.where(live[None, :, :], w4 - step[None, None, :] * gw4, w4)
            b4 = tl.where(live, b4 - step[None, :] * gb4, b4)
        if NUM_LAYERS >= 5:
            w5 = tl.where(live[None, :, :], w5 - step[None, None, :] * gw5, w5)
            b5 = tl.where(live, b5 - step[None, :] * gb5, b5)

    # ---- results back to device memory ----------------------------------------------------
    _store_tile(out_ptr, w1, OW1, D0, D1, P0, P1, offs_g, mask_g, G)
    _store_vec(out_ptr, b1, OB1, D1, P1, offs_g, mask_g, G)
    if NUM_LAYERS >= 2:
        _store_tile(out_ptr, w2, OW2, D1, D2, P1, P2, offs_g, mask_g, G)
        _store_vec(out_ptr, b2, OB2, D2, P2, offs_g, mask_g, G)
    if NUM_LAYERS >= 3:
        _store_tile(out_ptr, w3, OW3, D2, D3, P2, P3, offs_g, mask_g, G)
        _store_vec(out_ptr, b3, OB3, D3, P3, offs_g, mask_g, G)
    if NUM_LAYERS >= 4:
        _store_tile(out_ptr, w4, OW4, D3, D4, P3, P4, offs_g, mask_g, G)
        _store_vec(out_ptr, b4, OB4, D4, P4, offs_g, mask_g, G)
    if NUM_LAYERS >= 5:
        _store_tile(out_ptr, w5, OW5, D4, D5, P4, P5, offs_g, mask_g, G)
        _store_vec(out_ptr, b5, OB5, D5, P5, offs_g, mask_g, G)
    tl.store(active_ptr + offs_g, active.to(tl.int8), mask=mask_g)
    tl.store(first_ptr + offs_g, first, mask=mask_g)


def fused_limits(sizes, N: int) -> str | None:
    """None when the fused kernel takes this architecture and sample count, else why not
    (``Architecture.fused_limits``)."""
    return Architecture(sizes).fused_limits(N)


def block_g(sizes) -> int:
    """Networks per program, by rule.

    ``words`` = parameters + gradient accumulators of one network on padded tiles.  When
    they fit one thread (<= ``_PARAM_REGS``) a program takes 32 * NUM_WARPS networks, one
    per thread (lab network, tile kernel forced: 130 words -> BLOCK_G 128, 167 registers on
    sm_90, no spills).
    Otherwise a network's tiles spread over several threads, the contractions become
    cross-thread reductions, and BLOCK_G is the largest power of two with
    ``words * BLOCK_G <= _SPREAD_WORDS``.  Measured by AOT compiles for sm_80 and sm_90
    (Triton 3.9, 4 warps): the largest spill-free BLOCK_G was 32 for 2-8-8-1 (210 words),
    8 for 2-16-16-1 (674) and 8-8-8-8-8-1 (594), 2 for 2-32-32-1 (2370) and 32-32-32-1
    (4290), 1 for 2-32-32-32-32-1 (6594); the rule reproduces each of them.
    """
    words = 2 * Architecture(sizes).padded().n_params
    if words <= _PARAM_REGS:
        return 32 * NUM_WARPS
    bg = 32 * NUM_WARPS
    while bg > 1 and words * bg > _SPREAD_WORDS:
        bg //= 2
    return bg


VARIANTS = ("unrolled", "tiles")


def variant(sizes, N: int, force: str | None = None) -> str:
    """Which kernel trains ``sizes`` on ``N`` samples: ``"unrolled"`` (one thread per network,
    one register per weight, ``kernels/fused_unrolled.py``) when it fits, else ``"tiles"``.
    ``force`` names one (benchmarks and tests compare them); "unrolled" must fit."""
    if force is None:
        return "unrolled" if fused_unrolled.fits(sizes, N) else "tiles"
    if force not in VARIANTS:
        raise ValueError(f"variant must be one of {VARIANTS} or None, got {force!r}")
    if force == "unrolled" and not fused_unrolled.fits(sizes, N):
        raise ValueError(f"variant='unrolled' does not take {list(sizes)} on N = {N} (fused_unrolled.fits)")
    return force


_variant = variant  # config() names its argument ``variant``


def kernel_for(sizes, N: int, force: str | None = None):
    """The jitted kernel :func:`fused_train` launches for ``sizes`` on ``N`` samples."""
    return fused_unrolled.kernel(sizes, N) if variant(sizes, N, force) == "unrolled" else _fused_train_kernel


def config(sizes, N: int, record_every: int = 1, G: int | None = None, fast_tanh: bool = False,
           variant: str | None = None) -> dict:
    """The constexpr configuration of :func:`kernel_for` (the launcher's, also for AOT compiles).
    A population smaller than a block gets a block of its own size (rounded up to a power
    of two): fewer idle lanes, and far less work in the interpreter."""
    which = _variant(sizes, N, variant)
    full = 32 * NUM_WARPS if which == "unrolled" else block_g(sizes)
    bg = full if G is None else min(full, next_pow2(G))
    meta = dict(FAST_TANH=fast_tanh, BLOCK_G=bg)  # record_every: a runtime argument, not specialised
    if which == "tiles":
        dims = list(sizes) + [1] * (6 - len(sizes))
        meta.update(NUM_LAYERS=len(sizes) - 1)
        meta.update({f"D{i}": d for i, d in enumerate(dims)})
        meta.update({f"P{i}": next_pow2(d) for i, d in enumerate(dims)})
    return meta


def _arch_of(weights) -> Architecture:
    return Architecture([weights[0].shape[1]] + [w.shape[2] for w in weights])


def pack(weights, biases) -> torch.Tensor:
    """Network-minor packed parameters [P, G]: rows W1 (row-major [n_in, n_out]), b1, W2, ...
    (``Architecture.pack``, the layout's one definition)."""
    return _arch_of(weights).pack(weights, biases)


def unpack_into(packed: torch.Tensor, weights, biases) -> None:
    """Copy packed parameters back into the population's tensors (any strides)."""
    _arch_of(weights).unpack_into(packed, weights, biases)


def fused_train(x: torch.Tensor, y: torch.Tensor, packed: torch.Tensor, lr: torch.Tensor, active: torch.Tensor,
                loss_out: torch.Tensor, sizes, epochs: int, record_every: int = 1, fast_tanh: bool = False,
                variant: str | None = None, first_below: torch.Tensor | None = None, eps: float = 0.0,
                e_base: int = 0) -> None:
    """Train for ``epochs`` epochs in one launch, in place on ``packed`` [P, G] and ``active``.

    x [N, n_in] and y [N, n_out] are shared by all networks; lr [G]; active [G] int8
    (0 = frozen: never updated, and set to 0 here when a network's loss turns non-finite);
    loss_out [ceil(epochs / record_every), G] receives the loss at the start of every
    ``record_every``-th epoch.  first_below [G] int32 (optional) is updated on every epoch: a
    network's entry, while -1, becomes ``e_base + e`` at the first epoch ``e`` of this launch
    whose loss is below ``eps`` (compared in the parameters' dtype); ``e_base`` is the launch's
    first epoch in the whole run.  Limits: :func:`fused_limits`.

    ``fast_tanh`` (float32 on a GPU only) evaluates tanh and sigmoid with the hardware's
    ``tanh.approx.f32`` instead of the exp-based forms: fewer instructions per network-epoch
    (bench/roofline.py), relative error ~6e-4 per activation; it has its own, looser
    tolerance in the CUDA tests and is never the default.

    ``variant`` (None: by rule, :func:`variant`) forces the "unrolled" or the "tiles" kernel.
    """
    sizes = [int(s) for s in sizes]
    N = x.shape[0]
    why = fused_limits(sizes, N)
    if why is not None:
        raise ValueError(f"backend='fused' cannot train {why}; use backend='triton' or backend='torch'")
    N, G = check_launch(sizes, x, y, packed, lr, active, loss_out, epochs, record_every, first_below, e_base)
    if fast_tanh and packed.dtype != torch.float32:
        raise ValueError("fused_train: fast_tanh needs float32 parameters")
    if epochs == 0:
        return
    meta = config(sizes, N, record_every, G, fast_tanh, variant)
    count = N * sizes[-1]
    # The loss and gradient scales as a tensor in the parameters' dtype: a Python float
    # argument would reach a compiled kernel as float32, even for float64 parameters.
    scales = torch.tensor([1.0 / count, 2.0 / count, float(eps)], dtype=packed.dtype, device=packed.device)
    if first_below is None:  # nothing to track: entries >= 0 never change
        first_below = torch.zeros(G, dtype=torch.int32, device=packed.device)
    grid = (triton.cdiv(G, meta["BLOCK_G"]),)
    kernel = kernel_for(sizes, N, variant)
    kernel[grid](x.contiguous(), y.contiguous(), packed, packed, lr.contiguous(), active, loss_out, loss_out.stride(0),
                 G, N, epochs, scales, first_below, e_base, record_every, num_warps=NUM_WARPS, **meta)
