"""The path arguments the commands share: CHECKPOINT, a file written by `alexnet train`, and
DATA, a folder made by `alexnet prep`. Given one for the other (a data folder as the
checkpoint, a checkpoint as DATA, a run's folder as either), a command stops before any work
with one line saying what the path is and what it expected; as click's own usage errors, exit
code 2 (docs/public-surface.md: a bad argument).

The checks import alexnet_cli.runlog (NumPy, h5py) when they run, not with this module: `alexnet
--help` starts without them (docs/performance.md, start-up)."""

from __future__ import annotations

import errno
import os
from collections import Counter
from itertools import islice
from pathlib import Path
from typing import Annotated

import typer

from alexnet_cli.errors import shell_word


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


# The suffixes `image_pattern` looks for (any file PIL reads is an image to `predict`; these name one)
IMAGE_SUFFIXES = {".jpeg", ".jpg", ".png", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".ppm"}


def check_images(paths: list[Path], hint: str | None = None) -> list[Path]:
    """`paths` when none is a folder; else a usage error that says to give the folder's images,
    as a pattern the shell expands (`image_pattern`)."""
    for path in paths:
        if path.is_dir():
            raise typer.BadParameter(f"{path} is a folder, not an image: give its images, e.g. "
                                     f"{image_pattern(path)}", param_hint=hint)
    return paths


def image_pattern(folder: Path, look: int = 1000) -> str:
    """A shell pattern for the images of `folder`: `DIR/*.JPEG` in the suffix most of its first
    `look` files have, or `DIR/*/*.JPEG` when it holds folders of them (ImageNet's train/)."""
    def suffix(entries: list[Path]) -> str | None:
        found = Counter(p.suffix for p in entries if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())
        return found.most_common(1)[0][0] if found else None

    try:
        entries = list(islice(folder.iterdir(), look))
        if found := suffix(entries):
            return f"{shell_word(folder)}/*{found}"
        inner = next((p for p in sorted(entries) if p.is_dir()), None)
        if inner is not None and (found := suffix(list(islice(inner.iterdir(), look)))):
            return f"{shell_word(folder)}/*/*{found}"
    except OSError:
        pass
    return f"{shell_word(folder)}/*.JPEG"


def path_word_problem(word: str) -> str | None:
    """What is wrong with a path as the user typed it, before click reads it, or None: an empty
    one (an unset shell variable) became "." (`--out ''` was read as the current folder), and a
    loop of symbolic links was said not to exist."""
    if word == "":
        return "an empty path: give a file or folder"
    try:
        os.stat(word)
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            return f"{word} is a symbolic link loop (a link that leads back to itself): give another path"
    except ValueError:                  # a NUL byte: click's own error says so
        pass
    return None


def _checkpoint_argument(value: Path) -> Path:
    return check_checkpoint(value, "CHECKPOINT")      # named as in the usage line, as eval's body check does


def _data_argument(value: Path) -> Path:
    return check_data(value, "DATA")


CheckpointArg = Annotated[Path, typer.Argument(
    exists=True, callback=_checkpoint_argument, show_default=False, metavar="CHECKPOINT",
    help="A checkpoint written by `alexnet train` (RUN/checkpoints/last.pt or best.pt).")]
DataArg = Annotated[Path, typer.Argument(exists=True, callback=_data_argument, show_default=False, metavar="DATA",
                                         help="A prepared data folder (alexnet prep's OUT).")]
