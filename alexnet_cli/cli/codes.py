"""`alexnet codes`: short binary codes of a split's fc7 features, from an auto-encoder (paper
section 7.1's suggestion), for `alexnet neighbors --codes`."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.table import Table

from alexnet_cli.cli.common import (CheckpointDecodeOpt, DeviceOpt, ForwardBatchOpt, JsonOpt, WorkersOpt,
                                    check_writable, console, print_json, reporter, seed_option)
from alexnet_cli.cli.arguments import CheckpointArg, DataArg
from alexnet_cli.config import CODE_BITS, CODE_EPOCHS, CODE_RERANK
from alexnet_cli.progress import plural

_SeedOpt = seed_option("Seed of the weights, order, noise and held-out queries.")


def codes(
    checkpoint: CheckpointArg,
    data: DataArg,
    bits: Annotated[int, typer.Option("--bits", help=f"Bits per image: {', '.join(map(str, CODE_BITS))}.")] = 256,
    split: Annotated[str, typer.Option("--split", help="The split of DATA to encode.")] = "train",
    epochs: Annotated[int, typer.Option("--epochs", min=1, help="Training epochs of the auto-encoder.")] = CODE_EPOCHS,
    features: Annotated[Optional[Path], typer.Option(
        "--features", exists=True, dir_okay=False, metavar="FILE.h5",
        help="Features from `alexnet features` (default: computed once, cached beside the shards).")] = None,
    rerank: Annotated[int, typer.Option("--rerank", min=1, help="Re-ranking depth the quality table measures.")] = CODE_RERANK,
    seed: _SeedOpt = 0,
    batch_size: ForwardBatchOpt = 128,
    workers: WorkersOpt = None,
    decode: CheckpointDecodeOpt = None,
    device: DeviceOpt = None,
    json_out: JsonOpt = False,
) -> None:
    """Train an auto-encoder whose code layer is binary on the split's fc7 features and store
    each image's code (packed bits) beside the features; measure the codes on held-out images
    against random projections. Resumable: after an interruption, run the same command again."""
    from alexnet_cli.codes import check_bits, codes_for_split, codes_path
    check_bits(bits)
    if features is not None and not codes_path(features, bits).exists():   # new codes go beside the features
        check_writable(codes_path(features, bits), "--features")
    result = codes_for_split(checkpoint, data, split=split, bits=bits, epochs=epochs, features=features,
                             rerank_depth=rerank, seed=seed, batch_size=batch_size, workers=workers, decode=decode,
                             device=device, progress=reporter())
    if json_out:
        print_json(result.to_json())
        return
    q = result.quality
    what = "kept" if result.reused else "written"
    console.print(f"{result.codes}: {result.count:,} codes of {result.bits} bits ({result.bits // 8} bytes per image, "
                  f"{what}); auto-encoder trained {plural(result.epochs, 'epoch')}, training loss "
                  f"{result.loss if result.loss is None else round(result.loss, 4)}", highlight=False, markup=False)
    if not q.get("queries"):     # codes.held_out: min(500, count // 10) rows
        console.print(f"no quality table: {plural(result.count, 'image')} are too few to hold out queries from "
                      "(one per 10 images)", highlight=False)
        return
    console.print(f"{plural(q['queries'], 'held-out query', 'held-out queries')}: recall of the exact Euclidean "
                  f"neighbours and label precision; re-ranked: {_reranked(q['rerank'], result.count)} by Hamming "
                  "distance, re-ranked exactly", highlight=False)
    for table in quality_tables(q):
        console.print(table)


def _reranked(depth: int, count: int) -> str:
    """The candidates codes.measure re-ranked: a query's nearest among the count - 1 other codes."""
    from alexnet_cli.codes import rerank_candidates
    n = rerank_candidates(depth, count)
    return f"all {count - 1:,} other codes" if n >= count - 1 else f"the {n:,} nearest"


def quality_tables(q: dict) -> list[Table]:
    """The codes' quality (codes.measure's dict) as two tables that fit 80 columns: ranked by
    Hamming distance alone, then re-ranked exactly; exact search is the reference row of both."""
    metrics = [f"{m}@{k}" for m in ("recall", "precision") for k in q["ks"]]
    exact = {**q["exact"], **{f"recall@{k}": 1.0 for k in q["ks"]}}
    tables = []
    for suffix, ranking in (("", "ranked by Hamming"), ("_rerank", "re-ranked exactly")):
        table = Table(ranking)
        for m in metrics:
            table.add_column(m, justify="right")
        for name in ("autoencoder", "random_projections"):
            table.add_row(name.replace("_", " "), *(f"{q[name][m + suffix]:.3f}" for m in metrics))
        table.add_row("exact search", *(f"{exact[m]:.3f}" for m in metrics))
        tables.append(table)
    return tables
