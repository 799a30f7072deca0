"""`alexnet features`: the file's shape and contents, resuming after an interruption, keeping
or refusing an existing file, and the command end to end. Runs on the tiny data's val split
(16 images) to stay fast on a CPU."""

from __future__ import annotations

import errno
import json
import os
import shutil
import subprocess
import sys
from contextlib import contextmanager
from pathlib import Path

import h5py
import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from alexnet_cli.atomic import partial_path
from alexnet_cli.checkpoint import load_checkpoint, save_checkpoint
from alexnet_cli.cli.app import app
from alexnet_cli.cli.flags import flag_message
from alexnet_cli.errors import DataError
from alexnet_cli.features import extract_features, load_encoder, read_features_info, write_features
from alexnet_cli.neighbors import read_split_images
from alexnet_cli.shards import read_split_index
from test_docs import check_documented_json

runner = CliRunner()


@pytest.fixture(scope="module")
def checkpoint(tiny_data, tmp_path_factory, make_checkpoint):
    """A randomly initialised 4-class network with the data's mean image."""
    return make_checkpoint(tmp_path_factory.mktemp("features_ckpt") / "model.pt", tiny_data)


@pytest.fixture(scope="module")
def encoder(tiny_data, checkpoint):
    return load_encoder(checkpoint, tiny_data, "cpu")


@pytest.fixture(scope="module")
def clean(tiny_data, checkpoint, tmp_path_factory):
    """The val split's features from one uninterrupted run of `extract_features`."""
    out = tmp_path_factory.mktemp("features_clean") / "val.h5"
    extract_features(checkpoint, tiny_data, out, split="val", batch_size=6, device="cpu")
    return out


class Interrupt:
    """A progress reporter that stops the run (like Ctrl-C) after `after` batches, and keeps
    the log lines."""

    def __init__(self, after: int | None = None):
        self.after, self.batches, self.lines = after, 0, []

    @contextmanager
    def task(self, description, total, unit="it", done=0):
        yield self

    def advance(self, n=1, **info):
        self.batches += 1
        if self.after is not None and self.batches >= self.after:
            raise KeyboardInterrupt

    def log(self, message, mentions=()):
        self.lines.append(message)


def _read(path):
    with h5py.File(path, "r") as f:
        return (f["features"][:], list(f["paths"].asstr()[:]), f["labels"][:], dict(f.attrs))


def test_features_file_holds_fc7_of_every_image_in_split_order(tiny_data, encoder, clean):
    out = clean
    info = read_features_info(out)
    assert (info.count, info.dim, info.done, info.split) == (16, 4096, 16, "val") and info.complete
    assert not partial_path(out).exists()
    feats, paths, labels, attrs = _read(out)
    assert feats.shape == (16, 4096) and feats.dtype == np.float16
    want_paths, want_labels = read_split_index(tiny_data, "val")
    assert paths == want_paths and labels.tolist() == want_labels.tolist()
    # row i = fc7 (after ReLU) of the centre crop of stored image i, as float16
    assert attrs["key"] == encoder.key and attrs["format"] == "alexnet-cli/features"
    rows = [0, 7, 15]
    images = torch.from_numpy(np.stack(read_split_images(tiny_data, "val", rows)))
    want = encoder(images).numpy()                                         # (3, 4096) float32
    assert (feats >= 0).all()
    np.testing.assert_allclose(feats[rows].astype(np.float32), want, rtol=2e-3, atol=1e-3)
    assert np.abs(feats[0].astype(np.float32) - feats[1]).max() > 1e-2     # images differ

    # a second call finds the complete file and leaves it alone
    mtime = out.stat().st_mtime_ns
    again = write_features(encoder, tiny_data, "val", out, batch_size=6)
    assert again == info and out.stat().st_mtime_ns == mtime
    assert again.reused and not info.reused                    # and says so


def test_an_interrupted_run_resumes_where_it_stopped(tiny_data, encoder, clean, tmp_path):
    out = tmp_path / "val.h5"
    stop = Interrupt(after=2)
    with pytest.raises(KeyboardInterrupt):
        write_features(encoder, tiny_data, "val", out, batch_size=4, progress=stop)
    assert not out.exists()                                 # only complete files carry the final name
    part = read_features_info(partial_path(out))
    assert part.done == 8 and not part.complete
    written = _read(partial_path(out))[0][:8]

    # resume with another batch size: it restarts inside a batch (rows 6, 7 are skipped)
    log = Interrupt()
    info = write_features(encoder, tiny_data, "val", out, batch_size=3, progress=log)
    assert info.complete and not partial_path(out).exists()
    assert any("resuming" in line and "8" in line for line in log.lines)
    assert log.batches == 4                                 # the batches of 3 that start at rows 6, 9, 12, 15
    resumed, paths, labels, _ = _read(out)
    np.testing.assert_array_equal(resumed[:8], written)    # kept, not recomputed

    clean_feats, clean_paths, clean_labels, _ = _read(clean)
    np.testing.assert_allclose(resumed.astype(np.float32), clean_feats.astype(np.float32), rtol=2e-3, atol=1e-3)
    assert paths == clean_paths and labels.tolist() == clean_labels.tolist()


def test_damaged_partial_restarts_and_foreign_file_is_refused(tiny_data, encoder, tmp_path):
    out = tmp_path / "val.h5"
    partial_path(out).write_bytes(b"not hdf5 at all")
    log = Interrupt()
    info = write_features(encoder, tiny_data, "val", out, batch_size=8, progress=log)
    assert info.complete and any("starting afresh" in line for line in log.lines)

    with h5py.File(out, "r+") as f:                         # pretend another network made it
        f.attrs["key"] = "0123456789abcdef"
    with pytest.raises(DataError, match="pass `overwrite` or another `out`") as refused:   # the library's names
        write_features(encoder, tiny_data, "val", out)
    assert flag_message(refused.value).endswith("pass --overwrite or another --out")       # the CLI's flags
    info = write_features(encoder, tiny_data, "val", out, batch_size=8, overwrite=True)
    assert info.key != "0123456789abcdef" and info.complete
    # the same network's features of another split: the split is named, not "other data"
    with pytest.raises(DataError, match=r"holds other features \(of split 'val', not 'train'\)"):
        write_features(encoder, tiny_data, "train", out)


def test_cli_features(tiny_data, checkpoint, tmp_path):
    out = tmp_path / "f.h5"
    result = runner.invoke(app, ["features", str(checkpoint), str(tiny_data), "--split", "val", "--out", str(out),
                                 "--batch-size", "8", "--device", "cpu", "--json"])
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    check_documented_json("features", data)
    assert data["count"] == 16 and data["dim"] == 4096 and data["out"] == str(out) and data["split"] == "val"
    # run again on the complete file: kept as it is, and both outputs say it was reused
    mtime = out.stat().st_mtime_ns
    again = runner.invoke(app, ["features", str(checkpoint), str(tiny_data), "--split", "val", "--out", str(out),
                                "--device", "cpu", "--json"])
    assert again.exit_code == 0, again.output
    assert json.loads(again.stdout) == data and out.stat().st_mtime_ns == mtime   # the file's document, unchanged
    shown = runner.invoke(app, ["features", str(checkpoint), str(tiny_data), "--split", "val", "--out", str(out),
                                "--device", "cpu"])
    assert shown.exit_code == 0, shown.output
    assert " ".join(shown.stdout.split()) == (f"16 x 4096 float16 fc7 features of split 'val' (network {data['key']}) "
                                              f"reused from {out}: it was already complete for this network and "
                                              "data (--overwrite computes them again)")
    fresh = runner.invoke(app, ["features", str(checkpoint), str(tiny_data), "--split", "val", "--out", str(out),
                                "--device", "cpu", "--overwrite"])
    assert fresh.exit_code == 0 and "reused" not in fresh.stdout and fresh.stdout.startswith(f"{out}: 16 x 4096")

    bad = runner.invoke(app, ["features", str(checkpoint), str(tiny_data), "--split", "test", "--out", str(out)])
    assert bad.exit_code == 1 and "Error:" in bad.stderr and "no split 'test'" in bad.stderr and "pass one of them as --split" in bad.stderr
    assert runner.invoke(app, ["features", str(checkpoint), str(tmp_path / "nodata"), "--out", str(out)]).exit_code == 2
    assert runner.invoke(app, ["features", str(checkpoint), str(tiny_data)]).exit_code == 2   # --out is required


# ---------------------------------------------------------------------------- the key covers the network (F15)

def _same_weights_without_lrn(checkpoint, path):
    """The checkpoint's weights in a network without LRN (LRN has no weights: same state_dict)."""
    payload = load_checkpoint(checkpoint)
    payload["config"]["model"]["lrn"] = False
    save_checkpoint(path, {k: v for k, v in payload.items() if k not in ("format", "version")})
    return path


def test_key_covers_the_network_config_and_is_checked_when_read(tiny_data, checkpoint, encoder, clean, tmp_path):
    no_lrn = load_encoder(_same_weights_without_lrn(checkpoint, tmp_path / "nolrn.pt"), tiny_data, "cpu")
    assert no_lrn.key != encoder.key                       # same weights, another network: other features
    info = read_features_info(clean)
    assert info.version == 2 and json.loads(info.network)["lrn"] is True
    why = info.other_network(no_lrn)
    assert "lrn=True (this network: False)" in why and info.other_network(encoder) == ""
    with pytest.raises(DataError, match="lrn=True"):      # an --out of the LRN network's features is not reused
        write_features(no_lrn, tiny_data, "val", clean)

    # a version-1 file (its key ignored the settings) is never taken for this network's
    old = tmp_path / "v1.h5"
    shutil.copy(clean, old)
    with h5py.File(old, "r+") as f:
        f.attrs["version"] = 1
        del f.attrs["network"]
    v1 = read_features_info(old)
    assert not v1.made_by(encoder.key, "val", 16, v1.data_key) and "format 1" in v1.other_network(encoder)


# ---------------------------------------------------------------------------- a full disk (F13)

def _enospc(*args, **kwargs):
    raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))


def test_full_disk_is_one_error_line_and_a_rerun_continues(tiny_data, checkpoint, encoder, tmp_path, monkeypatch):
    out = tmp_path / "val.h5"
    args = ["features", str(checkpoint), str(tiny_data), "--split", "val", "--out", str(out), "--batch-size", "4",
            "--device", "cpu"]
    with monkeypatch.context() as m:                       # no room for the rows: refused before any work
        m.setattr(os, "posix_fallocate", _enospc)
        full = runner.invoke(app, args)
    assert full.exit_code == 1 and full.stderr.startswith("Error:") and len(full.stderr.strip().splitlines()) == 1
    assert "disk is full" in full.stderr and not out.exists() and not partial_path(out).exists()

    class FillsUp(Interrupt):                              # the disk fills after two batches' rows were flushed
        def advance(self, n=1, **info):
            super().advance(n)
            if self.batches == 2:
                _enospc()
    with pytest.raises(DataError, match="disk is full.*continues"):
        write_features(encoder, tiny_data, "val", out, batch_size=4, progress=FillsUp())
    assert read_features_info(partial_path(out)).done == 8
    log = Interrupt()
    info = write_features(encoder, tiny_data, "val", out, batch_size=4, progress=log)
    assert info.complete and log.batches == 2 and any("resuming" in line for line in log.lines)


@pytest.mark.skipif(not hasattr(os, "geteuid") or os.geteuid() != 0 or not shutil.which("mount"),
                    reason="mounts a small tmpfs: needs root")
def test_full_tmpfs_is_an_error_not_a_segfault(tiny_data, checkpoint, tmp_path):
    """The real thing: a 200 KiB tmpfs, too small for 48 rows of 8 KiB. The old code died
    with a segfault (exit 139) after an HDF5 traceback; a rerun after growing it finishes."""
    disk = tmp_path / "disk"
    disk.mkdir()
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=200k", "tmpfs", str(disk)], capture_output=True).returncode:
        pytest.skip("cannot mount a tmpfs here")
    try:
        cmd = [sys.executable, "-m", "alexnet_cli", "features", str(checkpoint), str(tiny_data), "--split", "train",
               "--out", str(disk / "f.h5"), "--batch-size", "8", "--device", "cpu"]
        env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
        for _ in range(2):                                 # a rerun on the full disk: the same one line
            run = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=300)
            assert run.returncode == 1, run.stderr[-2000:]
            assert run.stderr.startswith("Error:") and "disk is full" in run.stderr
            assert len(run.stderr.strip().splitlines()) == 1
        subprocess.run(["mount", "-o", "remount,size=4m", str(disk)], check=True)
        run = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=300)
        assert run.returncode == 0, run.stderr[-2000:]
        assert read_features_info(disk / "f.h5").complete
    finally:
        subprocess.run(["umount", str(disk)])


def test_cli_features_refuses_an_out_under_a_file_before_any_work(tiny_data, checkpoint, tmp_path, monkeypatch):
    """Like every other command's --out: exit 2, one line naming the folder that is not one."""
    monkeypatch.setattr("alexnet_cli.features.extract_features", lambda *a, **k: pytest.fail("worked before checking --out"))
    blocker = tmp_path / "some_file.txt"
    blocker.write_text("not a folder")
    result = runner.invoke(app, ["features", str(checkpoint), str(tiny_data), "--out", str(blocker / "f.h5")])
    assert result.exit_code == 2, result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error:"), result.stderr
    assert f"{blocker} is not a writable folder" in lines[0]
