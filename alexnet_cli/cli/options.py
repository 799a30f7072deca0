"""The network's options, defined once and shared by `summary` and `train`.

Every option defaults to None, meaning "the recipe's value": `--recipe code --no-lrn` is
the code's network without LRN.
"""

from __future__ import annotations

from typing import Annotated, Optional

import typer

from alexnet_cli.config import ModelConfig, resolve_model_config

_NET = "Network (default: the recipe's)"

RecipeOpt = Annotated[str, typer.Option("--recipe", help="paper: the paper's text; code: the authors' released code (docs/paper-vs-code.md).")]
NumClassesOpt = Annotated[Optional[int], typer.Option("--num-classes", help="Output classes (default: 1000, or the data's).", rich_help_panel=_NET)]
LrnOpt = Annotated[Optional[bool], typer.Option("--lrn/--no-lrn", help="Local response normalisation after conv1 and conv2 (paper 4.3).", rich_help_panel=_NET)]
PoolOpt = Annotated[Optional[int], typer.Option("--pool", help="Max-pool window with stride 2: 3 overlapping (paper 4.4) or 2 non-overlapping.", rich_help_panel=_NET)]
ActivationOpt = Annotated[Optional[str], typer.Option("--activation", help="relu (paper 4.1) or tanh.", rich_help_panel=_NET)]
DropoutOpt = Annotated[Optional[float], typer.Option("--dropout", help="Dropout probability on fc6 and fc7 (paper 5.2: 0.5).", rich_help_panel=_NET)]
DropoutStyleOpt = Annotated[Optional[str], typer.Option("--dropout-style", help="paper: zero outputs while training, x(1-p) at test (paper 5.2, code); inverted: x1/(1-p) while training (torch, Caffe).", rich_help_panel=_NET)]
ColumnsOpt = Annotated[Optional[int], typer.Option("--columns", help="2: the paper's two columns; 1: one column with half the kernels (4.2).", rich_help_panel=_NET)]
LrnAlphaOverNOpt = Annotated[Optional[bool], typer.Option("--lrn-alpha-over-n/--lrn-alpha-as-written", help="Divide LRN's alpha by n (code, torch, Caffe) or not (paper).", rich_help_panel=_NET)]
Conv1OrderOpt = Annotated[Optional[str], typer.Option("--conv1-order", help="paper: conv, ReLU, LRN, pool; code: conv, LRN, pool, ReLU.", rich_help_panel=_NET)]
WithinMapNormOpt = Annotated[Optional[bool], typer.Option("--within-map-norm/--no-within-map-norm", help="The code's 5x5 within-map normalisation after conv2's LRN.", rich_help_panel=_NET)]
Conv1PaddingOpt = Annotated[Optional[str], typer.Option("--conv1-padding", help="paper: pad 2 all round; code: 3-pixel right/bottom overhang.", rich_help_panel=_NET)]
InitStdConv345Opt = Annotated[Optional[float], typer.Option("--init-std-conv345", help="Init std of conv3-conv5 (paper 0.01, code 0.03).", rich_help_panel=_NET)]
DecodeOpt = Annotated[Optional[str], typer.Option("--decode", help="Where jpeg shards are decoded: cpu (simplejpeg, one thread per --workers), gpu (batched nvJPEG on the CUDA device) or auto (gpu on CUDA when a GPU decoder is installed). Default: auto; eval and features: the decoder the run trained with. Raw shards need none.")]
BiasInitOpt = Annotated[Optional[float], typer.Option("--bias-init", help="Bias of conv2, conv4, conv5, fc6, fc7 (paper 1; Caffe 0.1).", rich_help_panel=_NET)]


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
