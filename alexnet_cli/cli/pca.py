"""`alexnet pca DATA`: eigenvalues and eigenvectors of the training pixels' RGB covariance
(paper section 5.1; library: alexnet_cli.pca)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated, Optional

import typer
from rich.table import Table

from alexnet_cli.cli.common import (DeviceOpt, JsonOpt, WorkersOpt, check_writable, console, print_json, reporter,
                                    seed_option)
from alexnet_cli.cli.arguments import DataArg

if TYPE_CHECKING:
    from alexnet_cli.pca import PcaStats

_SeedOpt = seed_option("Seed of the --sample subset.")


def pca(
    data: DataArg,
    sample: Annotated[Optional[int], typer.Option("--sample", help="Use N training images picked deterministically (default: all).")] = None,
    seed: _SeedOpt = 0,
    device: DeviceOpt = None,
    workers: WorkersOpt = None,
    overwrite: Annotated[bool, typer.Option("--overwrite", help="Replace a pca.json that holds another result (runs trained with it could no longer be resumed).")] = False,
    json_out: JsonOpt = False,
) -> None:
    """Compute the PCA of all training RGB pixels (0-255) and write DATA/pca.json."""
    from alexnet_cli.pca import PCA_FILE, check_replace, check_sample, compute_pca, write_pca
    check_sample(sample)                             # before any work
    check_writable(data / PCA_FILE, "DATA")          # before the pass, which takes hours on ImageNet
    check_replace(data, sample, overwrite=overwrite)
    stats = compute_pca(data, progress=reporter(), sample=sample, seed=seed, device=device,
                        workers=workers)
    path = write_pca(data, stats, overwrite=overwrite)
    if json_out:
        print_json(stats.to_json(path))
        return
    _print(stats, str(path))


def _print(stats: PcaStats, path: str) -> None:
    import numpy as np
    table = Table(title=f"PCA of {stats.pixels:,} training pixels ({stats.images:,} images), 0-255 units",
                  title_justify="left")
    for col in ("i", "eigenvalue", "std (grey levels)", "eigenvector (R, G, B)"):
        table.add_column(col, justify="left" if col.startswith("eigenvector") else "right")
    for i, (value, vector) in enumerate(zip(stats.eigenvalues, stats.eigenvectors.T), start=1):
        table.add_row(str(i), f"{value:,.2f}", f"{np.sqrt(value):.2f}",
                      "(" + ", ".join(f"{v:+.4f}" for v in vector) + ")")
    console.print(table)
    console.print(f"written to {path}", highlight=False)
