"""`alexnet prep`: an ImageNet tree of JPEGs -> HDF5 shards of 256x256 RGB images, the
training mean image and manifest.json (paper section 3; the schema is in shards.py).

Every image: any mode to RGB, shorter side to 256, the central 256x256 patch
(alexnet_cli.images.load_image). Files that cannot be decoded are listed in the manifest's
`skipped` with the reason; every source file ends up in a shard or there.

Restartable: which image goes into which shard is a pure function of the file list and the
options (`plan`), each shard is written under a temporary name and renamed when complete,
and stores its exact pixel sum, so a run killed at any moment and started again reuses the
finished shards and ends with the same shards, mean and manifest as a clean run. The
manifest is written last, atomically; a rerun on finished output does nothing.

The training split is stored in a fixed pseudo-random order (by a hash of each path), so
every block of a shard already mixes classes; the loader shuffles blocks on top of that.
"""

from __future__ import annotations

import errno
import hashlib
import json
import multiprocessing
import os
import re
import signal
import time
import queue
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import h5py
import numpy as np

from alexnet_cli.atomic import remove_abandoned, room_advice, write_atomic
from alexnet_cli.errors import AlexnetError, DataError, UsageError
from alexnet_cli.images import SIZE, UnreadableImage, load_image
from alexnet_cli.jpeg import decode_jpeg, encode_jpeg
from alexnet_cli.layouts import LabelFiles, Layout, find_layout, image_folders
from alexnet_cli.progress import NullReporter, Reporter
from alexnet_cli.locks import CommandLock, missing_ancestor
from alexnet_cli.machine import usable_cores
from alexnet_cli.shards import (LAYOUT_VERSIONS, MAX_BLOCK_SIZE, MAX_CLASSES, MAX_SHARD_SIZE, NewerFormat, OlderFormat,
                                FORMATS, IMAGE_SHAPE, MANIFEST, MEAN_IMAGE, Manifest, ShardInfo, ShardWriter,
                                SplitInfo, file_sha256, read_manifest, read_mean_image, shard_name, write_manifest)
from alexnet_cli.stopping import StopsAtOnce, stop_if_signalled

TASK_IMAGES = 16   # images decoded between two progress reports


@dataclass
class PrepOptions:
    format: str = "raw"                   # "raw": uint8 pixels, fastest to read; "jpeg": ~10x smaller
    jpeg_quality: int = 90
    shard_size: int = 1024                # images per shard file (~200 MB raw)
    block_size: int = 32                  # images per HDF5 chunk = the loader's unit of reading
    limit_per_class: int | None = None    # the first N files (sorted) of each class, for subsets
    splits: list[str] | None = None       # None: every split found
    workers: int | None = None            # None: one per core this process may use
    labels: LabelFiles = field(default_factory=LabelFiles)

    def check(self) -> None:
        if self.splits is not None and not self.splits:      # `--splits ""`: not "all", which is leaving it out
            raise UsageError("splits must name at least one split (train, val); leave it out for all found",
                             field="splits", value=self.splits)
        if self.format not in FORMATS:
            raise UsageError(f"format must be raw or jpeg, got {self.format!r}", field="format", value=self.format)
        # a shard is built in memory (shards.ShardWriter); the loader holds 2 or more windows of
        # 8 blocks (enough for 2 parts of 32 images per worker thread)
        for name, top in (("jpeg_quality", 100), ("shard_size", MAX_SHARD_SIZE), ("block_size", MAX_BLOCK_SIZE)):
            value = getattr(self, name)
            if not 1 <= value <= top:
                raise UsageError(f"{name} must be in 1..{top}, got {value}", field=name, value=value)
        for name in ("limit_per_class", "workers"):      # None: every file, every usable core
            value = getattr(self, name)
            if value is not None and value < 1:
                raise UsageError(f"{name} must be positive, got {value}", field=name, value=value)


@dataclass
class ShardPlan:
    split: str
    name: str
    entries: list[tuple[str, int]]        # (path relative to SRC, label)
    signature: str                        # options + file list: a finished shard is reused only if equal


@dataclass
class PrepResult:
    manifest: Manifest
    up_to_date: bool                      # the output was already complete: nothing was done
    shards_written: int
    shards_reused: int
    images: int                           # images in the shards
    seconds: float
    workers: int
    images_written: int = 0               # images in the shards this run wrote (not reused)

    @property
    def images_per_second(self) -> float:
        """Source images processed per second by this run (0 when nothing was done)."""
        return self.images_written / self.seconds if self.seconds > 0 else 0.0

    def to_json(self) -> dict[str, Any]:
        """The document `alexnet prep --json` prints (docs/public-surface.md); "out" is the data
        folder as given to `prepare`."""
        m = self.manifest
        return {"out": str(m.root), "up_to_date": self.up_to_date, "format": m.format, "layout": m.layout,
                "classes": len(m.classes),
                "splits": {k: {"count": v.count, "shards": len(v.shards)} for k, v in m.splits.items()},
                "skipped": len(m.skipped), "shards_written": self.shards_written, "shards_reused": self.shards_reused,
                "seconds": round(self.seconds, 3), "images_per_second": round(self.images_per_second, 1),
                "workers": self.workers, "mean_rgb": m.mean_rgb}


# ---------------------------------------------------------------------------- planning

def plan(layout: Layout, options: PrepOptions) -> list[ShardPlan]:
    """Which image goes into which shard: a pure function of the file list and the options."""
    index = {w: i for i, w in enumerate(layout.classes)}
    shards = []
    for split, entries in layout.splits.items():
        if options.limit_per_class is not None:
            entries = _limit_per_class(entries, options.limit_per_class)
        entries = [(p, index[w]) for p, w in entries]
        if split == "train":  # a fixed pseudo-random order, so that every block mixes classes
            entries.sort(key=lambda e: hashlib.sha1(e[0].encode("utf-8")).hexdigest())
        for i in range(0, len(entries), options.shard_size):
            part = entries[i:i + options.shard_size]
            shards.append(ShardPlan(split, shard_name(split, i // options.shard_size), part,
                                    _signature(split, part, options)))
    return shards


def _limit_per_class(entries: list[tuple[str, str]], n: int) -> list[tuple[str, str]]:
    seen: dict[str, int] = {}
    out = []
    for p, w in entries:  # sorted by path
        if seen.get(w, 0) < n:
            seen[w] = seen.get(w, 0) + 1
            out.append((p, w))
    return out


def _signature(split: str, entries: list[tuple[str, int]], options: PrepOptions) -> str:
    files = hashlib.sha256("\n".join(f"{p}\t{y}" for p, y in entries).encode("utf-8")).hexdigest()
    return json.dumps({"format_version": LAYOUT_VERSIONS[options.format], "format": options.format, "image_size": SIZE,
                       "jpeg_quality": options.jpeg_quality if options.format == "jpeg" else 0,
                       "block_size": options.block_size, "split": split, "files": files}, sort_keys=True)


def _options_json(options: PrepOptions) -> dict:
    """The options a manifest records (the number of workers changes nothing written)."""
    recorded = {k: v for k, v in asdict(options).items() if k not in ("labels", "workers")}
    recorded["labels"] = {k: str(v) for k, v in asdict(options.labels).items() if v is not None}
    return recorded


def _plan_digest(shards: list[ShardPlan], layout: Layout) -> str:
    h = hashlib.sha256()
    for s in shards:
        h.update(f"{s.name}\n{s.signature}\n".encode("utf-8"))
    h.update(json.dumps([layout.classes, layout.class_names, layout.unlabeled], sort_keys=True).encode("utf-8"))
    return h.hexdigest()


# ---------------------------------------------------------------------------- the run

def prepare(src: str | Path, out: str | Path, options: PrepOptions | None = None,
            progress: Reporter = NullReporter(), *, verify: bool = False) -> PrepResult:
    """Prepare the ImageNet copy at `src` into the data folder `out` (see the module doc).
    `verify`: check every finished shard's sha256 against the manifest and make the damaged
    ones again (a full read of `out`). `out` is locked while it runs (OUT/.lock, removed at
    the end): a second `prepare` of it fails at once instead of interleaving its shards, mean
    image and manifest with this one's."""
    options = options or PrepOptions()
    options.check()
    if options.block_size > options.shard_size:  # a chunk larger than a shard would only waste space
        options = replace(options, block_size=options.shard_size)
    t0 = time.perf_counter()
    src, out = Path(src), Path(out)
    check_out_outside_images(src, out)
    check_data_dir(out)                   # before the lock: a folder of other files is left untouched
    made = missing_ancestor(out)         # what the lock's mkdir makes; removed again if nothing is written
    lock = CommandLock(out, command="prep", transient=True)    # not taken on a read-only OUT, which --verify only reads
    lock.acquire()
    try:
        return _prepare(src, out, options, progress, verify, t0)
    finally:                              # a run that failed before writing anything leaves no new folder
        lock.release(remove_folders_up_to=made)


def _prepare(src: Path, out: Path, options: PrepOptions, progress: Reporter, verify: bool, t0: float) -> PrepResult:
    """`prepare` once `out` is locked."""
    layout = find_layout(src, options.splits, options.labels)
    for unused in layout.unused:
        progress.log(f"Note: {unused}", mentions=(unused.setting,))
    if len(layout.classes) > MAX_CLASSES:   # labels are stored as int16
        raise DataError(f"{src}: {len(layout.classes):,} classes found, at most {MAX_CLASSES:,} can be stored "
                        "(is SRC the right folder?)")
    shards = plan(layout, options)
    digest = _plan_digest(shards, layout)
    workers = options.workers or usable_cores()
    done, hashes = _existing_output(out, digest, verify, progress, layout, options)
    if done is not None:                  # complete: every shard is kept as it is (reused)
        return PrepResult(done, True, 0, len(shards), sum(s.count for s in done.splits.values()),
                          time.perf_counter() - t0, workers)
    with StopsAtOnce(lambda: _saved_shards(out, shards)):      # Ctrl-C, SIGTERM: the finished shards are kept
        try:
            out.mkdir(parents=True, exist_ok=True)
            _remove_leftovers(out, shards)
            finished, written = _build_shards(src, out, shards, options, workers, progress, hashes)
            if verify and hashes and not written:
                progress.log(f"every shard in {out} matches the sha256 in its manifest")
                intact, _ = _existing_output(out, digest, False, progress, layout, options)
                if intact is not None:   # nothing to repair: leave the folder as it is (it may be read-only)
                    return PrepResult(intact, True, 0, len(shards), sum(s.count for s in intact.splits.values()),
                                      time.perf_counter() - t0, workers)
            manifest = _write_outputs(src, out, layout, shards, finished, options, digest)
            _remove_leftovers(out, shards)   # again: workers of a killed run may have outlived its start
        except OSError as exc:
            if exc.errno in (errno.ENOSPC, errno.EDQUOT):
                raise DataError(f"no space left on the disk of {out} ({exc.strerror}): free some space and run the "
                                "same command again; the shards already finished are kept") from None
            if exc.errno == errno.EFBIG:    # a file-size limit (`ulimit -f`, FAT32)
                reason, remedy = room_advice(Path(exc.filename or out), errno.EFBIG)
                raise DataError(f"{exc.filename or out}: {reason}: {remedy}, then run the same command again; the "
                                "shards already finished are kept") from None
            raise
    return PrepResult(manifest, False, len(written), len(shards) - len(written),
                      sum(s.count for s in manifest.splits.values()), time.perf_counter() - t0, workers,
                      sum(len(s.entries) for s in written))


# What prep and the tools that write beside its data leave in a data folder: manifest.json, the
# mean image, the shards (finished ones of an interrupted run too), `alexnet pca`'s pca.json
# and pca.partial.json, `alexnet features`' features-SPLIT-KEY.h5 (and .partial) with
# `alexnet codes`' FEAT.codesBITS.h5 and .pt. Temporaries (.NAME.PID.tmp) are hidden files.
_PREP_OWNED = re.compile(r"manifest\.json|mean_image\.npy|[a-z]+-\d{5}\.h5|pca(\.partial)?\.json"
                         r"|features-.+\.(h5(\.partial)?|codes\d+\.(h5|pt))")


def _saved_shards(out: Path, shards: list[ShardPlan]) -> str:
    """What a stopped `prepare` kept (stopping.StopsAtOnce): its finished shards (a shard is
    written under a temporary name and renamed when finished)."""
    finished = sum((out / s.name).is_file() for s in shards)
    return f"{finished} of {len(shards)} shards are finished and kept in {out}"


def check_out_outside_images(src: Path, out: Path) -> None:
    """Refuse an `out` inside a folder of `src` that is read for images (layouts.image_folders):
    its lock, shards and manifest would be taken for source files, by this run and every later
    one of `src`. Elsewhere in `src` (beside train/ and val/) it is fine."""
    where = Path(os.path.realpath(out))                 # through links, as the images are listed
    for folder in image_folders(src):
        real = Path(os.path.realpath(folder))
        if where == real or real in where.parents:
            raise UsageError(f"OUT {out} is inside {folder}, where prep reads the images of SRC {src} (its files "
                             "would be taken for images): choose an OUT outside it")


def check_data_dir(out: Path) -> None:
    """OUT must be new, empty (hidden files aside), or hold something of an earlier or
    interrupted prep (a rerun continues or updates it). A folder of other files (a training
    run's, the user's) is refused, never written into."""
    if not out.is_dir():
        return
    # hidden files (.DS_Store, our .tmp files, a run's .lock) and a fresh volume's lost+found are no one's
    entries = sorted(p.name for p in out.iterdir() if p.name != "lost+found" and not p.name.startswith("."))
    if not entries or any(_PREP_OWNED.fullmatch(name) for name in entries):
        return
    raise AlexnetError(f"{out} is not a prepared data folder (it holds {', '.join(entries[:3])}"
                       f"{', ...' if len(entries) > 3 else ''}): choose another OUT")


def _other_preparation(out: Path, manifest: Manifest, layout: Layout, options: PrepOptions) -> DataError:
    """`out` holds another preparation: which options differ (as `name`s the CLI shows as flags),
    compared by what they make (the splits prepared, not how they were asked for; the quality
    of jpeg shards only), or else that the source's files differ."""
    there, asked = manifest.options, _options_json(options)
    shown = {key: (there.get(key), value) for key, value in asked.items()}
    shown["splits"] = (",".join(sorted(manifest.splits)), ",".join(sorted(layout.splits)))
    if not there.get("format") == asked["format"] == "jpeg":     # raw shards have no quality
        del shown["jpeg_quality"]
    differ = {k: v for k, v in shown.items() if v[0] != v[1]}
    if "shard_size" in differ and "block_size" in differ and there.get("block_size") == there.get("shard_size"):
        del differ["block_size"]          # cut to the shard size there (prepare): the same shard size gives it again
    if differ:
        said = "; ".join(f"{'label files' if k == 'labels' else f'`{k}`'} {_shown_option(a)} there, "
                         f"{_shown_option(b)} now" for k, (a, b) in differ.items())
        return DataError(f"{out} already holds data prepared with other options ({said}); give the options it was "
                         "prepared with to use it as it is, or choose another output folder",
                         mentions=tuple(k for k in differ if k != "labels"))
    if manifest.source != str(layout.source.resolve()):   # a copy of the same files would be taken as they are
        what = f"from other files (those under {manifest.source})"
    else:
        what = f"from other files (the files under {layout.source} changed since)"
    return DataError(f"{out} already holds data prepared {what}; choose another output folder (or delete this "
                     "one)")


def _shown_option(value: object) -> str:
    if isinstance(value, dict):                  # the label files: {"val_labels": path}
        return ", ".join(f"{k} {v}" for k, v in value.items()) or "none"
    return "none" if value is None else str(value)


def _existing_output(out: Path, digest: str, verify: bool, progress: Reporter, layout: Layout,
                     options: PrepOptions) -> tuple[Manifest | None, dict]:
    """What `out` already holds: (its manifest if it is exactly this preparation, complete,
    with nothing to do; the sha256 of each shard the manifest lists, to check reused shards
    against). Something to repair (a missing or resized shard, a missing mean image, with
    `verify` every shard) gives (None, hashes): the build then reuses each shard whose fresh
    sha256 matches and makes the others again. A manifest for other options is an error; an
    unreadable one is rebuilt, without hashes to check the shards against."""
    if not (out / MANIFEST).is_file():
        return None, {}
    try:
        manifest = read_manifest(out)
    except NewerFormat:
        raise
    except OlderFormat:
        progress.log(f"{out} holds jpeg shards of an older layout: converting them in place")
        return None, {}
    except DataError as exc:
        reason = str(exc).split(": run `alexnet prep", 1)[0]
        progress.log(f"{reason}: writing it again from the shards (with nothing left to check their sha256 "
                     "against)")
        return None, {}
    if manifest.options.get("plan_digest") != digest:
        raise _other_preparation(out, manifest, layout, options)
    hashes = {name: info.sha256 for name, info in manifest.shards.items()}
    if verify:
        return None, hashes
    for name, info in manifest.shards.items():
        path = out / name
        if not path.is_file() or path.stat().st_size != info.bytes:
            return None, hashes              # the build names each shard it makes again (_build_shards)
    try:
        read_mean_image(out)
    except DataError as exc:              # missing, unreadable, or not a finite 0..255 image
        reason = str(exc).split(": run `alexnet prep", 1)[0]
        progress.log(f"{reason}: writing it again from the shards")
        return None, hashes
    return manifest, hashes


def _remove_leftovers(out: Path, shards: list[ShardPlan]) -> None:
    """Temporary files of killed runs, and shards of an unfinished run that the plan no longer has."""
    remove_abandoned(out)
    wanted = {s.name for s in shards}
    for p in out.iterdir():
        if re.fullmatch(r"(train|val)-\d{5}\.h5", p.name) and p.name not in wanted:
            p.unlink(missing_ok=True)


@dataclass
class _Finished:
    count: int
    pixel_sum: np.ndarray       # int64 (256, 256, 3)
    skipped: list[dict]
    info: ShardInfo


def _reuse(path: Path, shard: ShardPlan) -> _Finished | None:
    """A shard a previous run finished with the same signature, else None (it is rebuilt)."""
    try:
        with h5py.File(path, "r", locking=False) as f:
            if f.attrs.get("signature") == _older_signature(shard.signature) and "jpeg" in f:
                converted = True
            elif f.attrs.get("signature") != shard.signature:
                return None
            else:
                converted = False
    except (OSError, KeyError, ValueError):
        return None
    if converted:
        return _convert_jpeg_v1(path, shard)
    try:
        with h5py.File(path, "r", locking=False) as f:
            count, skipped = int(f.attrs["count"]), json.loads(f.attrs["skipped"])
            pixel_sum = np.asarray(f["pixel_sum"][:], np.int64)
    except (OSError, KeyError, ValueError, TypeError, RecursionError):
        return None
    return _Finished(count, pixel_sum, skipped, ShardInfo(count, path.stat().st_size, file_sha256(path)))


def _older_signature(signature: str) -> str:
    """The signature the same shard had in jpeg layout 1 (one variable-length record per image)."""
    data = json.loads(signature)
    if data.get("format") != "jpeg":
        return ""
    return json.dumps({**data, "format_version": 1}, sort_keys=True)


def _convert_jpeg_v1(path: Path, shard: ShardPlan) -> _Finished | None:
    """Rewrite a jpeg shard of layout 1 in the current layout: the same JPEG bytes, labels,
    paths, pixel sum and skipped files (nothing decoded), under a temporary name and renamed
    over the old file (killed midway, the old shard stays and a rerun converts it again)."""
    try:
        with h5py.File(path, "r", locking=False) as f:
            items = [np.asarray(x, np.uint8) for x in f["jpeg"][:]]
            labels, paths = f["labels"][:].tolist(), [p.decode("utf-8") if isinstance(p, bytes) else str(p)
                                                       for p in f["paths"][:]]
            pixel_sum = np.asarray(f["pixel_sum"][:], np.int64)
            skipped = json.loads(f.attrs["skipped"])
            block, quality = int(f.attrs["block_size"]), int(f.attrs["jpeg_quality"])
    except (OSError, KeyError, ValueError, TypeError):
        return None                                       # unreadable: made again from SRC
    if len(items) != len(labels) or len(paths) != len(labels):
        return None
    writer = ShardWriter(path, split=shard.split, fmt="jpeg", block_size=block, jpeg_quality=quality,
                         signature=shard.signature)
    try:
        writer.append(items, labels, paths, pixel_sum)
        writer.finish(skipped)
    except BaseException:
        writer.abort()
        raise
    return _Finished(len(labels), pixel_sum, skipped, ShardInfo(len(labels), path.stat().st_size, file_sha256(path)))


def _build_shards(src: Path, out: Path, shards: list[ShardPlan], options: PrepOptions, workers: int,
                  progress: Reporter, hashes: dict[str, str]) -> tuple[dict[str, _Finished], list[ShardPlan]]:
    """Reuse the finished shards (those listed in `hashes` only if their sha256 is still that),
    write the others; returns each shard's results and the shards written. Each shard the
    manifest lists that is made again is named, with what is wrong with it."""
    finished: dict[str, _Finished] = {}
    for s in shards:
        path = out / s.name
        r = _reuse(path, s) if path.is_file() else None
        if s.name in hashes:             # finished before: anything but the same file is damage
            problem = ("is missing" if not path.is_file() else
                       "is damaged (it no longer reads as a finished shard)" if r is None else
                       "is damaged (its sha256 differs from the manifest's)" if r.info.sha256 != hashes[s.name]
                       else None)
            if problem is not None:
                progress.log(f"{path} {problem}: making it again")
                continue
        if r is not None:
            finished[s.name] = r
    todo = [s for s in shards if s.name not in finished]
    if finished:
        progress.log(f"{len(finished)} of {len(shards)} shards are already finished: kept")
    with progress.task("prep", total=sum(len(s.entries) for s in todo), unit="img") as task:   # rate: real work
        if workers == 1 or len(todo) == 1:
            for s in todo:
                finished[s.name] = write_shard(src, out, s, options, task.advance)
        elif todo:
            finished.update(_write_in_workers(src, out, todo, options, min(workers, len(todo)), task))
    return finished, todo


def write_shard(src: Path, out: Path, shard: ShardPlan, options: PrepOptions, advance=lambda n: None) -> _Finished:
    """Decode, resize and crop the shard's images, write the shard (temporary file, then
    rename); calls advance(n) as images are done. Runs in a worker process."""
    writer = ShardWriter(out / shard.name, split=shard.split, fmt=options.format, block_size=options.block_size,
                         jpeg_quality=options.jpeg_quality, signature=shard.signature, capacity=len(shard.entries))
    skipped: list[dict] = []
    try:
        for i in range(0, len(shard.entries), TASK_IMAGES):
            stop_if_signalled()                  # a signal Python swallowed stops here (one worker: this process)
            chunk = shard.entries[i:i + TASK_IMAGES]
            images, labels, paths = [], [], []
            for rel, label in chunk:
                try:
                    images.append(load_image(src / rel))                   # (256, 256, 3)
                    labels.append(label)
                    paths.append(rel)
                except UnreadableImage as exc:
                    skipped.append({"path": rel, "reason": exc.reason})
            items = images
            if options.format == "jpeg":  # the mean is that of what the loader will decode
                items = [encode_jpeg(im, options.jpeg_quality) for im in images]
                images = [decode_jpeg(b) for b in items]
            batch = np.stack(images) if images else np.zeros((0, *IMAGE_SHAPE), np.uint8)   # (n, 256, 256, 3)
            writer.append(batch if options.format == "raw" else items, labels, paths,
                          batch.sum(axis=0, dtype=np.int64))
            advance(len(chunk))
        path = writer.finish(skipped)
    except BaseException:
        writer.abort()
        raise
    return _Finished(writer.written, writer.pixel_sum, skipped,
                     ShardInfo(writer.written, path.stat().st_size, file_sha256(path)))


# ---------------------------------------------------------------------------- workers
# One shard per task: a worker decodes and writes a whole shard, so no pixels travel
# between processes (ImageNet has ~1,300 shards, far more than cores).

_progress_queue = None


def _write_in_workers(src: Path, out: Path, todo: list[ShardPlan], options: PrepOptions, workers: int, task):
    """Yields (name, _Finished) as worker processes finish shards; relays their progress."""
    ctx = multiprocessing.get_context("fork" if "fork" in multiprocessing.get_all_start_methods() else "spawn")
    progress = ctx.Queue()
    pool = ProcessPoolExecutor(workers, mp_context=ctx, initializer=_worker_init, initargs=(progress,))
    try:
        futures = {pool.submit(_worker_shard, src, out, s, options): s.name for s in todo}
        pending = set(futures)
        while pending:
            done, pending = wait(pending, timeout=0.2, return_when=FIRST_COMPLETED)
            stop_if_signalled()              # a SIGTERM swallowed in a weakref callback stops here
            _drain(progress, task)
            for f in done:
                yield futures[f], f.result()
        _drain(progress, task)
    except BaseException:  # an error or Ctrl-C: stop the workers now (their temporary files are left)
        pool.shutdown(wait=False, cancel_futures=True)
        for proc in (getattr(pool, "_processes", None) or {}).values():
            proc.terminate()
        raise
    pool.shutdown(wait=True)


def _drain(progress, task) -> None:
    while True:
        try:
            task.advance(progress.get_nowait())
        except queue.Empty:
            return


def _worker_shard(src: Path, out: Path, shard: ShardPlan, options: PrepOptions) -> _Finished:
    return write_shard(src, out, shard, options, _progress_queue.put)


def _worker_init(progress) -> None:
    """Workers report to `progress`, die with the parent (even on SIGKILL) and leave Ctrl-C to it;
    a SIGTERM (the parent's terminate) ends one at once, not as the parent's (forked) handler."""
    global _progress_queue
    _progress_queue = progress
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    try:
        import ctypes
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass


# ---------------------------------------------------------------------------- outputs

def _write_outputs(src: Path, out: Path, layout: Layout, shards: list[ShardPlan], finished: dict[str, _Finished],
                   options: PrepOptions, digest: str) -> Manifest:
    """The mean image (exact, from the shards' pixel sums) and manifest.json, written last."""
    _check_every_class_trains(layout, shards, finished)
    splits: dict[str, SplitInfo] = {}
    for s in shards:
        info = splits.setdefault(s.split, SplitInfo(0, [], []))
        info.count += finished[s.name].count
        info.shards.append(s.name)
        info.shard_counts.append(finished[s.name].count)
    for split in layout.splits:
        splits.setdefault(split, SplitInfo(0, [], []))
    mean_split = "train" if "train" in splits else next(iter(splits))
    total = sum((finished[s.name].pixel_sum for s in shards if s.split == mean_split),
                np.zeros(IMAGE_SHAPE, np.int64))
    mean = (total / max(splits[mean_split].count, 1)).astype(np.float32)   # (256, 256, 3)
    _save_npy(out / MEAN_IMAGE, mean)
    skipped = [x for split in layout.splits for x in layout.unlabeled.get(split, [])]
    skipped += [x for s in shards for x in finished[s.name].skipped]
    options_json = _options_json(options)
    options_json.update(image_size=SIZE, mean_split=mean_split, plan_digest=digest)
    manifest = Manifest(
        root=out, classes=layout.classes, class_names=[layout.class_names[w] for w in layout.classes],
        splits=splits, mean_rgb=[float(v) for v in mean.astype(np.float64).mean(axis=(0, 1))],
        mean_image=MEAN_IMAGE, format=options.format, skipped=sorted(skipped, key=lambda x: x["path"]),
        shards={s.name: finished[s.name].info for s in shards}, block_size=options.block_size,
        source=str(src.resolve()), layout=layout.name, options=options_json)
    write_manifest(manifest)
    return manifest


def _check_every_class_trains(layout: Layout, shards: list[ShardPlan], finished: dict[str, _Finished]) -> None:
    """DataError (before the manifest: the data is not usable) when a class's training files
    all failed to decode: fc8 would have an output no image trains (find_layout refuses a
    class folder without files)."""
    if "train" not in layout.splits:
        return
    skipped = {x["path"] for s in shards for x in finished[s.name].skipped}
    trained = {label for s in shards if s.split == "train" for path, label in s.entries if path not in skipped}
    empty = [w for i, w in enumerate(layout.classes) if i not in trained]
    if empty:
        raise DataError(f"class {empty[0]}{f' (and {len(empty) - 1} more)' if len(empty) > 1 else ''} has no "
                        "training image that could be read (a class needs training images): fix or remove its "
                        "files; the finished shards are kept")


def _save_npy(path: Path, array: np.ndarray) -> None:
    import io
    buf = io.BytesIO()
    np.save(buf, array, allow_pickle=False)
    write_atomic(path, buf.getvalue())
