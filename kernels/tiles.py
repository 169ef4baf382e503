"""The tile every per-layer kernel works on: BLOCK_G networks x BLOCK_W columns of one width."""
import triton
import triton.language as tl


@triton.jit
def tile_offsets(G, W, BLOCK_G: tl.constexpr, BLOCK_W: tl.constexpr, IDX64: tl.constexpr):
    """Program (pid_g, pid_w): networks [pid_g * BLOCK_G, +BLOCK_G) and columns
    [pid_w * BLOCK_W, +BLOCK_W) of a width W.  Returns ``offs_g``, ``offs_w``, ``mask_g``
    and the tile mask; offsets are int64 when IDX64 (index * stride can pass 2**31)."""
    offs_g = tl.program_id(0) * BLOCK_G + tl.arange(0, BLOCK_G)
    offs_w = tl.program_id(1) * BLOCK_W + tl.arange(0, BLOCK_W)
    if IDX64:
        offs_g = offs_g.to(tl.int64)
        offs_w = offs_w.to(tl.int64)
    mask_g = offs_g < G
    mask = mask_g[:, None] & (offs_w < W)[None, :]
    return offs_g, offs_w, mask_g, mask
