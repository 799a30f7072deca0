"""Data pipeline benchmark: `alexnet prep` and the shard loader against the PyTorch ImageNet
example's ImageFolder + PIL pipeline, on the same generated images and the same cores.

    python benchmarks/data.py                  # small, for a CPU laptop
    python benchmarks/data.py --n 4000 --device cuda --workers 16

It generates ImageNet-like JPEGs (about 500x375, quality 90, procedurally drawn classes),
then times, in one run:
- prep to raw and to jpeg shards (images/s in total and per worker process);
- the ShardLoader from raw and from jpeg shards: images/s delivered as uint8 tensors on the
  device, without and with the training augmentation (alexnet_cli.augment.TrainAugment:
  random crop, flip, mean subtraction, PCA colour noise, on the device);
- torchvision's ImageFolder with RandomResizedCrop(224), RandomHorizontalFlip, ToTensor,
  Normalize and a DataLoader with the same number of workers, also copied to the device.
Then it times the JPEG decode alone with 1, 2, 4, ... threads: from bytes in memory
(`shards.decode_jpeg`) and from the shards (`shards.read_images`: the h5py read too), with the
cores each kept busy (process CPU time / wall time). If images/s stops growing while "cores
busy" stays near 1, the threads serialise (the GIL, or h5py's global lock).
Targets: prep >= 150 images/s per core; loader from raw shards >= 10x ImageFolder.
"""

from __future__ import annotations

import argparse
import io
import json
import multiprocessing
import os
import platform
import shutil
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import torch
from rich.console import Console
from rich.table import Table

from alexnet_cli.loader import ShardLoader
from alexnet_cli.pca import compute_pca
from alexnet_cli.prep import PrepOptions, prepare
from alexnet_cli.shards import decode_jpeg, open_shard, read_images, read_manifest, read_mean_image
from alexnet_cli.synth import draw_image, wnid


def _make_one(args: tuple[Path, int, int]) -> None:
    root, i, classes = args
    rng = np.random.default_rng(i)
    k = i % classes
    size = (500, 375) if rng.random() < 0.75 else (375, 500)       # ImageNet's most common shapes
    buf = io.BytesIO()
    draw_image(k, rng, size).save(buf, format="JPEG", quality=90)
    (root / "train" / wnid(k) / f"img_{i:06d}.JPEG").write_bytes(buf.getvalue())


def generate(root: Path, n: int, classes: int, workers: int) -> float:
    """n JPEGs in train/<wnid>/; returns their mean size in KB."""
    for k in range(classes):
        (root / "train" / wnid(k)).mkdir(parents=True, exist_ok=True)
    with multiprocessing.get_context("fork").Pool(workers) as pool:
        pool.map(_make_one, [(root, i, classes) for i in range(n)], chunksize=16)
    sizes = [p.stat().st_size for p in (root / "train").rglob("*.JPEG")]
    return float(np.mean(sizes)) / 1024


def time_prep(src: Path, out: Path, fmt: str, workers: int, shard_size: int) -> dict:
    result = prepare(src, out, PrepOptions(format=fmt, workers=workers, shard_size=shard_size))
    rate = result.images_per_second
    return {"what": f"prep -> {fmt} shards", "images_per_s": rate, "per_core": rate / workers,
            "bytes": sum(p.stat().st_size for p in out.glob("train-*.h5"))}


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def time_loader(data: Path, device: torch.device, workers: int, batch: int, epochs: int, augment) -> float:
    loader = ShardLoader(data, "train", batch, shuffle=True, seed=0, device=device, workers=workers)
    gen = torch.Generator(device=device).manual_seed(0)
    for b in loader.epoch(0):          # warm-up epoch: page cache, CUDA context, allocator
        if augment is not None:
            augment(b.images, gen)
    _sync(device)
    t0, n = time.perf_counter(), 0
    for e in range(1, epochs + 1):
        for b in loader.epoch(e):
            x = augment(b.images, gen) if augment is not None else b.images    # (B, 3, 224, 224) float32
            n += len(x)
    _sync(device)
    return n / (time.perf_counter() - t0)


def time_imagefolder(src: Path, device: torch.device, workers: int, batch: int, epochs: int) -> float:
    from torch.utils.data import DataLoader
    from torchvision import datasets, transforms

    normalize = transforms.Normalize(mean=[0.485, 0.456, 0.406], std=[0.229, 0.224, 0.225])
    dataset = datasets.ImageFolder(src / "train", transforms.Compose([
        transforms.RandomResizedCrop(224), transforms.RandomHorizontalFlip(), transforms.ToTensor(), normalize]))
    loader = DataLoader(dataset, batch_size=batch, shuffle=True, num_workers=workers,
                        pin_memory=device.type == "cuda", persistent_workers=True)
    for x, y in loader:  # warm-up epoch
        x.to(device, non_blocking=True)
    _sync(device)
    t0, n = time.perf_counter(), 0
    for _ in range(epochs):
        for x, y in loader:
            x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
            n += len(x)
    _sync(device)
    return n / (time.perf_counter() - t0)


def _threaded(work: list, threads: int, fn, repeat: int) -> tuple[float, float]:
    """(items/s, cores busy) of fn(item) over `work`, `repeat` times, split over `threads`."""
    def part(k: int) -> None:
        for item in work[k::threads]:
            fn(item)
    cpu0, t0 = os.times(), time.perf_counter()
    with ThreadPoolExecutor(threads) as pool:
        for _ in range(repeat):
            list(pool.map(part, range(threads)))
    cpu1, wall = os.times(), time.perf_counter() - t0
    return repeat * len(work) / wall, (cpu1.user + cpu1.system - cpu0.user - cpu0.system) / wall


def decode_scaling(data: Path, max_threads: int) -> list[dict]:
    """JPEG decode with 1, 2, 4, ... max_threads threads, from memory and from the shards."""
    manifest = read_manifest(data)
    names = manifest.split("train").shards
    stored = []
    for name in names:
        with open_shard(manifest, name) as f:
            stored.extend(np.asarray(d) for d in f["jpeg"][:])

    def read_shard(name: str) -> None:
        with open_shard(manifest, name) as f:
            read_images(f, 0, len(f["labels"]))

    out = np.empty((256, 256, 3), np.uint8)
    decode_jpeg(stored[0], out)                                   # warm-up: the decoder's import
    repeat = max(1, 2000 // len(stored))
    rows = []
    for threads in sorted({t for t in (1, 2, 4, 8, 16, 32) if t < max_threads} | {max_threads}):
        mem, mem_busy = _threaded(stored, threads, lambda d: decode_jpeg(d), repeat)
        shard, shard_busy = _threaded(names, threads, read_shard, repeat)
        rows.append({"threads": threads, "memory_images_per_s": mem, "memory_cores_busy": mem_busy,
                     "shards_images_per_s": shard * len(stored) / len(names), "shards_cores_busy": shard_busy})
    return rows


def make_augment(data: Path, device: torch.device):
    try:
        from alexnet_cli.augment import TrainAugment
    except ImportError:
        return None
    stats = compute_pca(data, sample=64)
    return TrainAugment(torch.from_numpy(read_mean_image(data)).to(device),
                        eigenvalues=torch.tensor(stats.eigenvalues, dtype=torch.float32, device=device),
                        eigenvectors=torch.tensor(stats.eigenvectors, dtype=torch.float32, device=device))


def cpu_name() -> str:
    """The processor's model name (from /proc/cpuinfo where there is one)."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def hardware(device: torch.device) -> str:
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    gpu = f", {torch.cuda.get_device_name(device)}" if device.type == "cuda" else ""
    return f"{cpu_name()}, {cores} cores{gpu}; torch {torch.__version__}, Python {platform.python_version()}"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--n", type=int, default=300, help="generated images (default 300; use a few thousand)")
    ap.add_argument("--classes", type=int, default=10)
    ap.add_argument("--workers", type=int, default=os.cpu_count() or 1, help="workers for every pipeline")
    ap.add_argument("--batch-size", type=int, default=128)
    ap.add_argument("--epochs", type=int, default=None,
                    help="timed epochs per loader, after one warm-up (default: enough for 20,000 images)")
    ap.add_argument("--shard-size", type=int, default=None,
                    help="images per shard (default: n / (8 x workers), so that every worker has shards to "
                         "write, as with ImageNet's ~1,300 shards of 1,024)")
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--dir", type=Path, default=None, help="work folder (default: a temporary one, removed)")
    ap.add_argument("--json", action="store_true", help="print the results as JSON too")
    args = ap.parse_args(argv)
    device = torch.device(args.device)
    epochs = args.epochs or max(2, -(-20_000 // args.n))
    shard_size = args.shard_size or max(8, args.n // (8 * args.workers))
    work = args.dir or Path(tempfile.mkdtemp(prefix="alexnet-bench-"))
    console = Console(stderr=True)
    try:
        src = work / "src"
        if not (src / "train").is_dir():
            console.log(f"generating {args.n} JPEGs in {src}")
            kb = generate(src, args.n, args.classes, args.workers)
        else:
            kb = float(np.mean([p.stat().st_size for p in (src / "train").rglob("*.JPEG")])) / 1024
        rows = []
        for fmt in ("raw", "jpeg"):
            shutil.rmtree(work / fmt, ignore_errors=True)
            console.log(f"prep -> {fmt}")
            rows.append(time_prep(src, work / fmt, fmt, args.workers, shard_size))
        augment = make_augment(work / "raw", device)
        for fmt in ("raw", "jpeg"):
            for aug in (None, augment) if augment is not None else (None,):
                label = f"ShardLoader, {fmt} shards" + (" + TrainAugment" if aug is not None else "")
                console.log(label)
                rows.append({"what": label, "images_per_s": time_loader(work / fmt, device, args.workers,
                                                                        args.batch_size, epochs, aug)})
        console.log("ImageFolder + PIL")
        base = time_imagefolder(src, device, args.workers, args.batch_size, epochs)
        rows.append({"what": "ImageFolder + PIL (PyTorch ImageNet example)", "images_per_s": base})
        console.log("JPEG decode, 1 to --workers threads")
        scaling = decode_scaling(work / "jpeg", args.workers)
    finally:
        if args.dir is None:
            shutil.rmtree(work, ignore_errors=True)
    title = (f"{args.n} generated JPEGs (~{kb:.0f} KB, ~500x375), {args.workers} workers, shards of {shard_size}, "
             f"batch {args.batch_size}, {epochs} timed epochs, device {device}\n{hardware(device)}")
    table = Table(title=title, title_justify="left")
    for col in ("pipeline", "images/s", "per worker", "vs ImageFolder", "shard MB"):
        table.add_column(col, justify="left" if col == "pipeline" else "right")
    for r in rows:
        table.add_row(r["what"], f"{r['images_per_s']:,.0f}", f"{r['per_core']:,.0f}" if "per_core" in r else "",
                      "" if r["what"].startswith("prep") else f"{r['images_per_s'] / base:.1f}x",
                      f"{r['bytes'] / 2 ** 20:,.1f}" if "bytes" in r else "")
    Console(width=140).print(table)
    table = Table(title="JPEG decode alone (shards.decode_jpeg), by threads", title_justify="left")
    for col in ("threads", "from memory, images/s", "cores busy", "from shards (h5py read + decode)", "cores busy"):
        table.add_column(col, justify="right")
    for r in scaling:
        table.add_row(str(r["threads"]), f"{r['memory_images_per_s']:,.0f}", f"{r['memory_cores_busy']:.1f}",
                      f"{r['shards_images_per_s']:,.0f}", f"{r['shards_cores_busy']:.1f}")
    Console(width=140).print(table)
    if args.json:
        print(json.dumps({"hardware": hardware(device), "n": args.n, "workers": args.workers, "epochs": epochs,
                          "shard_size": shard_size, "rows": rows, "decode_scaling": scaling}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
