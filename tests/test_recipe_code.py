"""`AlexNet(recipe="code")` against an independent NumPy implementation of the authors'
released network (computerhistory/AlexNet-Source-Code: layers/layers-145.cfg with
layers/layer-params-145.cfg; layer semantics from layer.py and cuda-convnet's kernels).

The reference is written per column, as the .cfg file is: conv1a/conv1b, rnorm1a/rnorm1b,
... and uses cuda-convnet's own rules: a conv layer's output size is
1 + ceil((2 pad + size - filter) / stride), windows past the image read zeros (conv1: no
padding, 224 -> 55, the last window overhanging by 3); `cmrnorm` divides the configured
scale by the window size and adds minDiv (2), the window of map f being f-2 .. f+2 clipped
to the column's maps; `rnorm` (within a map) divides the scale by size^2 and adds 1, the
5x5 window clipped at the borders; a pool layer's `neuron=relu` applies after pooling; at
test time the dropout (`hs`) layers multiply by keep = 0.5, as this tool's default (paper)
dropout does. Everything in float64.

The same NumPy layers also give the paper's network as its text describes it
(`paper_forward`), against which the default `AlexNet()` is checked.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from numpy.lib.stride_tricks import sliding_window_view

from alexnet_cli.model import AlexNet

KEEP = 0.5  # layers-145.cfg, hs1a/hs1b/hs2a/hs2b: keep=0.5


# ---------------------------------------------------------------- the released code's layers, in NumPy

def conv(x: np.ndarray, w: np.ndarray, b: np.ndarray, stride: int = 1, pad: int = 0) -> np.ndarray:
    """cuda-convnet `conv`: (N, C, H, H) -> (N, O, M, M), M = 1 + ceil((2 pad + H - f) / stride)."""
    n, c, h, _ = x.shape
    f = w.shape[-1]
    m = 1 + math.ceil((2 * pad + h - f) / stride)
    extent = (m - 1) * stride + f                       # what the windows touch, padding included
    xp = np.zeros((n, c, max(extent, pad + h), max(extent, pad + h)))
    xp[:, :, pad:pad + h, pad:pad + h] = x              # zeros before and after the image
    windows = sliding_window_view(xp[:, :, :extent, :extent], (f, f), axis=(2, 3))[:, :, ::stride, ::stride]
    return np.einsum("nchwij,ocij->nohw", windows, w, optimize=True) + b[None, :, None, None]


def cross_map_norm(x: np.ndarray, size: int, scale: float, power: float, min_div: float) -> np.ndarray:
    """`cmrnorm` over one column's maps: b_f = a_f (minDiv + scale/size * sum_window a^2)^-pow."""
    add_scale = scale / size                            # layer.py, NormLayerParser
    maps = x.shape[1]
    out = np.empty_like(x)
    for f in range(maps):
        lo, hi = max(0, f - size // 2), min(maps, f - size // 2 + size)
        out[:, f] = x[:, f] * (min_div + add_scale * np.sum(x[:, lo:hi] ** 2, axis=1)) ** -power
    return out


def within_map_norm(x: np.ndarray, size: int, scale: float, power: float) -> np.ndarray:
    """`rnorm`: b = a (1 + scale/size^2 * sum_{size x size window} a^2)^-pow, window clipped."""
    add_scale = scale / size**2
    h, w = x.shape[2:]
    out = np.empty_like(x)
    for y in range(h):
        for z in range(w):
            ys = slice(max(0, y - size // 2), min(h, y - size // 2 + size))
            zs = slice(max(0, z - size // 2), min(w, z - size // 2 + size))
            total = np.sum(x[:, :, ys, zs] ** 2, axis=(2, 3))
            out[:, :, y, z] = x[:, :, y, z] * (1 + add_scale * total) ** -power
    return out


def max_pool(x: np.ndarray, size: int = 3, stride: int = 2) -> np.ndarray:
    """cuda-convnet max pool: ceil((H - size) / stride) + 1 outputs, windows clipped at the edge."""
    h = x.shape[2]
    m = math.ceil((h - size) / stride) + 1
    out = np.empty(x.shape[:2] + (m, m))
    for i in range(m):
        for j in range(m):
            out[:, :, i, j] = x[:, :, i * stride:i * stride + size, j * stride:j * stride + size].max(axis=(2, 3))
    return out


def relu(x: np.ndarray) -> np.ndarray:
    return np.maximum(x, 0.0)


def released_forward(x: np.ndarray, p: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """layers-145.cfg at test time, column by column. `p` holds "<layer><column>.w/.b"."""
    lrn = dict(size=5, scale=0.0001, power=0.75, min_div=2)   # layer-params-145.cfg [rnorm1a] ...
    pool1, pool2 = {}, {}
    for c in "ab":
        a = conv(x, p[f"conv1{c}.w"], p[f"conv1{c}.b"], stride=4, pad=0)  # no neuron
        pool1[c] = relu(max_pool(cross_map_norm(a, **lrn)))              # pool1: neuron=relu
        a = relu(conv(pool1[c], p[f"conv2{c}.w"], p[f"conv2{c}.b"], pad=2))
        a = within_map_norm(cross_map_norm(a, **lrn), size=5, scale=0.001, power=0.75)  # cnorm2
        pool2[c] = max_pool(a)
    both = np.concatenate([pool2["a"], pool2["b"]], axis=1)              # conv3 sees both columns
    pool3 = {}
    for c in "ab":
        a = relu(conv(both, p[f"conv3{c}.w"], p[f"conv3{c}.b"], pad=1))
        a = relu(conv(a, p[f"conv4{c}.w"], p[f"conv4{c}.b"], pad=1))
        a = conv(a, p[f"conv5{c}.w"], p[f"conv5{c}.b"], pad=1)           # no neuron
        pool3[c] = relu(max_pool(a)).reshape(len(x), -1)                 # pool3: neuron=relu
    h = np.concatenate([pool3["a"], pool3["b"]], axis=1)                 # (N, 9216)
    h = np.concatenate([KEEP * relu(h @ p[f"fc6{c}.w"].T + p[f"fc6{c}.b"]) for c in "ab"], axis=1)
    h = np.concatenate([KEEP * relu(h @ p[f"fc7{c}.w"].T + p[f"fc7{c}.b"]) for c in "ab"], axis=1)
    logits = h @ p["fc8.w"].T + p["fc8.b"]
    return {"conv_block1": np.concatenate([pool1["a"], pool1["b"]], axis=1), "conv_block2": both,
            "logits": logits}


def released_params(model: AlexNet) -> dict[str, np.ndarray]:
    """The model's weights split into the .cfg's columns, as they are: the model's dropout scales
    by keep at test time, as the code's `hs` layers do."""
    p = {}
    for name in ("conv1", "conv2", "conv3", "conv4", "conv5", "fc6", "fc7"):
        w = getattr(model, name).weight.detach().double().numpy()
        b = getattr(model, name).bias.detach().double().numpy()
        half = len(w) // 2
        p[f"{name}a.w"], p[f"{name}b.w"] = w[:half], w[half:]
        p[f"{name}a.b"], p[f"{name}b.b"] = b[:half], b[half:]
    p["fc8.w"] = model.fc8.weight.detach().double().numpy()
    p["fc8.b"] = model.fc8.bias.detach().double().numpy()
    return p


# ---------------------------------------------------------------- fixtures

def excite(model: AlexNet, seed: int) -> None:
    """Weights large enough that both normalisations change their inputs substantially,
    and random biases, so that every term of the formulas is exercised."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, gain in (("conv1", 4.0), ("conv2", 3.0), ("conv3", 1.5), ("conv4", 1.5), ("conv5", 1.5),
                           ("fc6", 1.5), ("fc7", 1.5), ("fc8", 1.0)):
            layer = getattr(model, name)
            fan_in = layer.weight[0].numel()
            layer.weight.copy_(torch.randn(layer.weight.shape, generator=g, dtype=torch.float64) * gain / fan_in**0.5)
            layer.bias.copy_(torch.randn(layer.bias.shape, generator=g, dtype=torch.float64))


@pytest.fixture(scope="module")
def code_net() -> AlexNet:
    torch.manual_seed(0)
    model = AlexNet(num_classes=10, recipe="code").double().eval()
    excite(model, seed=1)
    return model


@pytest.fixture(scope="module")
def crops() -> torch.Tensor:
    """Two mean-subtracted 224x224 crops, 0-255 units."""
    g = torch.Generator().manual_seed(2)
    return torch.randn(2, 3, 224, 224, generator=g, dtype=torch.float64) * 60.0


@pytest.fixture(scope="module")
def reference(code_net, crops) -> dict[str, np.ndarray]:
    return released_forward(crops.numpy(), released_params(code_net))


def close(got: torch.Tensor, want: np.ndarray) -> None:
    np.testing.assert_allclose(got.detach().numpy(), want, rtol=1e-9, atol=1e-9 * np.abs(want).max())


# ---------------------------------------------------------------- tests

def test_conv_block1_matches_the_released_code(code_net, crops, reference):
    with torch.no_grad():
        got = code_net.conv_block1(crops)                                # (2, 96, 27, 27)
    assert got.shape == reference["conv_block1"].shape == (2, 96, 27, 27)
    close(got, reference["conv_block1"])


def test_conv2_stage_matches_the_released_code(code_net, crops, reference):
    with torch.no_grad():
        got = code_net.conv_block2(code_net.conv_block1(crops))          # (2, 256, 13, 13)
    assert got.shape == (2, 256, 13, 13)
    close(got, reference["conv_block2"])


def test_logits_match_the_released_code_at_test_time(code_net, crops, reference):
    with torch.no_grad():
        got = code_net(crops)                                            # (2, 10)
    assert got.shape == (2, 10)
    close(got, reference["logits"])


def test_the_comparison_tells_the_recipes_apart(code_net, crops, reference):
    """The inputs excite every normalisation: the paper's LRN (alpha undivided), the network
    without the within-map normalisation, or conv1 padded by 2 all round would all differ."""
    for overrides in ({"lrn_alpha_over_n": False}, {"within_map_norm": False}, {"conv1_padding": "paper"}):
        torch.manual_seed(0)
        variant = AlexNet(num_classes=10, recipe="code", **overrides).double().eval()
        variant.load_state_dict(code_net.state_dict())
        with torch.no_grad():
            got = variant.conv_block2(variant.conv_block1(crops)).numpy()
        assert np.abs(got - reference["conv_block2"]).max() > 1e-3 * np.abs(reference["conv_block2"]).max()


# layers-145.cfg: initW of every layer, and initB where given (the parser's default is 0)
RELEASED_INIT = {"conv1": (0.01, 0.0), "conv2": (0.01, 1.0), "conv3": (0.03, 0.0), "conv4": (0.03, 1.0),
                 "conv5": (0.03, 1.0), "fc6": (0.01, 1.0), "fc7": (0.01, 1.0), "fc8": (0.01, 0.0)}


def test_initialisation_matches_layers_145_cfg():
    torch.manual_seed(3)
    model = AlexNet(num_classes=10, recipe="code")
    for name, (std, bias) in RELEASED_INIT.items():
        layer = getattr(model, name)
        assert layer.weight.std().item() == pytest.approx(std, rel=0.05), name
        assert abs(layer.weight.mean().item()) < 0.1 * std, name
        assert torch.all(layer.bias == bias), name


# ---------------------------------------------------------------- the paper's network, same layers

def paper_forward(x: np.ndarray, p: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """The paper's text (sections 4.3-4.5, figure 2), column by column, with the NumPy layers
    above: conv1 padded by 2 all round (224 -> 55: the first 55 of the overhanging windows),
    ReLU, then LRN (k = 2, n = 5, alpha = 1e-4 NOT divided by n, beta = 0.75) within the
    column, then overlapping 3/2 max pooling; likewise conv2; conv3 sees both columns; ReLU
    after conv3, conv4, conv5; pool after conv5; fc6, fc7 with ReLU and 0.5 dropout."""
    lrn = dict(size=5, scale=1e-4 * 5, power=0.75, min_div=2.0)     # cross_map_norm divides by size
    pool1, pool2 = {}, {}
    for c in "ab":
        a = relu(conv(x, p[f"conv1{c}.w"], p[f"conv1{c}.b"], stride=4, pad=2)[:, :, :55, :55])
        pool1[c] = max_pool(cross_map_norm(a, **lrn))                        # (N, 48, 27, 27)
        a = relu(conv(pool1[c], p[f"conv2{c}.w"], p[f"conv2{c}.b"], pad=2))
        pool2[c] = max_pool(cross_map_norm(a, **lrn))                        # (N, 128, 13, 13)
    both = np.concatenate([pool2["a"], pool2["b"]], axis=1)
    pool5 = {}
    for c in "ab":
        a = relu(conv(both, p[f"conv3{c}.w"], p[f"conv3{c}.b"], pad=1))
        a = relu(conv(a, p[f"conv4{c}.w"], p[f"conv4{c}.b"], pad=1))
        a = relu(conv(a, p[f"conv5{c}.w"], p[f"conv5{c}.b"], pad=1))
        pool5[c] = max_pool(a).reshape(len(x), -1)                           # (N, 4608)
    h = np.concatenate([pool5["a"], pool5["b"]], axis=1)
    h = np.concatenate([KEEP * relu(h @ p[f"fc6{c}.w"].T + p[f"fc6{c}.b"]) for c in "ab"], axis=1)
    h = np.concatenate([KEEP * relu(h @ p[f"fc7{c}.w"].T + p[f"fc7{c}.b"]) for c in "ab"], axis=1)
    return {"conv_block1": np.concatenate([pool1["a"], pool1["b"]], axis=1), "logits": h @ p["fc8.w"].T + p["fc8.b"]}


def test_paper_network_matches_the_papers_text():
    torch.manual_seed(0)
    net = AlexNet(num_classes=10).double().eval()
    assert net.conv1.padding == (2, 2) and net.conv1.stride == (4, 4)
    excite(net, seed=3)
    x = torch.randn(2, 3, 224, 224, generator=torch.Generator().manual_seed(4), dtype=torch.float64) * 60.0
    want = paper_forward(x.numpy(), released_params(net))
    with torch.no_grad():
        block1, logits = net.conv_block1(x), net(x)
    assert block1.shape == (2, 96, 27, 27) and logits.shape == (2, 10)
    close(block1, want["conv_block1"])
    close(logits, want["logits"])
    # and the comparison would notice: LRN before ReLU, alpha / n, or the code's conv1 padding
    for overrides in ({"conv1_order": "code"}, {"lrn_alpha_over_n": True}, {"conv1_padding": "code"}):
        variant = AlexNet(num_classes=10, **overrides).double().eval()
        variant.load_state_dict(net.state_dict())
        with torch.no_grad():
            got = variant.conv_block1(x).numpy()
        assert np.abs(got - want["conv_block1"]).max() > 1e-3 * np.abs(want["conv_block1"]).max(), overrides
