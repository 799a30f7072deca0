"""Workers follow the cores a process may use (its CPU affinity), not the machine's count."""

from __future__ import annotations

import os

import pytest

from alexnet_cli import machine
from alexnet_cli.loader import default_workers


@pytest.mark.skipif(not hasattr(os, "sched_getaffinity"), reason="no CPU affinity on this system")
def test_workers_follow_the_cpu_affinity_not_the_machine(monkeypatch):
    """A cluster job given 3 cores of a 128-core node: 3 cores to use, so jpeg decoding gets
    1 thread (all but two), raw reading 2 (all but one), whatever os.cpu_count() says."""
    monkeypatch.setattr(os, "cpu_count", lambda: 128)
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {4, 5, 6})
    assert machine.usable_cores() == 3
    assert default_workers("jpeg") == 1 and default_workers("raw") == 2


def test_without_affinity_every_core_counts(monkeypatch):
    monkeypatch.delattr(os, "sched_getaffinity", raising=False)
    monkeypatch.setattr(os, "cpu_count", lambda: 12)
    assert machine.usable_cores() == 12
    assert default_workers("jpeg") == 10 and default_workers("raw") == 8
