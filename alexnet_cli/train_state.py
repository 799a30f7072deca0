"""A run's training state besides its weights and velocities: where it stands (`Position`),
the statistics of the epoch so far (`EpochStats`), the schedule and the best error seen
(`TrainingState`, the "trainer" section of last.pt); and the checks that a checkpoint may be
resumed with the settings and the data given now (`check_resumable`, `inputs_key`).

No random-number state is kept: the loader's order is drawn from (seed, epoch) and each step's
augmentation and dropout masks from (seed, rank, epoch, batch) (train.step_seed), so the
position alone says what comes next. docs/formats.md lists the fields; docs/training.md,
"Checkpoints and resuming", the rules.
"""

from __future__ import annotations

import hashlib
import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist

from alexnet_cli.config import ModelConfig, TrainConfig, recorded_settings, unknown_settings
from alexnet_cli.distributed import DistInfo
from alexnet_cli.errors import AlexnetError, CheckpointError
from alexnet_cli.metrics import TopKCounts, TopKMeter
from alexnet_cli.schedule import Schedule
from alexnet_cli.shards import Manifest, data_key


@dataclass
class Position:
    """Where a run stands: the next batch to train is `batch` of `epoch`; `step` were done."""
    epoch: int = 0
    batch: int = 0
    step: int = 0

    def where(self) -> str:
        """The position in words, epochs counted from 1: `after epoch 2` at an epoch's end,
        else `in epoch 3, batch 5` (5 batches of it done)."""
        return f"after epoch {self.epoch}" if self.batch == 0 else f"in epoch {self.epoch + 1}, batch {self.batch}"


class EpochStats:
    """Training statistics kept on the device (no per-step sync): top-1/top-5 hits of the epoch,
    the loss summed over the current log interval, a non-finite flag.

    Under DDP each rank counts its own slice of every batch, and every rank must end the epoch
    with the same numbers (its schedule watches them). One rule does it: the counts are summed
    over the ranks wherever they leave a rank. `epoch_result` sums them at the epoch's end;
    `state_dict` writes the sums so far into a checkpoint; `load_state_dict` gives those sums to
    rank 0 and zero to the others, so that a resumed epoch ends with the same sums as one never
    interrupted. Both sums are collectives: every rank calls them."""

    def __init__(self, num_classes: int, device: torch.device, ranks: DistInfo = DistInfo()):
        self.meter = TopKMeter(num_classes, device)
        self.device, self.ranks = device, ranks
        self.loss_sum = torch.zeros((), device=device)
        self.bad = torch.zeros((), dtype=torch.bool, device=device)
        self.chance_steps, self.warned = 0, False
        self.t_interval = self.t_epoch = time.perf_counter()
        self.timed_steps = 0          # steps since t_interval (after a resume, fewer than the interval's)
        self.loss_steps: int | None = 0   # the steps loss_sum holds (None: read from a checkpoint without it)

    def update(self, logits: torch.Tensor, labels: torch.Tensor, loss: torch.Tensor) -> None:
        self.meter.update(logits.float(), labels.to(logits.device))
        self.loss_sum += loss.to(self.device)
        self.bad |= ~torch.isfinite(loss.to(self.device))
        self.timed_steps += 1
        self.loss_steps = (self.loss_steps or 0) + 1

    def interval(self, batch_size: int) -> tuple[float, int, float]:
        """The mean loss of the interval's steps, their number, and images/s (of the steps this
        process timed: a resumed interval's first steps ran before the checkpoint); starts the
        next interval."""
        steps = max(self.loss_steps or 0, 1)
        loss = self.loss_sum.item() / steps                                  # host sync
        now = time.perf_counter()
        rate = max(self.timed_steps, 1) * batch_size / max(now - self.t_interval, 1e-9)
        self.loss_sum.zero_()
        self.t_interval, self.timed_steps, self.loss_steps = now, 0, 0
        return loss, steps, rate

    def note_chance(self, loss: float, chance: float, steps: int) -> int:
        """Steps in a row with the loss at chance level; 0 once warned or when learning."""
        self.chance_steps = self.chance_steps + steps if abs(loss - chance) < 0.05 * chance else 0
        return 0 if self.warned else self.chance_steps

    def epoch_result(self) -> TopKCounts:
        """The epoch's top-1/top-5 counts, summed over the ranks (host sync)."""
        if self.ranks.world_size > 1:
            self.meter.all_reduce()
        return self.meter.result()

    def epoch_time(self) -> float:
        return time.perf_counter() - self.t_epoch

    def reset(self) -> None:
        self.meter.counts.zero_()
        self.t_epoch = self.t_interval = time.perf_counter()
        self.timed_steps = 0

    def state_dict(self) -> dict[str, Any]:
        counts = self.meter.counts
        if self.ranks.world_size > 1:
            counts = counts.clone()
            dist.all_reduce(counts, op=dist.ReduceOp.SUM)
        return {"counts": counts.cpu(), "loss_sum": self.loss_sum.cpu(), "loss_steps": self.loss_steps,
                "chance_steps": self.chance_steps, "warned": self.warned, "epoch_time_s": self.epoch_time()}

    def load_state_dict(self, d: dict[str, Any]) -> None:
        self.meter.counts.copy_(d["counts"])
        if not self.ranks.is_main:
            self.meter.counts.zero_()
        self.loss_sum.copy_(d["loss_sum"])
        self.loss_steps = d.get("loss_steps")       # None in older checkpoints: the trainer works it out
        self.chance_steps, self.warned = int(d["chance_steps"]), bool(d["warned"])
        # the epoch's time so far (0 in checkpoints older than the key): a resumed epoch's time_s
        # counts its training before the save as well as after the resume
        self.t_epoch = time.perf_counter() - float(d.get("epoch_time_s", 0.0))
        self.t_interval, self.timed_steps = time.perf_counter(), 0


class TrainingState:
    """Everything last.pt's "trainer" section holds: the position, the schedule's state, the
    best error so far and the step of the weights best.pt holds, and the epoch's statistics (with
    the length of metrics.jsonl, which the run folder keeps); and the step of the last checkpoint
    written or read."""

    def __init__(self, schedule: Schedule, stats: EpochStats):
        self.pos = Position()
        self.schedule, self.stats = schedule, stats
        self.best_top1 = math.inf             # the error of the weights in best.pt (the best epoch's)
        self.best_step: int | None = None     # their step (None: no best.pt yet, or a checkpoint older than this)
        self.saved_step: int | None = None

    def state_dict(self, metrics_offset: int) -> dict[str, Any]:
        """The "trainer" section; every rank calls it (the counts are summed over the ranks)."""
        return {"epoch": self.pos.epoch, "batch": self.pos.batch, "step": self.pos.step,
                "schedule": self.schedule.state_dict(), "best_top1": self.best_top1, "best_step": self.best_step,
                "stats": self.stats.state_dict(), "metrics_offset": metrics_offset}

    def load_state_dict(self, t: dict[str, Any]) -> int:
        """Continue from a "trainer" section; returns the length metrics.jsonl had then."""
        self.pos.epoch, self.pos.batch, self.pos.step = int(t["epoch"]), int(t["batch"]), int(t["step"])
        self.saved_step = self.pos.step
        self.schedule.load_state_dict(t["schedule"])
        self.best_top1 = float(t["best_top1"])
        self.best_step = None if t.get("best_step") is None else int(t["best_step"])
        self.stats.load_state_dict(t["stats"])
        return int(t["metrics_offset"])


def inputs_key(manifest: Manifest, val_split: str | None, mean_image: torch.Tensor,
               pca: tuple[torch.Tensor, torch.Tensor] | None) -> dict[str, str | None]:
    """Keys naming everything read from DATA that changes the weights: the training shards,
    the validation shards (they steer the plateau schedule), the mean image and the PCA
    (None when unused). --resume compares them with the checkpoint's."""
    pca_key = None
    if pca is not None:
        pca_key = hashlib.sha256(b"".join(t.numpy().tobytes() for t in pca)).hexdigest()[:16]
    return {"data_key": data_key(manifest, "train"),
            "val_key": None if val_split is None else data_key(manifest, val_split),
            "mean_key": hashlib.sha256(mean_image.numpy().tobytes()).hexdigest()[:16],
            "pca_key": pca_key}


def check_resumable(path: Path, ckpt: dict[str, Any], now: dict[str, Any], *, other_epochs: bool = True) -> None:
    """Refuse to continue from `ckpt` (read from `path`) what would not end as the run it
    began: a checkpoint without training state, other model or training settings, other data,
    another seed, decoder or number of processes. `now` is the config.json this run writes.
    `other_epochs`: `epochs` was chosen, and may take a plateau run on (or end it sooner)."""
    if not isinstance(ckpt.get("optimizer"), dict) or not isinstance(ckpt.get("trainer"), dict):
        raise CheckpointError(f"{path} holds weights but no training state (a best.pt, or a checkpoint for eval "
                              "and predict), so it cannot be resumed: start a new `out`", mentions=("out",))
    saved = ckpt.get("config") or {}
    for part, kind in (("model", ModelConfig), ("train", TrainConfig)):
        unknown = unknown_settings(saved.get(part, {}), kind)
        if unknown:                  # settings a newer version trained with: this one would drop them
            raise CheckpointError(f"{path} was trained with {part} settings this version does not know "
                                  f"({', '.join(unknown)}): it was probably written by a newer alexnet-cli; "
                                  "upgrade alexnet-cli to resume it")
    parts, said = [], []       # every differing setting at once, with the value the run has (text, mention)
    too_short = None
    for part, kind in (("model", ModelConfig), ("train", TrainConfig)):
        before = recorded_settings(saved.get(part, {}), kind())    # a field newer than the run: its value then
        if part == "train" and other_epochs:
            too_short = _too_short(before, now["train"], ckpt["trainer"])
            if too_short is None and _plateau_length(before, now["train"]):
                before["epochs"] = now["train"]["epochs"]
        diff = [_setting(k, before[k], v) if k != "epochs" or too_short is None else (f"it {too_short}", "epochs")
                for k, v in sorted(now[part].items()) if before[k] != v]
        parts += [part] if diff else []
        said += diff
    if too_short is not None and len(said) == 1:
        raise AlexnetError(f"{path} {too_short}", mentions=("epochs",))
    if said:
        raise AlexnetError(f"{path} was trained with other {' and '.join(parts)} settings "
                           f"({'; '.join(t for t, _ in said)}); resume with the same arguments, or start a new `out`",
                           mentions=("out", *(m for _, m in said)))
    for key, what in (("data_key", "the training shards"), ("val_key", f"the '{now['run']['val_split']}' shards"),
                      ("mean_key", "the mean image"), ("pca_key", "the PCA (pca.json)")):
        if key in saved and saved[key] != now[key]:         # a key older runs lack is not checked
            raise AlexnetError(f"{path} was trained on other data ({_what_differs(what, saved, now)}); resume "
                               "with the same DATA, or start a new `out`", mentions=("out",))
    run = saved.get("run", {})
    for what, mentions, before, current in (
            ("`seed`", ("seed", "out"), run.get("seed"), now["run"]["seed"]),
            ("`decode`", ("decode", "out"), run.get("decode"), now["run"]["decode"]),   # nvJPEG's pixels differ
            ("number of processes", ("out",), saved.get("world_size"), now["world_size"])):
        if before is not None and before != current:        # the CLI shows the settings' flags
            raise AlexnetError(f"{path} was trained with {what} {before}, not {current}; resume with the same "
                               "arguments, or start a new `out`", mentions=mentions)


def _plateau_length(before: dict[str, Any], now: dict[str, Any]) -> bool:
    """Whether the run may go on to another `epochs`: under the plateau schedule `epochs` only
    says where the run stops (a finished run trains on, exactly as one given the new `epochs` from
    the start). The code's schedules place their drops by `epochs`: another value is another run."""
    return before["epochs"] != now["epochs"] and before["lr_schedule"] == now["lr_schedule"] == "plateau"


def _too_short(before: dict[str, Any], now: dict[str, Any], trainer: dict[str, Any]) -> str | None:
    """Why a plateau run cannot take `now`'s `epochs`: one behind where the run stands would have
    ended it before (None when it can, or when `epochs` is not a plateau run's length)."""
    pos = Position(int(trainer.get("epoch", 0)), int(trainer.get("batch", 0)))
    begun = pos.epoch + (1 if pos.batch else 0)
    if not _plateau_length(before, now) or now["epochs"] >= begun:
        return None
    return f"stands {pos.where()}: `epochs` {now['epochs']} would have ended it before; give {begun} or more to continue it"


def as_given(name: str, value: Any) -> tuple[str, str]:
    """A setting as the argument that gives it ("`pool` 2", an on/off one "`lrn=False`": the
    CLI's --pool 2, --no-lrn), and the name it mentions."""
    if isinstance(value, bool):
        mention = name if value else f"{name}=False"
        return f"`{mention}`", mention
    return f"`{name}` {value}", name


def _setting(name: str, run: Any, now: Any) -> tuple[str, str]:
    """A setting the run had as `run`, given as `now`: "`name` run, not now", or for an on/off
    setting the run's state alone, as the argument that sets it; and the name it mentions."""
    text, mention = as_given(name, run)
    return (text if isinstance(run, bool) else f"{text}, not {now}"), mention


def _what_differs(what: str, saved: dict[str, Any], now: dict[str, Any]) -> str:
    """Why `what` (e.g. "the training shards") differs, from what the run recorded (DATA as it
    was at its last save, and the resolved decoder: none for raw shards): DATA's folder changed
    content, or it is another folder, of another format where that differs."""
    before, current = saved.get("data"), now["data"]
    if what.startswith("the PCA") and _pca_elsewhere(saved, now):
        was, given = saved.get("run", {}).get("pca_file"), now["run"]["pca_file"]
        return (f"the PCA in {given} is not the one it trained with" + (f" (from {was})" if was and was != given else ""))
    if before is None or Path(before).resolve() == Path(current).resolve():
        return f"{what} in {current} changed since the run began"
    formats = [_shard_format(r.get("run", {}).get("decode")) for r in (saved, now)]
    if None not in formats and formats[0] != formats[1]:
        return f"it last trained on {before} ({formats[0]} shards), not {current} ({formats[1]} shards)"
    verb = "differ" if what.endswith("shards") else "differs"
    return f"it last trained on {before}, not {current}, whose {what.removeprefix('the ')} {verb}"


def _pca_elsewhere(saved: dict[str, Any], now: dict[str, Any]) -> bool:
    """Whether the run's PCA or this start's came from a file of its own (`--pca FILE`), not DATA's pca.json."""
    def elsewhere(config: dict[str, Any]) -> bool:
        given, data = config.get("run", {}).get("pca_file"), config.get("data")
        return given is not None and data is not None and Path(given).resolve() != (Path(data) / "pca.json").resolve()
    return now["run"].get("pca_file") is not None and (elsewhere(saved) or elsewhere(now))


def _shard_format(decode: Any) -> str | None:
    """The shards' format as the run's resolved decoder tells it (None: not recorded)."""
    return {"none": "raw", "cpu": "jpeg", "gpu": "jpeg"}.get(decode) if isinstance(decode, str) else None
