"""The paper's cross-channel LRN (section 4.3) as two Triton kernels, forward and backward.

Why: in eager mode `lrn_fast.local_response_norm_fused` costs about 1.8 ms forward + 1.2 ms
backward per batch of 128 on an H100 for lrn1 and lrn2 together, about 25% of the step, while
the memory traffic (read x, write y; read x and g, write dx) is bounded by about 0.1 ms. The
definition stays `model.local_response_norm`; these kernels must (and the tests check they
do) give the same values and gradients:

    b_i = a_i / d_i^beta,   d_i = k + alpha * sum_{j in window(i)} a_j^2
    dL/da_j = g_j d_j^-beta - 2 alpha beta a_j sum_{i: j in window(i)} g_i a_i d_i^(-beta-1)

window(i) = channels i - lo .. i + hi (lo = size // 2, hi = size - 1 - lo, as in
`lrn_fast.channel_window_sum`), clipped to the column (one of `groups` equal runs of channels) that
holds i. For an even size the window is not symmetric, so the backward sums over the mirrored
window i in j - hi .. j + lo.

Layout and tiling: x is seen as (B, C, P) with P = H * W and whatever strides it has, so
channels_last (stride_c = 1) and contiguous NCHW both run without copies (other layouts are
copied by `flatten`). A program owns a tile of BLOCK_C channels x BLOCK_P pixels of one image
and reads the channel neighbours with shifted, masked loads from global memory (they hit the
cache), so C needs no power of two. Everything is computed in float32 and stored in the input
dtype. The backward saves only x and recomputes d at the neighbours it needs (x at offsets
-(lo + hi) .. lo + hi): cheaper than saving d. Only basic `tl` ops are used, for old Tritons.

The op is a `torch.library.triton_op` (`alexnet::lrn`, its gradient `alexnet::lrn_backward`),
so eager autograd works and torch.compile can trace it. It also runs in Triton's CPU
interpreter (TRITON_INTERPRET=1 set before import), which is how the tests check it without a
GPU, but there in eager mode only: `wrap_triton` hands back the interpreted kernel unwrapped,
which cannot run on fake tensors, so torch.compile and opcheck are tested on the GPU.
"""

from __future__ import annotations

import os

import torch

from alexnet_cli.errors import AlexnetError

try:
    import triton
    import triton.language as tl
except ImportError:  # the module still imports; lrn_triton() says what is missing
    triton = None

BLOCK_C = 32   # channels per tile: 96 = 3 x 32 and 256 = 8 x 32, no idle lanes
BLOCK_P = 64   # pixels per tile: 2048 elements per program with 4 warps


def triton_available() -> bool:
    """True when the kernels can run: triton imports and there is a CUDA GPU, or Triton's CPU
    interpreter is on (TRITON_INTERPRET=1, which Triton itself reads)."""
    return triton is not None and (torch.cuda.is_available() or _interpreting())


def _interpreting() -> bool:
    return os.environ.get("TRITON_INTERPRET") == "1"


def lrn_triton(x: torch.Tensor, size: int, alpha: float, beta: float, k: float,
               groups: int = 1) -> torch.Tensor:
    """`model.local_response_norm` (same arguments, values and gradients) in Triton kernels."""
    if not triton_available():
        raise AlexnetError("the Triton LRN needs triton and a CUDA GPU (or TRITON_INTERPRET=1); "
                           "use alexnet_cli.lrn_fast.local_response_norm_fused instead")
    if not (x.is_cuda or _interpreting()):
        raise AlexnetError(f"the Triton LRN runs on CUDA tensors, got one on {x.device}")
    if x.dim() != 4 or x.shape[1] % groups or size < 1:
        raise AlexnetError(f"LRN needs (B, C, H, W) with C divisible by groups={groups} and "
                           f"size >= 1, got shape {tuple(x.shape)} and size {size}")
    return torch.ops.alexnet.lrn(x, size, float(alpha), float(beta), float(k), groups)


def _empty_like(x: torch.Tensor) -> torch.Tensor:
    """An output in x's layout: channels_last if x is, else contiguous (so flatten(2) is a view)."""
    nhwc = x.is_contiguous(memory_format=torch.channels_last) and not x.is_contiguous()
    return torch.empty_like(x, memory_format=torch.channels_last if nhwc else torch.contiguous_format)


if triton is not None:

    @triton.jit
    def _tile(ptr, b, c, p, stride_b, stride_c, stride_p):
        """Pointers to channels c (BLOCK_C,) x pixels p (BLOCK_P,) of image b."""
        return ptr + b * stride_b + c[:, None] * stride_c + p[None, :] * stride_p

    @triton.jit
    def _in_column(r, ok, Cg, SHIFT: tl.constexpr):
        """Mask of the channels SHIFT away that exist and share the column: (BLOCK_C, BLOCK_P).
        r = c % Cg is the position in the column (c >= 0, so % does not truncate wrongly)."""
        return ((r + SHIFT >= 0) & (r + SHIFT < Cg))[:, None] & ok

    @triton.jit
    def _denominator(x_tile, stride_c, r, ok, Cg, k, alpha, SHIFT: tl.constexpr,
                     LO: tl.constexpr, HI: tl.constexpr, BLOCK_C: tl.constexpr, BLOCK_P: tl.constexpr):
        """d = k + alpha * sum of x^2 over the window of the channels SHIFT away from the tile's,
        float32 (BLOCK_C, BLOCK_P)."""
        acc = tl.zeros((BLOCK_C, BLOCK_P), dtype=tl.float32)
        for i in tl.static_range(LO + HI + 1):
            e = SHIFT + i - LO
            v = tl.load(x_tile + e * stride_c, mask=_in_column(r, ok, Cg, e), other=0.0).to(tl.float32)
            acc += v * v
        return k + alpha * acc

    @triton.jit
    def _lrn_forward_kernel(x_ptr, y_ptr, C, Cg, P, sxb, sxc, sxp, syb, syc, syp, k, alpha, beta,
                            LO: tl.constexpr, HI: tl.constexpr,
                            BLOCK_C: tl.constexpr, BLOCK_P: tl.constexpr):
        """y = x * d^-beta on one tile; grid (cdiv(P, BLOCK_P), cdiv(C, BLOCK_C), B)."""
        b = tl.program_id(2).to(tl.int64)
        c = tl.program_id(1) * BLOCK_C + tl.arange(0, BLOCK_C)   # (BLOCK_C,) channels
        p = tl.program_id(0) * BLOCK_P + tl.arange(0, BLOCK_P)   # (BLOCK_P,) pixels h * W + w
        ok = (c < C)[:, None] & (p < P)[None, :]                 # (BLOCK_C, BLOCK_P)
        r = c % Cg                                               # position in the column
        x_tile = _tile(x_ptr, b, c, p, sxb, sxc, sxp)
        d = _denominator(x_tile, sxc, r, ok, Cg, k, alpha, 0, LO, HI, BLOCK_C, BLOCK_P)
        x = tl.load(x_tile, mask=ok, other=0.0).to(tl.float32)
        y = x * tl.exp2(-beta * tl.log2(d))
        tl.store(_tile(y_ptr, b, c, p, syb, syc, syp), y.to(y_ptr.dtype.element_ty), mask=ok)

    @triton.jit
    def _lrn_backward_kernel(g_ptr, x_ptr, dx_ptr, C, Cg, P, sgb, sgc, sgp, sxb, sxc, sxp,
                             sdb, sdc, sdp, k, alpha, beta,
                             LO: tl.constexpr, HI: tl.constexpr,
                             BLOCK_C: tl.constexpr, BLOCK_P: tl.constexpr):
        """dx_j = g_j d_j^-beta - 2 alpha beta x_j sum_{i = j-HI..j+LO} g_i x_i d_i^(-beta-1)."""
        b = tl.program_id(2).to(tl.int64)
        c = tl.program_id(1) * BLOCK_C + tl.arange(0, BLOCK_C)   # (BLOCK_C,) channels j
        p = tl.program_id(0) * BLOCK_P + tl.arange(0, BLOCK_P)   # (BLOCK_P,) pixels
        ok = (c < C)[:, None] & (p < P)[None, :]                 # (BLOCK_C, BLOCK_P)
        r = c % Cg
        x_tile = _tile(x_ptr, b, c, p, sxb, sxc, sxp)
        g_tile = _tile(g_ptr, b, c, p, sgb, sgc, sgp)
        x = tl.load(x_tile, mask=ok, other=0.0).to(tl.float32)
        direct = tl.zeros((BLOCK_C, BLOCK_P), dtype=tl.float32)  # g_j d_j^-beta
        cross = tl.zeros((BLOCK_C, BLOCK_P), dtype=tl.float32)   # the sum over i
        for n in tl.static_range(LO + HI + 1):
            f = n - HI                                           # i = j + f
            valid = _in_column(r, ok, Cg, f)
            d = _denominator(x_tile, sxc, r, ok, Cg, k, alpha, f, LO, HI, BLOCK_C, BLOCK_P)
            g_i = tl.load(g_tile + f * sgc, mask=valid, other=0.0).to(tl.float32)
            x_i = tl.load(x_tile + f * sxc, mask=valid, other=0.0).to(tl.float32)
            scale = tl.exp2(-beta * tl.log2(d))                  # d_i^-beta
            cross += tl.where(valid, g_i * x_i * scale / d, 0.0)
            if f == 0:
                direct = g_i * scale
        dx = direct - 2.0 * alpha * beta * x * cross
        tl.store(_tile(dx_ptr, b, c, p, sdb, sdc, sdp), dx.to(dx_ptr.dtype.element_ty), mask=ok)

    def _launch(kernel, tensors, c: int, cg: int, p: int, batch: int, size: int, k, alpha, beta):
        """One program per (pixel tile, channel tile, image); strides of each (B, C, P) view."""
        strides = [s for t in tensors for s in t.stride()]
        grid = (triton.cdiv(p, BLOCK_P), triton.cdiv(c, BLOCK_C), batch)
        torch.library.wrap_triton(kernel)[grid](*tensors, c, cg, p, *strides, k, alpha, beta,
                                                LO=size // 2, HI=size - 1 - size // 2,
                                                BLOCK_C=BLOCK_C, BLOCK_P=BLOCK_P)

    @torch.library.triton_op("alexnet::lrn", mutates_args=())
    def _lrn(x: torch.Tensor, size: int, alpha: float, beta: float, k: float,
             groups: int) -> torch.Tensor:
        b, c, h, w = x.shape
        y = _empty_like(x)                                       # (B, C, H, W)
        if x.numel():
            _launch(_lrn_forward_kernel, (x.flatten(2), y.flatten(2)), c, c // groups, h * w, b,
                    size, k, alpha, beta)
        return y

    @torch.library.triton_op("alexnet::lrn_backward", mutates_args=())
    def _lrn_backward(g: torch.Tensor, x: torch.Tensor, size: int, alpha: float, beta: float,
                      k: float, groups: int) -> torch.Tensor:
        b, c, h, w = x.shape
        dx = _empty_like(x)                                      # (B, C, H, W)
        if x.numel():
            _launch(_lrn_backward_kernel, (g.flatten(2), x.flatten(2), dx.flatten(2)), c,
                    c // groups, h * w, b, size, k, alpha, beta)
        return dx

    def _setup_context(ctx, inputs, output):
        x, *ctx.params = inputs                                  # size, alpha, beta, k, groups
        ctx.save_for_backward(x)

    def _backward(ctx, g):
        (x,) = ctx.saved_tensors
        return torch.ops.alexnet.lrn_backward(g, x, *ctx.params), None, None, None, None, None

    _lrn.register_autograd(_backward, setup_context=_setup_context)
