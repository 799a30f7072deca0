"""How long `alexnet neighbors` takes to answer a batch of queries against N stored fc7
features, on the CPU and on a GPU when there is one.

Random float16 rows, written to an HDF5 file in the features format (alexnet_cli.features),
stand in for ImageNet's training set; the search is alexnet_cli.neighbors.nearest, exactly
what the command runs (streamed from disk in chunks within --memory-mb, running top-k).
The first pass over the file also warms the page cache; the table shows the best of
--repeat passes after one warm-up pass, i.e. the file served from memory, not from disk.

The same queries are then answered from binary codes (`alexnet codes`, `neighbors --codes`):
alexnet_cli.hamming.hamming_nearest over N random codes of --codes-bits bits (the search's
time does not depend on what the bits are), and with --rerank R the R nearest re-ranked by
exact distance (alexnet_cli.hamming.rerank: R rows per query read from the features file).
"speed-up" is the exact search's best time over the row's, on the same device.

--codes-n N times the codes at N images without writing N features: random codes are 32
bytes each (ImageNet's 1,281,167: 41 MB, made at once), while the features file is 8 KB an
image (10.5 GB, minutes to write). The exact search is then timed at --n and also shown
scaled linearly to N, in a row labelled "scaled" (it streams the file once per query batch:
its time is linear in the rows), and the codes rows' speed-up is over that scaled time.
Re-ranking reads its R candidates per query from the --n rows of the file (candidate row
modulo --n): R rows per query whatever N is.

    python benchmarks/neighbors.py                      # N = 20,000 (160 MB): seconds on a CPU
    python benchmarks/neighbors.py --n 200000           # 1.6 GB
    python benchmarks/neighbors.py --n 300000 --codes-n 1281167 --devices cuda,cpu   # codes at ImageNet's N
    python benchmarks/neighbors.py --n 1281167          # ImageNet's training set: 10.5 GB of disk
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import h5py
import torch

import numpy as np

from alexnet_cli.hamming import hamming_nearest, pack_codes, rerank
from alexnet_cli.features import DIM, create_features_file
from alexnet_cli.neighbors import nearest

sys.path.insert(0, str(Path(__file__).resolve().parent))
from data import cpu_name  # noqa: E402  (benchmarks/data.py)


def write_random_features(path: Path, n: int, *, classes: int = 1000, seed: int = 0, block: int = 16384) -> None:
    """n rows of |N(0, 1)| as float16 (non-negative, like fc7 after its ReLU), in the features format."""
    g = torch.Generator().manual_seed(seed)
    labels = torch.randint(0, classes, (n,), generator=g).numpy()
    create_features_file(path, paths=[f"train/n{i % classes:08d}/{i}.JPEG" for i in range(n)], labels=labels,
                         classes=[f"n{c:08d}" for c in range(classes)], class_names=[f"class {c}" for c in range(classes)],
                         split="train", key="random")
    with h5py.File(path, "r+") as f:
        rows = f["features"]
        for start in range(0, n, block):
            stop = min(n, start + block)
            rows[start:stop] = torch.randn(stop - start, DIM, generator=g).abs_().half().numpy()
        f.attrs["done"] = n


def hardware() -> list[str]:
    cpu = cpu_name()
    lines = [f"CPU: {cpu}, {os.cpu_count()} cores visible, torch threads {torch.get_num_threads()}",
             f"torch {torch.__version__}, h5py {h5py.__version__}"]
    if torch.cuda.is_available():
        p = torch.cuda.get_device_properties(0)
        lines.append(f"GPU: {p.name}, {p.total_memory / 2**30:.0f} GiB")
    else:
        lines.append("GPU: none")
    return lines


def time_search(path: Path, queries: torch.Tensor, k: int, memory_mb: float, repeat: int) -> tuple[float, float]:
    """(seconds of the first pass, best seconds of `repeat` passes after it)."""
    times = []
    for _ in range(repeat + 1):
        if queries.is_cuda:
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        nearest(queries, path, k, memory_mb=memory_mb)       # returns host arrays: includes the final sync
        times.append(time.perf_counter() - t0)
    return times[0], min(times[1:]) if repeat else times[0]


def time_codes(codes: np.ndarray, queries: np.ndarray, k: int, device: str, repeat: int, *, path: Path,
               float_queries: torch.Tensor, depth: int = 0, file_rows: int | None = None) -> float:
    """Best seconds of `repeat` (at least 1) Hamming searches after a warm-up one; with
    `depth`, the `depth` nearest re-ranked exactly from the features file (candidate rows
    modulo `file_rows` when there are more codes than stored features)."""
    times = []
    for _ in range(max(1, repeat) + 1):
        if device == "cuda":
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        _, cand = hamming_nearest(queries, codes, depth or k, device=device)
        if depth:
            rerank(float_queries, path, cand % file_rows if file_rows else cand, k)
        times.append(time.perf_counter() - t0)
    return min(times[1:])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=20_000, help="stored features (ImageNet: 1281167)")
    parser.add_argument("--queries", type=int, default=100)
    parser.add_argument("--k", type=int, default=6)
    parser.add_argument("--memory-mb", type=float, default=1024, help="the search's memory budget")
    parser.add_argument("--repeat", type=int, default=2, help="timed passes after the first")
    parser.add_argument("--devices", default="cpu,cuda", help="comma-separated; cuda is skipped without one")
    parser.add_argument("--file", type=Path, help="reuse (or keep) the random features file here")
    parser.add_argument("--codes-bits", type=int, default=256, help="bits of the codes rows (0: none)")
    parser.add_argument("--codes-n", type=int, default=None,
                        help="images of the codes rows (default: the file's); the exact search is also shown "
                             "scaled linearly to it (ImageNet: 1281167)")
    parser.add_argument("--rerank", type=int, default=100, help="re-ranking depth of the last row (0: none)")
    parser.add_argument("--json", type=Path, help="also write the rows as JSON to this file")
    args = parser.parse_args()
    if args.codes_n is not None and args.codes_n < 1:
        parser.error(f"--codes-n must be at least 1, got {args.codes_n}")

    tmp = None
    path = args.file
    if path is None:
        tmp = tempfile.TemporaryDirectory(prefix="alexnet-bench-")
        path = Path(tmp.name) / "features.h5"
    if not path.exists():
        t0 = time.perf_counter()
        write_random_features(path, args.n)
        print(f"wrote {args.n:,} random float16 features ({path.stat().st_size / 1e9:.2f} GB) "
              f"in {time.perf_counter() - t0:.1f} s")
    with h5py.File(path, "r") as f:
        n = f["features"].shape[0]
    gb = n * DIM * 2 / 1e9
    queries = torch.randn(args.queries, DIM, generator=torch.Generator().manual_seed(1)).abs_()
    codes_n = args.codes_n or n
    rng = np.random.default_rng(2)
    codes = rng.integers(0, 256, (codes_n, args.codes_bits // 8), dtype=np.uint8) if args.codes_bits else None
    query_codes = pack_codes(rng.integers(0, 2, (args.queries, args.codes_bits)).astype(bool)) if codes is not None else None
    print("\n".join(hardware()))
    print(f"\n{args.queries} queries, k={args.k}, N={n:,} stored features ({gb:.2f} GB float16), memory budget "
          f"{args.memory_mb:g} MiB" + (f"; codes rows at N={codes_n:,} random codes" if codes_n != n else ""))
    head = (f"{'device':<6} {'search':<34} {'N':>9} {'bytes/image':>11} {'first pass s':>12} {'best s':>8} "
            f"{'images/s':>14} {'per query ms':>12} {'speed-up':>8}")
    print(head)
    rows = []

    def row(device: str, search: str, size: int, nbytes: int, first: float | None, best: float, exact: float,
            scaled: bool = False) -> None:
        rows.append({"device": device, "search": search, "n": size, "queries": args.queries, "k": args.k,
                     "bytes_per_image": nbytes, "first_s": first, "best_s": best, "images_per_s": size / best,
                     "per_query_ms": 1000 * best / args.queries, "speedup": exact / best, "scaled": scaled})
        print(f"{device:<6} {search:<34} {size:>9,} {nbytes:>11,} {'' if first is None else f'{first:.2f}':>12} "
              f"{best:>8.3f} {size / best:>14,.0f} {1000 * best / args.queries:>12.2f} {exact / best:>7.1f}x",
              flush=True)

    for name in args.devices.split(","):
        if name == "cuda" and not torch.cuda.is_available():
            continue
        first, best = time_search(path, queries.to(name), args.k, args.memory_mb, args.repeat)
        row(name, "exact (fc7, float16)", n, DIM * 2, first, best, best)
        if codes_n != n:      # the exact search streams the file: linear in its rows
            best = best * codes_n / n
            row(name, f"exact, scaled x{codes_n / n:.2f} from N={n:,}", codes_n, DIM * 2, None, best, best,
                scaled=True)
        if codes is None:
            continue
        hb = time_codes(codes, query_codes, args.k, name, args.repeat, path=path, float_queries=queries.to(name))
        row(name, f"codes ({args.codes_bits} bits)", codes_n, args.codes_bits // 8, None, hb, best)
        if args.rerank:
            depth = min(args.rerank, codes_n)
            rb = time_codes(codes, query_codes, args.k, name, args.repeat, path=path,
                            float_queries=queries.to(name), depth=depth, file_rows=n if codes_n > n else None)
            row(name, f"codes + rerank {depth}", codes_n, args.codes_bits // 8 + DIM * 2, None, rb, best)
    if args.json:
        args.json.write_text(json.dumps({"hardware": hardware(), "n": n, "codes_n": codes_n, "rows": rows},
                                        indent=2) + "\n")
    if tmp is not None:
        tmp.cleanup()


if __name__ == "__main__":
    main()
