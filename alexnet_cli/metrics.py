"""Top-1 and top-5 error (paper sections 3 and 7: "the fraction of test images for which the
correct label is not among the five labels considered most probable by the model").

Counting happens on the scores' device with no host sync: `TopKMeter.update` only adds to
per-class count tensors, and `TopKMeter.result` syncs once at the end. Under
torch.distributed, `all_reduce` sums the counts of every rank first.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.distributed as dist

from alexnet_cli.config import TOP_K, top5_is_trivial, top5_note     # defined without torch, for the CLI
from alexnet_cli.errors import AlexnetError

__all__ = ["TOP_K", "TopKCounts", "TopKMeter", "top5_is_trivial", "top5_note"]


@dataclass
class TopKCounts:
    """Per-class counts on the host: images, top-1 hits, top-k hits (each (C,) int64).

    k is TOP_K, the paper's 5, unless asked otherwise, and never more than the classes; the
    top-k numbers are named top5 as in every result and file they reach (`top5_error`)."""

    n: np.ndarray
    top1: np.ndarray
    top5: np.ndarray
    k: int

    @property
    def num_classes(self) -> int:
        return len(self.n)

    @property
    def total(self) -> int:
        return int(self.n.sum())

    @property
    def top1_error(self) -> float:
        return 1.0 - float(self.top1.sum()) / max(self.total, 1)

    @property
    def top5_error(self) -> float:
        return 1.0 - float(self.top5.sum()) / max(self.total, 1)

    def class_errors(self) -> tuple[np.ndarray, np.ndarray]:
        """Per-class top-1 and top-k error, (C,) float64; NaN for classes with no images."""
        with np.errstate(invalid="ignore", divide="ignore"):
            n = self.n.astype(np.float64)
            return 1.0 - self.top1 / n, 1.0 - self.top5 / n


class TopKMeter:
    """Accumulates top-1 / top-k hits per class on the device; one host sync in `result`."""

    def __init__(self, num_classes: int, device: str | torch.device = "cpu", k: int = TOP_K):
        self.num_classes = num_classes
        self.k = min(k, num_classes)   # a 4-class data set has no "top 5"
        # rows: images, top-1 hits, top-k hits; columns: classes
        self.counts = torch.zeros(3, num_classes, dtype=torch.int64, device=device)

    def update(self, scores: torch.Tensor, labels: torch.Tensor) -> None:
        """scores (B, C) logits or probabilities; labels (B,) int64 on the same device."""
        top = scores.topk(self.k, dim=1).indices              # (B, k)
        hits = top == labels[:, None]                          # (B, k)
        rows = torch.stack([torch.ones_like(labels), hits[:, 0].long(), hits.any(dim=1).long()])  # (3, B)
        self.counts.index_add_(1, labels, rows)               # no sync, unlike bincount

    def all_reduce(self) -> None:
        """Sum the counts over all ranks (every rank must call it). Without a process group
        they would stay one rank's share of the data: an error, not a quiet partial result."""
        if not (dist.is_available() and dist.is_initialized()):
            raise AlexnetError("these counts are one rank's share, but torch.distributed is not initialised")
        dist.all_reduce(self.counts, op=dist.ReduceOp.SUM)

    def result(self) -> TopKCounts:
        n, top1, top5 = self.counts.cpu().numpy()              # the one host sync
        return TopKCounts(n=n, top1=top1, top5=top5, k=self.k)
