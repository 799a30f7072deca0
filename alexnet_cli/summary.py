"""The layer table of `alexnet summary`: per layer its geometry (kernel, stride, padding, which
inputs it sees), output shape, neurons and parameters, measured by running one 224x224 image
through the network and read from its modules (so it cannot drift from it). Shapes and counts
need no numbers: `meta_network` builds the network on the meta device, without allocating its
weights (any class count can be counted).

The paper (section 4.5, figure 2; the abstract) counts a network of "60 million parameters and
650,000 neurons": the outputs of the eight learned layers, 290,400-186,624-64,896-64,896-43,264-
4096-4096-1000 (the NIPS 2012 text prints 253,440 for conv1, a misprint: 55x55x96 = 290,400).
Those are the rows conv1..conv5 (a conv layer's output, the same size after its ReLU) and
fc6..fc8 here; the rows of the LRN and pooling stages are outputs the paper does not count.
`paper_neurons` sums the eight from the measured rows. The input, 224x224x3 = 150,528 values (4.5:
"the network's input is 150,528-dimensional"), is INPUT_SHAPE."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from alexnet_cli.config import ModelConfig
from alexnet_cli.model import LAYERS, AlexNet, LocalResponseNorm, WithinMapNorm

# Stages in the order of the forward pass; parameter-free stages appear only when present.
STAGES = ("conv1", "lrn1", "pool1", "conv2", "lrn2", "rnorm2", "pool2", "conv3", "conv4", "conv5",
          "pool5", "fc6", "fc7", "fc8")
INPUT_SHAPE = (3, 224, 224)   # one crop: channels, height, width (4.5: 150,528 values)
MAX_CPU_WEIGHTS = 1 << 27     # _forward: the most weights of a layer run on the CPU (fc6 has 37.7 M; 512 MiB)

# The paper's own figures, to show beside the measured ones (module docstring).
PAPER_NEURON_LAYERS = LAYERS                    # the layers whose outputs the paper counts as neurons
PAPER_LAYER_NEURONS = (290_400, 186_624, 64_896, 64_896, 43_264, 4096, 4096, 1000)   # 4.5, CACM reprint
PAPER_STATED_NEURONS = 650_000                  # the abstract: "650,000 neurons" (its eight summed: 659,272)
PAPER_STATED_PARAMS = 60_000_000                # the abstract: "60 million parameters" (here 60,965,224)


@dataclass(frozen=True)
class LrnParams:
    """An LRN's constants of 4.3, b = a / (k + alpha * sum of n adjacent a^2)^beta: the paper's
    n=5, k=2, alpha=1e-4, beta=0.75. `alpha` is the one the layer multiplies by: the code
    recipe's is lrn_alpha / n (2e-5)."""
    n: int
    k: float
    alpha: float
    beta: float


@dataclass(frozen=True)
class LayerRow:
    name: str
    kind: str
    output_shape: tuple[int, ...]
    neurons: int    # output elements per image
    params: int
    # The geometry, None where the layer has none (an LRN has no kernel but `lrn`; a fully
    # connected layer no kernel, stride or padding; a pool or the within-map norm no groups).
    kernel: str | None = None       # as the paper writes it: height x width (x input maps per column for a conv)
    stride: int | None = None
    padding: tuple[int, int, int, int] | None = None    # zeros added (top, bottom, left, right)
    groups: int | None = None       # input groups: 2 = each column sees only its own maps (paper 4.2)
    inputs: str | None = None       # which inputs one output sees, in words: "image", "own column", ...
    lrn: LrnParams | None = None    # an LRN's constants, as it computes with them


def meta_network(config: ModelConfig) -> AlexNet:
    """The network of `config` with shapes but no storage, for `summarize`."""
    with torch.device("meta"):
        return AlexNet(config=config)


def summarize(model: AlexNet) -> list[LayerRow]:
    """One row per layer of `model`, from a forward pass of one 224x224 image (INPUT_SHAPE)."""
    shapes: dict[str, tuple[int, ...]] = {}
    hooks = []
    for name in STAGES:
        module = getattr(model, name)
        if isinstance(module, nn.Identity):
            continue
        hooks.append(module.register_forward_hook(
            lambda _m, _i, out, name=name: shapes.__setitem__(name, tuple(out.shape[1:]))))
    was_training = model.training
    try:
        model.eval()
        with torch.no_grad():
            _forward(model, torch.zeros(1, *INPUT_SHAPE))
    finally:
        model.train(was_training)
        for h in hooks:
            h.remove()
    rows = []
    for name in STAGES:
        if name not in shapes:
            continue
        module = getattr(model, name)
        shape = shapes[name]
        rows.append(LayerRow(name, type(module).__name__, shape, _prod(shape),
                             sum(p.numel() for p in module.parameters()), **_geometry(model, name, module)))
    return rows


def paper_neurons(rows: list[LayerRow]) -> int:
    """The neurons as the paper counts them: the outputs of conv1..conv5 and fc6..fc8 (the
    paper's 650,000; 659,272 in its own per-layer list and in the paper's network)."""
    return sum(r.neurons for r in rows if r.name in PAPER_NEURON_LAYERS)


def _geometry(model: AlexNet, name: str, module: nn.Module) -> dict:
    """`name`'s kernel, stride, padding, groups and inputs (LayerRow), read from its module."""
    columns = model.config.columns
    if isinstance(module, nn.Conv2d):
        (kh, kw), (ph, pw) = module.kernel_size, module.padding
        # conv1 of the code's recipe pads before the layer (F.pad's order: left, right, top, bottom)
        left, right, top, bottom = (model.conv1_pad or (0, 0, 0, 0)) if name == "conv1" else (0, 0, 0, 0)
        return dict(kernel=f"{kh}x{kw}x{module.in_channels // module.groups}", stride=module.stride[0],
                    padding=(ph + top, ph + bottom, pw + left, pw + right), groups=module.groups,
                    inputs="image" if name == "conv1" else _inputs(module.groups, columns))
    if isinstance(module, nn.Linear):
        return dict(groups=1, inputs=_inputs(1, columns))
    if isinstance(module, LocalResponseNorm):      # across n adjacent maps, clipped at its column's edges
        return dict(groups=module.groups, inputs=_inputs(module.groups, columns),
                    lrn=LrnParams(module.size, module.k, module.alpha, module.beta))
    if isinstance(module, nn.MaxPool2d):
        k, s, p = (_square(v) for v in (module.kernel_size, module.stride, module.padding))
        return dict(kernel=f"{k}x{k}", stride=s, padding=(p, p, p, p), inputs="own map")
    if isinstance(module, WithinMapNorm):          # a size x size window, stride 1, zeros beyond the borders
        p = module.size // 2
        return dict(kernel=f"{module.size}x{module.size}", stride=1, padding=(p, p, p, p), inputs="own map")
    return {}


def _inputs(groups: int, columns: int) -> str:
    if columns == 1:
        return "all maps"
    return "own column" if groups == columns else "both columns"


def _square(value: int | tuple[int, ...]) -> int:
    """A pool's kernel, stride or padding as one number (the network's are square)."""
    return value if isinstance(value, int) else value[0]


def _forward(model: AlexNet, x: torch.Tensor) -> torch.Tensor:
    """`model(x)` on the model's device. A model on the meta device (`meta_network`) runs on the
    CPU on weights of zeros that take no memory (one value, expanded): on meta tensors every
    elementwise operation imports torch._dynamo, about 3 s of `alexnet summary`'s 5. A layer too
    large to compute there (fc8 of millions of classes) still runs on meta, its input moved there."""
    tensors = dict(model.named_parameters()) | dict(model.named_buffers())
    if not any(t.is_meta for t in tensors.values()):
        return model(x.to(next(iter(tensors.values())).device))
    from torch.func import functional_call
    huge = [m for m in model.modules() if sum(p.numel() for p in m.parameters(recurse=False)) > MAX_CPU_WEIGHTS]
    skip = {id(p) for m in huge for p in m.parameters(recurse=False)}
    zeros = {name: torch.zeros((), dtype=t.dtype).expand(t.shape) for name, t in tensors.items() if id(t) not in skip}
    hooks = [m.register_forward_pre_hook(lambda _m, args: tuple(a.to("meta") for a in args)) for m in huge]
    try:
        return functional_call(model, zeros, (x,))
    finally:
        for h in hooks:
            h.remove()


def _prod(shape: tuple[int, ...]) -> int:
    n = 1
    for s in shape:
        n *= s
    return n
