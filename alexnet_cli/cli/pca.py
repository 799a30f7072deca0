"""`alexnet pca DATA`: eigenvalues and eigenvectors of the training pixels' RGB covariance
(paper section 5.1; library: alexnet_cli.pca)."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Optional

import typer
from rich.table import Table

from alexnet_cli.cli.common import (DeviceOpt, JsonOpt, WorkersOpt, check_writable, console, err_console, print_json,
                                    reporter, seed_option)
from alexnet_cli.cli.arguments import DataArg
from alexnet_cli.errors import shell_word

if TYPE_CHECKING:
    from alexnet_cli.pca import PcaStats

_SeedOpt = seed_option("Seed of the --sample subset.")


def pca(
    data: DataArg,
    out: Annotated[Optional[Path], typer.Option("--out", help="Write the PCA to this file instead of DATA/pca.json (for a read-only DATA); `alexnet train DATA --pca FILE` reads it.")] = None,
    sample: Annotated[Optional[int], typer.Option("--sample", help="Use N training images picked deterministically (default: all).")] = None,
    seed: _SeedOpt = 0,
    device: DeviceOpt = None,
    workers: WorkersOpt = None,
    overwrite: Annotated[bool, typer.Option("--overwrite", help="Replace a pca.json that holds another result (runs trained with it could no longer be resumed), or an --out FILE that holds no PCA.")] = False,
    json_out: JsonOpt = False,
) -> None:
    """Compute the PCA of all training RGB pixels (0-255) and write DATA/pca.json (or --out FILE)."""
    from alexnet_cli.pca import PCA_FILE, check_replace, check_sample, compute_pca, write_pca
    check_sample(sample)                             # before any work
    out = _out_file(data, out)
    if out is None:                                  # before the pass, which takes hours on ImageNet
        kept = _kept_if_read_only(data, sample, overwrite)
        if kept is not None:
            _show(kept, data / PCA_FILE, json_out, "kept in")
            return
    else:
        check_writable(out, "--out")
    check_replace(data, sample, overwrite=overwrite, out=out)
    stats = compute_pca(data, progress=reporter(), sample=sample, seed=seed, device=device,
                        workers=workers, out=out)
    path = write_pca(data, stats, overwrite=overwrite, out=out)
    _show(stats, path, json_out, "written to")


def _out_file(data: Path, out: Path | None) -> Path | None:
    """--out as the file to write, checked; None for DATA/pca.json, the default however it is
    named (the one file of a data folder that `pca` writes: check_output refuses the others)."""
    from alexnet_cli.paths import check_output
    from alexnet_cli.pca import PCA_FILE
    if out is None or out.resolve() == (data / PCA_FILE).resolve():
        return None
    check_output(out, "out")
    return out


def _kept_if_read_only(data: Path, sample: int | None, overwrite: bool) -> PcaStats | None:
    """None where DATA/pca.json can be written. On a read-only DATA (a group's shared copy), the
    PCA its pca.json already holds when the pass would give it again (pca.kept_pca), with a
    note; else the refusal says how to put the PCA elsewhere."""
    from alexnet_cli.pca import PCA_FILE, kept_pca
    try:
        check_writable(data / PCA_FILE, "DATA")
        return None
    except typer.BadParameter as exc:
        kept = None if overwrite else kept_pca(data, sample)
        if kept is None:
            word = shell_word(data)
            raise typer.BadParameter(f"{exc.message}: compute the PCA into another file with `alexnet pca {word} "
                                     f"--out FILE`, then train with `alexnet train {word} --pca FILE`",
                                     param_hint="DATA") from None
    err_console.print(f"Note: {data} is read-only: its {PCA_FILE}, a PCA of all its training images, is kept as it is",
                      highlight=False)
    return kept


def _show(stats: PcaStats, path: Path, json_out: bool, how: str) -> None:
    if json_out:
        print_json(stats.to_json(path))
        return
    _print(stats, f"{how} {path}")


def _print(stats: PcaStats, where: str) -> None:
    import numpy as np
    table = Table(title=f"PCA of {stats.pixels:,} training pixels ({stats.images:,} images), 0-255 units",
                  title_justify="left")
    for col in ("i", "eigenvalue", "std (grey levels)", "eigenvector (R, G, B)"):
        table.add_column(col, justify="left" if col.startswith("eigenvector") else "right")
    for i, (value, vector) in enumerate(zip(stats.eigenvalues, stats.eigenvectors.T), start=1):
        table.add_row(str(i), f"{value:,.2f}", f"{np.sqrt(value):.2f}",
                      "(" + ", ".join(f"{v:+.4f}" for v in vector) + ")")
    console.print(table)
    console.print(where, highlight=False)
