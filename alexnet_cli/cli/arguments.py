"""The path arguments the commands share: CHECKPOINT, a file written by `alexnet train`, and
DATA, a folder made by `alexnet prep`. Given one for the other (a data folder as the
checkpoint, a checkpoint as DATA, a run's folder as either), a command stops before any work
with one line saying what the path is and what it expected; as click's own usage errors, exit
code 2 (docs/public-surface.md: a bad argument).

The checks import alexnet_cli.runlog (NumPy, h5py) when they run, not with this module: `alexnet
--help` starts without them (docs/performance.md, start-up)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer


def check_checkpoint(path: Path | None, hint: str | None = None) -> Path | None:
    """`path` when it can be a checkpoint; else a usage error (under `hint`: the argument's name)."""
    from alexnet_cli.runlog import not_a_checkpoint
    if path is not None and (problem := not_a_checkpoint(path)):
        raise typer.BadParameter(problem, param_hint=hint)
    return path


def check_data(path: Path | None, hint: str | None = None) -> Path | None:
    """`path` when it can be a prepared data folder; else a usage error."""
    from alexnet_cli.runlog import not_a_data_folder
    if path is not None and (problem := not_a_data_folder(path)):
        raise typer.BadParameter(problem, param_hint=hint)
    return path


def _checkpoint_argument(value: Path) -> Path:
    return check_checkpoint(value, "CHECKPOINT")      # named as in the usage line, as eval's body check does


def _data_argument(value: Path) -> Path:
    return check_data(value, "DATA")


CheckpointArg = Annotated[Path, typer.Argument(
    exists=True, callback=_checkpoint_argument, show_default=False, metavar="CHECKPOINT",
    help="A checkpoint written by `alexnet train` (RUN/checkpoints/best.pt or last.pt).")]
DataArg = Annotated[Path, typer.Argument(exists=True, callback=_data_argument, show_default=False, metavar="DATA",
                                         help="A prepared data folder (alexnet prep's OUT).")]
