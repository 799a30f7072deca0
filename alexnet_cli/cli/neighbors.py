"""`alexnet neighbors`: the training images nearest to each query image in fc7 space (paper
section 7.1, figure 4 right)."""

from __future__ import annotations

import math
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Optional

import typer
from rich.table import Table

from alexnet_cli.cli.common import (CheckpointDecodeOpt, DeviceOpt, ForwardBatchOpt, JsonOpt, WorkersOpt,
                                    check_picture_out, console, err_console, print_json, reporter)
from alexnet_cli.cli.arguments import CheckpointArg, DataArg, check_images
from alexnet_cli.config import NEIGHBORS_K

if TYPE_CHECKING:                       # the library imports torch: not for the CLI's argument checks
    from alexnet_cli.neighbors import QueryResult


MIN_MEMORY_MB = 16      # below this the search's chunks are a few rows: slow, and no budget anyone means


def _queries_option(values: list[Path]) -> list[Path]:
    return check_images(values, "--query")


def neighbors(
    checkpoint: CheckpointArg,
    data: DataArg,
    query: Annotated[list[Path], typer.Option("--query", exists=True, metavar="IMAGE", callback=_queries_option,
                                              help="A query image (repeat for several).")],
    k: Annotated[int, typer.Option("--k", min=1, help="Neighbours per query.")] = NEIGHBORS_K,
    split: Annotated[str, typer.Option("--split", help="The split of DATA to search.")] = "train",
    features: Annotated[Optional[Path], typer.Option(
        "--features", exists=True, dir_okay=False, metavar="FILE.h5",
        help="Features from `alexnet features` (default: computed once, cached beside the shards).")] = None,
    out: Annotated[Optional[Path], typer.Option("--out", metavar="FILE.png", dir_okay=False,
                                                help="Draw each query and its neighbours, one row each (figure 4).")] = None,
    memory_mb: Annotated[float, typer.Option("--memory-mb", help="Memory budget of the search (MiB, at least 16).")] = 1024,
    batch_size: ForwardBatchOpt = 128,
    workers: WorkersOpt = None,
    decode: CheckpointDecodeOpt = None,
    codes: Annotated[bool, typer.Option("--codes", help="Rank by Hamming distance of the binary codes of `alexnet codes` (fast, approximate).")] = False,
    bits: Annotated[Optional[int], typer.Option("--bits", show_default=False,
                                                help="Which codes (with --codes): 64, 128 or 256 bits; not given: the largest made (256 when none are).")] = None,
    rerank: Annotated[Optional[int], typer.Option("--rerank", min=1, metavar="N", help="With --codes: re-rank the N nearest codes by exact Euclidean distance.")] = None,
    device: DeviceOpt = None,
    json_out: JsonOpt = False,
) -> None:
    """The k images of a split nearest to each query by Euclidean distance of their 4096-d fc7
    features (exact search, streamed from disk), or with --codes by Hamming distance of their
    binary codes (`alexnet codes`), optionally re-ranked exactly."""
    from alexnet_cli.neighbors import draw_neighbors, find_neighbors
    from alexnet_cli.paths import check_output
    if not (math.isfinite(memory_mb) and memory_mb >= MIN_MEMORY_MB):   # before the features, which can take hours
        raise typer.BadParameter(f"must be a finite number of MiB, at least {MIN_MEMORY_MB}, got {memory_mb:g}",
                                 param_hint="--memory-mb")
    check_picture_out(out)
    check_output(out, "out", [("the checkpoint", checkpoint), ("a query image", query),
                              ("the features file", features)])
    results = find_neighbors(checkpoint, data, query, k=k, split=split, features=features, device=device,
                             batch_size=batch_size, memory_mb=memory_mb, workers=workers, decode=decode,
                             codes=codes, bits=bits, rerank=rerank, progress=reporter())
    if out is not None:
        err_console.print(f"figure: {draw_neighbors(results, data, out)}", highlight=False)
    if json_out:
        print_json([r.to_json() for r in results])
        return
    for r in results:
        console.print(neighbors_table(r, k))


def neighbors_table(r: QueryResult, k: int | None = None) -> Table:
    """One query's neighbours (a `find_neighbors` result) as a table; a path too long for the
    width is folded onto the next lines, whole, never cut with an ellipsis. Fewer than the `k`
    asked for (the split holds fewer images) are said so under it, where a long table leaves
    the note `find_neighbors` logged before it out of sight."""
    table = Table(title=f"{r.query}: {len(r.neighbors)} nearest in '{r.split}'", title_justify="left")
    if k is not None and len(r.neighbors) < k:
        table.caption = f"only {len(r.neighbors)}: '{r.split}' holds {len(r.neighbors)} images, fewer than --k {k}"
        table.caption_justify = "left"
    for col, justify in (("#", "right"), ("hamming" if r.distance_kind == "hamming" else "distance", "right"),
                         ("label", "left"), ("path", "left")):
        table.add_column(col, justify=justify, overflow="fold" if col == "path" else "ellipsis")
    for rank, n in enumerate(r.neighbors, 1):
        table.add_row(str(rank), f"{n.distance:.0f}" if r.distance_kind == "hamming" else f"{n.distance:.3f}",
                      n.label_name, n.path)
    return table
