"""`alexnet train`: the paper's recipe (sections 5 and 6) on a prepared data folder."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.text import Text

from alexnet_cli.cli.common import (Bf16Opt, DecodeOpt, DeviceOpt, JsonOpt, WorkersOpt, check_writable, console,
                                    print_json, reporter)
from alexnet_cli.cli.arguments import DataArg
from alexnet_cli.cli.options import (ActivationOpt, AugChunkOpt, BatchSizeOpt, BiasInitOpt, BiasLrMultOpt,
                                     BiasWeightDecayOpt, ChannelsLastOpt, CodeEpochBaseOpt, ColumnsOpt, CompileModeOpt,
                                     CompileOpt, Conv1OrderOpt, Conv1PaddingOpt, CropOffsetsOpt, DevicesOpt, DropoutOpt,
                                     DropoutStyleOpt, EpochsOpt, InitStdConv345Opt, LogEveryOpt, LrOpt, LrScheduleOpt,
                                     LrnAlphaOverNOpt, LrnKernelOpt, LrnOpt, MaxLrDropsOpt, MaxStepsOpt, MeanCropOpt,
                                     MomentumOpt, NumClassesOpt, ParallelOpt, PatienceOpt, PcaAugOpt, PcaFileOpt, PcaScaleOpt,
                                     PlateauBestOpt, PoolOpt, RecipeOpt, SaveEveryOpt, SeedOpt, StuckStepsOpt,
                                     TensorboardOpt, WeightDecayOpt, WithinMapNormOpt, devices_from_option,
                                     model_config_from_options)
from alexnet_cli.config import resolve_train_config
from alexnet_cli.errors import Interrupted, UsageError
from alexnet_cli.progress import plural


def train(
    data: DataArg,
    out: Annotated[Path, typer.Option("--out", help="Run folder: config.json, metrics.jsonl, checkpoints/.",
                                      rich_help_panel="Running")],
    recipe: RecipeOpt = "paper",
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
    pca_aug: PcaAugOpt = None,
    pca_scale: PcaScaleOpt = None,
    pca: PcaFileOpt = None,
    aug_chunk: AugChunkOpt = None,
    crop_offsets: CropOffsetsOpt = None,
    mean_crop: MeanCropOpt = None,
    num_classes: NumClassesOpt = None,
    lrn: LrnOpt = None,
    pool: PoolOpt = None,
    activation: ActivationOpt = None,
    dropout: DropoutOpt = None,
    dropout_style: DropoutStyleOpt = None,
    columns: ColumnsOpt = None,
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
    resume: Annotated[bool, typer.Option("--resume", help="Continue the run in --out exactly where it stopped.",
                                         rich_help_panel="Running")] = False,
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
    """Train AlexNet on DATA (a folder made by `alexnet prep`) into --out."""
    from alexnet_cli.train import RunOptions, train as train_run
    check_writable(out, "--out", folder=True)
    model_cfg = model_config_from_options(
        recipe, num_classes=num_classes, lrn=lrn, pool=pool, activation=activation, dropout=dropout,
        dropout_style=dropout_style, columns=columns, lrn_alpha_over_n=lrn_alpha_over_n, conv1_order=conv1_order,
        within_map_norm=within_map_norm, conv1_padding=conv1_padding, init_std_conv345=init_std_conv345,
        bias_init=bias_init)
    train_cfg = resolve_train_config(
        recipe, epochs=epochs, batch_size=batch_size, lr=lr, momentum=momentum, weight_decay=weight_decay,
        lr_schedule=lr_schedule, code_epoch_base=code_epoch_base, plateau_patience=patience, plateau_best=plateau_best,
        max_lr_drops=max_lr_drops, bias_lr_mult=bias_lr_mult, bias_weight_decay=bias_weight_decay, pca_aug=pca_aug,
        pca_scale=pca_scale, aug_chunk=aug_chunk, crop_offsets=crop_offsets, mean_crop=mean_crop)
    if pca is not None and not train_cfg.pca_aug:       # the file would be read for nothing
        raise UsageError("--pca FILE is the PCA of the colour noise, which --no-pca-aug turns off: give one of them")
    run = RunOptions(device=device, parallel=parallel,
                     devices=devices_from_option(devices),
                     seed=seed, resume=resume, max_steps=max_steps, save_every=save_every, log_every=log_every,
                     bf16=bf16, channels_last=channels_last, compile=compile, compile_mode=compile_mode, lrn_kernel=lrn_kernel, workers=workers,
                     decode=decode or "auto", pca_file=pca,
                     stuck_steps=stuck_steps, tensorboard=tensorboard,
                     epochs_given=epochs is not None)      # left out: a resumed run keeps its own length
    try:
        result = train_run(data, out, model_cfg, train_cfg, run, recipe=recipe, progress=reporter(),
                           classes_from_data=num_classes is None)     # --num-classes given: it must match
    except Interrupted as exc:
        raise exc.advising("run the same command with --resume to continue") from None
    if result["rank"] != 0:            # under torchrun, rank 0 alone speaks
        return
    if json_out:
        print_json(result)
        return
    best = result["best_top1_error"]
    how = "done" if result["finished"] else "stopped"      # stopped: by --max-steps; --resume continues
    best_text = f"; best {result['best_split']} top-1 error {best:.2%}" if best is not None else ""
    console.print(Text.assemble((how, "bold"), f": {plural(result['epochs'], 'epoch')}, {plural(result['step'], 'step')} "
                                f"({result['parallel']} on {result['device']}){best_text}"))
    console.print(f"checkpoints: {Path(result['run_dir']) / 'checkpoints'}", highlight=False)
