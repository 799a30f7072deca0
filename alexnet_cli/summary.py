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
            model(torch.zeros(1, 3, 224, 224, device=next(model.parameters()).device))
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


def _prod(shape: tuple[int, ...]) -> int:
    n = 1
    for s in shape:
        n *= s
    return n
