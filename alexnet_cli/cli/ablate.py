"""`alexnet ablate`: the full network and the paper's ablations, each a run under --out,
evaluated and set beside the paper's differences (sections 4.1-4.4, 5.1, 5.2, figure 1)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer
from rich import box
from rich.table import Table
from rich.text import Text

from alexnet_cli.ablate import FULL, VARIANTS, ablate, figure1_line, title
from alexnet_cli.cli.common import ExistingDir, JsonOpt, console, err_console, print_json, reporter
from alexnet_cli.cli.options import BiasInitOpt, DecodeOpt, DropoutStyleOpt, RecipeOpt, model_config_from_options
from alexnet_cli.config import resolve_train_config
from alexnet_cli.errors import UsageError
from alexnet_cli.train import RunOptions

_ABL = "Ablations"
_REC = "Training recipe, for every run (default: the recipe's)"
_RUN = "Running"


def _opt(flag: str, help: str, panel: str = _REC, **kw):
    return typer.Option(flag, help=help, rich_help_panel=panel, **kw)


def ablate_cmd(
    data: ExistingDir,
    out: Annotated[Path, _opt("--out", f"Folder of the runs: one run folder per variant ({FULL}, no-lrn, ...), "
                                       "ablations.json, ablations.md, curves.png.", _ABL)],
    variants: Annotated[Optional[str], _opt("--variants", f"Comma-separated, among {','.join(VARIANTS)} "
                                                          f"(default: all). The full network always runs.", _ABL)] = None,
    crops: Annotated[int, _opt("--crops", "Evaluation: 1 centre crop, or 10 (four corners, centre, mirrors; "
                                          "paper 5.1).", _ABL)] = 10,
    figure1_error: Annotated[float, _opt("--figure1-error", "Figure 1: the training top-1 error (percent) "
                                                            "that ReLU and tanh are timed to.", _ABL)] = 25.0,
    eval_batch_size: Annotated[int, _opt("--eval-batch-size", "Images per evaluation batch.", _ABL)] = 128,
    recipe: RecipeOpt = "paper",
    epochs: Annotated[Optional[int], _opt("--epochs", "Epochs of every run (paper: 90).")] = None,
    batch_size: Annotated[Optional[int], _opt("--batch-size", "Global batch (paper: 128).")] = None,
    lr: Annotated[Optional[float], _opt("--lr", "Initial learning rate (paper: 0.01).")] = None,
    momentum: Annotated[Optional[float], _opt("--momentum", "Momentum (paper: 0.9).")] = None,
    weight_decay: Annotated[Optional[float], _opt("--weight-decay", "Weight decay (paper: 0.0005).")] = None,
    lr_schedule: Annotated[Optional[str], _opt("--lr-schedule", "plateau (paper), code or code2010.")] = None,
    patience: Annotated[Optional[int], _opt("--patience", "plateau: epochs without a better val top-1 before /10.")] = None,
    max_lr_drops: Annotated[Optional[int], _opt("--max-lr-drops", "plateau: at most this many drops (paper: 3).")] = None,
    bias_init: BiasInitOpt = None,
    dropout_style: DropoutStyleOpt = None,
    seed: Annotated[int, _opt("--seed", "Seed of every run (the same initial draw for all).", _RUN)] = 0,
    device: Annotated[Optional[str], _opt("--device", "cpu, cuda or cuda:N (default: cuda when available).", _RUN)] = None,
    parallel: Annotated[str, _opt("--parallel", "auto | single | model (--devices) | data (under torchrun).", _RUN)] = "auto",
    devices: Annotated[Optional[str], _opt("--devices", "model parallel: the devices of column A and B.", _RUN)] = None,
    max_steps: Annotated[Optional[int], _opt("--max-steps", "Stop each run after this many steps.", _RUN)] = None,
    save_every: Annotated[Optional[int], _opt("--save-every", "Also write last.pt every N steps.", _RUN)] = None,
    log_every: Annotated[int, _opt("--log-every", "Steps between log lines.", _RUN)] = 50,
    bf16: Annotated[bool, _opt("--bf16/--no-bf16", "bf16 autocast on CUDA.", _RUN)] = True,
    compile: Annotated[bool, _opt("--compile", "torch.compile the network.", _RUN)] = False,
    workers: Annotated[Optional[int], _opt("--workers", "Data loader threads.", _RUN)] = None,
    decode: DecodeOpt = None,
    json_out: JsonOpt = False,
) -> None:
    """Train the full network and the paper's ablations on DATA (each its own run under --out,
    resumable as a whole), evaluate each, print the table beside the paper's differences."""
    if not 0 < figure1_error < 100:
        raise UsageError(f"--figure1-error must be between 0 and 100 percent, got {figure1_error:g}")
    model_cfg = model_config_from_options(
        recipe, num_classes=None, lrn=None, pool=None, activation=None, dropout=None, columns=None,
        dropout_style=dropout_style, lrn_alpha_over_n=None, conv1_order=None, within_map_norm=None, conv1_padding=None, init_std_conv345=None,
        bias_init=bias_init)
    train_cfg = resolve_train_config(
        recipe, epochs=epochs, batch_size=batch_size, lr=lr, momentum=momentum, weight_decay=weight_decay,
        lr_schedule=lr_schedule, plateau_patience=patience, max_lr_drops=max_lr_drops)
    run = RunOptions(device=device, parallel=parallel,
                     devices=tuple(d.strip() for d in devices.split(",")) if devices else (),
                     seed=seed, max_steps=max_steps, save_every=save_every, log_every=log_every, bf16=bf16,
                     compile=compile, workers=workers, decode=decode or "auto")
    doc = ablate(data, out, model_cfg, train_cfg, run, recipe=recipe,
                 variants=None if variants is None else variants.split(","), crops=crops,
                 figure1_error=figure1_error / 100, eval_batch_size=eval_batch_size, progress=reporter())
    if doc is None:                    # under torchrun, rank 0 alone speaks
        return
    if json_out:
        print_json(doc)
    else:
        console.print(table(doc))
        line = figure1_line(doc)
        if line:
            console.print(line, highlight=False)
    err_console.print(f"table: {out / 'ablations.md'}, curves: {out / 'curves.png'}", highlight=False)


def _pct(x: float | None, sign: bool = False) -> str:
    return "n/a" if x is None else f"{100 * x:+.2f}" if sign else f"{100 * x:.2f}"


def table(doc: dict) -> Table:
    """ablations.md's table, its numbers paired to fit 80 columns."""
    t = Table(title=title(doc), title_justify="left", box=box.SIMPLE_HEAD, pad_edge=False, padding=(0, 1),
              collapse_padding=True)
    for col, justify in (("variant", "left"), ("top-1/top-5", "right"), ("Δ top-1/top-5", "right"),
                         ("paper Δ", "left"), ("train-val gap", "right"), ("epochs", "right")):
        t.add_column(col, justify=justify, no_wrap=col not in ("paper Δ", "train-val gap"),
                     min_width=9 if col == "paper Δ" else None)
    for v in doc["variants"]:
        full = v["name"] == FULL
        t.add_row(v["name"], f"{_pct(v['top1_error'])}/{_pct(v['top5_error'])}",
                  "" if full else f"{_pct(v['delta_top1'], True)}/{_pct(v['delta_top5'], True)}",
                  "reference" if full else v["paper"], _pct(v["train_val_gap"], True),
                  Text.assemble(f"{v['epochs_done']}/{v['epochs']}\n", (v["state"], "dim")))
    return t
