"""Ctrl-C and SIGTERM during `train`: the run stops after the step in progress, saves where it
is, says how to continue and exits as if killed by the signal; `--resume` goes on from there.
The signals are real ones (signal.raise_signal), sent from inside the training loop."""

from __future__ import annotations

import json
import signal
import time

import pytest
import torch
from typer.testing import CliRunner

from alexnet_cli import train as train_module
from alexnet_cli.checkpoint import load_checkpoint
from alexnet_cli.cli.app import app
from alexnet_cli.stopping import StopRequests
from alexnet_cli.train_state import EpochStats
from signals import signal_after, signal_after_step

runner = CliRunner()
FAST = ["--device", "cpu", "--batch-size", "8", "--log-every", "1", "--workers", "1"]


def _records(out, kind: str) -> list[dict]:
    return [r for r in map(json.loads, (out / "metrics.jsonl").read_text().splitlines()) if r["kind"] == kind]


def test_ctrl_c_stops_after_the_step_saves_and_resume_continues(tiny_data, tmp_path, monkeypatch):
    out = tmp_path / "run"
    args = ["train", str(tiny_data), "--out", str(out), "--max-steps", "4", *FAST]
    signal_after_step(monkeypatch, 2, signal.SIGINT)
    stopped = runner.invoke(app, args)
    assert stopped.exit_code == 130, stopped.output
    error = [line for line in stopped.stderr.splitlines() if line.startswith("Error:")]
    assert len(error) == 1 and "Ctrl-C: stopped at step 2 (in epoch 1, batch 2) and saved" in error[0]
    assert "--resume" in error[0] and "Traceback" not in stopped.output
    assert "stops after this step" in stopped.stderr                     # said when the signal came
    assert load_checkpoint(out / "checkpoints" / "last.pt")["trainer"]["step"] == 2
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler  # the handlers are put back
    monkeypatch.undo()
    resumed = runner.invoke(app, [*args, "--resume"])
    assert resumed.exit_code == 0, resumed.output
    assert [r["step"] for r in _records(out, "train")] == [1, 2, 3, 4]          # each step once
    assert load_checkpoint(out / "checkpoints" / "last.pt")["trainer"]["step"] == 4


class _Terminated(Exception):
    pass


def _terminated(signum, frame):
    raise _Terminated          # stands in for the default action (the end of pytest) if train lets it through


def test_sigterm_exits_143_with_the_position_saved(tiny_data, tmp_path, monkeypatch):
    out = tmp_path / "run"
    signal_after_step(monkeypatch, 1, signal.SIGTERM)
    previous = signal.signal(signal.SIGTERM, _terminated)
    try:
        stopped = runner.invoke(app, ["train", str(tiny_data), "--out", str(out), "--max-steps", "3", *FAST])
        assert signal.getsignal(signal.SIGTERM) is _terminated                    # put back
    finally:
        signal.signal(signal.SIGTERM, previous)
    assert stopped.exit_code == 143, stopped.output
    assert "SIGTERM: stopped at step 1" in stopped.stderr
    ckpt = load_checkpoint(out / "checkpoints" / "last.pt")
    assert (ckpt["trainer"]["step"], ckpt["trainer"]["batch"]) == (1, 1)


def test_a_signal_during_validation_stops_after_the_epochs_save(three_step_data, tmp_path, monkeypatch):
    out = tmp_path / "run"
    signal_after(monkeypatch, train_module, "evaluate_model", signal.SIGINT)
    args = ["train", str(three_step_data), "--out", str(out), "--epochs", "2", *FAST, "--batch-size", "4"]  # 3 steps
    stopped = runner.invoke(app, args)
    assert stopped.exit_code == 130, stopped.output
    assert "stopped at step 3 (after epoch 1)" in stopped.stderr
    trainer = load_checkpoint(out / "checkpoints" / "last.pt")["trainer"]
    assert (trainer["epoch"], trainer["batch"], trainer["step"]) == (1, 0, 3)
    assert len(_records(out, "epoch")) == 1


def test_a_signal_when_no_work_is_left_lets_the_run_end_as_usual(tiny_data, three_step_data, tmp_path, monkeypatch):
    """Ctrl-C during the last epoch's validation, or on the --max-steps step: the run is
    complete (saved as usual), so it ends as usual, exit 0, not as interrupted; and says so,
    rather than only that it "stops after this step" (docs/training.md)."""
    signal_after(monkeypatch, train_module, "evaluate_model", signal.SIGINT)
    out = tmp_path / "last-epoch"
    done = runner.invoke(app, ["train", str(three_step_data), "--out", str(out), "--epochs", "1", *FAST,
                               "--batch-size", "4"])                                     # 3 steps
    assert done.exit_code == 0 and done.stdout.startswith("done: 1 epoch, 3 steps"), done.output
    said = " ".join(done.stderr.split())
    assert "Ctrl-C: training has no step left: it ends after its last validation and save" in said
    assert "stops after this step" not in said
    assert (f"Note: the Ctrl-C came after the last step, with nothing left to stop: the run ends as usual, saved at "
            f"step 3 in {out / 'checkpoints' / 'last.pt'}") in said
    monkeypatch.undo()
    signal_after_step(monkeypatch, 2, signal.SIGINT)
    out = tmp_path / "max-steps"
    done = runner.invoke(app, ["train", str(tiny_data), "--out", str(out), "--max-steps", "2", *FAST])
    assert done.exit_code == 0 and done.stdout.startswith("stopped: 0 epochs, 2 steps"), done.output
    assert "Note: the Ctrl-C came after the last step, with nothing left to stop" in " ".join(done.stderr.split())


def test_a_second_ctrl_c_stops_at_once_and_the_handlers_are_restored():
    before = signal.getsignal(signal.SIGINT), signal.getsignal(signal.SIGTERM)
    with StopRequests("the test") as stop:
        signal.raise_signal(signal.SIGTERM)
        signal.raise_signal(signal.SIGTERM)              # a repeated SIGTERM changes nothing
        assert stop.signum == signal.SIGTERM
        with pytest.raises(KeyboardInterrupt):
            signal.raise_signal(signal.SIGINT)
    assert (signal.getsignal(signal.SIGINT), signal.getsignal(signal.SIGTERM)) == before


def test_an_epochs_time_counts_its_training_before_a_resume():
    stats = EpochStats(4, torch.device("cpu"))
    stats.t_epoch -= 30.0                                 # 30 s into the epoch when saved
    saved = stats.state_dict()
    resumed = EpochStats(4, torch.device("cpu"))
    time.sleep(0.01)
    resumed.load_state_dict(saved)
    assert 30.0 <= resumed.epoch_time() < 31.0
    old = {k: v for k, v in saved.items() if k != "epoch_time_s"}   # a checkpoint from before the key
    EpochStats(4, torch.device("cpu")).load_state_dict(old)


def test_the_rate_after_a_resume_counts_only_the_steps_it_timed():
    """Resumed 3 steps into a 4-step log interval: the logged images/s are those of the one
    step this process ran, not 4 steps' images over one step's time."""
    stats = EpochStats(4, torch.device("cpu"))
    for _ in range(3):
        stats.update(torch.zeros(8, 4), torch.zeros(8, dtype=torch.int64), torch.tensor(1.0))
    resumed = EpochStats(4, torch.device("cpu"))
    resumed.load_state_dict(stats.state_dict())
    resumed.update(torch.zeros(8, 4), torch.zeros(8, dtype=torch.int64), torch.tensor(1.0))
    resumed.t_interval -= 1.0                                      # the one step took a second
    loss, steps, rate = resumed.interval(8)
    assert loss == pytest.approx(1.0) and steps == 4 and rate == pytest.approx(8.0, rel=0.05)


@pytest.mark.parametrize("signum, says, not_said", [
    (signal.SIGINT, "press Ctrl-C again to stop at once", "SIGTERM"),
    (signal.SIGTERM, "further SIGTERMs are ignored; Ctrl-C or SIGKILL stops at once", "press Ctrl-C again")])
def test_the_stop_message_says_what_a_second_signal_does(capsys, signum, says, not_said):
    """A SIGTERM was answered "(press Ctrl-C again to stop at once, ...)": odd for a scheduler's
    signal, and a second SIGTERM is ignored."""
    with StopRequests("the test") as stop:
        signal.raise_signal(signum)
        assert stop.signum == signum
    said = capsys.readouterr().err
    assert "the test stops after this step and saves where it is" in said
    assert says in said and not_said not in said
