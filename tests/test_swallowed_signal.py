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


# ------------------------------------------------------------- swallowed before any job began
# The `alexnet` command's own SIGTERM handler (stopping.process_stop) raises where the signal
# lands. A robustness audit caught one landing in torch's lazy `import triton` while `train` built
# its optimizer: the import's own `except ImportError` ate it, and the run trained to its end and
# exited 0 (about 1 try in 40).

@pytest.fixture
def process_handler():
    """process_stop installed for SIGTERM, and no signal recorded before or after the test."""
    from alexnet_cli import stopping

    previous = signal.signal(signal.SIGTERM, stopping.process_stop)
    stopping._process_signals.clear()
    yield stopping
    stopping._process_signals.clear()
    signal.signal(signal.SIGTERM, previous)


def _swallowed_by_code():
    try:
        signal.raise_signal(signal.SIGTERM)
    except Exception as exc:           # noqa: BLE001 - SignalStop is no Exception: it goes through
        raise AssertionError(exc)
    except BaseException:              # what the import did: the stop goes nowhere
        pass


def test_a_stop_swallowed_before_a_job_began_stops_the_job(process_handler):
    from alexnet_cli.stopping import SignalStop, StopRequests

    _swallowed_by_code()
    assert process_handler.process_signal() == signal.SIGTERM
    with StopRequests() as requests:                      # train's: stops before its first step
        assert requests.signum == signal.SIGTERM
    with pytest.raises(Interrupted) as stopped:           # prep's, features', codes'
        with StopsAtOnce(lambda: "nothing was written"):
            stop_if_signalled()
    assert stopped.value.signum == signal.SIGTERM
    with pytest.raises(SignalStop):                       # and outside any block
        stop_if_signalled()


def test_a_command_that_ran_on_after_a_swallowed_sigterm_ends_with_143(tmp_path):
    """The command's end says it: `Error: terminated`, exit 143, not 0."""
    import subprocess

    code = ("import signal, sys\n"
            "import alexnet_cli.summary as summary\n"
            "real = summary.summarize\n"
            "def swallowing(model):\n"
            "    try:\n"
            "        signal.raise_signal(signal.SIGTERM)\n"
            "    except BaseException:\n"
            "        pass\n"
            "    return real(model)\n"
            "summary.summarize = swallowing\n"
            "sys.argv = ['alexnet', 'summary', '--json']\n"
            "from alexnet_cli.cli import main\n"
            "main()\n")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 143, done.stderr
    assert done.stderr.startswith("Error: terminated") and done.stderr.count("\n") == 1, done.stderr
