"""The Triton LRN (alexnet_cli/lrn_triton.py) against the reference `model.local_response_norm`.

Without a GPU the kernels run in Triton's CPU interpreter, which must be on (TRITON_INTERPRET=1)
before triton is imported; so those checks run in one subprocess that executes this file as a
script, and the rest of the session stays out of interpreter mode. References are computed in
float64 from the same input and gradient values. The plain-torch tests below show that the
tolerances would catch the likely mistakes (a window crossing columns, a missing cross-channel
term, an unmirrored adjoint window for even sizes). The GPU tests use the paper's shapes.
"""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys

import pytest
import torch

from alexnet_cli.errors import AlexnetError
from alexnet_cli.lrn_triton import lrn_triton, triton_available
from alexnet_cli.model import local_response_norm

needs_triton = pytest.mark.skipif(importlib.util.find_spec("triton") is None, reason="needs triton")
needs_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")

PAPER = {"alpha": 1e-4, "beta": 0.75, "k": 2.0}    # section 4.3
STRONG = {"alpha": 1e-2, "beta": 0.75, "k": 2.0}   # with inputs ~10: d ~ 7, far from k, so the
                                                   # cross-channel term of the gradient is large
TOLERANCE = {torch.float32: 1e-5, torch.bfloat16: 2e-2, torch.float16: 1e-2}
# the interpreter rounds float32 -> bfloat16 toward zero (2^-7 relative), the GPU to nearest

# (B, C, H, W), size, groups, params, channels_last input, layout of the upstream gradient, dtype
CASES = [
    ((2, 6, 3, 4), 5, 1, PAPER, False, "contiguous", torch.float32),
    ((2, 10, 4, 3), 3, 2, STRONG, True, "transposed", torch.float32),      # g copied by flatten
    ((2, 96, 3, 3), 5, 2, STRONG, True, "sliced", torch.float32),          # 3 channel tiles
    ((2, 10, 5, 5), 4, 2, STRONG, False, "broadcast", torch.float32),      # even size; g stride 0
    ((2, 12, 3, 3), 6, 2, STRONG, True, "channels_last", torch.float32),   # even, window = column
    ((1, 7, 2, 3), 1, 1, STRONG, False, "contiguous", torch.float32),
    ((2, 96, 3, 3), 5, 2, STRONG, True, "channels_last", torch.bfloat16),
    ((2, 10, 3, 4), 5, 2, PAPER, False, "contiguous", torch.bfloat16),
    ((2, 10, 3, 4), 4, 1, STRONG, True, "contiguous", torch.float16),
    ((0, 6, 3, 3), 5, 1, PAPER, False, "contiguous", torch.float32),       # empty batch
]


def rel_err(actual: torch.Tensor, expected: torch.Tensor) -> float:
    """max |actual - expected| / max |expected|, in float64."""
    if expected.numel() == 0:
        return 0.0
    return ((actual.double() - expected.double()).abs().max() / expected.double().abs().max()).item()


def upstream_grad(shape: tuple[int, ...], layout: str, dtype: torch.dtype) -> torch.Tensor:
    """A (B, C, H, W) gradient with the given memory layout."""
    b, c, h, w = shape
    g = {"contiguous": lambda: torch.randn(shape),
         "channels_last": lambda: torch.randn(shape).to(memory_format=torch.channels_last),
         "transposed": lambda: torch.randn(b, c, w, h).transpose(2, 3),     # H, W not mergeable
         "sliced": lambda: torch.randn(b, 2 * c, h, w)[:, ::2],              # stride_c = 2 H W
         "broadcast": lambda: torch.randn(1, c, 1, 1).expand(shape)}[layout]()
    return g.to(dtype)


def reference(x: torch.Tensor, g: torch.Tensor, size: int, params: dict, groups: int):
    """Values and input gradient of `local_response_norm`, float64, from the same x and g."""
    x64 = x.detach().double().requires_grad_()
    y = local_response_norm(x64, size, groups=groups, **params)
    y.backward(g.double())
    return y.detach(), x64.grad


def check_in_interpreter() -> None:
    """Every case of CASES through the kernels; run as a script with TRITON_INTERPRET=1."""
    assert triton_available()
    torch.manual_seed(0)
    failures = []
    for shape, size, groups, params, nhwc, g_layout, dtype in CASES:
        x = (10 * torch.randn(shape)).to(dtype)
        if nhwc:
            x = x.to(memory_format=torch.channels_last)
        g = upstream_grad(shape, g_layout, dtype)
        y_ref, dx_ref = reference(x, g, size, params, groups)
        x.requires_grad_()
        y = lrn_triton(x, size, groups=groups, **params)
        y.backward(g)
        errors = rel_err(y, y_ref), rel_err(x.grad, dx_ref)
        layout_kept = y.dtype == dtype and y.is_contiguous(
            memory_format=torch.channels_last if nhwc else torch.contiguous_format)
        if max(errors) > TOLERANCE[dtype] or not layout_kept:
            failures.append(f"{shape} size={size} groups={groups} {params} {dtype} g={g_layout}: "
                            f"value/grad errors {errors}, layout kept {layout_kept}")
    assert not failures, "\n".join(failures)
    for shape, size, groups in [((1, 6, 2, 2), 5, 4), ((6, 2, 2), 5, 1), ((1, 6, 2, 2), 0, 1)]:
        with pytest.raises(AlexnetError, match="C divisible by groups"):
            lrn_triton(torch.randn(shape), size, groups=groups, **PAPER)


@needs_triton
def test_kernels_match_reference_in_interpreter():
    env = {**os.environ, "TRITON_INTERPRET": "1"}
    proc = subprocess.run([sys.executable, __file__], env=env, capture_output=True, text=True, timeout=240)
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-4000:]


@pytest.mark.skipif(torch.cuda.is_available() or os.environ.get("TRITON_INTERPRET") == "1",
                    reason="the kernels can run here")
def test_without_gpu_says_what_is_missing():
    assert not triton_available()
    with pytest.raises(AlexnetError, match="needs triton and a CUDA GPU"):
        lrn_triton(torch.randn(1, 6, 2, 2), 5, **PAPER)


# ---------------------------------------------------------------- the tolerances discriminate

def window_sum(t: torch.Tensor, lo: int, hi: int, groups: int) -> torch.Tensor:
    """sum of t over channels i - lo .. i + hi within each column, by an explicit loop."""
    cols = t.unflatten(1, (groups, -1))                              # (B, G, C/G, H, W)
    out = torch.stack([cols[:, :, max(0, i - lo):i + hi + 1].sum(2) for i in range(cols.shape[2])], 2)
    return out.flatten(1, 2)                                         # (B, C, H, W)


def formula_grad(x, g, size, groups, alpha, beta, k, mirrored=True, cross=True):
    """The module docstring's gradient; mirrored=False or cross=False are the likely bugs."""
    lo, hi = size // 2, size - 1 - size // 2
    d = k + alpha * window_sum(x * x, lo, hi, groups)
    t = g * x * d ** (-beta - 1)
    adjoint = window_sum(t, hi, lo, groups) if mirrored else window_sum(t, lo, hi, groups)
    return g * d ** -beta - cross * 2 * alpha * beta * x * adjoint


@pytest.mark.parametrize("size", [4, 5])
def test_gradient_formula_and_that_errors_would_show(size):
    torch.manual_seed(0)
    x, g = 10 * torch.randn(2, 10, 3, 3, dtype=torch.float64), torch.randn(2, 10, 3, 3, dtype=torch.float64)
    y_ref, dx_ref = reference(x, g, size, STRONG, groups=2)
    assert rel_err(formula_grad(x, g, size, 2, **STRONG), dx_ref) < 1e-12
    worst_tolerance = max(TOLERANCE.values())
    assert rel_err(local_response_norm(x, size, groups=1, **STRONG), y_ref) > 5 * worst_tolerance
    assert rel_err(formula_grad(x, g, size, 2, **STRONG, cross=False), dx_ref) > 5 * worst_tolerance
    if size % 2 == 0:
        assert rel_err(formula_grad(x, g, size, 2, **STRONG, mirrored=False), dx_ref) > 5 * worst_tolerance


# ---------------------------------------------------------------- the compiled kernels

@pytest.mark.gpu
@needs_cuda
@needs_triton
@pytest.mark.parametrize("shape, groups", [((128, 96, 55, 55), 2), ((128, 256, 27, 27), 2),
                                           ((128, 256, 27, 27), 1)])
@pytest.mark.parametrize("params", [PAPER, STRONG], ids=["paper", "strong"])
def test_matches_reference_on_gpu_bf16_channels_last(shape, groups, params):
    torch.manual_seed(0)
    x = (10 * torch.randn(shape, device="cuda")).bfloat16().to(memory_format=torch.channels_last)
    g = torch.randn(shape, device="cuda").bfloat16().to(memory_format=torch.channels_last)
    x32 = x.float().requires_grad_()                                 # the reference in float32
    y_ref = local_response_norm(x32, 5, groups=groups, **params)
    y_ref.backward(g.float())
    x.requires_grad_()
    y = lrn_triton(x, 5, groups=groups, **params)
    y.backward(g)
    assert y.dtype == torch.bfloat16 and y.is_contiguous(memory_format=torch.channels_last)
    assert rel_err(y, y_ref) < 1e-2
    assert rel_err(x.grad, x32.grad) < 1e-2


@pytest.mark.gpu
@needs_cuda
@needs_triton
@pytest.mark.parametrize("size", [3, 4, 5])
def test_matches_reference_on_gpu_float32(size):
    torch.manual_seed(0)
    x = 10 * torch.randn(8, 96, 13, 13, device="cuda")                  # NCHW
    g = torch.randn(8, 192, 13, 13, device="cuda")[:, ::2]              # stride_c = 2 H W
    y_ref, dx_ref = reference(x, g, size, STRONG, groups=2)
    x.requires_grad_()
    y = lrn_triton(x, size, groups=2, **STRONG)
    y.backward(g)
    assert rel_err(y, y_ref) < 1e-5 and rel_err(x.grad, dx_ref) < 1e-5


@pytest.mark.gpu
@needs_cuda
@needs_triton
def test_op_is_traceable_on_gpu():
    x = 10 * torch.randn(4, 96, 13, 13, device="cuda")
    torch.library.opcheck(torch.ops.alexnet.lrn.default, (x.requires_grad_(), 5, 1e-2, 0.75, 2.0, 2))
    compiled = torch.compile(lambda t: lrn_triton(t, 5, groups=2, **STRONG), fullgraph=True)
    assert rel_err(compiled(x), lrn_triton(x, 5, groups=2, **STRONG)) < 1e-6


if __name__ == "__main__":   # the subprocess of test_kernels_match_reference_in_interpreter
    check_in_interpreter()
