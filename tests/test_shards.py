"""The on-disk schema (alexnet_cli.shards): manifest reading and its errors, the split
index, shard checks, and the writer's block-aligned chunks."""

from __future__ import annotations

import io
import json
import os
import shutil

import h5py
import numpy as np
import pytest
from PIL import Image

from alexnet_cli import jpeg as jpeg_module
from alexnet_cli.errors import DataError
from alexnet_cli.atomic import abandoned, claim
from alexnet_cli.jpeg import decode_jpeg, encode_jpeg
from alexnet_cli.shards import (ShardWriter, open_shard, read_images, read_manifest, read_mean_image, read_split_index,
                                split_index, verify_shards)


def test_manifest_round_trip(tiny_data):
    m = read_manifest(tiny_data)
    assert m.root == tiny_data and m.format == "raw" and m.block_size == 8
    assert m.split("train").count == 48 and m.split("val").count == 16
    assert m.split("train").shards == ["train-00000.h5", "train-00001.h5", "train-00002.h5"]
    assert sum(m.split("train").shard_counts) == 48
    assert set(m.shards) == {*m.split("train").shards, *m.split("val").shards}
    assert m.mean_image == "mean_image.npy" and len(m.mean_rgb) == 3 and m.skipped == []


def test_missing_split_names_the_existing_ones(tiny_data):
    with pytest.raises(DataError, match=r"no split 'test' .*\(splits: train, val\)"):
        read_manifest(tiny_data).split("test")


def test_missing_or_corrupt_manifest(tmp_path, tiny_data):
    with pytest.raises(DataError, match=r"manifest.json not found: run `alexnet prep"):
        read_manifest(tmp_path)
    (tmp_path / "manifest.json").write_text("{not json")
    with pytest.raises(DataError, match="corrupt"):
        read_manifest(tmp_path)
    data = json.loads((tiny_data / "manifest.json").read_text())
    (tmp_path / "manifest.json").write_text(json.dumps({**data, "format_version": 99}))
    with pytest.raises(DataError, match="newer"):
        read_manifest(tmp_path)


def test_mean_image(tiny_data):
    mean = read_mean_image(tiny_data)
    assert mean.shape == (256, 256, 3) and mean.dtype == np.float32
    np.testing.assert_allclose(mean.mean(axis=(0, 1)), read_manifest(tiny_data).mean_rgb, atol=1e-3)


def test_split_index_is_the_shards_in_order(tiny_data, tiny_tree):
    paths, labels = read_split_index(tiny_data, "val")
    assert labels.dtype == np.int64 and len(paths) == len(labels) == 16
    classes = read_manifest(tiny_data).classes
    for p, y in zip(paths, labels):
        assert (tiny_tree / p).is_file() and p.split("/")[1] == classes[y]
    assert paths == sorted(paths)    # val keeps the sorted order; train is hashed
    train, _ = read_split_index(tiny_data, "train")
    assert sorted(train) != train and len(set(train)) == 48


def test_global_image_numbers_map_to_shard_and_row_even_in_older_manifests(tiny_data, tmp_path):
    """split_index: image i of a split is row i - starts[k] of shard k; a manifest written
    before per-shard counts were recorded gets them from the shards (same index)."""
    index = split_index(read_manifest(tiny_data), "train")
    assert index.shards == ["train-00000.h5", "train-00001.h5", "train-00002.h5"] and index.count == 48
    assert index.starts.tolist() == [0, 16, 32, 48]
    rows = index.rows_by_shard([47, 3, 16, 3, -1, 48, 20])
    assert [r.tolist() for r in rows] == [[3], [0, 4], [15]]        # sorted, once each; outside: nowhere
    data = tmp_path / "old"
    shutil.copytree(tiny_data, data)
    manifest = json.loads((data / "manifest.json").read_text())
    for split in manifest["splits"].values():
        del split["shard_counts"]
    (data / "manifest.json").write_text(json.dumps(manifest))
    older = split_index(read_manifest(data), "train")
    assert older.shards == index.shards and older.starts.tolist() == index.starts.tolist()
    paths, _ = read_split_index(data, "train")
    with open_shard(read_manifest(data), "train-00001.h5") as f:
        assert f["paths"][4].decode() == paths[20]                   # image 20 = shard 1, row 4


def test_truncated_shard_is_named(tiny_data, tmp_path):
    data = tmp_path / "data"
    shutil.copytree(tiny_data, data)
    path = data / "val-00000.h5"
    path.write_bytes(path.read_bytes()[:-1000])
    m = read_manifest(data)
    with pytest.raises(DataError, match=r"val-00000.h5 is truncated or damaged"):
        open_shard(m, "val-00000.h5")
    assert verify_shards(data) == ["val-00000.h5"]


def test_flipped_byte_is_found_by_verify(tiny_data, tmp_path):
    data = tmp_path / "data"
    shutil.copytree(tiny_data, data)
    assert verify_shards(data) == []
    path = data / "train-00001.h5"
    raw = bytearray(path.read_bytes())
    raw[len(raw) // 2] ^= 0xFF
    path.write_bytes(bytes(raw))
    assert verify_shards(data, "train") == ["train-00001.h5"]


@pytest.mark.parametrize("fmt", ["raw", "jpeg"])
def test_writer_chunks_and_pixel_sum(tmp_path, fmt):
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (11, 8, 8, 3), dtype=np.uint8).repeat(32, axis=1).repeat(32, axis=2)
    path = tmp_path / "train-00000.h5"
    w = ShardWriter(path, split="train", fmt=fmt, block_size=4, jpeg_quality=90, signature="sig")
    for a, b in ((0, 3), (3, 9), (9, 11)):  # pieces that do not line up with the blocks
        items = images[a:b] if fmt == "raw" else [encode_jpeg(x, 90) for x in images[a:b]]
        w.append(items, list(range(a, b)), [f"p{i}" for i in range(a, b)], images[a:b].sum(0, dtype=np.int64))
    assert not path.exists()                         # only the temporary file so far
    w.finish([{"path": "x", "reason": "empty file"}])
    with h5py.File(path, "r") as f:
        assert f.attrs["count"] == 11 and json.loads(f.attrs["skipped"]) == [{"path": "x", "reason": "empty file"}]
        assert f["labels"][:].tolist() == list(range(11)) and f["paths"][3].decode() == "p3"
        np.testing.assert_array_equal(f["pixel_sum"][:], images.sum(0, dtype=np.int64))
        got = read_images(f, 2, 7)
    if fmt == "raw":
        np.testing.assert_array_equal(got, images[2:7])
    else:
        assert np.abs(got.astype(int) - images[2:7]).mean() < 6
    assert not list(tmp_path.glob(".*.tmp"))


def test_jpeg_round_trip_size_check():
    img = np.zeros((256, 256, 3), np.uint8)
    assert decode_jpeg(encode_jpeg(img, 95)).shape == (256, 256, 3)
    with pytest.raises(ValueError):
        decode_jpeg(encode_jpeg(img[:100], 95))
    data = encode_jpeg(np.full((256, 256, 3), 90, np.uint8), 95)
    for bad in (data[: len(data) // 2], np.frombuffer(b"not a JPEG", np.uint8)):
        with pytest.raises(ValueError, match="cannot be decoded: (Premature end|.*subsampling)"):
            decode_jpeg(bad)
    with pytest.raises(ValueError, match="expected"):
        decode_jpeg(encode_jpeg(np.zeros((200, 256, 3), np.uint8), 95))


@pytest.mark.parametrize("quality", [75, 90, 95])
@pytest.mark.parametrize("decoder", ["simplejpeg", "pil"])
def test_jpeg_decode_is_pixel_identical_to_pil(quality, decoder, monkeypatch):
    """Stored JPEGs are decoded by simplejpeg (faster, GIL released); the pixels must be PIL's
    exactly, so that the mean image prep computes and the images training sees do not depend on it."""
    rng = np.random.default_rng(quality)
    ramp = np.linspace(0, 255, 256)
    smooth = ramp[None, :, None] * rng.random(3) * 0.6 + ramp[:, None, None] * rng.random(3) * 0.4
    images = [np.clip(smooth + rng.normal(0, s, (256, 256, 3)), 0, 255).astype(np.uint8) for s in (0, 8, 40)]
    images.append(np.repeat(rng.integers(0, 256, (256, 256, 1), dtype=np.uint8), 3, axis=2))   # grey content
    if decoder == "pil":   # as where simplejpeg is not installed
        monkeypatch.setattr(jpeg_module, "_simplejpeg", lambda: None)
    else:
        assert jpeg_module._simplejpeg() is not None
    for img in images:
        data = encode_jpeg(img, quality)
        with Image.open(io.BytesIO(data.tobytes())) as pil:
            expected = np.asarray(pil.convert("RGB"))
        out = np.zeros((256, 256, 3), np.uint8)
        assert decode_jpeg(data, out) is out
        np.testing.assert_array_equal(out, expected)


def test_temporary_files_are_claimed_while_written(tmp_path):
    tmp = tmp_path / ".x.h5.1.tmp"
    fd = claim(tmp)
    assert not abandoned(tmp)          # a live writer holds it
    os.close(fd)
    assert abandoned(tmp)              # its writer is gone (as after SIGKILL)
    assert not abandoned(tmp_path / "missing.tmp")
