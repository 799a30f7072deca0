"""Learning-rate schedules: the paper's plateau rule and the released code's fixed drops.

Paper section 6: "divide the learning rate by 10 when the validation error rate stopped
improving with the current learning rate ... reduced three times prior to termination".
The paper does not say how long "stopped improving" is: `plateau_patience` epochs without a
new best validation top-1 error (default 2; docs/training.md). Nor which best "with the current
learning rate" means: `plateau_best` "run" (default) counts an epoch as improving when it beats
the best of the whole run so far; "since-drop" when it beats the best since the last drop (the
best is forgotten at each drop, so the first epoch at a new rate always improves). They differ
when the error after a drop stays above the run's best: "run" drops again every
`plateau_patience` epochs until it is beaten (tests/test_schedule.py has an example).

The code (layers/layer-params-145.cfg, the notes at its end; the ILSVRC-2012 run): weights
0.01, 0.001 from epoch 25, 1e-4 from 51; conv1 1e-5 and colour noise off from 67; conv1 frozen
(weights and biases) from 72; all other weights 1e-5 from 79; stopped after 91 epochs. Biases
keep 2 x 0.01 = 0.02 throughout. `code2010` is the ILSVRC-2010 run (23/51/68/72/78, 93 epochs).
Epochs count from 0 here ("from epoch 25": the 26th epoch on); `code_epoch_base=1` reads the
notes' numbers as counted from 1 instead (the release cannot settle it: docs/paper-vs-code.md).
Choosing either without `epochs` trains for the run's length (config.SCHEDULE_EPOCHS); with
`epochs` != that length each boundary e becomes round(e * epochs / length).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from alexnet_cli.config import SCHEDULE_EPOCHS, TrainConfig
from alexnet_cli.optim import base_lr

# (weights 0.001 from, 1e-4 from, conv1 1e-5 + noise off from, conv1 frozen from, rest 1e-5 from);
# each run's length is config.SCHEDULE_EPOCHS (91 and 93)
CODE_RUNS = {"code": (25, 51, 67, 72, 79), "code2010": (23, 51, 68, 72, 78)}


@dataclass
class Rates:
    """What one epoch trains with: a rate per parameter name, and whether colour noise is on."""
    lr: dict[str, float]
    color_noise: bool


@dataclass
class PlateauState:
    best: float = float("inf")          # the error an epoch must beat (plateau_best: since when)
    bad_epochs: int = 0
    drops: int = 0
    history: list[dict] = field(default_factory=list)   # one entry per drop: epoch, new scale


class Schedule:
    """`rates(epoch)` before an epoch; `observe(epoch, val_top1)` after it (plateau only)."""

    def __init__(self, cfg: TrainConfig, names: list[str]):
        self.cfg, self.names = cfg, list(names)
        self.state = PlateauState()

    def rates(self, epoch: int) -> Rates:
        if self.cfg.lr_schedule == "plateau":
            scale = 0.1 ** self.state.drops
            return Rates({n: base_lr(n, self.cfg) * scale for n in self.names}, color_noise=True)
        return self._code_rates(epoch)

    def _code_rates(self, epoch: int) -> Rates:
        bounds, length = CODE_RUNS[self.cfg.lr_schedule], SCHEDULE_EPOCHS[self.cfg.lr_schedule]
        base_epoch = self.cfg.code_epoch_base          # 1: the notes count epochs from 1
        e1, e2, e3, e4, e5 = (round((b - base_epoch) * self.cfg.epochs / length) for b in bounds)
        base = self.cfg.lr
        weights = base if epoch < e1 else base / 10 if epoch < e2 else base / 100 if epoch < e5 else base / 1000
        lr = {}
        for n in self.names:
            if n.startswith("conv1.") and epoch >= e4:
                lr[n] = 0.0                                  # conv1 frozen, weights and biases
            elif n.endswith(".bias"):
                lr[n] = base_lr(n, self.cfg)                 # the code never lowers the biases' rate
            elif n.startswith("conv1.") and epoch >= e3:
                lr[n] = base / 1000
            else:
                lr[n] = weights
        return Rates(lr, color_noise=epoch < e3)

    def observe(self, epoch: int, val_top1: float) -> bool:
        """Record an epoch's validation top-1 error; True when the rate was just divided by 10."""
        if self.cfg.lr_schedule != "plateau":
            return False
        s = self.state
        if val_top1 < s.best - 1e-12:
            s.best, s.bad_epochs = val_top1, 0
            return False
        s.bad_epochs += 1
        if s.bad_epochs >= self.cfg.plateau_patience and s.drops < self.cfg.max_lr_drops:
            s.drops += 1
            s.bad_epochs = 0
            if self.cfg.plateau_best == "since-drop":
                s.best = float("inf")        # the epochs at the new rate start their own best
            s.history.append({"epoch": epoch, "scale": 0.1 ** s.drops})
            return True
        return False

    def state_dict(self) -> dict:
        s = self.state
        return {"best": s.best, "bad_epochs": s.bad_epochs, "drops": s.drops, "history": list(s.history)}

    def load_state_dict(self, d: dict) -> None:
        self.state = PlateauState(float(d["best"]), int(d["bad_epochs"]), int(d["drops"]), list(d["history"]))
