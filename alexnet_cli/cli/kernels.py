"""`alexnet kernels`: the 96 conv1 kernels as a picture, and each column's colour
specificity (paper section 7.1, figure 3)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.table import Table

from alexnet_cli.cli.common import JsonOpt, check_picture_out, console, print_json, reporter
from alexnet_cli.cli.arguments import CheckpointArg


def kernels(
    checkpoint: CheckpointArg,
    out: Annotated[Optional[Path], typer.Option("--out", metavar="FILE.png", dir_okay=False,
                                                help="Write the kernels here, as in figure 3 (each scaled to its "
                                                     "own range), in the format the suffix names (.png, .jpg, "
                                                     ".webp, ...).")] = None,
    scale: Annotated[int, typer.Option("--scale", min=1, max=64, help="Screen pixels per kernel pixel (tile = 11 x scale).")] = 4,
    json_out: JsonOpt = False,
) -> None:
    """Draw conv1's kernels (column A above column B, each under its title) and score how
    colour-specific each column is.

    Each kernel is drawn scaled to its own range: its lowest weight black, its
    highest white, one scale for its three channels so that its colours keep their balance (so
    tiles do not compare in brightness). The score is the share of a kernel's energy off the
    grey axis of RGB: 0 for a grey kernel, about 0.67 for random weights. The paper finds one
    column colour-agnostic and the other colour-specific in every run; which one is which varies
    from run to run.
    """
    from alexnet_cli.kernels import kernel_report
    check_picture_out(out)                 # kernel_report refuses the checkpoint itself (paths.check_output)
    report = kernel_report(checkpoint, out, scale=scale, progress=reporter())
    if json_out:
        print_json(report.to_json())
        return
    table = Table(title="conv1 colour specificity (share of energy off the grey axis; random init ~ 0.67)",
                  title_justify="left")
    for col in ("column", "kernels", "mean", "median"):
        table.add_column(col, justify="left" if col == "column" else "right")
    for c in report.columns:
        table.add_row(c.name, str(c.kernels), f"{c.mean:.3f}", f"{c.median:.3f}")
    console.print(table)
    if report.out is not None:
        w, h = report.image_size
        console.print(f"wrote {report.out} ({w}x{h})", highlight=False)
    else:
        console.print("no picture drawn: pass --out FILE.png", highlight=False)
