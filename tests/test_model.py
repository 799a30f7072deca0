"""The network of alexnet_cli/model.py against the paper (section 4) and the released code.

Shapes and counts are the paper's (4.5, figure 2); the LRN is checked against an independent
NumPy implementation of the formula of 4.3; the two GPU columns (4.2) against two explicit
convolutions; the initialisation against section 6. Full-size (60 M parameter) networks are
built once per module and shared; tests that need another variant build it with few classes.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from alexnet_cli.errors import AlexnetError
from alexnet_cli.model import AlexNet, LocalResponseNorm, local_response_norm
from alexnet_cli.summary import summarize

# Paper 4.5 / figure 2: (C, H, W) after every stage of the two-column network, 224x224 input.
PAPER_SHAPES = {
    "conv1": (96, 55, 55), "lrn1": (96, 55, 55), "pool1": (96, 27, 27),
    "conv2": (256, 27, 27), "lrn2": (256, 27, 27), "pool2": (256, 13, 13),
    "conv3": (384, 13, 13), "conv4": (384, 13, 13), "conv5": (256, 13, 13), "pool5": (256, 6, 6),
    "fc6": (4096,), "fc7": (4096,), "fc8": (1000,),
}
# Paper 4.5: "the number of neurons in the net's remaining layers is given by 290,400-..."
PAPER_NEURONS = [290_400, 186_624, 64_896, 64_896, 43_264, 4096, 4096, 1000]
PAPER_PARAMS = 60_965_224
LEARNED = ("conv1", "conv2", "conv3", "conv4", "conv5", "fc6", "fc7", "fc8")
BIAS_ONE = ("conv2", "conv4", "conv5", "fc6", "fc7")   # section 6: bias 1; the others 0


@pytest.fixture(scope="module")
def paper_net() -> AlexNet:
    torch.manual_seed(0)
    return AlexNet(num_classes=1000)


@pytest.fixture(scope="module")
def code_net() -> AlexNet:
    torch.manual_seed(1)
    return AlexNet(num_classes=1000, recipe="code")


def shapes_of(model: AlexNet) -> dict[str, tuple[int, ...]]:
    return {row.name: row.output_shape for row in summarize(model)}


# ---------------------------------------------------------------- shapes and counts (4.5)

def test_paper_layer_shapes(paper_net):
    assert shapes_of(paper_net) == PAPER_SHAPES


def test_code_layer_shapes_add_within_map_norm(code_net):
    # the code pads conv1 only right/bottom (3 px) and still gets 55x55; rnorm2 is its extra layer
    assert shapes_of(code_net) == {**PAPER_SHAPES, "rnorm2": (256, 27, 27)}
    assert [r.name for r in summarize(code_net)].index("rnorm2") == 5   # after lrn2, before pool2


def test_non_overlapping_pooling_keeps_the_shapes():
    # 2/2 pooling of 55, 27, 13 gives 27, 13, 6 as 3/2 does: the ablation changes only the windows
    net = AlexNet(num_classes=10, pool_kernel=2, pool_stride=2)
    assert net.pool1.kernel_size == 2 and net.pool1.stride == 2
    assert shapes_of(net) == {**PAPER_SHAPES, "fc8": (10,)}


def test_one_column_halves_the_kernels_except_conv5_and_fc():
    net = AlexNet(num_classes=10, columns=1)
    expected = {**PAPER_SHAPES, "conv1": (48, 55, 55), "lrn1": (48, 55, 55), "pool1": (48, 27, 27),
                "conv2": (128, 27, 27), "lrn2": (128, 27, 27), "pool2": (128, 13, 13),
                "conv3": (192, 13, 13), "conv4": (192, 13, 13), "fc8": (10,)}
    assert shapes_of(net) == expected
    assert all(getattr(net, n).groups == 1 for n in ("conv2", "conv4", "conv5"))


def test_paper_neurons_and_parameters(paper_net):
    rows = {r.name: r for r in summarize(paper_net)}
    assert [rows[n].neurons for n in LEARNED] == PAPER_NEURONS
    assert sum(r.params for r in rows.values()) == PAPER_PARAMS
    assert sum(p.numel() for p in paper_net.parameters()) == PAPER_PARAMS
    # per layer, by hand: kernels * (fan-in per column) + biases
    by_hand = {"conv1": 96 * 11 * 11 * 3 + 96, "conv2": 256 * 5 * 5 * 48 + 256, "conv3": 384 * 3 * 3 * 256 + 384,
               "conv4": 384 * 3 * 3 * 192 + 384, "conv5": 256 * 3 * 3 * 192 + 256,
               "fc6": 9216 * 4096 + 4096, "fc7": 4096 * 4096 + 4096, "fc8": 4096 * 1000 + 1000}
    assert {n: rows[n].params for n in LEARNED} == by_hand
    assert all(rows[n].params == 0 for n in ("lrn1", "pool1", "lrn2", "pool2", "pool5"))


def test_code_recipe_has_the_same_parameters(code_net):
    assert sum(r.params for r in summarize(code_net)) == PAPER_PARAMS


def test_state_dict_holds_only_the_eight_layers(paper_net):
    keys = set(paper_net.state_dict())
    assert keys == {f"{n}.{p}" for n in LEARNED for p in ("weight", "bias")}


def test_forward_conv_stack_embed_shapes(paper_net):
    x = torch.randn(2, 3, 224, 224)
    paper_net.eval()
    with torch.no_grad():
        assert paper_net.conv_stack(x).shape == (2, 256 * 6 * 6)
        assert paper_net.embed(x).shape == (2, 4096)
        assert paper_net(x).shape == (2, 1000)


# ---------------------------------------------------------------- LRN (4.3)

def lrn_reference(a: np.ndarray, n: int, alpha: float, beta: float, k: float, groups: int = 1) -> np.ndarray:
    """The paper's formula, written out map by map; the sum stays inside each group of maps."""
    a = a.astype(np.float64)
    channels = a.shape[1]
    per_group = channels // groups
    out = np.empty_like(a)
    for i in range(channels):
        first = (i // per_group) * per_group            # first map of this column
        lo = max(first, i - n // 2)
        hi = min(first + per_group - 1, i + n // 2)
        s = (a[:, lo:hi + 1] ** 2).sum(axis=1)
        out[:, i] = a[:, i] / (k + alpha * s) ** beta
    return out


@pytest.fixture(scope="module")
def big_activations() -> torch.Tensor:
    # scale 80: alpha * sum(a^2) is about 2.5, comparable to k, so the variants differ clearly
    g = torch.Generator().manual_seed(3)
    return torch.randn(2, 16, 5, 5, generator=g) * 80


@pytest.mark.parametrize("alpha_over_n", [False, True], ids=["paper-alpha", "alpha-over-n"])
@pytest.mark.parametrize("groups", [1, 2])
def test_lrn_matches_numpy_formula(big_activations, alpha_over_n, groups):
    x = big_activations
    alpha = 1e-4 / 5 if alpha_over_n else 1e-4
    expected = lrn_reference(x.numpy(), 5, alpha, 0.75, 2.0, groups)
    got = local_response_norm(x, 5, alpha, 0.75, 2.0, groups=groups)
    np.testing.assert_allclose(got.numpy(), expected, rtol=1e-5, atol=1e-4)
    module = LocalResponseNorm(5, 1e-4, 0.75, 2.0, groups=groups, alpha_over_n=alpha_over_n)
    np.testing.assert_allclose(module(x).numpy(), expected, rtol=1e-5, atol=1e-4)


def test_lrn_variants_differ_measurably(big_activations):
    x = big_activations
    paper = local_response_norm(x, 5, 1e-4, 0.75, 2.0)
    divided = local_response_norm(x, 5, 1e-4 / 5, 0.75, 2.0)
    ratio = (divided.abs().sum() / paper.abs().sum()).item()
    assert ratio > 1.2   # alpha/n normalises less: outputs larger by tens of per cent


def test_lrn_window_stays_inside_a_column(big_activations):
    x = big_activations                                     # 16 maps: column A = 0..7, B = 8..15
    grouped = local_response_norm(x, 5, 1e-4, 0.75, 2.0, groups=2)
    dense = local_response_norm(x, 5, 1e-4, 0.75, 2.0, groups=1)
    border = [6, 7, 8, 9]                                   # maps whose window would cross 7|8
    inner = [i for i in range(16) if i not in border]
    assert torch.allclose(grouped[:, inner], dense[:, inner])
    assert not torch.allclose(grouped[:, border], dense[:, border], rtol=1e-3)
    # column B's output does not move when only column A's input changes
    changed = x.clone()
    changed[:, :8] *= 3
    assert torch.equal(local_response_norm(changed, 5, 1e-4, 0.75, 2.0, groups=2)[:, 8:], grouped[:, 8:])


def test_lrn_alpha_over_n_equals_torch(big_activations):
    x = big_activations
    expected = F.local_response_norm(x, 5, alpha=1e-4, beta=0.75, k=2.0)
    module = LocalResponseNorm(5, 1e-4, 0.75, 2.0, groups=1, alpha_over_n=True)
    torch.testing.assert_close(module(x), expected, rtol=1e-5, atol=1e-5)
    assert not torch.allclose(local_response_norm(x, 5, 1e-4, 0.75, 2.0), expected, rtol=1e-3)


def test_network_lrn_settings(paper_net, code_net):
    for net, alpha in ((paper_net, 1e-4), (code_net, 1e-4 / 5)):
        for lrn in (net.lrn1, net.lrn2):
            assert isinstance(lrn, LocalResponseNorm)
            assert (lrn.size, lrn.k, lrn.beta, lrn.groups) == (5, 2.0, 0.75, 2)
            assert lrn.alpha == pytest.approx(alpha)
    assert isinstance(AlexNet(num_classes=10, lrn=False).lrn1, nn.Identity)


# ---------------------------------------------------------------- two columns (4.2)

@pytest.mark.parametrize("name", ["conv2", "conv4", "conv5"])
def test_grouped_conv_is_two_explicit_columns(paper_net, name):
    conv = getattr(paper_net, name)
    assert conv.groups == 2
    x = torch.randn(2, conv.in_channels, 13, 13)
    half_in, half_out = conv.in_channels // 2, conv.out_channels // 2
    pad = conv.padding
    column_a = F.conv2d(x[:, :half_in], conv.weight[:half_out], conv.bias[:half_out], padding=pad)
    column_b = F.conv2d(x[:, half_in:], conv.weight[half_out:], conv.bias[half_out:], padding=pad)
    with torch.no_grad():
        torch.testing.assert_close(conv(x), torch.cat([column_a, column_b], dim=1), rtol=1e-4, atol=1e-5)


def test_conv3_and_fc_see_both_columns(paper_net):
    assert paper_net.conv3.groups == 1 and paper_net.conv3.in_channels == 256
    assert paper_net.conv1.groups == 1 and paper_net.conv1.out_channels == 96
    assert paper_net.fc6.in_features == 256 * 6 * 6


# ---------------------------------------------------------------- initialisation (section 6)

@pytest.mark.parametrize("recipe, conv345_std", [("paper", 0.01), ("code", 0.03)])
def test_init_statistics(paper_net, code_net, recipe, conv345_std):
    net = paper_net if recipe == "paper" else code_net
    for name in LEARNED:
        layer = getattr(net, name)
        w = layer.weight.detach().flatten()
        w = w[::max(1, w.numel() // 2**20)].double()     # i.i.d. draws: every k-th is a sample of ~1 M
        std = conv345_std if name in ("conv3", "conv4", "conv5") else 0.01
        assert w.std().item() == pytest.approx(std, rel=0.05), name
        assert abs(w.mean().item()) < 5 * std / w.numel() ** 0.5, name
        # the shape of a Gaussian, not only its moments: kurtosis 3 (a uniform of the same std
        # has 1.8); its standard error is sqrt(24 / n) <= 0.03 for conv1's 34,848 weights
        kurtosis = (((w - w.mean()) / w.std()) ** 4).mean().item()
        assert abs(kurtosis - 3.0) < 0.2, (name, kurtosis)
        expected_bias = 1.0 if name in BIAS_ONE else 0.0
        assert torch.all(layer.bias == expected_bias), name


def test_bias_fill_option():
    net = AlexNet(num_classes=10, bias_fill=0.1)
    for name in LEARNED:
        bias = getattr(net, name).bias
        assert torch.all(bias == (torch.tensor(0.1) if name in BIAS_ONE else 0.0)), name


# ---------------------------------------------------------------- embed, dropout, activation

def test_embed_is_nonnegative_fc7(paper_net):
    paper_net.eval()
    with torch.no_grad():
        e = paper_net.embed(torch.randn(3, 3, 224, 224) * 50)
    assert e.shape == (3, 4096)
    assert (e >= 0).all() and (e > 0).any()


def test_dropout_only_in_training(paper_net):
    x = torch.randn(2, 3, 224, 224) * 50
    with torch.no_grad():
        paper_net.eval()
        assert torch.equal(paper_net(x), paper_net(x))
        paper_net.train()
        a, b = paper_net(x), paper_net(x)
        paper_net.eval()
    assert not torch.allclose(a, b)


def test_dropout_is_one_half_on_the_inputs_of_fc7_and_fc8(paper_net):
    """Section 5.2: dropout with probability 0.5 in the first two fully connected layers: about
    half of fc6's and of fc7's outputs are zeroed in training, the rest left as they are; at test
    time all are halved (tests/test_dropout.py has the rest)."""
    assert paper_net.drop6.p == paper_net.drop7.p == 0.5
    torch.manual_seed(5)
    h = torch.rand(64, 4096) + 0.5
    paper_net.drop6.train()
    out = paper_net.drop6(h)
    paper_net.drop6.eval()
    dropped = (out == 0).float().mean().item()
    assert 0.48 < dropped < 0.52
    assert torch.equal(out[out != 0], h[out != 0])
    assert torch.equal(paper_net.drop6(h), 0.5 * h)


def test_dropout_zero_is_deterministic_in_training():
    net = AlexNet(num_classes=10, dropout=0.0).train()
    x = torch.randn(2, 3, 224, 224)
    with torch.no_grad():
        assert torch.equal(net(x), net(x))


def test_tanh_ablation():
    net = AlexNet(num_classes=10, activation="tanh", bias_fill=0.0).eval()   # bias 1 would keep fc7 > 0
    assert isinstance(net.act, nn.Tanh)
    with torch.no_grad():
        e = net.embed(torch.randn(2, 3, 224, 224) * 50)
    assert (e < 0).any() and (e.abs() <= 1).all()


@pytest.mark.parametrize("groups,size,alpha", [(1, 5, 1e-4), (2, 5, 1e-4), (2, 4, 1e-2), (1, 3, 1e-2), (1, 6, 1e-2)])
@pytest.mark.parametrize("channels_last", [False, True])
def test_fused_lrn_equals_reference_values_and_gradients(groups, size, alpha, channels_last):
    """Odd sizes (the paper's 5) and even ones, whose window is lopsided, so the gradient's
    window sum must be the mirrored one; a large alpha makes the cross term count."""
    from alexnet_cli.lrn_fast import local_response_norm_fused
    from alexnet_cli.model import local_response_norm

    torch.manual_seed(0)
    x = torch.randn(2, 12, 5, 4, dtype=torch.float64) * 60
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    x.requires_grad_()
    args = (size, alpha, 0.75, 2.0, groups)
    ref = local_response_norm(x, *args)
    fused = local_response_norm_fused(x, *args)
    assert torch.allclose(ref, fused, rtol=1e-12, atol=1e-12)
    g = torch.randn_like(ref)
    (g_ref,) = torch.autograd.grad(ref, x, g)
    (g_fused,) = torch.autograd.grad(fused, x, g)
    assert torch.allclose(g_ref, g_fused, rtol=1e-10, atol=1e-12)
    assert torch.autograd.gradcheck(lambda t: local_response_norm_fused(t, *args), (x[:1, :, :2, :2].detach().clone().requires_grad_(),))


def test_lrn_channels_last_path_equals_contiguous():
    from alexnet_cli.lrn_fast import local_response_norm_fused
    from alexnet_cli.model import local_response_norm

    torch.manual_seed(1)
    x = torch.randn(2, 12, 5, 6, dtype=torch.float64) * 60
    for fn in (local_response_norm, local_response_norm_fused):
        xc = x.clone().requires_grad_()
        xl = x.contiguous(memory_format=torch.channels_last).requires_grad_()
        ref, out = fn(xc, 5, 1e-4, 0.75, 2.0, 2), fn(xl, 5, 1e-4, 0.75, 2.0, 2)
        assert out.is_contiguous(memory_format=torch.channels_last)
        assert torch.allclose(ref, out, rtol=1e-12, atol=1e-12)
        (g_ref,) = torch.autograd.grad(ref.square().sum(), xc)
        (g,) = torch.autograd.grad(out.square().sum(), xl)
        assert torch.allclose(g_ref, g, rtol=1e-10, atol=1e-12)


def test_grouped_conv_split_path_equals_groups():
    from alexnet_cli.model import grouped_conv

    torch.manual_seed(2)
    conv = torch.nn.Conv2d(8, 6, 3, padding=1, groups=2).double()
    x = torch.randn(2, 8, 7, 7, dtype=torch.float64)
    assert torch.allclose(grouped_conv(conv, x, split=True), conv(x), atol=1e-12)
    assert torch.equal(grouped_conv(conv, x, split=False), conv(x))
    seen = []
    conv.register_forward_hook(lambda _m, _i, out: seen.append(out.shape))
    assert torch.equal(grouped_conv(conv, x, split=True), conv(x))      # a hooked layer runs as a module
    assert len(seen) == 2


def test_summary_sees_every_layer_when_columns_split_as_on_cuda(paper_net, monkeypatch):
    """On CUDA the grouped layers run as two dense convolutions; the summary's hooks must
    still see conv2, conv4 and conv5."""
    from alexnet_cli import model as model_module

    split = model_module.grouped_conv
    monkeypatch.setattr(model_module, "grouped_conv", lambda conv, x, split_=None: split(conv, x, split=True))
    rows = {r.name: r for r in summarize(paper_net)}
    assert {"conv2", "conv4", "conv5"} <= set(rows) and sum(r.params for r in rows.values()) == PAPER_PARAMS


def test_lrn_implementation_switch_keeps_the_values_and_reaches_every_lrn(monkeypatch):
    from alexnet_cli import model as model_module
    from alexnet_cli.model import LRN_IMPLEMENTATIONS, LocalResponseNorm, set_lrn_implementation
    from alexnet_cli.model_parallel import ColumnParallelAlexNet

    torch.manual_seed(3)
    net = AlexNet(num_classes=10).double().eval()
    x = torch.randn(2, 3, 224, 224, dtype=torch.float64) * 50
    with torch.no_grad():
        outs = {}
        for how in ("auto", "fused", "reference"):
            set_lrn_implementation(net, how)
            assert {m.implementation for m in net.modules() if isinstance(m, LocalResponseNorm)} == {how}
            outs[how] = net(x)
    assert torch.allclose(outs["fused"], outs["reference"], rtol=1e-10) and torch.equal(outs["auto"], outs["fused"])
    calls = []   # the switch is really used: a reference that counts its calls
    reference = model_module.local_response_norm
    monkeypatch.setattr(model_module, "local_response_norm", lambda *a: calls.append(1) or reference(*a))
    set_lrn_implementation(net, "reference")
    with torch.no_grad():
        net(x)
    assert len(calls) == 2
    split = ColumnParallelAlexNet(AlexNet(num_classes=10), ("cpu", "cpu"))
    set_lrn_implementation(split, "fused")
    assert sum(isinstance(m, LocalResponseNorm) and m.implementation == "fused" for m in split.modules()) == 4
    with pytest.raises(AlexnetError, match="^lrn_kernel must be one of"):
        set_lrn_implementation(net, "fastest")
    assert "triton" in LRN_IMPLEMENTATIONS


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the message given without CUDA")
def test_triton_lrn_implementation_without_cuda_is_a_clear_error(monkeypatch):
    from alexnet_cli.model import set_lrn_implementation

    monkeypatch.delenv("TRITON_INTERPRET", raising=False)
    with pytest.raises(AlexnetError, match="triton.*CUDA"):
        set_lrn_implementation(AlexNet(num_classes=10), "triton")
