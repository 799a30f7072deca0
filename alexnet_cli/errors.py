"""Errors meant for the user: the CLI prints their message as one `Error:` line.

Library code raises `AlexnetError` (or a subclass) for anything the user can fix: bad files,
missing inputs, inconsistent options; exit code 1. `UsageError` is a value the command line
does not allow (a choice that is not one, a number out of range): exit code 2, like click's
own usage errors (docs/public-surface.md: 2 is bad usage). Anything else is a bug and, outside `--debug`, is
still reported in one line, with the exception type.
"""


class AlexnetError(Exception):
    """A problem with the user's input or environment, explained in one line."""


class UsageError(AlexnetError):
    """An option value the command does not allow; the CLI exits with 2 (bad usage)."""


class DataError(AlexnetError):
    """Missing, corrupt or inconsistent data (images, shards, manifest, pca.json)."""


class CheckpointError(AlexnetError):
    """A checkpoint that cannot be loaded safely or does not fit the data."""


class NotFiniteError(AlexnetError):
    """A network whose outputs are NaN or infinite: no number, and no JSON, is reported for it."""


class TrainingDiverged(AlexnetError):
    """The loss became NaN or infinite; the last good checkpoint is kept."""
