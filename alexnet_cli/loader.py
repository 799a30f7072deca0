"""The shard loader: batches of uint8 images for training and evaluation, read from the
HDF5 shards of `alexnet prep` (schema in shards.py) and handed over on the device.

The order of an epoch is a pure function of (seed, epoch), whatever the number of workers:

1. the split's blocks (runs of `block_size` images, the HDF5 chunks) are permuted;
2. the resulting stream is cut into windows of `buffer_blocks` blocks' worth of images and
   each window is permuted, so that a batch mixes images from many blocks (prep already
   stores the training split in a hashed, class-mixed order);
3. with `world_size` > 1, rank r takes the r-th contiguous slice of that stream: the ranks
   are disjoint and together cover every image (with drop_last they all get the same number
   of batches, as DistributedDataParallel needs);
4. batches are consecutive runs of `batch_size` images of the rank's slice, so
   `epoch(e, start_batch=k)` resumes exactly where batch k of a full epoch begins.

`shuffle=False` skips 1 and 2: the split's global order (that of `read_split_index`).

Workers are threads. Their unit of work is a part: a run of `PART_IMAGES` stream positions of
one window, so that all threads share every window and none idles while the last window of an
epoch completes. Nothing they do per image holds the GIL or a lock for long: raw shards are
read with positional reads of the (unfiltered) HDF5 chunks; jpeg shards with one positional
read of a run of images' bytes (`jpeg_data` is contiguous, `jpeg_offsets` says where each image
is), then one simplejpeg call per image that decodes straight into the batch (`decode="cpu"`).
With `decode="gpu"` the workers only read bytes and the producer decodes each batch on the
device in one batched nvJPEG call, on a side stream. A producer thread keeps a queue of a few
finished batches (pinned memory), so the consumer does not wait; on CUDA they are copied on a
side stream one batch ahead (`_DeviceCopier`), so the copy overlaps the previous step instead
of delaying the next one. Data stays uint8 until it is on the device.
"""

from __future__ import annotations

import bisect
import collections
import contextlib
import errno
import os
import queue
import threading
import weakref
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Iterator

import numpy as np
import torch

from alexnet_cli.errors import DataError, UsageError
from alexnet_cli.jpeg import decode_jpeg, decode_jpegs_on, resolve_decode
from alexnet_cli.machine import usable_cores
from alexnet_cli.shards import (IMAGE_BYTES, IMAGE_SHAPE, Manifest, SplitIndex, check_shard_file, jpeg_index,
                                open_shard, raw_chunks, read_images, read_labels, read_manifest, verify_shards)


PART_IMAGES = 32   # stream positions per worker task: ~6 ms of JPEG decoding, far above a task's cost


@dataclass
class Batch:
    images: torch.Tensor    # uint8 (B, 256, 256, 3) RGB, on the loader's device
    labels: torch.Tensor    # int64 (B,), on the device
    indices: torch.Tensor   # int64 (B,), global position of each image in the split


def default_workers(fmt: str = "raw") -> int:
    """Reader threads, leaving cores to the trainer: raw shards are I/O (8 threads read about
    34,000 images/s on an H100 host); jpeg shards are CPU-bound decoding (about 4,000-5,000
    images/s per core), so they get every core but two (the trainer's and the producer's)."""
    cores = usable_cores()
    return max(1, min(8, cores - 1)) if fmt == "raw" else max(1, min(32, cores - 2))


def trained_decode(config: dict) -> str:
    """The --decode choice a run's checkpoint config implies (what `eval` and `features` use
    unless told): cpu if it trained with cpu decode; auto if with gpu (gpu where it can be
    here, else cpu) or if the run predates --decode or trained on raw shards."""
    run = config.get("run") if isinstance(config, dict) else None
    return "cpu" if isinstance(run, dict) and run.get("decode") == "cpu" else "auto"


class _ShardReader:
    """Reads runs of images of one split's shards by positional reads: raw by chunk offsets,
    jpeg by byte offsets (filtered raw shards, which prep does not write, through h5py)."""

    def __init__(self, manifest: Manifest, names: list[str]):
        self.manifest, self.names = manifest, names
        self.paths = [check_shard_file(manifest, n) for n in names]
        self.labels, self.chunks, self.counts = [], [], []     # chunks: RawChunks, jpeg_index or None
        for name in names:
            with open_shard(manifest, name) as f:
                labels = read_labels(f, len(manifest.classes))
                self.labels.append(labels)
                self.counts.append(len(labels))
                self.chunks.append(raw_chunks(f) if manifest.format == "raw" else jpeg_index(f))
        self.block = manifest.block_size

    def read(self, shard: int, start: int, stop: int, out: np.ndarray, rows: np.ndarray) -> None:
        """Images start..stop of shard `shard`: image start + j goes to out[rows[j]], or
        nowhere if rows[j] < 0. Raw shards: one scatter read (preadv) per chunk touched."""
        chunks = self.chunks[shard]
        if chunks is None:
            if not self.paths[shard].exists():
                raise self._gone(shard)
            with open_shard(self.manifest, self.names[shard]) as f:
                data = read_images(f, start, stop)                           # (n, 256, 256, 3)
            for j, r in enumerate(rows.tolist()):
                if r >= 0:
                    out[r] = data[j]
            return
        if self.manifest.format == "jpeg":
            blobs = self.read_jpegs(shard, start, stop)
            for j, r in enumerate(rows.tolist()):
                if r >= 0:
                    try:
                        decode_jpeg(blobs[j], out[r])
                    except ValueError as exc:
                        raise DataError(f"shard {self.paths[shard]}: image {start + j}: {exc}: run `alexnet prep "
                                        "SRC OUT --verify`") from None
            return
        path = self.paths[shard]
        fd = self._open(shard)
        scratch = None
        try:
            i = start
            while i < stop:
                offset, n = chunks.run(i, stop)                              # the rest of image i's chunk
                views = []
                for r in rows[i - start:i - start + n]:
                    if r < 0:  # not wanted (another rank's, or before a resume point)
                        scratch = scratch if scratch is not None else np.empty(IMAGE_BYTES, np.uint8)
                        views.append(memoryview(scratch))
                    else:
                        views.append(memoryview(out[r].reshape(-1)))
                if self._preadv(shard, fd, views, offset) != n * IMAGE_BYTES:
                    raise DataError(f"shard {path} is truncated (images {i}..{i + n} are missing): "
                                    "run `alexnet prep` again")
                i += n
        finally:
            os.close(fd)

    def _open(self, shard: int) -> int:
        try:
            return os.open(self.paths[shard], os.O_RDONLY)
        except OSError as exc:
            raise self._unreadable(shard, exc) from None

    def _preadv(self, shard: int, fd: int, buffers: list, offset: int) -> int:
        try:
            return os.preadv(fd, buffers, offset)
        except OSError as exc:                           # EIO, ESTALE: a disk or a network mount failing
            raise DataError(f"shard {self.paths[shard]} cannot be read ({exc.strerror or exc}): check the disk "
                            f"or network mount {self.manifest.root} is on") from None

    def _unreadable(self, shard: int, exc: OSError) -> DataError:
        """A shard that was there when the loader was made cannot be opened now."""
        if exc.errno == errno.ENOENT:
            return self._gone(shard)
        return DataError(f"shard {self.paths[shard]} cannot be opened ({exc.strerror or exc}): check it, and the "
                         f"disk or network mount {self.manifest.root} is on")

    def _gone(self, shard: int) -> DataError:
        """A shard that was there when the loader was made is gone: it, or the whole data
        folder, was moved or deleted while in use (prep would not help: the data was whole)."""
        path, root = self.paths[shard], self.manifest.root
        if not root.is_dir():
            return DataError(f"shard {path} cannot be opened: {root} was moved or deleted while in use")
        return DataError(f"shard {path} was moved or deleted while in use: put it back, or run `alexnet prep` again")

    def read_jpegs(self, shard: int, start: int, stop: int) -> list[np.ndarray]:
        """The stored JPEG files of images start..stop of a jpeg shard, as uint8 views of one
        buffer filled by one positional read (no h5py call, no lock)."""
        base, offsets = self.chunks[shard]
        o = offsets[start:stop + 1].tolist()
        buf = np.empty(o[-1] - o[0], np.uint8)
        fd = self._open(shard)
        try:
            got = self._preadv(shard, fd, [buf], base + o[0]) if len(buf) else 0
        finally:
            os.close(fd)
        if got != len(buf):
            raise DataError(f"shard {self.paths[shard]} is truncated (images {start}..{stop} are missing): "
                            "run `alexnet prep` again")
        return [buf[o[j] - o[0]:o[j + 1] - o[0]] for j in range(stop - start)]


class ShardLoader:
    """Batches of one split, in an order fixed by (seed, epoch); see the module doc.

    Every shard's size is checked against the manifest when the loader is made (a truncated
    shard is named at once); `verify=True` also checks every shard's sha256 (a full read).
    `Batch.indices` stay on the CPU (they index `read_split_index`'s lists)."""

    def __init__(self, data_dir, split: str, batch_size: int, *, shuffle: bool, seed: int = 0,
                 drop_last: bool = False, rank: int = 0, world_size: int = 1,
                 device: str | torch.device = "cpu", workers: int | None = None,
                 buffer_blocks: int = 8, prefetch: int = 4, verify: bool = False, decode: str = "cpu"):
        if batch_size < 1:
            raise DataError(f"batch size must be positive, got {batch_size}")
        if workers is not None and workers < 1:
            raise UsageError(f"workers must be at least 1, got {workers}", field="workers", value=workers)
        if not 0 <= rank < world_size:
            raise DataError(f"rank {rank} is not in 0..{world_size - 1}")
        self.manifest = read_manifest(data_dir)
        if verify:  # a full read of every shard: sha256 against the manifest
            bad = verify_shards(data_dir, split)
            if bad:
                raise DataError(f"shard(s) {', '.join(bad)} of {data_dir} do not match the sha256 in its manifest "
                                "(damaged): run `alexnet prep SRC OUT --verify` to make them again")
        self.split, self.batch_size, self.shuffle, self.seed = split, batch_size, shuffle, seed
        self.drop_last, self.rank, self.world_size = drop_last, rank, world_size
        self.device = torch.device(device)
        self.decode = resolve_decode(decode, self.manifest.format, self.device)   # cpu, gpu or none (raw)
        self.workers = workers or default_workers(self.manifest.format)
        self.prefetch = max(1, prefetch)
        self.reader = _ShardReader(self.manifest, self.manifest.split(split).shards)
        self.labels = np.concatenate(self.reader.labels) if self.reader.labels else np.zeros(0, np.int64)
        self.index = SplitIndex.from_counts(self.reader.names, self.reader.counts)   # global number <-> shard, row
        block = self.reader.block
        self.blocks = [(k, s, min(s + block, c)) for k, c in enumerate(self.reader.counts) for s in range(0, c, block)]
        self.window = max(1, buffer_blocks) * block                          # images per shuffle window
        total = len(self.labels)
        self.lo = rank * total // world_size                                 # this rank's slice of the stream
        hi = (rank + 1) * total // world_size
        if drop_last:
            hi = self.lo + (total // world_size) // batch_size * batch_size  # equal on every rank
        self.num_images = hi - self.lo
        self.buffers = _BufferPool(max(8, 2 * (self.workers + 1) + self.prefetch + 2))
        self._decode_stream = None                                           # decode="gpu" on CUDA

    def __len__(self) -> int:
        """Batches per epoch for this rank."""
        return -(-self.num_images // self.batch_size)

    # ------------------------------------------------------------------ the order

    def _stream(self, epoch: int) -> tuple[list[tuple[int, int, int]], np.ndarray]:
        """The epoch's blocks in stream order and the stream position where each begins."""
        blocks = self.blocks
        if self.shuffle:
            order = np.random.default_rng([self.seed, epoch]).permutation(len(blocks))
            blocks = [blocks[i] for i in order]
        starts = np.cumsum([0, *(b[2] - b[1] for b in blocks)])
        return blocks, starts

    def _slots(self, epoch: int, starts: np.ndarray, w: int, lo: int, hi: int) -> tuple[int, np.ndarray]:
        """Where window w's images go: (a, slot), a the window's first stream position and
        slot[i] the output row (counted from lo) of the image at stream position a + i, or -1
        if it is not among positions lo..hi (another rank's, or before a resume point). The
        window is permuted as a whole, so the rows lo..hi take a fixed subset of its images."""
        a, b = w * self.window, min((w + 1) * self.window, int(starts[-1]))
        if self.shuffle:
            order = np.random.default_rng([self.seed, epoch, w]).permutation(b - a)[lo - a:hi - a]
        else:
            order = np.arange(lo - a, hi - a)                               # window-relative positions
        slot = np.full(b - a, -1, np.int64)
        slot[order] = np.arange(hi - lo)
        return a, slot

    def _parts(self, a: int, slot: np.ndarray) -> list[tuple[int, int]]:
        """Window a..a+len(slot) cut into runs of `PART_IMAGES` stream positions (p0, p1),
        from its first wanted image to its last: the worker threads' unit of work, so that
        every thread has work until the window is done."""
        wanted = np.flatnonzero(slot >= 0)
        if not len(wanted):
            return []
        p, end = a + int(wanted[0]), a + int(wanted[-1]) + 1
        return [(q, min(q + PART_IMAGES, end)) for q in range(p, end, PART_IMAGES)]

    def _read_part(self, blocks, starts: np.ndarray, a: int, slot: np.ndarray, p0: int, p1: int,
                   images: "_Rows", index: np.ndarray) -> None:
        """Stream positions p0..p1 of the window that begins at a: each wanted image is read
        (decoded) straight into images[slot], its global index into index[slot]."""
        pos, k = p0, bisect.bisect_right(starts, p0) - 1
        while pos < p1:  # the blocks (or parts of them) under p0..p1, in stream order
            shard, s, e = blocks[k]
            s0 = s + (pos - int(starts[k]))
            n = min(e - s0, p1 - pos)
            rows = slot[pos - a:pos - a + n]
            wanted = rows >= 0
            if wanted.any():
                if self.decode == "gpu":   # the stored JPEGs, decoded per batch on the device (_emit)
                    for r, blob in zip(rows.tolist(), self.reader.read_jpegs(shard, s0, s0 + n)):
                        if r >= 0:
                            images[r] = blob
                else:
                    self.reader.read(shard, s0, s0 + n, images, rows)
                index[rows[wanted]] = np.arange(s0, s0 + n)[wanted] + self.index.starts[shard]
            pos, k = pos + n, k + 1

    def _windows(self, epoch: int, start: int) -> list[tuple[int, int, int]]:
        """(window, lo, hi) covering this rank's stream positions from `start` on."""
        lo, hi = self.lo + start, self.lo + self.num_images
        out = []
        for w in range(lo // self.window, -(-hi // self.window)):
            a, b = max(lo, w * self.window), min(hi, (w + 1) * self.window)
            if a < b:
                out.append((w, a, b))
        return out

    # ------------------------------------------------------------------ the epoch

    def epoch(self, epoch: int, start_batch: int = 0) -> Iterator[Batch]:
        """The batches of `epoch` for this rank, from batch `start_batch` on."""
        start = min(start_batch * self.batch_size, self.num_images)
        stop = threading.Event()
        out: queue.Queue = queue.Queue(maxsize=self.prefetch)
        producer = threading.Thread(target=self._produce, args=(epoch, start, out, stop), daemon=True,
                                    name=f"ShardLoader-{self.split}-e{epoch}")
        producer.start()
        copier = _DeviceCopier(self.device)
        try:
            while True:
                item = out.get()
                if item is None:
                    break
                if isinstance(item, BaseException):
                    raise item
                ready = copier.push(*item)   # starts this batch's copy, hands back the previous one
                if ready is not None:
                    yield ready
            if (last := copier.flush()) is not None:
                yield last
        finally:
            stop.set()
            while producer.is_alive():  # unblock a producer waiting on a full queue
                try:
                    out.get(timeout=0.05)
                except queue.Empty:
                    pass

    def _produce(self, epoch: int, start: int, out: queue.Queue, stop: threading.Event) -> None:
        """Producer thread: the batches' buffers, filled by the worker threads window by window
        (each image decoded or read straight into its row), handed over in order as soon as
        the windows before their last row are done."""
        try:
            blocks, starts = self._stream(epoch)
            batches = _EpochBatches(self, start)
            windows = _WindowsInFlight(self.workers)
            todo = iter(self._windows(epoch, start))
            with ThreadPoolExecutor(self.workers, thread_name_prefix="ShardLoader") as pool, \
                    contextlib.ExitStack() as cleanup:
                cleanup.callback(windows.cancel)   # stopped early, or failed: the parts not yet started are dropped
                while True:
                    while windows.want_more() and not stop.is_set() and (w := next(todo, None)) is not None:
                        windows.add(*self._submit_window(pool, epoch, blocks, starts, w, batches))
                    if not windows.pending or stop.is_set():
                        break
                    q0, q1, index = windows.wait_oldest()
                    batches.record(q0, q1, index)
                    for images, labels, idx in batches.take_complete(q1):
                        self._emit(images, labels, idx, out, stop)
            _put(out, None, stop)
        except BaseException as exc:  # handed to the consumer, which raises it
            _put(out, exc, stop)

    def _submit_window(self, pool: ThreadPoolExecutor, epoch: int, blocks, starts: np.ndarray,
                       w: tuple[int, int, int], batches: "_EpochBatches") -> tuple[list, int, int, np.ndarray]:
        """Window w = (window, lo, hi) handed to the worker threads part by part, once the
        buffers of its batches exist: (the parts' futures, q0, q1, index), q0..q1 its output
        positions and index the global index of each of its images, filled by the parts."""
        q0, q1 = w[1] - batches.base, w[2] - batches.base
        images = batches.rows_for(q0, q1)
        a, slot = self._slots(epoch, starts, *w)
        index = np.empty(q1 - q0, np.int64)
        futures = [pool.submit(self._read_part, blocks, starts, a, slot, p0, p1, images, index)
                   for p0, p1 in self._parts(a, slot)]
        return futures, q0, q1, index

    def _emit(self, images, labels: torch.Tensor, index: torch.Tensor, out: queue.Queue,
              stop: threading.Event) -> None:
        """Put one finished batch on the queue; with decode="gpu", `images` is the list of its
        JPEG files, decoded here on the device."""
        if self.decode == "gpu":
            images = self._decode_on_device(images)
        _put(out, (images, labels, index), stop)

    def _decode_on_device(self, blobs: list[np.ndarray]):
        """One batch's JPEGs -> uint8 (B, 256, 256, 3) on the device, decoded in one batched
        call (in the producer thread, on its own stream on CUDA, so that it overlaps the
        training step); (images, event marking the end of the decode)."""
        if self.device.type != "cuda":
            return decode_jpegs_on(blobs, self.device), None
        if self._decode_stream is None:
            self._decode_stream = torch.cuda.Stream(self.device)
        with torch.cuda.stream(self._decode_stream):
            images = decode_jpegs_on(blobs, self.device)
            done = torch.cuda.Event()
            done.record(self._decode_stream)
        return images, done


class _BufferPool:
    """Host batch buffers, uint8 (n, 256, 256, 3), used again once nothing refers to them.

    A fresh 25 MB buffer per batch costs page faults (the kernel zeroes every page the decode
    then overwrites: about a fifth of the decode's time). Each buffer handed out is a new
    numpy view of a kept array, and torch.from_numpy's storage holds that view until the
    last tensor or view of the batch is gone; a weak reference to it says when, so a batch
    the caller still holds is never overwritten."""

    def __init__(self, keep: int):
        self.keep, self.lock = keep, threading.Lock()
        self.arrays: list[tuple[np.ndarray, weakref.ref]] = []     # (kept array, its view in use)

    def get(self, n: int) -> np.ndarray:
        with self.lock:
            for i, (array, ref) in enumerate(self.arrays):
                if len(array) == n and ref() is None:
                    view = array.view()
                    self.arrays[i] = (array, weakref.ref(view))
                    return view
            array = np.empty((n, *IMAGE_SHAPE), np.uint8)                   # (n, 256, 256, 3)
            view = array.view()
            if len(self.arrays) < self.keep:
                self.arrays.append((array, weakref.ref(view)))
            return view


class _EpochBatches:
    """The host buffers of one epoch's batches for this rank, from stream position `base` (the
    rank's first, or a resume point) on: output position q is row q % size of batch q // size.
    A batch's buffers are made when the first window with rows in it is queued, and handed
    over (take_complete) once every window before its last row is done."""

    def __init__(self, loader: ShardLoader, start: int):
        self.base, self.total, self.size = loader.lo + start, loader.num_images - start, loader.batch_size
        self.gpu, self.pin = loader.decode == "gpu", loader.device.type == "cuda"
        self.buffer_pool, self.labels = loader.buffers, loader.labels
        self.buffers: dict[int, tuple] = {}   # batch number -> (image tensor, None for gpu; labels; index)
        self.rows: dict[int, object] = {}     # batch number -> its rows: numpy (n, 256, 256, 3) or a list (gpu)
        self.emitted = 0                      # batches handed over

    def rows_for(self, q0: int, q1: int) -> _Rows:
        """Output positions q0..q1 as one sequence of rows, their batches' buffers made if need be."""
        for b in range(q0 // self.size, (q1 - 1) // self.size + 1):
            if b not in self.buffers:
                self._allocate(b)
        return _Rows(self.rows, q0, self.size)

    def _allocate(self, b: int) -> None:
        n = min(self.size, self.total - b * self.size)
        if self.gpu:
            tensor, self.rows[b] = None, [None] * n
        elif self.pin:                         # torch's pinned allocator recycles its blocks itself
            tensor = torch.empty((n, *IMAGE_SHAPE), dtype=torch.uint8, pin_memory=True)  # (n, 256, 256, 3)
            self.rows[b] = tensor.numpy()
        else:
            self.rows[b] = self.buffer_pool.get(n)
            tensor = torch.from_numpy(self.rows[b])
        self.buffers[b] = (tensor, torch.empty(n, dtype=torch.int64, pin_memory=self.pin),
                           torch.empty(n, dtype=torch.int64))

    def record(self, q0: int, q1: int, index: np.ndarray) -> None:
        """A finished window's labels and global indices (`index`, of positions q0..q1) into the
        rows of their batches."""
        size = self.size
        for b in range(q0 // size, (q1 - 1) // size + 1):
            a, e = max(q0, b * size), min(q1, (b + 1) * size)
            _, labels, idx = self.buffers[b]
            idx[a - b * size:e - b * size] = torch.from_numpy(index[a - q0:e - q0])
            labels[a - b * size:e - b * size] = torch.from_numpy(self.labels[index[a - q0:e - q0]])

    def take_complete(self, q1: int) -> list[tuple]:
        """The batches not yet handed over whose rows all lie before q1 (every window before q1
        is done), in order, as (images, labels, index); images: the image tensor, or the list of
        the batch's JPEG files (decode="gpu")."""
        done = []
        while self.emitted * self.size < self.total and min((self.emitted + 1) * self.size, self.total) <= q1:
            tensor, labels, idx = self.buffers.pop(self.emitted)
            rows = self.rows.pop(self.emitted)
            done.append((tensor if tensor is not None else rows, labels, idx))
            self.emitted += 1
        return done


class _WindowsInFlight:
    """The windows handed to the worker threads and not yet finished, oldest first: each one's
    parts (futures), its output positions q0..q1 and the global indices its parts fill."""

    def __init__(self, workers: int):
        self.workers = workers
        self.pending: collections.deque = collections.deque()   # (futures, q0, q1, index)
        self.parts = 0                                           # parts of the pending windows

    def want_more(self) -> bool:
        """Whether to queue another window: enough parts queued that no thread idles while the
        oldest window completes."""
        return len(self.pending) < 2 or self.parts < 2 * self.workers

    def add(self, futures: list, q0: int, q1: int, index: np.ndarray) -> None:
        self.pending.append((futures, q0, q1, index))
        self.parts += len(futures)

    def wait_oldest(self) -> tuple[int, int, np.ndarray]:
        """(q0, q1, index) of the oldest window, once its parts are done; a failed part raises
        here, and the window stays pending, so that cancel drops its other parts too."""
        futures, q0, q1, index = self.pending[0]
        for future in futures:
            future.result()
        self.pending.popleft()
        self.parts -= len(futures)
        return q0, q1, index

    def cancel(self) -> None:
        """Drop the parts not yet started (stopped early, or failed)."""
        for futures, *_ in self.pending:
            for future in futures:
                future.cancel()


class _Rows:
    """The rows of consecutive batches seen as one sequence: row r is the image at output
    position q0 + r, i.e. row (q0 + r) % size of batch (q0 + r) // size."""

    def __init__(self, batches: dict, q0: int, size: int):
        self.batches, self.q0, self.size = batches, q0, size

    def __getitem__(self, r: int):
        b, i = divmod(self.q0 + int(r), self.size)
        return self.batches[b][i]

    def __setitem__(self, r: int, value) -> None:
        b, i = divmod(self.q0 + int(r), self.size)
        self.batches[b][i] = value


class _DeviceCopier:
    """Host batches -> device batches. On CUDA the copies run on a side stream, one batch
    ahead: batch k+1 is already on its way (from pinned memory, over PCIe) while the step of
    batch k runs, and the compute stream waits for exactly batch k's copy (an event), never
    for the host. Elsewhere a batch is handed over as it comes."""

    def __init__(self, device: torch.device):
        self.device = device
        self.stream = torch.cuda.Stream(device) if device.type == "cuda" else None
        self.pending: tuple[Batch, torch.cuda.Event] | None = None

    def push(self, images, labels: torch.Tensor, index: torch.Tensor) -> Batch | None:
        """Start copying a host batch; return the batch before it, ready to use, if any.
        `images` may be (images already on the device, the event that marks them ready)."""
        decoded = None
        if isinstance(images, tuple):    # decoded on the device (decode="gpu")
            images, decoded = images
        if self.stream is None:
            return Batch(images.to(self.device), labels.to(self.device), index)
        with torch.cuda.stream(self.stream):
            if decoded is not None:
                self.stream.wait_event(decoded)
            batch = Batch(images.to(self.device, non_blocking=True), labels.to(self.device, non_blocking=True),
                          index)
            done = torch.cuda.Event()
            done.record(self.stream)
        ready, self.pending = self.flush(), (batch, done)
        return ready

    def flush(self) -> Batch | None:
        """The batch in flight, made safe to use on the current stream."""
        if self.pending is None:
            return None
        (batch, done), self.pending = self.pending, None
        current = torch.cuda.current_stream(self.device)
        current.wait_event(done)
        for t in (batch.images, batch.labels):   # freed memory is reused only after the step's use of it
            t.record_stream(current)
        return batch


def _put(q: queue.Queue, item, stop: threading.Event) -> None:
    while not stop.is_set():
        try:
            q.put(item, timeout=0.1)
            return
        except queue.Full:
            continue
