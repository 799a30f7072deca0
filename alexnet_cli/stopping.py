"""Ctrl-C and SIGTERM during a long job: one mechanism, two ways to stop.

A signal can arrive between any two bytecodes: in the middle of an optimizer step (half the
weights updated) or of a save. While one of the contexts below is entered (in the main
thread; elsewhere they do nothing), the first SIGINT or SIGTERM is the job's to handle:

- `StopRequests` (train, ablate, the pca pass): a request to stop at the next safe point. It
  says that the job will stop, and only records it; the job looks at `signum` where its state
  is whole (training: after a step), saves, and stops with `errors.Interrupted`. A second
  Ctrl-C stops at once, as without it (the last save stands); further SIGTERMs are ignored (a
  scheduler's SIGKILL follows anyway). Entered inside another one (a run that ablate trains),
  it takes over the request made so far and hands its own back when it leaves, so that a
  signal is never lost between the two.
- `StopsAtOnce` (features, codes, prep: jobs whose files are whole at every instant, written
  atomically or flushed row by row): the signal stops the job where it is, and the job's
  `Interrupted` names the signal, what was saved and how to continue. A signal that lands
  where Python ignores exceptions (a weakref callback, a __del__: "Exception ignored in ...")
  is not lost: the job stops at its next `stop_if_signalled()`, or as the block ends.

The CLI's error boundary (cli/app.py) prints an `Interrupted` as one `Error:` line and exits
with 128 + its signal (130 for Ctrl-C, 143 for SIGTERM).
"""

from __future__ import annotations

import signal
import sys
import threading
from types import FrameType
from typing import Callable

from alexnet_cli.errors import Interrupted


def signal_name(signum: int) -> str:
    """How a person calls the signal: "Ctrl-C" for SIGINT, else its name ("SIGTERM")."""
    return "Ctrl-C" if signum == signal.SIGINT else signal.Signals(signum).name


def interrupt_behind(exc: BaseException | None) -> KeyboardInterrupt | None:
    """The Ctrl-C (or `SignalStop`) behind `exc`, if any: torch.save's writer, for one,
    replaces a KeyboardInterrupt raised inside it with its own RuntimeError."""
    seen = set()
    while exc is not None and id(exc) not in seen:
        if isinstance(exc, KeyboardInterrupt):
            return exc
        seen.add(id(exc))
        exc = exc.__cause__ or exc.__context__
    return None


class SignalStop(KeyboardInterrupt):
    """What `StopsAtOnce` raises where the signal lands: a KeyboardInterrupt (whatever lets a
    Ctrl-C through, or cleans up after one, does the same for it) that knows its signal."""

    def __init__(self, signum: int) -> None:
        super().__init__(signal_name(signum))
        self.signum = int(signum)


_process_signals: list[int] = []   # what `process_stop` raised: a SignalStop some code may have swallowed


def process_stop(signum: int, frame: FrameType | None) -> None:
    """The process-wide SIGTERM handler of the `alexnet` command (cli.main): `SignalStop` where
    it lands, and the signal recorded, so that a stop that code swallowed (an import inside a
    library that catches what its C extension raised) still stops the job: the next
    `StopRequests` or `StopsAtOnce` entered has it, `stop_if_signalled` raises it, and the
    command's end says it (`process_signal`)."""
    _process_signals.append(int(signum))
    raise SignalStop(signum)


def process_signal() -> int | None:
    """The signal `process_stop` raised, if one came (the process is stopping)."""
    return _process_signals[0] if _process_signals else None


class _Handlers:
    """Installs `_handle` for SIGINT and SIGTERM while entered (in the main thread only) and
    puts the previous handlers back when left."""

    SIGNALS = (signal.SIGINT, signal.SIGTERM)

    def __init__(self) -> None:
        self._previous: dict[int, object] = {}

    def __enter__(self):
        if threading.current_thread() is threading.main_thread():
            for s in self.SIGNALS:
                self._previous[s] = signal.signal(s, self._handle)
        return self

    def _restore(self) -> None:
        for s, handler in self._previous.items():
            signal.signal(s, signal.SIG_DFL if handler is None else handler)   # None: set from C, not Python
        self._previous.clear()

    def _outer(self) -> object:
        """The handler this one replaced (of SIGINT), while entered."""
        return self._previous.get(signal.SIGINT)

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        raise NotImplementedError


# What a second signal does (StopRequests._handle), said when the first one comes.
_AGAIN = {signal.SIGINT: "press Ctrl-C again to stop at once, losing the work since the last save",
          signal.SIGTERM: "further SIGTERMs are ignored; Ctrl-C or SIGKILL stops at once, losing the work "
                          "since the last save"}


class StopRequests(_Handlers):
    """While entered, the first SIGINT or SIGTERM sets `signum` instead of stopping the
    process, and says "<what> stops <when> and saves where it is"; `finishing` changes that
    for the end of a job that has nothing left to stop."""

    def __init__(self, what: str = "the run", when: str = "after this step"):
        super().__init__()
        self.what, self.when = what, when
        self.signum: int | None = None
        self.ending: str | None = None

    def __enter__(self) -> StopRequests:
        super().__enter__()
        outer = getattr(self._outer(), "__self__", None)
        if isinstance(outer, StopRequests) and self.signum is None:
            self.signum = outer.signum             # a request made before this job began is this job's too
        if self.signum is None:
            self.signum = process_signal()         # so is a stop swallowed before it began
        return self

    def __exit__(self, *exc) -> None:
        outer = getattr(self._outer(), "__self__", None)
        if isinstance(outer, StopRequests) and outer.signum is None:
            outer.signum = self.signum             # and one made during it is the enclosing job's too,
        self._restore()                            # before its handler is back: a second signal is a second

    def finishing(self, ending: str) -> None:
        """From now on a first signal says `ending` (what happens instead): the job has no
        more steps, only its last saves, to do."""
        self.ending = ending

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        if self.signum is not None:
            if signum == signal.SIGINT:
                raise KeyboardInterrupt           # a second Ctrl-C: at once
            return
        self.signum = signum
        name = signal_name(signum)
        said = self.ending or f"{self.what} stops {self.when} and saves where it is"
        try:      # straight to stderr: the handler may run inside the progress bar's own writing
            sys.stderr.write(f"\n{name}: {said} ({_AGAIN[signum]})\n")
            sys.stderr.flush()
        except (OSError, RuntimeError, ValueError):   # a reentrant write, a closed stream: the stop still happens
            pass


class StopsAtOnce(_Handlers):
    """While entered, SIGINT or SIGTERM stops the job at once (`SignalStop`, where it lands);
    leaving, its stop (behind any exception: torch.save wraps it) becomes `Interrupted`: "<signal>: stopped;
    <saved()>; run the same command again to continue". `saved` says, once stopped, what the
    job had saved (where it stopped). An `Interrupted` from a job inside passes as it is. A
    SignalStop that Python swallowed (raised in a weakref callback) stops the job at its next
    `stop_if_signalled()`, or makes the block's normal end an `Interrupted` all the same."""

    def __init__(self, saved: Callable[[], str]):
        super().__init__()
        self.saved = saved
        self.signum: int | None = None       # the signal that came (its SignalStop may have been swallowed)

    def __enter__(self) -> StopsAtOnce:
        super().__enter__()
        self._main = threading.current_thread() is threading.main_thread()   # elsewhere: no handlers, nothing
        if self._main:
            _at_once.append(self)
            self._unraisable = sys.unraisablehook
            sys.unraisablehook = self._swallowed
            self.signum = process_signal()       # a stop swallowed before it began: the job stops at its first check
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        self._restore()
        if self._main:
            _at_once.remove(self)
            sys.unraisablehook = self._unraisable
        if isinstance(exc, Interrupted):
            return
        stop = interrupt_behind(exc)
        if isinstance(stop, SignalStop):
            signum = stop.signum
        elif exc is None and self.signum is not None:   # swallowed, and the job ran on to its end
            signum = self.signum
        else:                                 # an error, or a KeyboardInterrupt raised by code, not by a signal here
            return
        try:
            saved = self.saved()
        except Exception:                   # noqa: BLE001 - a file it reads half written: say less
            saved = "what it finished is kept"
        raise Interrupted(f"{signal_name(signum)}: stopped; {saved}; {Interrupted.AGAIN}", signum) from None

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        self.signum = signum
        raise SignalStop(signum)

    def _swallowed(self, unraisable) -> None:
        """sys.unraisablehook while entered: a SignalStop that Python swallowed is recorded in
        `signum` already; printing its traceback ("Exception ignored in ...") would break the
        one `Error:` line the stop ends with. Anything else is printed as before."""
        if not isinstance(unraisable.exc_value, SignalStop):
            self._unraisable(unraisable)


_at_once: list[StopsAtOnce] = []     # the StopsAtOnce blocks entered, innermost last


def stop_if_signalled() -> None:
    """Raise the `SignalStop` of a signal that came while a `StopsAtOnce` (the innermost that
    had one) was entered, where Python swallowed it (a weakref callback): a job calls it at points where
    it can stop, or of one `process_stop` raised and some code swallowed; else it does nothing."""
    for block in reversed(_at_once):       # an outer block's signal stops the inner job too
        if block.signum is not None:
            raise SignalStop(block.signum)
    if process_signal() is not None:       # one the process-wide handler raised, swallowed
        raise SignalStop(process_signal())
