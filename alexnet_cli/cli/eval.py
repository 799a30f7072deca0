"""`alexnet eval`: top-1 / top-5 error of one checkpoint or an ensemble, centre crop or the
paper's ten crops (sections 5.1 and 7), beside the paper's own figures."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.table import Table

from alexnet_cli.cli.common import (Bf16Opt, CropsOpt, DecodeOpt, DeviceOpt, ForwardBatchOpt, JsonOpt, WorkersOpt,
                                    check_writable, console, err_console, print_json, reporter)
from alexnet_cli.evaluate import EvalResult, evaluate, write_per_class, write_predictions
from alexnet_cli.metrics import TOP_K

# The paper's results (paper section 7): (setting, top-1, top-5) in percent.
PAPER_SINGLE_10 = [("paper: 2012 val, 1 CNN", 40.7, 18.2),
                   ("paper: 2010 test, 1 CNN, 10 crops", 37.5, 17.0)]
PAPER_SINGLE_1 = [("paper: 2010 test, 1 CNN, centre crop", 39.0, 18.3),
                  ("torchvision: 2012 val, centre crop", 43.48, 20.93)]
PAPER_ENSEMBLE = [("paper: 2012 val, 5 CNNs averaged", 38.1, 16.4),
                  ("paper: 2012 val, 1 CNN", 40.7, 18.2)]

Paths = Annotated[list[Path], typer.Argument(exists=True, metavar="CHECKPOINT... DATA", show_default=False,
                                             help="One or more checkpoints (several = an ensemble), then "
                                                  "the prepared data folder (alexnet prep's OUT).")]


def eval_cmd(
    paths: Paths,
    split: Annotated[str, typer.Option("--split", help="The split to evaluate.")] = "val",
    crops: CropsOpt = 1,
    batch_size: ForwardBatchOpt = 128,
    device: DeviceOpt = None,
    bf16: Bf16Opt = True,
    workers: WorkersOpt = None,
    decode: DecodeOpt = None,
    per_class: Annotated[Optional[Path], typer.Option("--per-class", metavar="FILE.csv", dir_okay=False,
                                                      help="Write per-class errors with class names (CSV).")] = None,
    predictions: Annotated[Optional[Path], typer.Option("--predictions", metavar="FILE", dir_okay=False,
                                                        help="Write each image's top-5 classes and probabilities "
                                                             "(CSV; JSON Lines for .jsonl).")] = None,
    json_out: JsonOpt = False,
) -> None:
    """Top-1 and top-5 error of CHECKPOINT(s) on DATA: one model or an ensemble (softmax averaged)."""
    if len(paths) < 2:
        raise typer.BadParameter("give at least one CHECKPOINT and then DATA", param_hint="CHECKPOINT... DATA")
    *checkpoints, data = paths
    if not data.is_dir():
        raise typer.BadParameter(f"{data} is a file; the last argument is the prepared data folder (alexnet prep's "
                                 "OUT)", param_hint="DATA")
    check_writable(per_class, "--per-class")
    check_writable(predictions, "--predictions")
    result = evaluate(checkpoints, data, split=split, crops=crops, batch_size=batch_size, device=device,
                      bf16=bf16, keep_predictions=predictions is not None, workers=workers, decode=decode,
                      progress=reporter())
    if json_out:             # the numbers first: a file that fails to write below does not lose them
        print_json(result.to_json())
    else:
        console.print(_table(result))
    if per_class is not None:
        err_console.print(f"per-class errors: {write_per_class(result, per_class)}", highlight=False)
    if predictions is not None:
        err_console.print(f"predictions: {write_predictions(result, predictions, data)}", highlight=False)


def _table(result: EvalResult) -> Table:
    models = len(result.checkpoints)
    what = f"{models} models averaged" if models > 1 else "1 model"
    k = result.counts.k
    table = Table(title=f"{result.split}: {result.n:,} images, {result.crops} crop{'s' if result.crops > 1 else ''}, "
                        f"{what}", title_justify="left")
    table.add_column("")
    table.add_column("top-1 error", justify="right")
    table.add_column("top-5 error", justify="right")
    table.add_column("images", justify="right")
    table.add_row("this run", f"{100 * result.top1_error:.2f}%", f"{100 * result.top5_error:.2f}%", f"{result.n:,}",
                  style="bold")
    table.add_section()
    if k < TOP_K:
        table.caption = f"only {k} classes: every label is in the top 5"
    reference = PAPER_ENSEMBLE if models > 1 else PAPER_SINGLE_10 if result.crops == 10 else PAPER_SINGLE_1
    for name, top1, top5 in reference:  # ILSVRC-2012 val: 50,000 images; ILSVRC-2010 test: 150,000
        table.add_row(name, f"{top1}%", f"{top5}%", "50,000" if "2012" in name else "150,000", style="dim")
    return table
