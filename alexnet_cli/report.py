"""`alexnet report`: training runs side by side, from what each run folder records
(config.json and metrics.jsonl, runlog.py), and their learning curves as one picture.

One `RunReport` per run folder: the recipe and the settings that differ from it, epochs done,
the split it validated on (none: it watched its training error), the best and last validation
errors, the epochs after which the learning rate was divided, the median throughput, the
training time and the run's state. `plot_runs` draws the training
loss against steps and the training and validation top-1 error against epochs, every run
overlaid, with matplotlib's Agg renderer (no screen needed).

A run still being written is fine: a partial last line of metrics.jsonl is left out.
"""

from __future__ import annotations

import io
import json
import statistics
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

from alexnet_cli.atomic import save_output
from alexnet_cli.config import RECIPE_NAMES, ModelConfig, settings_changed
from alexnet_cli.errors import AlexnetError, DataError, UsageError, shell_word
from alexnet_cli.figures import check_picture_path
from alexnet_cli.paths import check_output, path_list
from alexnet_cli.locks import CommandLock
from alexnet_cli.runlog import PREPPED, RunFolder, read_config_json, read_metrics, what_is

STATES = ("running", "finished", "stopped", "diverged")
RUNNING_WITHIN_S = 120      # seconds: with no lock to ask (older runs), files changed this recently = training
# settings with a column of their own (epochs) or that follow the data (num_classes)
NOT_CHANGES = {"epochs", "num_classes"}


@dataclass
class RunReport:
    """What one run folder says about its run. Errors are fractions in [0, 1]."""

    name: str                               # the label in the table and the picture
    path: Path
    recipe: str
    changed: dict[str, Any]                 # settings that differ from the recipe's
    epochs_done: int
    epochs_total: int
    step: int                               # the last step logged
    best_epoch: int | None                  # the epoch of the lowest validation top-1 error
    best_val_top1_error: float | None
    best_val_top5_error: float | None       # at best_epoch
    last_val_top1_error: float | None
    last_val_top5_error: float | None
    last_train_top1_error: float | None
    val_split: str | None                   # the split validated on after each epoch; None: none (the
                                            # run watched its training error, which picked best.pt)
    lr_drops: list[int]                     # the epochs after which the rate was divided
    num_classes: int                        # fc8's outputs: at most 5 make the top-5 error trivial
    images_per_s: float | None              # median over the log intervals
    time_s: float                           # training time logged (validation and saves left out)
    state: str                              # one of STATES
    records: list[dict[str, Any]] = field(default_factory=list, repr=False)

    def to_json(self) -> dict[str, Any]:
        return {"run": self.name, "path": str(self.path), "recipe": self.recipe, "changed": self.changed,
                "epochs_done": self.epochs_done, "epochs": self.epochs_total, "step": self.step,
                "best_epoch": self.best_epoch, "best_val_top1_error": self.best_val_top1_error,
                "best_val_top5_error": self.best_val_top5_error,
                "last_val_top1_error": self.last_val_top1_error, "last_val_top5_error": self.last_val_top5_error,
                "last_train_top1_error": self.last_train_top1_error, "val_split": self.val_split,
                "lr_drops": self.lr_drops,
                "num_classes": self.num_classes, "images_per_s": self.images_per_s, "time_s": self.time_s,
                "state": self.state}

    def kind(self, kind: str) -> list[dict[str, Any]]:
        return [r for r in self.records if r.get("kind") == kind]


# the settings of config.json that report counts with: (section, name, least value); each a whole number
COUNTED_SETTINGS = (("train", "epochs", 1), ("train", "batch_size", 1), ("run", "log_every", 1),
                    ("model", "num_classes", 2))


def read_config(run_dir: Path) -> dict[str, Any]:
    """A run folder's config.json. A path that is not a folder, or a folder without config.json
    or checkpoints (a data folder, an ablation's folder), is not a run: a UsageError, the wrong
    kind of path (docs/public-surface.md: exit code 2). A damaged one (not JSON, its settings of
    the wrong type, lost beside the run's last.pt) is an error that names the file and what is wrong."""
    path = run_dir / "config.json"
    if not run_dir.is_dir():
        what = "does not exist" if not run_dir.exists() else f"is {what_is(run_dir)}"
        raise UsageError(f"{run_dir} {what}, not a training run's folder")
    last = RunFolder(run_dir).last
    if not path.is_file() and not last.is_file():
        what = what_is(run_dir)
        if (run_dir / "ablations.json").exists():
            hint = f"it is `alexnet ablate`'s folder: give its runs, e.g. {shell_word(run_dir / 'full')}"
        elif what == PREPPED:
            hint = f"`alexnet train {shell_word(run_dir)} --out RUN` trains one on it"
        else:
            hint = "`alexnet train --out RUN` makes one"
        what = "is not" if what == "a folder" else f"is {what}, not"
        raise UsageError(f"{run_dir} {what} a training run's folder (no config.json; {hint})")
    config, problem = read_config_json(path, optional=("run",))   # runs of every version wrote "run"; tests may not
    if problem is not None:
        if last.is_file():                                 # the run's own config.json, damaged or lost
            raise DataError(f"{path} {problem}: the run's settings are damaged or lost; {last} holds them: "
                            f"`alexnet train DATA --out {shell_word(run_dir)} --resume` with the run's arguments "
                            "writes config.json again")
        raise AlexnetError(f"{path} {problem}: {run_dir} is not a training run's folder, or its config.json is "
                           "damaged")
    for part, name, least in COUNTED_SETTINGS:
        value = config.get(part, {}).get(name, least)
        if isinstance(value, bool) or not isinstance(value, int) or value < least:
            raise DataError(f'{path}: "{part}": {{"{name}": {json.dumps(value)[:40]}}} is not a whole number of at '
                            f"least {least}: the run's settings are damaged")
    return config


def changed_from_recipe(config: dict[str, Any]) -> dict[str, Any]:
    """The model and training settings of a run's config.json that differ from its recipe's.
    A field the run does not record (older than the field) had the value it had then
    (LEGACY_MODEL_FIELDS, LEGACY_TRAIN_FIELDS), else the recipe's: a change only if that differs."""
    recipe = config["recipe"]
    if recipe not in RECIPE_NAMES:
        raise AlexnetError(f"config.json names the recipe {recipe!r}, unknown here ({', '.join(RECIPE_NAMES)})")
    return settings_changed(recipe, config["model"], config["train"], leave=NOT_CHANGES)


def read_run(run_dir: str | Path, name: str | None = None, *, now: float | None = None) -> RunReport:
    """Summarise one run folder (it may still be training)."""
    run_dir = Path(run_dir)
    config = read_config(run_dir)
    records = read_metrics(run_dir)
    epochs = [r for r in records if r.get("kind") == "epoch"]
    steps = [r for r in records if r.get("kind") == "train"]
    with_val = [r for r in epochs if r.get("val_top1_error") is not None]
    best = min(with_val, key=lambda r: r["val_top1_error"]) if with_val else None
    last_val = with_val[-1] if with_val else None
    total = int(config["train"].get("epochs", 0))
    return RunReport(
        name=name or run_dir.name, path=run_dir, recipe=config["recipe"], changed=changed_from_recipe(config),
        epochs_done=len(epochs), epochs_total=total,
        step=max((int(r.get("step", 0)) for r in records), default=0),
        best_epoch=best and best["epoch"],
        best_val_top1_error=best and best["val_top1_error"], best_val_top5_error=best and best.get("val_top5_error"),
        last_val_top1_error=last_val and last_val["val_top1_error"],
        last_val_top5_error=last_val and last_val.get("val_top5_error"),
        last_train_top1_error=epochs[-1].get("train_top1_error") if epochs else None,
        val_split=validation_split(config, epochs),
        lr_drops=rate_drops(epochs),
        num_classes=int(config["model"].get("num_classes", ModelConfig.num_classes)),
        images_per_s=statistics.median(r["images_per_s"] for r in steps) if steps else None,
        time_s=training_time(epochs, steps, config),
        state=run_state(run_dir, config, records, len(epochs), total, time.time() if now is None else now),
        records=records)


def validation_split(config: dict[str, Any], epochs: list[dict[str, Any]]) -> str | None:
    """The split a run validates on after each epoch, or None when it has none (its data had no
    such split: config.json's "val_key" is null). A run older than "val_key" validated if an epoch
    says so; one with no epoch yet is taken to (nothing says otherwise)."""
    split = str(config.get("run", {}).get("val_split", "val"))
    if any(r.get("val_top1_error") is not None for r in epochs):
        return split
    if "val_key" in config:
        return None if config["val_key"] is None else split
    return None if epochs else split


def rate_drops(epochs: list[dict[str, Any]]) -> list[int]:
    """The epochs after which the learning rate was divided: the plateau rule's `lr_dropped`,
    or a lower rate in the next epoch (the code's fixed schedule)."""
    drops = set()
    for i, r in enumerate(epochs):
        following = epochs[i + 1] if i + 1 < len(epochs) else None
        if r.get("lr_dropped") or (following is not None and following.get("lr", 0) < r.get("lr", 0)):
            drops.add(int(r["epoch"]))
    return sorted(drops)


def training_time(epochs: list[dict[str, Any]], steps: list[dict[str, Any]], config: dict[str, Any]) -> float:
    """Seconds of training logged: each finished epoch's `time_s`, plus the log intervals of
    the epoch in progress (each lasted its steps since the record before x batch_size /
    images_per_s; an interval ends every log_every steps and at an epoch's or a run's end)."""
    total = sum(float(r.get("time_s", 0.0)) for r in epochs)
    last_step = epochs[-1]["step"] if epochs else 0
    batch, every = int(config["train"].get("batch_size", 1)), int(config.get("run", {}).get("log_every", 1))
    before = 0
    for r in steps:
        interval, before = min(int(r["step"]) - before, every), int(r["step"])
        if r["step"] > last_step and r.get("images_per_s", 0) > 0:
            total += interval * batch / r["images_per_s"]
    return total


def run_state(run_dir: Path, config: dict[str, Any], records: list[dict[str, Any]], epochs_done: int,
              epochs_total: int, now: float) -> str:
    """diverged (its last record says so), finished (every epoch done), running (a live
    `alexnet train` holds the run's lock, RUN/.lock) or stopped (killed, or ended by
    --max-steps: `train --resume` continues). Where the lock cannot tell (no lock file: a run of
    an older version), a run whose files changed recently is taken to be running."""
    if records and records[-1].get("kind") == "diverged":
        return "diverged"
    if epochs_total and epochs_done >= epochs_total:
        return "finished"
    held = CommandLock(run_dir).held()
    if held is not None:
        return "running" if held else "stopped"
    folder = RunFolder(run_dir)
    written = [p.stat().st_mtime for p in (run_dir / "metrics.jsonl", folder.config, folder.last) if p.exists()]
    return "running" if written and now - max(written) < running_within_s(records, config) else "stopped"


def running_within_s(records: list[dict[str, Any]], config: dict[str, Any]) -> float:
    """How recently a run's files must have changed for it to count as training still:
    RUNNING_WITHIN_S, or three of its longest log intervals when that is longer."""
    images = int(config.get("run", {}).get("log_every", 1)) * int(config["train"].get("batch_size", 1))
    longest = max((images / r["images_per_s"] for r in records
                   if r.get("kind") == "train" and r.get("images_per_s", 0) > 0), default=0.0)
    return max(RUNNING_WITHIN_S, 3 * longest)


def read_runs(run_dirs: str | Path | Sequence[str | Path]) -> list[RunReport]:
    """One report per folder, named by the folder (with its parent where names repeat); one
    folder may be given as a path."""
    paths = [Path(p) for p in path_list(run_dirs)]
    if not paths:
        raise UsageError("give at least one run folder")
    full = [p.resolve() for p in paths]                  # `.` and `./run` are named as the folders they are
    names = [p.name or str(p) for p in full]
    names = [f"{p.parent.name}/{n}" if len({q for q, m in zip(full, names) if m == n}) > 1 else n
             for p, n in zip(full, names)]                # the same folder twice keeps one name
    return [read_run(p, n) for p, n in zip(paths, names)]


# --------------------------------------------------------------------- the picture
def _figure_formats() -> set[str]:
    from matplotlib.figure import Figure
    return set(Figure().canvas.get_supported_filetypes())


def check_plot_path(path: str | Path) -> Path:
    """A file name whose suffix matplotlib writes (png, pdf, svg, ...): figures.check_picture_path
    with matplotlib's formats."""
    return check_picture_path(path, {"." + f for f in _figure_formats()})


def plot_runs(runs: Sequence[RunReport], path: str | Path, *, title: str | None = None) -> Path:
    """One picture: training loss against steps (left) and top-1 error against epochs (right,
    validation solid, training dashed); a dotted line where a run's rate was divided by 10.
    Written atomically in the format the suffix names."""
    from matplotlib.figure import Figure          # the object API: no pyplot state, no screen

    path = check_plot_path(path)
    fig = Figure(figsize=(13, 5), dpi=100, layout="constrained")
    loss_ax, err_ax = fig.subplots(1, 2)
    losses = []
    for i, run in enumerate(runs):
        color = f"C{i % 10}"
        losses += _plot_loss(loss_ax, run, color)
        _plot_errors(err_ax, run, color)
        _mark_rate_drops(loss_ax, err_ax, run, color)
    _scale_loss_axis(loss_ax, losses)
    _label_axes(loss_ax, err_ax)
    fig.suptitle(title or f"Learning curves: {', '.join(r.name for r in runs)}", fontsize=12)
    _save_figure(fig, path)
    return path


def _plot_loss(ax, run: RunReport, color: str) -> list[float]:
    """The run's training loss against steps (a run with no step logged gets only its legend
    entry); the losses plotted that are not NaN."""
    steps = run.kind("train")
    if not steps:
        ax.plot([], [], color=color, label=f"{run.name} (no step logged{' yet' if run.state == 'running' else ''})")
        return []
    ax.plot([r["step"] for r in steps], [r["loss"] for r in steps], color=color, lw=1.2,
            label=run.name, marker="." if len(steps) < 30 else None)
    return [r["loss"] for r in steps if r["loss"] == r["loss"]]


def _plot_errors(ax, run: RunReport, color: str) -> None:
    """The run's top-1 error (%) against epochs: validation solid (the epochs that measured it),
    training dashed."""
    epochs = run.kind("epoch")
    marker = "o" if len(epochs) < 30 else None
    val = [(r["epoch"], 100 * r["val_top1_error"]) for r in epochs if r.get("val_top1_error") is not None]
    if val:
        ax.plot(*zip(*val), color=color, lw=1.6, marker=marker, ms=4)
    if epochs:
        ax.plot([r["epoch"] for r in epochs], [100 * r["train_top1_error"] for r in epochs], color=color, lw=1.2,
                ls="--", marker=marker, ms=3, mfc="none")


def _mark_rate_drops(loss_ax, err_ax, run: RunReport, color: str) -> None:
    """A dotted line where the run's learning rate was divided: between the epoch and the next
    on the error plot, at the epoch's last step on the loss plot."""
    step_of = {r["epoch"]: r["step"] for r in run.kind("epoch")}
    for e in run.lr_drops:
        err_ax.axvline(e + 0.5, color=color, ls=":", lw=1.2)
        loss_ax.axvline(step_of[e], color=color, ls=":", lw=1.2)


def _scale_loss_axis(ax, losses: list[float]) -> None:
    """A log scale for the loss, with plain tick labels, when it spans more than a factor of 10."""
    from matplotlib.ticker import LogFormatter

    positive = [v for v in losses if v > 0]
    if positive and max(positive) / min(positive) > 10:   # the early loss would flatten the rest
        ax.set_yscale("log")
        class PlainLogFormatter(LogFormatter):       # 0.3, not 3x10^-1 (matplotlib's own subclasses
            def _num_to_string(self, x, vmin, vmax):  # override this method the same way)
                return f"{x:.3g}"

        ax.yaxis.set_major_formatter(PlainLogFormatter())
        ax.yaxis.set_minor_formatter(PlainLogFormatter(labelOnlyBase=False, minor_thresholds=(2, 0.5)))


def _label_axes(loss_ax, err_ax) -> None:
    """Titles, axis labels, integer ticks (steps as 12k), grids, and the legends: the runs on the
    loss plot, the line styles on the error plot."""
    from matplotlib.lines import Line2D
    from matplotlib.ticker import FuncFormatter

    loss_ax.set(xlabel="step", ylabel="training loss (cross-entropy)" + (", log scale" if
                loss_ax.get_yscale() == "log" else ""), title="Training loss")
    err_ax.set(xlabel="epoch", ylabel="top-1 error (%)", title="Top-1 error")
    for ax in (loss_ax, err_ax):
        ax.xaxis.get_major_locator().set_params(integer=True)
    loss_ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v / 1000:g}k" if abs(v) >= 1000 else f"{v:g}"))
    for ax in (loss_ax, err_ax):
        ax.grid(True, alpha=0.3)
    loss_ax.legend(loc="best", fontsize=9, title="run")
    err_ax.legend(handles=[Line2D([], [], color="0.3", lw=1.6, label="validation"),
                           Line2D([], [], color="0.3", lw=1.2, ls="--", label="training"),
                           Line2D([], [], color="0.3", lw=1.2, ls=":", label="learning rate / 10")],
                  loc="best", fontsize=9)


def _save_figure(fig, path: Path) -> None:
    """The figure rendered in memory in the format of the suffix, then written atomically (the
    folder made if need be); a path that cannot be written is a user error."""
    buf = io.BytesIO()
    fig.savefig(buf, format=path.suffix.lower().lstrip("."))
    save_output(path, buf.getvalue(), "the picture")


def report(run_dirs: str | Path | Sequence[str | Path], out: str | Path | None = None) -> list[RunReport]:
    """Read the runs (one may be given as a path) and, with `out`, draw their curves there."""
    if out is not None:
        check_plot_path(out)                      # before the work, not after it
        check_output(out, "out")                  # none of a run's own files (paths.check_output)
    runs = read_runs(run_dirs)
    if out is not None:
        plot_runs(runs, out)
    return runs
