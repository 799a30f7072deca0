"""Errors meant for the user: the CLI prints their message as one `Error:` line.

Library code raises `AlexnetError` (or a subclass) for anything the user can fix: bad files,
missing inputs, inconsistent options; exit code 1. `UsageError` is a value the command line
does not allow (a choice that is not one, a number out of range): exit code 2, like click's
own usage errors (docs/public-surface.md: 2 is bad usage). Anything else is a bug and, outside `--debug`, is
still reported in one line, with the exception type.

The library speaks in its own terms: an error about one setting names the setting by its field
or argument name and carries it, with the value, as `field` and `value`
(`UsageError("dropout must be in [0, 1), got 2", field="dropout", value=2)`). Only the CLI knows
flag names: its error boundary shows `--dropout must be in [0, 1), got 2` (cli/flags.py). Another
setting the message names, besides its field, is written in backticks and listed in `mentions`
(`UsageError("compile_mode max-autotune needs `compile`", field="compile_mode", value=...,
mentions=("compile",))`): the CLI shows its flag there too.
"""

from __future__ import annotations

import copy
import signal
from collections.abc import Mapping
from typing import Any


class AlexnetError(Exception):
    """A problem with the user's input or environment, explained in one line.

    `field`: the setting the message is about, when it is one; the message then begins with
    that name (after the contexts of `within`), so that `naming` can put another name (the
    CLI's flag) in its place. `mentions`: other settings the message names, each written as
    `name` (in backticks), for `naming` to rename as well."""

    def __init__(self, message: str = "", *, field: str | None = None, value: Any = None,
                 mentions: tuple[str, ...] = ()) -> None:
        if field is not None and not message.startswith(field):
            raise ValueError(f"an error about {field!r} must begin with it: {message!r}")
        missing = [m for m in mentions if f"`{m}`" not in message]
        if missing:
            raise ValueError(f"an error mentioning {missing} must write them as `name`: {message!r}")
        super().__init__(message)
        self.field, self.value, self.mentions = field, value, tuple(mentions)
        self.field_at = 0                  # where the field's name stands in the message

    def within(self, context: str) -> AlexnetError:
        """The same error (type, field, value), its message after `context: `."""
        wrapped = copy.copy(self)
        wrapped.args = (f"{context}: {self}",)
        wrapped.field_at = self.field_at + len(context) + 2
        return wrapped

    def naming(self, name: str | None, others: Mapping[str, str] | None = None) -> str:
        """The message with the setting called `name` (e.g. its command-line flag; None: as
        it is) and each mentioned setting called as `others` says (unlisted: as written)."""
        message = str(self)
        if self.field is not None and name is not None:
            message = message[:self.field_at] + name + message[self.field_at + len(self.field):]
        for mention in self.mentions:
            if others and mention in others:
                message = message.replace(f"`{mention}`", others[mention])
        return message


class UsageError(AlexnetError):
    """An option value the command does not allow; the CLI exits with 2 (bad usage)."""


class DataError(AlexnetError):
    """Missing, corrupt or inconsistent data (images, shards, manifest, pca.json)."""


class CheckpointError(AlexnetError):
    """A checkpoint that cannot be loaded safely or does not fit the data."""


class NotFiniteError(AlexnetError):
    """A network whose outputs are NaN or infinite: no number, and no JSON, is reported for it."""


class Interrupted(AlexnetError):
    """A run that stopped on request (Ctrl-C, SIGTERM) after saving where it was; the CLI
    exits with 128 + `signum` (130 for Ctrl-C, 143 for SIGTERM), as a process killed by it."""

    def __init__(self, message: str = "", signum: int = signal.SIGINT) -> None:   # defaults: for copy.copy
        super().__init__(message)
        self.signum = int(signum)

    def advising(self, advice: str) -> Interrupted:
        """The same stop, its message followed by how to continue (which the command knows)."""
        wrapped = copy.copy(self)
        wrapped.args = (f"{self}; {advice}",)
        return wrapped


class TrainingDiverged(AlexnetError):
    """The loss became NaN or infinite; the last good checkpoint is kept."""
