"""`alexnet features`: the fc7 feature of every image of a split, into one HDF5 file (paper
section 7.1; the search space of `alexnet neighbors`)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from alexnet_cli.cli.common import (CheckpointDecodeOpt, DeviceOpt, ForwardBatchOpt, JsonOpt,
                                    WorkersOpt, check_writable, console, print_json, reporter)
from alexnet_cli.cli.arguments import CheckpointArg, DataArg


def features(
    checkpoint: CheckpointArg,
    data: DataArg,
    out: Annotated[Path, typer.Option("--out", metavar="FILE.h5", dir_okay=False,
                                      help="The features file (written as FILE.h5.partial until complete).")],
    split: Annotated[str, typer.Option("--split", help="Which split of DATA.")] = "train",
    batch_size: ForwardBatchOpt = 128,
    overwrite: Annotated[bool, typer.Option("--overwrite", help="Recompute even if FILE.h5 exists.")] = False,
    workers: WorkersOpt = None,
    decode: CheckpointDecodeOpt = None,
    device: DeviceOpt = None,
    json_out: JsonOpt = False,
) -> None:
    """Store the fc7 feature (after ReLU, centre crop) of every image of a split, as float16.

    The file also holds each image's path and label. Resumable: after an interruption, run the
    same command again. A complete FILE.h5 of the same network and split is kept (reused)."""
    from alexnet_cli.features import check_features_path, extract_features
    from alexnet_cli.paths import check_output
    check_writable(out, "--out")
    check_features_path(out)                  # an HDF5 file: .h5 or .hdf5, as predict's --out names a picture
    check_output(out, "out", [("the checkpoint", checkpoint)])
    info = extract_features(checkpoint, data, out, split=split, batch_size=batch_size, device=device,
                            overwrite=overwrite, workers=workers, decode=decode, progress=reporter())
    if json_out:
        print_json(info.to_json())
        return
    what = f"{info.count:,} x {info.dim} float16 fc7 features of split '{info.split}' (network {info.key})"
    if info.reused:                 # as `neighbors` and `codes` say of the files they find
        console.print(f"{what} reused from {info.path}: it was already complete for this network and data "
                      "(--overwrite computes them again)", highlight=False)
    else:
        console.print(f"{info.path}: {what}", highlight=False)
