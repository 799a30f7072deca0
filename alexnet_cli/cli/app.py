"""The root of the `alexnet` command: it only wires the subcommands together and holds
the one error boundary.

The subcommands' modules import the library (and so torch) in their command bodies, not here:
`alexnet --help`, `--version`, a command's --help and a usage error start without it
(docs/performance.md, start-up).

Error boundary: a subcommand raises; `AlexnetGroup.invoke` turns the exception into one
`Error: ...` line on stderr and exit code 1, or 2 for a `UsageError` (an option value that is
not allowed). Click's own usage errors (unknown flag, missing argument, path that does not
exist) become one line too, naming the command's --help, with exit code 2. A command that
a signal stopped (alexnet_cli/stopping.py) raises `Interrupted`: its message (the signal, what
was saved, how to continue), exit code 128 + the signal (130 Ctrl-C, 143 SIGTERM). Any other
Ctrl-C: `Error: interrupted`, exit code 130 (128 + SIGINT, the shell's convention), also when it
lands inside a library call that turns it into another exception (torch.save does); a SIGTERM
before a command handles its own (cli/__init__.py): `Error: terminated`, exit code 143.
`alexnet --debug <command>` or ALEXNET_DEBUG=1 lets the traceback through. A library error
about one setting names its field (`dropout must be ...`); the boundary names the flag
(`--dropout must be ...`) from cli/flags.py's table.
"""

from __future__ import annotations

import inspect
import os
import sys
import typing
from pathlib import Path, PurePath
from typing import Annotated, Optional

import typer
from typer.core import TyperCommand, TyperGroup

from alexnet_cli import __version__
from alexnet_cli.atomic import NO_ROOM, cannot_write
from alexnet_cli.cli.arguments import path_word_problem
from alexnet_cli.cli import (ablate, codes, demo, eval as eval_cmd, features, kernels, neighbors, pca, predict, prep,
                             report, stopped_by, summary, train)
from alexnet_cli.cli.common import err_console
from alexnet_cli.cli.flags import flag_message
from alexnet_cli.errors import AlexnetError, Interrupted, UsageError
from alexnet_cli.stopping import interrupt_behind

# click's exceptions. pyproject asks for typer >= 0.29, which names them itself; the fallbacks
# stay on purpose: a lent GPU machine's image had typer 0.27.2 (outside our install), and the
# device check (benchmarks/gpu_check.sh) runs this package there as it is.
try:
    from typer import TyperException as ClickError
except ImportError:                     # 0.26-0.28 vendor click without the name, older ones use click
    try:
        from typer._click.exceptions import ClickException as ClickError
    except ImportError:
        from click.exceptions import ClickException as ClickError


def _debug_wanted(ctx: typer.Context) -> bool:
    return bool(ctx.meta.get("alexnet.debug")) or os.environ.get("ALEXNET_DEBUG", "") not in ("", "0")


class _PlainFlags:
    """A command whose on/off flags (--json, --lrn/--no-lrn, --help) show no value in its --help:
    typer writes `<bool>` beside them, as if they took one (`--json <bool>`). A flag's metavar
    is only ever shown, never parsed; "" shows nothing. An argument that takes one or more paths
    (eval's CHECKPOINT..., predict's IMAGE..., report's RUN...) shows the type of one, then "..."
    (`<path>...`), as click shows an option of several values, where typer writes Python's
    `<list[Path]>`."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        for param in self.params:
            _plain_flag(param)
            _several_paths(param)

    def get_help_option(self, ctx):
        return _plain_flag(super().get_help_option(ctx))


def _plain_flag(param):
    if param is not None and getattr(param, "is_flag", False) and param.metavar is None:
        param.metavar = ""
    return param


def _several_paths(param) -> None:
    descriptor = getattr(param, "type_descriptor", None)
    if param.param_type_name != "argument" or param.nargs != -1 or descriptor is None:
        return
    element = typing.get_args(descriptor.annotation)
    if typing.get_origin(descriptor.annotation) is list and element and issubclass(element[0], PurePath):
        shown = f"<{descriptor.path_type}>..."         # path, file or dir, as typer names one path
        param.display_type_rich = lambda ctx: shown     # only ever shown, as a flag's metavar


class AlexnetCommand(_PlainFlags, TyperCommand):
    """Every subcommand: its flags shown as flags (_PlainFlags); a missing argument named as the
    user left it out (`_missing_argument`)."""

    def parse_args(self, ctx, args):
        given = list(args)          # click's parser consumes the list
        try:
            _check_path_words(self, ctx, given)
            return super().parse_args(ctx, args)
        except ClickError as exc:
            raise _missing_argument(exc, self, ctx, given) from None


def _check_path_words(command, ctx, args: list[str]) -> None:
    """Each path the user gave, as typed, checked before click turns it into a Path
    (arguments.path_word_problem: `''` became ".", a link loop "does not exist"): a usage error
    naming the parameter. Arguments click cannot parse are left to its own error, and a line
    asking for help gets it."""
    if any(word in ctx.help_option_names for word in args):
        return
    try:
        values = command.make_parser(ctx).parse_args(args=list(args))[0]
    except ClickError:
        return
    for param in command.params:
        if not _takes_paths(param):
            continue
        given = values.get(param.name)
        for word in (given if isinstance(given, (list, tuple)) else [given]):
            if isinstance(word, str) and (problem := path_word_problem(word)):
                raise typer.BadParameter(problem, ctx=ctx, param=param)


def _takes_paths(param) -> bool:
    """Whether `param` is a path, an optional one or a list of them (its annotation)."""
    descriptor = getattr(param, "type_descriptor", None)
    kinds = [getattr(descriptor, "annotation", None)]
    while kinds:
        kind = kinds.pop()
        if isinstance(kind, type) and issubclass(kind, PurePath):
            return True
        kinds.extend(typing.get_args(kind))
    return False


def _missing_argument(exc, command, ctx, args: list[str]):
    """Click fills the arguments after a variadic one first: `alexnet eval x.pt` gives x.pt to
    DATA and says `Missing argument 'CHECKPOINT'`. When the path that went to the last argument
    is not a folder (a checkpoint, then, or a typo), it is the last argument that is missing:
    the same error, naming it. Any other error as it is."""
    arguments = [p for p in command.params if p.param_type_name == "argument"]
    if (type(exc).__name__ != "MissingParameter" or exc.param not in arguments[:-1]
            or exc.param.nargs != -1):
        return exc
    last = arguments[-1]
    value = command.make_parser(ctx).parse_args(args=args)[0].get(last.name)
    if value is None or Path(value).is_dir():
        return exc
    return type(exc)(ctx=ctx, param=last)


class AlexnetGroup(_PlainFlags, TyperGroup):
    """A typer group whose `invoke` is the CLI's one error boundary, and whose usage errors
    are click's plain lines (usage, hint, `Error: ...`; exit 2) rather than a rich box; its
    flags (--debug, --version) shown as flags (_PlainFlags)."""

    def main(self, args=None, prog_name=None, complete_var=None, standalone_mode=True, **extra):
        if not standalone_mode:
            return super().main(args, prog_name, complete_var, standalone_mode, **extra)
        try:
            result = super().main(args, prog_name, complete_var, standalone_mode=False, **extra)
        except ClickError as exc:     # click's usage errors: bad flag, missing argument, ...
            _show_usage_error(exc)
            sys.exit(exc.exit_code)
        except typer.Abort as exc:      # click's Abort: an EOFError, or (older typers) a Ctrl-C while it parses
            if _interrupted(exc):
                sys.exit(_stopped(exc))
            if isinstance(exc.__cause__, EOFError):     # click's word for an EOFError let through by --debug
                raise exc.__cause__
            _error("aborted")
            sys.exit(1)
        sys.exit(result if isinstance(result, int) else 0)

    def parse_args(self, ctx, args):
        """The root's own options: `--help` and `--version` print while they are parsed, where typer
        turns a Ctrl-C (or SIGTERM) into a silent exit 130; here it says which, exit 130 or 143."""
        try:
            return super().parse_args(ctx, args)
        except KeyboardInterrupt as exc:
            raise typer.Exit(_stopped(exc)) from None

    def invoke(self, ctx: typer.Context):
        try:
            return super().invoke(ctx)
        except (ClickError, typer.Exit, typer.Abort):  # usage errors (exit 2), exits
            raise
        except KeyboardInterrupt as exc:
            raise typer.Exit(_stopped(exc))
        except Exception as exc:  # the boundary: everything else becomes one line
            if _debug_wanted(ctx):
                raise
            if isinstance(exc, Interrupted):    # stopped on a signal, after saving: exit as if killed by it
                _error(_message(exc))
                raise typer.Exit(128 + exc.signum)
            if _interrupted(exc):
                raise typer.Exit(_stopped(exc))
            _error(_message(exc))
            raise typer.Exit(2 if isinstance(exc, UsageError) else 1)


def _message(exc: Exception) -> str:
    """What went wrong, for one line: our errors as written, a setting named by its flag; an OS error as the file and its
    reason; anything else (a bug, then) with its type and how to see the traceback."""
    if isinstance(exc, AlexnetError):
        return flag_message(exc)
    if isinstance(exc, OSError) and exc.strerror:
        names = " -> ".join(str(f) for f in (exc.filename, exc.filename2) if f is not None)
        reason = exc.strerror       # no room (disk full, quota, file-size limit): also what to do
        if isinstance(exc.filename, (str, bytes, os.PathLike)) and exc.errno in NO_ROOM:
            reason = cannot_write(Path(os.fsdecode(exc.filename)), exc)
        return f"{names}: {reason}" if names else reason
    return (f"{type(exc).__name__}: {exc} (run `alexnet --debug <command> ...` or set ALEXNET_DEBUG=1 "
            "for the traceback)")


def _interrupted(exc: BaseException) -> bool:
    """Whether a Ctrl-C (or the SIGTERM of cli/__init__.py) is behind `exc` (stopping.interrupt_behind)."""
    return interrupt_behind(exc) is not None


def _stopped(exc: BaseException) -> int:
    """Says `Error: interrupted` for a Ctrl-C behind `exc`, `Error: terminated` for a SIGTERM;
    returns their exit code (130, 143)."""
    word, code = stopped_by(interrupt_behind(exc))
    _error(word)
    return code


def _error(message: str) -> None:
    message = " ".join(message.split()) or "failed"
    rank = os.environ.get("RANK", "0")
    if int(os.environ.get("WORLD_SIZE", "1")) > 1 and rank != "0":   # under torchrun: which process says it
        message = f"(rank {rank}) {message}"
    err_console.print(f"Error: {message}", style="bold red", highlight=False, markup=False, soft_wrap=True)


def _show_usage_error(exc) -> None:
    """Click's usage errors as one `Error:` line that names the command's --help (docs/public-surface.md); a
    bare `alexnet` still shows the help."""
    if type(exc).__name__ == "NoArgsIsHelpError" or not hasattr(exc, "format_message"):
        exc.show()
        return
    ctx = getattr(exc, "ctx", None)
    hint = f" (see `{ctx.command_path} --help`)" if ctx is not None else ""
    _error((_unparsed_value(exc) or exc.format_message()) + hint)


# What typer's type check (pydantic) wanted, by its error type, in the words of the other errors
_WANTED = {"int_parsing": "an integer", "int_from_float": "a whole number", "float_parsing": "a number",
           "bool_parsing": "true or false"}


def _unparsed_value(exc) -> str | None:
    """A value typer could not convert to the option's type, said as the other errors say a bad
    value (`--epochs must be an integer, got 'many'`), or None for other errors. typer 0.29
    converts with pydantic, whose ValidationError is the context of its BadParameter and whose
    wording ("Input should be a valid integer, unable to parse string as an integer") it shows."""
    errors, param = getattr(exc.__context__, "errors", None), getattr(exc, "param", None)
    if not callable(errors) or param is None:
        return None
    try:
        first = errors()[0]
    except Exception:                 # not pydantic's ValidationError after all
        return None
    if not isinstance(first, dict) or "input" not in first:
        return None
    name = " / ".join(param.opts) if param.param_type_name == "option" else param.human_readable_name
    bound = next(iter((first.get("ctx") or {}).items()), None)       # a range: ("ge", 1)
    if first.get("type") in _BOUNDS and bound is not None:
        return f"{name} must be {_BOUNDS[first['type']]} {bound[1]}, got {first['input']}"
    wanted = _WANTED.get(first.get("type"))
    return None if wanted is None else f"{name} must be {wanted}, got {first['input']!r}"


# ... and a range it wanted the value in
_BOUNDS = {"greater_than_equal": "at least", "greater_than": "more than", "less_than_equal": "at most",
           "less_than": "less than"}


app = typer.Typer(
    cls=AlexnetGroup,
    name="alexnet",
    help=("Reproduce AlexNet (Krizhevsky, Sutskever & Hinton, NIPS 2012) on your own ImageNet.\n\n"
          "\"paper 4.3\" in the help is a section of the paper's 2017 reprint in Communications of the ACM, "
          "whose prologue makes each number one higher than the NIPS paper's (4.3 is NIPS 3.3)."),
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)


def _version(value: bool) -> None:
    if value:
        typer.echo(f"alexnet {__version__}")
        raise typer.Exit()


@app.callback()
def root(
    ctx: typer.Context,
    debug: Annotated[bool, typer.Option("--debug", help="Show the full traceback on errors.")] = False,
    version: Annotated[Optional[bool], typer.Option("--version", callback=_version, is_eager=True,
                                                    help="Print the version and exit.")] = None,
) -> None:
    """Reproduce AlexNet (Krizhevsky, Sutskever & Hinton, NIPS 2012) on your own ImageNet; "paper 4.3"
    in the help is a section of the 2017 CACM reprint (NIPS 3.3)."""
    ctx.meta["alexnet.debug"] = debug


def _help(function) -> str:
    """A command's docstring as its help, each paragraph on one line: rich keeps a paragraph's
    source line breaks (in the command list, and after the first paragraph of a command's
    --help), which broke lines mid-sentence; the terminal's width wraps them instead. A
    paragraph starting with click's no-rewrap marker "\\b" is kept as written."""
    paragraphs = (inspect.getdoc(function) or "").split("\n\n")
    return "\n\n".join(p if p.startswith("\b") else " ".join(p.split()) for p in paragraphs)


def _command(name: str, function) -> None:
    app.command(name, help=_help(function), cls=AlexnetCommand)(function)


# In the order of the pipeline: data, network, training, evaluation, looking inside.
_command("demo", demo.demo)
_command("prep", prep.prep)
_command("pca", pca.pca)
_command("summary", summary.summary)
_command("train", train.train)
_command("eval", eval_cmd.eval_cmd)
_command("predict", predict.predict_cmd)
_command("kernels", kernels.kernels)
_command("features", features.features)
_command("neighbors", neighbors.neighbors)
_command("codes", codes.codes)
_command("report", report.report_cmd)
_command("ablate", ablate.ablate_cmd)


def main() -> None:
    """The console script before session 4 pointed here; `alexnet_cli.cli.main` also turns a
    Ctrl-C during the imports above into one line."""
    app()
