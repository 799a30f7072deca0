"""Progress reporting for long jobs, without tying the library to a terminal.

Library functions take a `Reporter` (default: `NullReporter`, silent). The CLI passes a
`ConsoleReporter`, which draws a rich progress bar (rate and ETA) on a terminal and, when the
output is not a terminal (docs/public-surface.md: stdout redirected or piped; or stderr), logs a plain line
every few seconds instead.

A note (`log`) names a setting in the library's terms, in backticks, and lists it in `mentions`
("fewer than `k` 5", mentions=("k",)): the rule of library errors (errors.py). A reporter shows
each mentioned setting as its reader knows it: the CLI's reporter by its flag (`names`, which
the CLI gives it: cli/flags.py), one made from Python as written.
"""

from __future__ import annotations

import time
from contextlib import AbstractContextManager, contextmanager
from collections.abc import Mapping
from typing import Iterator, Protocol

from alexnet_cli.errors import check_mentions, rename_mentions


class Task(Protocol):
    def advance(self, n: float = 1, **info: object) -> None: ...


class Reporter(Protocol):
    def task(self, description: str, total: float | None, unit: str = "it",
             done: float = 0) -> AbstractContextManager[Task]:
        """A task of `total` units (None: unknown), of which `done` were done before it began (a
        resumed job's): counted in the position shown, never in the rate."""

    def log(self, message: str, mentions: tuple[str, ...] = ()) -> None:
        """Print a note; `mentions`: the settings it names, each written `name` in it."""

    def named(self, message: str, mentions: tuple[str, ...] = ()) -> str:
        """`message` with its `mentions` named as this reporter's reader knows them (what `log`
        would print), for text that must be written by other means (a signal handler's)."""


class _NullTask:
    def advance(self, n: float = 1, **info: object) -> None:
        pass


class NullReporter:
    """Reports nothing: the default for library calls."""

    @contextmanager
    def task(self, description: str, total: float | None, unit: str = "it", done: float = 0) -> Iterator[_NullTask]:
        yield _NullTask()

    def log(self, message: str, mentions: tuple[str, ...] = ()) -> None:
        check_mentions(message, mentions)

    def named(self, message: str, mentions: tuple[str, ...] = ()) -> str:
        check_mentions(message, mentions)
        return message


class _RichTask:
    def __init__(self, progress, task_id, unit: str):
        self._progress, self._id, self._unit = progress, task_id, unit

    def advance(self, n: float = 1, **info: object) -> None:
        if info:
            self._progress.update(self._id, info="  ".join(f"{k} {_fmt(v)}" for k, v in info.items()))
        self._progress.update(self._id, advance=n)
        speed = next(t.speed for t in self._progress.tasks if t.id == self._id)  # None at first
        if speed is not None:
            self._progress.update(self._id, rate=f"{speed:,.1f} {self._unit}/s")


class _LogTask:
    """Plain log lines every `every` seconds, for logs and pipes."""

    def __init__(self, console, description: str, total: float | None, unit: str, every: float, done: float = 0):
        self._console, self._desc, self._total, self._unit = console, description, total, unit
        self._every, self._done, self._start = every, float(done), float(done)
        self._t0 = self._last = time.perf_counter()

    def advance(self, n: float = 1, **info: object) -> None:
        self._done += n
        now = time.perf_counter()
        finished = self._total is not None and self._done >= self._total
        if now - self._last < self._every and not finished:
            return
        self._last = now
        rate = (self._done - self._start) / max(now - self._t0, 1e-9)     # this run's units only
        of = f"/{self._total:g}" if self._total is not None else ""
        extra = "".join(f" {k}={_fmt(v)}" for k, v in info.items())
        self._console.print(f"{self._desc}: {self._done:g}{of} {self._unit} ({rate:.1f} {self._unit}/s){extra}",
                            highlight=False, soft_wrap=True, markup=False)


def plural(n: int, noun: str, nouns: str | None = None) -> str:
    """"1 epoch", "0 epochs", "1,281,167 images": a count and its noun, for lines people read
    (`nouns`: the plural where it is not noun + "s")."""
    return f"{n:,} {noun if n == 1 else nouns or noun + 's'}"


def _fmt(v: object) -> str:
    return f"{v:.4g}" if isinstance(v, float) else str(v)


class ConsoleReporter:
    """Rich progress bars on a terminal; periodic log lines otherwise. `names`: what a note's
    mentioned settings are called (the CLI's flags); None: as the library writes them."""

    def __init__(self, console, log_every: float = 10.0, interactive: bool | None = None,
                 names: Mapping[str, str] | None = None):
        self.console = console
        self.log_every = log_every
        self.interactive = console.is_terminal if interactive is None else interactive
        self.names = names

    @contextmanager
    def task(self, description: str, total: float | None, unit: str = "it", done: float = 0):
        if not self.interactive:
            yield _LogTask(self.console, description, total, unit, self.log_every, done)
            return
        from rich.progress import (BarColumn, MofNCompleteColumn, Progress, TextColumn,
                                   TimeElapsedColumn, TimeRemainingColumn)

        # markup=False: a description or info may hold the user's text (a path, a class name)
        columns = [TextColumn("{task.description}", style="bold", markup=False), BarColumn(), MofNCompleteColumn(),
                   TextColumn("{task.fields[rate]}", markup=False), TimeElapsedColumn(), TextColumn("eta"),
                   TimeRemainingColumn(), TextColumn("{task.fields[info]}", markup=False)]
        with Progress(*columns, console=self.console) as progress:
            task_id = progress.add_task(description, total=total, completed=done, info="", rate="")   # no speed sample
            yield _RichTask(progress, task_id, unit)

    def log(self, message: str, mentions: tuple[str, ...] = ()) -> None:
        self.console.print(self.named(message, mentions), highlight=False, soft_wrap=True, markup=False)

    def named(self, message: str, mentions: tuple[str, ...] = ()) -> str:
        check_mentions(message, mentions)
        return rename_mentions(message, mentions, self.names)
