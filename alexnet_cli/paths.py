"""The rules for the paths commands are given: lists of inputs, and the outputs they may write.

`evaluate(checkpoints, ...)`, `predict(checkpoint, images)`, `find_neighbors(..., queries)` and
`report(run_dirs)` take a list of paths; given one `str` or `Path` instead, a str would be
iterated letter by letter (`/` read as a checkpoint, `s` as an image) and a Path not at all.
`path_list` is the one rule for all of them: a single path stands for a list of that one path.

`check_output` is the one rule for a file a command writes where the user says (eval's
--per-class and --predictions, the pictures of predict, kernels, neighbors and report, features'
--out): never one of the command's own inputs, nor a file of a prepared data folder or of a
training run's checkpoints (the folders of train, prep, ablate and demo have rules of their own).
`check_output_folder` is the rule for the folders train, ablate and prep make: never inside a data
folder or a training run's folder.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Iterable, TypeVar

from alexnet_cli.errors import UsageError

P = TypeVar("P", str, os.PathLike)


def path_list(paths: P | Iterable[P]) -> list[P]:
    """`paths` as a list: a single path (a str or a Path) becomes a list of
    that one path; any other iterable is listed as it is (each path kept as given, so a result
    names a file exactly as the caller wrote it)."""
    if isinstance(paths, (str, os.PathLike)):
        return [paths]
    return list(paths)


# What a training run's folder holds that no other command may write (docs/formats.md, "Run
# folders"): its settings, log and lock at the top, and everything under checkpoints/ and tensorboard/.
RUN_FILES = ("config.json", "metrics.jsonl", ".lock")
RUN_SUBFOLDERS = ("checkpoints", "tensorboard")


def check_output(path: str | os.PathLike | None, field: str,
                 reads: Iterable[tuple[str, str | os.PathLike | Iterable[str | os.PathLike] | None]] = ()) -> None:
    """Refuse, before any work, an output file `path` (the setting `field`) that would destroy
    what a command reads or what another command made: UsageError (exit 2), naming `field`.

    - one of the files the command reads, listed in `reads` as (what it is, its path or paths),
      e.g. `("the checkpoint", checkpoint)`: the same file however it is named (a symlink, a hard
      link, `./x`), so that `--predictions best.pt` does not replace the checkpoint by a CSV;
    - a file inside a data folder made by `alexnet prep` (it holds manifest.json), whose files
      prep owns (docs/formats.md);
    - a training run's own files: config.json, metrics.jsonl, .lock, or anything under its
      checkpoints/ or tensorboard/ folders. Its top level stays open to figures (RUN/kernels.png).

    Any other existing file is overwritten, as a command line's output normally is. No `path`
    (None: the output is not asked for) passes."""
    if path is None:
        return
    path = Path(path)
    for what, given in reads:
        for read in ([] if given is None else path_list(given)):
            if _same_file(path, Path(read)):
                raise UsageError(f"{field} {path} is {what} this command reads: choose another file",
                                 field=field, value=path)
    problem = _owned_by_a_command(path) or _too_long(path)
    if problem is not None:
        raise UsageError(f"{field} {path} {problem}", field=field, value=path)


# What the commands add to an output's name for the files they write beside it on the way:
# `.NAME.PID.tmp` (alexnet_cli.atomic), `.NAME.lock` (locks), `NAME.partial`, and the names made
# from it: pca's `STEM.partial.json` and codes' `STEM.codes256.h5`, each with its temporary
_NAME_ROOM = len(".partial") + len("..4194304.tmp") + 3


def _too_long(path: Path) -> str | None:
    """Why `path`'s name is too long for its file system once the temporaries' parts are added
    to it (they would fail with the temporary's name, not the user's), or None."""
    try:
        limit = os.pathconf(path.parent, "PC_NAME_MAX")       # Path("x").parent is "."
    except (OSError, ValueError, AttributeError):           # a folder not made yet, no pathconf: 255
        limit = 255
    size = len(os.fsencode(path.name))
    if size + _NAME_ROOM <= limit:
        return None
    return (f"has a name of {size} bytes; this file system allows {limit}, and the command writes files named "
            f"after it with up to {_NAME_ROOM} bytes more on the way: choose a shorter name")


def _same_file(a: Path, b: Path) -> bool:
    """Whether `a` and `b` name one file: the same path once resolved (links followed), or, when
    both exist, the same inode (a hard link)."""
    try:
        if a.resolve() == b.resolve():
            return True
        return a.exists() and b.exists() and os.path.samefile(a, b)
    except OSError:                      # a loop of links, a file that cannot be read: not the same
        return False


def _owned_by_a_command(path: Path) -> str | None:
    """Why `path` is a file that `alexnet prep` or `alexnet train` owns, or None. The folders
    above it are those of its resolved path (a link to a folder is followed; `DATA/../x.csv` is
    not in DATA), each named in the message as `path` names it where it can be."""
    from alexnet_cli.runlog import RunFolder          # h5py: imported when a command checks its outputs
    try:
        file = path.resolve()
    except OSError:                                   # a loop of links: check_writable's to refuse
        return None
    if file.name in RUN_FILES and RunFolder(file.parent).config.is_file():
        return (f"is the {file.name} of the training run in {_shown(file.parent, path)}, which `alexnet train` "
                "wrote: choose another file")
    for parent in file.parents:
        if is_data_folder(parent):
            return (f"is inside the data folder {_shown(parent, path)}, which `alexnet prep` wrote: choose a path "
                    "outside it")
        run = RunFolder(parent.parent)
        if parent.name in RUN_SUBFOLDERS and (run.config.is_file() or run.last.is_file() or run.best.is_file()):
            return (f"is inside the {parent.name}/ folder of the training run in {_shown(parent.parent, path)}, "
                    "which `alexnet train` wrote: choose a path outside it")
    return None


def check_output_folder(path: str | os.PathLike, field: str) -> None:
    """Refuse, before any work, a folder a command makes and fills (train's and ablate's --out,
    prep's OUT) inside another command's folder: a data folder made by `alexnet prep` (its
    files are prep's, and `train data --out data/run` would put a run among its shards) or a
    training run's folder (`--out run1/checkpoints/x`). UsageError (exit 2), naming `field` and the
    folder it is inside. The folder itself is the command's to judge (a run's own folder is
    resumed, a data folder prepared again, an ablation's folder rerun): only the folders above
    it are looked at, those of its resolved path as `_owned_by_a_command` does."""
    from alexnet_cli.runlog import RunFolder          # h5py: imported when a command checks its outputs
    path = Path(path)
    try:
        folder = path.resolve()
    except OSError:                                   # a loop of links: the command's own checks say so
        return
    for parent in folder.parents:
        if is_data_folder(parent):
            owner = f"the data folder {_shown(parent, path)}, which `alexnet prep` wrote"
        elif _is_run(RunFolder(parent)):
            owner = f"the training run's folder {_shown(parent, path)}, which `alexnet train` wrote"
        else:
            continue
        raise UsageError(f"{field} {path} is inside {owner}: choose a folder outside it", field=field, value=path)


def _is_run(run) -> bool:
    """Whether `run` (a RunFolder) is a training run's folder: its config.json is a run's (its
    shape checked, a regular file of at most 1 MiB: another program's config.json, or its
    checkpoints/best.pt, make no run)."""
    from alexnet_cli.runlog import config_problem
    return config_problem(run.config) is None


MAX_MANIFEST_BYTES = 64 << 20     # ImageNet's manifest.json is about 0.3 MB


def is_data_folder(folder: Path) -> bool:
    """Whether `folder` is a data folder `alexnet prep` wrote: its manifest.json is a regular file
    holding prep's fields (a web app's or another tool's manifest.json makes no data folder)."""
    import json

    from alexnet_cli.shards import MANIFEST
    path = folder / MANIFEST
    try:
        if not path.is_file() or path.stat().st_size > MAX_MANIFEST_BYTES:
            return False
        doc = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError, RecursionError):
        return False
    return isinstance(doc, dict) and all(key in doc for key in ("classes", "splits", "format"))


def _shown(folder: Path, path: Path) -> Path:
    """The resolved `folder` as the user's `path` names it (`data` for `data/manifest.json`), when
    one of the folders `path` is written under is it; else as it is."""
    return next((p for p in path.parents if p.resolve() == folder), folder)
