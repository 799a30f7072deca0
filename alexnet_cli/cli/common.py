"""What every subcommand shares: the consoles, the progress reporter, JSON output and
the option types defined once.

Human-readable output goes to stdout through `console`; progress bars and log lines go to
stderr through `err_console`, so that `--json` leaves exactly one JSON document on stdout.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Annotated, Any, Optional

import typer
from rich.console import Console

from alexnet_cli.cli.paths import CheckpointArg, DataArg
from alexnet_cli.errors import UsageError
from alexnet_cli.figures import PICTURE_FORMATS
from alexnet_cli.progress import ConsoleReporter
from alexnet_cli.runlog import json_text

# markup=False: paths, class names and messages are the user's text, never rich markup (a class
# named "[red]" or an --out with "[/x]" prints as it is); styles are passed as style=... or Text.
console = Console(markup=False)
err_console = Console(stderr=True, markup=False)


def reporter() -> ConsoleReporter:
    """Progress on stderr: a bar when stdout and stderr are both terminals, a log line every
    few seconds otherwise (`alexnet train ... > log` gets no bar: docs/public-surface.md)."""
    return ConsoleReporter(err_console, interactive=err_console.is_terminal and console.is_terminal)


def check_writable(path: Path | None, option: str) -> None:
    """Refuse, before any work, an output file that could not be written after it: a folder,
    or a file under something that is not a writable folder."""
    if path is None:
        return
    if path.is_dir():
        raise typer.BadParameter(f"{path} is a folder; give a file", param_hint=option)
    parent = path.parent
    while not parent.exists() and parent != parent.parent:     # the folders to be made
        parent = parent.parent
    if not parent.is_dir() or not os.access(parent, os.W_OK | os.X_OK):
        raise typer.BadParameter(f"cannot write {path}: {parent} is not a writable folder", param_hint=option)


def check_picture_out(path: Path | None) -> None:
    """Refuse, before any work, an --out picture (drawn with PIL: figures.save_picture) that could
    not be written or whose suffix names no format PIL writes: `--out k.txt` would get PNG bytes.
    The same message as `alexnet report --out` (report.check_picture_path, whose matplotlib writes
    other formats: .pdf, .svg)."""
    check_writable(path, "--out")
    if path is not None and path.suffix.lower() not in PICTURE_FORMATS:
        raise UsageError(f"out {path}: the suffix names the format; use one of "
                         f"{', '.join(sorted(PICTURE_FORMATS))}", field="out", value=path)


def print_json(data: Any) -> None:
    """Print one JSON document on stdout, nothing else."""
    text = json_text(data, indent=2)          # strict: a NaN is an error, never invalid JSON
    sys.stdout.write(text + "\n")
    sys.stdout.flush()


# Options that several subcommands share, defined once.
JsonOpt = Annotated[bool, typer.Option("--json", help="Print one JSON document on stdout and nothing else there.")]
WorkersOpt = Annotated[Optional[int], typer.Option("--workers", min=1, help="Shard reader threads (default: up to "
                                                    "8 for raw shards, all cores but two for jpeg).")]
CropsOpt = Annotated[int, typer.Option("--crops", help="1: the centre crop; 10: four corners, centre and their "
                                                   "mirrors, softmax averaged (paper 5.1).")]
DeviceOpt = Annotated[Optional[str], typer.Option("--device", help="cpu, cuda or cuda:N (default: cuda when available).")]
DecodeOpt = Annotated[Optional[str], typer.Option("--decode", help="Where jpeg shards are decoded: cpu (simplejpeg, one thread per --workers), gpu (batched nvJPEG on the CUDA device) or auto (gpu on CUDA when a GPU decoder is installed). Default: auto; eval and features: the decoder the run trained with. Raw shards need none.")]
Bf16Opt = Annotated[bool, typer.Option("--bf16/--no-bf16", help="bfloat16 autocast on CUDA (ignored on the CPU).")]
ForwardBatchOpt = Annotated[int, typer.Option("--batch-size", min=1, help="Images per forward pass.")]
ExistingDir = DataArg            # DATA, and a CHECKPOINT: given the other, one line saying so (cli/paths.py)
ExistingFile = CheckpointArg
