"""Path arguments of the library that take several files: one path is a list of one.

`evaluate(checkpoints, ...)`, `predict(checkpoint, images)`, `find_neighbors(..., queries)` and
`report(run_dirs)` take a list of paths; given one `str` or `Path` instead, a str would be
iterated letter by letter (`/` read as a checkpoint, `s` as an image) and a Path not at all.
`path_list` is the one rule for all of them: a single path stands for a list of that one path.
"""

from __future__ import annotations

import os
from typing import Iterable, TypeVar

P = TypeVar("P", str, os.PathLike)


def path_list(paths: P | Iterable[P]) -> list[P]:
    """`paths` as a list: a single path (a str or a Path) becomes a list of
    that one path; any other iterable is listed as it is (each path kept as given, so a result
    names a file exactly as the caller wrote it)."""
    if isinstance(paths, (str, os.PathLike)):
        return [paths]
    return list(paths)
