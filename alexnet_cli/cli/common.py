"""What every subcommand shares: the consoles, the progress reporter, JSON output and
the option types defined once.

Human-readable output goes to stdout through `console`; progress bars and log lines go to
stderr through `err_console`, so that `--json` leaves exactly one JSON document on stdout.

Every cli/ module imports this one: it imports no torch, NumPy or PIL (a library module that does
is imported where a function needs it), so that `alexnet --help` starts fast (docs/performance.md).
"""

from __future__ import annotations

import errno
import os
import sys
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated, Any, Optional

import typer
from rich.console import Console

from alexnet_cli.cli.flags import FLAGS, NAMES, OFF_FLAGS
from alexnet_cli.config import check_crops, check_seed
from alexnet_cli.errors import AlexnetError
from alexnet_cli.progress import ConsoleReporter

class _Console(Console):
    """A rich Console whose plain text lines are never broken when its stream is not a terminal
    (piped to a log, a file, a test's runner): rich then assumes 80 columns and would cut a long
    path or a number in two. Tables still fit those 80 columns; on a terminal, its width wraps
    both. `soft_wrap` follows the stream at each print, since the stream can change (CliRunner)."""

    @property
    def soft_wrap(self) -> bool:
        return not self.is_terminal

    @soft_wrap.setter
    def soft_wrap(self, value: bool) -> None:      # Console.__init__ sets it: the stream decides instead
        pass

    def print(self, *args: Any, **kwargs: Any) -> None:
        """rich's print; a failed write to stdout said as one line naming it (`writing_stdout`: a
        full stdout). A closed stdout (`>&-`) takes the tables for people silently, as before: a
        run started detached must not end in an error after its work is saved; `--json`, a
        script's input, is an error there (print_json)."""
        elsewhere = self.stderr or self._file is not None
        if not elsewhere and sys.stdout is None:
            return
        with writing_stdout("the output", elsewhere):
            super().print(*args, **kwargs)


@contextmanager
def writing_stdout(what: str, elsewhere: bool = False):
    """Writes to standard output (`what` is written: "the JSON"), its failures said as one line
    naming it: a closed stdout (`>&-`: Python's sys.stdout is None, where a write raised an
    AttributeError) and an OSError without a file name (`> /dev/full`: "No space left on device",
    no file named). A broken pipe (`| head -1`) is left as it was handled. `elsewhere`: the
    output does not go to stdout (stderr, a file), nothing to check."""
    if elsewhere:
        yield
        return
    if sys.stdout is None:
        raise AlexnetError(f"standard output is closed: nothing to write {what} to")
    try:
        yield
    except BrokenPipeError:
        raise
    except OSError as exc:
        if exc.filename is not None or not exc.strerror:
            raise
        raise AlexnetError(f"cannot write {what} to standard output: {_stdout_reason(exc)}") from exc


def _stdout_reason(exc: OSError) -> str:
    """The system's words for a failed write to stdout; a full disk named as such when stdout is a
    regular file (`> out.txt` on a full file system), a full device otherwise (/dev/full)."""
    if exc.errno != errno.ENOSPC:
        return exc.strerror
    try:
        regular = os.path.isfile(f"/proc/self/fd/{sys.stdout.fileno()}")
    except (OSError, ValueError, AttributeError):
        regular = False
    return "the disk is full: free some space" if regular else f"the device is full ({exc.strerror})"


# markup=False: paths, class names and messages are the user's text, never rich markup (a class
# named "[red]" or an --out with "[/x]" prints as it is); styles are passed as style=... or Text.
console = _Console(markup=False)
err_console = _Console(stderr=True, markup=False)


def reporter() -> ConsoleReporter:
    """Progress on stderr: a bar when stdout and stderr are both terminals, a log line every
    few seconds otherwise (`alexnet train ... > log` gets no bar: docs/public-surface.md). The
    settings the library's notes name (`k`) are shown by their flags (--k: cli/flags.py)."""
    return ConsoleReporter(err_console, interactive=err_console.is_terminal and console.is_terminal, names=NAMES)


def check_writable(path: Path | None, option: str, *, folder: bool = False) -> None:
    """Refuse, before any work, an output that could not be written after it: a folder where a
    file is asked for (or a file where a folder is: `folder`), or a path whose nearest existing
    folder does not let us create a file. That is tried, not asked of os.access, which says yes
    to root whatever the folder (root cannot write into /proc or onto a read-only mount)."""
    if path is None:
        return
    if path.is_symlink() and not path.exists():       # writing through it would fail late ("File exists")
        raise typer.BadParameter(f"{path} is a broken link (to {os.readlink(path)}); give another path",
                                 param_hint=option)
    if folder and path.exists() and not path.is_dir():
        raise typer.BadParameter(f"{path} is a file; give a folder", param_hint=option)
    if not folder and path.is_dir():
        raise typer.BadParameter(f"{path} is a folder; give a file", param_hint=option)
    parent = path if folder else path.parent
    while not parent.exists() and parent != parent.parent:     # the folders to be made
        parent = parent.parent
    if not parent.is_dir():
        raise typer.BadParameter(f"cannot write {path}: {parent} is not a writable folder (it is a file)",
                                 param_hint=option)
    if not _can_create_in(parent):
        raise typer.BadParameter(f"cannot write {path}: {parent} is not a writable folder", param_hint=option)


def _can_create_in(folder: Path) -> bool:
    """Whether a file can be made in `folder`: an unnamed temporary one is made and dropped."""
    try:
        with tempfile.TemporaryFile(dir=folder):
            return True
    except OSError:
        return False


def check_picture_out(path: Path | None) -> None:
    """Refuse, before any work, an --out picture (drawn with PIL: figures.save_picture) that could
    not be written or whose suffix names no format PIL writes: `--out k.txt` would get PNG bytes.
    The suffix rule is the library's own (figures.check_picture_path, which the drawing functions
    apply too), as for `alexnet report --out` (report.check_plot_path: matplotlib's formats)."""
    from alexnet_cli.figures import check_picture_path     # NumPy and PIL: not for --help
    check_writable(path, "--out")
    if path is not None:
        check_picture_path(path)


# Settings that no flag sets (only a run configured from Python changes them): plain words and the
# paper's section that gives them.
SETTING_WORDS = {"lrn_size": ("LRN size n", "4.3"), "lrn_k": ("LRN k", "4.3"), "lrn_alpha": ("LRN alpha", "4.3"),
                 "lrn_beta": ("LRN beta", "4.3"), "pool_stride": ("pooling stride", "4.4"),
                 "init_std": ("weights' init std", "6"), "pca_std": ("PCA colour noise std", "5.1")}


def setting_text(field: str, value: Any) -> str:
    """A model or training setting as the user would ask for it: `--pool 2`, `--no-lrn`,
    `--lrn-alpha-over-n`; one that no flag sets in plain words, `LRN k 3.0 (paper 4.3)`. For the
    human output of `summary` and `report`; their JSON keeps the field names."""
    if field in SETTING_WORDS:
        words, section = SETTING_WORDS[field]
        return f"{words} {value} (paper {section})"
    flag = FLAGS.get(field, field)
    if isinstance(value, bool) and field in OFF_FLAGS:
        return flag if value else OFF_FLAGS[field]
    return f"{flag} {value}"


def print_json(data: Any) -> None:
    """Print one JSON document on stdout, nothing else."""
    from alexnet_cli.runlog import json_text
    text = json_text(data, indent=2)          # strict: a NaN is an error, never invalid JSON
    with writing_stdout("the JSON"):
        sys.stdout.write(text + "\n")
        sys.stdout.flush()


def _checked_seed(value: int) -> int:
    check_seed(value)              # config.check_seed: the one range and message (exit 2)
    return value


def seed_option(help: str, **kwargs: Any) -> Any:
    """The --seed of every command that has one, its help saying what it seeds: checked as it is
    parsed (0 to 2^63-1, every generator's range), before the command prints or writes anything."""
    return Annotated[int, typer.Option("--seed", callback=_checked_seed, help=f"{help} 0 to 2^63-1.", **kwargs)]


def _checked_crops(value: int) -> int:
    return check_crops(value)      # config.check_crops: the one rule and message (exit 2), as it is parsed


# Options that several subcommands share, defined once.
JsonOpt = Annotated[bool, typer.Option("--json", help="Print one JSON document on stdout and nothing else there.")]
WorkersOpt = Annotated[Optional[int], typer.Option("--workers", min=1, help="Shard reader threads (default: up to "
                                                    "8 for raw shards, for jpeg all the cores this process may use but two).")]
CropsOpt = Annotated[int, typer.Option("--crops", callback=_checked_crops,
                                       help="1: the centre crop; 10: four corners, centre and their mirrors, "
                                            "softmax averaged (paper 5.1).")]
DeviceOpt = Annotated[Optional[str], typer.Option("--device", help="cpu, cuda or cuda:N (default: cuda when available).")]


def decode_option(default: str) -> Any:
    """The --decode of a command that reads jpeg shards, its help ending with its own default."""
    return Annotated[Optional[str], typer.Option(
        "--decode", metavar="cpu|gpu|auto", show_default=False,
        help="Where jpeg shards are decoded: cpu (simplejpeg, one thread per --workers), gpu (batched nvJPEG on the "
             f"CUDA device) or auto (gpu on CUDA when a GPU decoder is installed). Default: {default}. Raw shards "
             "need none.")]


DecodeOpt = decode_option("auto")      # train's and ablate's
# features', neighbors' and codes': what the checkpoint's run trained with (loader.trained_decode; eval's: cli/eval.py)
CheckpointDecodeOpt = decode_option("the decoder CHECKPOINT's run trained with (cpu if it trained with cpu, else auto)")
Bf16Opt = Annotated[bool, typer.Option("--bf16/--no-bf16", help="bfloat16 autocast on CUDA (ignored on the CPU).")]
ForwardBatchOpt = Annotated[int, typer.Option("--batch-size", min=1, help="Images per forward pass.")]
