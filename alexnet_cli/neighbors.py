"""Nearest training images by Euclidean distance of their 4096-d fc7 features (paper section
7.1, figure 4 right: "the training images whose feature vectors in the last hidden layer
have the smallest Euclidean distance from" the query's).

The search is exact and streams the features file (alexnet_cli.features) from disk in
chunks that fit a memory budget, keeping a running top-k per query, so it works for the
1.28 M ImageNet training images (about 10 GB of float16) on a CPU or a GPU alike. Per chunk:

1. squared distances of every query to every row, |q|^2 - 2 q.x + |x|^2: one matrix product,
   in float32 (cheap, but it loses digits to cancellation when q and x are close);
2. the k + MARGIN nearest rows of the chunk by those, re-measured exactly as |q - x|^2;
3. merged with the running top-k (exact distances only, so the final order is exact).

The query images go through the training data's preprocessing (alexnet_cli.images.load_image,
as `prep` does, once turned upright as their EXIF orientation says) and the same network and
centre crop as the stored features; the query feature is rounded to float16 like the stored ones.
"""

from __future__ import annotations

import math
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator, Sequence

import h5py
import numpy as np
import torch

from alexnet_cli.codes import BITS, check_bits, codes_path, read_codes, read_codes_info
from alexnet_cli.hamming import hamming_nearest
from alexnet_cli.hamming import rerank as rerank_rows
from alexnet_cli.config import NEIGHBORS_K as DEFAULT_K
from alexnet_cli.errors import AlexnetError, CheckpointError, DataError, UsageError, shell_word
from alexnet_cli.features import (Encoder, cache_path, load_encoder, non_finite_row, read_features_info,
                                  read_rows_index, write_features)
from alexnet_cli.figures import check_picture_path, grid, hstack, labeled_tile, save_picture
from alexnet_cli.images import load_image, load_images
from alexnet_cli.paths import check_output, path_list
from alexnet_cli.progress import NullReporter, Reporter, plural
from alexnet_cli.shards import data_key, open_shard, read_images, read_manifest, split_index

MARGIN = 8               # extra candidates per chunk re-measured exactly (guards against rounding)
QUERY_BLOCK = 256        # queries per exact re-measurement, (256, k + MARGIN, 4096) float32 = 14 MiB


@dataclass
class Neighbor:
    index: int           # row in the features file = position of the image in the split
    path: str            # relative to the source root, as in the shards
    label: int           # the class's position in the data's classes
    label_name: str      # its readable name
    distance: float
    wnid: str = ""       # the class itself, as `predict` names it

    def to_json(self) -> dict[str, Any]:
        # "class" and "name" as in predict's JSON; "label" (the name) and "label_index" as before
        return {"path": self.path, "class": self.wnid, "name": self.label_name, "label": self.label_name,
                "distance": self.distance, "index": self.index, "label_index": self.label}


@dataclass
class QueryResult:
    query: str           # the image path as given
    neighbors: list[Neighbor]
    distance_kind: str = "euclidean"   # of `distance`: "euclidean" (fc7) or "hamming" (bits of the codes)
    split: str = "train"               # the split searched: each neighbour's `index` is a position in it

    def to_json(self) -> dict[str, Any]:
        return {"query": self.query, "split": self.split, "distance_kind": self.distance_kind,
                "neighbors": [n.to_json() for n in self.neighbors]}


# ---------------------------------------------------------------------------- exact k-NN, streamed

class NonFiniteRow(ValueError):
    """A row of NaN or infinite values: it would sort after the empty slots (inf), or tie them."""

    def __init__(self, row: int):
        super().__init__(f"row {row} holds NaN or infinite values")
        self.row = row


class NonFiniteQuery(ValueError):
    """A query of NaN or infinite values: its distance to every row is NaN or infinite, and
    ranking by those returns arbitrary rows."""

    def __init__(self, query: int):
        super().__init__(f"query {query} holds NaN or infinite values")
        self.query = query


def check_queries(queries: torch.Tensor) -> None:
    """NonFiniteQuery for the first query (row of (Q, D) `queries`) holding NaN or infinite
    values, as RunningTopK.update does for the rows searched (one host sync)."""
    finite = torch.isfinite(queries).all(dim=1)                            # (Q,)
    if not bool(finite.all()):
        raise NonFiniteQuery(int((~finite).nonzero()[0, 0]))


class RunningTopK:
    """The k nearest rows seen so far for each query, fed one chunk of rows at a time.
    NonFiniteQuery for a query of NaN or infinite values."""

    def __init__(self, queries: torch.Tensor, k: int, margin: int = MARGIN):
        check_queries(queries)
        self.q = queries.float()                                           # (Q, D)
        self.q_sq = self.q.square().sum(dim=1, keepdim=True)               # (Q, 1)
        self.k, self.margin = k, margin
        q = len(queries)
        self.dist2 = torch.full((q, k), float("inf"), device=queries.device)   # (Q, k) exact, squared
        self.index = torch.full((q, k), -1, dtype=torch.int64, device=queries.device)

    def update(self, start: int, rows: torch.Tensor) -> None:
        """Rows start..start+C of the collection: (C, D), any float dtype, on the queries' device.
        NonFiniteRow for a row of NaN or infinite values (one host sync per chunk)."""
        x = rows.float()                                                   # (C, D)
        x_sq = torch.linalg.vector_norm(x, dim=1).square()                 # (C,), no (C, D) temporary
        finite = torch.isfinite(x_sq)            # as its row: float16 values square and sum far below float32's max
        if not bool(finite.all()):
            raise NonFiniteRow(start + int((~finite).nonzero()[0, 0]))
        approx = self.q_sq - 2 * (self.q @ x.T) + x_sq                     # (Q, C)
        m = min(self.k + self.margin, len(x))
        cand = approx.topk(m, dim=1, largest=False).indices                # (Q, m)
        exact = torch.cat([(x[cand[i:i + QUERY_BLOCK]] - self.q[i:i + QUERY_BLOCK, None]).square().sum(dim=2)
                           for i in range(0, len(cand), QUERY_BLOCK)])     # (Q, m)
        dist2 = torch.cat([self.dist2, exact], dim=1)                      # (Q, k + m)
        index = torch.cat([self.index, cand + start], dim=1)
        best = dist2.topk(self.k, dim=1, largest=False).indices            # (Q, k)
        self.dist2, self.index = dist2.gather(1, best), index.gather(1, best)

    def result(self) -> tuple[np.ndarray, np.ndarray]:
        """Distances (Q, k) float32 and row indices (Q, k) int64, nearest first; equal
        distances in row order. One host sync."""
        index = self.index.cpu()
        order = index.argsort(dim=1)                                       # ties: lower row first
        dist2 = self.dist2.cpu().gather(1, order)
        index = index.gather(1, order)
        by_dist = dist2.argsort(dim=1, stable=True)
        return dist2.gather(1, by_dist).sqrt().numpy(), index.gather(1, by_dist).numpy()


def feature_chunks(path: str | Path, rows: int, *, pin: bool = False) -> Iterator[tuple[int, torch.Tensor]]:
    """(start, float16 (C, D) host tensor) for consecutive chunks of a features file; the next
    chunk is read in a background thread while the caller works on this one. Each chunk is
    only valid until the next is asked for (two buffers take turns)."""
    with h5py.File(path, "r", locking=False) as f:
        ds = f["features"]
        n, dim = ds.shape
        rows = max(1, min(rows, n))
        buffers = [torch.empty((rows, dim), dtype=torch.float16, pin_memory=pin) for _ in range(2)]

        def read(slot: int, start: int) -> tuple[int, torch.Tensor]:
            stop = min(n, start + rows)
            ds.read_direct(buffers[slot].numpy(), np.s_[start:stop], np.s_[0:stop - start])
            return start, buffers[slot][:stop - start]

        with ThreadPoolExecutor(1) as pool:
            starts = list(range(0, n, rows))
            pending = pool.submit(read, 0, 0) if starts else None
            for i in range(len(starts)):
                chunk = pending.result()
                if i + 1 < len(starts):
                    pending = pool.submit(read, (i + 1) % 2, starts[i + 1])
                yield chunk


def chunk_rows(memory_mb: float, dim: int, queries: int) -> int:
    """Rows per chunk so that one chunk's working set fits `memory_mb`: two float16 host
    buffers, the float16 copy and float32 version on the device, and (Q, C) distances."""
    per_row = 2 * 2 * dim + 2 * dim + 4 * dim + 3 * 4 * queries
    return max(1, int(memory_mb * 2**20) // per_row)


def nearest(queries: torch.Tensor, features: str | Path, k: int, *, memory_mb: float = 1024,
            progress: Reporter = NullReporter()) -> tuple[np.ndarray, np.ndarray]:
    """Exact Euclidean k-NN of `queries` (Q, D) among the rows of a features file, on the
    queries' device: distances (Q, k) float32 and row indices (Q, k) int64, nearest first."""
    info = read_features_info(features)
    if info.count == 0:
        raise DataError(f"{features}: holds no images to search")
    if queries.shape[1] != info.dim:
        raise AlexnetError(f"queries have {queries.shape[1]} dimensions, {features} has {info.dim}")
    device = queries.device
    try:
        top = RunningTopK(queries, min(k, info.count))
    except NonFiniteQuery as exc:
        raise AlexnetError(f"{exc}: no distance to it can be ranked") from None
    rows = chunk_rows(memory_mb, info.dim, len(queries))
    with progress.task("searching", total=info.count, unit="img") as task:
        for start, chunk in feature_chunks(features, rows, pin=device.type == "cuda"):
            try:
                top.update(start, chunk.to(device))                        # (C, D) float16 on the device
            except NonFiniteRow as exc:
                raise non_finite_row(features, exc.row) from None
            task.advance(len(chunk))
    return top.result()


# ---------------------------------------------------------------------------- the command

def encode_queries(encoder: Encoder, images: Sequence[np.ndarray], batch_size: int = 64) -> torch.Tensor:
    """uint8 (256, 256, 3) images -> (Q, 4096) float32 on the encoder's device, rounded to
    float16 as the stored features are."""
    out = []
    for i in range(0, len(images), batch_size):
        batch = torch.from_numpy(np.stack(images[i:i + batch_size])).to(encoder.device)  # (B, 256, 256, 3)
        out.append(encoder(batch).half().float())                                      # (B, 4096)
    return torch.cat(out)


def _cache_fits(path: Path, key: str, split: str, count: int, data: str) -> bool:
    """Whether a cached features file was made by this network from this data; an unreadable
    one (a disk error, a hand-edited file) is stale too, and is rebuilt."""
    try:
        return read_features_info(path).made_by(key, split, count, data)
    except DataError:
        return False


def split_features(encoder: Encoder, data_dir: Path, split: str, features: str | Path | None, *,
                   batch_size: int, workers: int | None, progress: Reporter, decode: str | None = None) -> Path:
    """The features file to search: `features` after checking it was made by this network from
    this data, or else the split's cached file (computed once, resumable, atomic; its jpeg shards
    decoded by `decode`, the run's decoder unless given)."""
    manifest = read_manifest(data_dir)
    count, data = manifest.asked_split(split).count, data_key(manifest, split)
    if features is None:
        path = cache_path(data_dir, split, encoder.key)
        stale = path.exists() and not _cache_fits(path, encoder.key, split, count, data)
        reused = path.exists() and not stale           # complete (published atomically) and this network's
        try:
            write_features(encoder, data_dir, split, path, batch_size=batch_size, overwrite=stale, workers=workers,
                           decode=decode, progress=progress)
        except OSError as exc:
            raise DataError(f"cannot cache the features of '{split}' in {data_dir} ({exc}): write them elsewhere "
                            "with `alexnet features ... --out FILE.h5` and pass `features` FILE.h5",
                            mentions=("features",)) from None
        progress.log(f"fc7 features of '{split}' {'reused from' if reused else 'cached in'} {path} "
                     f"({path.stat().st_size / 2**20:,.1f} MiB, one file per network; delete it to free the space)")
        return path
    info = read_features_info(features)
    remake = (f"`alexnet features {shell_word(encoder.checkpoint)} {shell_word(data_dir)} --split {shell_word(split)} "
              f"--out {shell_word(features)} --overwrite`")
    other = info.other_network(encoder)                   # the key covers weights, network config, mean image
    if other:
        raise CheckpointError(f"{features}: {other}; {encoder.checkpoint}'s features are not comparable with "
                              f"them: compute them again with {remake}, or leave out `features`",
                              mentions=("features",))
    if info.split != split:
        raise DataError(f"{features} holds the features of split '{info.split}' ({plural(info.count, 'image')}), "
                        f"not of '{split}' ({plural(count, 'image')}) as asked: use `split` {info.split}, or leave "
                        f"out `features` to compute those of '{split}'", mentions=("split", "features"))
    if not info.made_by(encoder.key, split, count, data):      # the same network and split: other images
        raise DataError(f"{features} holds the features {info.other_data(split, count, data, str(data_dir))}: "
                        f"compute them again with {remake}, or leave out `features`", mentions=("features",))
    if not info.complete:
        raise DataError(f"{features}: incomplete ({info.done} of {info.count} rows): rerun `alexnet features`")
    return Path(features)


def find_neighbors(checkpoint: str | Path, data_dir: str | Path, queries: str | Path | Sequence[str | Path], *,
                   k: int = DEFAULT_K, split: str = "train", features: str | Path | None = None,
                   device: str | torch.device | None = None, batch_size: int = 128, memory_mb: float = 1024,
                   workers: int | None = None, decode: str | None = None, codes: bool = False, bits: int | None = None,
                   rerank: int | None = None,
                   progress: Reporter = NullReporter()) -> list[QueryResult]:
    """What `alexnet neighbors` does: for each query image, its k nearest images of `split`;
    with `codes`, by Hamming distance of the binary codes of `alexnet codes` (and, with
    `rerank`, the `rerank` nearest of those re-ranked by exact Euclidean distance; `bits`: which
    codes, the largest made unless given). One query may be given as a path."""
    queries = path_list(queries)
    bits = _check_search(queries, k, codes, bits, rerank, memory_mb)
    data_dir = Path(data_dir)
    images = load_images(queries, "no query was searched", exif=True)   # unreadable queries fail before any work
    encoder = load_encoder(checkpoint, data_dir, device, progress)
    if codes:                                            # before the features, which can take hours
        bits = _codes_bits(checkpoint, data_dir, split, features, encoder, bits)
    q = encode_queries(encoder, images)                      # before the features, which can take hours
    try:
        check_queries(q)
    except NonFiniteQuery as exc:                         # the codes' search would rank its NaN distances too
        raise CheckpointError(f"{checkpoint}: the fc7 feature of query {queries[exc.query]} is NaN or infinite "
                              "in float16 (values beyond 65504): it cannot be compared with the stored "
                              "features") from None
    path = split_features(encoder, data_dir, split, features, batch_size=batch_size, workers=workers,
                          decode=decode, progress=progress)
    kind = "euclidean"
    if codes:
        dist, index, kind = _code_search(q, path, k, bits=bits, rerank=rerank, memory_mb=memory_mb)
    else:
        dist, index = nearest(q, path, k, memory_mb=memory_mb, progress=progress)
    if index.shape[1] < k:
        progress.log(f"Note: '{split}' holds {index.shape[1]} images, fewer than `k` {k}: all of them are shown",
                     mentions=("k",))
    return _results(queries, path, dist, index, kind, split)


def _check_search(queries: Sequence[str | Path], k: int, codes: bool, bits: int | None, rerank: int | None,
                  memory_mb: float) -> int:
    """find_neighbors' options checked before any work; the codes' bits (None: the largest made)."""
    if k < 1:
        raise UsageError(f"k must be at least 1, got {k}", field="k", value=k)
    if not queries:
        raise UsageError("queries must name at least one image", field="queries", value=queries)
    if rerank is not None and not codes:
        raise UsageError("rerank re-ranks the Hamming search: give `codes` too", field="rerank", value=rerank,
                         mentions=("codes",))
    if bits is not None and not codes:
        raise UsageError("bits chooses the codes of the Hamming search: give `codes` too", field="bits", value=bits,
                         mentions=("codes",))
    if codes and bits is not None:
        check_bits(bits)
    if rerank is not None and rerank < k:
        raise UsageError(f"rerank must be at least `k` ({k}), got {rerank}", field="rerank", value=rerank,
                         mentions=("k",))
    if not math.isfinite(memory_mb) or memory_mb <= 0:
        raise UsageError(f"memory_mb must be a positive number, got {memory_mb}", field="memory_mb", value=memory_mb)
    return bits


def _codes_bits(checkpoint: str | Path, data_dir: Path, split: str, features: str | Path | None,
                encoder: Encoder, bits: int | None) -> int:
    """The codes the search uses: `bits`, or the largest there are of the split's features (256
    when there are none); they must exist: else what makes them, and the other sizes there are."""
    base = features if features is not None else cache_path(data_dir, split, encoder.key)
    if bits is None:
        bits = next((b for b in reversed(BITS) if codes_path(base, b).exists()), BITS[-1])
    wanted = codes_path(base, bits)
    if not wanted.exists():
        there = [b for b in BITS if b != bits and codes_path(base, b).exists()]
        other = f", or use the codes there are (`bits` {' or '.join(map(str, there))})" if there else ""
        raise DataError(f"no {bits}-bit codes of these features ({wanted}): make them with `alexnet codes "
                        f"{shell_word(checkpoint)} {shell_word(data_dir)} --split {shell_word(split)} --bits {bits}"
                        f"{'' if features is None else f' --features {shell_word(features)}'}`{other}",
                        mentions=("bits",) if there else ())
    return bits


def _results(queries: Sequence[str | Path], path: Path, dist: np.ndarray, index: np.ndarray, kind: str,
             split: str) -> list[QueryResult]:
    """Each query's neighbours (rows `index` of the features file `path`, at `dist`), named."""
    paths, labels, classes, names = read_rows_index(path, index.ravel())
    results, j = [], 0
    for query, row_d, row_i in zip(queries, dist, index):
        hits = []
        for d, i in zip(row_d.tolist(), row_i.tolist()):
            if not 0 <= labels[j] < len(names):
                raise DataError(f"{path}: image {i} has label {labels[j]}, outside the {len(names)} classes")
            hits.append(Neighbor(i, paths[j], int(labels[j]), names[labels[j]], float(d), classes[labels[j]]))
            j += 1
        results.append(QueryResult(str(query), hits, kind, split))
    return results


def _code_search(queries: torch.Tensor, features: Path, k: int, *, bits: int, rerank: int | None,
                 memory_mb: float) -> tuple[np.ndarray, np.ndarray, str]:
    """Hamming search of the codes beside `features` (and the exact re-ranking of the best
    `rerank`): distances, rows and the kind of the distances."""
    path = codes_path(features, bits)
    info = read_codes_info(path)
    why = info.fits(read_features_info(features))           # the codes of these very features, or an error
    if why:
        raise DataError(why)
    stored, net = read_codes(path)
    mine = net.to(queries.device).code(queries)               # (Q, bits/8)
    dist, index = hamming_nearest(mine, stored, rerank or k, device=queries.device, memory_mb=memory_mb)
    if rerank is None:
        return dist, index, "hamming"
    dist, index = rerank_rows(queries, features, index, k)
    return dist, index, "euclidean"


# ---------------------------------------------------------------------------- figure 4 (right)

def read_split_images(data_dir: str | Path, split: str, indices: Sequence[int]) -> list[np.ndarray]:
    """The stored 256x256 images at global positions `indices` of `split`: uint8 (256, 256, 3) each."""
    manifest = read_manifest(data_dir)
    index = split_index(manifest, split)
    found: dict[int, np.ndarray] = {}
    for name, start, rows in zip(index.shards, index.starts.tolist(), index.rows_by_shard(indices)):
        if len(rows):
            with open_shard(manifest, name) as f:
                for j in rows.tolist():
                    found[start + j] = read_images(f, j, j + 1)[0]
    missing = [i for i in indices if i not in found]
    if missing:
        raise DataError(f"{data_dir}: split '{split}' has no image {missing[0]} ({index.count} images)")
    return [found[i] for i in indices]


# what the number in a neighbour's caption measures, for the figure's title
DISTANCE_TITLES = {"euclidean": "Euclidean distance of its 4096-d fc7 features to the query's",
                   "hamming": "Hamming distance of its binary code to the query's, in bits"}


def draw_neighbors(results: Sequence[QueryResult], data_dir: str | Path, out: str | Path, *,
                   thumb: int = 128) -> Path:
    """Figure 4 (right): one row per query, the query image then its neighbours, nearest first,
    each captioned with its label and distance; the neighbours are read from the split each
    result was searched in (`QueryResult.split`) of `data_dir`."""
    check_picture_path(out)                                   # before the images are read
    check_output(out, "out", [("a query image", [r.query for r in results])])   # nor a file of data_dir
    pictures = {}                                             # (split, index) -> uint8 (256, 256, 3)
    for split in dict.fromkeys(r.split for r in results):
        indices = [n.index for r in results if r.split == split for n in r.neighbors]
        pictures.update(zip([(split, i) for i in indices], read_split_images(data_dir, split, indices)))
    rows = []
    for r in results:
        form = "{:.0f}" if r.distance_kind == "hamming" else "{:.2f}"     # bits are whole, as in the table
        tiles = [labeled_tile(pictures[r.split, n.index], f"{n.label_name} ({form.format(n.distance)})", size=thumb)
                 for n in r.neighbors]
        query = labeled_tile(load_image(r.query, exif=True), f"query: {Path(r.query).name}", size=thumb)
        rows.append(hstack([query, hstack(tiles, pad=4)], pad=16))
    kinds = dict.fromkeys(r.distance_kind for r in results)      # said once, over the figure
    said = "; ".join(f"label ({DISTANCE_TITLES.get(kind, f'{kind} distance')})" for kind in kinds)
    return save_picture(labeled_tile(grid(rows, 1), f"each neighbour: {said}", above=True, pad=8), out)
