"""The fast ways to compute the paper's LRN (section 4.3): the same values as
`model.local_response_norm`, less time and memory. A choice of implementation for speed
(LRN_IMPLEMENTATIONS; `alexnet train --lrn-kernel`), not a recipe.

- `channel_window_sum`: the window sum over each column's maps that every variant uses, in the
  input's memory format (NCHW: shifted adds; NHWC: one reduction over a sliding-window view).
- `fused`: the LRN with its gradient written out (`_LRNFunction`), the eager default: it keeps
  only x and d^-beta for the backward instead of autograd's chain of intermediates.
- `triton`: the Triton kernels of lrn_triton.py (CUDA).
- `reference`: model.local_response_norm, plain differentiable ops, which torch.compile fuses.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

# How LocalResponseNorm computes (the same function each way), its `implementation`:
# auto: `fused` in eager mode, `reference` under torch.compile (which fuses its ops);
# triton: the Triton kernels of lrn_triton.py (CUDA); fused, reference: as named, always.
LRN_IMPLEMENTATIONS = ("auto", "fused", "triton", "reference")


def channel_window_sum(t: torch.Tensor, size: int, groups: int, mirror: bool = False) -> torch.Tensor:
    """sum_{j = i - size//2 .. i + size - 1 - size//2} t_j over the channels of each of `groups`
    columns, clipped at their edges: (B, C, H, W) -> (B, C, H, W), in the memory format of `t`.
    `mirror` flips the window (its adjoint; the same window for the odd sizes of the paper)."""
    b, c, h, w = t.shape
    lo, hi = size // 2, size - 1 - size // 2
    if mirror:
        lo, hi = hi, lo
    if t.is_contiguous(memory_format=torch.channels_last) and not t.is_contiguous():
        # NHWC (channels_last on the GPU): channels are innermost, so each pixel's column is
        # a contiguous row; one pad, then one reduction over a sliding-window view
        rows = t.permute(0, 2, 3, 1).reshape(b * h * w * groups, c // groups)      # (BHWG, C/G)
        window = F.pad(rows, (lo, hi)).unfold(1, size, 1).sum(-1)                  # (BHWG, C/G)
        return window.reshape(b, h, w, c).permute(0, 3, 1, 2)                      # channels_last
    # NCHW: each column's channels padded with zeros, then the window as `size` shifted adds
    # (on the CPU 6-16x faster than a channel-wise avg_pool3d; exact sums, no mean * size)
    cg = c // groups
    padded = F.pad(t.reshape(b * groups, cg, h, w), (0, 0, 0, 0, lo, hi))           # (BG, cg + size - 1, H, W)
    window = padded[:, 0:cg].clone()
    for d in range(1, size):
        window += padded[:, d:d + cg]
    return window.reshape(b, c, h, w)


class _LRNFunction(torch.autograd.Function):
    """The same LRN with its gradient written out, for eager mode: it keeps only x and
    d^-beta (d = k + alpha * window(x^2)) instead of autograd's chain of intermediates.

    dL/dx_j = g_j d_j^-beta - 2 alpha beta x_j sum_{|i-j|<=size/2} g_i x_i d_i^(-beta-1)
    (the sum runs over the i whose window holds j: the mirrored window, the same one when size is odd)."""

    @staticmethod
    def forward(ctx, x, size: int, alpha: float, beta: float, k: float, groups: int):
        d = k + alpha * channel_window_sum(x.square(), size, groups)   # (B, C, H, W)
        scale = d.pow(-beta)
        ctx.save_for_backward(x, d, scale)
        ctx.params = (size, alpha, beta, groups)
        return x * scale

    @staticmethod
    def backward(ctx, g):
        x, d, scale = ctx.saved_tensors
        size, alpha, beta, groups = ctx.params
        t = g * x * scale / d                                              # g_i x_i d_i^(-beta-1)
        grad = g * scale - (2 * alpha * beta) * x * channel_window_sum(t, size, groups, mirror=True)
        return grad, None, None, None, None, None


def local_response_norm_fused(x: torch.Tensor, size: int, alpha: float, beta: float, k: float,
                              groups: int = 1) -> torch.Tensor:
    """`local_response_norm` with a hand-written backward (same values, less memory traffic)."""
    return _LRNFunction.apply(x, size, alpha, beta, k, groups)


def lrn_fast(implementation: str, x: torch.Tensor, size: int, alpha: float, beta: float, k: float,
             groups: int) -> torch.Tensor:
    """The LRN by `implementation` ("fused" or "triton"; model.LocalResponseNorm handles the others)."""
    if implementation == "triton":
        from alexnet_cli.lrn_triton import lrn_triton   # imports triton: only when asked for
        return lrn_triton(x, size, alpha, beta, k, groups)
    return local_response_norm_fused(x, size, alpha, beta, k, groups)
