"""Ctrl-C and SIGTERM outside `train` (tests/test_interrupt.py has train's): `ablate` starts no
other run or evaluation once asked to stop; `features`, `codes`, `prep` and the pca pass stop
with one `Error:` line naming the signal, what was saved and how to continue, exit 130 / 143.
The signals are real ones (signal.raise_signal), sent from inside the job at a chosen point."""

from __future__ import annotations

import json
import shutil
import signal
from contextlib import contextmanager

import pytest
from typer.testing import CliRunner

from alexnet_cli import ablate as ablate_module
from alexnet_cli import train as train_module
from alexnet_cli.checkpoint import load_checkpoint
from alexnet_cli.cli import codes as codes_cli, features as features_cli, prep as prep_cli
from alexnet_cli.cli.app import app
from alexnet_cli.codes import codes_path, state_path
from alexnet_cli.errors import Interrupted
from alexnet_cli.features import read_features_info
from alexnet_cli.pca import PARTIAL_FILE, compute_pca
from alexnet_cli.progress import NullReporter
from alexnet_cli.stopping import StopRequests, StopsAtOnce
from signals import signal_after, signal_after_step

runner = CliRunner()
ABLATE = ["--variants", "no-lrn", "--crops", "1", "--device", "cpu", "--log-every", "1", "--workers", "1",
          "--eval-batch-size", "16"]
AGAIN = "run the same command again to continue"


def _error_line(result) -> str:
    lines = [line for line in result.output.splitlines() if line.startswith("Error")]
    assert len(lines) == 1 and "Traceback" not in result.output, result.output
    return lines[0]


class _Terminated(Exception):
    pass


def _terminated(signum, frame):
    raise _Terminated          # stands in for the default action (the end of pytest) if a command lets it through


@pytest.fixture
def sigterm_guard():
    previous = signal.signal(signal.SIGTERM, _terminated)
    yield
    assert signal.getsignal(signal.SIGTERM) is _terminated                  # put back by the command
    signal.signal(signal.SIGTERM, previous)


# ------------------------------------------------------------------------------------ ablate

def test_ablate_stops_when_the_signal_comes_on_a_runs_last_step(tiny_data, tmp_path, monkeypatch):
    """The audit's case: the Ctrl-C came when the full network's run had no step left (here
    its --max-steps step): its run ends saved, and ablate trains and evaluates nothing more."""
    out = tmp_path / "abl"
    signal_after_step(monkeypatch, 1, signal.SIGINT)
    stopped = runner.invoke(app, ["ablate", str(tiny_data), "--out", str(out), "--max-steps", "1", "--batch-size", "4",
                                  *ABLATE])
    assert stopped.exit_code == 130, stopped.output
    error = _error_line(stopped)
    assert (f"Error: Ctrl-C: ablate stopped after training full (step 1, saved in {out / 'full'}" in error
            and "runs trained: full (1 of 2); evaluated: none of 2" in error and error.endswith(AGAIN)), error
    said = " ".join(stopped.stderr.split())
    assert "Note: the Ctrl-C came after the last step, with nothing left to stop: the run ends as usual" in said
    assert "run 2 of 2" not in said and "evaluating" not in said
    assert not (out / "no-lrn").exists() and not (out / "ablations.json").exists()
    assert load_checkpoint(out / "full" / "checkpoints" / "last.pt")["trainer"]["step"] == 1
    # a rerun continues (tests/test_ablate.py): the full run has nothing left, then no-lrn trains


def test_ablate_stops_when_sigterm_comes_in_a_runs_last_validation(three_step_data, tmp_path, monkeypatch,
                                                                   sigterm_guard):
    signal_after(monkeypatch, train_module, "evaluate_model", signal.SIGTERM)
    out = tmp_path / "abl"
    stopped = runner.invoke(app, ["ablate", str(three_step_data), "--out", str(out), "--epochs", "1", "--batch-size",
                                  "4", *ABLATE])                       # 12 images: 3 steps, then the validation
    assert stopped.exit_code == 143, stopped.output
    assert "SIGTERM: ablate stopped after training full (step 3," in _error_line(stopped)
    said = " ".join(stopped.stderr.split())
    assert "SIGTERM: training has no step left: it ends after its last validation and save" in said
    assert not (out / "no-lrn").exists()
    assert load_checkpoint(out / "full" / "checkpoints" / "last.pt")["trainer"]["epoch"] == 1


def test_ablate_stops_inside_a_run_naming_the_runs_done(tiny_data, tmp_path, monkeypatch):
    signal_after_step(monkeypatch, 3, signal.SIGINT)                  # the full run's 2 steps, no-lrn's first
    out = tmp_path / "abl"
    stopped = runner.invoke(app, ["ablate", str(tiny_data), "--out", str(out), "--max-steps", "2",
                                  "--batch-size", "4", *ABLATE])
    assert stopped.exit_code == 130, stopped.output
    error = _error_line(stopped)
    assert (f"Ctrl-C: ablate stopped while training no-lrn, at step 1 (in epoch 1, batch 1) and saved "
            f"{out / 'no-lrn' / 'checkpoints' / 'last.pt'}; runs trained: full (1 of 2)" in error
            and error.endswith(AGAIN)), error
    assert load_checkpoint(out / "no-lrn" / "checkpoints" / "last.pt")["trainer"]["step"] == 1


def test_ablate_evaluates_no_other_run_once_asked_to_stop(tiny_data, tmp_path, monkeypatch):
    signal_after(monkeypatch, ablate_module, "_evaluate", signal.SIGINT)
    out = tmp_path / "abl"
    stopped = runner.invoke(app, ["ablate", str(tiny_data), "--out", str(out), "--max-steps", "1",
                                  "--batch-size", "4", *ABLATE])
    assert stopped.exit_code == 130, stopped.output
    error = _error_line(stopped)
    assert "Ctrl-C: ablate stopped before evaluating no-lrn; runs trained: full, no-lrn (2 of 2); " \
           "evaluated: full (1 of 2)" in error, error
    assert "ablate stops before its next step or evaluation and saves where it is" in stopped.stderr
    doc = json.loads((out / "ablations.json").read_text())
    assert not doc["complete"] and [v["name"] for v in doc["variants"]] == ["full"]


def test_a_signal_between_runs_stops_the_next_before_its_first_step(tiny_data, tmp_path, monkeypatch):
    """Ctrl-C after ablate looked for a stop and before the run's training began (here: while
    it checks what an earlier ablate did): the run takes the request over and stops at once."""
    done_before = ablate_module._done_before

    def signalling(previous, settings, run_dir):
        if run_dir.name == "no-lrn":
            signal.raise_signal(signal.SIGINT)
        return done_before(previous, settings, run_dir)
    monkeypatch.setattr(ablate_module, "_done_before", signalling)
    out = tmp_path / "abl"
    stopped = runner.invoke(app, ["ablate", str(tiny_data), "--out", str(out), "--max-steps", "1",
                                  "--batch-size", "4", *ABLATE])
    assert stopped.exit_code == 130, stopped.output
    assert ("Error: Ctrl-C: ablate stopped while training no-lrn, before the first step; nothing was saved; runs "
            "trained: full (1 of 2); evaluated: none of 2; run the same command again to continue") == \
        _error_line(stopped)
    assert not (out / "no-lrn" / "checkpoints" / "last.pt").exists()


def test_a_request_made_outside_a_run_is_the_runs_and_comes_back(sigterm_guard):
    """ablate's requests and its runs' (train.py) are one: a run started after a Ctrl-C stops
    before its first step, and a signal during a run is ablate's once the run is over."""
    with StopRequests("outer") as outer:
        signal.raise_signal(signal.SIGTERM)
        with StopRequests("inner") as inner:
            assert inner.signum == signal.SIGTERM
            with pytest.raises(KeyboardInterrupt):                 # the second: at once
                signal.raise_signal(signal.SIGINT)
    with StopRequests("outer") as outer:
        with StopRequests("inner"):
            signal.raise_signal(signal.SIGINT)
        assert outer.signum == signal.SIGINT
    with StopRequests("outer") as outer:                            # the outer's own request stays its own
        signal.raise_signal(signal.SIGTERM)
        with StopRequests("inner") as inner:
            assert inner.signum == signal.SIGTERM
        assert outer.signum == signal.SIGTERM


def test_advice_already_given_is_not_given_twice():
    """demo adds "run the same command again" to a stop whose step (prep, pca) said it already."""
    said = Interrupted(f"Ctrl-C: stopped; 2 shards are kept; {Interrupted.AGAIN}")
    assert str(said.advising(Interrupted.AGAIN)) == str(said)
    assert str(Interrupted("Ctrl-C: stopped").advising(Interrupted.AGAIN)) == f"Ctrl-C: stopped; {Interrupted.AGAIN}"


# ----------------------------------------------------------------- features, codes, prep, pca

class _SignalAt(NullReporter):
    """A reporter that sends `signum` to this process at the `after`-th advance of a task, or
    at the first log line containing `line`."""

    def __init__(self, signum: int, after: int | None = None, line: str | None = None):
        self.signum, self.after, self.line, self.advances = signum, after, line, 0

    @contextmanager
    def task(self, description, total, unit="it", done=0):
        yield self

    def advance(self, n=1, **info):
        self.advances += 1
        if self.advances == self.after:
            signal.raise_signal(self.signum)

    def log(self, message, mentions=()):
        if self.line is not None and self.line in message:
            signal.raise_signal(self.signum)


@pytest.fixture(scope="module")
def checkpoint(tiny_data, tmp_path_factory, make_checkpoint):
    return make_checkpoint(tmp_path_factory.mktemp("stops_ckpt") / "model.pt", tiny_data)


@pytest.mark.parametrize("signum, code, name", [(signal.SIGINT, 130, "Ctrl-C"), (signal.SIGTERM, 143, "SIGTERM")])
def test_features_stops_saying_what_it_kept_and_a_rerun_finishes(tiny_data, checkpoint, tmp_path, monkeypatch,
                                                                  sigterm_guard, signum, code, name):
    out = tmp_path / "val.h5"
    args = ["features", str(checkpoint), str(tiny_data), "--out", str(out), "--split", "val", "--batch-size", "8",
            "--device", "cpu", "--workers", "1"]
    monkeypatch.setattr(features_cli, "reporter", lambda: _SignalAt(signum, after=1))   # after the first 8 of 16
    stopped = runner.invoke(app, args)
    assert stopped.exit_code == code, stopped.output
    assert _error_line(stopped) == (f"Error: {name}: stopped; the features of 8 of 16 images are kept in "
                                    f"{out}.partial; {AGAIN}")
    assert read_features_info(f"{out}.partial").done == 8
    monkeypatch.undo()
    again = runner.invoke(app, args)
    assert again.exit_code == 0 and read_features_info(out).complete, again.output


def test_codes_stops_after_an_epoch_saying_what_it_kept(tiny_data, checkpoint, tmp_path, monkeypatch, sigterm_guard):
    features = tmp_path / "val.h5"
    made = runner.invoke(app, ["features", str(checkpoint), str(tiny_data), "--out", str(features), "--split", "val",
                               "--device", "cpu", "--workers", "1"])
    assert made.exit_code == 0, made.output
    args = ["codes", str(checkpoint), str(tiny_data), "--split", "val", "--features", str(features), "--bits", "64",
            "--epochs", "2", "--device", "cpu"]
    monkeypatch.setattr(codes_cli, "reporter", lambda: _SignalAt(signal.SIGTERM, line="codes: epoch 1/2"))
    stopped = runner.invoke(app, args)
    assert stopped.exit_code == 143, stopped.output
    assert _error_line(stopped) == (f"Error: SIGTERM: stopped; the auto-encoder's training after epoch 1 of 2 is "
                                    f"kept in {state_path(features, 64)}; {AGAIN}")
    assert not codes_path(features, 64).exists()
    monkeypatch.undo()
    again = runner.invoke(app, args)
    assert again.exit_code == 0 and codes_path(features, 64).exists(), again.output


def test_prep_stops_keeping_its_finished_shards(tiny_tree, tmp_path, monkeypatch, sigterm_guard):
    out = tmp_path / "data"
    args = ["prep", str(tiny_tree), str(out), "--workers", "1", "--shard-size", "16", "--block-size", "8"]
    monkeypatch.setattr(prep_cli, "reporter", lambda: _SignalAt(signal.SIGTERM, after=2))   # in the second shard
    stopped = runner.invoke(app, args)
    assert stopped.exit_code == 143, stopped.output
    assert _error_line(stopped) == f"Error: SIGTERM: stopped; 1 of 4 shards are finished and kept in {out}; {AGAIN}"
    monkeypatch.undo()
    again = runner.invoke(app, args)
    assert again.exit_code == 0 and (out / "manifest.json").exists(), again.output


def test_the_pca_pass_stops_after_its_batch_with_the_sums_saved(tiny_data, tmp_path, capsys):
    data = shutil.copytree(tiny_data, tmp_path / "data")
    (data / PARTIAL_FILE).unlink(missing_ok=True)
    with pytest.raises(Interrupted) as stopped:
        compute_pca(data, batch_size=8, progress=_SignalAt(signal.SIGINT, after=1))
    assert stopped.value.signum == signal.SIGINT
    assert str(stopped.value) == (f"Ctrl-C: stopped the pca pass at image 8 of 48; its sums are saved in "
                                  f"{data / PARTIAL_FILE}; {AGAIN}")
    assert json.loads((data / PARTIAL_FILE).read_text())["images"] == 8
    assert "the pca pass stops after this batch and saves where it is" in capsys.readouterr().err


def test_a_keyboard_interrupt_not_from_a_signal_passes_as_it_is():
    """StopsAtOnce turns only its own signals into Interrupted: a KeyboardInterrupt raised by
    code (a test's reporter, an outer handler) is left alone."""
    with pytest.raises(KeyboardInterrupt) as raised:
        with StopsAtOnce(lambda: "nothing"):
            raise KeyboardInterrupt
    assert not isinstance(raised.value, Interrupted)
    with pytest.raises(Interrupted, match="^Ctrl-C: stopped; nothing; run the same"):
        with StopsAtOnce(lambda: "nothing"):
            try:
                signal.raise_signal(signal.SIGINT)
            except KeyboardInterrupt as exc:            # a library's wrapping (torch.save's)
                raise RuntimeError("wrapped") from exc
