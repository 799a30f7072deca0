"""jpeg shards (layout 2): contiguous bytes + offsets read by positional reads, decoded in
threads (simplejpeg) or on the GPU (--decode), refusal and in-place conversion of layout 1."""

from __future__ import annotations

import io
import json
import shutil
import signal
import subprocess
import sys

import h5py
import numpy as np
import pytest
import torch
from PIL import Image
from typer.testing import CliRunner

from alexnet_cli import loader as loader_module
from alexnet_cli import jpeg as jpeg_module
from alexnet_cli.cli.app import app
from alexnet_cli.errors import DataError, UsageError
from alexnet_cli.loader import ShardLoader, trained_decode
from alexnet_cli.prep import PrepOptions, _older_signature, prepare
from alexnet_cli.jpeg import encode_jpeg, resolve_decode
from alexnet_cli.shards import ShardWriter, file_sha256, jpeg_index, read_images, read_manifest

OPTIONS = dict(format="jpeg", shard_size=16, block_size=8, workers=1)


@pytest.fixture(scope="module")
def jpeg_data(tiny_tree, tmp_path_factory):
    """tiny_tree as jpeg shards of 16 in blocks of 8 (train: 3 shards, val: 1). READ-ONLY."""
    out = tmp_path_factory.mktemp("jpeg_data")
    prepare(tiny_tree, out, PrepOptions(**OPTIONS))
    return out


def _pil(data: np.ndarray) -> np.ndarray:
    with Image.open(io.BytesIO(data.tobytes())) as img:
        return np.asarray(img.convert("RGB"))


def _batches(loader: ShardLoader, epoch: int = 0):
    return [(b.indices.tolist(), b.labels.tolist(), b.images.cpu()) for b in loader.epoch(epoch)]


def _same(a, b) -> bool:
    return len(a) == len(b) and all(x[0] == y[0] and x[1] == y[1] and torch.equal(x[2], y[2]) for x, y in zip(a, b))


# ---------------------------------------------------------------------------- the layout

def test_layout_round_trips_bytes_and_pixels(tmp_path):
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (11, 8, 8, 3), dtype=np.uint8).repeat(32, axis=1).repeat(32, axis=2)
    blobs = [encode_jpeg(x, 90 - 5 * i) for i, x in enumerate(images)]     # files of different sizes
    path = tmp_path / "train-00000.h5"
    w = ShardWriter(path, split="train", fmt="jpeg", block_size=4, jpeg_quality=90, signature="sig")
    for a, b in ((0, 3), (3, 9), (9, 11)):
        w.append(blobs[a:b], list(range(a, b)), [f"p{i}" for i in range(a, b)], images[a:b].sum(0, dtype=np.int64))
    w.finish([])
    with h5py.File(path, "r") as f:
        assert f.attrs["format_version"] == 2 and f["jpeg_data"].chunks is None          # contiguous
        offsets = f["jpeg_offsets"][:]
        assert offsets.tolist() == np.cumsum([0, *map(len, blobs)]).tolist()
        for i, blob in enumerate(blobs):                                                # the bytes, exactly
            assert f["jpeg_data"][offsets[i]:offsets[i + 1]].tobytes() == blob.tobytes()
        base, index = jpeg_index(f)
        got = read_images(f, 2, 9)
    raw = path.read_bytes()                                       # the positional-read view agrees
    assert all(raw[base + index[i]:base + index[i + 1]] == blobs[i].tobytes() for i in range(11))
    np.testing.assert_array_equal(got, np.stack([_pil(b) for b in blobs[2:9]]))         # PIL's pixels


def test_loader_delivers_pils_pixels_for_every_image(jpeg_data):
    m = read_manifest(jpeg_data)
    want = []
    for name in m.split("train").shards:
        with h5py.File(jpeg_data / name, "r") as f:
            o = f["jpeg_offsets"][:]
            want += [_pil(f["jpeg_data"][o[i]:o[i + 1]]) for i in range(len(o) - 1)]
    batches = _batches(ShardLoader(jpeg_data, "train", 5, shuffle=True, seed=1, workers=2, buffer_blocks=2))
    seen = sorted(i for b in batches for i in b[0])
    assert seen == list(range(len(want)))
    for indices, _, images in batches:
        for i, img in zip(indices, images):
            np.testing.assert_array_equal(img.numpy(), want[i])


def test_n_threads_give_the_same_batches_as_one(jpeg_data):
    runs = [_batches(ShardLoader(jpeg_data, "train", 7, shuffle=True, seed=3, workers=w, buffer_blocks=2), 2)
            for w in (1, 4)]
    assert _same(runs[0], runs[1])
    assert _batches(ShardLoader(jpeg_data, "train", 7, shuffle=True, seed=3, workers=1, buffer_blocks=2), 3)[0][0] \
        != runs[0][0][0]                                                           # another epoch differs


def test_a_corrupt_jpeg_is_named(jpeg_data, tmp_path):
    data = tmp_path / "data"
    shutil.copytree(jpeg_data, data)
    path = data / read_manifest(data).split("train").shards[1]
    with h5py.File(path, "r") as f:
        base, offsets = jpeg_index(f)
    raw = bytearray(path.read_bytes())
    raw[base + offsets[5]:base + offsets[6]] = bytes(int(offsets[6] - offsets[5]))   # same size, zeros
    path.write_bytes(bytes(raw))
    with pytest.raises(DataError, match=f"{path.name}: image 5: stored JPEG cannot be decoded"):
        _batches(ShardLoader(data, "train", 8, shuffle=False, workers=2))


# ---------------------------------------------------------------------------- killed during prep

_KILLER = r"""
import os, signal, sys
from alexnet_cli import atomic
from alexnet_cli.prep import PrepOptions, prepare
calls = [0]
real = os.replace
def replace(a, b):                 # the second shard complete under its temporary name, never renamed
    calls[0] += 1
    if calls[0] == 2:
        os.kill(os.getpid(), signal.SIGKILL)
    real(a, b)
atomic.os.replace = replace
prepare(sys.argv[1], sys.argv[2], PrepOptions(format="jpeg", shard_size=16, block_size=8, workers=1))
"""


def test_killed_during_prep_then_rerun_equals_a_clean_run(tiny_tree, jpeg_data, tmp_path):
    out = tmp_path / "out"
    proc = subprocess.run([sys.executable, "-c", _KILLER, str(tiny_tree), str(out)], capture_output=True,
                          text=True, timeout=120)
    assert proc.returncode == -signal.SIGKILL, proc.stderr
    assert not (out / "manifest.json").exists() and list(out.glob(".*.tmp"))
    result = prepare(tiny_tree, out, PrepOptions(**OPTIONS))
    assert result.shards_reused == 1
    for name in ("manifest.json", "mean_image.npy", *read_manifest(jpeg_data).shards):
        assert (out / name).read_bytes() == (jpeg_data / name).read_bytes(), name
    assert sorted(p.name for p in out.iterdir()) == sorted(p.name for p in jpeg_data.iterdir())


# ---------------------------------------------------------------------------- layout 1

def _downgrade(data):
    """Rewrite a prepared jpeg folder as an older alexnet wrote it: one variable-length record
    per image (layout 1), format_version 1 in the shards and the manifest."""
    manifest = json.loads((data / "manifest.json").read_text())
    for name in manifest["shards"]:
        path = data / name
        with h5py.File(path, "r") as f:
            o = f["jpeg_offsets"][:]
            blobs = [f["jpeg_data"][o[i]:o[i + 1]] for i in range(len(o) - 1)]
            keep = {k: f[k][:] for k in ("labels", "pixel_sum")}
            paths = [p.decode() for p in f["paths"][:]]
            attrs = dict(f.attrs)
        path.unlink()
        with h5py.File(path, "w", libver="earliest") as f:
            d = f.create_dataset("jpeg", (len(blobs),), dtype=h5py.vlen_dtype(np.uint8), chunks=(8,))
            for i, b in enumerate(blobs):
                d[i] = b
            for k, v in keep.items():
                f.create_dataset(k, data=v)
            f.create_dataset("paths", data=np.asarray(paths, dtype=object), dtype=h5py.string_dtype("utf-8"))
            f.attrs.update({**attrs, "format_version": 1, "signature": _older_signature(attrs["signature"])})
        manifest["shards"][name].update(bytes=path.stat().st_size, sha256=file_sha256(path))
    manifest["format_version"] = 1
    (data / "manifest.json").write_text(json.dumps(manifest))


def test_layout_1_is_refused_with_the_command_that_converts_it(jpeg_data, tmp_path):
    old = tmp_path / "old"
    shutil.copytree(jpeg_data, old)
    _downgrade(old)
    with pytest.raises(DataError, match=r"format version 1.*run `alexnet prep SRC .*old` .*convert them in place"):
        ShardLoader(old, "train", 8, shuffle=False)
    result = CliRunner().invoke(app, ["pca", str(old)])
    assert result.exit_code == 1
    assert result.stderr.startswith("Error: ") and "alexnet prep SRC" in result.stderr
    assert "Traceback" not in result.output and len(result.stderr.strip().splitlines()) == 1


def test_prep_converts_layout_1_in_place_without_decoding_the_source(tiny_tree, jpeg_data, tmp_path):
    old, src = tmp_path / "old", tmp_path / "src"
    shutil.copytree(jpeg_data, old)
    shutil.copytree(tiny_tree, src)
    _downgrade(old)
    for p in src.rglob("*.JPEG"):       # were they decoded again, they would be skipped as broken
        p.write_bytes(b"not a JPEG")
    result = prepare(src, old, PrepOptions(**OPTIONS))
    assert result.shards_written == 0
    for name in ("mean_image.npy", *read_manifest(jpeg_data).shards):
        assert (old / name).read_bytes() == (jpeg_data / name).read_bytes(), name
    a, b = (json.loads((d / "manifest.json").read_text()) for d in (old, jpeg_data))
    a.pop("source"), b.pop("source")
    assert a == b


# ---------------------------------------------------------------------------- --decode

def test_decode_choice_and_its_cpu_fallback(monkeypatch):
    assert resolve_decode("cpu", "jpeg", "cpu") == "cpu"
    assert resolve_decode("auto", "jpeg", "cpu") == "cpu"                 # no CUDA: the CPU decodes
    assert resolve_decode("gpu", "raw", "cpu") == resolve_decode("auto", "raw", "cuda") == "none"
    with pytest.raises(UsageError, match="^decode gpu needs a CUDA `device`"):
        resolve_decode("gpu", "jpeg", "cpu")
    with pytest.raises(UsageError, match="^decode must be one of cpu, gpu, auto"):
        resolve_decode("nvjpeg", "jpeg", "cpu")
    assert resolve_decode("auto", "jpeg", "cuda") == "gpu"                # a decoder is installed here
    assert resolve_decode("cpu", "jpeg", "cuda") == "cpu"
    monkeypatch.setattr(jpeg_module, "gpu_jpeg_decoder", lambda: None)          # CUDA, but no GPU decoder
    assert resolve_decode("auto", "jpeg", "cuda") == "cpu"
    with pytest.raises(UsageError, match="needs torchvision with nvJPEG or torchcodec"):
        resolve_decode("gpu", "jpeg", "cuda")


@pytest.fixture
def fake_torchcodec(monkeypatch):
    """A torchcodec whose decode_jpeg takes other arguments than ours (a TypeError, as an older or
    newer release would raise); the cached decoder choice is cleared before and after."""
    import types
    calls = []

    def decode_jpeg(blobs, **options):           # no `mode` in this release
        calls.append(sorted(options))
        raise TypeError("decode_jpeg() got an unexpected keyword argument 'mode'")

    package, decoders = types.ModuleType("torchcodec"), types.ModuleType("torchcodec.decoders")
    decoders.decode_jpeg, package.decoders = decode_jpeg, decoders
    monkeypatch.setitem(sys.modules, "torchcodec", package)
    monkeypatch.setitem(sys.modules, "torchcodec.decoders", decoders)
    jpeg_module.gpu_jpeg_decoder.cache_clear()
    yield calls
    jpeg_module.gpu_jpeg_decoder.cache_clear()


def test_a_torchcodec_that_refuses_the_call_gives_way_to_torchvision_once(fake_torchcodec, monkeypatch):
    image = np.random.default_rng(0).integers(0, 256, (256, 256, 3), dtype=np.uint8)
    blob = torch.from_numpy(encode_jpeg(image, 90).copy())
    decoder = jpeg_module.gpu_jpeg_decoder()
    assert isinstance(decoder, jpeg_module._CodecDecoder)
    vision = jpeg_module._vision_decoder()
    for _ in range(3):
        [chw] = decoder([blob], "cpu")
        assert torch.equal(chw, vision([blob], "cpu")[0]) and chw.shape == (3, 256, 256)
    assert fake_torchcodec == [["device", "mode"]]         # tried once, then torchvision's for good
    monkeypatch.setattr(jpeg_module, "_vision_decoder", lambda: None)
    jpeg_module.gpu_jpeg_decoder.cache_clear()
    with pytest.raises(UsageError, match="refuses the call .*use `decode` cpu"):
        jpeg_module.gpu_jpeg_decoder()([blob], "cpu")       # nothing to fall back on: said, not a TypeError


def test_eval_uses_the_runs_decoder_unless_told():
    assert trained_decode({"run": {"decode": "cpu"}}) == "cpu"
    assert trained_decode({"run": {"decode": "gpu"}}) == "auto"            # gpu where it can, else cpu
    assert trained_decode({"run": {"decode": "none"}}) == trained_decode({}) == "auto"


def test_train_records_its_decoder_and_eval_uses_it_unless_told(jpeg_data, tmp_path, monkeypatch):
    runner, out = CliRunner(), tmp_path / "run"
    result = runner.invoke(app, ["train", str(jpeg_data), "--out", str(out), "--device", "cpu", "--max-steps", "1",
                                 "--batch-size", "8", "--workers", "1", "--log-every", "1", "--no-pca-aug"])
    assert result.exit_code == 0, result.output
    ckpt = out / "checkpoints" / "last.pt"
    config = torch.load(ckpt, weights_only=True, map_location="cpu")["config"]
    assert config["run"]["decode"] == "cpu"                      # auto, resolved on a machine without CUDA
    assert json.loads((out / "config.json").read_text())["run"]["decode"] == "cpu"
    asked = []
    real = loader_module.resolve_decode
    monkeypatch.setattr(loader_module, "resolve_decode", lambda d, *a: asked.append(d) or real(d, *a))
    assert runner.invoke(app, ["eval", str(ckpt), str(jpeg_data), "--device", "cpu", "--split", "train"]).exit_code == 0
    assert runner.invoke(app, ["eval", str(ckpt), str(jpeg_data), "--device", "cpu", "--decode", "auto"]).exit_code == 0
    assert asked == ["cpu", "auto"]                              # the run's, then the one asked for
    query = tmp_path / "query.png"
    Image.new("RGB", (40, 30), (200, 20, 20)).save(query)
    for args in (["eval", str(ckpt), str(jpeg_data), "--device", "cpu", "--decode", "gpu"],
                 ["train", str(jpeg_data), "--out", str(tmp_path / "run2"), "--device", "cpu", "--decode", "gpu",
                  "--max-steps", "1", "--no-pca-aug"],
                 ["features", str(ckpt), str(jpeg_data), "--out", str(tmp_path / "f.h5"), "--device", "cpu",
                  "--decode", "gpu"],
                 ["neighbors", str(ckpt), str(jpeg_data), "--query", str(query), "--device", "cpu", "--decode", "gpu"],
                 ["codes", str(ckpt), str(jpeg_data), "--device", "cpu", "--decode", "gpu"]):
        result = runner.invoke(app, args)
        assert result.exit_code == 2, (args, result.output)
        assert "Error: --decode gpu needs a CUDA --device" in result.stderr and "Traceback" not in result.output
    bad = runner.invoke(app, ["eval", str(ckpt), str(jpeg_data), "--device", "cpu", "--decode", "fast"])
    assert bad.exit_code == 2 and "--decode must be one of cpu, gpu, auto" in bad.stderr
    asked.clear()                                               # neighbors computes the features as told
    result = runner.invoke(app, ["neighbors", str(ckpt), str(jpeg_data), "--query", str(query), "--device", "cpu",
                                 "--split", "val", "--decode", "cpu", "--workers", "1", "--json"])
    assert result.exit_code == 0, result.output
    assert asked == ["cpu"] and json.loads(result.stdout)[0]["split"] == "val"


def test_the_device_decode_path_equals_cpu_decode(jpeg_data, monkeypatch):
    """decode="gpu" moves the decode from the worker threads to one batched call per batch;
    here the batched call runs on the CPU (torchvision's libjpeg-turbo), so the batches must
    be exactly those of decode="cpu": the byte plumbing loses or reorders nothing."""
    cpu = _batches(ShardLoader(jpeg_data, "train", 6, shuffle=True, seed=5, workers=2, buffer_blocks=2), 1)
    monkeypatch.setattr(loader_module, "resolve_decode", lambda decode, fmt, device: "gpu")
    loader = ShardLoader(jpeg_data, "train", 6, shuffle=True, seed=5, workers=2, buffer_blocks=2)
    assert loader.decode == "gpu"
    assert _same(_batches(loader, 1), cpu)


# ---------------------------------------------------------------------------- on a GPU

@pytest.mark.gpu
def test_gpu_decode_matches_cpu_decode_within_the_documented_bound(jpeg_data):
    cpu = _batches(ShardLoader(jpeg_data, "train", 8, shuffle=True, seed=2, device="cuda", decode="cpu"))
    loader = ShardLoader(jpeg_data, "train", 8, shuffle=True, seed=2, device="cuda", decode="gpu")
    gpu = [(b.indices.tolist(), b.labels.tolist(), b.images) for b in loader.epoch(0)]
    assert all(g[2].is_cuda and g[2].shape == c[2].shape and g[2].is_contiguous() for g, c in zip(gpu, cpu))
    assert [g[:2] for g in gpu] == [c[:2] for c in cpu]
    diff = torch.cat([(g[2].cpu().int() - c[2].int()).abs().flatten() for g, c in zip(gpu, cpu)]).float()
    assert 0 <= diff.mean() < 2, (diff.mean(), diff.max())   # torchvision's own bound for nvJPEG; docs/formats.md
    assert resolve_decode("auto", "jpeg", "cuda") == "gpu"


@pytest.mark.gpu
def test_gpu_decode_names_undecodable_bytes():
    good = encode_jpeg(np.full((256, 256, 3), 90, np.uint8), 90)
    out = jpeg_module.decode_jpegs_on([good, good], torch.device("cuda"))
    assert out.shape == (2, 256, 256, 3) and out.dtype == torch.uint8
    with pytest.raises(DataError, match="cannot be decoded on cuda"):
        jpeg_module.decode_jpegs_on([good, np.frombuffer(b"not a JPEG", np.uint8)], torch.device("cuda"))


def test_batch_buffers_are_reused_only_once_released(jpeg_data):
    """The loader decodes into its batches' own buffers and reuses a buffer once nothing refers
    to it: batches read and dropped are right, and one held on to is never overwritten."""
    loader = ShardLoader(jpeg_data, "train", 4, shuffle=True, seed=7, workers=2, buffer_blocks=1, prefetch=1)
    want = {i: img.clone() for ind, _, images in _batches(loader, 0) for i, img in zip(ind, images)}
    assert len(want) == 48
    held = None
    for _ in range(2):
        for b in loader.epoch(0):                      # checked, then dropped
            for i, img in zip(b.indices.tolist(), b.images):
                assert torch.equal(img, want[i])
            if held is None:
                held = (b.indices.tolist(), b.images, b.images.clone())
    assert torch.equal(held[1], held[2])               # still what it was when it was handed over
    assert len(loader.buffers.arrays) < 2 * len(loader)                     # buffers were reused


def test_resume_refuses_another_decoder(jpeg_data, tmp_path, monkeypatch):
    """nvJPEG's pixels are not libjpeg-turbo's: a run resumed with the other decoder would not
    be the run it continues."""
    out, runner = tmp_path / "run", CliRunner()
    args = ["train", str(jpeg_data), "--out", str(out), "--device", "cpu", "--batch-size", "8", "--workers", "1",
            "--no-pca-aug", "--epochs", "1"]
    assert runner.invoke(app, [*args, "--max-steps", "1"]).exit_code == 0
    monkeypatch.setattr(loader_module, "resolve_decode", lambda decode, fmt, device: "gpu")
    again = runner.invoke(app, [*args, "--resume"])
    assert again.exit_code == 1 and "trained with --decode cpu, not gpu" in again.stderr
