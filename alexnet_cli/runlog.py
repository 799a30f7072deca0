"""What a run folder records: config.json (the resolved settings) and metrics.jsonl (one
JSON object per log interval and per epoch), optionally mirrored to TensorBoard.

Only rank 0 writes. On --resume the metrics file is cut back to the length it had when the
checkpoint was written, so a killed and resumed run logs each step exactly once.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from alexnet_cli.errors import AlexnetError
from alexnet_cli.shards import write_atomic


def write_json_atomic(path: Path, data: Any) -> None:
    write_atomic(path, (json.dumps(data, indent=2) + "\n").encode("utf-8"))


class MetricsLog:
    """Appends JSON lines to RUN/metrics.jsonl (and TensorBoard scalars when asked)."""

    def __init__(self, run_dir: Path, *, enabled: bool = True, tensorboard: bool = False):
        self.path = run_dir / "metrics.jsonl"
        self.enabled = enabled
        self._tb = None
        if enabled and tensorboard:
            try:
                from torch.utils.tensorboard import SummaryWriter
            except ImportError:
                raise AlexnetError("--tensorboard needs the tensorboard package: "
                                   "pip install 'alexnet-cli[tensorboard]'") from None
            self._tb = SummaryWriter(str(run_dir / "tensorboard"))

    def offset(self) -> int:
        return self.path.stat().st_size if self.enabled and self.path.exists() else 0

    def truncate(self, offset: int) -> None:
        """Forget what was logged after a checkpoint (called on resume)."""
        if self.enabled and self.path.exists():
            with open(self.path, "r+b") as f:
                f.truncate(offset)

    def write(self, record: dict[str, Any]) -> None:
        if not self.enabled:
            return
        with open(self.path, "a") as f:
            f.write(json.dumps(record) + "\n")
        if self._tb is not None:
            step = record.get("step", 0)
            for key, value in record.items():
                if isinstance(value, (int, float)) and key not in ("step", "epoch"):
                    self._tb.add_scalar(f"{record.get('kind', 'train')}/{key}", value, step)

    def close(self) -> None:
        if self._tb is not None:
            self._tb.close()


def read_metrics(run_dir: str | Path) -> list[dict[str, Any]]:
    """The records of RUN/metrics.jsonl. A last line without its newline is being written by a
    run in progress and is left out; any other line that is not JSON is an error."""
    path = Path(run_dir) / "metrics.jsonl"
    if not path.exists():
        return []
    lines = path.read_text(encoding="utf-8").split("\n")
    lines = lines[:-1]                              # "" after the last newline, or a partial line
    records = []
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            records.append(json.loads(line))
        except ValueError:
            raise AlexnetError(f"{path}: line {number} is not JSON ({line[:60]!r})") from None
    return records
