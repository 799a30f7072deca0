"""`alexnet summary`: the network layer by layer (paper section 4, figure 2), of the recipe and
switches given or of a checkpoint."""

from __future__ import annotations

import math
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Optional

import typer
from rich.table import Table

from alexnet_cli.cli.arguments import check_checkpoint
from alexnet_cli.cli.common import JsonOpt, console, print_json, reporter, setting_text
from alexnet_cli.cli.options import (ActivationOpt, BiasInitOpt, ColumnsOpt, Conv1OrderOpt, Conv1PaddingOpt,
                                     DropoutOpt, DropoutStyleOpt, InitStdConv345Opt, LrnAlphaOverNOpt, LrnOpt,
                                     PoolOpt, RecipeOpt, SummaryNumClassesOpt, WithinMapNormOpt,
                                     model_config_from_options)
from alexnet_cli.config import RECIPE_NAMES, changed_settings
from alexnet_cli.errors import CheckpointError, UsageError

if TYPE_CHECKING:
    from alexnet_cli.config import ModelConfig
    from alexnet_cli.model import AlexNet
    from alexnet_cli.summary import LayerRow, LrnParams

# The parameters that do not set the network: every other one does, and a checkpoint's own
# settings leave no room for it.
NOT_NETWORK_PARAMS = ("checkpoint", "json_out")


def _checkpoint_argument(value: Path | None) -> Path | None:
    return check_checkpoint(value, "CHECKPOINT")


CheckpointOptionalArg = Annotated[Optional[Path], typer.Argument(
    exists=True, callback=_checkpoint_argument, show_default=False, metavar="CHECKPOINT",
    help="Summarise the network this checkpoint holds (as saved; the network options cannot be given with it).")]


def summary(
    ctx: typer.Context,
    checkpoint: CheckpointOptionalArg = None,
    recipe: RecipeOpt = "paper",
    json_out: JsonOpt = False,
    num_classes: SummaryNumClassesOpt = None,
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
) -> None:
    """Show the network layer by layer from its 3x224x224 input: kernel (an LRN's n, k, alpha,
    beta), stride, padding, which inputs each layer sees, output shape, neurons (outputs per
    image) and parameters, beside the paper's totals."""
    from alexnet_cli.summary import meta_network, summarize
    if checkpoint is not None:
        model, recipe = _checkpoint_network(ctx, checkpoint)
    else:
        model = meta_network(model_config_from_options(
            recipe, num_classes=num_classes, lrn=lrn, pool=pool, activation=activation, dropout=dropout,
            dropout_style=dropout_style, columns=columns, lrn_alpha_over_n=lrn_alpha_over_n,
            conv1_order=conv1_order, within_map_norm=within_map_norm, conv1_padding=conv1_padding,
            init_std_conv345=init_std_conv345, bias_init=bias_init))
    rows = summarize(model)
    changed = changed_settings(model.config, recipe)
    if json_out:
        print_json(_document(rows, recipe, changed, checkpoint))
        return
    variant = "".join(f", {setting_text(k, v)}" for k, v in changed.items())   # the ablation switches given
    source = "" if checkpoint is None else f" of {checkpoint}"
    console.print(_table(rows, f"AlexNet{source} ({recipe} recipe{variant}), input 3x224x224", model.config))


def _checkpoint_network(ctx: typer.Context, path: Path) -> tuple[AlexNet, str]:
    """The network `path` holds and the recipe it names (a bare state_dict: the paper's); a usage
    error if a network option was given too."""
    given = [_flag(param, ctx.params.get(param.name)) for param in ctx.command.params
             if param.name not in NOT_NETWORK_PARAMS and ctx.get_parameter_source(param.name).name != "DEFAULT"]
    if given:
        raise UsageError(f"{', '.join(given)} cannot be combined with CHECKPOINT: summary shows the network "
                         "the checkpoint holds, with its own settings")
    from alexnet_cli.checkpoint import load_model
    loaded = load_model(path)
    loaded.tell_assumptions(reporter())
    recipe = loaded.config.get("recipe", "paper")
    if recipe not in RECIPE_NAMES:
        raise CheckpointError(f"{path}: its config names the recipe {recipe!r}, unknown here "
                              f"({', '.join(RECIPE_NAMES)})")
    return loaded.model, recipe


def _flag(param, value) -> str:
    """The flag the user gave for `param`: `--no-lrn` for --lrn/--no-lrn set off."""
    return param.secondary_opts[0] if value is False and param.secondary_opts else param.opts[0]


def _document(rows: list[LayerRow], recipe: str, changed: dict, checkpoint: Path | None) -> dict:
    from alexnet_cli.summary import INPUT_SHAPE, PAPER_STATED_NEURONS, PAPER_STATED_PARAMS, paper_neurons
    return {"recipe": recipe, "changed": changed, "checkpoint": None if checkpoint is None else str(checkpoint),
            "layers": [{"name": r.name, "kind": r.kind, "output_shape": list(r.output_shape),
                        "neurons": r.neurons, "params": r.params, "kernel": r.kernel, "stride": r.stride,
                        "padding": None if r.padding is None else list(r.padding), "groups": r.groups,
                        "inputs": r.inputs} for r in rows],
            "params": sum(r.params for r in rows), "input_shape": list(INPUT_SHAPE),
            "paper_neurons": paper_neurons(rows),
            "paper_stated": {"neurons": PAPER_STATED_NEURONS, "params": PAPER_STATED_PARAMS}}


SHORT_KINDS = {"LocalResponseNorm": "LRN"}     # the table's; --json keeps the class name


def _table(rows: list[LayerRow], title: str, config: ModelConfig) -> Table:
    """The layer table, the input first; at 80 columns a long type or a "both columns" takes two
    lines, and an LRN's constants take three in the kernel column (as wide as conv3's 3x3x256).
    No per-layer column of the paper's neurons: the table is 80 columns already, and each of the
    eight would repeat the neurons beside it; the "paper" rows compare the sums."""
    from alexnet_cli.summary import INPUT_SHAPE, PAPER_STATED_NEURONS, PAPER_STATED_PARAMS, paper_neurons
    total = sum(r.params for r in rows)
    notes = ["paper, as counted: the outputs of conv1-conv5 and fc6-fc8 here, the neurons the paper counts "
             "(4.5); as stated: the paper's abstract."]
    if any(r.lrn for r in rows):
        notes.append("LRN (4.3): b = a / (k + α·sum of a² over n adjacent maps)^β"
                     + (f"; α is the code's {_number(config.lrn_alpha)} / n (--lrn-alpha-over-n)."
                        if config.lrn_alpha_over_n else "."))
    if any(r.padding and len(set(r.padding)) > 1 for r in rows):
        notes.append("pad a/b: a zeros before (top, left), b after (bottom, right).")
    table = Table(title=title, title_justify="left", padding=0, caption=" ".join(notes), caption_justify="left")
    for col, justify in (("layer", "left"), ("type", "left"), ("kernel", "left"), ("stride", "right"),
                         ("pad", "right"), ("sees", "left"), ("output", "right"), ("neurons", "right"),
                         ("params", "right")):
        table.add_column(col, justify=justify, overflow="fold", no_wrap=col not in ("type", "sees"))
    table.add_row("input", "image", "", "", "", "", "x".join(map(str, INPUT_SHAPE)), f"{math.prod(INPUT_SHAPE):,}", "")
    for r in rows:
        kernel = _lrn_text(r.lrn) if r.lrn else r.kernel or ""
        table.add_row(r.name, SHORT_KINDS.get(r.kind, r.kind), kernel, "" if r.stride is None else str(r.stride),
                      _padding_text(r.padding), r.inputs or "", "x".join(map(str, r.output_shape)),
                      f"{r.neurons:,}", f"{r.params:,}" if r.params else "")
    table.add_section()
    table.add_row("total", "", "", "", "", "", "", "", f"{total:,}")
    table.add_row("paper", "as counted", "", "", "", "", "", f"{paper_neurons(rows):,}", "")
    table.add_row("", "as stated", "", "", "", "", "", f"{PAPER_STATED_NEURONS:,}",
                  f"{PAPER_STATED_PARAMS // 1_000_000} million")
    return table


def _lrn_text(lrn: LrnParams) -> str:
    """An LRN's constants in the kernel column, on three lines: `n=5 k=2`, `α=1e-4`, `β=0.75`."""
    return f"n={lrn.n} k={_number(lrn.k)}\nα={_number(lrn.alpha)}\nβ={_number(lrn.beta)}"


def _number(x: float) -> str:
    """`x` as the paper writes it: 2, 0.75, 1e-4 (not 0.0001), 2e-5."""
    if x and abs(x) < 1e-3:
        mantissa, exponent = f"{x:.3e}".split("e")
        return f"{mantissa.rstrip('0').rstrip('.')}e{int(exponent)}"
    return f"{x:g}"


def _padding_text(padding: tuple[int, int, int, int] | None) -> str:
    """`2` for 2 zeros all round; `0/3` for 0 before and 3 after (the code's conv1)."""
    if padding is None:
        return ""
    top, bottom, left, right = padding
    if len(set(padding)) == 1:
        return str(top)
    if (top, bottom) == (left, right):
        return f"{top}/{bottom}"
    return f"{top}/{bottom} x {left}/{right}"
