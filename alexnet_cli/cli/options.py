"""The options of the network, the training recipe and the running of a run, each defined
once and shared by `summary`, `train` and `ablate` (the options of most commands, --json,
--device, --workers, --bf16, --crops, live in common.py).

The network and recipe options default to None, meaning "the recipe's value":
`--recipe code --no-lrn` is the code's network without LRN.
"""

from __future__ import annotations

from dataclasses import fields
from pathlib import Path
from typing import Annotated, Optional

import typer

from alexnet_cli.cli.common import seed_option
from alexnet_cli.cli.flags import FLAGS
from alexnet_cli.config import RECIPE_NAMES, ModelConfig, resolve_model_config, resolve_train_config

# Each recipe's resolved settings, once: the defaults the options below show
_RECIPE_CONFIGS = {r: (resolve_model_config(r), resolve_train_config(r)) for r in RECIPE_NAMES}
_MODEL_FIELDS = {f.name for f in fields(ModelConfig)}


def _recipe_option(decls: str, **kwargs):
    """A network or recipe option, its default shown as each recipe's value ("paper 3, code 2",
    or one value when both agree): the option's own default is None, "the recipe's"."""
    field = next(f for f, flag in FLAGS.items() if flag == decls.split("/")[0])
    part = 0 if field in _MODEL_FIELDS else 1
    values = [getattr(_RECIPE_CONFIGS[recipe][part], field) for recipe in RECIPE_NAMES]
    shown = ["on" if v is True else "off" if v is False else f"{v:g}" if isinstance(v, float) else str(v)
             for v in values]
    text = shown[0] if len(set(shown)) == 1 else ", ".join(f"{r} {v}" for r, v in zip(RECIPE_NAMES, shown))
    return typer.Option(decls, show_default=text, **kwargs)


_NET = "Network (default: the recipe's)"
_REC = "Training recipe (default: the recipe's)"
_RUN = "Running"

RecipeOpt = Annotated[str, typer.Option("--recipe", help="paper: the paper's text; code: the authors' released code (docs/paper-vs-code.md).")]
NumClassesOpt = Annotated[Optional[int], typer.Option("--num-classes", help="Output classes (default: the data's; a value given must match it).", rich_help_panel=_NET)]
# summary's --num-classes: it reads no data, so its default is the paper's (ModelConfig.num_classes)
SummaryNumClassesOpt = Annotated[Optional[int], typer.Option("--num-classes", help="Output classes (default: 1000, ILSVRC's).", rich_help_panel=_NET)]
LrnOpt = Annotated[Optional[bool], _recipe_option("--lrn/--no-lrn", help="Local response normalisation after conv1 and conv2 (paper 4.3).", rich_help_panel=_NET)]
PoolOpt = Annotated[Optional[int], _recipe_option("--pool", help="Max-pool window with stride 2: 3 overlapping (paper 4.4) or 2 non-overlapping.", rich_help_panel=_NET)]
ActivationOpt = Annotated[Optional[str], _recipe_option("--activation", help="relu (paper 4.1) or tanh.", rich_help_panel=_NET)]
DropoutOpt = Annotated[Optional[float], _recipe_option("--dropout", help="Dropout probability on fc6 and fc7 (paper 5.2: 0.5).", rich_help_panel=_NET)]
DropoutStyleOpt = Annotated[Optional[str], _recipe_option("--dropout-style", help="paper: zero outputs while training, x(1-p) at test (paper 5.2, code); inverted: x1/(1-p) while training (torch, Caffe).", rich_help_panel=_NET)]
ColumnsOpt = Annotated[Optional[int], _recipe_option("--columns", help="2: the paper's two columns; 1: one column with half the kernels (4.2).", rich_help_panel=_NET)]
LrnAlphaOverNOpt = Annotated[Optional[bool], _recipe_option("--lrn-alpha-over-n/--lrn-alpha-as-written", help="Divide LRN's alpha by n (code, torch, Caffe) or not (paper).", rich_help_panel=_NET)]
Conv1OrderOpt = Annotated[Optional[str], _recipe_option("--conv1-order", help="paper: conv, ReLU, LRN, pool; code: conv, LRN, pool, ReLU.", rich_help_panel=_NET)]
WithinMapNormOpt = Annotated[Optional[bool], _recipe_option("--within-map-norm/--no-within-map-norm", help="The code's 5x5 within-map normalisation after conv2's LRN.", rich_help_panel=_NET)]
Conv1PaddingOpt = Annotated[Optional[str], _recipe_option("--conv1-padding", help="paper: pad 2 all round; code: 3-pixel right/bottom overhang.", rich_help_panel=_NET)]
InitStdConv345Opt = Annotated[Optional[float], _recipe_option("--init-std-conv345", help="Init std of conv3-conv5 (paper 0.01, code 0.03).", rich_help_panel=_NET)]
BiasInitOpt = Annotated[Optional[float], _recipe_option("--bias-init", help="Bias of conv2, conv4, conv5, fc6, fc7 (paper 1; Caffe 0.1).", rich_help_panel=_NET)]

# The training recipe (config.TrainConfig)
EpochsOpt = Annotated[Optional[int], _recipe_option("--epochs", help="Epochs (paper: 90; --lr-schedule code: 91, code2010: 93).", rich_help_panel=_REC)]
BatchSizeOpt = Annotated[Optional[int], _recipe_option("--batch-size", help="Global batch (paper: 128).", rich_help_panel=_REC)]
LrOpt = Annotated[Optional[float], _recipe_option("--lr", help="Initial learning rate (paper: 0.01).", rich_help_panel=_REC)]
MomentumOpt = Annotated[Optional[float], _recipe_option("--momentum", help="Momentum (paper: 0.9).", rich_help_panel=_REC)]
WeightDecayOpt = Annotated[Optional[float], _recipe_option("--weight-decay", help="Weight decay (paper: 0.0005).", rich_help_panel=_REC)]
LrScheduleOpt = Annotated[Optional[str], _recipe_option("--lr-schedule", help="plateau (paper: /10 when val error stops improving), code (the 2012 run's fixed drops) or code2010.", rich_help_panel=_REC)]
PatienceOpt = Annotated[Optional[int], _recipe_option("--patience", help="plateau: epochs without a better val top-1 before /10.", rich_help_panel=_REC)]
PlateauBestOpt = Annotated[Optional[str], _recipe_option("--plateau-best", help="plateau: an epoch improves when better than the run's best (run) or than the best since the last drop (since-drop).", rich_help_panel=_REC)]
CodeEpochBaseOpt = Annotated[Optional[int], _recipe_option("--code-epoch-base", help="code schedules: count the notes' epochs from 0 (default: 'epoch 25' = the 26th) or 1.", rich_help_panel=_REC)]
MaxLrDropsOpt = Annotated[Optional[int], _recipe_option("--max-lr-drops", help="plateau: at most this many drops (paper: 3).", rich_help_panel=_REC)]
BiasLrMultOpt = Annotated[Optional[float], _recipe_option("--bias-lr-mult", help="Biases' rate / weights' initial rate (code: 2).", rich_help_panel=_REC)]
BiasWeightDecayOpt = Annotated[Optional[bool], _recipe_option("--bias-weight-decay/--no-bias-weight-decay", help="Weight decay on biases (code: none).", rich_help_panel=_REC)]
PcaAugOpt = Annotated[Optional[bool], _recipe_option("--pca-aug/--no-pca-aug", help="PCA colour augmentation (paper 5.1); needs DATA/pca.json or --pca FILE.", rich_help_panel=_REC)]
PcaFileOpt = Annotated[Optional[Path], typer.Option("--pca", help="Read the PCA of the colour noise from this file (made by `alexnet pca DATA --out FILE`, e.g. for a read-only DATA) instead of DATA/pca.json.", rich_help_panel=_RUN)]
PcaScaleOpt = Annotated[Optional[str], _recipe_option("--pca-scale", help="paper: eigenvalues of [0,1] pixels; code: 0.1*sqrt(eigenvalues), then /1.1.", rich_help_panel=_REC)]
AugChunkOpt = Annotated[Optional[int], _recipe_option("--aug-chunk", help="Images sharing one crop offset and flip (paper 1; code 32).", rich_help_panel=_REC)]
CropOffsetsOpt = Annotated[Optional[int], _recipe_option("--crop-offsets", help="Crop positions per axis: 32 (offsets 0..31, the paper's factor of 2048) or 33 (0..32, code).", rich_help_panel=_REC)]
MeanCropOpt = Annotated[Optional[str], _recipe_option("--mean-crop", help="crop: crop of (image - mean); center: crop - central mean (code); channel: image - per-channel mean (mean_rgb).", rich_help_panel=_REC)]

# Running a run (train.RunOptions): how, not what, it learns
SeedOpt = seed_option("Seed of the initial weights, the data order and the augmentation.", rich_help_panel=_RUN)
ParallelOpt = Annotated[str, typer.Option("--parallel", help="auto | single | model (two columns on --devices) | data (DDP under torchrun).", rich_help_panel=_RUN)]
DevicesOpt = Annotated[Optional[str], typer.Option("--devices", help="model parallel: the devices of column A and B, e.g. cuda:0,cuda:1.", rich_help_panel=_RUN)]
MaxStepsOpt = Annotated[Optional[int], typer.Option("--max-steps", help="Stop after this many steps in total.", rich_help_panel=_RUN)]
SaveEveryOpt = Annotated[Optional[int], typer.Option("--save-every", help="Also write last.pt every N steps.", rich_help_panel=_RUN)]
LogEveryOpt = Annotated[int, typer.Option("--log-every", help="Steps between log lines.", rich_help_panel=_RUN)]
ChannelsLastOpt = Annotated[bool, typer.Option("--channels-last/--no-channels-last", help="NHWC memory layout on CUDA.", rich_help_panel=_RUN)]
CompileOpt = Annotated[bool, typer.Option("--compile", help="torch.compile the network.", rich_help_panel=_RUN)]
CompileModeOpt = Annotated[str, typer.Option("--compile-mode", help="With --compile: default, reduce-overhead (CUDA graphs), max-autotune or max-autotune-no-cudagraphs.", rich_help_panel=_RUN)]
LrnKernelOpt = Annotated[str, typer.Option("--lrn-kernel", help="How LRN computes, same values: auto (fused eager, fused by torch.compile), triton (CUDA), fused or reference.", rich_help_panel=_RUN)]
StuckStepsOpt = Annotated[int, typer.Option("--stuck-steps", help="Warn when the loss stays at chance this many steps.", rich_help_panel=_RUN)]
TensorboardOpt = Annotated[bool, typer.Option("--tensorboard", help="Also log to RUN/tensorboard (needs the tensorboard extra).", rich_help_panel=_RUN)]


def devices_from_option(devices: str | None) -> tuple[str, ...]:
    """--devices cuda:0,cuda:1 as RunOptions.devices."""
    return tuple(d.strip() for d in devices.split(",")) if devices else ()


def model_config_from_options(recipe: str, *, num_classes: int | None, lrn: bool | None, pool: int | None,
                              activation: str | None, dropout: float | None, columns: int | None,
                              dropout_style: str | None,
                              lrn_alpha_over_n: bool | None, conv1_order: str | None,
                              within_map_norm: bool | None, conv1_padding: str | None,
                              init_std_conv345: float | None, bias_init: float | None) -> ModelConfig:
    return resolve_model_config(
        recipe, num_classes=num_classes, lrn=lrn, activation=activation, dropout=dropout, columns=columns,
        dropout_style=dropout_style, pool_kernel=pool, pool_stride=None if pool is None else 2, lrn_alpha_over_n=lrn_alpha_over_n,
        conv1_order=conv1_order, within_map_norm=within_map_norm, conv1_padding=conv1_padding,
        init_std_conv345=init_std_conv345, bias_fill=bias_init)
