"""The network as the training loop sees it, in each of the three ways to run (`--parallel`):

- "single": the whole network on one device, the column split as grouped convolutions;
- "model":  the paper's two columns on two devices (model_parallel.py);
- "data":   one copy per process under torchrun, kept equal by DDP (distributed.py).

Every replica offers the same few things, so that the loop, the NaN guard and the checkpoint
code never ask which one they hold:

- `module`: what a training step calls (the network, wrapped by DDP, or compiled);
- `net`: the network itself, for evaluation and the check of its outputs;
- `named_param_lists()`: single-device parameter name -> the tensors that hold it (one, or
  column A's and column B's parts), for the optimizer's groups and the weights' check;
- `state_dict()` / `load_state_dict()`: the weights in the single-device layout on the CPU,
  which is what checkpoints hold whatever the mode.

`place` resolves where a run's replica lives (its devices, its rank) and joins the process
group in data-parallel mode; `make_replica` builds the replica there.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from alexnet_cli.devices import resolve_device
from alexnet_cli import distributed
from alexnet_cli.distributed import DistInfo
from alexnet_cli.errors import UsageError
from alexnet_cli.model import AlexNet
from alexnet_cli.model_parallel import ColumnParallelAlexNet


@dataclass(frozen=True)
class Placement:
    """Where a run's replica lives: its devices (model parallel: column A's, then column B's)
    and its place among the processes (rank 0 of 1 outside torchrun)."""
    devices: tuple[torch.device, ...]
    dist: DistInfo

    @property
    def device(self) -> torch.device:
        """Where batches go and the logits come back (column A's device in model mode)."""
        return self.devices[0]


def place(mode: str, device: str | None, devices: tuple[str, ...], batch_size: int) -> Placement:
    """The devices of a run in `mode` (train.resolve_parallel); in data mode this joins the
    process group torchrun set up, and each process takes its own GPU. `devices` are model
    mode's only: given to another mode (`--parallel single`, or auto under torchrun, which is
    data) they are refused, not ignored."""
    if mode == "model":
        if len(devices) != 2:
            raise UsageError("parallel model needs two devices: `devices` cuda:0,cuda:1 (or cpu,cpu)",
                             field="parallel", value=mode, mentions=("devices",))
        return Placement(tuple(resolve_device(d) for d in devices), DistInfo())
    if devices:          # given and unused, they were ignored without a word: the run was not where asked
        raise UsageError(f"devices is for `parallel` model (one device per column); this run is {mode} "
                         "(use `device` for a single or data parallel run)", field="devices", value=devices,
                         mentions=("parallel", "device"))
    dev = resolve_device(device)
    if mode != "data":
        return Placement((dev,), DistInfo())
    if not distributed.launched_by_torchrun():
        raise UsageError("parallel data runs under torchrun with several processes, e.g. "     # a command to run
                         "torchrun --nproc_per_node 8 -m alexnet_cli train DATA --out RUN --parallel data",
                         field="parallel", value=mode)
    info = distributed.init_distributed(dev.type)
    if dev.type == "cuda":
        dev = torch.device("cuda", info.local_rank)
    if batch_size % info.world_size:
        raise UsageError(f"batch_size {batch_size} is the global batch; it must divide "
                         f"by the {info.world_size} processes", field="batch_size", value=batch_size)
    return Placement((dev,), info)


class Replica:
    """The interface the trainer uses (see the module's docstring)."""

    net: nn.Module
    module: nn.Module

    def named_param_lists(self) -> dict[str, list[nn.Parameter]]:
        raise NotImplementedError

    def state_dict(self) -> dict[str, torch.Tensor]:
        raise NotImplementedError

    def load_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        raise NotImplementedError


class SingleDeviceReplica(Replica):
    """The whole network on one device."""

    def __init__(self, model: AlexNet, device: torch.device, *, channels_last: bool = False):
        model.to(device)
        if channels_last:                    # NHWC activations: faster convolutions on CUDA
            model.to(memory_format=torch.channels_last)
        self.net = self.module = model

    def named_param_lists(self) -> dict[str, list[nn.Parameter]]:
        return {n: [p] for n, p in self.net.named_parameters()}

    def state_dict(self) -> dict[str, torch.Tensor]:
        return {k: v.detach().cpu() for k, v in self.net.state_dict().items()}

    def load_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        self.net.load_state_dict(state)


class DataParallelReplica(SingleDeviceReplica):
    """This process's copy of the network; DDP averages the gradients over the processes in
    backward (and gave every rank rank 0's weights when it was built)."""

    def __init__(self, model: AlexNet, device: torch.device, *, channels_last: bool = False):
        super().__init__(model, device, channels_last=channels_last)
        ids = [device.index] if device.type == "cuda" else None
        self.module = nn.parallel.DistributedDataParallel(model, device_ids=ids)


class ModelParallelReplica(Replica):
    """Column A on one device and column B on another (the weights are copied from `model`)."""

    def __init__(self, model: AlexNet, devices: tuple[torch.device, torch.device]):
        self.net = self.module = ColumnParallelAlexNet(model, devices)

    def named_param_lists(self) -> dict[str, list[nn.Parameter]]:
        return self.net.named_param_lists()

    def state_dict(self) -> dict[str, torch.Tensor]:
        return self.net.single_state_dict()

    def load_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        self.net.load_single_state_dict(state)


def make_replica(mode: str, model: AlexNet, where: Placement, *, channels_last: bool = False) -> Replica:
    """`model` (built on the CPU) as a replica of `mode`, on `where`'s devices. channels_last
    applies to the one-device modes."""
    if mode == "model":
        return ModelParallelReplica(model, where.devices)
    if mode == "data":
        return DataParallelReplica(model, where.device, channels_last=channels_last)
    return SingleDeviceReplica(model, where.device, channels_last=channels_last)
