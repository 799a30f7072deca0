"""`alexnet train`: the paper's recipe (sections 5 and 6) on a prepared data folder."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.text import Text

from alexnet_cli.cli.common import ExistingDir, JsonOpt, console, print_json, reporter
from alexnet_cli.cli.options import (ActivationOpt, BiasInitOpt, ColumnsOpt, Conv1OrderOpt, Conv1PaddingOpt, DecodeOpt,
                                     DropoutOpt, DropoutStyleOpt, InitStdConv345Opt, LrnAlphaOverNOpt, LrnOpt, NumClassesOpt,
                                     PoolOpt, RecipeOpt, WithinMapNormOpt, model_config_from_options)
from alexnet_cli.config import resolve_train_config
from alexnet_cli.train import RunOptions, train as train_run

_REC = "Training recipe (default: the recipe's)"
_RUN = "Running"


def _opt(flag: str, help: str, panel: str = _REC, **kw):
    return typer.Option(flag, help=help, rich_help_panel=panel, **kw)


def train(
    data: ExistingDir,
    out: Annotated[Path, _opt("--out", "Run folder: config.json, metrics.jsonl, checkpoints/.", _RUN)],
    recipe: RecipeOpt = "paper",
    epochs: Annotated[Optional[int], _opt("--epochs", "Epochs (paper: 90; --lr-schedule code: 91, code2010: 93).")] = None,
    batch_size: Annotated[Optional[int], _opt("--batch-size", "Global batch (paper: 128).")] = None,
    lr: Annotated[Optional[float], _opt("--lr", "Initial learning rate (paper: 0.01).")] = None,
    momentum: Annotated[Optional[float], _opt("--momentum", "Momentum (paper: 0.9).")] = None,
    weight_decay: Annotated[Optional[float], _opt("--weight-decay", "Weight decay (paper: 0.0005).")] = None,
    lr_schedule: Annotated[Optional[str], _opt("--lr-schedule", "plateau (paper: /10 when val error stops improving), code (the 2012 run's fixed drops) or code2010.")] = None,
    patience: Annotated[Optional[int], _opt("--patience", "plateau: epochs without a better val top-1 before /10.")] = None,
    code_epoch_base: Annotated[Optional[int], _opt("--code-epoch-base", "code schedules: count the notes' epochs from 0 (default: 'epoch 25' = the 26th) or 1.")] = None,
    max_lr_drops: Annotated[Optional[int], _opt("--max-lr-drops", "plateau: at most this many drops (paper: 3).")] = None,
    bias_lr_mult: Annotated[Optional[float], _opt("--bias-lr-mult", "Biases' rate / weights' initial rate (code: 2).")] = None,
    bias_weight_decay: Annotated[Optional[bool], _opt("--bias-weight-decay/--no-bias-weight-decay", "Weight decay on biases (code: none).")] = None,
    pca_aug: Annotated[Optional[bool], _opt("--pca-aug/--no-pca-aug", "PCA colour augmentation (paper 5.1); needs DATA/pca.json.")] = None,
    pca_scale: Annotated[Optional[str], _opt("--pca-scale", "paper: eigenvalues of [0,1] pixels; code: 0.1*sqrt(eigenvalues), then /1.1.")] = None,
    aug_chunk: Annotated[Optional[int], _opt("--aug-chunk", "Images sharing one crop offset and flip (paper 1; code 32).")] = None,
    mean_crop: Annotated[Optional[str], _opt("--mean-crop", "crop: crop of (image - mean); center: crop - central mean (code).")] = None,
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
    seed: Annotated[int, _opt("--seed", "Seed of the initial weights, the data order and the augmentation.", _RUN)] = 0,
    device: Annotated[Optional[str], _opt("--device", "cpu, cuda or cuda:N (default: cuda when available).", _RUN)] = None,
    parallel: Annotated[str, _opt("--parallel", "auto | single | model (two columns on --devices) | data (DDP under torchrun).", _RUN)] = "auto",
    devices: Annotated[Optional[str], _opt("--devices", "model parallel: the devices of column A and B, e.g. cuda:0,cuda:1.", _RUN)] = None,
    resume: Annotated[bool, _opt("--resume", "Continue the run in --out exactly where it stopped.", _RUN)] = False,
    max_steps: Annotated[Optional[int], _opt("--max-steps", "Stop after this many steps in total.", _RUN)] = None,
    save_every: Annotated[Optional[int], _opt("--save-every", "Also write last.pt every N steps.", _RUN)] = None,
    log_every: Annotated[int, _opt("--log-every", "Steps between log lines.", _RUN)] = 50,
    bf16: Annotated[bool, _opt("--bf16/--no-bf16", "bf16 autocast on CUDA.", _RUN)] = True,
    channels_last: Annotated[bool, _opt("--channels-last/--no-channels-last", "NHWC memory layout on CUDA.", _RUN)] = True,
    compile: Annotated[bool, _opt("--compile", "torch.compile the network.", _RUN)] = False,
    compile_mode: Annotated[str, _opt("--compile-mode", "With --compile: default, reduce-overhead (CUDA graphs), max-autotune or max-autotune-no-cudagraphs.", _RUN)] = "default",
    lrn_kernel: Annotated[str, _opt("--lrn-kernel", "How LRN computes, same values: auto (fused eager, fused by torch.compile), triton (CUDA), fused or reference.", _RUN)] = "auto",
    workers: Annotated[Optional[int], _opt("--workers", "Data loader threads (default: up to 8 for raw shards, all cores but two for jpeg).", _RUN)] = None,
    decode: DecodeOpt = None,
    stuck_steps: Annotated[int, _opt("--stuck-steps", "Warn when the loss stays at chance this many steps.", _RUN)] = 2000,
    tensorboard: Annotated[bool, _opt("--tensorboard", "Also log to RUN/tensorboard (needs the tensorboard extra).", _RUN)] = False,
    json_out: JsonOpt = False,
) -> None:
    """Train AlexNet on DATA (a folder made by `alexnet prep`) into --out."""
    model_cfg = model_config_from_options(
        recipe, num_classes=num_classes, lrn=lrn, pool=pool, activation=activation, dropout=dropout,
        dropout_style=dropout_style, columns=columns, lrn_alpha_over_n=lrn_alpha_over_n, conv1_order=conv1_order,
        within_map_norm=within_map_norm, conv1_padding=conv1_padding, init_std_conv345=init_std_conv345,
        bias_init=bias_init)
    train_cfg = resolve_train_config(
        recipe, epochs=epochs, batch_size=batch_size, lr=lr, momentum=momentum, weight_decay=weight_decay,
        lr_schedule=lr_schedule, code_epoch_base=code_epoch_base, plateau_patience=patience, max_lr_drops=max_lr_drops, bias_lr_mult=bias_lr_mult,
        bias_weight_decay=bias_weight_decay, pca_aug=pca_aug, pca_scale=pca_scale, aug_chunk=aug_chunk,
        mean_crop=mean_crop)
    run = RunOptions(device=device, parallel=parallel,
                     devices=tuple(d.strip() for d in devices.split(",")) if devices else (),
                     seed=seed, resume=resume, max_steps=max_steps, save_every=save_every, log_every=log_every,
                     bf16=bf16, channels_last=channels_last, compile=compile, compile_mode=compile_mode, lrn_kernel=lrn_kernel, workers=workers,
                     decode=decode or "auto",
                     stuck_steps=stuck_steps, tensorboard=tensorboard)
    result = train_run(data, out, model_cfg, train_cfg, run, recipe=recipe, progress=reporter())
    if result["rank"] != 0:            # under torchrun, rank 0 alone speaks
        return
    if json_out:
        print_json(result)
        return
    best = result["best_top1_error"]
    how = "done" if result["finished"] else "stopped"      # stopped: by --max-steps; --resume continues
    best_text = f"; best {result['best_split']} top-1 error {best:.2%}" if best is not None else ""
    console.print(Text.assemble((how, "bold"), f": {result['epochs']} epochs, {result['step']} steps "
                                f"({result['parallel']} on {result['device']}){best_text}"))
    console.print(f"checkpoints: {Path(result['run_dir']) / 'checkpoints'}", highlight=False)
