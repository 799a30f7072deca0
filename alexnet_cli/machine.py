"""What of the machine this process may use."""

from __future__ import annotations

import os


def usable_cores() -> int:
    """The cores this process may run on: its CPU affinity (what `taskset`, a cluster's job
    or a container's cpuset gives it), not every core of the machine, so that a job given 8
    cores of a 128-core node starts 8 workers, not 128."""
    try:
        return len(os.sched_getaffinity(0)) or 1
    except (AttributeError, OSError):          # no affinity on this system (macOS, Windows)
        return os.cpu_count() or 1
