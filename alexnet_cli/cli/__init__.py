"""The `alexnet` command: one module per subcommand, wired together in `app.py`."""

from __future__ import annotations

import os
import signal
import sys
import threading

from alexnet_cli.stopping import SignalStop, process_signal, process_stop


def main() -> None:
    """The `alexnet` command (the console script). A Ctrl-C or a SIGTERM before a command handles
    its own (alexnet_cli/stopping.py: while it imports, loads a checkpoint, ...) stops it with one
    line, `Error: interrupted` (exit code 130) or `Error: terminated` (143, 128 + SIGTERM), never
    a traceback or silence; also one in the imports below, before app.py's error boundary exists."""
    _stop_on_sigterm()
    try:
        import typer

        from alexnet_cli.cli.app import app
        command = typer.main.get_command(app)     # what app() does first, outside the command's own handling
    except KeyboardInterrupt as exc:
        word, code = stopped_by(exc)
        sys.stderr.write(f"Error: {word}\n")
        sys.exit(code)
    try:
        command()
    except SystemExit as exc:       # click ends every command with one
        signum = process_signal()
        if signum is not None and exc.code in (0, None):   # a SIGTERM some code swallowed: the job ran on
            word, code = stopped_by(SignalStop(signum))
            sys.stderr.write(f"Error: {word} (the signal came while the command ran; it ran to its end)\n")
            sys.exit(code)
        raise
    except KeyboardInterrupt as exc:  # a signal in the last moments, outside the command's own handling
        word, code = stopped_by(exc)
        sys.stderr.write(f"Error: {word}\n")
        sys.exit(code)


def stopped_by(stop: KeyboardInterrupt | None) -> tuple[str, int]:
    """What a Ctrl-C, or the SIGTERM of `_stop_on_sigterm` (a `SignalStop`), did, in a word, and
    the exit code it gives: 128 + the signal, as a process killed by it."""
    signum = getattr(stop, "signum", signal.SIGINT)
    return ("terminated" if signum == signal.SIGTERM else "interrupted"), 128 + signum


def _stop_on_sigterm() -> None:
    """A SIGTERM raises `SignalStop` where it lands, as a Ctrl-C raises KeyboardInterrupt, so that
    the error boundary says it (`stopped_by`): without a handler the process ended silently. The
    commands that stop cleanly (stopping.StopRequests, StopsAtOnce) install their own while they
    run and put this one back. A SIGTERM that the parent process set to be ignored stays ignored.
    Under torchrun (WORLD_SIZE above 1) a rank keeps the default, so that a rank blocked in a
    collective while torchrun tears the job down dies at once, as torchrun expects, rather than
    when the call returns (`train` handles SIGTERM itself while it trains)."""
    if int(os.environ.get("WORLD_SIZE", "1") or 1) > 1:
        return
    if threading.current_thread() is threading.main_thread() and signal.getsignal(signal.SIGTERM) == signal.SIG_DFL:
        signal.signal(signal.SIGTERM, process_stop)


