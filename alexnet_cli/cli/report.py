"""`alexnet report`: training runs side by side, and their learning curves as one picture."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Optional

import typer
from rich.cells import cell_len
from rich.console import Console, ConsoleOptions, Group, RenderResult
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
    check_writable(out, "--out")                  # report() refuses a run's own files (paths.check_output)
    reports = report(runs, out)
    if json_out:
        print_json([r.to_json() for r in reports])
    else:
        console.print(table(reports))
    if out is not None:
        err_console.print(f"curves: {out}", highlight=False)


TRIVIAL = "(trivial)"     # under a trivial top-5 error, as `eval` marks it (`table`'s note says why)


def _pair(top1: float | None, top5: float | None) -> str:
    return "" if top1 is None else f"{100 * top1:.2f}/{100 * (top5 or 0):.2f}"


def _settings(r: RunReport) -> list[str]:
    """The run's second line: its recipe and the settings changed from it, as the user sets them,
    in the pieces that `packed` never breaks (a flag and its value: `--lr 0.0025`)."""
    changed = [setting_text(k, v) for k, v in r.changed.items()]
    if not changed:
        return [f"recipe {r.recipe};", "no setting changed"]
    return [f"recipe {r.recipe};", "changed:", *(f"{text}," for text in changed[:-1]), changed[-1]]


def _rate(images_per_s: float | None) -> str:
    return "" if images_per_s is None else f"{images_per_s:,.0f}" if images_per_s >= 10 else f"{images_per_s:.1f}"


def _time(seconds: float) -> str:
    minutes, s = divmod(round(seconds), 60)
    h, m = divmod(minutes, 60)
    return f"{h}h{m:02d}m" if h else f"{m}m{s:02d}s"


# (header, justify): the first line of a run; the header wraps onto two lines in a narrow column
COLUMNS = (("run", "left"), ("state", "left"), ("epochs", "right"), ("best (epoch)", "right"), ("last", "right"),
           ("lr/10 after", "left"), ("img/s", "right"), ("time", "right"))
MIN_RUN_WIDTH = 8        # where 80 columns are too few, a longer run name folds onto the next lines
MIN_DROPS_WIDTH = 6      # and so does a list of rate drops ("30, 60, 80" on two lines)


def _cells(r: RunReport) -> list[str]:
    """A run's first line: its numbers under COLUMNS. A run without a validation split shows that
    in place of the best error, and its last training error, marked `train`, in place of the last.
    A trivial top-5 error (at most 5 classes) is marked on a second line, as `eval` marks it."""
    from alexnet_cli.config import top5_is_trivial
    if r.val_split is None:
        best = "no val split"
        last = "" if r.last_train_top1_error is None else f"train {100 * r.last_train_top1_error:.2f}"
    else:
        best = _pair(r.best_val_top1_error, r.best_val_top5_error)
        best = f"{best} ({r.best_epoch})" if best else ""
        last = _pair(r.last_val_top1_error, r.last_val_top5_error)
        if top5_is_trivial(r.num_classes):
            best, last = (f"{cell}\n{TRIVIAL}" if cell else "" for cell in (best, last))
    return [r.name, r.state, f"{r.epochs_done}/{r.epochs_total}", best, last, ", ".join(map(str, r.lr_drops)),
            _rate(r.images_per_s), _time(r.time_s)]


class RunsTable:
    """The runs, each in its own section between rules: a first line of numbers under labelled
    columns, and an indented second line with the run's recipe and changed settings, as wide as
    the table (rich tables have no cell that spans columns). Fits 80 columns: where the full
    table does not, the headers of two words take two lines and a long run name folds in its
    column (`layout`); the settings wrap."""

    def __init__(self, reports: list[RunReport], notes: list[str]):
        self.reports, self.notes = reports, notes       # notes: lines under the table, wrapped as wide
        self.rows = [_cells(r) for r in reports]

    def _fitted(self, headers: list[str]) -> list[int]:
        return [max([len(h)] + [len(line) for row in self.rows for line in row[i].split("\n")])
                for i, h in enumerate(headers)]

    def layout(self, max_width: int) -> tuple[list[int], int]:
        """The columns' widths and the spaces between them, for `max_width` columns: the first of
        these that fits: the full table; the headers of two words on two lines; a long run name
        folded (to 12 columns at least); the columns closed up to one space, the name folded to
        8 and the rate drops to 6. Else that last, and rich squeezes it."""
        full = self._fitted([h for h, _ in COLUMNS])
        short = self._fitted([max(h.split(), key=len) for h, _ in COLUMNS])   # a header on two lines
        for widths, gap, least in ((full, 2, {}), (short, 2, {}), (short, 2, {0: 12}),
                                   (short, 1, {0: MIN_RUN_WIDTH, 5: MIN_DROPS_WIDTH})):
            widths = list(widths)
            for i, w in least.items():                     # the run's name, then the rate drops
                over = _width(widths, gap) - max_width
                if over > 0:
                    widths[i] = max(widths[i] - over, min(w, widths[i]))
            if _width(widths, gap) <= max_width:
                break
        return widths, gap

    def __rich_console__(self, console: Console, options: ConsoleOptions) -> RenderResult:
        widths, gap = self.layout(options.max_width)
        width = min(_width(widths, gap), options.max_width)
        rule = Text("─" * width, style="dim")
        yield _line(widths, gap, [Text(h, justify=j) for h, j in COLUMNS], style="bold")
        yield rule
        for i, (r, cells) in enumerate(zip(self.reports, self.rows)):
            if i:
                yield rule
            yield _line(widths, gap, [Text(cells[0], style="bold"), *cells[1:]])   # user text: no markup
            yield packed(_settings(r), width, indent=2, style="dim")
        if self.notes:
            yield Text("")
        for note in self.notes:
            yield wrapped(note, max(width, 60))


def _width(widths: list[int], gap: int) -> int:
    return sum(widths) + gap * (len(widths) - 1)


def _line(widths: list[int], gap: int, cells: list, style: str = "") -> Table:
    """One line of the table: `cells` under COLUMNS, each as wide as `widths` says."""
    grid = Table.grid(padding=(0, gap, 0, 0))
    for w, (_, justify) in zip(widths, COLUMNS):
        grid.add_column(width=w, justify=justify, overflow="fold", style=style)
    grid.add_row(*cells)
    return grid


def wrapped(text: str, width: int, *, indent: int = 0, style: str = "") -> Table:
    """`text` wrapped at `width` columns, `indent` spaces in, on a terminal or not (rich leaves a
    plain line whole when stdout is not a terminal: common._Console)."""
    grid = Table.grid(padding=(0, 0, 0, indent), pad_edge=True)
    grid.add_column(width=max(width - indent, 20), overflow="fold", style=style)
    grid.add_row(Text(text))
    return grid


def packed(pieces: list[str], width: int, *, indent: int = 0, style: str = "") -> Table:
    """`pieces` joined by spaces and wrapped at `width` only between pieces, so that a narrow
    terminal never parts a flag from its value; a piece wider than a whole line folds (`wrapped`)."""
    room, lines = max(width - indent, 20) - indent, []     # wrapped's column holds the indent as well
    for piece in pieces:
        if lines and cell_len(lines[-1]) + 1 + cell_len(piece) <= room:
            lines[-1] += " " + piece
        else:
            lines.append(piece)
    return wrapped("\n".join(lines), width, indent=indent, style=style)


def table(reports: list[RunReport]) -> Group:
    """The title, then the runs (RunsTable) with, under them, what a `(trivial)` or a `train`
    figure means."""
    from alexnet_cli.config import TOP_K, top5_is_trivial
    notes = []
    if any(top5_is_trivial(r.num_classes) for r in reports):
        notes.append(f"top-5 {TRIVIAL}: a run of at most {TOP_K} classes, whose every label is among the top "
                     f"{TOP_K}, so its top-5 error is 0 whatever the network")
    if any(r.val_split is None for r in reports):
        notes.append("no val split: the run's data had no validation split; 'train' is its last epoch's training "
                     "top-1 error (augmented crops, dropout on), the error that picked its best.pt")
    return Group(Text("Runs: validation top-1 / top-5 error (%, centre crop)", style="italic"), Text(""),
                 RunsTable(reports, notes))
