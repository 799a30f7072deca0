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
mentions=("compile",))`): the CLI shows its flag there too. An on/off setting the message asks
to turn off is written `name=False` (`train with `pca_aug=False``), which the CLI shows as the
flag that turns it off (--no-pca-aug). Notes printed through a reporter follow the same rule
(`progress.log(message, mentions=...)`, progress.py); `rename_mentions` below renames them, for
errors and notes alike.

A whole command line the message tells the user to run stays as written, in backticks
("run `alexnet prep SRC OUT --verify`", "`alexnet train --out RUN` makes one", "e.g. torchrun
--nproc_per_node 8 -m alexnet_cli train ..."): it names the tool to run, which is the same advice
for a Python user. Only a setting named on its own is written in the library's terms. A path
in such a command line, or a path the message tells the user to give, goes through `shell_word`
(`alexnet prep 'my imagenet' OUT`), so that the line still works when copied into a shell.
"""

from __future__ import annotations

import copy
import shlex
import signal
from collections.abc import Mapping
from typing import Any


def shell_word(value: object) -> str:
    """`value` (a path, a split's name) as one word of a shell command line: quoted when it holds
    spaces or other characters the shell would read (`'my imagenet'`), as it is otherwise."""
    return shlex.quote(str(value))


def check_mentions(message: str, mentions: tuple[str, ...]) -> None:
    """ValueError unless each mentioned setting is written as `name` in `message` (a bug)."""
    missing = [m for m in mentions if f"`{m}`" not in message]
    if missing:
        raise ValueError(f"a message mentioning {missing} must write them as `name`: {message!r}")


def rename_mentions(message: str, mentions: tuple[str, ...], names: Mapping[str, str] | None) -> str:
    """`message` with each mentioned `name` (in backticks) called as `names` says (the CLI:
    its flag); a name `names` lacks, or every name when `names` is None, stays as written."""
    for mention in mentions:
        if names and mention in names:
            message = message.replace(f"`{mention}`", names[mention])
    return message


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
        check_mentions(message, mentions)
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
        return rename_mentions(message, self.mentions, others)


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

    AGAIN = "run the same command again to continue"   # the advice of every job that continues so

    def advising(self, advice: str) -> Interrupted:
        """The same stop, its message followed by how to continue (which the command knows);
        as it is when the message already ends with that advice (a step of `demo` gives it)."""
        if str(self).endswith(advice):
            return self
        wrapped = copy.copy(self)
        wrapped.args = (f"{self}; {advice}",)
        return wrapped


class TrainingDiverged(AlexnetError):
    """The loss became NaN or infinite; the last good checkpoint is kept."""
