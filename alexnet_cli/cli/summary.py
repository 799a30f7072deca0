"""`alexnet summary`: the network layer by layer (paper section 4, figure 2)."""

from __future__ import annotations

from rich.table import Table

from alexnet_cli.cli.common import JsonOpt, console, print_json, setting_text
from alexnet_cli.cli.options import (ActivationOpt, BiasInitOpt, ColumnsOpt, Conv1OrderOpt, Conv1PaddingOpt,
                                     DropoutOpt, DropoutStyleOpt, InitStdConv345Opt, LrnAlphaOverNOpt, LrnOpt,
                                     NumClassesOpt, PoolOpt, RecipeOpt, WithinMapNormOpt, model_config_from_options)
from alexnet_cli.config import changed_settings


def summary(
    recipe: RecipeOpt = "paper",
    json_out: JsonOpt = False,
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
) -> None:
    """Show the network layer by layer: output shape, neurons (outputs per image), parameters."""
    from alexnet_cli.summary import meta_network, summarize
    config = model_config_from_options(
        recipe, num_classes=num_classes, lrn=lrn, pool=pool, activation=activation, dropout=dropout,
        dropout_style=dropout_style, columns=columns, lrn_alpha_over_n=lrn_alpha_over_n, conv1_order=conv1_order,
        within_map_norm=within_map_norm, conv1_padding=conv1_padding, init_std_conv345=init_std_conv345,
        bias_init=bias_init)
    rows = summarize(meta_network(config))
    total = sum(r.params for r in rows)
    changed = changed_settings(config, recipe)
    if json_out:
        print_json({"recipe": recipe, "changed": changed,
                    "layers": [{"name": r.name, "kind": r.kind, "output_shape": list(r.output_shape),
                                "neurons": r.neurons, "params": r.params} for r in rows],
                    "params": total, "input_shape": [3, 224, 224]})
        return
    variant = "".join(f", {setting_text(k, v)}" for k, v in changed.items())   # the ablation switches given
    table = Table(title=f"AlexNet ({recipe} recipe{variant}), input 3x224x224", title_justify="left")
    for col, justify in (("layer", "left"), ("type", "left"), ("output", "right"), ("neurons", "right"),
                         ("params", "right")):
        table.add_column(col, justify=justify)
    for r in rows:
        table.add_row(r.name, r.kind, "x".join(map(str, r.output_shape)), f"{r.neurons:,}",
                      f"{r.params:,}" if r.params else "")
    table.add_section()
    table.add_row("total", "", "", "", f"{total:,}")
    console.print(table)
