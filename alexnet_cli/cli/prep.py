"""`alexnet prep SRC OUT`: an ImageNet tree -> HDF5 shards, mean image, manifest.json
(paper section 3; library: alexnet_cli.prep)."""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Optional

import typer
from rich.table import Table

from alexnet_cli.cli.common import JsonOpt, check_writable, console, err_console, print_json, reporter
from alexnet_cli.progress import plural

if TYPE_CHECKING:
    from alexnet_cli.prep import PrepResult

_LABELS = "Label files (default: found automatically)"


def _label_file(flag: str, text: str):
    return typer.Option(flag, exists=True, dir_okay=False, help=text, rich_help_panel=_LABELS)


ValLabelsOpt = Annotated[Optional[Path], _label_file(
    "--val-labels", "LOC_val_solution.csv, or the devkit's ILSVRC2012_validation_ground_truth.txt.")]
SynsetMappingOpt = Annotated[Optional[Path], _label_file(
    "--synset-mapping", "LOC_synset_mapping.txt ('wnid name' per line): class names.")]
DevkitMetaOpt = Annotated[Optional[Path], _label_file("--devkit-meta", "The devkit's meta.mat (ILSVRC2012_ID -> wnid).")]
ValSynsetsOpt = Annotated[Optional[Path], _label_file(
    "--val-synsets", "Instead of meta.mat: one wnid per line in ILSVRC2012_ID order.")]

def prep(
    src: Annotated[Path, typer.Argument(exists=True, file_okay=False, metavar="SRC", help="ImageNet root (train/, val/, or Kaggle's ILSVRC/Data/CLS-LOC/).")],
    out: Annotated[Path, typer.Argument(file_okay=False, metavar="OUT", help="Output data folder: new, empty, or an earlier prep's (continued); a folder of other files is refused.")],
    format: Annotated[str, typer.Option("--format", metavar="raw|jpeg", help="raw: uint8 pixels (fastest to read); jpeg: re-encoded JPEGs (~10x smaller).")] = "raw",
    jpeg_quality: Annotated[int, typer.Option("--jpeg-quality", help="JPEG quality for --format jpeg.")] = 90,
    workers: Annotated[Optional[int], typer.Option("--workers", help="Decoding processes (default: one per core this process may use).")] = None,
    shard_size: Annotated[int, typer.Option("--shard-size", help="Images per shard file (1..4096; a shard is built in memory).")] = 1024,
    block_size: Annotated[int, typer.Option("--block-size", help="Images per HDF5 chunk (the loader's read unit; 1..256).")] = 32,
    limit_per_class: Annotated[Optional[int], typer.Option("--limit-per-class", help="Only the first N files of each class (a subset).")] = None,
    splits: Annotated[Optional[str], typer.Option("--splits", help="Comma-separated splits to prepare, e.g. train,val (default: all found).")] = None,
    val_labels: ValLabelsOpt = None,
    synset_mapping: SynsetMappingOpt = None,
    devkit_meta: DevkitMetaOpt = None,
    val_synsets: ValSynsetsOpt = None,
    verify: Annotated[bool, typer.Option("--verify", help="Check every finished shard's sha256 against the manifest "
                                                         "(a full read) and make the damaged ones again.")] = False,
    json_out: JsonOpt = False,
) -> None:
    """Resize an ImageNet tree to 256x256 RGB shards, with the training mean image and manifest.json."""
    from alexnet_cli.layouts import LabelFiles
    from alexnet_cli.prep import PrepOptions, prepare
    from alexnet_cli.shards import MANIFEST
    from alexnet_cli.paths import check_output_folder
    if not (out / MANIFEST).is_file():     # one an older version prepared there is checked, not stranded
        check_output_folder(out, "OUT")    # not inside another data folder or a run's folder
    if not (out / MANIFEST).is_file():     # an existing preparation is checked by prepare: intact, it writes nothing
        check_writable(out, "OUT", folder=True)              # (so --verify works on a read-only data folder)
    options = PrepOptions(
        format=format, jpeg_quality=jpeg_quality, shard_size=shard_size, block_size=block_size,
        limit_per_class=limit_per_class, workers=workers,
        splits=None if splits is None else [s.strip() for s in splits.split(",") if s.strip()],
        labels=LabelFiles(val_labels=val_labels, synset_mapping=synset_mapping, devkit_meta=devkit_meta,
                          val_synsets=val_synsets))
    result = prepare(src, out, options, progress=reporter(), verify=verify)
    if not result.up_to_date:
        _warn_skipped(result, out)
    if json_out:
        print_json(result.to_json())
    else:
        _print(result, out)


def _warn_skipped(result: PrepResult, out: Path) -> None:
    skipped = result.manifest.skipped
    if not skipped:
        return
    kinds = Counter(s["reason"].split(" (")[0] for s in skipped)
    summary = ", ".join(f"{n} {kind}" for kind, n in kinds.most_common())
    err_console.print(f"Warning: {len(skipped)} source file(s) skipped ({summary}); "
                      f"listed under \"skipped\" in {out / 'manifest.json'}", style="yellow", highlight=False,
                      markup=False, soft_wrap=True)


def _print(result: PrepResult, out: Path) -> None:
    m = result.manifest
    if result.up_to_date:
        console.print(f"{out} is already prepared ({m.layout}, {m.format}): nothing to do.", highlight=False)
        return
    console.print(f"{out}: {plural(len(m.classes), 'class', 'classes')}, {m.format} shards ({m.layout})", highlight=False)
    table = Table()
    for col in ("split", "images", "shards"):
        table.add_column(col, justify="left" if col == "split" else "right")
    for name, info in m.splits.items():
        table.add_row(name, f"{info.count:,}", str(len(info.shards)))
    console.print(table)
    reused = f", {result.shards_reused} reused from an earlier run" if result.shards_reused else ""
    console.print(f"{result.shards_written} shard(s) written{reused} in {result.seconds:.1f} s "
                  f"({result.images_per_second:,.0f} images/s, {plural(result.workers, 'worker')}); "
                  f"mean RGB {', '.join(f'{v:.1f}' for v in m.mean_rgb)}", highlight=False)
