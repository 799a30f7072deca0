"""The shard loader (alexnet_cli.loader): determinism by (seed, epoch), independence from the
number of workers, exact resume, disjoint and complete ranks, content, corrupt shards."""

from __future__ import annotations

import shutil
import threading
import time

import h5py
import numpy as np
import pytest
import torch

from alexnet_cli.errors import DataError
from alexnet_cli import loader as loader_module
from alexnet_cli.loader import ShardLoader, _ShardReader, default_workers
from alexnet_cli.prep import PrepOptions, prepare
from alexnet_cli.shards import read_images, read_manifest, read_split_index


def _run(loader: ShardLoader, epoch: int = 0, start_batch: int = 0):
    return [(b.indices.tolist(), b.labels.tolist(), b.images) for b in loader.epoch(epoch, start_batch)]


def _indices(batches) -> list[list[int]]:
    return [i for i, _, _ in batches]


def _all_images(data) -> tuple[np.ndarray, np.ndarray]:
    """Every image and label of the train split in its global order, read with h5py."""
    m = read_manifest(data)
    images, labels = [], []
    for name in m.split("train").shards:
        with h5py.File(data / name, "r") as f:
            images.append(read_images(f, 0, len(f["labels"])))
            labels.append(f["labels"][:])
    return np.concatenate(images), np.concatenate(labels)


def test_same_seed_and_epoch_same_batches_other_epochs_differ(tiny_data):
    loader = ShardLoader(tiny_data, "train", 10, shuffle=True, seed=3, workers=2, buffer_blocks=2)
    a, b = _run(loader, 1), _run(loader, 1)
    assert _indices(a) == _indices(b)
    assert all(torch.equal(x[2], y[2]) for x, y in zip(a, b))
    assert _indices(_run(loader, 2)) != _indices(a)
    other_seed = ShardLoader(tiny_data, "train", 10, shuffle=True, seed=4, workers=2, buffer_blocks=2)
    assert _indices(_run(other_seed, 1)) != _indices(a)
    assert sorted(sum(_indices(a), [])) == list(range(48))       # every image once per epoch


def test_workers_do_not_change_the_order(tiny_data):
    runs = [_indices(_run(ShardLoader(tiny_data, "train", 7, shuffle=True, seed=1, workers=w, buffer_blocks=2,
                                      prefetch=p), 5)) for w, p in ((1, 1), (3, 4), (8, 2))]
    assert runs[0] == runs[1] == runs[2]


@pytest.mark.parametrize("part", [3, 32])
def test_threads_sharing_a_window_give_the_same_batches(tiny_data, monkeypatch, part):
    """Threads share each window in parts of PART_IMAGES stream positions (3: parts that begin
    and end inside the 8-image blocks; 32: two parts of the one 48-image window): the batches
    hold the same images in the same order on any number of threads, each its own image."""
    monkeypatch.setattr(loader_module, "PART_IMAGES", part)
    images, labels = _all_images(tiny_data)
    runs = []
    for workers in (1, 2, 5):
        batches = _run(ShardLoader(tiny_data, "train", 7, shuffle=True, seed=1, workers=workers, buffer_blocks=8), 3)
        for index, got_labels, got in batches:
            assert np.array_equal(got.numpy(), images[index]) and got_labels == labels[index].tolist()
        runs.append(_indices(batches))
    assert runs[0] == runs[1] == runs[2] and sorted(sum(runs[0], [])) == list(range(48))


def test_two_threads_both_work_on_a_single_window(tiny_data, monkeypatch):
    """The epoch's one window (48 images, parts of 32) is read by both threads, not by one
    while the other idles (the cause of poor scaling on small epochs)."""
    readers, read = set(), _ShardReader.read

    def slow_read(self, *args):
        readers.add(threading.get_ident())
        time.sleep(0.05)
        return read(self, *args)

    monkeypatch.setattr(_ShardReader, "read", slow_read)
    assert sum(len(b.labels) for b in ShardLoader(tiny_data, "train", 16, shuffle=True, workers=2,
                                                  buffer_blocks=8).epoch(0)) == 48
    assert len(readers) == 2


@pytest.mark.parametrize("shuffle", [True, False])
def test_start_batch_resumes_exactly(tiny_data, shuffle):
    loader = ShardLoader(tiny_data, "train", 5, shuffle=shuffle, seed=2, workers=2, buffer_blocks=2)
    full = _run(loader, 4)
    for k in (0, 1, 4, 9, 10):
        tail = _run(loader, 4, start_batch=k)
        assert _indices(tail) == _indices(full)[k:]
        assert all(torch.equal(x[2], y[2]) for x, y in zip(tail, full[k:]))


def test_lengths_and_drop_last(tiny_data):
    loose = ShardLoader(tiny_data, "train", 10, shuffle=True)
    tight = ShardLoader(tiny_data, "train", 10, shuffle=True, drop_last=True)
    assert (len(loose), loose.num_images) == (5, 48) and (len(tight), tight.num_images) == (4, 40)
    assert [len(i) for i in _indices(_run(loose))] == [10, 10, 10, 10, 8]
    assert [len(i) for i in _indices(_run(tight))] == [10, 10, 10, 10]


@pytest.mark.parametrize("shuffle, drop_last", [(True, False), (False, False), (True, True)])
def test_ranks_are_disjoint_and_complete(tiny_data, shuffle, drop_last):
    ranks = [ShardLoader(tiny_data, "train", 4, shuffle=shuffle, seed=9, drop_last=drop_last, rank=r,
                         world_size=3, buffer_blocks=2) for r in range(3)]
    seen = [sum(_indices(_run(loader, 1)), []) for loader in ranks]
    flat = sum(seen, [])
    assert len(flat) == len(set(flat))                             # disjoint
    assert [len(s) for s in seen] == [loader.num_images for loader in ranks]
    if drop_last:
        assert len({len(loader) for loader in ranks}) == 1 and all(len(s) % 4 == 0 for s in seen)
    else:
        assert sorted(flat) == list(range(48))                      # together: every image once


def test_unshuffled_is_the_global_order_with_the_right_content(tiny_data):
    images, labels = _all_images(tiny_data)
    _, index_labels = read_split_index(tiny_data, "train")
    batches = _run(ShardLoader(tiny_data, "train", 16, shuffle=False, workers=2))
    assert sum(_indices(batches), []) == list(range(48))
    got = torch.cat([b[2] for b in batches])
    assert got.dtype == torch.uint8 and got.shape == (48, 256, 256, 3)
    np.testing.assert_array_equal(got.numpy(), images)
    assert sum((b[1] for b in batches), []) == labels.tolist() == index_labels.tolist()


def test_shuffled_batches_carry_their_own_images_and_mix_classes(tiny_data):
    images, labels = _all_images(tiny_data)
    batches = _run(ShardLoader(tiny_data, "train", 8, shuffle=True, seed=0, workers=2, buffer_blocks=2), 3)
    for idx, lab, img in batches:
        np.testing.assert_array_equal(img.numpy(), images[idx])
        assert lab == labels[idx].tolist()
        assert len(set(lab)) >= 2


def test_jpeg_shards(tiny_tree, tmp_path):
    data = tmp_path / "jpeg"
    prepare(tiny_tree, data, PrepOptions(format="jpeg", shard_size=16, block_size=8, splits=["train"], workers=1))
    images, _ = _all_images(data)
    batches = _run(ShardLoader(data, "train", 12, shuffle=True, seed=1, workers=2), 0)
    for idx, _, img in batches:
        np.testing.assert_array_equal(img.numpy(), images[idx])


def test_corrupt_shards_are_named(tiny_data, tmp_path):
    data = tmp_path / "data"
    shutil.copytree(tiny_data, data)
    shard = data / "train-00001.h5"
    good = shard.read_bytes()
    shard.write_bytes(good[:-5000])                                 # truncated: caught by size
    with pytest.raises(DataError, match="train-00001.h5 is truncated or damaged"):
        ShardLoader(data, "train", 8, shuffle=True)
    shard.write_bytes(b"\0" * len(good))                            # right size, not HDF5
    with pytest.raises(DataError, match="train-00001.h5"):
        ShardLoader(data, "train", 8, shuffle=True)
    flipped = bytearray(good)
    flipped[len(good) // 2] ^= 0xFF                                 # same size, one bad byte
    shard.write_bytes(bytes(flipped))
    with pytest.raises(DataError, match="train-00001.h5 .*sha256"):
        ShardLoader(data, "train", 8, shuffle=True, verify=True)
    shard.write_bytes(good)
    loader = ShardLoader(data, "train", 8, shuffle=False, verify=True)
    shard.write_bytes(good[:len(good) // 2])                        # damaged while training
    with pytest.raises(DataError, match="train-00001.h5"):
        _run(loader)


def test_stopping_early_leaves_no_threads(tiny_data):
    before = threading.active_count()
    loader = ShardLoader(tiny_data, "train", 2, shuffle=True, workers=3, prefetch=1)
    it = loader.epoch(0)
    next(it)
    it.close()
    deadline = time.time() + 5
    while threading.active_count() > before and time.time() < deadline:
        time.sleep(0.01)
    assert threading.active_count() == before


def test_bad_arguments(tiny_data):
    with pytest.raises(DataError, match="rank 3"):
        ShardLoader(tiny_data, "train", 8, shuffle=True, rank=3, world_size=2)
    with pytest.raises(DataError, match="no split 'test'"):
        ShardLoader(tiny_data, "test", 8, shuffle=True)
    assert 1 <= default_workers() <= 8


def test_default_workers_by_format(monkeypatch):
    """Raw shards are read by at most 8 threads; jpeg shards, which decode, use all cores but two."""
    import alexnet_cli.loader as loader_module
    for cores, raw, jpeg in ((2, 1, 1), (16, 8, 14), (64, 8, 32), (1, 1, 1)):
        monkeypatch.setattr(loader_module, "usable_cores", lambda c=cores: c)
        assert (default_workers("raw"), default_workers("jpeg")) == (raw, jpeg), cores


@pytest.mark.gpu
def test_cuda_batches_arrive_whole_through_the_side_stream(tiny_data):
    """Every batch of a CUDA epoch (copied one ahead on a side stream) holds the same images as
    the CPU loader's, even when the consumer keeps the GPU busy between batches."""
    cpu = list(ShardLoader(tiny_data, "train", 16, shuffle=True).epoch(0))
    loader = ShardLoader(tiny_data, "train", 16, shuffle=True, device="cuda")
    busy = torch.randn(2048, 2048, device="cuda")
    got = []
    for batch in loader.epoch(0):
        assert batch.images.is_cuda and batch.labels.is_cuda and batch.images.dtype == torch.uint8
        for _ in range(5):                     # a step's worth of work queued before the batch is read
            busy = busy @ busy / 2048
        got.append((batch.images.cpu(), batch.labels.cpu(), batch.indices))     # exact: no float sums
    assert len(got) == len(cpu) == len(loader)
    for (images, labels, index), ref in zip(got, cpu):
        assert torch.equal(index, ref.indices) and torch.equal(labels, ref.labels)
        assert torch.equal(images, ref.images)
