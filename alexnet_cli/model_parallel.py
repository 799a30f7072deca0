"""The paper's two-GPU scheme (section 4.2, figure 2): model parallelism by columns.

Column A lives on one device and column B on another. Each holds half the kernels of every
layer (and half the neurons of each fully connected layer); they exchange activations only
where the paper's figure draws connections across the GPUs: into conv3 and into each fully
connected layer. Everything else stays on its own device.

The single-device network is the same function: in `AlexNet` the column split is groups=2
in conv2, conv4 and conv5, channel order [A, B]. Every parameter of the single-device net is
the concatenation along dim 0 (output units) of column A's and column B's, so
`single_state_dict()` / `load_single_state_dict()` convert losslessly, and checkpoints always
hold the single-device layout.
"""

from __future__ import annotations

import torch
from torch import nn

from alexnet_cli.errors import UsageError
from alexnet_cli.model import LAYERS, AlexNet, stage_modules


def _split_sizes(n: int) -> list[int]:
    return [(n + 1) // 2, n // 2]


def _column_layer(layer: nn.Module, i: int, grouped: bool) -> nn.Module:
    """Column i's half of `layer` (output units split in two; a grouped conv also keeps only
    its own half of the inputs), holding a copy of those weights."""
    n_out = layer.weight.shape[0]
    lo = sum(_split_sizes(n_out)[:i])
    hi = lo + _split_sizes(n_out)[i]
    if isinstance(layer, nn.Conv2d):
        in_ch = layer.in_channels // 2 if grouped else layer.in_channels
        half = nn.Conv2d(in_ch, hi - lo, layer.kernel_size, layer.stride, layer.padding)
    else:
        half = nn.Linear(layer.in_features, hi - lo)
    with torch.no_grad():
        half.weight.copy_(layer.weight[lo:hi])
        half.bias.copy_(layer.bias[lo:hi])
    return half


class Column(nn.Module):
    """One GPU's half of the network. It has the attribute names of AlexNet, so AlexNet's own
    stage functions (conv_block1, conv_block2) run on it unchanged."""

    def __init__(self, model: AlexNet, i: int):
        super().__init__()
        self.config = model.config
        self.conv1_pad = model.conv1_pad
        for name in LAYERS:
            setattr(self, name, _column_layer(getattr(model, name), i, grouped=name in ("conv2", "conv4", "conv5")))
        for name, module in stage_modules(model.config, groups=1).items():
            setattr(self, name, module)

    conv_block1 = AlexNet.conv_block1
    conv_block2 = AlexNet.conv_block2


class ColumnParallelAlexNet(nn.Module):
    """AlexNet split over two devices as in the paper. `forward` returns logits on device A."""

    def __init__(self, model: AlexNet, devices: tuple[str | torch.device, str | torch.device]):
        super().__init__()
        if model.config.columns != 2:
            raise UsageError("parallel model needs the two-column network; `columns` 1 trains on one device",
                             field="parallel", value="model", mentions=("columns",))
        self.config = model.config
        self.devices = tuple(torch.device(d) for d in devices)
        self.a = Column(model, 0).to(self.devices[0])
        self.b = Column(model, 1).to(self.devices[1])

    def _both(self, xa: torch.Tensor, xb: torch.Tensor, fn) -> tuple[torch.Tensor, torch.Tensor]:
        return fn(self.a, xa), fn(self.b, xb)

    def _exchange(self, xa: torch.Tensor, xb: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Each column gets both columns' activations, [A, B] in channel order."""
        da, db = self.devices
        return torch.cat([xa, xb.to(da, non_blocking=True)], 1), torch.cat([xa.to(db, non_blocking=True), xb], 1)

    def _fc7(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Each column's half of fc7 after its ReLU: (B, 2048) on A and (B, 2048) on B."""
        da, db = self.devices
        a, b = self._both(x.to(da), x.to(db), lambda c, t: c.conv_block2(c.conv_block1(t)))  # (B, 128, 13, 13) each
        a, b = self._exchange(a, b)                                                          # (B, 256, 13, 13) each
        a, b = self._both(a, b, lambda c, t: c.act(c.conv4(c.act(c.conv3(t)))))             # (B, 192, 13, 13)
        a, b = self._both(a, b, lambda c, t: torch.flatten(c.pool5(c.act(c.conv5(t))), 1))  # (B, 4608)
        a, b = self._exchange(a, b)                                                          # (B, 9216)
        a, b = self._both(a, b, lambda c, t: c.drop6(c.act(c.fc6(t))))                      # (B, 2048)
        a, b = self._exchange(a, b)                                                          # (B, 4096)
        return self._both(a, b, lambda c, t: c.act(c.fc7(t)))                               # (B, 2048)

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        a, b = self._fc7(x)
        return torch.cat([a, b.to(self.devices[0])], 1)                                      # (B, 4096) on A

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # each fc7 unit is dropped once, on its own column, before both halves of fc8 see it
        a, b = self._both(*self._fc7(x), lambda c, t: c.drop7(t))                           # (B, 2048)
        a, b = self._exchange(a, b)                                                          # (B, 4096)
        a, b = self._both(a, b, lambda c, t: c.fc8(t))                                      # (B, ~C/2)
        return torch.cat([a, b.to(self.devices[0])], 1)                                      # (B, C) on A

    def named_param_lists(self) -> dict[str, list[nn.Parameter]]:
        """Single-device parameter name -> [column A's part, column B's part]."""
        return {f"{layer}.{kind}": [getattr(getattr(col, layer), kind) for col in (self.a, self.b)]
                for layer in LAYERS for kind in ("weight", "bias")}

    def single_state_dict(self) -> dict[str, torch.Tensor]:
        return {name: torch.cat([p.detach().cpu() for p in parts])
                for name, parts in self.named_param_lists().items()}

    @torch.no_grad()
    def load_single_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        for name, parts in self.named_param_lists().items():
            for p, chunk in zip(parts, torch.split(state[name], [q.shape[0] for q in parts])):
                p.copy_(chunk)
