"""The network of the paper (section 4, figure 2), and of the authors' released code.

Two columns (one per GTX 580 in 2012) are grouped convolutions (groups=2) in conv2, conv4
and conv5, channel order [column A, column B]; conv3 and the fully connected layers see
both columns. The state_dict holds `conv1`..`conv5`, `fc6`..`fc8` and nothing else: the
normalisation layers have no parameters. This file is pure: no prints, no I/O.

Shapes below are for the default network and a batch of B 224x224 crops.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from alexnet_cli.config import ModelConfig, check_choice, resolve_model_config
from alexnet_cli.errors import AlexnetError
from alexnet_cli.lrn_fast import LRN_IMPLEMENTATIONS, channel_window_sum, lrn_fast


class AlexNet(nn.Module):
    """AlexNet for 224x224 crops. `AlexNet(num_classes=1000)` is the paper's network;
    `recipe="code"` the released code's; any ModelConfig field is a keyword override."""

    def __init__(self, num_classes: int | None = None, *, recipe: str = "paper",
                 config: ModelConfig | None = None, **overrides):
        super().__init__()
        if config is None:
            config = resolve_model_config(recipe, num_classes=num_classes, **overrides)
        elif num_classes is not None or overrides:
            raise TypeError("pass either config or num_classes/overrides, not both")
        self.config = c = config
        w, g = layer_widths(c.columns), c.columns
        # conv1: the paper pads 2 all round (224 -> 55); the code pads nothing and lets the
        # last window overhang the right/bottom edge by 3 pixels (zeros), also 55x55.
        self.conv1_pad = (0, 3, 0, 3) if c.conv1_padding == "code" else None
        self.conv1 = nn.Conv2d(3, w["conv1"], 11, stride=4, padding=2 if self.conv1_pad is None else 0)
        self.conv2 = nn.Conv2d(w["conv1"], w["conv2"], 5, padding=2, groups=g)
        self.conv3 = nn.Conv2d(w["conv2"], w["conv3"], 3, padding=1)           # both columns
        self.conv4 = nn.Conv2d(w["conv3"], w["conv4"], 3, padding=1, groups=g)
        self.conv5 = nn.Conv2d(w["conv4"], w["conv5"], 3, padding=1, groups=g)
        self.fc6 = nn.Linear(w["conv5"] * 6 * 6, w["fc6"])
        self.fc7 = nn.Linear(w["fc6"], w["fc7"])
        self.fc8 = nn.Linear(w["fc7"], c.num_classes)

        for name, module in stage_modules(c, groups=g).items():
            setattr(self, name, module)
        self.reset_parameters()

    @torch.no_grad()
    def reset_parameters(self) -> None:
        """Paper section 6: weights N(0, 0.01); biases 1 in conv2, conv4, conv5, fc6, fc7
        ("accelerates the early stages of learning by providing the ReLUs with positive
        inputs"), 0 elsewhere. The code uses std 0.03 in conv3-conv5."""
        c = self.config
        if self.conv1.weight.is_meta:     # shapes only (load_model, summary): no values to draw; and
            return                        # normal_ on meta tensors imports torch._dynamo (seconds)
        for name in LAYERS:
            layer = getattr(self, name)
            layer.weight.normal_(0.0, c.init_std_conv345 if name in ("conv3", "conv4", "conv5") else c.init_std)
            layer.bias.fill_(c.bias_fill if name in ("conv2", "conv4", "conv5", "fc6", "fc7") else 0.0)

    def conv_block1(self, x: torch.Tensor) -> torch.Tensor:
        if self.conv1_pad is not None:
            x = F.pad(x, self.conv1_pad)                           # (B, 3, 227, 227)
        x = self.conv1(x)                                          # (B, 96, 55, 55)
        if self.config.conv1_order == "code":                      # LRN sees the raw conv1 output
            return self.act(self.pool1(self.lrn1(x)))              # (B, 96, 27, 27)
        return self.pool1(self.lrn1(self.act(x)))                  # (B, 96, 27, 27)

    def conv_block2(self, x: torch.Tensor) -> torch.Tensor:
        x = self.lrn2(self.act(grouped_conv(self.conv2, x)))       # (B, 256, 27, 27)
        return self.pool2(self.rnorm2(x))                          # (B, 256, 13, 13)

    def conv_stack(self, x: torch.Tensor) -> torch.Tensor:
        """The five convolutional layers, conv5's pooled output flattened: (B, 3, 224, 224) -> (B, 9216).
        (The "features" of `alexnet features` are fc7's, from `embed`.)"""
        x = self.conv_block1(x)                                    # (B, 96, 27, 27)
        x = self.conv_block2(x)                                    # (B, 256, 13, 13)
        x = self.act(self.conv3(x))                                # (B, 384, 13, 13)
        x = self.act(grouped_conv(self.conv4, x))                  # (B, 384, 13, 13)
        x = self.pool5(self.act(grouped_conv(self.conv5, x)))      # (B, 256, 6, 6)
        return torch.flatten(x, 1)                                 # (B, 9216)

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        """fc7 after its ReLU, before drop7 and its test-time scaling: the 4096-d feature of the
        paper's figure 4, whose Euclidean distances `neighbors` ranks. (With the paper's dropout
        fc6's outputs are scaled by 1 - p at test time on the way, as the paper's network does.)"""
        x = self.drop6(self.act(self.fc6(self.conv_stack(x))))    # (B, 4096)
        return self.act(self.fc7(x))                               # (B, 4096)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc8(self.drop7(self.embed(x)))                 # (B, num_classes) logits


# ---------------------------------------------------------------- the layers

def local_response_norm(x: torch.Tensor, size: int, alpha: float, beta: float, k: float,
                        groups: int = 1) -> torch.Tensor:
    """The paper's LRN (4.3): b_i = a_i / (k + alpha * sum_{|j-i|<=size/2} a_j^2)^beta.

    The reference implementation: plain differentiable ops, which torch.compile fuses well.
    `alpha` is used as given: pass alpha / size for torch's, Caffe's and cuda-convnet's
    variant. The window is clipped at the edges of each of the `groups` columns, so the
    normalisation never crosses from column A into column B.
    """
    return x / (k + alpha * channel_window_sum(x.square(), size, groups)).pow(beta)


class LocalResponseNorm(nn.Module):
    """Cross-map response normalisation, per column (paper 4.3; `alpha_over_n` for the code's).
    `implementation` is how it computes, not what (LRN_IMPLEMENTATIONS, lrn_fast.py)."""

    def __init__(self, size: int, alpha: float, beta: float, k: float, groups: int, alpha_over_n: bool,
                 implementation: str = "auto"):
        super().__init__()
        self.size, self.beta, self.k, self.groups = size, beta, k, groups
        self.alpha = alpha / size if alpha_over_n else alpha
        self.implementation = implementation

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        how = self.implementation             # lrn_fast.py: the same values each way
        if how == "auto":
            how = "reference" if torch.compiler.is_compiling() else "fused"
        if how == "reference":
            return local_response_norm(x, self.size, self.alpha, self.beta, self.k, self.groups)
        return lrn_fast(how, x, self.size, self.alpha, self.beta, self.k, self.groups)

    def extra_repr(self) -> str:
        return f"size={self.size}, alpha={self.alpha:g}, beta={self.beta}, k={self.k}, groups={self.groups}"


def set_lrn_implementation(module: nn.Module, implementation: str) -> None:
    """Choose how every LocalResponseNorm inside `module` computes (LRN_IMPLEMENTATIONS)."""
    check_choice("lrn_kernel", implementation, LRN_IMPLEMENTATIONS)
    if implementation == "triton":
        from alexnet_cli.lrn_triton import triton_available
        if not triton_available():
            raise AlexnetError("lrn_kernel triton needs the triton package and a CUDA GPU; use auto",
                               field="lrn_kernel", value=implementation)
    for m in module.modules():
        if isinstance(m, LocalResponseNorm):
            m.implementation = implementation


class WithinMapNorm(nn.Module):
    """The released code's extra layer after conv2's LRN (layers-145.cfg, `rnorm` type):
    b = a / (k + alpha/size^2 * sum_{size x size window} a^2)^beta, zeros beyond the borders."""

    def __init__(self, size: int = 5, alpha: float = 0.001, beta: float = 0.75, k: float = 1.0):
        super().__init__()
        self.size, self.alpha, self.beta, self.k = size, alpha, beta, k

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        mean_sq = F.avg_pool2d(x.square(), self.size, stride=1, padding=self.size // 2, count_include_pad=True)
        return x / (self.k + self.alpha * mean_sq).pow(self.beta)  # alpha/size^2 * sum = alpha * mean

    def extra_repr(self) -> str:
        return f"size={self.size}, alpha={self.alpha:g}/{self.size ** 2}, beta={self.beta}, k={self.k}"


class Dropout(nn.Module):
    """Dropout on the outputs of fc6 and fc7 (paper 5.2), in one of two styles (DROPOUT_STYLES).

    paper: while training each output is set to zero with probability p and the others are left
    as they are; at test time every output is multiplied by 1 - p ("a reasonable approximation
    to taking the geometric mean of the predictive distributions"; the released code's `hs`
    layers do the same). inverted (torch's nn.Dropout, Caffe): the kept outputs are multiplied
    by 1 / (1 - p) while training, nothing at test time. The two compute the same function at
    test time when the next layer's weights differ by the factor 1 - p, but they do not train
    alike under the paper's fixed learning rate, init std and weight decay (docs/training.md).
    """

    def __init__(self, p: float, style: str = "paper"):
        super().__init__()
        self.p, self.style = p, style

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.p == 0.0:
            return x
        if self.style == "inverted":
            return F.dropout(x, self.p, self.training)
        if self.training:
            return x * torch.empty_like(x).bernoulli_(1.0 - self.p)   # mask: 1 kept, 0 dropped
        return x * (1.0 - self.p)

    def extra_repr(self) -> str:
        return f"p={self.p}, style={self.style}"


def grouped_conv(conv: nn.Conv2d, x: torch.Tensor, split: bool | None = None) -> torch.Tensor:
    """conv(x), with a groups=2 layer run as one dense convolution per column when `split`
    (default: on CUDA, where cuDNN's grouped kernels in bf16 channels_last are 1.5-4x slower
    than two dense ones; benchmarks/layers.py). Same weights, same values. A layer with forward
    hooks (`alexnet summary`'s, a user's) is always called as a module, so that they run."""
    hooked = bool(conv._forward_hooks or conv._forward_pre_hooks)
    if conv.groups == 1 or hooked or not (x.is_cuda if split is None else split):
        return conv(x)
    xs, ws = x.chunk(conv.groups, 1), conv.weight.chunk(conv.groups, 0)
    bs = conv.bias.chunk(conv.groups, 0)
    return torch.cat([F.conv2d(xi, wi, bi, conv.stride, conv.padding) for xi, wi, bi in zip(xs, ws, bs)], 1)


def layer_widths(columns: int) -> dict[str, int]:
    """Kernels per layer. One column has half the kernels except conv5 and the fc layers
    (paper 4.2, footnote: so that both nets have about the same number of parameters)."""
    half = 2 if columns == 1 else 1
    return {"conv1": 96 // half, "conv2": 256 // half, "conv3": 384 // half, "conv4": 384 // half,
            "conv5": 256, "fc6": 4096, "fc7": 4096}


# The eight learned layers, in order: the keys of the state_dict are "<layer>.weight/bias".
LAYERS = ("conv1", "conv2", "conv3", "conv4", "conv5", "fc6", "fc7", "fc8")


def stage_modules(c: ModelConfig, groups: int) -> dict[str, nn.Module]:
    """The parameter-free stages: activation, normalisations, pooling, dropout. `groups` is the
    number of columns that one module spans (2 in the single-device net, 1 inside a column)."""
    lrn = dict(size=c.lrn_size, alpha=c.lrn_alpha, beta=c.lrn_beta, k=c.lrn_k, alpha_over_n=c.lrn_alpha_over_n)
    return {
        "act": nn.ReLU(inplace=True) if c.activation == "relu" else nn.Tanh(),
        "lrn1": LocalResponseNorm(groups=groups, **lrn) if c.lrn else nn.Identity(),
        "lrn2": LocalResponseNorm(groups=groups, **lrn) if c.lrn else nn.Identity(),
        "rnorm2": WithinMapNorm() if c.within_map_norm else nn.Identity(),
        "pool1": nn.MaxPool2d(c.pool_kernel, c.pool_stride),
        "pool2": nn.MaxPool2d(c.pool_kernel, c.pool_stride),
        "pool5": nn.MaxPool2d(c.pool_kernel, c.pool_stride),
        "drop6": Dropout(c.dropout, c.dropout_style),
        "drop7": Dropout(c.dropout, c.dropout_style),
    }
