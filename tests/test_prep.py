"""`alexnet prep` (alexnet_cli.prep): pixels and labels against an independent resize, the
odd files, the exact mean, both formats, restarts after SIGKILL, and the command line."""

from __future__ import annotations

import contextlib
import json
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import h5py
import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from alexnet_cli import synth
from alexnet_cli.cli.app import app
from alexnet_cli.errors import DataError
from alexnet_cli.prep import PrepOptions, prepare
from alexnet_cli.shards import read_images, read_manifest, read_mean_image
from test_docs import check_documented_json

OPTIONS = dict(shard_size=8, block_size=4)
runner = CliRunner()


@pytest.fixture(scope="module")
def odd_tree(tmp_path_factory) -> Path:
    """4 classes, 6 train + 2 val each, plus the odd files in the first class."""
    return synth.make_tree(tmp_path_factory.mktemp("odd_tree"), classes=4, train_per_class=6, val_per_class=2,
                           odd_files=True)


@pytest.fixture(scope="module")
def odd_data(odd_tree, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("odd_data") / "data"
    prepare(odd_tree, out, PrepOptions(workers=1, **OPTIONS))
    return out


def _reference(path: Path) -> np.ndarray:
    """Independent of alexnet_cli.images: RGB, shorter side exactly 256, central crop."""
    with Image.open(path) as img:
        img = img.convert("RGB")
        w, h = img.size
        size = (256, round(h * 256 / w)) if w <= h else (round(w * 256 / h), 256)
        big = np.asarray(img.resize(size, Image.Resampling.BILINEAR))
    top, left = (big.shape[0] - 256) // 2, (big.shape[1] - 256) // 2
    return big[top:top + 256, left:left + 256]


def _shard_contents(data: Path, split: str):
    m = read_manifest(data)
    for name in m.split(split).shards:
        with h5py.File(data / name, "r") as f:
            paths = [p.decode() for p in f["paths"][:]]
            images = read_images(f, 0, len(f["labels"]))
            yield name, paths, f["labels"][:], images


def test_pixels_and_labels_match_an_independent_resize(odd_tree, odd_data):
    m = read_manifest(odd_data)
    assert m.classes == sorted(m.classes) == [synth.wnid(k) for k in range(4)]
    seen = 0
    for split in ("train", "val"):
        for _, paths, labels, images in _shard_contents(odd_data, split):
            for p, y, img in zip(paths, labels, images):
                assert m.classes[y] == Path(p).parent.name
                np.testing.assert_array_equal(img, _reference(odd_tree / p), err_msg=p)
                seen += 1
    assert seen == m.splits["train"].count + m.splits["val"].count == 4 * 6 + 3 + 4 * 2


def test_every_source_file_is_in_a_shard_or_skipped(odd_tree, odd_data):
    m = read_manifest(odd_data)
    stored = [p for split in ("train", "val") for _, paths, _, _ in _shard_contents(odd_data, split) for p in paths]
    skipped = [s["path"] for s in m.skipped]
    everything = sorted(str(p.relative_to(odd_tree)) for p in odd_tree.rglob("*.JPEG"))
    assert sorted(stored + skipped) == everything and len(set(stored)) == len(stored)
    first = f"train/{synth.wnid(0)}"
    assert [s["path"] for s in m.skipped] == [f"{first}/odd_empty.JPEG", f"{first}/odd_truncated.JPEG"]
    assert m.skipped[0]["reason"] == "empty file"
    assert m.skipped[1]["reason"].startswith("truncated")
    for name in ("odd_cmyk.JPEG", "odd_gray.JPEG", "odd_png.JPEG"):
        assert f"{first}/{name}" in stored


def test_mean_image_is_the_exact_training_mean(odd_data):
    total, n = np.zeros((256, 256, 3)), 0
    for _, _, _, images in _shard_contents(odd_data, "train"):
        total += images.sum(axis=0, dtype=np.float64)
        n += len(images)
    mean = read_mean_image(odd_data)
    assert mean.dtype == np.float32 and mean.shape == (256, 256, 3)
    np.testing.assert_allclose(mean, total / n, rtol=0, atol=1e-4)
    np.testing.assert_allclose(read_manifest(odd_data).mean_rgb, (total / n).mean(axis=(0, 1)), atol=1e-4)


def test_shards_follow_the_documented_schema(odd_data):
    data = json.loads((odd_data / "manifest.json").read_text())
    for key in ("classes", "class_names", "splits", "skipped", "mean_rgb", "mean_image", "format", "shards"):
        assert key in data
    assert data["class_names"] == [synth.class_name(k) for k in range(4)]
    assert data["splits"]["train"]["shards"] == ["train-00000.h5", "train-00001.h5", "train-00002.h5",
                                                 "train-00003.h5"]
    for name, info in data["shards"].items():
        assert (odd_data / name).stat().st_size == info["bytes"]
        with h5py.File(odd_data / name, "r") as f:
            assert f.attrs["format_version"] == 1 and f.attrs["format"] == "raw"
            assert f["labels"].dtype == np.int16 and f["images"].dtype == np.uint8
            assert f["images"].shape == (info["count"], 256, 256, 3) and f["images"].chunks == (4, 256, 256, 3)
            assert h5py.check_string_dtype(f["paths"].dtype).encoding == "utf-8"
    # the training split is stored in a hashed order: its blocks mix classes
    with h5py.File(odd_data / "train-00000.h5", "r") as f:
        assert len(set(f["labels"][:4].tolist())) > 1


def test_jpeg_format(tiny_tree, tmp_path):
    prepare(tiny_tree, tmp_path / "q95", PrepOptions(format="jpeg", jpeg_quality=95, splits=["val"], workers=1))
    prepare(tiny_tree, tmp_path / "q50", PrepOptions(format="jpeg", jpeg_quality=50, splits=["val"], workers=1))
    (_, paths, _, images), = _shard_contents(tmp_path / "q95", "val")
    with h5py.File(tmp_path / "q95" / "val-00000.h5", "r") as f:
        assert "images" not in f and f["jpeg_data"].dtype == np.uint8 and f.attrs["format"] == "jpeg"
        start = f["jpeg_offsets"][1]
        assert f["jpeg_data"][start:start + 2].tolist() == [0xFF, 0xD8]                         # a JPEG file
    for p, img in zip(paths, images):
        assert np.abs(img.astype(int) - _reference(tiny_tree / p)).mean() < 4
    assert (tmp_path / "q50" / "val-00000.h5").stat().st_size < (tmp_path / "q95" / "val-00000.h5").stat().st_size
    # the mean is that of the decoded JPEGs, i.e. of what the loader will deliver
    np.testing.assert_allclose(read_mean_image(tmp_path / "q95"), images.mean(axis=0), atol=1e-4)


def test_rerun_on_finished_output_does_nothing(tiny_tree, tmp_path):
    out = tmp_path / "out"
    first = prepare(tiny_tree, out, PrepOptions(workers=1, splits=["val"]))
    stamps = {p.name: p.stat().st_mtime_ns for p in out.iterdir()}
    again = prepare(tiny_tree, out, PrepOptions(workers=1, splits=["val"]))
    assert not first.up_to_date and again.up_to_date and again.shards_written == 0
    assert again.shards_reused == first.shards_written > 0          # every shard kept (prep --json said 0)
    assert {p.name: p.stat().st_mtime_ns for p in out.iterdir()} == stamps
    with pytest.raises(DataError, match="other options"):
        prepare(tiny_tree, out, PrepOptions(workers=1, splits=["val"], format="jpeg"))


def test_another_preparation_says_what_differs(tiny_tree, tmp_path):
    """The audit: "already holds data prepared from other files or with other options" named
    neither. The options that differ are named by their flags, else the source folder, else
    the files under it."""
    out = tmp_path / "out"
    base = ["prep", str(tiny_tree), str(out), "--workers", "1", "--splits", "val"]
    assert runner.invoke(app, [*base, "--limit-per-class", "2"]).exit_code == 0
    other = runner.invoke(app, [*base, "--format", "jpeg"])
    assert other.exit_code == 1 and other.stderr.strip() == (
        f"Error: {out} already holds data prepared with other options (--format raw there, jpeg now; "
        "--limit-per-class 2 there, none now); give the options it was prepared with to use it as it is, or choose "
        "another output folder")
    asked_alike = runner.invoke(app, ["prep", str(tiny_tree), str(out), "--workers", "1", "--limit-per-class", "2",
                                      "--splits", "val,"])          # the same split, asked another way
    assert asked_alike.exit_code == 0, asked_alike.output
    every = runner.invoke(app, ["prep", str(tiny_tree), str(out), "--workers", "1", "--limit-per-class", "2"])
    assert "(--splits val there, train,val now)" in every.stderr   # the splits prepared, not the flag's text
    copy = tmp_path / "copy"                   # a copy of the same files: taken as they are
    shutil.copytree(tiny_tree, copy)
    assert runner.invoke(app, ["prep", str(copy), *base[2:], "--limit-per-class", "2"]).exit_code == 0
    assert prepare(copy, tmp_path / "c", PrepOptions(workers=1, splits=["val"])).shards_written
    shutil.copy(next(tiny_tree.glob("val/*/*")), next((copy / "val").iterdir()) / "0.JPEG")   # sorts first
    moved = runner.invoke(app, ["prep", str(copy), *base[2:], "--limit-per-class", "2"])
    assert f"prepared from other files (those under {tiny_tree.resolve()})" in moved.stderr
    with pytest.raises(DataError, match=f"from other files \\(the files under {copy} changed since\\)"):
        prepare(copy, tmp_path / "c", PrepOptions(workers=1, splits=["val"]))


def test_a_block_size_cut_to_the_shard_size_is_not_said_to_differ(tiny_tree, tmp_path):
    """--shard-size 2 cuts the default block size (32) to 2: `prep --verify` without
    --shard-size differs in the shard size only, which is what the user must give again."""
    out = tmp_path / "out"
    base = ["prep", str(tiny_tree), str(out), "--workers", "1", "--splits", "val"]
    assert runner.invoke(app, [*base, "--shard-size", "2"]).exit_code == 0
    verify = runner.invoke(app, [*base, "--verify"])
    assert verify.exit_code == 1 and "(--shard-size 2 there, 1024 now)" in verify.stderr, verify.stderr
    assert "block-size" not in verify.stderr and "delete" not in verify.stderr
    assert runner.invoke(app, [*base, "--shard-size", "2", "--verify"]).exit_code == 0


def _tree_state(folder: Path) -> dict:
    return {str(p.relative_to(folder)): p.read_bytes() if p.is_file() else None for p in sorted(folder.rglob("*"))}


@pytest.mark.parametrize("files", [
    {"config.json": '{"recipe": {}, "model": {}, "train": {}, "run": {}}', "metrics.jsonl": "{}\n",
     "checkpoints/last.pt": "x", ".lock": ""},                                        # a training run's folder
    {"notes.txt": "mine", "photos/cat.jpg": "x", ".DS_Store": ""},                   # the user's own files
])
def test_a_folder_of_other_files_is_refused_and_left_untouched(tiny_tree, tmp_path, files):
    out = tmp_path / "out"
    for name, text in files.items():
        (out / name).parent.mkdir(parents=True, exist_ok=True)
        (out / name).write_text(text)
    before = _tree_state(out)
    result = runner.invoke(app, ["prep", str(tiny_tree), str(out), "--workers", "1", "--splits", "val"])
    assert result.exit_code == 1, result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error: ") and "choose another OUT" in lines[0]
    visible = sorted(n for n in files if not n.startswith("."))
    assert visible[0].split("/")[0] in lines[0] and ".DS_Store" not in lines[0] and ".lock" not in lines[0]
    assert "Traceback" not in result.output
    assert _tree_state(out) == before                      # not one file added or changed


def test_an_interrupted_or_finished_prep_and_hidden_files_are_accepted(tiny_tree, tmp_path):
    hidden = tmp_path / "hidden"
    hidden.mkdir()
    (hidden / ".DS_Store").write_text("")                  # hidden files alone: an empty folder
    assert not prepare(tiny_tree, hidden, PrepOptions(workers=1, splits=["val"], shard_size=8)).up_to_date
    out = tmp_path / "out"
    prepare(tiny_tree, out, PrepOptions(workers=1, splits=["val"], shard_size=8))
    # what a kill leaves: finished shards, a temporary of the shard in progress, no manifest or mean yet
    (out / "manifest.json").unlink()
    (out / "mean_image.npy").unlink()
    shards = sorted(out.glob("val-*.h5"))
    assert len(shards) >= 2
    shards[-1].rename(out / f".{shards[-1].name}.999999.tmp")
    again = prepare(tiny_tree, out, PrepOptions(workers=1, splits=["val"], shard_size=8))
    assert not again.up_to_date and again.shards_reused == len(shards) - 1 and again.shards_written == 1
    # a finished folder with what the other tools write beside the data, and a user's notes
    for name in ("pca.json", "features-val-0123abcd.h5", "features-val-0123abcd.codes256.h5", "notes.txt"):
        (out / name).write_text("x")
    result = runner.invoke(app, ["prep", str(tiny_tree), str(out), "--workers", "1", "--splits", "val",
                                 "--shard-size", "8"])
    assert result.exit_code == 0 and "nothing to do" in result.stdout


def test_verify_makes_a_silently_damaged_shard_again(tiny_tree, tmp_path):
    """Bit rot keeps a shard's size, so only its sha256 tells; --verify reads every shard and
    makes the damaged ones again, bit for bit, leaving the others alone."""
    out = tmp_path / "out"
    prepare(tiny_tree, out, PrepOptions(workers=1, shard_size=16))
    manifest = json.loads((out / "manifest.json").read_text())
    stamps = {p.name: p.stat().st_mtime_ns for p in out.glob("*.h5")}
    log = []

    class Log:
        @contextlib.contextmanager
        def task(self, description, total, unit="it", done=0):
            yield self

        def advance(self, n=1, **info):
            pass

        def log(self, message, mentions=()):
            log.append(message)

    again = prepare(tiny_tree, out, PrepOptions(workers=1, shard_size=16), Log(), verify=True)
    assert again.shards_written == 0 and any("every shard" in line for line in log)
    assert {p.name: p.stat().st_mtime_ns for p in out.glob("*.h5")} == stamps
    victim = out / manifest["splits"]["train"]["shards"][1]
    data = bytearray(victim.read_bytes())
    data[len(data) // 2:len(data) // 2 + 1000] = bytes(1000)     # same size, other bytes
    victim.write_bytes(bytes(data))
    assert prepare(tiny_tree, out, PrepOptions(workers=1, shard_size=16)).up_to_date   # unnoticed without
    log.clear()
    fixed = prepare(tiny_tree, out, PrepOptions(workers=1, shard_size=16), Log(), verify=True)
    assert fixed.shards_written == 1 and any(victim.name in line and "damaged" in line for line in log)
    assert json.loads((out / "manifest.json").read_text()) == manifest                # same sha256 as before
    assert {p.name: p.stat().st_mtime_ns for p in out.glob("*.h5") if p != victim} == \
        {k: v for k, v in stamps.items() if k != victim.name}
    victim.write_bytes(bytes(data))                            # damaged again; then other options asked for
    with pytest.raises(DataError, match="other options"):
        prepare(tiny_tree, out, PrepOptions(workers=1, shard_size=16, limit_per_class=2), Log(), verify=True)
    assert json.loads((out / "manifest.json").read_text()) == manifest                # nothing was replaced
    (out / "mean_image.npy").unlink()                          # a repair must not bless the damaged shard
    log.clear()
    prepare(tiny_tree, out, PrepOptions(workers=1, shard_size=16), Log())
    assert any(victim.name in line and "damaged" in line for line in log)
    assert json.loads((out / "manifest.json").read_text()) == manifest


@pytest.mark.parametrize("damage", ["mean image deleted", "manifest not JSON", "manifest empty", "shard deleted"])
def test_rerun_repairs_a_lost_mean_image_or_manifest_from_the_shards(tiny_tree, tmp_path, damage):
    """What the errors of train and pca advise ("run `alexnet prep` again") must work."""
    out = tmp_path / "out"
    prepare(tiny_tree, out, PrepOptions(workers=1))
    manifest, mean = (out / "manifest.json").read_bytes(), np.load(out / "mean_image.npy")
    shards = {p.name: p.stat().st_mtime_ns for p in out.glob("*.h5")}
    if damage == "mean image deleted":
        (out / "mean_image.npy").unlink()
    elif damage == "shard deleted":
        lost = sorted(shards)[0]
        (out / lost).unlink()
        shards.pop(lost)
    else:
        (out / "manifest.json").write_text('{"classes": [' if damage == "manifest not JSON" else "{}")
    again = prepare(tiny_tree, out, PrepOptions(workers=1))
    assert not again.up_to_date and again.shards_written == (damage == "shard deleted")   # the others kept
    assert {p.name: p.stat().st_mtime_ns for p in out.glob("*.h5") if p.name in shards} == shards
    np.testing.assert_array_equal(np.load(out / "mean_image.npy"), mean)
    assert json.loads((out / "manifest.json").read_text()) == json.loads(manifest)


def test_limit_per_class_and_splits(tiny_tree, tmp_path):
    result = prepare(tiny_tree, tmp_path / "out", PrepOptions(workers=1, limit_per_class=2, splits=["train"]))
    m = result.manifest
    assert list(m.splits) == ["train"] and m.splits["train"].count == 8
    _, labels = zip(*[(p, y) for _, ps, ys, _ in _shard_contents(tmp_path / "out", "train") for p, y in zip(ps, ys)])
    assert sorted(labels) == [0, 0, 1, 1, 2, 2, 3, 3]


def test_worker_processes_give_the_same_bytes(odd_tree, odd_data, tmp_path):
    prepare(odd_tree, tmp_path / "two", PrepOptions(workers=2, **OPTIONS))
    assert (tmp_path / "two" / "manifest.json").read_bytes() == (odd_data / "manifest.json").read_bytes()


# ---------------------------------------------------------------------------- killed and rerun

_KILLER = r"""
import os, signal, sys
from alexnet_cli import atomic, prep
from alexnet_cli.prep import PrepOptions, prepare

where, n = sys.argv[3], int(sys.argv[4])
main = os.getpid()
die = lambda: os.kill(main, signal.SIGKILL)   # from a worker too: the workers then die with it

class Reporter:
    from contextlib import contextmanager
    @contextmanager
    def task(self, description, total, unit="it", done=0):
        class T:
            count = 0
            def advance(self, k=1, **info):
                T.count += 1
                if where == "advance" and T.count == n:
                    die()
        yield T()
    def log(self, message, mentions=()):
        pass

if where == "rename":                      # a complete temporary shard, never renamed (in a worker)
    real = os.replace
    calls = [0]
    def replace(a, b):
        calls[0] += 1
        if calls[0] == n:
            die()
        real(a, b)
    atomic.os.replace = replace
if where == "manifest":                    # every shard and the mean written, no manifest
    prep.write_manifest = lambda m: die()
prepare(sys.argv[1], sys.argv[2], PrepOptions(workers=2, shard_size=8, block_size=4), progress=Reporter())
"""


@pytest.mark.parametrize("where, n", [("advance", 3), ("rename", 2), ("manifest", 0),
                                      ("timer", 0)])
def test_killed_at_any_moment_then_rerun_equals_a_clean_run(odd_tree, odd_data, tmp_path, where, n):
    out = tmp_path / "out"
    if where == "timer":  # the real thing: the CLI, killed from outside once a shard exists
        proc = subprocess.Popen([sys.executable, "-m", "alexnet_cli", "prep", str(odd_tree), str(out),
                                 "--workers", "2", "--shard-size", "8", "--block-size", "4"],
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.time() + 60
        while not (out / "train-00000.h5").exists() and proc.poll() is None and time.time() < deadline:
            time.sleep(0.002)
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    else:
        proc = subprocess.run([sys.executable, "-c", _KILLER, str(odd_tree), str(out), where, str(n)],
                              capture_output=True, text=True, timeout=120)
        assert proc.returncode == -signal.SIGKILL, proc.stderr
        assert not (out / "manifest.json").exists()
    leftovers = sorted(p.name for p in out.iterdir())
    result = prepare(odd_tree, out, PrepOptions(workers=1, **OPTIONS))
    assert not result.up_to_date
    if where in ("manifest", "rename"):
        assert result.shards_reused >= 1, leftovers
    for name in ("manifest.json", "mean_image.npy", *read_manifest(odd_data).shards):
        assert (out / name).read_bytes() == (odd_data / name).read_bytes(), name
    assert sorted(p.name for p in out.iterdir()) == sorted(p.name for p in odd_data.iterdir())


def test_temporary_files_of_dead_runs_are_removed(tiny_tree, tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    stale = out / f".val-00000.h5.{dead.stdout.strip()}.tmp"
    stale.write_bytes(b"half a shard")
    prepare(tiny_tree, out, PrepOptions(workers=1, splits=["val"]))
    assert not stale.exists()


# ---------------------------------------------------------------------------- CLI

def test_cli_prep_json_then_nothing_to_do(odd_tree, tmp_path):
    out = tmp_path / "out"
    args = ["prep", str(odd_tree), str(out), "--workers", "1", "--shard-size", "16", "--splits", "train,val"]
    result = runner.invoke(app, [*args, "--json"])
    assert result.exit_code == 0, result.output
    doc = json.loads(result.stdout)
    check_documented_json("prep", doc)
    assert doc["splits"]["train"] == {"count": 27, "shards": 2} and doc["skipped"] == 2 and not doc["up_to_date"]
    assert "Warning: 2 source file(s) skipped (1 empty file, 1 truncated)" in " ".join(result.stderr.split())
    again = runner.invoke(app, args)
    assert again.exit_code == 0 and "nothing to do" in again.stdout


def test_cli_errors(tmp_path):
    (tmp_path / "empty").mkdir()
    unknown = runner.invoke(app, ["prep", str(tmp_path / "empty"), str(tmp_path / "out")])
    assert unknown.exit_code == 1
    lines = unknown.stderr.strip().splitlines()
    assert lines[0].startswith("Error: ") and "no ImageNet layout found" in unknown.stderr
    assert "Traceback" not in unknown.output
    missing = runner.invoke(app, ["prep", str(tmp_path / "nope"), str(tmp_path / "out")])
    assert missing.exit_code == 2
    bad = runner.invoke(app, ["prep", str(tmp_path / "empty"), str(tmp_path / "out"), "--format", "png"])
    assert bad.exit_code == 2 and "--format must be raw or jpeg" in bad.stderr   # a bad value: usage
    for empty in ("", " , "):                     # not "every split", which is leaving --splits out
        none = runner.invoke(app, ["prep", str(tmp_path / "empty"), str(tmp_path / "out"), "--splits", empty])
        assert none.exit_code == 2 and "--splits must name at least one split" in none.stderr


def test_cli_prep_refuses_an_out_among_the_images_it_reads(tmp_path):
    """`prep src src/train/n01000000/out` exited 0 with its own lock file listed as a skipped
    source, a rerun was refused and every later prep of src read OUT's files as images: an OUT
    inside a folder prep reads images from is refused before any work (exit 2, one line)."""
    src = synth.make_tree(tmp_path / "src", classes=2, train_per_class=2, val_per_class=1)
    kaggle = synth.make_tree(tmp_path / "kaggle", classes=2, train_per_class=2, val_per_class=1, layout="kaggle")
    (tmp_path / "link").symlink_to(src / "train" / synth.wnid(0))
    before = sorted(p for p in tmp_path.rglob("*"))
    for source, out in ((src, src / "train" / synth.wnid(0) / "out"), (src, src / "val" / "a" / "b"),
                        (src, src / "train"), (src, tmp_path / "link" / "out"),
                        (kaggle, kaggle / "ILSVRC" / "Data" / "CLS-LOC" / "train" / "out")):
        refused = runner.invoke(app, ["prep", str(source), str(out), "--workers", "1"])
        assert refused.exit_code == 2, (out, refused.output)
        [line] = refused.stderr.strip().splitlines()
        assert line.startswith("Error: OUT ") and str(out) in line and f"SRC {source}" in line, line
        assert "Traceback" not in refused.output
    assert sorted(p for p in tmp_path.rglob("*")) == before                   # nothing made, no lock file


def test_cli_prep_into_src_beside_the_splits_it_reads(tmp_path):
    """An OUT inside SRC but outside train/ and val/ (`prep imagenet imagenet/prepped`) is no
    source folder: prepared, kept by a rerun, and never read by a later prep of SRC."""
    src = synth.make_tree(tmp_path / "src", classes=2, train_per_class=2, val_per_class=1)
    out = src / "prepped"
    first = runner.invoke(app, ["prep", str(src), str(out), "--workers", "1", "--json"])
    assert first.exit_code == 0, first.output
    doc = json.loads(first.stdout)
    assert doc["skipped"] == 0 and doc["splits"]["train"]["count"] == 4 and doc["splits"]["val"]["count"] == 2
    again = runner.invoke(app, ["prep", str(src), str(out), "--workers", "1"])
    assert again.exit_code == 0 and "nothing to do" in again.stdout, again.output
    other = runner.invoke(app, ["prep", str(src), str(tmp_path / "other"), "--workers", "1", "--json"])
    assert other.exit_code == 0 and json.loads(other.stdout)["splits"] == doc["splits"], other.output
    assert not read_manifest(tmp_path / "other").skipped


def test_cli_label_flags(tmp_path):
    root = synth.make_tree(tmp_path / "src", classes=2, train_per_class=1, val_per_class=2, layout="devkit")
    (root / "ILSVRC2012_devkit_t12/data/meta.mat").unlink()
    failed = runner.invoke(app, ["prep", str(root), str(tmp_path / "a"), "--workers", "1"])
    assert failed.exit_code == 1 and "--val-synsets" in failed.stderr
    synsets = tmp_path / "synsets.txt"   # ILSVRC2012_ID order: synth gives class k the ID 2 - k
    synsets.write_text(f"{synth.wnid(1)}\n{synth.wnid(0)}\n")
    result = runner.invoke(app, ["prep", str(root), str(tmp_path / "b"), "--workers", "1", "--val-synsets",
                                 str(synsets), "--json"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["splits"]["val"]["count"] == 4
    for _, paths, labels, _ in _shard_contents(tmp_path / "b", "val"):
        truth = {f"ILSVRC2012_val_{i + 1:08d}.JPEG": k for i, k in enumerate(
            [synth.devkit_ids(2).index(int(x)) for x in
             (root / "ILSVRC2012_devkit_t12/data/ILSVRC2012_validation_ground_truth.txt").read_text().split()])}
        assert [truth[Path(p).name] for p in paths] == labels.tolist()


def test_a_label_file_no_split_reads_is_named_not_dropped(tmp_path):
    """The audit's `prep --val-labels FILE` on a val/ in class folders ran with no word of FILE."""
    root = synth.make_tree(tmp_path / "src", classes=2, train_per_class=1, val_per_class=1)
    labels = tmp_path / "labels.csv"
    labels.write_text("junk")
    args = ["prep", str(root), str(tmp_path / "a"), "--workers", "1", "--val-labels", str(labels),
            "--devkit-meta", str(labels)]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    notes = [line for line in result.stderr.splitlines() if line.startswith("Note: ")]
    assert notes == [f"Note: --val-labels {labels} is not used: val/ is in class folders, which give the labels",
                     f"Note: --devkit-meta {labels} is not used: no split is labelled by the devkit's ground truth"]
    only_train = runner.invoke(app, ["prep", str(root), str(tmp_path / "b"), "--workers", "1", "--splits", "train",
                                     "--val-labels", str(labels)])
    assert f"--val-labels {labels} is not used: no val/ split is prepared" in only_train.stderr


def test_cli_limit_per_class_keeps_the_first_n_files_of_every_class(tiny_tree, tmp_path):
    # tiny_tree has 12 train and 4 val images per class: N = 3 cuts both splits
    out = tmp_path / "out"
    result = runner.invoke(app, ["prep", str(tiny_tree), str(out), "--limit-per-class", "3", "--workers", "1",
                                 "--shard-size", "5", "--json"])
    assert result.exit_code == 0, result.output
    assert {k: v["count"] for k, v in json.loads(result.stdout)["splits"].items()} == {"train": 12, "val": 12}
    m = read_manifest(out)
    assert m.splits["train"].count == 12 and m.splits["val"].count == 12
    for split in ("train", "val"):
        stored = {p: y for _, ps, ys, _ in _shard_contents(out, split) for p, y in zip(ps, ys.tolist())}
        assert len(stored) == 12
        for label, wnid in enumerate(m.classes):
            # per class, not the first 12 overall: the class's first 3 files (sorted), each labelled as its class
            first = sorted(str(p.relative_to(tiny_tree)) for p in (tiny_tree / split / wnid).glob("*.JPEG"))[:3]
            assert sorted(p for p, y in stored.items() if y == label) == first, (split, wnid)
    # the mean image is that of the kept training images only
    train = np.concatenate([images for _, _, _, images in _shard_contents(out, "train")])
    np.testing.assert_allclose(read_mean_image(out), train.mean(axis=0, dtype=np.float64), rtol=0, atol=1e-4)


def test_a_rerun_names_every_shard_it_makes_again(tiny_tree, tmp_path):
    """Each finished shard made again is named on stderr with what is wrong with it: one whose
    bytes changed, one that no longer reads as a shard, one deleted (--verify and a plain rerun)."""
    out = tmp_path / "out"
    args = ["prep", str(tiny_tree), str(out), "--workers", "1", "--shard-size", "16"]
    assert runner.invoke(app, args).exit_code == 0
    names = json.loads((out / "manifest.json").read_text())["splits"]["train"]["shards"]
    changed, unreadable, deleted = (out / n for n in names[:3])
    data = bytearray(changed.read_bytes())
    data[len(data) // 2] ^= 0xFF                                 # same size, other bytes
    changed.write_bytes(bytes(data))
    data = bytearray(unreadable.read_bytes())
    data[:8] = bytes(8)                                          # the HDF5 signature gone
    unreadable.write_bytes(bytes(data))
    deleted.unlink()
    result = runner.invoke(app, [*args, "--verify", "--json"])
    assert result.exit_code == 0 and json.loads(result.stdout)["shards_written"] == 3, result.output
    said = result.stderr
    assert f"{changed} is damaged (its sha256 differs from the manifest's): making it again" in said, said
    assert f"{unreadable} is damaged (it no longer reads as a finished shard): making it again" in said, said
    assert f"{deleted} is missing: making it again" in said, said
    unreadable.write_bytes(b"")                                  # a plain rerun (sizes tell) names it too
    result = runner.invoke(app, args)
    assert result.exit_code == 0 and f"{unreadable} is damaged" in result.stderr, result.output
    assert str(changed) not in result.stderr and str(deleted) not in result.stderr
