"""`alexnet ablate`: the full network and the paper's ablations, each a run under --out,
evaluated and set beside the paper's differences (sections 4.1-4.4, 5.1, 5.2, figure 1)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer
from rich import box
from rich.table import Table
from rich.text import Text

from alexnet_cli.cli.common import (Bf16Opt, CropsOpt, DecodeOpt, DeviceOpt, JsonOpt, WorkersOpt,
                                    check_writable, console, err_console, print_json, reporter)
from alexnet_cli.cli.options import (AugChunkOpt, BatchSizeOpt, BiasInitOpt, BiasLrMultOpt, BiasWeightDecayOpt,
                                     ChannelsLastOpt, CodeEpochBaseOpt, CompileModeOpt, CompileOpt, Conv1OrderOpt,
                                     Conv1PaddingOpt, CropOffsetsOpt, DevicesOpt, DropoutStyleOpt, EpochsOpt, InitStdConv345Opt,
                                     LogEveryOpt, LrOpt, LrScheduleOpt, LrnAlphaOverNOpt, LrnKernelOpt, MaxLrDropsOpt,
                                     MaxStepsOpt, MeanCropOpt, MomentumOpt, ParallelOpt, PatienceOpt, PcaFileOpt, PcaScaleOpt,
                                     PlateauBestOpt, RecipeOpt, SaveEveryOpt, SeedOpt, StuckStepsOpt, TensorboardOpt,
                                     WeightDecayOpt, WithinMapNormOpt, devices_from_option, model_config_from_options)
from alexnet_cli.cli.arguments import DataArg
from alexnet_cli.config import resolve_train_config
from alexnet_cli.errors import Interrupted, UsageError
from alexnet_cli.variants import FULL, VARIANTS

_ABL = "Ablations"


def ablate_cmd(
    data: DataArg,
    out: Annotated[Path, typer.Option("--out", help=f"Folder of the runs: one run folder per variant ({FULL}, no-lrn, "
                                      "...), ablations.json, ablations.md, curves.png.", rich_help_panel=_ABL)],
    variants: Annotated[Optional[str], typer.Option("--variants", help=f"Comma-separated, among {', '.join(VARIANTS)} "
                                                    "(default: all). The full network always runs.",
                                                    rich_help_panel=_ABL)] = None,
    crops: CropsOpt = 10,
    figure1_error: Annotated[float, typer.Option("--figure1-error", help="Figure 1: the training top-1 error "
                                                 "(percent) that ReLU and tanh are timed to.",
                                                 rich_help_panel=_ABL)] = 25.0,
    eval_batch_size: Annotated[int, typer.Option("--eval-batch-size", help="Images per evaluation batch.",
                                                 rich_help_panel=_ABL)] = 128,
    recipe: RecipeOpt = "paper",
    # the recipe, the network and the running of every run: train's options, less those a variant
    # changes (--lrn, --pool, --columns, --dropout, --pca-aug, --activation), --num-classes and --resume
    epochs: EpochsOpt = None,
    batch_size: BatchSizeOpt = None,
    lr: LrOpt = None,
    momentum: MomentumOpt = None,
    weight_decay: WeightDecayOpt = None,
    lr_schedule: LrScheduleOpt = None,
    patience: PatienceOpt = None,
    plateau_best: PlateauBestOpt = None,
    code_epoch_base: CodeEpochBaseOpt = None,
    max_lr_drops: MaxLrDropsOpt = None,
    bias_lr_mult: BiasLrMultOpt = None,
    bias_weight_decay: BiasWeightDecayOpt = None,
    pca_scale: PcaScaleOpt = None,
    pca: PcaFileOpt = None,
    aug_chunk: AugChunkOpt = None,
    crop_offsets: CropOffsetsOpt = None,
    mean_crop: MeanCropOpt = None,
    dropout_style: DropoutStyleOpt = None,
    lrn_alpha_over_n: LrnAlphaOverNOpt = None,
    conv1_order: Conv1OrderOpt = None,
    within_map_norm: WithinMapNormOpt = None,
    conv1_padding: Conv1PaddingOpt = None,
    init_std_conv345: InitStdConv345Opt = None,
    bias_init: BiasInitOpt = None,
    seed: SeedOpt = 0,
    device: DeviceOpt = None,
    parallel: ParallelOpt = "auto",
    devices: DevicesOpt = None,
    max_steps: MaxStepsOpt = None,
    save_every: SaveEveryOpt = None,
    log_every: LogEveryOpt = 50,
    bf16: Bf16Opt = True,
    channels_last: ChannelsLastOpt = True,
    compile: CompileOpt = False,
    compile_mode: CompileModeOpt = "default",
    lrn_kernel: LrnKernelOpt = "auto",
    workers: WorkersOpt = None,
    decode: DecodeOpt = None,
    stuck_steps: StuckStepsOpt = 2000,
    tensorboard: TensorboardOpt = False,
    json_out: JsonOpt = False,
) -> None:
    """Train the full network and the paper's ablations on DATA (each its own run under --out, all
    with the same recipe, seed and running options, resumable as a whole), evaluate each, print
    the table beside the paper's differences."""
    from alexnet_cli.ablate import ablate, figure1_line
    from alexnet_cli.train import RunOptions
    if not 0 < figure1_error < 100:
        raise UsageError(f"--figure1-error must be between 0 and 100 percent, got {figure1_error:g}")
    check_writable(out, "--out", folder=True)
    model_cfg = model_config_from_options(
        recipe, num_classes=None, lrn=None, pool=None, activation=None, dropout=None, columns=None,
        dropout_style=dropout_style, lrn_alpha_over_n=lrn_alpha_over_n, conv1_order=conv1_order,
        within_map_norm=within_map_norm, conv1_padding=conv1_padding, init_std_conv345=init_std_conv345,
        bias_init=bias_init)
    train_cfg = resolve_train_config(
        recipe, epochs=epochs, batch_size=batch_size, lr=lr, momentum=momentum, weight_decay=weight_decay,
        lr_schedule=lr_schedule, code_epoch_base=code_epoch_base, plateau_patience=patience, plateau_best=plateau_best,
        max_lr_drops=max_lr_drops, bias_lr_mult=bias_lr_mult, bias_weight_decay=bias_weight_decay,
        pca_scale=pca_scale, aug_chunk=aug_chunk, crop_offsets=crop_offsets, mean_crop=mean_crop)
    run = RunOptions(device=device, parallel=parallel, devices=devices_from_option(devices), seed=seed,
                     max_steps=max_steps, save_every=save_every, log_every=log_every, bf16=bf16,
                     channels_last=channels_last, compile=compile, compile_mode=compile_mode, lrn_kernel=lrn_kernel,
                     workers=workers, decode=decode or "auto", pca_file=pca, stuck_steps=stuck_steps,
                     tensorboard=tensorboard, epochs_given=epochs is not None)
    try:
        doc = ablate(data, out, model_cfg, train_cfg, run, recipe=recipe,
                     variants=None if variants is None else variants.split(","), crops=crops,
                     figure1_error=figure1_error / 100, eval_batch_size=eval_batch_size, progress=reporter())
    except Interrupted as exc:
        raise exc.advising(Interrupted.AGAIN) from None
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
    from alexnet_cli.ablate import VAL_MINUS_TRAIN, title, top5_footnote, trivial_top5
    t = Table(title=title(doc), title_justify="left", box=box.SIMPLE_HEAD, pad_edge=False, padding=(0, 1),
              collapse_padding=True)
    for col, justify in (("variant", "left"), ("top-1/top-5", "right"), ("Δ top-1/top-5", "right"),
                         ("paper Δ", "left"), (VAL_MINUS_TRAIN, "right"), ("epochs", "right")):
        t.add_column(col, justify=justify, no_wrap=col not in ("paper Δ", VAL_MINUS_TRAIN),
                     min_width=9 if col == "paper Δ" else None)
    trivial = trivial_top5(doc)   # a top-5 of at most 5 classes marked (trivial), as eval; the caption says why
    if trivial:
        t.caption, t.caption_justify = top5_footnote(doc), "left"
    for v in doc["variants"]:
        full = v["name"] == FULL
        mark = "\n(trivial)" if trivial else ""
        t.add_row(v["name"], f"{_pct(v['top1_error'])}/{_pct(v['top5_error'])}{mark}",
                  "" if full else f"{_pct(v['delta_top1'], True)}/{_pct(v['delta_top5'], True)}{mark}",
                  "reference" if full else v["paper"], _pct(v["train_val_gap"], True),
                  Text.assemble(f"{v['epochs_done']}/{v['epochs']}\n", (v["state"], "dim")))
    return t
