"""A signal whose `SignalStop` Python swallows is not lost. StopsAtOnce stops a job by raising
where the signal lands; landing in a weakref callback (garbage collection during h5py's or the
process pool's work: "Exception ignored in ... SignalStop: SIGTERM"), the exception went
nowhere, and `prep` wrote its remaining shards and exited 0 (a docs audit reproduced it, about
1 try in 5). The job now stops at its next `stop_if_signalled()`, or as its block ends."""

from __future__ import annotations

import signal
import sys
import weakref

import pytest

from alexnet_cli.errors import Interrupted
from alexnet_cli.stopping import StopsAtOnce, stop_if_signalled


class _Thing:
    pass


def _signal_in_a_weakref_callback(signum: int) -> None:
    """Deliver `signum` while Python runs a weakref callback, which swallows what it raises."""
    thing = _Thing()
    ref = weakref.ref(thing, lambda _: signal.raise_signal(signum))
    del thing
    assert ref() is None


def test_a_swallowed_signal_stops_the_job_at_its_next_check(capsys, monkeypatch):
    monkeypatch.setattr(sys, "unraisablehook", sys.__unraisablehook__)   # Python's own: prints a traceback
    went_on = []
    with pytest.raises(Interrupted) as stopped:
        with StopsAtOnce(lambda: "2 of 5 shards are finished and kept"):
            _signal_in_a_weakref_callback(signal.SIGTERM)
            went_on.append("the job ran on")               # the SignalStop went nowhere
            stop_if_signalled()
            went_on.append("past the check")
    assert went_on == ["the job ran on"]
    assert "Exception ignored" not in capsys.readouterr().err     # no traceback before the one Error: line
    assert stopped.value.signum == signal.SIGTERM
    assert str(stopped.value).startswith("SIGTERM: stopped; 2 of 5 shards are finished and kept; run the same")


def test_a_swallowed_signal_without_a_check_still_ends_the_block_stopped():
    with pytest.raises(Interrupted) as stopped:
        with StopsAtOnce(lambda: "the features are complete"):
            _signal_in_a_weakref_callback(signal.SIGINT)
    assert stopped.value.signum == signal.SIGINT and str(stopped.value).startswith("Ctrl-C: stopped; ")


def test_no_signal_no_stop_and_the_handlers_are_given_back():
    before, hook = signal.getsignal(signal.SIGTERM), sys.unraisablehook
    stop_if_signalled()                                   # outside any block: nothing
    with StopsAtOnce(lambda: "nothing") as stops:
        assert signal.getsignal(signal.SIGTERM) == stops._handle
        stop_if_signalled()                               # no signal: nothing
    assert signal.getsignal(signal.SIGTERM) == before and sys.unraisablehook == hook


def test_a_signal_an_outer_block_swallowed_stops_the_inner_job():
    """`codes` computes the features (a StopsAtOnce block) inside its own: a signal swallowed
    before the inner block began must stop the inner job at its first check, not at the end."""
    steps = []
    with pytest.raises(Interrupted) as stopped:
        with StopsAtOnce(lambda: "outer"):
            _signal_in_a_weakref_callback(signal.SIGTERM)
            with StopsAtOnce(lambda: "inner"):
                for step in range(5):
                    stop_if_signalled()
                    steps.append(step)
    assert steps == [] and stopped.value.signum == signal.SIGTERM
