"""Ctrl-C and SIGTERM during a long job, turned into a request to stop at the next safe point.

A signal can arrive between any two bytecodes: in the middle of an optimizer step (half the
weights updated) or of a save. `StopRequests` catches the first SIGINT or SIGTERM, says that
the job will stop, and only records it; the job looks at `signum` where its state is whole
(training: after a step), saves, and stops. A second Ctrl-C stops at once, as without it (the
last checkpoint stands); further SIGTERMs are ignored (a scheduler's SIGKILL follows anyway).
"""

from __future__ import annotations

import signal
import sys
import threading
from types import FrameType


def signal_name(signum: int) -> str:
    """How a person calls the signal: "Ctrl-C" for SIGINT, else its name ("SIGTERM")."""
    return "Ctrl-C" if signum == signal.SIGINT else signal.Signals(signum).name


# What a second signal does (StopRequests._handle), said when the first one comes.
_AGAIN = {signal.SIGINT: "press Ctrl-C again to stop at once, losing the steps since the last save",
          signal.SIGTERM: "further SIGTERMs are ignored; Ctrl-C or SIGKILL stops at once, losing the steps "
                          "since the last save"}


class StopRequests:
    """While entered (in the main thread; elsewhere it does nothing), the first SIGINT or
    SIGTERM sets `signum` instead of stopping the process."""

    SIGNALS = (signal.SIGINT, signal.SIGTERM)

    def __init__(self, what: str = "the run", when: str = "after this step"):
        self.what, self.when = what, when
        self.signum: int | None = None
        self._previous: dict[int, object] = {}

    def __enter__(self) -> StopRequests:
        if threading.current_thread() is threading.main_thread():
            for s in self.SIGNALS:
                self._previous[s] = signal.signal(s, self._handle)
        return self

    def __exit__(self, *exc) -> None:
        for s, handler in self._previous.items():
            signal.signal(s, signal.SIG_DFL if handler is None else handler)   # None: set from C, not Python
        self._previous.clear()

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        if self.signum is not None:
            if signum == signal.SIGINT:
                raise KeyboardInterrupt           # a second Ctrl-C: at once
            return
        self.signum = signum
        name = signal_name(signum)
        try:      # straight to stderr: the handler may run inside the progress bar's own writing
            sys.stderr.write(f"\n{name}: {self.what} stops {self.when} and saves where it is ({_AGAIN[signum]})\n")
            sys.stderr.flush()
        except (OSError, RuntimeError, ValueError):   # a reentrant write, a closed stream: the stop still happens
            pass
