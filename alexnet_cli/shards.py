"""The prepared data set on disk: `manifest.json`, the HDF5 shards and the mean image
(paper section 3: images rescaled to 256x256, the training mean subtracted later).

This file is the schema. `prep` writes through `ShardWriter` and `write_manifest`; the
loader, `pca`, `eval` and `neighbors` read through `read_manifest`, `open_shard` and
`read_images`.

A data folder holds:

- `manifest.json` (written last, atomically): classes, class names, splits with their
  shards, per-shard image count, byte size and sha256 (a shard of another size is caught
  when it is opened; `verify_shards`, i.e. `alexnet prep --verify`, checks the sha256, a
  full read), the skipped source files, the mean RGB and the options used.
- `<split>-00000.h5`, ...: one HDF5 file per shard of at most `shard_size` images:
    labels    int16 (N,)                 index of the image's wnid in `classes`
    paths     utf-8 strings (N,)         relative to the source root
    images    uint8 (N, 256, 256, 3) RGB, chunked by `block_size` images   (format "raw")
    jpeg_data uint8 (total bytes,), contiguous: the JPEG files one after another (format "jpeg")
    jpeg_offsets int64 (N + 1,): image i is jpeg_data[offsets[i]:offsets[i + 1]]  (format "jpeg")
    pixel_sum uint32 (256, 256, 3)       the sum of the shard's decoded images, so that the
                                          mean image is exact after an interrupted run
  attributes: format_version, format, split, count, block_size, jpeg_quality, signature
  (the options and file list the shard was made from) and skipped (JSON).
  The loader reads both formats without h5py in its hot path: raw chunks and the jpeg bytes
  of a run of images are at known file offsets, read with positional reads (no lock).
- `mean_image.npy`: float32 (256, 256, 3), the mean of the training images in 0-255 units.
"""

from __future__ import annotations

import fcntl
import functools
import hashlib
import io
import json
import os
import warnings
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Sequence

import h5py
import numpy as np
import torch
from PIL import Image

from alexnet_cli.errors import DataError, UsageError
from alexnet_cli.images import SIZE
from alexnet_cli.progress import NullReporter, Reporter

FORMAT_VERSION = 2                         # the manifest's: the highest layout version below
LAYOUT_VERSIONS = {"raw": 1, "jpeg": 2}     # each format's shard layout (jpeg v1: one vlen record per image)
FORMATS = ("raw", "jpeg")
MANIFEST = "manifest.json"
MEAN_IMAGE = "mean_image.npy"
IMAGE_SHAPE = (SIZE, SIZE, 3)
MAX_CLASSES = 32768        # labels are int16: 0..32767
MAX_BLOCK_SIZE = 256       # a block of raw images is 50 MB; the loader holds (workers + 1) x 8 of them
MAX_SHARD_SIZE = 4096      # a shard is built in memory: 4096 raw images are 800 MB
_RERUN = "run `alexnet prep` again"
_REPAIR = "run `alexnet prep SRC OUT --verify` to make the damaged shards again"   # same size, other bytes


@dataclass
class SplitInfo:
    count: int
    shards: list[str]                                   # file names relative to the data dir
    shard_counts: list[int] = field(default_factory=list)


@dataclass
class ShardInfo:
    count: int
    bytes: int
    sha256: str


@dataclass
class Manifest:
    root: Path                                          # the data dir
    classes: list[str]                                  # sorted wnids; label = position here
    class_names: list[str]
    splits: dict[str, SplitInfo]
    mean_rgb: list[float]
    mean_image: str                                     # file name in root
    format: str                                         # "raw" or "jpeg"
    skipped: list[dict]                                 # [{"path", "reason"}], paths relative to source
    shards: dict[str, ShardInfo] = field(default_factory=dict)
    block_size: int = 32
    source: str = ""
    layout: str = ""
    options: dict[str, Any] = field(default_factory=dict)
    format_version: int = FORMAT_VERSION

    def split(self, name: str) -> SplitInfo:
        if name not in self.splits:
            have = ", ".join(sorted(self.splits)) or "none"
            raise DataError(f"{self.root}: no split '{name}' in this data (splits: {have})")
        return self.splits[name]

    def shard_path(self, name: str) -> Path:
        return self.root / name

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        data.pop("root")
        return data


# ---------------------------------------------------------------------------- manifest

class NewerFormat(DataError):
    """Data written by a newer alexnet: never to be overwritten as if it were damaged."""


def check_block_size(block_size: int) -> None:
    if not 1 <= block_size <= MAX_BLOCK_SIZE:
        raise DataError(f"block size must be in 1..{MAX_BLOCK_SIZE} images, got {block_size}")


class OlderFormat(DataError):
    """jpeg shards of an older layout: `alexnet prep` converts them in place (bytes copied)."""


def read_manifest(data_dir: str | Path) -> Manifest:
    """The manifest of a prepared data folder, with every value the readers rely on checked;
    DataError if it is missing, unreadable or inconsistent."""
    root = Path(data_dir)
    path = root / MANIFEST
    if not path.is_file():
        raise DataError(f"{path} not found: run `alexnet prep SRC {root}` first")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        if not isinstance(data, dict):
            raise TypeError(f"expected a JSON object, got {type(data).__name__}")
        version = int(data.get("format_version", 0))
        if version > FORMAT_VERSION:
            raise NewerFormat(f"{path}: format version {version} is newer than this alexnet "
                            f"understands ({FORMAT_VERSION}); upgrade alexnet-cli")
        if data.get("format") == "jpeg" and version < LAYOUT_VERSIONS["jpeg"]:
            raise OlderFormat(f"{root} holds jpeg shards of format version {version}, which this alexnet no longer "
                              f"reads: run `alexnet prep SRC {root}` (the same SRC and options) to convert them "
                              "in place (the JPEG bytes are copied, not decoded again)")
        splits = {name: SplitInfo(**s) for name, s in data["splits"].items()}
        shards = {name: ShardInfo(**s) for name, s in data.get("shards", {}).items()}
        manifest = Manifest(
            root=root, classes=list(data["classes"]), class_names=list(data["class_names"]),
            splits=splits, mean_rgb=[float(v) for v in data["mean_rgb"]],
            mean_image=str(data["mean_image"]), format=str(data["format"]),
            skipped=list(data.get("skipped", [])), shards=shards,
            block_size=int(data.get("block_size", 32)), source=str(data.get("source", "")),
            layout=str(data.get("layout", "")), options=dict(data.get("options", {})),
            format_version=version)
    except DataError:
        raise
    except RecursionError:        # json gives up on deeply nested input
        raise DataError(f"{path} is corrupt (nested too deeply to be a manifest): {_RERUN}") from None
    except (ValueError, KeyError, TypeError, AttributeError) as exc:
        raise DataError(f"{path} is corrupt (a field is missing or of the wrong type: {exc}): {_RERUN}") from None
    problem = _manifest_problem(manifest)
    if problem:
        raise DataError(f"{path} is corrupt ({problem}): {_RERUN}")
    return manifest


def _manifest_problem(m: Manifest) -> str | None:
    """What is wrong with a parsed manifest's values, in words, or None."""
    if m.format not in FORMATS:
        return f"format must be one of {', '.join(FORMATS)}, got {m.format!r}"
    if not 1 <= m.block_size <= MAX_BLOCK_SIZE:
        return f"block_size must be in 1..{MAX_BLOCK_SIZE}, got {m.block_size}"
    if not 1 <= len(m.classes) <= MAX_CLASSES or len(m.class_names) != len(m.classes):
        return (f"{len(m.classes)} classes and {len(m.class_names)} class names (expected the same number, "
                f"1..{MAX_CLASSES})")
    if not all(isinstance(c, str) for c in m.classes + m.class_names):
        return "classes and class_names must be strings"
    if len(m.mean_rgb) != 3 or not _plain_name(m.mean_image):
        return "mean_rgb must have 3 values and mean_image be a file name"
    for name, split in m.splits.items():
        counts = split.shard_counts
        if not all(isinstance(n, str) and _plain_name(n) for n in split.shards):
            return f"split {name!r}: shards must be file names in the data folder"
        if not all(isinstance(n, int) and n >= 0 for n in [split.count, *counts]):
            return f"split {name!r}: image counts must be whole numbers >= 0"
        if counts and (len(counts) != len(split.shards) or sum(counts) != split.count):
            return f"split {name!r}: its shard counts do not add up to its count {split.count}"
        for shard, n in zip(split.shards, counts):
            if shard in m.shards and m.shards[shard].count != n:
                return f"shard {shard}: {m.shards[shard].count} images, its split says {n}"
    for name, info in m.shards.items():
        if not all(isinstance(n, int) and n >= 0 for n in (info.count, info.bytes)):
            return f"shard {name}: count and bytes must be whole numbers >= 0"
    return None


def _plain_name(name: str) -> bool:
    """A file name directly in the data folder (no folder part, not '.' or '..')."""
    return bool(name) and name not in (".", "..") and "/" not in name and "\\" not in name and "\0" not in name


def write_manifest(manifest: Manifest) -> Path:
    """Write manifest.json atomically (the last file a complete `prep` writes)."""
    path = manifest.root / MANIFEST
    write_atomic(path, (json.dumps(manifest.to_json(), indent=1, allow_nan=False) + "\n").encode("utf-8"))
    return path


def write_atomic(path: Path, data: bytes | memoryview) -> None:
    """A temporary file in the same folder, fsync, then os.replace: never half a file. A
    failed write (a full disk) raises an OSError that names `path`."""
    tmp = temporary_name(path)
    fd = claim(tmp)
    try:
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view):]
        os.fsync(fd)
        os.replace(tmp, path)
    except OSError as exc:
        tmp.unlink(missing_ok=True)
        if exc.filename is None:        # os.write and os.fsync name no file: say which
            raise OSError(exc.errno, exc.strerror, str(path)) from None
        raise
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    finally:
        os.close(fd)


def temporary_name(path: Path) -> Path:
    """Where `path` is written before it is complete: `.<name>.<pid>.tmp` beside it."""
    return path.with_name(f".{path.name}.{os.getpid()}.tmp")


def claim(tmp: Path) -> int:
    """Create `tmp` and hold an exclusive lock on it while it is being written; the lock
    dies with the process, so `abandoned` can tell the files of killed runs."""
    fd = os.open(tmp, os.O_RDWR | os.O_CREAT | os.O_TRUNC, 0o666)      # mode as umask allows
    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    return fd


def abandoned(tmp: Path) -> bool:
    """True if no live process holds `tmp` (see `claim`)."""
    try:
        fd = os.open(tmp, os.O_RDONLY | os.O_NONBLOCK)   # never blocks, even on a FIFO
    except OSError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        return True
    except OSError:
        return False
    finally:
        os.close(fd)


def read_mean_image(data_dir: str | Path) -> np.ndarray:
    """The training mean image: float32 (256, 256, 3) in 0-255 units."""
    manifest = read_manifest(data_dir)
    path = manifest.root / manifest.mean_image
    if not path.is_file():   # missing, or not a regular file (np.load would block on a FIFO)
        raise DataError(f"{path}: the mean image is missing: {_RERUN}")
    try:
        mean = np.load(path, allow_pickle=False)
    except (OSError, ValueError) as exc:
        raise DataError(f"{path}: cannot read the mean image ({exc}): {_RERUN}") from None
    if mean.shape != IMAGE_SHAPE:
        raise DataError(f"{path}: mean image has shape {mean.shape}, expected {IMAGE_SHAPE}: {_RERUN}")
    return mean.astype(np.float32, copy=False)


def read_split_index(data_dir: str | Path, split: str) -> tuple[list[str], np.ndarray]:
    """Source paths (relative to SRC) and int64 labels of every image of `split`, in the
    split's global order (shard by shard, the order the loader's shuffle=False gives)."""
    manifest = read_manifest(data_dir)
    paths: list[str] = []
    labels = []
    for name in manifest.split(split).shards:
        with open_shard(manifest, name) as f:
            labels.append(read_labels(f, len(manifest.classes)))
            paths.extend(_read_paths(f, name, len(labels[-1])))
    return paths, (np.concatenate(labels) if labels else np.zeros(0, np.int64))


def _read_paths(f: h5py.File, name: str, count: int) -> list[str]:
    try:
        paths = [p.decode("utf-8") if isinstance(p, bytes) else str(p) for p in f["paths"][:]]
    except (OSError, KeyError, ValueError) as exc:
        raise DataError(f"shard {name}: cannot read its paths ({exc}): {_RERUN}") from None
    if len(paths) != count:
        raise DataError(f"shard {name} is inconsistent: {len(paths)} paths for {count} images: {_REPAIR}")
    return paths


# ---------------------------------------------------------------------------- reading shards

def check_shard_file(manifest: Manifest, name: str) -> Path:
    """The shard's path, after checking it exists with the size the manifest recorded."""
    path = manifest.shard_path(name)
    if not path.is_file():
        raise DataError(f"shard {path} is missing: {_RERUN}")
    info = manifest.shards.get(name)
    if info is not None and path.stat().st_size != info.bytes:
        raise DataError(f"shard {path} is truncated or damaged ({path.stat().st_size} bytes, "
                        f"the manifest says {info.bytes}): {_RERUN}")
    return path


def open_shard(manifest: Manifest, name: str) -> h5py.File:
    """Open a shard for reading; DataError naming it if it is missing, truncated or not HDF5."""
    path = check_shard_file(manifest, name)
    try:
        f = h5py.File(path, "r", locking=False)
    except OSError as exc:
        raise DataError(f"shard {path} is not a readable HDF5 file ({exc}): {_RERUN}") from None
    if (int(f.attrs.get("format_version", -1)) != LAYOUT_VERSIONS.get(manifest.format)
            or f.attrs.get("format") != manifest.format):
        f.close()
        raise DataError(f"shard {path} does not match its manifest (format version or format): {_RERUN}")
    info = manifest.shards.get(name)
    if info is not None and int(f.attrs.get("count", -1)) != info.count:
        f.close()
        raise DataError(f"shard {path} holds {int(f.attrs.get('count', -1))} images, its manifest says "
                        f"{info.count}: {_REPAIR}")
    return f


def read_images(f: h5py.File, start: int, stop: int, out: np.ndarray | None = None,
                rows: np.ndarray | None = None) -> np.ndarray:
    """Images start..stop of an open shard as uint8 (n, 256, 256, 3) RGB, raw or decoded JPEG.
    With `rows`, image start + j goes to out[rows[j]] instead (nowhere if rows[j] < 0).
    Raises DataError naming the shard if the data cannot be read or decoded."""
    n = stop - start
    if out is None:
        out = np.empty((n, *IMAGE_SHAPE), np.uint8)
    try:
        if "images" in f and rows is None:
            if n:
                f["images"].read_direct(out, np.s_[start:stop], np.s_[0:n])  # (n, 256, 256, 3)
        elif "images" in f:
            data = f["images"][start:stop]
            out[rows[rows >= 0]] = data[rows >= 0]
        elif n:
            offsets = f["jpeg_offsets"][start:stop + 1].tolist()
            data = f["jpeg_data"][offsets[0]:offsets[-1]]
            a = offsets[0]
            for j in range(n):
                r = j if rows is None else rows[j]
                if r >= 0:
                    decode_jpeg(data[offsets[j] - a:offsets[j + 1] - a], out[r])
    except (OSError, KeyError, ValueError, TypeError) as exc:
        raise DataError(f"shard {f.filename}: images {start}..{stop} are unreadable "
                        f"({str(exc).splitlines()[0]}): {_RERUN}") from None
    return out


def read_labels(f: h5py.File, num_classes: int | None = None) -> np.ndarray:
    """An open shard's labels as int64 (N,), checked: one per image, and with `num_classes`
    (the manifest's number of classes) each in 0..num_classes - 1. DataError naming the shard
    otherwise, so that no reader trains on, scores or shows a label that is not a class."""
    try:
        labels = np.asarray(f["labels"][:], dtype=np.int64)
        count = int(f.attrs["count"])
        images = f["images"].shape[0] if "images" in f else f["jpeg"].shape[0] if "jpeg" in f else count
    except (OSError, KeyError, ValueError, TypeError) as exc:
        raise DataError(f"shard {f.filename}: labels are unreadable ({exc}): {_RERUN}") from None
    if labels.ndim != 1 or len(labels) != count or images != count:
        raise DataError(f"shard {f.filename} is inconsistent: {labels.size} labels, {images} images and a count "
                        f"of {count}: {_REPAIR}")
    if num_classes is not None and len(labels) and (labels.min() < 0 or labels.max() >= num_classes):
        bad = labels[(labels < 0) | (labels >= num_classes)]
        raise DataError(f"shard {f.filename}: {len(bad)} label(s) outside 0..{num_classes - 1} (the data has "
                        f"{num_classes} classes), e.g. {bad[0]}: {_REPAIR}")
    return labels


def encode_jpeg(image: np.ndarray, quality: int) -> np.ndarray:
    """uint8 (256, 256, 3) -> the bytes of a JPEG file as a uint8 vector."""
    buf = io.BytesIO()
    Image.fromarray(image, "RGB").save(buf, format="JPEG", quality=quality)
    return np.frombuffer(buf.getvalue(), np.uint8)


def jpeg_index(f: h5py.File) -> tuple[int, np.ndarray]:
    """(file offset of `jpeg_data`, int64 offsets (count + 1,)) of an open jpeg shard: where
    each image's bytes are, for positional reads. DataError naming the shard if inconsistent."""
    try:
        data, offsets = f["jpeg_data"], np.asarray(f["jpeg_offsets"][:], np.int64)
        count = int(f.attrs["count"])
        contiguous = data.chunks is None and data.compression is None
        base = data.id.get_offset() if contiguous else None
    except (OSError, KeyError, ValueError, TypeError) as exc:
        raise DataError(f"shard {f.filename}: its jpeg index is unreadable ({exc}): {_RERUN}") from None
    if (not contiguous or len(offsets) != count + 1 or offsets[0] != 0 or offsets[-1] != data.shape[0]
            or (np.diff(offsets) < 0).any() or (base is None and data.shape[0] > 0)):
        raise DataError(f"shard {f.filename}: its jpeg bytes and offsets do not agree: {_RERUN}")
    return int(base or 0), offsets


@functools.cache
def _simplejpeg():
    """simplejpeg (libjpeg-turbo, the GIL released while it decodes), or None where it is not
    installed (then PIL decodes: the same pixels, slower)."""
    try:
        import simplejpeg
    except ImportError:
        return None
    return simplejpeg


def decode_jpeg(data, out: np.ndarray | None = None) -> np.ndarray:
    """The bytes of a stored JPEG (any buffer: numpy uint8, bytes, memoryview) -> uint8
    (256, 256, 3) RGB, written into `out` if given (a C-contiguous (256, 256, 3) array).

    simplejpeg's libjpeg-turbo decode, straight into `out`, in one C call that releases the
    GIL: loader threads decode in parallel. Its pixels are PIL's exactly (the same library and
    settings: accurate DCT, smooth upsampling; tests check it). ValueError for bytes that are
    not a decodable 256x256 JPEG."""
    if out is None:
        out = np.empty(IMAGE_SHAPE, np.uint8)
    codec = _simplejpeg()
    if codec is None:
        try:
            with Image.open(io.BytesIO(bytes(data))) as img:
                rgb = np.asarray(img.convert("RGB"))
        except (OSError, SyntaxError) as exc:
            raise ValueError(f"stored JPEG cannot be decoded: {exc}") from None
        if rgb.shape != IMAGE_SHAPE:
            raise ValueError(f"stored JPEG is {rgb.shape[:2]}, expected {IMAGE_SHAPE[:2]}")
        out[...] = rgb
        return out
    try:
        got = codec.decode_jpeg(data, "RGB", buffer=out)
    except ValueError as exc:   # corrupt bytes, or an image larger than `out`
        raise ValueError(f"stored JPEG cannot be decoded: {exc}") from None
    if got.shape != IMAGE_SHAPE:
        raise ValueError(f"stored JPEG is {got.shape[:2]}, expected {IMAGE_SHAPE[:2]}")
    return out


DECODES = ("cpu", "gpu", "auto")


@functools.cache
def gpu_jpeg_decoder():
    """A batched nvJPEG decoder, f(list of uint8 CPU tensors, device) -> list of (3, H, W)
    uint8 tensors on the device: TorchCodec's (torchvision's image codecs' successor) where it
    is installed, else torchvision.io's (deprecated in torchvision 0.29); None if neither."""
    try:
        from torchcodec.decoders import decode_jpeg as codec_decode
        return lambda blobs, device: codec_decode(blobs, mode="RGB", device=device)
    except (ImportError, OSError, RuntimeError):    # not installed, or its libraries do not load
        pass
    warnings.filterwarnings("ignore", message="The image decoding and encoding capabilities of TorchVision",
                            category=DeprecationWarning)
    try:
        from torchvision.io import ImageReadMode, decode_jpeg as vision_decode
    except ImportError:
        return None
    return lambda blobs, device: vision_decode(blobs, mode=ImageReadMode.RGB, device=device)


def resolve_decode(decode: str, fmt: str, device: str | torch.device) -> str:
    """Where the loader decodes: "cpu" or "gpu" for jpeg shards, "none" for raw ones (nothing
    to decode). auto: gpu on a CUDA device when a GPU decoder is installed, else cpu; gpu
    without them is a UsageError (never a silent CPU decode)."""
    if decode not in DECODES:
        raise UsageError(f"--decode must be one of {', '.join(DECODES)}; got {decode!r}")
    if fmt != "jpeg":
        return "none"
    device = torch.device(device)
    usable = device.type == "cuda" and gpu_jpeg_decoder() is not None
    if decode == "gpu" and not usable:
        why = "a CUDA --device" if device.type != "cuda" else "torchvision with nvJPEG or torchcodec"
        raise UsageError(f"--decode gpu needs {why} (device {device}); use --decode cpu or auto")
    return "gpu" if decode == "gpu" or (decode == "auto" and usable) else "cpu"


def decode_jpegs_on(blobs: Sequence, device: torch.device) -> torch.Tensor:
    """Stored JPEGs (uint8 vectors) -> uint8 (B, 256, 256, 3) RGB on a CUDA device, in one
    batched nvJPEG call on the current stream. nvJPEG's pixels differ slightly from
    libjpeg-turbo's (docs/formats.md gives the measured difference)."""
    decoder = gpu_jpeg_decoder()
    tensors = [torch.from_numpy(np.asarray(b, np.uint8)) for b in blobs]
    try:
        chw = decoder(tensors, device)                                       # B x (3, H, W)
    except RuntimeError as exc:
        raise DataError(f"JPEGs cannot be decoded on {device} ({str(exc).splitlines()[0]}): "
                        "run `alexnet prep SRC OUT --verify`, or use --decode cpu") from None
    bad = [tuple(c.shape) for c in chw if tuple(c.shape) != (3, *IMAGE_SHAPE[:2])]
    if bad:
        raise DataError(f"a stored JPEG decodes to {bad[0]}, expected (3, 256, 256): {_RERUN}")
    return torch.stack([c.permute(1, 2, 0) for c in chw]) if chw else \
        torch.empty((0, *IMAGE_SHAPE), dtype=torch.uint8, device=device)           # (B, 256, 256, 3)


def data_key(manifest: Manifest, split: str) -> str:
    """16 hex digits naming a split's content: its shards' names, counts and sha256 (from the
    manifest, so nothing is read): features or PCA sums made from other shards do not match."""
    info = manifest.split(split)
    h = hashlib.sha256(split.encode())
    for i, name in enumerate(info.shards):
        shard = manifest.shards.get(name)
        count = info.shard_counts[i] if i < len(info.shard_counts) else -1
        h.update(f"|{name}:{count}:{shard.sha256 if shard else ''}".encode())
    return h.hexdigest()[:16]


def file_sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 22):
            h.update(chunk)
    return h.hexdigest()


def verify_shards(data_dir: str | Path, split: str | None = None, progress: Reporter = NullReporter(),
                  workers: int = 4) -> list[str]:
    """Check every shard's size and sha256 against the manifest (a full read, `workers` files
    at a time: hashing releases the GIL); the names of the bad ones, in manifest order."""
    manifest = read_manifest(data_dir)
    names = manifest.split(split).shards if split else [s for sp in manifest.splits.values() for s in sp.shards]

    def damaged(name: str) -> bool:
        path, info = manifest.shard_path(name), manifest.shards.get(name)
        return (not path.is_file() or info is None or path.stat().st_size != info.bytes
                or file_sha256(path) != info.sha256)

    bad = []
    with progress.task("verify", total=len(names), unit="shard") as task, ThreadPoolExecutor(workers) as pool:
        for name, is_bad in zip(names, pool.map(damaged, names)):
            if is_bad:
                bad.append(name)
            task.advance(1)
    return bad


# ---------------------------------------------------------------------------- writing shards

def shard_name(split: str, index: int) -> str:
    return f"{split}-{index:05d}.h5"


class ShardWriter:
    """Builds one shard in memory; `finish()` writes it with `write_atomic` when complete.

    Images arrive in any number of pieces. Raw images are written in whole chunks of
    `block_size` images (the loader's unit of reading), or of `capacity` images when the
    shard will hold fewer (no chunk is larger than the images there are); JPEG files are kept
    as they come and written by `finish` as one contiguous dataset with their offsets. The
    pixel sum is kept exactly.

    HDF5 only ever writes to memory here: a full disk (or any other write error) is then a
    plain OSError from `write_atomic`, with nothing half-written, instead of an HDF5 write
    failure, which leaves the library in a state that crashes the process when it exits. The
    cost is one shard in memory while it is made (`shard_size` x 196 KB for raw shards, tens
    of MB for jpeg shards)."""

    def __init__(self, path: Path, *, split: str, fmt: str, block_size: int, jpeg_quality: int,
                 signature: str, capacity: int | None = None):
        if fmt not in FORMATS:
            raise DataError(f"unknown shard format {fmt!r} (raw or jpeg)")
        check_block_size(block_size)
        if capacity is not None:
            block_size = max(1, min(block_size, capacity))
        self.path, self.fmt, self.block = Path(path), fmt, block_size
        self.buffer = io.BytesIO()
        self.f = h5py.File(self.buffer, "w", libver="earliest", locking=False,
                           rdcc_nbytes=2 * block_size * int(np.prod(IMAGE_SHAPE)))
        self.f.attrs.update({"format_version": LAYOUT_VERSIONS[fmt], "format": fmt, "split": split,
                             "block_size": block_size, "jpeg_quality": jpeg_quality if fmt == "jpeg" else 0,
                             "signature": signature})
        if fmt == "raw":
            self.data = self.f.create_dataset("images", shape=(0, *IMAGE_SHAPE), maxshape=(None, *IMAGE_SHAPE),
                                              dtype=np.uint8, chunks=(block_size, *IMAGE_SHAPE),
                                              track_times=False)
        self.jpegs: list[np.ndarray] = []           # jpeg: every image's bytes, until finish
        self.pending: list[tuple[np.ndarray | list, list[int], list[str]]] = []
        self.labels: list[int] = []
        self.paths: list[str] = []
        self.written = 0
        self.buffered = 0
        self.pixel_sum = np.zeros(IMAGE_SHAPE, np.int64)

    def append(self, items: np.ndarray | list, labels: Sequence[int], paths: Sequence[str],
               pixel_sum: np.ndarray) -> None:
        """`items`: uint8 (n, 256, 256, 3) for raw, a list of n JPEG byte vectors for jpeg."""
        if self.fmt == "jpeg":
            self.jpegs.extend(np.asarray(x, np.uint8).reshape(-1) for x in items)
            self.labels += list(labels)
            self.paths += list(paths)
            self.written += len(labels)
            self.pixel_sum += pixel_sum
            return
        self.pending.append((items, list(labels), list(paths)))
        self.buffered += len(labels)
        self.pixel_sum += pixel_sum
        if self.buffered >= self.block:
            self._flush(final=False)

    def _flush(self, final: bool) -> None:
        n = self.buffered if final else self.buffered - self.buffered % self.block
        if n == 0:
            return
        items = np.concatenate([p[0] for p in self.pending])
        labels = [x for p in self.pending for x in p[1]]
        paths = [x for p in self.pending for x in p[2]]
        self.data.resize(self.written + n, axis=0)
        self.data[self.written:self.written + n] = items[:n]
        self.written += n
        self.labels += labels[:n]
        self.paths += paths[:n]
        rest = len(labels) - n
        self.pending = [(items[n:], labels[n:], paths[n:])] if rest else []
        self.buffered = rest

    def finish(self, skipped: list[dict]) -> Path:
        """Add labels, paths, pixel sum and attributes, then write the file (`write_atomic`:
        a temporary name, fsync, rename)."""
        self._flush(final=True)
        f = self.f
        if self.fmt == "jpeg":   # contiguous (not chunked): the loader reads runs at file offsets
            offsets = np.zeros(len(self.jpegs) + 1, np.int64)
            np.cumsum([len(x) for x in self.jpegs], out=offsets[1:])
            data = np.concatenate(self.jpegs) if self.jpegs else np.zeros(0, np.uint8)
            f.create_dataset("jpeg_data", data=data, track_times=False)
            f.create_dataset("jpeg_offsets", data=offsets, track_times=False)
        f.create_dataset("labels", data=np.asarray(self.labels, np.int16).reshape(-1), track_times=False)
        f.create_dataset("paths", data=np.asarray(self.paths, dtype=object), dtype=h5py.string_dtype("utf-8"),
                         track_times=False)
        # uint32 holds the sum of up to 16 M images; shuffle + gzip shrink it to a few hundred KB
        f.create_dataset("pixel_sum", data=self.pixel_sum.astype(np.uint32), track_times=False,
                         shuffle=True, compression="gzip", compression_opts=4)
        f.attrs["count"] = self.written
        f.attrs["skipped"] = json.dumps(skipped, allow_nan=False)
        f.close()
        write_atomic(self.path, self.buffer.getbuffer())
        self.buffer = io.BytesIO()
        return self.path

    def abort(self) -> None:
        """Drop the shard (nothing of it is on disk)."""
        self.f.close()
        self.buffer = io.BytesIO()
