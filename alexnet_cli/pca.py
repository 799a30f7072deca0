"""`alexnet pca`: PCA of the RGB pixel values of the training set (paper section 5.1).

One streaming pass over the training shards (the shard loader, in order) accumulates the
pixel count, the channel sums and the 3x3 sums of outer products. Each batch's sums are
exact integers in float64 (products of values <= 255; a batch stays far below 2^53) and are
added up as Python ints, so the result does not depend on the order, the batch size or the
device the sums ran on. Covariance = E[x x^T] -
E[x] E[x]^T in 0-255 units; its eigen-decomposition goes to `pca.json` (docs/public-surface.md):
eigenvalues descending, COLUMN i of eigenvectors is the eigenvector of eigenvalue i.

The pass over all of ImageNet reads 250 GB of raw shards, so it can be killed part way: every
`save_every` batches, and at the end, the exact sums so far go to `pca.partial.json`
(atomically), and the next run over the same shards continues after them. Integer sums make
the resumed result identical to an uninterrupted one; `write_pca` removes the file once
`pca.json` holds the result.

A shared data folder may be read-only: the PCA can then be written to any file (`out`), its
partial sums beside it (`partial_file`), and training reads it from there. Each pca.json
records the key of the training shards it was computed from (`data_key`), so that a PCA of
other data is refused rather than silently used (`check_pca_data`).

Which files `pca` replaces (`_check_target`): a PCA file is written to be read later by `train
--pca FILE`, so what is not a regular file (a device, a FIFO) is refused, never replaced, and a
link's target is written (the link is kept). An existing file is replaced only when it holds a
PCA, or a damaged one: a data folder's own pca.json whatever it holds (only `pca` writes it),
elsewhere a JSON object with a PCA's keys, or the start of the text `write_pca` writes (a copy cut
short). Any other file (a user's notes, a picture, a checkpoint) is refused unless `overwrite`;
`read_pca` calls it "not a PCA file" rather than advising to write one over it.
"""

from __future__ import annotations

import json
import os
import stat
from dataclasses import dataclass
from numbers import Integral
from pathlib import Path
from typing import Any

import numpy as np
import torch

from alexnet_cli.atomic import remove_abandoned, write_atomic, write_output
from alexnet_cli.config import check_seed
from alexnet_cli.devices import resolve_device
from alexnet_cli.errors import AlexnetError, DataError, Interrupted, UsageError, shell_word
from alexnet_cli.images import path_kind
from alexnet_cli.loader import ShardLoader
from alexnet_cli.progress import NullReporter, Reporter
from alexnet_cli.runlog import json_text
from alexnet_cli.shards import (IMAGE_SHAPE, MANIFEST, Manifest, SplitIndex, data_key, open_shard, read_images,
                                read_manifest, split_index)
from alexnet_cli.stopping import StopRequests, signal_name

PCA_FILE = "pca.json"
PARTIAL_FILE = "pca.partial.json"   # the sums of an unfinished pass (module doc)
BATCH_SIZE = 128
SAVE_EVERY = 100                     # batches between saved sums: 12,800 images, seconds of reading


@dataclass
class PcaStats:
    eigenvalues: np.ndarray     # (3,) descending, 0-255 units (variances)
    eigenvectors: np.ndarray    # (3, 3); COLUMN i is the eigenvector of eigenvalues[i]
    mean_rgb: np.ndarray | None = None   # (3,) the pixel mean the covariance is centred on
    pixels: int = 0                      # how many pixels it was computed over
    images: int = 0
    partial: Path | None = None          # a full pass's saved sums, removed once pca.json is written
    data_key: str | None = None          # the training shards' key (shards.data_key); None: an older file

    def to_json(self, path: str | Path | None = None) -> dict[str, Any]:
        """The document `alexnet pca --json` prints (docs/public-surface.md); `path`: where
        write_pca wrote it (None when it was not written)."""
        return {"path": None if path is None else str(path), "eigenvalues": self.eigenvalues.tolist(),
                "eigenvectors": self.eigenvectors.tolist(), "scale": "0-255",
                "mean_rgb": None if self.mean_rgb is None else self.mean_rgb.tolist(), "pixels": self.pixels,
                "images": self.images}


class PixelMoments:
    """Exact running sums of pixel values and their outer products."""

    def __init__(self) -> None:
        self.n = 0
        self.s = [0, 0, 0]
        self.ss = [[0] * 3 for _ in range(3)]

    def add(self, pixels: np.ndarray | torch.Tensor) -> None:
        """`pixels`: uint8 (..., 3) RGB, a NumPy array or a tensor on any device."""
        flat = torch.as_tensor(pixels).reshape(-1, 3)                  # (P, 3)
        for i in range(0, len(flat), 2 ** 24):  # partial sums stay exact integers (< 2^53)
            x = flat[i:i + 2 ** 24].double()
            s, ss = x.sum(dim=0).tolist(), (x.T @ x).tolist()          # (3,), (3, 3); a device sync
            self.n += len(x)
            for a in range(3):
                self.s[a] += int(s[a])
                for b in range(3):
                    self.ss[a][b] += int(ss[a][b])

    def state(self) -> dict:
        """The exact sums as plain JSON data (Python ints, any size)."""
        return {"n": self.n, "s": list(self.s), "ss": [list(row) for row in self.ss]}

    @classmethod
    def from_state(cls, state: dict) -> "PixelMoments":
        moments = cls()
        n, s, ss = state["n"], state["s"], state["ss"]
        if not (isinstance(n, int) and len(s) == 3 and len(ss) == 3 and all(len(row) == 3 for row in ss)
                and all(isinstance(v, int) for v in [*s, *(v for row in ss for v in row)])):
            raise ValueError("malformed sums")
        moments.n, moments.s, moments.ss = n, [*s], [[*row] for row in ss]
        return moments

    def covariance(self) -> tuple[np.ndarray, np.ndarray]:
        """(mean (3,), covariance (3, 3)) in 0-255 units, population normalisation."""
        if self.n == 0:
            raise DataError("no training pixels to compute the PCA over")
        n = self.n
        mean = np.array([v / n for v in self.s])
        # exact integer numerators: n * sum(x_i x_j) - sum(x_i) sum(x_j)
        cov = np.array([[(n * self.ss[i][j] - self.s[i] * self.s[j]) / (n * n) for j in range(3)]
                        for i in range(3)])
        return mean, cov


def eigen(cov: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Eigenvalues descending and eigenvectors as columns; each vector's sign is fixed so
    that its largest-magnitude component is negative (the usual ImageNet convention, p1 ~
    (-0.57, -0.58, -0.58)), which makes the output deterministic."""
    values, vectors = np.linalg.eigh(cov)                      # ascending
    order = np.argsort(values)[::-1]
    values, vectors = np.clip(values[order], 0.0, None), vectors[:, order]
    for i in range(3):
        if vectors[np.argmax(np.abs(vectors[:, i])), i] > 0:
            vectors[:, i] = -vectors[:, i]
    return values, vectors


def check_sample(sample: int | None) -> None:
    """How many images the PCA samples: None (all of them) or a whole number, at least 1."""
    if sample is not None and (isinstance(sample, bool) or not isinstance(sample, Integral) or sample < 1):
        raise UsageError(f"sample must be positive, got {sample!r}", field="sample", value=sample)


def pca_file(data_dir: str | Path, out: str | Path | None = None) -> Path:
    """Where a PCA is written and read: `out`, or by default DATA/pca.json."""
    return Path(data_dir) / PCA_FILE if out is None else Path(out)


def partial_file(out: str | Path) -> Path:
    """Where the unfinished pass for the PCA file `out` keeps its sums: beside it, named after
    it (DATA/pca.json's is DATA/pca.partial.json), so that a pass rerun with the same `out`
    continues, and passes for two files in one folder keep apart."""
    out = Path(out)
    return out.with_name(f"{out.stem}.partial.json")


def compute_pca(data_dir: str | Path, progress: Reporter = NullReporter(), sample: int | None = None,
                seed: int = 0, device: str | torch.device | None = None, workers: int | None = None,
                batch_size: int = BATCH_SIZE, save_every: int = SAVE_EVERY, out: str | Path | None = None) -> PcaStats:
    """PCA of all training pixels, read by the shard loader and summed on `device` (default:
    CUDA when there is one; the sums are exact, so every device gives the same result), resuming an interrupted pass (module
    doc); or of `sample` images picked deterministically by `seed` (None: all of them). `out`: the
    file the result is for (default DATA/pca.json); a full pass saves its sums beside it."""
    check_sample(sample)
    check_seed(seed)
    manifest = read_manifest(data_dir)
    _check_target(pca_file(manifest.root, out), out, overwrite=True)    # a device: before its sums go beside it
    partial = partial_file(pca_file(manifest.root, out))
    if sample:
        moments, images = _sample_pass(manifest, sample, seed, progress)
    else:
        moments, images = _full_pass(manifest, partial, resolve_device(device), workers, batch_size, save_every,
                                     progress)
    mean, cov = moments.covariance()
    values, vectors = eigen(cov)
    # a sample's key is the training shards' too: it was drawn from them
    return PcaStats(values, vectors, mean, moments.n, images, None if sample else partial,
                    data_key(manifest, "train"))


def _full_pass(manifest: Manifest, partial: Path, device, workers: int | None, batch_size: int, save_every: int,
               progress: Reporter) -> tuple[PixelMoments, int]:
    """The sums over every training image, in the loader's order, saved every `save_every`
    batches and at the end to the `partial` file, and continued from it."""
    if save_every < 1:
        raise UsageError(f"save_every must be at least 1, got {save_every}")
    loader = ShardLoader(manifest.root, "train", batch_size, shuffle=False, device=device, workers=workers)
    total = loader.num_images
    remove_abandoned(partial.parent, partial.name)                      # a save cut short by a kill
    key = {"data": data_key(manifest, "train"), "batch_size": batch_size}
    moments, done = _resume(partial, key, total, progress)
    saving = True
    start = -(-done // batch_size)
    # Ctrl-C, SIGTERM: the pass stops after the batch in progress, its sums saved
    with StopRequests("the pca pass", "after this batch") as stop, \
            progress.task("pca", total=total - done, unit="img") as task:
        for k, batch in enumerate(loader.epoch(0, start_batch=start), start=start + 1):
            moments.add(batch.images)                                          # (B, 256, 256, 3)
            images = min(k * batch_size, total)
            state = {"version": 1, **key, "images": images}
            saved = saving and (k % save_every == 0 or images == total)
            if saved:
                saving = _save_sums(partial, {**state, "sums": moments.state()}, progress)
            task.advance(len(batch.images))
            if stop.signum is not None and images < total:
                if saving and not saved:
                    saving = _save_sums(partial, {**state, "sums": moments.state()}, progress)
                kept = f"its sums are saved in {partial}" if saving else "its sums could not be saved"
                raise Interrupted(f"{signal_name(stop.signum)}: stopped the pca pass at image {images:,} of "
                                  f"{total:,}; {kept}; {Interrupted.AGAIN}", stop.signum)
        if stop.signum is not None:
            progress.log(f"Note: the {signal_name(stop.signum)} came with the last batch, with nothing left to stop: "
                         "the pass ends as usual")
    return moments, total


def _save_sums(partial: Path, state: dict, progress: Reporter) -> bool:
    """Write the pass's sums so far; False (said in a log line) where they cannot be written."""
    try:
        partial.parent.mkdir(parents=True, exist_ok=True)        # beside an `out` in a folder to be made
        write_atomic(partial, (json_text(state) + "\n").encode("utf-8"))
    except OSError as exc:                                         # a read-only data folder
        progress.log(f"cannot save the pass's progress to {partial} ({exc.strerror or exc}): it goes "
                     "on, but a kill would start it again")
        return False
    return True


def _resume(partial: Path, key: dict, total: int, progress: Reporter) -> tuple[PixelMoments, int]:
    """The sums and image count saved by an interrupted (or finished) pass over the same
    shards, or a fresh start (said in a log line when a partial file is ignored)."""
    if not partial.is_file():
        return PixelMoments(), 0
    try:
        state = json.loads(partial.read_text(encoding="utf-8"))
        moments, done = PixelMoments.from_state(state["sums"]), state["images"]
        same = state.get("version") == 1 and all(state.get(k) == v for k, v in key.items())
    except (OSError, ValueError, KeyError, TypeError, RecursionError) as exc:
        why = "nested too deeply" if isinstance(exc, RecursionError) else exc
        progress.log(f"starting afresh: {partial} is unreadable ({why})")
        return PixelMoments(), 0
    fits = (isinstance(done, int) and 0 < done <= total and (done % key["batch_size"] == 0 or done == total)
            and moments.n == done * IMAGE_SHAPE[0] * IMAGE_SHAPE[1])
    if not same or not fits:
        progress.log(f"starting afresh: {partial} was made from other shards, with another batch size, or is "
                     "inconsistent")
        return PixelMoments(), 0
    progress.log(f"resuming the pass at image {done:,} of {total:,} ({partial})")
    return moments, done


def _sample_pass(manifest: Manifest, sample: int, seed: int, progress: Reporter) -> tuple[PixelMoments, int]:
    """The sums over `sample` images picked by `seed`, read one by one."""
    index = split_index(manifest, "train")
    moments = PixelMoments()
    picks = _sample(index, sample, seed)
    if sample > index.count:
        progress.log(f"Note: 'train' holds {index.count:,} images, fewer than `sample` {sample:,}: all of them "
                     "are used", mentions=("sample",))
    total = sum(len(p) for p in picks)
    with progress.task("pca", total=total, unit="img") as task:
        for name, rows in zip(index.shards, picks):
            with open_shard(manifest, name) as f:
                for i in rows:
                    moments.add(read_images(f, int(i), int(i) + 1))            # (1, 256, 256, 3)
                    task.advance(1)
    return moments, total


def _sample(index: SplitIndex, sample: int, seed: int) -> list[np.ndarray]:
    """`sample` distinct images of the split, as sorted indices per shard."""
    total = index.count
    chosen = np.random.default_rng(seed).choice(total, size=min(sample, total), replace=False)
    return index.rows_by_shard(chosen)


def write_pca(data_dir: str | Path, stats: PcaStats, *, overwrite: bool = False, out: str | Path | None = None) -> Path:
    """Write `pca.json` (docs/public-surface.md) atomically to `out` (default DATA/pca.json);
    returns its path. A file that holds another result is replaced only with `overwrite`
    (training runs that used it could no longer be resumed): DataError otherwise; one with the
    same result is left as it is. What pca may not replace at all (a device, a file that is no
    PCA: module doc) is refused, and a link's target is written."""
    path = pca_file(data_dir, out)
    data = {"eigenvalues": [float(v) for v in stats.eigenvalues],
            "eigenvectors": [[float(v) for v in row] for row in stats.eigenvectors],
            "scale": "0-255",
            "columns_are_eigenvectors": True,
            "mean_rgb": None if stats.mean_rgb is None else [float(v) for v in stats.mean_rgb],
            "pixels": int(stats.pixels), "images": int(stats.images),
            **({} if stats.data_key is None else {"data_key": stats.data_key})}
    old = _existing(path, out, overwrite)
    if old is not None and any(k in old and k in data and old[k] != data[k] for k in _RESULT) and not overwrite:
        raise _would_replace(path, old, f"this one, of {_of(data['images'])}, has eigenvalues "
                             f"{_values(data['eigenvalues'])}")
    if old != data:                            # the same result in an older form is written again
        path.parent.mkdir(parents=True, exist_ok=True)
        write_output(path, (json_text(data, indent=2) + "\n").encode("utf-8"))     # a link: its target
    if stats.partial is not None:              # the pass's sums are now safe in pca.json
        stats.partial.unlink(missing_ok=True)
    return path


def check_replace(data_dir: str | Path, sample: int | None = None, *, overwrite: bool = False,
                  out: str | Path | None = None) -> None:
    """Before a pass: DataError at once (not after hours of reading) when the pca.json at `out`
    (default DATA/pca.json) holds a PCA of other training shards, or of another number of
    images than the pass would use (`sample`, None: all of them), whose result therefore
    differs; write_pca checks the result itself."""
    path = pca_file(data_dir, out)
    old = _existing(path, out, overwrite)
    if old is None or overwrite:
        return
    manifest = read_manifest(data_dir)
    if old.get("data_key") not in (None, data_key(manifest, "train")):
        raise _would_replace(path, old, f"this pass is over other training shards, {manifest.root}'s")
    total = split_index(manifest, "train").count
    images = total if sample is None else min(sample, total)
    if isinstance(old.get("images"), int) and old["images"] > 0 and old["images"] != images:
        kind = f"all {images:,} training images" if images == total else f"a sample of {images:,}"
        raise _would_replace(path, old, f"this pass would use {kind}")


def kept_pca(data_dir: str | Path, sample: int | None = None) -> PcaStats | None:
    """DATA/pca.json when it holds what a pass over all training images would give again (an
    ImageNet pass takes hours): a PCA of DATA's training shards (by its key; a file older than
    the key, by its image count) of all their images. None otherwise, and for a `sample` short
    of them all, whose seed pca.json does not record."""
    manifest = read_manifest(data_dir)
    total = split_index(manifest, "train").count
    if sample is not None and sample < total:
        return None
    try:
        stats = read_pca(data_dir)
    except DataError:
        return None
    same_data = stats.data_key == data_key(manifest, "train") if stats.data_key is not None else True
    return stats if same_data and stats.images == total else None


def check_pca_data(stats: PcaStats, manifest: Manifest, path: str | Path | None = None) -> None:
    """DataError when the PCA `stats` (read from `path`, default DATA/pca.json) records other
    training shards than `manifest`'s: another data set's colour noise would silently change
    the augmentation. A file older than the key is taken as it is."""
    key = data_key(manifest, "train")
    if stats.data_key is None or stats.data_key == key:
        return
    data = shell_word(manifest.root)
    redo = (f"`alexnet pca {data} --overwrite`" if path is None else
            f"`alexnet pca {data} --out FILE` and train with `pca_file` FILE")
    raise DataError(f"{pca_file(manifest.root, path)} is a PCA of other data: of training shards with key "
                    f"{stats.data_key}, not {manifest.root}'s ({key}; another data set, or the shards changed since): "
                    f"compute theirs with {redo}",
                    mentions=() if path is None else ("pca_file",))


# What a rerun must give again to leave pca.json as it is (an older file lacks some: not compared)
_RESULT = ("eigenvalues", "eigenvectors", "mean_rgb", "pixels", "images", "data_key")


def _existing(path: Path, out: str | Path | None, overwrite: bool) -> dict | None:
    """The document in the pca.json at `path` when it holds a readable PCA; None when there is
    none (a damaged one, which nothing can use, is replaced as if there were none). What pca
    must not replace is refused (`_check_target`; `out`: the file was given as `out`)."""
    _check_target(path, out, overwrite)
    try:
        read_pca(path.parent, path)
        return json.loads(path.read_text(encoding="utf-8"))
    except (AlexnetError, OSError, ValueError, RecursionError):
        return None


def _check_target(path: Path, out: str | Path | None, overwrite: bool) -> None:
    """Refuse a `path` that pca may not write (module doc): what is not a regular file, always;
    a file that is no PCA, nor a damaged one, unless `overwrite`. UsageError naming `out` when
    the file was given as `out`, else DataError (a data folder's pca.json). Links are followed."""
    try:
        mode = path.stat().st_mode
    except OSError:                  # nothing there yet (a broken link is check_writable's to refuse)
        return
    if not stat.S_ISREG(mode):
        kind = path_kind(mode)
        advice = "remove it to have the PCA written there" if out is None else "give a file's path"
        raise _refused(path, out, f"is {kind}, not a regular file: the PCA is a file for training to read "
                                  f"later: {advice}")
    if overwrite:
        return
    try:
        _document(path)
    except _Foreign as exc:
        raise _refused(path, out, f"is not a PCA file ({exc}), and pca replaces only a PCA file: choose another "
                                  "file, or pass `overwrite` to replace it", ("overwrite",)) from None
    except (OSError, ValueError, RecursionError):           # a damaged PCA: replaced
        pass


def _refused(path: Path, out: str | Path | None, why: str, mentions: tuple[str, ...] = ()) -> AlexnetError:
    if out is None:
        return DataError(f"{path} {why}", mentions=mentions)
    return UsageError(f"out {path} {why}", field="out", value=path, mentions=mentions)


class _Foreign(Exception):
    """A file that is no PCA, nor a damaged one; its message says what it is instead."""


# What the text `write_pca` writes begins with, without its whitespace (json_text, indent 2)
_HEAD = b'{"eigenvalues"'
_KEYS = ("eigenvalues", "eigenvectors")      # a JSON object with one of these was a PCA
MAX_PCA_BYTES = 1 << 20                       # a pca.json is about 1 KB: a larger file is no PCA, never read whole


def _document(file: Path) -> Any:
    """The JSON in the PCA file `file`: ValueError (or RecursionError) where it is damaged,
    _Foreign where it is no PCA at all (module doc). A data folder's own pca.json is always a
    PCA, if a damaged one. A file larger than MAX_PCA_BYTES is not read (a PCA is about 1 KB)."""
    target = file.resolve()
    own = target.name == PCA_FILE and (target.parent / MANIFEST).is_file()
    if not own and file.stat().st_size > MAX_PCA_BYTES:
        with open(file, "rb") as f:
            json_like = f.read(64).lstrip().startswith(b"{")
        raise _Foreign(f"{file.stat().st_size:,} bytes: too large for one" if json_like else "not JSON")
    raw = file.read_bytes()
    try:
        data = json.loads(raw.decode("utf-8"))
    except (ValueError, RecursionError):               # UnicodeDecodeError is a ValueError
        start = b"".join(raw[:64].split())
        if own or _HEAD.startswith(start) or start.startswith(_HEAD):    # empty, or cut short
            raise
        raise _Foreign("not JSON") from None
    if not own and not isinstance(data, dict):
        raise _Foreign("JSON, but not an object")
    if not own and not any(k in data for k in _KEYS):
        raise _Foreign("JSON without eigenvalues")
    return data


def _read_only(folder: Path) -> bool:
    """Whether no file can be made in `folder`: a read-only mount (the kernel says so to root
    too), or a folder this user may not write."""
    return folder.is_dir() and not os.access(folder, os.W_OK)


def _of(images: Any) -> str:
    return f"{images:,} images" if isinstance(images, int) and images > 0 else "an unknown number of images"


def _values(values: list) -> str:
    return "(" + ", ".join(f"{float(v):.4g}" for v in values) + ")"


def _would_replace(path: Path, old: dict, new: str) -> DataError:
    return DataError(f"{path} already holds a PCA, of {_of(old.get('images'))} with eigenvalues "
                     f"{_values(old['eigenvalues'])}; {new}; training runs that used it could no longer be "
                     "resumed: pass `overwrite` to replace it", mentions=("overwrite",))


def read_pca(data_dir: str | Path, path: str | Path | None = None) -> PcaStats:
    """The PCA that `alexnet pca` wrote to `path` (default DATA/pca.json); DataError if it is
    missing or malformed: 3 finite eigenvalues in 0..MAX_EIGENVALUE, a finite orthonormal 3x3
    eigenvector matrix, scale 0-255. It is not checked against DATA's shards (check_pca_data)."""
    data_word = shell_word(Path(data_dir))
    command = (f"`alexnet pca {data_word}`" if path is None else
               f"`alexnet pca {data_word} --out {shell_word(path)}`")          # what writes `path`
    file = pca_file(data_dir, path)
    _check_kind(file, Path(data_dir), path, command)
    again = f"run {command} again"
    try:
        data = _document(file)
        values = np.asarray(data["eigenvalues"], np.float64)
        vectors = np.asarray(data["eigenvectors"], np.float64)
        scale = data.get("scale", "0-255")
        mean = data.get("mean_rgb")
        mean = None if mean is None else np.asarray(mean, np.float64)
        pixels, images = int(data.get("pixels", 0)), int(data.get("images", 0))
        key = data.get("data_key")                       # absent in files written before it was recorded
    except _Foreign as exc:                              # never advised to be written over
        wrong = DataError if path is None else UsageError
        raise wrong(f"{file} is not a PCA file ({exc}): give one made by `alexnet pca {data_word} --out FILE`") \
            from None
    except RecursionError:
        raise DataError(f"{file} is corrupt (nested too deeply): {again}") from None
    except (ValueError, KeyError, TypeError, AttributeError, OverflowError) as exc:
        raise DataError(f"{file} is corrupt ({exc}): {again}") from None
    if values.shape != (3,) or vectors.shape != (3, 3) or scale != "0-255":
        raise DataError(f"{file}: expected 3 eigenvalues, a 3x3 eigenvector matrix and scale 0-255: {again}")
    why = _implausible(values, vectors, mean) or ("" if key is None or isinstance(key, str) else
                                                  "data_key must be a string")
    if why:
        raise DataError(f"{file} is corrupt ({why}): {again}")
    return PcaStats(values, vectors, mean, pixels, images, data_key=key)


def _check_kind(file: Path, data_dir: Path, path: str | Path | None, command: str) -> None:
    """DataError where the PCA `file` is missing; where it is not a regular file, UsageError
    when it was given (`path`: a wrong kind of path), DataError for DATA/pca.json."""
    try:
        mode = file.stat().st_mode
    except OSError:
        mode = None
    if mode is None and path is None:
        aside = (f" (where {shell_word(data_dir)} is read-only: compute the PCA into another file with pca's `out` "
                 "FILE, then train with `pca_file` FILE)" if _read_only(data_dir) else "")
        raise DataError(f"{file} not found{aside}: run {command} first (or train with `pca_aug=False`)",
                        mentions=("out", "pca_file", "pca_aug=False") if aside else ("pca_aug=False",))
    if mode is None:
        raise DataError(f"{file} not found: compute it with {command} first (or train with `pca_aug=False`)",
                        mentions=("pca_aug=False",))
    if stat.S_ISREG(mode):
        return
    kind = path_kind(mode)
    if path is None:
        raise DataError(f"{file} is {kind}, not a PCA file: remove it and run {command}")
    raise UsageError(f"{file} is {kind}, not a PCA file: give the file `alexnet pca` wrote (its `out`)",
                     mentions=("out",))


# The covariance of RGB values in 0..255: its trace, the sum of the eigenvalues, is at most
# 3 * 127.5^2; this looser bound only catches values no pass over pixels can give.
MAX_EIGENVALUE = 3 * 255.0**2
ORTHONORMAL_TOL = 1e-3      # |V^T V - I|: loose enough for eigenvectors written with few digits


def _implausible(values: np.ndarray, vectors: np.ndarray, mean: np.ndarray | None) -> str:
    """What makes a PCA impossible for RGB pixels in 0..255 ("" if nothing does)."""
    if not np.isfinite(values).all() or not np.isfinite(vectors).all():
        return "NaN or infinite values"
    if values.min() < 0 or values.max() > MAX_EIGENVALUE:
        return f"eigenvalues must be in 0..{MAX_EIGENVALUE:g} (the variances of 0-255 pixel values), " \
               f"got {', '.join(f'{v:g}' for v in values)}"
    if np.abs(vectors.T @ vectors - np.eye(3)).max() > ORTHONORMAL_TOL:
        return "the eigenvectors are not orthonormal"
    if mean is not None and (mean.shape != (3,) or not (np.isfinite(mean).all() and 0 <= mean.min()
                                                        and mean.max() <= 255)):
        return "mean_rgb must be 3 finite numbers in 0..255"
    return ""
