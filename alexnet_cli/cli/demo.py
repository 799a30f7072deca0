"""`alexnet demo`: the whole pipeline (prep, pca, train, eval, kernels, neighbors, predict) on a small
generated data set, in a few CPU minutes (library: alexnet_cli.demo, whose doc explains the
demo's settings)."""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.markup import escape
from rich.table import Table

from alexnet_cli.cli.common import DeviceOpt, JsonOpt, check_writable, console, print_json, reporter, seed_option
from alexnet_cli.config import DEMO_OUT, DemoConfig, top5_is_trivial
from alexnet_cli.errors import Interrupted
from alexnet_cli.progress import plural

if TYPE_CHECKING:
    from alexnet_cli.demo import DemoResult

_D = DemoConfig()
_SeedOpt = seed_option("Seed of the data, the initial weights, the order and the augmentation.")
_SIZE = "Size (default: the demo's)"
_OUT_HELP = ("Folder for the images, data, run and figures. A later demo with the same settings reuses what is "
             "finished; with other settings it replaces the demo's own files; a non-empty folder without the "
             "demo's marker is refused.")


def demo(
    out: Annotated[Path, typer.Option("--out", file_okay=False, help=_OUT_HELP)] = DEMO_OUT,
    classes: Annotated[int, typer.Option("--classes", min=2, max=64, help="Generated classes (chance top-1 error = 1 - 1/classes).", rich_help_panel=_SIZE)] = _D.classes,
    epochs: Annotated[int, typer.Option("--epochs", min=1, help="Training epochs.", rich_help_panel=_SIZE)] = _D.epochs,
    train_per_class: Annotated[int, typer.Option("--train-per-class", min=1, help="Training images per class.", rich_help_panel=_SIZE)] = _D.train_per_class,
    val_per_class: Annotated[int, typer.Option("--val-per-class", min=1, help="Validation images per class.", rich_help_panel=_SIZE)] = _D.val_per_class,
    batch_size: Annotated[int, typer.Option("--batch-size", min=1, help="Batch size (paper: 128).", rich_help_panel=_SIZE)] = _D.batch_size,
    seed: _SeedOpt = _D.seed,
    device: DeviceOpt = None,
    json_out: JsonOpt = False,
) -> None:
    """Run the whole pipeline on a small generated data set: prep, pca, train, eval (1 and 10
    crops), kernels, neighbors, predict; a few minutes on two CPU cores."""
    from alexnet_cli.demo import check_out, run_demo
    config = DemoConfig(classes=classes, epochs=epochs, train_per_class=train_per_class, val_per_class=val_per_class,
                        batch_size=batch_size, seed=seed, device=device)
    check_writable(out, "--out", folder=True)
    check_out(out)                       # a foreign folder: refused before the plan is printed
    if not json_out:
        console.print(_intro(config, out), markup=True)
    try:
        result = run_demo(out, config, progress=reporter(), on_step=None if json_out else _show)
    except Interrupted as exc:
        raise exc.advising(Interrupted.AGAIN) from None
    if json_out:
        print_json(result.to_json())
        return
    _show_paths(result)


def _intro(c: DemoConfig, out: Path) -> str:
    return (f"[bold]alexnet demo[/] into {escape(str(out))}: {c.classes} generated classes, {c.train_per_class} training and "
            f"{c.val_per_class} validation images each; the paper's network and recipe except batch "
            f"{c.batch_size} (paper 128), learning rate {c.learning_rate:g} (paper 0.01 at batch 128), bias init {c.bias_fill:g} "
            f"(paper 1, Caffe 0.1), {plural(c.epochs, 'epoch')}; dropout {c.dropout:g}, seed {c.seed}.")


def _show(step: str, r: DemoResult) -> None:
    """Print one finished step's result."""
    seconds = f"({r.timings[step]:.1f} s)"
    if step == "data":
        console.print(f"[bold]data[/]: generated tree {escape(str(r.tree))}" + (" (reused)" if r.reused else ""),
                      seconds, highlight=False, markup=True)
    elif step == "prep":
        m = r.prep.manifest
        splits = ", ".join(f"{k} {v.count}" for k, v in m.splits.items())
        console.print(f"[bold]prep[/]: {r.prep.images} images prepared ({splits}), {len(m.skipped)} skipped"
                      + (" (already prepared)" if r.prep.up_to_date else ""), seconds, highlight=False, markup=True)
        for s in m.skipped:
            console.print(f"  skipped {s['path']}: {s['reason']}", highlight=False)
    elif step == "pca":
        values = ", ".join(f"{v:,.1f}" for v in r.pca.eigenvalues)
        console.print(f"[bold]pca[/]: eigenvalues {values} (0-255 units)", seconds, highlight=False, markup=True)
    elif step == "train":
        console.print(_epochs_table(r, seconds))
    elif step.startswith("eval"):
        e = r.evals[1 if step == "eval_1crop" else 10]
        classes = r.config.classes
        top5 = f"top-5 error {e.top5_error:.1%} " + (f"(trivial: only {classes} classes)" if top5_is_trivial(classes)
                                                     else f"(chance {r.chance_top5_error:.0%})")   # as `eval` says it
        console.print(f"[bold]eval[/] {e.crops:>2} crop{'s' if e.crops > 1 else ' '}: top-1 error "
                      f"[bold]{e.top1_error:.1%}[/] (chance {r.chance_top1_error:.0%}), {top5}, {e.n} images", seconds,
                      highlight=False, markup=True)
    elif step == "kernels":
        scores = ", ".join(f"column {c.name} {c.mean:.3f}" for c in r.kernels.columns)
        console.print(f"[bold]kernels[/]: conv1 colour specificity {scores} (random init ~0.67; after so few steps "
                      "conv1 is still close to its init)", seconds, highlight=False, markup=True)
    elif step == "neighbors":
        console.print(_neighbors_table(r, seconds))
    elif step == "predict":
        console.print(_predictions_table(r, seconds))


def _epochs_table(r: DemoResult, seconds: str) -> Table:
    done = "" if r.trained else " (already trained)"          # as prep's "(already prepared)"
    steps = plural(r.train.get('step') or 0, 'step')
    table = Table(title=f"train: {steps} on {r.train.get('device')}{done} {seconds}",
                  title_justify="left")
    for col in ("epoch", "train top-1 err", "val top-1 err", "lr", "s"):
        table.add_column(col, justify="right")
    for e in r.epochs:
        val = e.get("val_top1_error")
        table.add_row(str(e["epoch"]), f"{e['train_top1_error']:.1%}", "" if val is None else f"{val:.1%}",
                      f"{e['lr']:g}", f"{e.get('time_s', 0):.1f}")
    return table


def _true_class(r: DemoResult, image: str) -> str:
    """The class of a generated validation image, from its folder (val/<wnid>/...)."""
    m = r.prep.manifest
    return dict(zip(m.classes, m.class_names)).get(Path(image).parent.name, "?")


def _neighbors_table(r: DemoResult, seconds: str) -> Table:
    table = Table(title=f"neighbors: the {r.config.k} nearest training images in fc7 space {seconds}",
                  title_justify="left")
    for col in ("query", "class", "neighbours' labels", "distances"):
        table.add_column(col, justify="right" if col == "distances" else "left")
    for q in r.neighbors:
        labels = Counter(n.label_name for n in q.neighbors)
        table.add_row(Path(q.query).name, _true_class(r, q.query),
                      ", ".join(f"{n} x{c}" for n, c in labels.most_common()),
                      f"{q.neighbors[0].distance:.3g}-{q.neighbors[-1].distance:.3g}")
    return table


def _predictions_table(r: DemoResult, seconds: str) -> Table:
    table = Table(title=f"predict: the queries' top classes {seconds}", title_justify="left")
    for col in ("image", "class", "top 2 (probability)"):
        table.add_column(col)
    for p in r.predictions:
        table.add_row(Path(p.image).name, _true_class(r, p.image),
                      ", ".join(f"{t.name} {t.prob:.0%}" for t in p.top[:2]))
    return table


FIGURES = {"kernels": "conv1's 96 kernels, column A above column B (figure 3)",
           "neighbors": "each query and its nearest training images (figure 4, right)",
           "predictions": "each query's top classes (figure 4, left)"}


def _show_paths(r: DemoResult) -> None:
    steps = ", ".join(f"{name} {t:.1f}" for name, t in r.timings.items())
    console.print(f"[bold]done[/] in {sum(r.timings.values()):.0f} s ({steps} s). Validation top-1 error: "
                  f"[bold]{r.evals[1].top1_error:.1%}[/] with 1 crop, [bold]{r.evals[10].top1_error:.1%}[/] with 10 "
                  f"crops (chance {r.chance_top1_error:.0%}).", highlight=False, markup=True)
    console.print(f"checkpoint: {r.checkpoint}", highlight=False)
    for name, path in r.figures.items():
        console.print(f"{escape(name)}: {escape(str(path))}  [dim]{FIGURES.get(name, '')}[/]", highlight=False,
                      markup=True)
