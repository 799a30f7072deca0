"""Real signals (signal.raise_signal) sent from inside a job at a chosen point: the helpers of
the Ctrl-C and SIGTERM tests (test_interrupt.py, test_stops.py)."""

from __future__ import annotations

import signal
from typing import Any

from alexnet_cli.train import Trainer


def signal_after(monkeypatch, owner: Any, name: str, signum: int, n: int = 1) -> None:
    """Send `signum` as the `n`-th call of `owner.name` returns (and after each one past it)."""
    function, calls = getattr(owner, name), []

    def signalling(*args, **kwargs):
        result = function(*args, **kwargs)
        calls.append(1)
        if len(calls) >= n:
            signal.raise_signal(signum)
        return result
    monkeypatch.setattr(owner, name, signalling)


def signal_after_step(monkeypatch, n: int, signum: int) -> None:
    """Send `signum` as the `n`-th training step (Trainer.train_step) of the test returns."""
    step, done = Trainer.train_step, []

    def signalling(self, x, y):
        result = step(self, x, y)
        done.append(1)
        if len(done) == n:
            signal.raise_signal(signum)
        return result
    monkeypatch.setattr(Trainer, "train_step", signalling)
