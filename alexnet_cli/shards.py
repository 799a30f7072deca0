"""The prepared data set on disk: `manifest.json`, the HDF5 shards and the mean image
(paper section 3: images rescaled to 256x256, the training mean subtracted later).

This file is the schema, writers and readers alike. `prep` writes through `ShardWriter` and
`write_manifest` (files go through alexnet_cli.atomic; the JPEG codec is alexnet_cli.jpeg);
the loader, `pca`, `eval` and `neighbors` read through `read_manifest`, `open_shard`,
`read_images`, `split_index` (global image number -> shard and row) and the byte layouts
(`raw_chunks`, `jpeg_index`) that `create_raw_images` and `create_jpeg_data` write.

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
  The loader reads both formats without h5py in its hot path: raw chunks (`raw_chunks`) and
  the jpeg bytes of a run of images (`jpeg_index`) are at known file offsets, read with
  positional reads (no lock).
- `mean_image.npy`: float32 (256, 256, 3), the mean of the training images in 0-255 units.
"""

from __future__ import annotations

import hashlib
import io
import json
from concurrent.futures import ThreadPoolExecutor
from dataclasses import MISSING, asdict, dataclass, field, fields
from pathlib import Path
from typing import Any, Callable, Sequence

import h5py
import numpy as np

from alexnet_cli.atomic import write_atomic
from alexnet_cli.errors import DataError, shell_word
from alexnet_cli.images import IMAGE_SHAPE, path_kind
from alexnet_cli.progress import NullReporter, Reporter

FORMAT_VERSION = 2                         # the manifest's: the highest layout version below
LAYOUT_VERSIONS = {"raw": 1, "jpeg": 2}     # each format's shard layout (jpeg v1: one vlen record per image)
FORMATS = ("raw", "jpeg")
MANIFEST = "manifest.json"
MEAN_IMAGE = "mean_image.npy"
IMAGE_BYTES = int(np.prod(IMAGE_SHAPE))     # one raw image: 196,608 bytes
MAX_CLASSES = 32768        # labels are int16: 0..32767
MAX_BLOCK_SIZE = 256       # a block of raw images is 50 MB; the loader holds 2 or more windows of 8 of them
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
            raise DataError(self._no_split(name))
        return self.splits[name]

    def asked_split(self, name: str) -> SplitInfo:
        """The split a user chose by name (the `split` setting): a missing one is an error that
        says which to pass instead and, for val, how to have one."""
        if name in self.splits:
            return self.splits[name]
        have = sorted(self.splits)
        if not have:
            raise DataError(f"{self._no_split(name)}: {_RERUN}")
        advice = f"pass `split` {have[0]}" if len(have) == 1 else "pass one of them as `split`"
        if name == "val":          # eval's default: the data was prepared without validation images
            advice += (" (measured on training images), or prepare the validation images too: `alexnet prep` "
                       "takes them from a val/ folder, or flat with their label file")
        raise DataError(f"{self._no_split(name)}: {advice}", mentions=("split",))

    def _no_split(self, name: str) -> str:
        return f"{self.root}: no split '{name}' in this data (splits: {', '.join(sorted(self.splits)) or 'none'})"

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


def _manifest_missing(path: Path, root: Path) -> str:
    """Why there is no manifest to read at `path`: none there, or something that is not a file
    (a link to a device, a FIFO, a folder), which prep writes over once it is removed."""
    prep = f"`alexnet prep SRC {shell_word(root)}`"
    try:
        mode = path.stat().st_mode
    except OSError:
        return f"{path} not found: run {prep} first"
    return f"{path} is {path_kind(mode)}, not a manifest file: remove it, then run {prep}"


class OlderFormat(DataError):
    """jpeg shards of an older layout: `alexnet prep` converts them in place (bytes copied)."""


def read_manifest(data_dir: str | Path) -> Manifest:
    """The manifest of a prepared data folder, with every value the readers rely on checked;
    DataError if it is missing, unreadable or inconsistent: one line naming the file, what is
    wrong with it, and the command that writes it again."""
    root = Path(data_dir)
    path = root / MANIFEST
    if not path.is_file():
        raise DataError(_manifest_missing(path, root))
    rerun = f"run `alexnet prep SRC {shell_word(root)}` again to write it anew from the shards"

    def corrupt(what: str) -> DataError:
        return DataError(f"{path} is corrupt ({what}): {rerun}")

    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except RecursionError:        # json gives up on deeply nested input
        raise corrupt("nested too deeply to be a manifest") from None
    except UnicodeDecodeError:
        raise corrupt("not UTF-8 text") from None
    except ValueError as exc:     # truncated or not JSON at all
        raise corrupt(f"not valid JSON: {exc}" if path.stat().st_size else "empty") from None
    if not isinstance(data, dict):
        raise corrupt(f"{_json_kind(data)}, not an object of fields")
    missing = [k for k in _MANIFEST_FIELDS if k not in data]
    if missing:
        raise corrupt(f"missing field{'s' if len(missing) > 1 else ''} {', '.join(repr(k) for k in missing)}")
    try:
        version = int(data.get("format_version", 0))
    except (ValueError, TypeError):
        raise corrupt(f"'format_version' is {_json_kind(data['format_version'])}, not a whole number") from None
    if version > FORMAT_VERSION:
        raise NewerFormat(f"{path}: format version {version} is newer than this alexnet "
                          f"understands ({FORMAT_VERSION}); upgrade alexnet-cli")
    if data.get("format") == "jpeg" and version < LAYOUT_VERSIONS["jpeg"]:
        raise OlderFormat(f"{root} holds jpeg shards of format version {version}, which this alexnet no longer "
                          f"reads: run `alexnet prep SRC {shell_word(root)}` (the same SRC and options) to "
                          "convert them in place (the JPEG bytes are copied, not decoded again)")
    splits = _records(data, "splits", SplitInfo, corrupt)
    shards = _records(data, "shards", ShardInfo, corrupt)
    try:
        manifest = Manifest(
            root=root, classes=list(data["classes"]), class_names=list(data["class_names"]),
            splits=splits, mean_rgb=[float(v) for v in data["mean_rgb"]],
            mean_image=str(data["mean_image"]), format=str(data["format"]),
            skipped=list(data.get("skipped", [])), shards=shards,
            block_size=int(data.get("block_size", 32)), source=str(data.get("source", "")),
            layout=str(data.get("layout", "")), options=dict(data.get("options", {})),
            format_version=version)
    except (ValueError, KeyError, TypeError, AttributeError) as exc:
        raise corrupt(f"a field has the wrong type: {exc}") from None
    problem = _manifest_problem(manifest)
    if problem:
        raise corrupt(problem)
    return manifest


# The fields every reader needs (format_version, shards, block_size, ...: defaults for older data).
_MANIFEST_FIELDS = ("classes", "class_names", "splits", "mean_rgb", "mean_image", "format")


def _records(data: dict[str, Any], key: str, record: type, corrupt: Callable[[str], DataError]) -> dict[str, Any]:
    """The manifest's `key` (an object of objects, by name: the splits, the shards) as `record`s."""
    value = data.get(key, {})
    if not isinstance(value, dict):
        raise corrupt(f"'{key}' is {_json_kind(value)}, not an object")
    try:
        return {name: record(**entry) for name, entry in value.items()}
    except TypeError:              # not an object, or other fields than a record's
        needed = ", ".join(f.name for f in fields(record) if f.default is MISSING and f.default_factory is MISSING)
        raise corrupt(f"each entry of '{key}' must be an object with the fields {needed}") from None


def _json_kind(value: Any) -> str:
    """What a JSON value is, in JSON's words: `a list`, `a string`, `null`, ..."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true or false"
    kinds = {dict: "an object", list: "a list", str: "a string", int: "a number", float: "a number"}
    return next((k for t, k in kinds.items() if isinstance(value, t)), type(value).__name__)


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


def read_mean_image(data_dir: str | Path) -> np.ndarray:
    """The training mean image: float32 (256, 256, 3) in 0-255 units."""
    manifest = read_manifest(data_dir)
    path = manifest.root / manifest.mean_image
    if not path.is_file():   # missing, or not a regular file (np.load would block on a FIFO)
        raise DataError(f"{path}: the mean image is missing: {_RERUN}")
    try:
        mean = np.load(path, allow_pickle=False)
    except EOFError:                         # an empty file
        raise DataError(f"{path}: cannot read the mean image (the file is empty): {_RERUN}") from None
    except (OSError, ValueError) as exc:
        raise DataError(f"{path}: cannot read the mean image ({exc}): {_RERUN}") from None
    if not isinstance(mean, np.ndarray) or mean.shape != IMAGE_SHAPE:
        raise DataError(f"{path}: mean image has shape {getattr(mean, 'shape', None)}, expected {IMAGE_SHAPE}: "
                        f"{_RERUN}")
    if mean.dtype.kind not in "fiu":
        raise DataError(f"{path}: the mean image holds {mean.dtype} values, not numbers: {_RERUN}")
    if not (np.isfinite(mean).all() and mean.min() >= 0 and mean.max() <= 255):
        raise DataError(f"{path}: the mean image is not an image of finite numbers in 0..255: {_RERUN}")
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


# ---------------------------------------------------------------------------- the split index

@dataclass(frozen=True)
class SplitIndex:
    """Where each image of a split is. Image i of the split (its global order: shard after
    shard, the order of `read_split_index` and of an unshuffled loader) is row
    i - starts[k] of shard k, the shard with starts[k] <= i < starts[k + 1]."""

    shards: list[str]          # the split's shard file names, in order
    starts: np.ndarray         # int64 (S + 1,): the global number of each shard's first image; [-1] = count

    @classmethod
    def from_counts(cls, shards: Sequence[str], counts: Sequence[int]) -> "SplitIndex":
        return cls(list(shards), np.cumsum([0, *counts], dtype=np.int64))

    @property
    def count(self) -> int:
        return int(self.starts[-1])

    def rows_by_shard(self, indices: Sequence[int] | np.ndarray) -> list[np.ndarray]:
        """For each shard, the rows (sorted, each once) of the global image numbers `indices`
        that lie in it; numbers outside 0..count - 1 lie in none."""
        wanted = np.unique(np.asarray(indices, np.int64))
        return [wanted[(wanted >= a) & (wanted < b)] - a for a, b in zip(self.starts[:-1], self.starts[1:])]


def split_index(manifest: Manifest, split: str) -> SplitIndex:
    """The index of `split`: from the manifest's per-shard counts or, in a manifest written
    before they were recorded, from the shards themselves (their labels)."""
    info = manifest.split(split)
    counts = list(info.shard_counts)
    if len(counts) != len(info.shards):                      # older manifests: ask the shards
        counts = []
        for name in info.shards:
            with open_shard(manifest, name) as f:
                counts.append(len(read_labels(f)))
    return SplitIndex.from_counts(info.shards, counts)


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
    from alexnet_cli.jpeg import decode_jpeg     # imports torch: not when the package is imported (docs/performance.md)
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


# ---------------------------------------------------------------------------- byte layouts

def create_raw_images(f: h5py.File, block_size: int) -> h5py.Dataset:
    """The `images` dataset of a raw shard, empty and grown as images come: uint8
    (N, 256, 256, 3) in unfiltered chunks of `block_size` whole images, so that every image
    is IMAGE_BYTES bytes at a known offset in the file (`raw_chunks`)."""
    return f.create_dataset("images", shape=(0, *IMAGE_SHAPE), maxshape=(None, *IMAGE_SHAPE), dtype=np.uint8,
                            chunks=(block_size, *IMAGE_SHAPE), track_times=False)


@dataclass(frozen=True)
class RawChunks:
    """Where a raw shard's images are in its file (the layout `create_raw_images` makes)."""

    rows: int                  # images per chunk
    offsets: list[int]         # file offset of each chunk, in image order

    def run(self, i: int, stop: int) -> tuple[int, int]:
        """(file offset of image i, how many of images i..stop lie there one after another:
        up to the end of its chunk)."""
        c, within = divmod(i, self.rows)
        return self.offsets[c] + within * IMAGE_BYTES, min(stop, (c + 1) * self.rows) - i


def raw_chunks(f: h5py.File) -> RawChunks | None:
    """Where an open raw shard's images are, for positional reads; None if they are filtered
    (compressed, shuffled, ...: prep never writes such shards; then h5py reads them)."""
    d = f["images"]
    if d.chunks is None or d.compression or d.fletcher32 or d.shuffle or d.scaleoffset:
        return None
    try:
        infos = [d.id.get_chunk_info(i) for i in range(d.id.get_num_chunks())]
    except (AttributeError, OSError, RuntimeError):
        return None
    by_row = {info.chunk_offset[0]: info.byte_offset for info in infos if info.filter_mask == 0}
    rows = range(0, d.shape[0], d.chunks[0])
    if any(r not in by_row for r in rows):
        return None
    return RawChunks(d.chunks[0], [by_row[r] for r in rows])


def create_jpeg_data(f: h5py.File, jpegs: Sequence[np.ndarray]) -> None:
    """The `jpeg_data` and `jpeg_offsets` datasets of a jpeg shard: the JPEG files one after
    another, contiguous (not chunked), so that the loader reads a run of them at a file offset
    (`jpeg_index`)."""
    offsets = np.zeros(len(jpegs) + 1, np.int64)
    np.cumsum([len(x) for x in jpegs], out=offsets[1:])
    data = np.concatenate(jpegs) if jpegs else np.zeros(0, np.uint8)
    f.create_dataset("jpeg_data", data=data, track_times=False)
    f.create_dataset("jpeg_offsets", data=offsets, track_times=False)


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


# ---------------------------------------------------------------------------- keys and checksums

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
            self.data = create_raw_images(self.f, block_size)
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
        if self.fmt == "jpeg":
            create_jpeg_data(f, self.jpegs)
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
