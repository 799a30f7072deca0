"""The root of the `alexnet` command: it only wires the subcommands together and holds
the one error boundary.

Error boundary: a subcommand raises; `AlexnetGroup.invoke` turns the exception into one
`Error: ...` line on stderr and exit code 1, or 2 for a `UsageError` (an option value that is
not allowed). Click's own usage errors keep their exit code 2. Ctrl-C: `Error: interrupted`,
exit code 130 (128 + SIGINT, the shell's convention).
`--debug` or ALEXNET_DEBUG=1 lets the traceback through.
"""

from __future__ import annotations

import os
import sys
from typing import Annotated, Optional

import typer
from typer.core import TyperGroup

from alexnet_cli import __version__
from alexnet_cli.cli import demo, eval as eval_cmd, features, kernels, neighbors, pca, predict, prep, summary, train
from alexnet_cli.cli.common import err_console
from alexnet_cli.errors import AlexnetError, UsageError


def _debug_wanted(ctx: typer.Context) -> bool:
    return bool(ctx.meta.get("alexnet.debug")) or os.environ.get("ALEXNET_DEBUG", "") not in ("", "0")


class AlexnetGroup(TyperGroup):
    """A typer group whose `invoke` is the CLI's one error boundary, and whose usage errors
    are click's plain lines (usage, hint, `Error: ...`; exit 2) rather than a rich box."""

    def main(self, args=None, prog_name=None, complete_var=None, standalone_mode=True, **extra):
        if not standalone_mode:
            return super().main(args, prog_name, complete_var, standalone_mode, **extra)
        try:
            result = super().main(args, prog_name, complete_var, standalone_mode=False, **extra)
        except typer.TyperException as exc:     # click's usage errors: bad flag, missing argument, ...
            exc.show()
            sys.exit(exc.exit_code)
        except typer.Abort:
            err_console.print("Error: aborted", style="bold red", highlight=False)
            sys.exit(1)
        sys.exit(result if isinstance(result, int) else 0)

    def invoke(self, ctx: typer.Context):
        try:
            return super().invoke(ctx)
        except (typer.TyperException, typer.Exit, typer.Abort):  # usage errors (exit 2), exits
            raise
        except KeyboardInterrupt:
            err_console.print("Error: interrupted", style="bold red", highlight=False)
            raise typer.Exit(130)
        except Exception as exc:  # the boundary: everything else becomes one line
            if _debug_wanted(ctx):
                raise
            if isinstance(exc, AlexnetError):
                message = str(exc)
            else:
                message = f"{type(exc).__name__}: {exc} (run with --debug for the traceback)"
            message = " ".join(message.split()) or type(exc).__name__
            err_console.print(f"Error: {message}", style="bold red", highlight=False, markup=False,
                              soft_wrap=True)
            raise typer.Exit(2 if isinstance(exc, UsageError) else 1)


app = typer.Typer(
    cls=AlexnetGroup,
    name="alexnet",
    help="Reproduce AlexNet (Krizhevsky, Sutskever & Hinton, NIPS 2012) on your own ImageNet.",
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
    """Reproduce AlexNet (Krizhevsky, Sutskever & Hinton, NIPS 2012) on your own ImageNet."""
    ctx.meta["alexnet.debug"] = debug


# In the order of the pipeline: data, network, training, evaluation, looking inside.
app.command("demo")(demo.demo)
app.command("prep")(prep.prep)
app.command("pca")(pca.pca)
app.command("summary")(summary.summary)
app.command("train")(train.train)
app.command("eval")(eval_cmd.eval_cmd)
app.command("predict")(predict.predict_cmd)
app.command("kernels")(kernels.kernels)
app.command("features")(features.features)
app.command("neighbors")(neighbors.neighbors)


def main() -> None:
    app()
