"""The `alexnet` command: one module per subcommand, wired together in `app.py`."""

from __future__ import annotations

import sys


def main() -> None:
    """The `alexnet` command (the console script). The subcommands import torch, 2-3 s of
    start-up before app.py's error boundary exists: a Ctrl-C then is `Error: interrupted`
    (exit 130) like one at any other moment, never a traceback."""
    try:
        from alexnet_cli.cli.app import app
    except KeyboardInterrupt:
        sys.stderr.write("Error: interrupted\n")
        sys.exit(130)
    app()
