"""The paper's update rule (section 6) and the parameter groups of both recipes.

The paper writes momentum SGD with the learning rate and the weight decay INSIDE the velocity:

    v <- 0.9 v - 0.0005 * lr * w - lr * grad        w <- w + v

torch.optim.SGD keeps the learning rate outside: b <- 0.9 b + (grad + 0.0005 w), w <- w - lr b.
With a constant lr the two are the same (v = -lr b). When the lr drops they differ: torch's
buffer b is rescaled by the NEW lr at the next step, so the momentum carried over shrinks at
once by 10x; the paper's v keeps the velocity accumulated at the old rate, which decays as
0.9^t over the next steps. `PaperSGD` implements the paper's rule exactly, with torch's
`_foreach` kernels so that it costs the same as SGD(foreach=True). A group whose learning rate
is 0 is frozen: the released code then skips the layer's update entirely (its weights and
velocity stay exactly as they are), and so does `PaperSGD`.

Its state is one velocity tensor per parameter, stored by parameter NAME (`velocity_state`),
in the single-device layout, so a checkpoint resumes in any parallel mode.
"""

from __future__ import annotations

import torch
from torch import nn

from alexnet_cli.config import TrainConfig


class PaperSGD(torch.optim.Optimizer):
    """v <- momentum * v - lr * (weight_decay * w + grad);  w <- w + v   (paper section 6)."""

    def __init__(self, params, lr: float, momentum: float = 0.9, weight_decay: float = 5e-4):
        super().__init__(params, dict(lr=lr, momentum=momentum, weight_decay=weight_decay))

    @torch.no_grad()
    def step(self, closure=None):
        # the groups are per parameter name (the schedule sets each one's rate); groups with the
        # same hyperparameters are updated together: 4 foreach calls for each distinct
        # (lr, weight decay, momentum), instead of 4 per parameter tensor
        buckets: dict[tuple[float, float, float], tuple[list, list, list]] = {}
        for group in self.param_groups:
            key = (group["lr"], group["weight_decay"], group["momentum"])
            params, grads, velocities = buckets.setdefault(key, ([], [], []))
            for p in group["params"]:
                if p.grad is None:
                    continue
                state = self.state[p]
                if "velocity" not in state:
                    state["velocity"] = torch.zeros_like(p, memory_format=torch.preserve_format)
                params.append(p)
                grads.append(p.grad)
                velocities.append(state["velocity"])
        for (lr, wd, mom), (params, grads, velocities) in buckets.items():
            if not params or lr == 0.0:      # a frozen layer (the code's conv1 from epoch 72) is not
                continue                     # updated at all: no momentum step, no decay (its velocity kept)
            torch._foreach_mul_(velocities, mom)                          # v <- m v
            if wd != 0.0:
                torch._foreach_add_(velocities, params, alpha=-lr * wd)   # v -= lr wd w
            torch._foreach_add_(velocities, grads, alpha=-lr)             # v -= lr grad
            torch._foreach_add_(params, velocities)                       # w <- w + v
        return None


def param_groups(named_params: dict[str, list[nn.Parameter]], cfg: TrainConfig) -> list[dict]:
    """One group per parameter name (`conv1.weight`, `conv1.bias`, ...), so the schedule can set
    each layer's rate (the code freezes conv1 alone). `named_params` maps a single-device name to
    the tensors that hold it (one, or one per column in model-parallel mode). Biases get
    `bias_lr_mult` x the rate and no weight decay when `bias_weight_decay` is off (the code)."""
    groups = []
    for name, tensors in named_params.items():
        is_bias = name.endswith(".bias")
        groups.append({
            "params": tensors, "name": name,
            "lr": base_lr(name, cfg),
            "momentum": cfg.momentum,
            "weight_decay": 0.0 if (is_bias and not cfg.bias_weight_decay) else cfg.weight_decay,
        })
    return groups


def base_lr(name: str, cfg: TrainConfig) -> float:
    return cfg.lr * (cfg.bias_lr_mult if name.endswith(".bias") else 1.0)


def velocity_state(optimizer: PaperSGD) -> dict[str, torch.Tensor]:
    """The velocities by single-device parameter name, on the CPU. A name held by several
    tensors (the two columns' parts, model parallel) is their concatenation along dim 0, the
    output units: the single-device layout (model_parallel.py)."""
    out = {}
    for group in optimizer.param_groups:
        vs = [optimizer.state[p]["velocity"] if "velocity" in optimizer.state[p] else torch.zeros_like(p)
              for p in group["params"]]
        out[group["name"]] = torch.cat([v.detach().cpu() for v in vs])
    return out


def load_velocity_state(optimizer: PaperSGD, state: dict[str, torch.Tensor]) -> None:
    """Inverse of velocity_state: each single-device tensor is cut along dim 0 into the
    group's tensors (one, or column A's and column B's parts)."""
    for group in optimizer.param_groups:
        if group["name"] not in state:
            continue
        parts = torch.split(state[group["name"]], [p.shape[0] for p in group["params"]])
        for p, v in zip(group["params"], parts):
            optimizer.state[p]["velocity"] = v.to(device=p.device, dtype=p.dtype).clone()
