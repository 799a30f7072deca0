"""`alexnet predict`: top-k classes of your own images (paper figure 4, left)."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Optional

import typer
from rich.table import Table

from alexnet_cli.cli.common import (CropsOpt, DeviceOpt, JsonOpt, check_picture_out, console, err_console,
                                    print_json, reporter)
from alexnet_cli.cli.arguments import CheckpointArg, check_data, check_images

if TYPE_CHECKING:                       # the library imports torch: not for the CLI's argument checks
    from alexnet_cli.predict import Prediction


def _images_argument(values: list[Path]) -> list[Path]:
    return check_images(values, "IMAGE")


Images = Annotated[list[Path], typer.Argument(exists=True, metavar="IMAGE", callback=_images_argument,
                                              help="Image files (JPEG, PNG, ...; any colour mode).")]


def predict_cmd(
    checkpoint: CheckpointArg,
    images: Images,
    k: Annotated[Optional[int], typer.Option("--k", min=1, help="How many classes to show per image (default: 5, "
                                                                "or every class of a network of fewer).")] = None,
    crops: CropsOpt = 1,
    out: Annotated[Optional[Path], typer.Option("--out", metavar="FILE.png", dir_okay=False,
                                                help="Draw each image beside bars for its top 5 (figure 4).")] = None,
    data: Annotated[Optional[Path], typer.Option("--data", exists=True,
                                                 help="Prepared data folder: mean image and class names for "
                                                      "a bare state_dict.")] = None,
    device: DeviceOpt = None,
    json_out: JsonOpt = False,
) -> None:
    """Top-k classes and probabilities of each IMAGE under CHECKPOINT.

    An image in a folder named after one of the network's classes (val/n01440764/x.JPEG, as
    `prep` reads them) is taken to be of that class: its probability and rank are said, and
    the figure draws its bar red, as the paper's figure 4.
    """
    from alexnet_cli.paths import check_output
    from alexnet_cli.predict import draw_predictions, predict
    check_picture_out(out)
    check_data(data, "--data")
    check_output(out, "out", [("the checkpoint", checkpoint), ("an image", images)])
    preds = predict(checkpoint, images, k=k, crops=crops, device=device, data_dir=data,
                    progress=reporter())
    if out is not None:
        err_console.print(f"figure: {draw_predictions(preds, out)}", highlight=False)
    if json_out:
        print_json([p.to_json() for p in preds])
        return
    named = any(t.name != t.wnid for pred in preds for t in pred.top)
    for pred in preds:
        console.print(predictions_table(pred, named))


def predictions_table(pred: Prediction, named: bool = True) -> Table:
    """One image's top classes. Without `named` (every class name is its class: a data folder
    with no synset mapping, whose classes are plain folder names) one column says both. An
    image whose folder names its class (predict.folder_class) has that class's row in bold and
    a caption with its probability."""
    table = Table(title=pred.image, title_justify="left")
    truth = pred.true_class
    if truth is not None:
        rank = next((r for r, t in enumerate(pred.top, 1) if t.index == truth.index), None)
        where = f"#{rank}" if rank is not None else f"not in the top {len(pred.top)}"
        said = truth.wnid if not named or truth.name == truth.wnid else f"{truth.wnid} {truth.name}"
        table.caption, table.caption_justify = f"true class (its folder): {said}, {100 * truth.prob:.2f}%, {where}", "left"
    table.add_column("#", justify="right")
    table.add_column("class")
    if named:
        table.add_column("name")
    table.add_column("probability", justify="right")
    for rank, t in enumerate(pred.top, 1):
        table.add_row(str(rank), t.wnid, *([t.name] if named else []), f"{100 * t.prob:.2f}%",
                      style="bold" if truth is not None and t.index == truth.index else None)
    return table
