"""The paper's ablations (sections 4.1-4.4, 5.1, 5.2): each variant of the network or recipe,
the settings it changes and what the paper measured for it. `alexnet ablate` (alexnet_cli/ablate.py)
trains and evaluates them; they are here, in a module that imports no torch, so that the
command's --help lists them without loading it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

FULL = "full"


@dataclass(frozen=True)
class Variant:
    """One ablation: the settings it changes and what the paper measured for it."""

    name: str
    what: str
    section: str
    model: dict[str, Any] = field(default_factory=dict)    # ModelConfig fields it changes
    train: dict[str, Any] = field(default_factory=dict)    # TrainConfig fields it changes
    paper_top1: float | None = None                        # the paper's error increase, fraction
    paper_top5: float | None = None
    paper: str = ""                                        # the paper's finding in words


VARIANTS = {v.name: v for v in (
    Variant("no-lrn", "no response normalisation", "4.3", model={"lrn": False},
            paper_top1=0.014, paper_top5=0.012, paper="+1.4 / +1.2"),
    Variant("pool2", "non-overlapping pooling (2/2)", "4.4", model={"pool_kernel": 2, "pool_stride": 2},
            paper_top1=0.004, paper_top5=0.003, paper="+0.4 / +0.3"),
    Variant("one-column", "one column, half the kernels", "4.2", model={"columns": 1},
            paper_top1=0.017, paper_top5=0.012, paper="+1.7 / +1.2"),
    Variant("no-dropout", "no dropout", "5.2", model={"dropout": 0.0},
            paper="overfits (see val − train)"),
    Variant("no-pca-aug", "no PCA colour noise", "5.1", train={"pca_aug": False},
            paper_top1=0.01, paper="+1 or more (top-1)"),
    Variant("tanh", "tanh instead of ReLU", "4.1", model={"activation": "tanh"},
            paper="6x slower (figure 1)"),
)}
FULL_VARIANT = Variant(FULL, "the paper's network", "")
