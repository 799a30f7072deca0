"""Data under attack (issue 21, the data side): odd files in the source tree, damaged or
crafted data folders, a full disk. Each case must end in a result that accounts for every
file, or in one `Error:` line in the user's terms; never a hang, a crash or a silent loss."""

from __future__ import annotations

import contextlib
import errno
import json
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import h5py
import numpy as np
import pytest
import torch
from PIL import Image
from typer.testing import CliRunner

from alexnet_cli import atomic, images, prep, shards, synth
from alexnet_cli.cli.app import app
from alexnet_cli.errors import DataError
from alexnet_cli.images import UnreadableImage, load_image
from alexnet_cli.layouts import LabelFiles, find_layout
from alexnet_cli.loader import ShardLoader
from alexnet_cli.pca import read_pca
from alexnet_cli.prep import PrepOptions, prepare
from alexnet_cli.shards import read_manifest, read_split_index

runner = CliRunner()
OPTIONS = dict(workers=1, shard_size=8, block_size=4)


@contextlib.contextmanager
def deadline(seconds: float):
    """Fail (TimeoutError) instead of hanging when the body blocks, e.g. opening a FIFO."""
    def expire(signum, frame):
        raise TimeoutError(f"still blocked after {seconds} s")
    old = signal.signal(signal.SIGALRM, expire)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, old)


@pytest.fixture
def tree(tmp_path) -> Path:
    return synth.make_tree(tmp_path / "src", classes=2, train_per_class=3, val_per_class=1)


def _png(path: Path, w: int, h: int) -> Path:
    Image.new("RGB", (w, h), (200, 30, 30)).save(path)
    return path


def _accounted(data: Path) -> dict[str, str]:
    """Every source path the data folder knows: in a shard (-> "stored") or skipped (-> reason)."""
    m = read_manifest(data)
    out = {s["path"]: s["reason"] for s in m.skipped}
    for split in m.splits:
        out.update({p: "stored" for p in read_split_index(data, split)[0]})
    return out


# ---------------------------------------------------------------------------- F2: not regular files

def test_a_fifo_is_skipped_not_read(tree, tmp_path):
    """A FIFO blocked `prep` and `predict` forever: only regular files are opened."""
    fifo = tree / "train" / synth.wnid(0) / "fifo.JPEG"
    os.mkfifo(fifo)
    with deadline(10), pytest.raises(UnreadableImage, match=r"not a regular file \(a FIFO\)"):
        load_image(fifo)                                    # predict and neighbors read queries with it
    with deadline(30):
        prepare(tree, tmp_path / "out", PrepOptions(**OPTIONS))
    assert _accounted(tmp_path / "out")[f"train/{synth.wnid(0)}/fifo.JPEG"] == "not a regular file (a FIFO)"


def test_a_label_file_that_is_a_fifo_is_an_error_not_a_hang(tmp_path):
    src = synth.make_tree(tmp_path / "src", classes=2, train_per_class=1, val_per_class=1, layout="loc")
    fifo = tmp_path / "labels.csv"
    os.mkfifo(fifo)
    with deadline(10), pytest.raises(DataError, match="not a regular file"):
        find_layout(src, labels=LabelFiles(val_labels=fifo))
    (tmp_path / "latin1.csv").write_bytes("ImageId,PredictionString\nx,n0 caf\xe9\n".encode("latin-1"))
    with pytest.raises(DataError, match="not UTF-8 text"):
        find_layout(src, labels=LabelFiles(val_labels=tmp_path / "latin1.csv"))


# ---------------------------------------------------------------------------- F3: links to folders

def test_linked_folders_are_followed_once_and_loops_listed(tree, tmp_path):
    """Images in a symlinked sub-folder were in neither the shards nor `skipped`."""
    cls = tree / "train" / synth.wnid(1)
    outside = tmp_path / "elsewhere"
    outside.mkdir()
    shutil.copy(next(cls.glob("*.JPEG")), outside / "linked.JPEG")
    (cls / "more").symlink_to(outside)
    (cls / "again").symlink_to(outside)             # a second link to the same folder
    (cls / "loop").symlink_to(cls)                  # a loop
    (cls / "gone.JPEG").symlink_to(tmp_path / "nothing")
    with deadline(30):
        prepare(tree, tmp_path / "out", PrepOptions(**OPTIONS))
    seen = _accounted(tmp_path / "out")
    base = f"train/{synth.wnid(1)}"
    assert seen[f"{base}/again/linked.JPEG"] == "stored"          # "again" < "more": read first
    assert seen[f"{base}/more"].startswith("a link to a folder already read")
    assert seen[f"{base}/loop"].startswith("a link to a folder already read")
    assert seen[f"{base}/gone.JPEG"] == "a broken link"
    assert len([p for p, why in seen.items() if why == "stored" and p.startswith("train/")]) == 7


def test_a_symbolic_link_loop_is_skipped_not_an_error(tree, tmp_path):
    """`ln -s loop2.JPEG loop1.JPEG; ln -s loop1.JPEG loop2.JPEG` stopped the whole prep ("Too
    many levels of symbolic links", nothing prepared); a loop is skipped with its reason, as a
    broken link is, among the images, in a split folder and where class folders are."""
    cls = tree / "train" / synth.wnid(0)
    for where in (cls, tree / "val", tree / "train"):
        (where / "loop1.JPEG").symlink_to("loop2.JPEG")
        (where / "loop2.JPEG").symlink_to("loop1.JPEG")
    with deadline(30):
        result = prepare(tree, tmp_path / "out", PrepOptions(**OPTIONS))
    seen = _accounted(tmp_path / "out")
    for where in (f"train/{synth.wnid(0)}", "val", "train"):
        for name in ("loop1.JPEG", "loop2.JPEG"):
            assert seen[f"{where}/{name}"] == "a symbolic link loop", (where, name)
    assert result.manifest.splits["train"].count == 6 and result.manifest.splits["val"].count == 2


# ---------------------------------------------------------------------------- names that are not UTF-8

def test_file_names_that_are_not_utf8(tree, tmp_path):
    cls = tree / "train" / synth.wnid(0)
    shutil.copy(next(cls.glob("*.JPEG")), os.fsencode(cls) + b"/caf\xe9.JPEG")
    prepare(tree, tmp_path / "out", PrepOptions(**OPTIONS))
    seen = _accounted(tmp_path / "out")
    assert seen[f"train/{synth.wnid(0)}/caf\\xe9.JPEG"] == "name is not valid UTF-8 (rename it)"
    os.mkdir(os.fsencode(tree / "train") + b"/n0\xff")
    result = runner.invoke(app, ["prep", str(tree), str(tmp_path / "out2")])
    assert result.exit_code == 1 and result.stderr.startswith("Error: ") and "not valid UTF-8" in result.stderr
    assert "Traceback" not in result.output and "UnicodeEncodeError" not in result.output


def test_more_classes_than_int16_labels_hold(tmp_path, monkeypatch):
    """40,001 class folders gave a raw exception name: labels are int16, so 32,768 classes at
    most (the bound is lowered here, as 32,769 folders take minutes to delete on some disks)."""
    assert shards.MAX_CLASSES == np.iinfo(np.int16).max + 1
    monkeypatch.setattr(prep, "MAX_CLASSES", 3)
    for k in range(4):
        (tmp_path / "src" / "train" / f"c{k:05d}").mkdir(parents=True)
        (tmp_path / "src" / "train" / f"c{k:05d}" / "a.JPEG").write_bytes(b"")   # an empty class is refused first
    result = runner.invoke(app, ["prep", str(tmp_path / "src"), str(tmp_path / "out")])
    assert result.exit_code == 1 and "4 classes found, at most 3 can be stored" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1 and not (tmp_path / "out").exists()


# ---------------------------------------------------------------------------- F1: huge images

def test_images_too_large_to_resize_or_decode_are_skipped(tree, tmp_path, monkeypatch):
    """A 320-byte 1x60000 PNG was resized to 256 x 15,360,000 pixels (16 GB)."""
    cls = tree / "train" / synth.wnid(0)
    thin = _png(cls / "thin.png", 1, 300)            # 256 x 76,800 once resized: over the bound
    with pytest.raises(UnreadableImage, match=r"too large \(1 x 300: resized"):
        load_image(thin)
    _png(cls / "line.png", 60_000, 1)
    assert load_image(_png(tmp_path / "ok.png", 256 * 200, 256)).shape == (256, 256, 3)   # 200:1 is fine
    prepare(tree, tmp_path / "out", PrepOptions(**OPTIONS))
    seen = _accounted(tmp_path / "out")
    assert seen[f"train/{synth.wnid(0)}/line.png"].startswith("too large (60000 x 1: resized")
    monkeypatch.setattr(images, "MAX_DECODED_PIXELS", 100 * 100)
    with pytest.raises(UnreadableImage, match=r"too large \(101 x 100 pixels; at most 10,000 are decoded\)"):
        load_image(_png(tmp_path / "big.png", 101, 100))


# ---------------------------------------------------------------------------- F14: shard and block sizes

def test_shard_and_block_size_bounds_and_chunks_sized_by_the_images(tree, tmp_path):
    for flag, value in (("--shard-size", "100000"), ("--block-size", "5000"), ("--block-size", "0")):
        result = runner.invoke(app, ["prep", str(tree), str(tmp_path / "x"), flag, value])
        assert result.exit_code == 2 and f"{flag} must be in 1.." in result.stderr, result.output
    out = tmp_path / "out"
    prepare(tree, out, PrepOptions(workers=1, shard_size=4096, block_size=256))   # 8 images
    m = read_manifest(out)
    for name, info in m.shards.items():
        assert info.bytes < (info.count + 2) * 196_608, name     # chunks of 256 images would be 50 MB
        with h5py.File(out / name) as f:
            assert f["images"].chunks[0] == info.count
    batches = list(ShardLoader(out, "train", 4, shuffle=True).epoch(0))
    assert sorted(int(i) for b in batches for i in b.indices) == list(range(6))


# ---------------------------------------------------------------------------- F12: a full disk

def test_a_full_disk_is_one_error_and_a_rerun_continues(tree, tmp_path, monkeypatch):
    out = tmp_path / "out"
    real, calls = shards.write_atomic, []

    def full(path, data):
        calls.append(path.name)
        if len(calls) == 2:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        real(path, data)

    monkeypatch.setattr(shards, "write_atomic", full)
    result = runner.invoke(app, ["prep", str(tree), str(out), "--workers", "1", "--shard-size", "4"])
    assert result.exit_code == 1, result.output
    assert result.stderr.startswith("Error: no space left on the disk of") and "run the same command again" in \
        " ".join(result.stderr.split())
    assert len(result.stderr.strip().splitlines()) == 1
    assert sorted(p.name for p in out.iterdir()) == [calls[0]]          # the finished shard, nothing half
    monkeypatch.setattr(shards, "write_atomic", real)
    again = prepare(tree, out, PrepOptions(workers=1, shard_size=4))
    assert again.shards_reused == 1 and again.shards_written == 2
    clean = prepare(tree, tmp_path / "clean", PrepOptions(workers=1, shard_size=4))
    assert (out / "manifest.json").read_text().replace(str(out), "") == \
        (tmp_path / "clean" / "manifest.json").read_text().replace(str(tmp_path / "clean"), "")
    assert clean.manifest.shards == again.manifest.shards


@pytest.fixture
def small_disk(tmp_path):
    """A 1 MB tmpfs (root only; skipped where it cannot be mounted)."""
    mnt = tmp_path / "disk"
    mnt.mkdir()
    if os.geteuid() != 0 or subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(mnt)],
                                           capture_output=True).returncode != 0:
        pytest.skip("needs root and mount to make a small file system")
    yield mnt
    subprocess.run(["umount", "-l", str(mnt)], capture_output=True)


def test_a_really_full_disk(tree, small_disk):
    """A real full disk: HDF5's failed writes segfaulted the process (at exit, after its
    Error line); then, with space, the same preparation finishes."""
    cmd = [sys.executable, "-m", "alexnet_cli", "prep", str(tree), str(small_disk / "out"), "--workers", "1",
           "--shard-size", "4"]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 1, proc.stderr
    lines = [x for x in proc.stderr.splitlines() if x.strip() and not x.startswith("prep:")]
    assert lines[0].startswith("Error: no space left on the disk of") and "Traceback" not in proc.stderr, proc.stderr
    subprocess.run(["mount", "-o", "remount,size=8m", str(small_disk)], check=True)
    again = prepare(tree, small_disk / "out", PrepOptions(workers=2, shard_size=4))
    assert again.shards_reused >= 1 and again.manifest.splits["train"].count == 6


# ---------------------------------------------------------------------------- F19: --verify writes nothing

def test_verify_on_intact_data_writes_nothing(tree, tmp_path, monkeypatch):
    out = tmp_path / "out"
    prepare(tree, out, PrepOptions(**OPTIONS))
    stamps = {p.name: (p.stat().st_ino, p.stat().st_mtime_ns) for p in out.iterdir()}

    def read_only(*args, **kwargs):
        raise OSError(errno.EROFS, os.strerror(errno.EROFS))

    monkeypatch.setattr(prep, "write_atomic", read_only)
    monkeypatch.setattr(shards, "write_atomic", read_only)
    result = prepare(tree, out, PrepOptions(**OPTIONS), verify=True)
    assert result.up_to_date and result.shards_written == 0
    assert {p.name: (p.stat().st_ino, p.stat().st_mtime_ns) for p in out.iterdir()} == stamps


def test_verify_on_a_read_only_file_system(tree, small_disk):
    subprocess.run(["mount", "-o", "remount,size=8m", str(small_disk)], check=True)
    prepare(tree, small_disk / "out", PrepOptions(**OPTIONS))
    subprocess.run(["mount", "-o", "remount,ro", str(small_disk)], check=True)
    result = prepare(tree, small_disk / "out", PrepOptions(**OPTIONS), verify=True)
    assert result.up_to_date and result.manifest.splits["train"].count == 6
    # the command too: its up-front write check leaves an existing preparation to prepare (it
    # refused the folder, exit 2, before any check); a new OUT there is still refused up front
    args = ["prep", str(tree), str(small_disk / "out"), "--workers", "1", "--shard-size", "8", "--block-size", "4"]
    verified = runner.invoke(app, [*args, "--verify"])
    assert verified.exit_code == 0 and "matches the sha256" in verified.stderr, verified.output
    new = runner.invoke(app, ["prep", str(tree), str(small_disk / "new")])
    assert new.exit_code == 2 and "is not a writable folder" in new.stderr


# ---------------------------------------------------------------------------- F16, manifests and pca.json

def _copy(data: Path, tmp_path: Path) -> Path:
    out = tmp_path / "data"
    shutil.copytree(data, out)
    return out


def _edit_manifest(data: Path, **changes) -> None:
    m = json.loads((data / "manifest.json").read_text())
    m.update(changes)
    (data / "manifest.json").write_text(json.dumps(m))


@pytest.mark.parametrize("changes, words", [
    ({"block_size": -1}, "block_size must be in 1..256, got -1"),
    ({"block_size": 0}, "block_size must be in 1..256, got 0"),
    ({"classes": []}, "0 classes"),
    ({"mean_image": "../../secret.npy"}, "mean_image be a file name"),
    ({"format": "png"}, "format must be one of raw, jpeg"),
    ({"splits": {"train": {"count": 49, "shards": ["train-00000.h5", "train-00001.h5", "train-00002.h5"],
                           "shard_counts": [16, 16, 16]}}}, "do not add up to its count 49"),
    ({"splits": {"train": {"count": 49, "shards": ["train-00000.h5", "train-00001.h5", "train-00002.h5"],
                           "shard_counts": [16, 16, 17]}}}, "train-00002.h5: 16 images, its split says 17"),
])
def test_manifest_values_are_checked(tiny_data, tmp_path, changes, words):
    """A manifest block_size of -1 made train a silent no-op (0 steps, exit 0), 0 a raw error."""
    data = _copy(tiny_data, tmp_path)
    _edit_manifest(data, **changes)
    with pytest.raises(DataError, match=f"manifest.json is corrupt .*{words.replace('.', '[.]')}"):
        ShardLoader(data, "train", 4, shuffle=True)


def test_deeply_nested_json_is_a_data_error(tiny_data, tmp_path):
    data = _copy(tiny_data, tmp_path)
    deep = "[" * 100_000 + "]" * 100_000
    (data / "manifest.json").write_text(deep)
    with pytest.raises(DataError, match="nested too deeply"):
        read_manifest(data)
    (data / "pca.json").write_text(deep)
    with pytest.raises(DataError, match="nested too deeply"):
        read_pca(data)


# ---------------------------------------------------------------------------- F17: labels in shards

def _craft_shard(data: Path, name: str, **datasets) -> None:
    """Replace datasets of a shard, as a crafted or damaged data folder would have them; the
    manifest's byte count follows (the size check is not what should catch it)."""
    path = data / name
    with h5py.File(path, "r+") as f:
        for key, value in datasets.items():
            del f[key]
            f.create_dataset(key, data=value)
    m = json.loads((data / "manifest.json").read_text())
    m["shards"][name]["bytes"] = path.stat().st_size
    (data / "manifest.json").write_text(json.dumps(m))


@pytest.mark.parametrize("bad", [-1, 4, 5000])
def test_labels_out_of_range_are_a_data_error_in_every_reader(tiny_data, tmp_path, bad):
    """A label of -1 was shown by neighbors as the last class; 5000 crashed train and eval."""
    data = _copy(tiny_data, tmp_path)
    for split in ("train", "val"):
        name = read_manifest(data).splits[split].shards[0]
        with h5py.File(data / name) as f:
            labels = f["labels"][:]
        labels[1] = bad
        _craft_shard(data, name, labels=labels)
        words = rf"label\(s\) outside 0..3 \(the data has 4 classes\), e.g. {bad}"
        with pytest.raises(DataError, match=words):          # train, eval, pca: the loader
            ShardLoader(data, split, 4, shuffle=split == "train")
        with pytest.raises(DataError, match=words):          # features (and so neighbors), eval's files
            read_split_index(data, split)


def test_a_shard_with_more_labels_than_images(tiny_data, tmp_path):
    data = _copy(tiny_data, tmp_path)
    name = read_manifest(data).splits["train"].shards[0]
    with h5py.File(data / name) as f:
        images3, labels8 = f["images"][:3], f["labels"][:8]
    _craft_shard(data, name, images=images3, labels=labels8)
    with pytest.raises(DataError, match="is inconsistent: 8 labels, 3 images"):
        ShardLoader(data, "train", 4, shuffle=True)
    result = runner.invoke(app, ["pca", str(data)])
    assert result.exit_code == 1 and "is inconsistent: 8 labels, 3 images" in result.stderr
    assert "IndexError" not in result.output and "Traceback" not in result.output


def test_a_full_disk_names_the_file_in_every_atomic_write(tiny_data, tmp_path, monkeypatch):
    """write_atomic (pca.json, the manifest, the mean image, run files) is where a full disk
    shows: its Error line names the file instead of a bare "No space left on device"."""
    data = _copy(tiny_data, tmp_path)

    def full(fd):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(atomic.os, "fsync", full)
    result = runner.invoke(app, ["pca", str(data), "--sample", "4", "--overwrite"])   # data has a full pass's
    assert result.exit_code == 1
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith(f"Error: {data / 'pca.json'}: the disk is full (") and last.endswith("free some space"), last
    assert not list(data.glob(".*.tmp")) and (data / "pca.json").read_bytes() == (tiny_data / "pca.json").read_bytes()


# ---------------------------------------------------------------------------- session 9: damaged outputs

def _one_error(result, *words: str) -> str:
    """The single `Error:` line of a failed command, holding every one of `words`."""
    lines = result.stderr.strip().splitlines()
    assert result.exit_code == 1 and lines[-1].startswith("Error: "), result.output
    assert all(w in lines[-1] for w in words), (words, lines[-1])
    assert "Traceback" not in result.output and "Error: " not in "\n".join(lines[:-1])
    return lines[-1]


@pytest.mark.parametrize("damage, words", [
    (lambda p: p.write_bytes(b""), "cannot read the mean image (the file is empty)"),
    (lambda p: np.save(p, np.full((256, 256, 3), np.nan, np.float32)), "not an image of finite numbers in 0..255"),
    (lambda p: np.save(p, np.full((256, 256, 3), 1e300)), "not an image of finite numbers in 0..255"),
    (lambda p: np.save(p, np.full((256, 256, 3), 300, np.float32)), "not an image of finite numbers in 0..255"),
])
@pytest.mark.parametrize("verify", [False, True])
def test_an_empty_or_non_finite_mean_image_is_an_error_and_prep_makes_it_again(tree, tmp_path, damage, words,
                                                                               verify):
    """An empty mean_image.npy gave `Error: EOFError: No data left in file` that prep could not
    repair; a NaN one passed `prep --verify` and made train advise a lower learning rate."""
    data = tmp_path / "out"
    prepare(tree, data, PrepOptions(workers=1))         # the options of the `prep` below
    good = (data / "mean_image.npy").read_bytes()
    damage(data / "mean_image.npy")
    with pytest.raises(DataError, match=f"mean_image.npy: .*{re_words(words)}: run `alexnet prep` again"):
        shards.read_mean_image(data)
    result = runner.invoke(app, ["train", str(data), "--out", str(tmp_path / "run"), "--batch-size", "4"])
    _one_error(result, str(data / "mean_image.npy"), words, "run `alexnet prep` again")
    repaired = runner.invoke(app, ["prep", str(tree), str(data), "--workers", "1", "--json",
                                   *(["--verify"] if verify else [])])
    assert repaired.exit_code == 0, repaired.output
    assert f"{words}: writing it again from the shards" in repaired.stderr
    assert json.loads(repaired.stdout)["up_to_date"] is False
    assert (data / "mean_image.npy").read_bytes() == good


def re_words(words: str) -> str:
    return "".join("\\" + c if c in ".()[]" else c for c in words)


def _edit_pca(data: Path, key: str, change) -> None:
    doc = json.loads((data / "pca.json").read_text())
    doc[key] = change(doc[key])
    (data / "pca.json").write_text(json.dumps(doc))      # writes NaN and Infinity as JSON's extension does


@pytest.mark.parametrize("key, change, words", [
    ("eigenvalues", lambda v: [v[0], float("nan"), v[2]], "NaN or infinite values"),
    ("eigenvalues", lambda v: [1e300, v[1], v[2]], "eigenvalues must be in 0..195075"),
    ("eigenvalues", lambda v: [v[0], v[1], -5.0], "eigenvalues must be in 0..195075"),
    ("eigenvectors", lambda m: [[float("inf")] * 3, *m[1:]], "NaN or infinite values"),
    ("eigenvectors", lambda m: [[2 * x for x in row] for row in m], "the eigenvectors are not orthonormal"),
    ("mean_rgb", lambda m: [m[0], m[1], float("nan")], "mean_rgb must be 3 finite numbers in 0..255"),
])
def test_implausible_pca_values_are_an_error_and_pca_writes_them_again(tiny_data, tmp_path, key, change, words):
    """pca.json with NaN, 1e300 or negative eigenvalues was used by train's colour augmentation."""
    data = _copy(tiny_data, tmp_path)
    _edit_pca(data, key, change)
    again = f"run `alexnet pca {data}` again"
    with pytest.raises(DataError, match=f"pca.json is corrupt \\({re_words(words)}.*\\): {re_words(again)}"):
        read_pca(data)
    result = runner.invoke(app, ["train", str(data), "--out", str(tmp_path / "run"), "--batch-size", "4"])
    _one_error(result, str(data / "pca.json"), words, again)
    assert runner.invoke(app, ["pca", str(data)]).exit_code == 0
    np.testing.assert_allclose(read_pca(data).eigenvalues, read_pca(tiny_data).eigenvalues)


@pytest.fixture(scope="module")
def searched(tiny_data, tmp_path_factory, make_checkpoint):
    """(data copy, checkpoint, the train split's features file, a query image) for neighbors."""
    from alexnet_cli.features import extract_features
    root = tmp_path_factory.mktemp("damaged_features")
    data = shutil.copytree(tiny_data, root / "data")
    checkpoint = make_checkpoint(root / "model.pt", data)
    features = root / "feat.h5"
    extract_features(checkpoint, data, features, workers=1)
    query = _png(root / "query.png", 80, 60)
    return data, checkpoint, features, query


def _damage_features(features: Path, out: Path, edit) -> Path:
    shutil.copyfile(features, out)
    with h5py.File(out, "r+") as f:
        edit(f)
    return out


def _replace(f: h5py.File, name: str, value) -> None:
    del f[name]
    f.create_dataset(name, data=value)


@pytest.mark.parametrize("edit, words", [
    (lambda f: f.__delitem__("classes"), "damaged (no classes dataset)"),
    (lambda f: _replace(f, "paths", f["paths"][:5]), "damaged (paths has shape (5,), expected (48,))"),
    (lambda f: _replace(f, "labels", f["labels"][:47]), "damaged (labels has shape (47,), expected (48,))"),
    (lambda f: _replace(f, "class_names", f["class_names"][:3]), "damaged ((4,) classes with (3,) class names)"),
])
def test_a_features_file_with_missing_or_short_datasets_is_one_error(searched, tmp_path, edit, words):
    """A missing `classes` gave `Error: KeyError: "Unable to synchronously open object..."`, paths
    cut to 5 rows `Error: IndexError: Fancy indexing out of range`, after the whole search."""
    from alexnet_cli.features import read_features_info
    data, checkpoint, features, query = searched
    bad = _damage_features(features, tmp_path / "bad.h5", edit)
    with pytest.raises(DataError, match=re_words(f"bad.h5: {words}; compute it again with `alexnet features`")):
        read_features_info(bad)
    result = runner.invoke(app, ["neighbors", str(checkpoint), str(data), "--query", str(query),
                                 "--features", str(bad)])
    _one_error(result, str(bad), words, "`alexnet features`")
    assert "searching" not in result.stderr                  # found before the search, not after it


@pytest.mark.parametrize("value", [float("nan"), float("inf")])
@pytest.mark.parametrize("k", [3, 48])
def test_a_non_finite_feature_row_is_an_error_naming_the_row(searched, tmp_path, value, k):
    """A NaN row was never returned with a small k, and with k = every row it sorted after the
    empty slots (inf) of the running top-k: row -1 reached h5py (`Error: TypeError: Indexing
    elements must be in increasing order`). Rows that are not finite are now an error, in the
    streamed search and in read_rows (the re-ranking of the Hamming search)."""
    from alexnet_cli.features import read_rows
    data, checkpoint, features, query = searched

    def poison(f):
        f["features"][7] = value
    bad = _damage_features(features, tmp_path / "bad.h5", poison)
    words = "damaged (row 7 holds NaN or infinite values)"
    result = runner.invoke(app, ["neighbors", str(checkpoint), str(data), "--query", str(query),
                                 "--features", str(bad), "--k", str(k)])
    _one_error(result, str(bad), words, "compute it again with `alexnet features`")
    with pytest.raises(DataError, match=re_words(words)):
        read_rows(bad, [3, 7])
    assert read_rows(bad, [3, 8]).shape == (2, 4096)


def test_a_damaged_features_cache_is_computed_again(searched, tmp_path):
    """The cache beside the shards: a damaged one is rebuilt by the next search, as the message
    for a damaged file says."""
    data, checkpoint, features, query = searched
    data = _copy(data, tmp_path)
    first = runner.invoke(app, ["neighbors", str(checkpoint), str(data), "--query", str(query), "--json"])
    assert first.exit_code == 0, first.output
    (cache,) = data.glob("features-train-*.h5")
    with h5py.File(cache, "r+") as f:
        del f["classes"]
    again = runner.invoke(app, ["neighbors", str(checkpoint), str(data), "--query", str(query), "--json"])
    assert again.exit_code == 0, again.output
    assert "cached in" in again.stderr and json.loads(again.stdout) == json.loads(first.stdout)


def test_features_that_overflow_float16_are_not_stored(searched, tmp_path, monkeypatch):
    """fc7 beyond float16's 65504 would be stored as inf rows that no search can return."""
    from alexnet_cli import features as feats
    from alexnet_cli.errors import CheckpointError
    data, checkpoint, _, _ = searched
    monkeypatch.setattr(feats.Encoder, "__call__", lambda self, images: torch.full((len(images), feats.DIM), 7e4))
    with pytest.raises(CheckpointError, match="the fc7 feature of image 0 is NaN or infinite in float16"):
        feats.extract_features(checkpoint, data, tmp_path / "f.h5", workers=1)
    assert not (tmp_path / "f.h5").exists()
