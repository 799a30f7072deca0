"""`alexnet report`: training runs side by side, and their learning curves as one picture."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Optional

import typer
from rich import box
from rich.table import Table
from rich.text import Text

from alexnet_cli.cli.common import JsonOpt, check_writable, console, err_console, print_json, setting_text

if TYPE_CHECKING:
    from alexnet_cli.report import RunReport

Runs = Annotated[list[Path], typer.Argument(exists=True, file_okay=False, metavar="RUN", show_default=False,
                                            help="Run folders (alexnet train's --out), one or more.")]


def report_cmd(
    runs: Runs,
    out: Annotated[Optional[Path], typer.Option("--out", metavar="FILE.png", dir_okay=False,
                                                help="Draw the learning curves of every run into one picture "
                                                     "(.png, .pdf, .svg, ...).")] = None,
    json_out: JsonOpt = False,
) -> None:
    """The runs side by side: settings, epochs, best and last validation error, rate drops,
    speed, time and state; --out draws their learning curves."""
    from alexnet_cli.report import report
    check_writable(out, "--out")
    reports = report(runs, out)
    if json_out:
        print_json([r.to_json() for r in reports])
    else:
        console.print(table(reports))
    if out is not None:
        err_console.print(f"curves: {out}", highlight=False)


def _pair(top1: float | None, top5: float | None, trivial: bool) -> str:
    if top1 is None:
        return ""
    return f"{100 * top1:.2f}/{'-' if trivial else f'{100 * (top5 or 0):.2f}'}"


def _settings(r: RunReport) -> str:
    return "\n".join([r.recipe, *(setting_text(k, v) for k, v in r.changed.items())])


def _rate(images_per_s: float | None) -> str:
    return "" if images_per_s is None else f"{images_per_s:,.0f}" if images_per_s >= 10 else f"{images_per_s:.1f}"


def _time(seconds: float) -> str:
    minutes, s = divmod(round(seconds), 60)
    h, m = divmod(minutes, 60)
    return f"{h}h{m:02d}m" if h else f"{m}m{s:02d}s"


def table(reports: list[RunReport]) -> Table:
    """One row per run: under its name the recipe and the settings changed from it, under its
    epochs its state, under its best error that error's epoch (fits 80 columns)."""
    from alexnet_cli.config import TOP_K, top5_is_trivial
    t = Table(title="Runs: validation top-1 / top-5 error (%, centre crop)", title_justify="left",
              box=box.SIMPLE_HEAD, pad_edge=False, padding=(0, 1), collapse_padding=True)
    for col, justify in (("run", "left"), ("epochs", "right"), ("best", "right"), ("last", "right"),
                         ("lr/10 after", "left"), ("img/s", "right"), ("time", "right")):
        t.add_column(col, justify=justify, overflow="fold", no_wrap=col not in ("run", "lr/10 after"),
                     min_width={"run": 13, "lr/10 after": 6}.get(col))
    if any(top5_is_trivial(r.num_classes) for r in reports):
        t.caption = (f"top-5 '-': a run of at most {TOP_K} classes, whose every label is among the top {TOP_K} "
                     "(its top-5 error is 0 whatever the network)")
        t.caption_justify = "left"
    for r in reports:
        trivial_5 = top5_is_trivial(r.num_classes)
        best = _pair(r.best_val_top1_error, r.best_val_top5_error, trivial_5)
        t.add_row(Text.assemble((r.name, "bold"), "\n", (_settings(r), "dim")),      # user text: no markup
                  f"{r.epochs_done}/{r.epochs_total}\n{r.state}",
                  Text.assemble(best, "\n", (f"epoch {r.best_epoch}", "dim")) if best else "",
                  _pair(r.last_val_top1_error, r.last_val_top5_error, trivial_5), ", ".join(map(str, r.lr_drops)),
                  _rate(r.images_per_s), _time(r.time_s))
    return t
