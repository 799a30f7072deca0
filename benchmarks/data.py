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
Then jpeg shards alone:
- each JPEG decoder there is (PIL, simplejpeg = `jpeg.decode_jpeg`, torchvision.io,
  TorchCodec) on one thread from bytes in memory: images/s, images per CPU-second (robust to
  other processes on the machine) and the largest pixel difference from PIL's decode
  (`jpeg.decode_jpeg` is PIL where simplejpeg is not installed: its row says which, and the
  JSON's "simplejpeg" whether it was);
- on CUDA, batched nvJPEG from memory, nvJPEG's pixel difference from libjpeg-turbo, the
  loader with decode="gpu", and the loader with decode="cpu" delivering to the GPU (pinned
  buffers, side-stream copy: what training on this host runs) with its default jpeg threads;
- `jpeg.decode_jpeg` from memory with 1, 2, 4, ... --workers threads, and the ShardLoader
  from jpeg shards (decode="cpu") with as many worker threads: images/s and the cores each
  kept busy (process CPU time / wall time), beside a control (sha256, which releases the
  GIL, in as many threads: the cores the machine gives this process now). If images/s stops
  growing while "cores busy" stays below the control's, the threads serialise (the GIL or a
  lock).
The jpeg loader rows are each timed for --seconds after a short warm-up, however fast the
loader is. Every row is printed to stderr as soon as it is measured, the tables at the end.
Targets: prep >= 150 images/s per core; loader from raw shards >= 10x ImageFolder; the jpeg
loader with 2 threads >= 1.8x its 1-thread rate and >= 90% of 2 threads' decode from memory.
`--json` prints every row as one JSON document on stdout (the tables then go to stderr);
`--json-file PATH` writes the same document to PATH after each section ("complete": false
until the end), so that a run stopped early keeps the rows it measured.
"""

from __future__ import annotations

import argparse
import hashlib
import io
import json
import multiprocessing
import os
import platform
import shutil
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import torch
from rich.console import Console
from rich.table import Table

from alexnet_cli.config import TrainConfig
from alexnet_cli.jpeg import decode_jpeg
from alexnet_cli.loader import ShardLoader, default_workers
from alexnet_cli.pca import compute_pca
from alexnet_cli.prep import PrepOptions, prepare
from alexnet_cli.shards import jpeg_index, open_shard, read_manifest, read_mean_image
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


def show(section: str, row: dict) -> None:
    """One measured row on stderr at once: a run stopped at a time limit keeps what it printed."""
    def fmt(v):
        return f"{v:,.0f}" if isinstance(v, float) and abs(v) >= 100 else f"{v:.3g}" if isinstance(v, float) else str(v)
    label = [str(v) for k, v in row.items() if k in ("what", "decoder")]
    values = [f"{k} {fmt(v)}" for k, v in row.items() if k not in ("what", "decoder")]
    print(f"  {section}: " + "; ".join(label + [", ".join(values)]), file=sys.stderr, flush=True)


def simplejpeg_version() -> str | None:
    """simplejpeg's version, None where it is not installed (then `jpeg.decode_jpeg` is PIL's)."""
    try:
        import simplejpeg
    except ImportError:
        return None
    return getattr(simplejpeg, "__version__", "?")


def cpu_decoder_name() -> str:
    """What `jpeg.decode_jpeg` decodes with here (the same import it tries)."""
    version = simplejpeg_version()
    return f"simplejpeg {version}" if version else "PIL (simplejpeg is not installed)"


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


def stored_jpegs(data: Path) -> list[np.ndarray]:
    """Every stored JPEG file of the train split, as uint8 vectors."""
    manifest = read_manifest(data)
    blobs = []
    for name in manifest.split("train").shards:
        with open_shard(manifest, name) as f:
            _, offsets = jpeg_index(f)
            raw = f["jpeg_data"][:]
        blobs += [raw[offsets[i]:offsets[i + 1]] for i in range(len(offsets) - 1)]
    return blobs


def _pil_decode(blob: np.ndarray) -> np.ndarray:
    from PIL import Image
    with Image.open(io.BytesIO(blob.tobytes())) as img:
        return np.asarray(img.convert("RGB"))


def cpu_decoders() -> dict:
    """name -> f(uint8 vector) -> uint8 (256, 256, 3), for every decoder installed."""
    ours = "simplejpeg (jpeg.decode_jpeg)" if simplejpeg_version() else "PIL fallback (jpeg.decode_jpeg; no simplejpeg)"
    found = {"PIL (Image.open + convert)": _pil_decode, ours: lambda b: decode_jpeg(b)}
    try:
        import warnings
        warnings.filterwarnings("ignore", category=DeprecationWarning)
        from torchvision.io import ImageReadMode, decode_jpeg as tv
        found["torchvision.io.decode_jpeg"] = lambda b: tv(torch.from_numpy(b), mode=ImageReadMode.RGB).permute(1, 2, 0).numpy()
    except ImportError:
        pass
    try:
        from torchcodec.decoders import decode_jpeg as tc
        found["torchcodec.decoders.decode_jpeg"] = lambda b: tc(torch.from_numpy(b)).permute(1, 2, 0).numpy()
    except (ImportError, OSError, RuntimeError):
        pass
    return found


def decoder_rows(blobs: list[np.ndarray]) -> list[dict]:
    """Each decoder on one thread, from memory: rate, rate per CPU-second, difference from PIL."""
    reference = [_pil_decode(b) for b in blobs]
    repeat = max(1, 1500 // len(blobs))
    rows = []
    for name, fn in cpu_decoders().items():
        diff = max(int(np.abs(fn(b).astype(np.int16) - r).max()) for b, r in zip(blobs, reference))
        rate, busy = _threaded(blobs, 1, fn, repeat)
        rows.append({"decoder": name, "images_per_s": rate, "cores_busy": busy,
                     "images_per_cpu_s": rate / max(busy, 1e-9), "max_abs_diff_vs_pil": diff})
        show("decoder", rows[-1])
    return rows


def time_loader_busy(data: Path, workers: int | None, batch: int, seconds: float, device: torch.device,
                     decode: str = "cpu", warmup: float = 0.5) -> tuple[float, float]:
    """(images/s, cores busy) of the ShardLoader's batches, epoch after epoch, over `seconds`
    after `warmup` seconds (page cache, CUDA context, allocator): a fixed time, not a number
    of epochs, so that a loader that serialises costs its row no more than a fast one."""
    loader = ShardLoader(data, "train", batch, shuffle=True, seed=0, device=device, workers=workers, decode=decode)
    if len(loader) == 0:
        raise ValueError(f"{data}: no batch of {batch} to time")

    def batches():
        e = 0
        while True:
            yield from loader.epoch(e)
            e += 1

    stream = batches()
    try:
        t0, seen = time.perf_counter(), 0
        while seen < 2 or time.perf_counter() - t0 < warmup:
            next(stream)
            seen += 1
        _sync(device)
        cpu0, t0, n = os.times(), time.perf_counter(), 0
        while time.perf_counter() - t0 < seconds:
            n += len(next(stream).labels)
        _sync(device)
        cpu1, wall = os.times(), time.perf_counter() - t0
    finally:
        stream.close()          # stops the epoch's threads
    return n / wall, (cpu1.user + cpu1.system - cpu0.user - cpu0.system) / wall


def jpeg_scaling(data: Path, blobs: list[np.ndarray], max_threads: int, batch: int, seconds: float,
                 rounds: int = 1) -> list[dict]:
    """jpeg.decode_jpeg from memory and the ShardLoader (decode="cpu") with 1, 2, 4, ... threads;
    each the best of `rounds` rounds (every thread count once per round), which filters out
    the moments other processes took the cores."""
    repeat = max(1, 3000 // len(blobs))
    chunk = os.urandom(16 << 20)   # control: sha256 releases the GIL, so it shows the cores the threads can get
    counts = sorted({t for t in (1, 2, 4, 8, 16, 32) if t < max_threads} | {max_threads})
    best: dict[int, dict] = {}
    for _ in range(rounds):
        for threads in counts:
            slots = {}

            def into_slot(b: np.ndarray) -> None:    # each thread decodes into its own buffer, as the loader does
                decode_jpeg(b, slots.setdefault(threading.get_ident(), np.empty((256, 256, 3), np.uint8)))

            _, control = _threaded([chunk] * (4 * threads), threads, lambda c: hashlib.sha256(c).digest(), 1)
            mem, mem_busy = _threaded(blobs, threads, into_slot, repeat)
            rate, busy = time_loader_busy(data, threads, batch, seconds, torch.device("cpu"))
            show("jpeg scaling", {"threads": threads, "control_cores_busy": control, "memory_images_per_s": mem,
                                  "memory_cores_busy": mem_busy, "loader_images_per_s": rate, "loader_cores_busy": busy})
            row = best.setdefault(threads, {"threads": threads, "rounds": rounds, "control_cores_busy": 0.0,
                                            "memory_images_per_s": 0.0, "loader_images_per_s": 0.0})
            row["control_cores_busy"] = max(row["control_cores_busy"], control)
            if mem > row["memory_images_per_s"]:
                row.update(memory_images_per_s=mem, memory_cores_busy=mem_busy)
            if rate > row["loader_images_per_s"]:
                row.update(loader_images_per_s=rate, loader_cores_busy=busy)
    rows = [best[t] for t in counts]
    for r in rows:
        r["loader_vs_1_thread"] = r["loader_images_per_s"] / rows[0]["loader_images_per_s"]
        r["loader_vs_memory"] = r["loader_images_per_s"] / r["memory_images_per_s"]
        r["memory_images_per_cpu_s"] = r["memory_images_per_s"] / max(r["memory_cores_busy"], 1e-9)
        r["loader_images_per_cpu_s"] = r["loader_images_per_s"] / max(r["loader_cores_busy"], 1e-9)
    return rows


def gpu_rows(data: Path, blobs: list[np.ndarray], device: torch.device, workers: int, batch: int,
             seconds: float) -> list[dict]:
    """On CUDA: batched nvJPEG from memory, nvJPEG's pixel difference from the CPU decode's
    (libjpeg-turbo, or PIL without simplejpeg), the loader with decode="gpu", and the loader
    with decode="cpu" delivering to the device (its default jpeg threads: what `train` uses)."""
    from alexnet_cli.jpeg import decode_jpegs_on
    rows = []

    def add(row: dict) -> None:
        rows.append(row)
        show("gpu decode", row)

    chunks = [blobs[i:i + batch] for i in range(0, len(blobs), batch)]
    decode_jpegs_on(chunks[0], device)
    torch.cuda.synchronize(device)
    repeat = max(1, 5000 // len(blobs))
    t0 = time.perf_counter()
    for _ in range(repeat):
        for c in chunks:
            decode_jpegs_on(c, device)
    torch.cuda.synchronize(device)
    add({"what": f"batched nvJPEG from memory (batches of {batch})",
         "images_per_s": repeat * len(blobs) / (time.perf_counter() - t0)})
    diffs = [(decode_jpegs_on(c, device).cpu().int() - torch.from_numpy(np.stack([decode_jpeg(b) for b in c])).int()
              ).abs() for c in chunks]
    d = torch.cat([x.flatten() for x in diffs]).float()
    add({"what": f"nvJPEG vs {cpu_decoder_name()} pixels", "mean_abs_diff": float(d.mean()),
         "max_abs_diff": int(d.max()), "share_differing": float((d > 0).float().mean())})
    rate, busy = time_loader_busy(data, workers, batch, seconds, device, decode="gpu")
    add({"what": f"ShardLoader, jpeg shards, decode=gpu, {workers} threads", "images_per_s": rate,
         "cores_busy": busy})
    cpu_workers = default_workers("jpeg")
    rate, busy = time_loader_busy(data, None, batch, seconds, device, decode="cpu")
    add({"what": f"ShardLoader, jpeg shards, decode=cpu ({cpu_decoder_name()}) to {device.type}, "
                 f"{cpu_workers} threads (the default)", "images_per_s": rate, "cores_busy": busy})
    return rows


def make_augment(data: Path, device: torch.device):
    try:
        from alexnet_cli.augment import TrainAugment
    except ImportError:
        return None
    stats = compute_pca(data, sample=64)
    return TrainAugment(torch.from_numpy(read_mean_image(data)).to(device),
                        eigenvalues=torch.tensor(stats.eigenvalues, dtype=torch.float32, device=device),
                        eigenvectors=torch.tensor(stats.eigenvectors, dtype=torch.float32, device=device),
                        crop_offsets=TrainConfig().crop_offsets)     # the paper recipe's, as `train` draws


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


def write_json(path: Path, doc: dict) -> None:
    """The document so far, replaced whole (a reader never sees half a file)."""
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(doc))
    os.replace(tmp, path)


def print_tables(doc: dict, title: str, out: Console) -> None:
    rows, base = doc["rows"], doc.get("imagefolder_images_per_s")
    table = Table(title=title, title_justify="left")
    for col in ("pipeline", "images/s", "per worker", "vs ImageFolder", "shard MB"):
        table.add_column(col, justify="left" if col == "pipeline" else "right")
    for r in rows:
        table.add_row(r["what"], f"{r['images_per_s']:,.0f}", f"{r['per_core']:,.0f}" if "per_core" in r else "",
                      "" if r["what"].startswith("prep") or not base else f"{r['images_per_s'] / base:.1f}x",
                      f"{r['bytes'] / 2 ** 20:,.1f}" if "bytes" in r else "")
    out.print(table)
    table = Table(title=f"JPEG decoders, one thread, from memory ({doc['stored_jpegs']} stored 256x256 JPEGs)",
                  title_justify="left")
    for col in ("decoder", "images/s", "cores busy", "images per CPU-s", "max |diff| vs PIL"):
        table.add_column(col, justify="left" if col == "decoder" else "right")
    for r in doc["decoders"]:
        table.add_row(r["decoder"], f"{r['images_per_s']:,.0f}", f"{r['cores_busy']:.2f}",
                      f"{r['images_per_cpu_s']:,.0f}", str(r["max_abs_diff_vs_pil"]))
    out.print(table)
    if doc["gpu_decode"]:
        table = Table(title="jpeg shards decoded on the GPU, and decoded on the CPU for the GPU", title_justify="left")
        table.add_column("what")
        table.add_column("result", justify="right")
        for r in doc["gpu_decode"]:
            value = (f"{r['images_per_s']:,.0f} images/s" if "images_per_s" in r else
                     f"mean |diff| {r['mean_abs_diff']:.3f}, max {r['max_abs_diff']}, "
                     f"{100 * r['share_differing']:.1f}% of values differ")
            table.add_row(r["what"], value)
        out.print(table)
    rounds = doc["rounds"]
    table = Table(title=f"jpeg shards by threads: jpeg.decode_jpeg ({doc['cpu_decoder']}) from memory, and the "
                        f"ShardLoader (decode=cpu), {doc['seconds']:g} s per loader row"
                        + (f", best of {rounds} rounds" if rounds > 1 else ""),
                  title_justify="left")
    table.caption = ("control: the cores busy of sha256 (no GIL) in as many threads, i.e. the cores this "
                     "process can get now; per CPU-s: images per second of CPU time, which other processes on "
                     "the machine change least")
    for col in ("threads", "control", "memory, images/s", "cores busy", "per CPU-s", "loader, images/s", "cores busy",
                "per CPU-s", "vs 1 thread", "vs memory"):
        table.add_column(col, justify="right")
    for r in doc["jpeg_scaling"]:
        table.add_row(str(r["threads"]), f"{r['control_cores_busy']:.2f}", f"{r['memory_images_per_s']:,.0f}",
                      f"{r['memory_cores_busy']:.2f}", f"{r['memory_images_per_cpu_s']:,.0f}",
                      f"{r['loader_images_per_s']:,.0f}", f"{r['loader_cores_busy']:.2f}",
                      f"{r['loader_images_per_cpu_s']:,.0f}", f"{r['loader_vs_1_thread']:.2f}x",
                      f"{100 * r['loader_vs_memory']:.0f}%")
    out.print(table)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--n", type=int, default=300, help="generated images (default 300; use a few thousand)")
    ap.add_argument("--classes", type=int, default=10)
    ap.add_argument("--workers", type=int, default=os.cpu_count() or 1, help="workers for every pipeline")
    ap.add_argument("--batch-size", type=int, default=128)
    ap.add_argument("--epochs", type=int, default=None,
                    help="timed epochs of the raw shard and ImageFolder loaders, after one warm-up (default: "
                         "enough for 20,000 images)")
    ap.add_argument("--seconds", type=float, default=2.0,
                    help="timed seconds of each jpeg loader row, after half a second of warm-up (default 2)")
    ap.add_argument("--rounds", type=int, default=1,
                    help="jpeg scaling rows: the best of this many rounds (3 on a machine shared with other jobs)")
    ap.add_argument("--shard-size", type=int, default=None,
                    help="images per shard (default: n / (8 x workers), so that every worker has shards to "
                         "write, as with ImageNet's ~1,300 shards of 1,024)")
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--dir", type=Path, default=None, help="work folder (default: a temporary one, removed)")
    ap.add_argument("--json", action="store_true",
                    help="print every row as one JSON document on stdout (the tables go to stderr)")
    ap.add_argument("--json-file", type=Path, default=None,
                    help="write the same document to this file after each section (\"complete\": false until "
                         "the end): a run stopped early keeps its rows")
    ap.add_argument("--only-jpeg", action="store_true",
                    help="only the jpeg rows: decoders, GPU decode, thread scaling (skips raw and ImageFolder)")
    args = ap.parse_args(argv)
    if args.rounds < 1:
        ap.error(f"--rounds must be at least 1, got {args.rounds}")
    if args.seconds <= 0:
        ap.error(f"--seconds must be positive, got {args.seconds}")
    device = torch.device(args.device)
    epochs = args.epochs or max(2, -(-20_000 // args.n))
    shard_size = args.shard_size or max(8, args.n // (8 * args.workers))
    work = args.dir or Path(tempfile.mkdtemp(prefix="alexnet-bench-"))
    console = Console(stderr=True)
    load = list(os.getloadavg()) if hasattr(os, "getloadavg") else [0.0, 0.0, 0.0]
    doc = {"hardware": hardware(device), "load_average": load, "n": args.n, "workers": args.workers,
           "epochs": epochs, "seconds": args.seconds, "rounds": args.rounds, "shard_size": shard_size,
           "simplejpeg": simplejpeg_version() is not None, "cpu_decoder": cpu_decoder_name(),
           "complete": False, "sections": [], "rows": [], "decoders": [], "gpu_decode": [], "jpeg_scaling": []}

    def done(section: str) -> None:
        doc["sections"].append(section)
        if args.json_file:
            write_json(args.json_file, doc)

    if not doc["simplejpeg"]:
        console.log("simplejpeg is not installed: jpeg.decode_jpeg decodes with PIL, and so do the loader rows")
    try:
        src = work / "src"
        if not (src / "train").is_dir():
            console.log(f"generating {args.n} JPEGs in {src}")
            kb = generate(src, args.n, args.classes, args.workers)
        else:
            kb = float(np.mean([p.stat().st_size for p in (src / "train").rglob("*.JPEG")])) / 1024
        doc["jpeg_kb"] = kb
        rows = doc["rows"]
        for fmt in ("jpeg",) if args.only_jpeg else ("raw", "jpeg"):
            shutil.rmtree(work / fmt, ignore_errors=True)
            console.log(f"prep -> {fmt}")
            rows.append(time_prep(src, work / fmt, fmt, args.workers, shard_size))
            show("prep", rows[-1])
        done("prep")
        if not args.only_jpeg:
            augment = make_augment(work / "raw", device)
            for fmt in ("raw", "jpeg"):
                for aug in (None, augment) if augment is not None else (None,):
                    label = f"ShardLoader, {fmt} shards" + (" + TrainAugment" if aug is not None else "")
                    console.log(label)
                    rows.append({"what": label, "images_per_s": time_loader(work / fmt, device, args.workers,
                                                                            args.batch_size, epochs, aug)})
                    show("loader", rows[-1])
            console.log("ImageFolder + PIL")
            base = time_imagefolder(src, device, args.workers, args.batch_size, epochs)
            rows.append({"what": "ImageFolder + PIL (PyTorch ImageNet example)", "images_per_s": base})
            show("loader", rows[-1])
            doc["imagefolder_images_per_s"] = base
            done("loaders")
        blobs = stored_jpegs(work / "jpeg")
        doc["stored_jpegs"] = len(blobs)
        console.log("JPEG decoders, one thread, from memory")
        doc["decoders"] = decoder_rows(blobs)
        done("decoders")
        if device.type == "cuda":      # before the scaling rows: the GPU rows are the ones only a GPU host gives
            console.log("jpeg: decode on the GPU, and on the CPU for the GPU")
            doc["gpu_decode"] = gpu_rows(work / "jpeg", blobs, device, args.workers, args.batch_size, args.seconds)
            done("gpu_decode")
        console.log("jpeg: decode from memory and the loader, 1 to --workers threads")
        doc["jpeg_scaling"] = jpeg_scaling(work / "jpeg", blobs, args.workers, args.batch_size, args.seconds,
                                           args.rounds)
        doc["complete"] = True
        done("jpeg_scaling")
    finally:
        if args.dir is None:
            shutil.rmtree(work, ignore_errors=True)
    title = (f"{args.n} generated JPEGs (~{kb:.0f} KB, ~500x375), {args.workers} workers, shards of {shard_size}, "
             f"batch {args.batch_size}, " + ("" if args.only_jpeg else f"{epochs} timed epochs (raw and ImageFolder), ")
             + f"device {device}\n"
             f"{hardware(device)}\nload average before: {load[0]:.1f} (other processes share these cores)")
    print_tables(doc, title, Console(width=140, stderr=args.json))
    if args.json:
        print(json.dumps(doc))
    return 0


if __name__ == "__main__":
    sys.exit(main())
