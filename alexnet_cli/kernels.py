"""The first layer's kernels as a picture, and how colour-specific each column's kernels are
(paper section 7.1, figure 3).

Figure 3 shows the 96 conv1 kernels (11x11x3) as colour tiles: the 48 of column A (GPU 1)
above the 48 of column B (GPU 2). The paper observes that GPU 1's kernels come out
largely colour-agnostic (frequency and orientation) and GPU 2's colour-specific, in every
run "modulo a renumbering of the GPUs": one column of a run specialises in colour, and
which one is a matter of chance, so a run with column A colour-specific is as expected. The
score here makes that checkable on any checkpoint: the share of a kernel's energy that is
NOT along the grey axis (1, 1, 1) of RGB space. A grey kernel scores 0, a kernel that
sees one channel only 2/3, a red-green opponent kernel 1; a kernel of independent random
weights (an untrained network) about 2/3.
"""

from __future__ import annotations

from dataclasses import dataclass
from numbers import Integral
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

from alexnet_cli.checkpoint import load_model
from alexnet_cli.errors import UsageError
from alexnet_cli.figures import check_picture_path, grid, labeled_tile, save_picture, to_image
from alexnet_cli.paths import check_output
from alexnet_cli.model import AlexNet
from alexnet_cli.progress import NullReporter, Reporter

COLUMN_NAMES = ("A", "B")   # figure 3: column A (GPU 1) on top, column B (GPU 2) below
PER_ROW = 16                # figure 3: rows of 16 tiles, three rows per column


@dataclass(frozen=True)
class ColumnScore:
    """Colour specificity of one column's conv1 kernels."""

    name: str
    kernels: int
    mean: float
    median: float
    scores: list[float]     # one per kernel, in the layer's order


@dataclass(frozen=True)
class KernelReport:
    checkpoint: Path
    kernels: int
    columns: list[ColumnScore]
    out: Path | None                 # the picture, if one was drawn
    image_size: tuple[int, int] | None   # (width, height) in pixels

    def to_json(self) -> dict[str, Any]:
        """The document `alexnet kernels --json` prints (docs/public-surface.md)."""
        return {"checkpoint": str(self.checkpoint), "kernels": self.kernels,
                "out": None if self.out is None else str(self.out),
                "image_size": None if self.image_size is None else list(self.image_size),
                "columns": [{"name": c.name, "kernels": c.kernels, "color_score_mean": c.mean,
                             "color_score_median": c.median, "color_scores": c.scores} for c in self.columns]}


def conv1_weights(model: AlexNet) -> torch.Tensor:
    """conv1's kernels, (96, 3, 11, 11) float32 on the CPU (48 with one column)."""
    return model.conv1.weight.detach().float().cpu()


def color_specificity(weights: torch.Tensor) -> torch.Tensor:
    """Per kernel, the share of its energy off the grey axis: (N, 3, H, W) -> (N,) in [0, 1].

    At every pixel the RGB vector splits into its grey part (the channel mean, times
    (1, 1, 1)) and the rest; the score is sum |rest|^2 / sum |rgb|^2 over the kernel.
    """
    w = weights.double().flatten(2)                  # (N, 3, H*W)
    colour = w - w.mean(dim=1, keepdim=True)         # (N, 3, H*W), orthogonal to (1, 1, 1)
    energy = w.square().sum(dim=(1, 2))              # (N,)
    return (colour.square().sum(dim=(1, 2)) / energy.clamp_min(1e-30)).float()


def column_scores(weights: torch.Tensor, columns: int) -> list[ColumnScore]:
    """The score of every kernel, grouped by column: [A, B] (or [A] for the one-column net)."""
    scores = color_specificity(weights)
    out = []
    for name, part in zip(COLUMN_NAMES, scores.chunk(columns)):
        out.append(ColumnScore(name, len(part), part.mean().item(), part.median().item(), part.tolist()))
    return out


def kernel_tiles(weights: torch.Tensor, scale: int) -> list[Image.Image]:
    """Each kernel as an RGB tile, scaled to its own range (min -> 0, max -> 255) over all
    three channels so its colours keep their balance, enlarged `scale` times (nearest)."""
    w = weights.float()                                            # (N, 3, 11, 11)
    lo = w.amin(dim=(1, 2, 3), keepdim=True)
    span = w.amax(dim=(1, 2, 3), keepdim=True) - lo
    # a constant kernel has no range: draw it mid-grey
    unit = torch.where(span > 0, (w - lo) / span.clamp_min(1e-30), torch.full_like(w, 0.5))
    pixels = (unit * 255).round().to(torch.uint8).permute(0, 2, 3, 1).numpy()   # (N, 11, 11, 3)
    pixels = pixels.repeat(scale, axis=1).repeat(scale, axis=2)    # (N, 11*scale, 11*scale, 3)
    return [to_image(np.ascontiguousarray(p)) for p in pixels]


def draw_kernels(weights: torch.Tensor, columns: int, scale: int = 4) -> Image.Image:
    """Figure 3: one block per column (rows of 16 tiles), column A above column B, each of two
    under its title (`column_title`; one column has none).

    Tiles are `scale` pixels apart inside a block; blocks are 4 * `scale` apart."""
    check_scale(scale)
    tiles = kernel_tiles(weights, scale)
    per_column = len(tiles) // columns
    blocks = [grid(tiles[i * per_column:(i + 1) * per_column], PER_ROW, pad=scale) for i in range(columns)]
    if columns > 1:
        blocks = [labeled_tile(block, column_title(name), font_size=title_size(scale), pad=scale, above=True)
                  for name, block in zip(COLUMN_NAMES, blocks)]
    return grid(blocks, 1, pad=4 * scale)


def column_title(name: str) -> str:
    """A column's title in the picture: figure 3 shows column A's kernels (GPU 1) above B's (GPU 2)."""
    return f"column {name} (GPU {COLUMN_NAMES.index(name) + 1} in figure 3)"


def title_size(scale: int) -> int:
    """The titles' font size in pixels: readable at scale 1 (tiles of 11 pixels), not
    overgrown at large scales."""
    return min(max(11, 4 * scale), 32)


def check_scale(scale: int) -> None:
    """Screen pixels per kernel pixel: a whole number, at least 1."""
    if isinstance(scale, bool) or not isinstance(scale, Integral) or scale < 1:
        raise UsageError(f"scale must be a whole number of at least 1, got {scale!r}", field="scale", value=scale)


def kernel_report(checkpoint: str | Path, out: str | Path | None = None, *, scale: int = 4,
                  progress: Reporter = NullReporter()) -> KernelReport:
    """What `alexnet kernels` does: the colour scores per column, and the picture if `out` (its
    suffix names the format: figures.check_picture_path, checked before the work)."""
    check_scale(scale)
    if out is not None:
        check_picture_path(out)
        check_output(out, "out", [("the checkpoint", checkpoint)])      # nor a run's or a data folder's file
    loaded = load_model(checkpoint, "cpu")
    loaded.tell_assumptions(progress)
    columns = loaded.model.config.columns
    weights = conv1_weights(loaded.model)                          # (96, 3, 11, 11)
    size = None
    if out is not None:
        picture = draw_kernels(weights, columns, scale)
        out = save_picture(picture, out)
        size = picture.size
    return KernelReport(Path(checkpoint), len(weights), column_scores(weights, columns),
                        None if out is None else Path(out), size)
