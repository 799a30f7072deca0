"""The layer table of `alexnet summary`: output shape, neurons and parameters per layer,
measured by running one 224x224 image through the network (so it cannot drift from it). Shapes
and counts need no numbers: `meta_network` builds the network on the meta device, without
allocating its weights (any class count can be counted)."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from alexnet_cli.config import ModelConfig
from alexnet_cli.model import AlexNet

# Stages in the order of the forward pass; parameter-free stages appear only when present.
STAGES = ("conv1", "lrn1", "pool1", "conv2", "lrn2", "rnorm2", "pool2", "conv3", "conv4", "conv5",
          "pool5", "fc6", "fc7", "fc8")
MAX_CPU_WEIGHTS = 1 << 27     # _forward: the most weights of a layer run on the CPU (fc6 has 37.7 M; 512 MiB)


@dataclass(frozen=True)
class LayerRow:
    name: str
    kind: str
    output_shape: tuple[int, ...]
    neurons: int    # output elements per image
    params: int


def meta_network(config: ModelConfig) -> AlexNet:
    """The network of `config` with shapes but no storage, for `summarize`."""
    with torch.device("meta"):
        return AlexNet(config=config)


def summarize(model: AlexNet) -> list[LayerRow]:
    """One row per layer of `model`, from a forward pass of one 224x224 image."""
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
            _forward(model, torch.zeros(1, 3, 224, 224))
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
                             sum(p.numel() for p in module.parameters())))
    return rows


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
