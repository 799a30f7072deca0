"""How long `alexnet neighbors` takes to answer a batch of queries against N stored fc7
features, on the CPU and on a GPU when there is one.

Random float16 rows, written to an HDF5 file in the features format (alexnet_cli.features),
stand in for ImageNet's training set; the search is alexnet_cli.neighbors.nearest, exactly
what the command runs (streamed from disk in chunks within --memory-mb, running top-k).
The first pass over the file also warms the page cache; the table shows the best of
--repeat passes after one warm-up pass, i.e. the file served from memory, not from disk.

    python benchmarks/neighbors.py                      # N = 20,000 (160 MB): seconds on a CPU
    python benchmarks/neighbors.py --n 200000           # 1.6 GB
    python benchmarks/neighbors.py --n 1281167          # ImageNet's training set: 10.5 GB of disk
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

import h5py
import torch

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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=20_000, help="stored features (ImageNet: 1281167)")
    parser.add_argument("--queries", type=int, default=100)
    parser.add_argument("--k", type=int, default=6)
    parser.add_argument("--memory-mb", type=float, default=1024, help="the search's memory budget")
    parser.add_argument("--repeat", type=int, default=2, help="timed passes after the first")
    parser.add_argument("--devices", default="cpu,cuda", help="comma-separated; cuda is skipped without one")
    parser.add_argument("--file", type=Path, help="reuse (or keep) the random features file here")
    args = parser.parse_args()

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
    print("\n".join(hardware()))
    print(f"\n{args.queries} queries, k={args.k}, N={n:,} ({gb:.2f} GB float16), memory budget {args.memory_mb:g} MiB")
    print(f"{'device':<8} {'first pass s':>12} {'best s':>8} {'images/s':>12} {'GB/s':>6} {'per query ms':>12}")
    for name in args.devices.split(","):
        if name == "cuda" and not torch.cuda.is_available():
            continue
        first, best = time_search(path, queries.to(name), args.k, args.memory_mb, args.repeat)
        print(f"{name:<8} {first:>12.2f} {best:>8.2f} {n / best:>12,.0f} {gb / best:>6.2f} "
              f"{1000 * best / args.queries:>12.1f}")
    if tmp is not None:
        tmp.cleanup()


if __name__ == "__main__":
    main()
