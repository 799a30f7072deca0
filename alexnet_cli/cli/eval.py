"""`alexnet eval`: top-1 / top-5 error of one checkpoint or an ensemble, centre crop or the
paper's ten crops (sections 5.1 and 7), beside the paper's figures for the same setting."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Optional

import typer
from rich.table import Table

from alexnet_cli.cli.common import (Bf16Opt, CropsOpt, DeviceOpt, ForwardBatchOpt, JsonOpt, WorkersOpt,
                                    check_writable, console, decode_option, err_console, print_json, reporter)
from alexnet_cli.cli.arguments import DataArg, check_checkpoint
from alexnet_cli.progress import plural

if TYPE_CHECKING:
    from alexnet_cli.evaluate import EvalResult

# The published results (paper section 7, and torchvision's single-GPU variant), each with the
# setting it was measured in: (name, models averaged, crops, top-1 %, top-5 %, images). All are
# validation or test figures: none is set beside a --split train result.
REFERENCES = [("paper: 2012 val, 1 CNN", 1, 10, 40.7, 18.2, 50_000),
              ("paper: 2010 test, 1 CNN, 10 crops", 1, 10, 37.5, 17.0, 150_000),
              ("paper: 2010 test, 1 CNN, centre crop", 1, 1, 39.0, 18.3, 150_000),
              ("torchvision: 2012 val, centre crop", 1, 1, 43.48, 20.93, 50_000),
              ("paper: 2012 val, 5 CNNs averaged", 5, 10, 38.1, 16.4, 50_000)]


def reference_rows(split: str, models: int, crops: int) -> tuple[list[tuple], str | None]:
    """The published rows measured as this result was (the val split, as many models averaged,
    as many crops), and when there is none a line that says so."""
    if split != "val":
        return [], f"no paper figure for the {split} split: the paper reports validation and test errors"
    rows = [r for r in REFERENCES if r[1] == models and r[2] == crops]
    if rows:
        return rows, None
    return [], (f"no paper figure for {plural(models, 'model')} and {plural(crops, 'crop')}: the paper reports 1 CNN (1 or 10 crops) and 5 CNNs "
                "averaged (10 crops)")


_DecodeOpt = decode_option("the decoder the first CHECKPOINT's run trained with (cpu if it trained with cpu, else "
                           "auto)")


def _checkpoints_argument(values: list[Path]) -> list[Path]:
    return [check_checkpoint(value, "CHECKPOINT") for value in values]


# click fills DATA, the last argument, first: `eval A.pt B.pt DATA` is an ensemble of two
Checkpoints = Annotated[list[Path], typer.Argument(
    exists=True, metavar="CHECKPOINT", show_default=False, callback=_checkpoints_argument,
    help="One or more checkpoints written by `alexnet train`; several = an ensemble (softmax averaged).")]


def eval_cmd(
    checkpoints: Checkpoints,
    data: DataArg,
    split: Annotated[str, typer.Option("--split", help="The split to evaluate.")] = "val",
    crops: CropsOpt = 1,
    batch_size: ForwardBatchOpt = 128,
    device: DeviceOpt = None,
    bf16: Bf16Opt = True,
    workers: WorkersOpt = None,
    decode: _DecodeOpt = None,
    per_class: Annotated[Optional[Path], typer.Option("--per-class", metavar="FILE.csv", dir_okay=False,
                                                      help="Write per-class errors with class names (CSV).")] = None,
    predictions: Annotated[Optional[Path], typer.Option("--predictions", metavar="FILE", dir_okay=False,
                                                        help="Write each image's top-5 classes and probabilities "
                                                             "(CSV; JSON Lines for .jsonl).")] = None,
    json_out: JsonOpt = False,
) -> None:
    """Top-1 and top-5 error of CHECKPOINT(s) on DATA: one model or an ensemble (softmax averaged)."""
    from alexnet_cli.evaluate import evaluate, write_per_class, write_predictions
    from alexnet_cli.errors import UsageError
    from alexnet_cli.paths import check_output
    check_writable(per_class, "--per-class")
    check_writable(predictions, "--predictions")
    reads = [("the checkpoint" if len(checkpoints) == 1 else "a checkpoint", checkpoints)]
    check_output(per_class, "per_class", reads)          # never an input, a data folder's or a run's file
    check_output(predictions, "predictions", reads)
    if (per_class is not None and predictions is not None and per_class.resolve() == predictions.resolve()
            and (predictions.is_file() or not predictions.exists())):      # /dev/stdout twice: both written
        raise UsageError(f"predictions {predictions} is also `per_class`: the second would replace the first; "
                         "choose two files", field="predictions", value=predictions, mentions=("per_class",))
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
    from alexnet_cli.config import top5_is_trivial, top5_note
    models = len(result.checkpoints)
    what = f"{models} models averaged" if models > 1 else "1 model"
    classes = result.counts.num_classes
    table = Table(title=f"{result.split}: {result.n:,} images, {result.crops} crop{'s' if result.crops > 1 else ''}, "
                        f"{what}", title_justify="left", caption_justify="left")
    table.add_column("")
    table.add_column("top-1 error", justify="right")
    table.add_column("top-5 error", justify="right")
    table.add_column("images", justify="right")
    trivial = " (trivial)" if top5_is_trivial(classes) else ""     # the caption says why
    table.add_row("this run" if models == 1 else "the ensemble", f"{100 * result.top1_error:.2f}%",
                  f"{100 * result.top5_error:.2f}%{trivial}", f"{result.n:,}", style="bold")
    for path, counts in zip(result.checkpoints, result.members):       # each model of the ensemble alone
        table.add_row(f"  {path}", f"{100 * counts.top1_error:.2f}%", f"{100 * counts.top5_error:.2f}%{trivial}",
                      f"{counts.total:,}")
    rows, note = reference_rows(result.split, models, result.crops)
    notes = [top5_note(classes)] if top5_is_trivial(classes) else []
    if rows:
        table.add_section()
    for name, _, _, top1, top5, images in rows:
        table.add_row(name, f"{top1}%", f"{top5}%", f"{images:,}", style="dim")
    if note:
        notes.append(note)
    if notes:
        table.caption = "\n".join(notes)
    return table
