"""The 4096-d fc7 feature of every image of a split, in one HDF5 file (paper section 7.1,
figure 4 right: neighbours in the space of the last hidden layer).

A feature is fc7 after its ReLU (`AlexNet.embed`) of the centre 224x224 crop of
(image - mean image), computed in float32 and stored as float16: 8 KiB per image, about
10 GB for the 1.28 M ImageNet training images.

File format ("alexnet-cli/features", version 1):
    features     float16 (N, 4096), chunked by CHUNK_ROWS rows; row i = image i of the split
                 in its global order (the order of read_split_index and of an unshuffled loader)
    paths        utf-8 strings (N,), relative to the source root, as in the shards
    labels       int64 (N,)
    classes, class_names   utf-8 strings, the data's (label = position in classes)
  attributes: format, version, split, count, dim, done (rows 0..done are written), key (a hash
  of everything a feature depends on: the weights, the resolved network config, the mean image
  and the mean_crop mode), network (that config as JSON, to name what differs), data_key (the
  split's shards), checkpoint (its path, for information only), layer "fc7", crop "center".
  Version 1 files (keys without the network config: LRN on and off got the same key) are
  stale: the cache recomputes them, and `--features` refuses them.

Writing is resumable and atomic: rows go into FILE.partial (alexnet_cli.atomic.partial_path);
after each batch the rows are flushed, then `done`; a killed run resumes from `done`; at the
end FILE.partial is renamed to FILE (atomic.publish), so a file at FILE is always complete.

Disk space: the partial file's rows are allocated in full when it is created (HDF5 early
allocation, then posix_fallocate), so a disk too small fails at once with one error that
says how much is needed, before any image is computed, and a disk that fills up later
cannot fail a row's write half-way (HDF5 on ENOSPC leaves its file handles broken: the old
code crashed with a segfault at exit). A rerun after freeing space resumes from `done`. So
for a file larger than the process or its file system allows (`ulimit -f`, FAT32's 4 GiB:
EFBIG, atomic.check_file_size), compared before HDF5 writes. Should HDF5 meet either all the
same (a limit lowered while it runs, a file system without posix_fallocate), `_writing`
closes the file with its pending writes discarded, rather than leave it to crash at exit.
"""

from __future__ import annotations

import dataclasses
import errno
import hashlib
import json
import os
import shutil
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator, Sequence, TypeVar

import h5py
import numpy as np
import torch

from alexnet_cli.atomic import check_file_size, no_room, partial_path, publish, room_advice
from alexnet_cli.augment import center_crop
from alexnet_cli.checkpoint import LoadedModel, load_model
from alexnet_cli.errors import CheckpointError, DataError, UsageError
from alexnet_cli.figures import check_picture_path
from alexnet_cli.images import path_kind
from alexnet_cli.devices import resolve_device
from alexnet_cli.loader import Batch, ShardLoader, trained_decode
from alexnet_cli.progress import NullReporter, Reporter
from alexnet_cli.locks import CommandLock
from alexnet_cli.shards import Manifest, data_key, read_manifest, read_split_index
from alexnet_cli.stopping import StopsAtOnce, stop_if_signalled

T = TypeVar("T")

FORMAT = "alexnet-cli/features"
VERSION = 2         # 2: the key covers the resolved network config (1: weights and mean image only)
DIM = 4096          # fc7's width (paper section 4)
CHUNK_ROWS = 256    # HDF5 chunk: 256 rows x 4096 x float16 = 2 MiB, read sequentially by neighbors
_STR = h5py.string_dtype("utf-8")


@dataclass(frozen=True)
class FeaturesInfo:
    """What a features file holds, from its attributes."""

    path: Path
    split: str
    count: int
    dim: int
    done: int
    key: str             # the network's model_key
    data_key: str        # the split's data_key: which shards the rows come from
    version: int = VERSION
    network: str = ""    # the resolved ModelConfig as JSON ("" in version 1 files)
    reused: bool = field(default=False, compare=False)   # write_features kept the complete file it found (the
                                                          # text output says so; the JSON, a file's, does not)

    @property
    def complete(self) -> bool:
        return self.done == self.count

    def to_json(self) -> dict[str, Any]:
        """The document `alexnet features --json` prints (docs/public-surface.md)."""
        return {"out": str(self.path), "split": self.split, "count": self.count, "dim": self.dim,
                "dtype": "float16", "key": self.key}

    def made_by(self, key: str, split: str, count: int, data: str) -> bool:
        """Whether these are the features of `split` (`count` images, shards `data`) by network `key`."""
        return (self.version == VERSION and (self.key, self.split, self.count, self.data_key) ==
                (key, split, count, data))

    def other_data(self, split: str, count: int, data: str, name: str = "this data") -> str:
        """Why these are not the features of `split` (`count` images, shards `data`, of the data
        folder called `name`), "" if they are: the split, or the images it holds, as they differ."""
        if self.split != split:
            return f"of split '{self.split}', not '{split}'"
        if self.count != count:
            return f"of {self.count} images of '{split}', not of {name}'s {count}"
        if self.data_key != data:     # as many images, from other shards
            return (f"of other images of '{split}' than {name}'s (of other data of the same size, or of {name} "
                    "before it was prepared again)")
        return "" if self.complete else f"incomplete: {self.done} of {self.count} images"

    def other_network(self, encoder: "Encoder") -> str:
        """Why these features are not `encoder`'s ("" if they are): the settings that differ."""
        if self.version < 2:
            return (f"made by alexnet's features format {self.version}, whose key ignores the network settings "
                    "(LRN on and off got the same key)")
        if self.key == encoder.key:
            return ""
        try:
            mine, theirs = json.loads(encoder.network), json.loads(self.network)
            diff = [f"{k}={theirs.get(k)!r} (this network: {mine.get(k)!r})" for k in sorted(set(mine) | set(theirs))
                    if mine.get(k) != theirs.get(k)]
        except (ValueError, AttributeError):
            diff = []
        what = f"network settings {', '.join(diff)}" if diff else "other weights or mean image"
        return f"made by another network (key {self.key}, {what}; this one has key {encoder.key})"


@dataclass
class Encoder:
    """A network with the preprocessing it was trained with: uint8 images -> fc7 features."""

    model: torch.nn.Module
    mean_image: torch.Tensor    # float32 (256, 256, 3) on `device`
    mean_crop: str              # "crop" (paper), "center" (the released code) or "channel" (per-channel mean)
    key: str                    # model_key(...): names the features this encoder makes
    device: torch.device
    checkpoint: str = ""
    network: str = ""           # the resolved ModelConfig as JSON (network_json)
    decode: str = "auto"        # the --decode its run trained with (loader.trained_decode)

    @torch.no_grad()
    def __call__(self, images: torch.Tensor) -> torch.Tensor:
        """uint8 (B, 256, 256, 3) on `device` -> float32 (B, 4096), fc7 after its ReLU."""
        x = center_crop(images, self.mean_image, mean_crop=self.mean_crop)   # (B, 3, 224, 224)
        return self.model.embed(x).float()                                   # (B, 4096)


def network_json(model: torch.nn.Module) -> str:
    """The network's resolved settings (every ModelConfig field, sorted) as one JSON line;
    "" for a module without a config."""
    config = getattr(model, "config", None)
    if config is None or not dataclasses.is_dataclass(config):
        return ""
    return json.dumps(dataclasses.asdict(config), sort_keys=True)


def model_key(model: torch.nn.Module, mean_image: torch.Tensor, mean_crop: str) -> str:
    """16 hex digits of a sha256 over everything a feature depends on: the resolved network
    config (every field: LRN, pooling, conv1's order, ... change the features of the same
    weights, and a field that only acts in training costs a recomputation at worst), the
    weights (in name order), the mean image and the mean_crop mode. Equal keys =
    interchangeable features."""
    h = hashlib.sha256(f"{FORMAT}/{VERSION}/fc7/center/{mean_crop}".encode())
    h.update(network_json(model).encode())
    for name, tensor in sorted(model.state_dict().items()):
        h.update(name.encode())
        h.update(tensor.detach().to("cpu", torch.float32).contiguous().numpy())
    h.update(mean_image.detach().to("cpu", torch.float32).contiguous().numpy())
    return h.hexdigest()[:16]


def load_encoder(checkpoint: str | Path, data_dir: str | Path, device: str | torch.device | None = None,
                 progress: Reporter = NullReporter()) -> Encoder:
    """The checkpoint's network on `device`; a bare state_dict borrows the data's mean image."""
    dev = resolve_device(device)
    loaded: LoadedModel = load_model(checkpoint, dev)
    mean = loaded.mean_or_data(data_dir)                                   # (256, 256, 3)
    if loaded.model.fc7.out_features != DIM:
        raise CheckpointError(f"{checkpoint}: fc7 has {loaded.model.fc7.out_features} units, expected {DIM}")
    loaded.tell_assumptions(progress)
    key = model_key(loaded.model, mean, loaded.mean_crop)
    return Encoder(loaded.model, mean.to(dev, torch.float32), loaded.mean_crop, key, dev, str(checkpoint),
                   network_json(loaded.model), trained_decode(loaded.config))


FEATURES_SUFFIXES = (".h5", ".hdf5")     # an HDF5 file: a features file named .npy would mislead


def check_features_path(path: str | Path) -> Path:
    """`path` as a Path when its suffix names an HDF5 file (.h5, .hdf5); else a UsageError about
    `out`, as figures.check_picture_path says of a picture's, before any work."""
    return check_picture_path(path, FEATURES_SUFFIXES)


def cache_path(data_dir: str | Path, split: str, key: str) -> Path:
    """Where `neighbors` caches a split's features: beside the shards, named by the model key."""
    return Path(data_dir) / f"features-{split}-{key}.h5"


# ---------------------------------------------------------------------------- the file format

def create_features_file(path: str | Path, *, paths: Sequence[str], labels: np.ndarray, classes: Sequence[str],
                         class_names: Sequence[str], split: str, key: str, data: str = "", dim: int = DIM,
                         checkpoint: str = "", network: str = "") -> None:
    """An empty features file (done = 0) for len(paths) images, its rows' disk space reserved
    (reserve_space); rows are written later. A disk too small, or a file larger than the
    process or the file system allows (atomic.check_file_size: HDF5 must never meet EFBIG),
    is a DataError, and no file."""
    path, n = Path(path), len(paths)
    size = file_bytes(n, dim, paths)
    need_space(path, size)
    dcpl = h5py.h5p.create(h5py.h5p.DATASET_CREATE)
    dcpl.set_alloc_time(h5py.h5d.ALLOC_TIME_EARLY)           # the rows' place in the file now, not per write
    try:
        check_file_size(path, size)
        with _writing(path, "w") as f:
            made = [         # kept open until _writing's flush: one written as it closes fails unseen (h5py)
                f.create_dataset("features", shape=(n, dim), dtype=np.float16, dcpl=dcpl, fill_time="never",
                                 chunks=(max(1, min(n, CHUNK_ROWS)), dim) if n else None, track_times=False),
                f.create_dataset("paths", data=np.asarray(list(paths), dtype=object), dtype=_STR, track_times=False),
                f.create_dataset("labels", data=np.asarray(labels, np.int64).reshape(n), track_times=False),
                f.create_dataset("classes", data=np.asarray(list(classes), dtype=object), dtype=_STR),
                f.create_dataset("class_names", data=np.asarray(list(class_names), dtype=object), dtype=_STR)]
            f.attrs.update({"format": FORMAT, "version": VERSION, "split": split, "count": n, "dim": dim,
                            "done": 0, "key": key, "data_key": data, "network": network, "checkpoint": checkpoint,
                            "layer": "fc7", "crop": "center"})
        del made
        reserve_space(path)
    except BaseException as exc:
        path.unlink(missing_ok=True)
        room = no_room(exc)
        if room is not None:
            reason, remedy = room_advice(path, room)
            raise DataError(f"{path}: {reason}: {remedy} and run the command again") from None
        raise


@contextmanager
def _writing(path: Path, mode: str) -> Iterator[h5py.File]:
    """h5py.File(path, mode), closed even when HDF5 cannot write it (a full disk, a file-size
    limit met despite the checks: a limit lowered while it runs, a file system without
    posix_fallocate). HDF5 keeps the handles of a file it could not flush, and then crashes the
    interpreter at exit (a segfault after pages of tracebacks); so once a write failed for want
    of room, the file's pending writes are sent to /dev/null, where none fails, before it is
    closed, and the file keeps what was flushed before (the rows up to `done`, which a rerun
    resumes from). The flush that ends the body is the last write that can fail."""
    f = h5py.File(path, mode)
    try:
        yield f
        f.flush()
    except BaseException as exc:
        if no_room(exc) is not None:
            _discard_writes(f)
        f.close()
        raise
    f.close()


def _discard_writes(f: h5py.File) -> None:
    """Every later write of `f` goes to /dev/null (_writing); only the sec2 driver's file
    descriptor (h5py's default) can be redirected, and only before a close has failed: HDF5's
    state after a failed close is past saving."""
    if f.driver != "sec2":
        return
    null = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(null, f.id.get_vfd_handle())
    finally:
        os.close(null)


def file_bytes(n: int, dim: int, paths: Sequence[str]) -> int:
    """An upper bound on the size of a features file of `n` rows: the rows, then per image its
    path, label and the path's place in HDF5's heap (about 44 bytes), and 1 MiB for the rest."""
    return n * (dim * 2 + 64) + sum(len(p.encode()) for p in paths) + (1 << 20)


def need_space(path: Path, nbytes: int) -> None:
    """DataError, before any work, if the folder of `path` has less than `nbytes` free."""
    try:
        free = shutil.disk_usage(path.parent).free
    except OSError:                          # no such folder yet, or no statvfs: reserve_space decides
        return
    if free < nbytes:
        raise DataError(f"{path}: the disk is full: the features need {nbytes / 2**20:,.1f} MiB, "
                        f"{free / 2**20:,.1f} MiB are free: free some space (or write them elsewhere) and run "
                        "the command again")


def reserve_space(path: str | Path) -> None:
    """Make the file's blocks real (posix_fallocate over its whole length): HDF5's early
    allocation only sets its length, a sparse file on most file systems, and a row written
    into a hole on a full disk fails inside HDF5, which leaves the file's handles broken. An
    already reserved file costs nothing. OSError(ENOSPC) when the disk cannot hold it."""
    fd = os.open(path, os.O_RDWR)
    try:
        size = os.fstat(fd).st_size
        if size:
            try:
                os.posix_fallocate(fd, 0, size)
            except OSError as exc:
                if exc.errno not in (errno.EOPNOTSUPP, errno.EINVAL, errno.ENOSYS):
                    raise
    finally:
        os.close(fd)


def read_checked(path: str | Path, *, kind: str, fmt: str, dataset: str, version: int, command: str,
                 read: Callable[[h5py.File], T]) -> T:
    """`read(f)` of an HDF5 file that this package writes: `kind` names it in errors ("features",
    "codes"), `fmt` and `version` are its format attributes, `dataset` the array it must hold,
    `command` the one that writes it. Every problem is one DataError naming the file."""
    path = Path(path)
    if not path.is_file():            # a FIFO or a device is a wrong kind of path (exit 2), not a missing file
        try:
            mode = path.stat().st_mode
        except OSError:
            raise DataError(f"{path}: no such {kind} file") from None
        raise UsageError(f"{path} is {path_kind(mode)}, not a {kind} file")
    try:
        with h5py.File(path, "r", locking=False) as f:
            if f.attrs.get("format") != fmt or dataset not in f:
                raise DataError(f"{path}: not a {kind} file (write one with `{command}`)")
            if int(f.attrs["version"]) > version:
                raise DataError(f"{path}: {kind} format version {int(f.attrs['version'])} is newer than this "
                                f"alexnet understands ({version})")
            return read(f)
    except OSError as exc:
        raise DataError(f"{path}: not a readable HDF5 file ({str(exc).splitlines()[0]})") from None
    except (KeyError, ValueError) as exc:
        raise DataError(f"{path}: a damaged {kind} file ({exc})") from None


# What to do about a damaged features file, `alexnet features`' or the cache beside the shards
DAMAGED = ("compute it again with `alexnet features` (a cached one beside the shards: delete it to have it "
           "recomputed)")


def read_features_info(path: str | Path) -> FeaturesInfo:
    """The attributes of a features file; DataError if it is not one, or if its datasets do
    not hold `count` rows each (features, paths, labels) and one name per class."""
    def read(f: h5py.File) -> FeaturesInfo:
        a = f.attrs
        info = FeaturesInfo(Path(path), str(a["split"]), int(a["count"]), int(a["dim"]), int(a["done"]), str(a["key"]),
                            str(a.get("data_key", "")), int(a["version"]), str(a.get("network", "")))
        problem = _damage(f, info)
        if problem:
            raise DataError(f"{path}: damaged ({problem}); {DAMAGED}")
        return info
    return read_checked(path, kind="features", fmt=FORMAT, dataset="features", version=VERSION,
                        command="alexnet features", read=read)


def _damage(f: h5py.File, info: FeaturesInfo) -> str:
    """What is wrong with the datasets of a features file ("" if nothing)."""
    missing = [name for name in ("features", "paths", "labels", "classes", "class_names")
               if not isinstance(f.get(name), h5py.Dataset)]
    if missing:
        return f"no {' or '.join(missing)} dataset"
    if f["features"].shape != (info.count, info.dim):
        return f"features have shape {f['features'].shape}, its attributes say ({info.count}, {info.dim})"
    if not 0 <= info.done <= info.count:
        return f"{info.done} rows written of {info.count}"
    for name in ("paths", "labels"):
        if f[name].shape != (info.count,):
            return f"{name} has shape {f[name].shape}, expected ({info.count},)"
    if f["labels"].dtype.kind not in "iu":
        return f"labels are {f['labels'].dtype}, not integers"
    classes, names = f["classes"].shape, f["class_names"].shape
    if len(classes) != 1 or classes != names:
        return f"{classes} classes with {names} class names"
    return ""


def non_finite_row(path: str | Path, row: int) -> DataError:
    """The error for a row of the features file `path` that holds NaN or infinite values."""
    return DataError(f"{path}: damaged (row {row} holds NaN or infinite values); {DAMAGED}")


def read_rows_index(path: str | Path, rows: Sequence[int]) -> tuple[list[str], np.ndarray, list[str], list[str]]:
    """The paths and labels of some rows of a features file (any order), and the file's classes
    (wnids) and class names, which the labels index."""
    rows = np.asarray(rows, np.int64)
    order = np.unique(rows)                           # h5py wants increasing indices
    with h5py.File(path, "r", locking=False) as f:
        paths = f["paths"].asstr()[order] if len(order) else []
        labels = f["labels"][order] if len(order) else np.zeros(0, np.int64)
        classes, names = list(f["classes"].asstr()[:]), list(f["class_names"].asstr()[:])
    where = np.searchsorted(order, rows)
    return [paths[i] for i in where], np.asarray(labels)[where], classes, names


def read_rows(path: str | Path, rows: Sequence[int] | np.ndarray) -> np.ndarray:
    """Some rows of a features file, float32 (len(rows), dim), in the order asked (repeats
    allowed). Random access for re-ranking: an uncompressed chunked dataset (what
    create_features_file makes) is read through a memory map of its chunks, a row costing one
    dim x 2 bytes read; any other layout through h5py."""
    rows = np.asarray(rows, np.int64).ravel()
    with h5py.File(path, "r", locking=False) as f:
        ds = f["features"]
        n, dim = ds.shape
        if len(rows) and (rows.min() < 0 or rows.max() >= n):
            raise DataError(f"{path}: no row {int(rows.max() if rows.max() >= n else rows.min())} ({n} rows)")
        if not len(rows):
            return np.zeros((0, dim), np.float32)
        chunk = ds.chunks
        if (chunk is None or chunk[1] != dim or ds.compression is not None or ds.dtype != np.float16
                or ds.id.get_num_chunks() != -(-n // chunk[0])):
            order, where = np.unique(rows, return_inverse=True)
            return _finite(path, rows, ds[order][where].astype(np.float32))
        by_start = np.empty(ds.id.get_num_chunks(), np.int64)
        for i in range(len(by_start)):
            where = ds.id.get_chunk_info(i)
            by_start[where.chunk_offset[0] // chunk[0]] = where.byte_offset
    mapped = np.memmap(path, dtype=np.uint8, mode="r")
    addr = by_start[rows // chunk[0]] + (rows % chunk[0]) * dim * 2                 # byte offset of each row
    out = np.empty((len(rows), dim), np.float32)
    for i, a in enumerate(addr.tolist()):
        out[i] = mapped[a:a + 2 * dim].view(np.float16)
    return _finite(path, rows, out)


def _finite(path: str | Path, rows: np.ndarray, out: np.ndarray) -> np.ndarray:
    """`out` (the values of `rows`), or a DataError naming the first row that is not finite."""
    bad = ~np.isfinite(out).all(axis=1)
    if bad.any():
        raise non_finite_row(path, int(rows[bad.argmax()]))
    return out


# ---------------------------------------------------------------------------- computing features

def write_features(encoder: Encoder, data_dir: str | Path, split: str, out: str | Path, *, batch_size: int = 128,
                   overwrite: bool = False, workers: int | None = None, decode: str | None = None,
                   progress: Reporter = NullReporter(), command: str | None = None) -> FeaturesInfo:
    """Compute the fc7 features of every image of `split` into `out` (see the module doc).

    A complete `out` made by the same network is kept as it is (unless `overwrite`; the result
    says `reused`); one made
    by another network or of another split is an error unless `overwrite`. An interrupted
    run's FILE.partial is resumed. While it writes, `out` is locked (locks.CommandLock.beside,
    for `command`, the `alexnet` command it works for, if any): a second writer fails at once.
    """
    if batch_size < 1:
        raise UsageError(f"batch_size must be positive, got {batch_size}", field="batch_size", value=batch_size)
    out, manifest = Path(out), read_manifest(data_dir)
    count, data = manifest.asked_split(split).count, data_key(manifest, split)
    want = (encoder.key, split, count, data)              # what a matching file was made from
    kept = None if overwrite else _kept(out, encoder, want)
    if kept is not None:                                  # nothing to write: no lock (the folder may be read-only)
        return dataclasses.replace(kept, reused=True)
    with CommandLock.beside(out, command):
        kept = None if overwrite else _kept(out, encoder, want)    # finished by another writer since
        if kept is not None:
            return dataclasses.replace(kept, reused=True)
        _write(encoder, data_dir, split, out, manifest, want, batch_size=batch_size, overwrite=overwrite,
               workers=workers, decode=decode, progress=progress)
    return read_features_info(out)


def _kept(out: Path, encoder: Encoder, want: tuple[str, str, int, str]) -> FeaturesInfo | None:
    """What `out` holds if it is complete and `want`s (encoder key, split, count, data key);
    None when there is no `out`; a DataError when it holds other features."""
    if not out.exists():
        return None
    info = read_features_info(out)
    if info.made_by(*want) and info.complete:
        return info
    _, split, count, data = want
    why = info.other_network(encoder) or info.other_data(split, count, data) or f"format {info.version}"
    raise DataError(f"{out} holds other features ({why}): pass `overwrite` or another `out`",
                    mentions=("overwrite", "out"))


def _write(encoder: Encoder, data_dir: str | Path, split: str, out: Path, manifest: Manifest,
           want: tuple[str, str, int, str], *, batch_size: int, overwrite: bool, workers: int | None,
           decode: str | None, progress: Reporter) -> None:
    """write_features once `out` is locked: resume or start FILE.partial, fill it, publish it."""
    partial = partial_path(out)
    _, _, count, data = want
    if overwrite:
        partial.unlink(missing_ok=True)
    done = _resume_point(partial, want, progress)
    with StopsAtOnce(lambda: _saved_rows(partial, out)):       # Ctrl-C, SIGTERM: the rows written are kept
        try:
            if done is None:
                paths, labels = read_split_index(data_dir, split)
                out.parent.mkdir(parents=True, exist_ok=True)
                create_features_file(partial, paths=paths, labels=labels, classes=manifest.classes,
                                     class_names=manifest.class_names, split=split, key=encoder.key,
                                     data=data, checkpoint=encoder.checkpoint, network=encoder.network)
                done = 0
            else:
                check_file_size(partial, partial.stat().st_size, probe=False)   # under a lower `ulimit -f` now
                reserve_space(partial)                          # a file of an older alexnet may be sparse
            if done < count:
                loader = ShardLoader(data_dir, split, batch_size, shuffle=False, drop_last=False,
                                     device=encoder.device, workers=workers, decode=decode or encoder.decode)
                _fill(partial, encoder, loader.epoch(0, start_batch=done // batch_size), done, count, progress,
                      f"fc7 features ({split})")
            publish(partial, out)
        except Exception as exc:
            room = no_room(exc)
            if room is not None:
                reason, remedy = room_advice(partial, room)
                raise DataError(f"{partial}: {reason}: {remedy} and run the same command again (it continues "
                                "from the rows already written)") from None
            raise


def _saved_rows(partial: Path, out: Path) -> str:
    """What a stopped `write_features` kept (stopping.StopsAtOnce)."""
    if out.exists() and not partial.exists():
        return f"the features are complete in {out}"
    info = read_features_info(partial) if partial.exists() else None
    if info is None or not info.done:
        return "no features were written yet"
    return f"the features of {info.done:,} of {info.count:,} images are kept in {partial}"


def _resume_point(partial: Path, want: tuple[str, str, int, str], progress: Reporter) -> int | None:
    """Rows already written in an interrupted run's file, or None to start afresh."""
    if not partial.exists():
        return None
    try:
        info = read_features_info(partial)
    except DataError as exc:
        progress.log(f"starting afresh: {exc}")
        partial.unlink()
        return None
    if not info.made_by(*want):
        progress.log(f"starting afresh: {partial} was made by another network or for other data")
        partial.unlink()
        return None
    if info.done:
        progress.log(f"resuming {partial} at image {info.done:,} of {info.count:,}")
    return info.done


def _fill(path: Path, encoder: Encoder, batches: Iterator[Batch], done: int, count: int, progress: Reporter,
          desc: str) -> None:
    """Rows done..count of the file from unshuffled `batches` that start at or before row
    `done`; each batch is flushed before `done` moves past it."""
    with _writing(path, "r+") as f, progress.task(desc, total=count - done, unit="img") as task:
        rows = f["features"]
        try:
            for batch in batches:
                stop_if_signalled()                                   # a signal Python swallowed stops here
                start = int(batch.indices[0])                         # one host sync per batch
                skip = max(0, done - start)                           # resuming inside a batch
                feats = encoder(batch.images[skip:]).to("cpu", torch.float16).numpy()   # (B, 4096)
                stop = start + skip + len(feats)
                bad = ~np.isfinite(feats).all(axis=1)
                if bad.any():                      # a search could never return these rows: refuse them
                    raise CheckpointError(f"{encoder.checkpoint or 'the network'}: the fc7 feature of image "
                                          f"{start + skip + int(bad.argmax())} is NaN or infinite in float16 "
                                          "(values beyond 65504): its features cannot be stored")
                if int(batch.indices[-1]) != stop - 1:
                    raise DataError(f"{path}: the loader's batches are not in the split's order")
                rows[start + skip:stop] = feats
                f.flush()                                             # the rows first, then `done`
                f.attrs["done"] = done = stop
                f.flush()
                task.advance(len(feats))
        finally:
            close = getattr(batches, "close", None)
            if close is not None:
                close()
    if done != count:
        raise DataError(f"{path}: the loader gave {done} of {count} images")


def extract_features(checkpoint: str | Path, data_dir: str | Path, out: str | Path, *, split: str = "train",
                     batch_size: int = 128, device: str | torch.device | None = None, overwrite: bool = False,
                     workers: int | None = None, decode: str | None = None,
                     progress: Reporter = NullReporter()) -> FeaturesInfo:
    """What `alexnet features` does: the fc7 features of every image of `split` into `out` (an
    HDF5 file: .h5 or .hdf5)."""
    check_features_path(out)
    encoder = load_encoder(checkpoint, data_dir, device, progress)
    return write_features(encoder, data_dir, split, out, batch_size=batch_size, overwrite=overwrite,
                          workers=workers, decode=decode, progress=progress, command="features")
