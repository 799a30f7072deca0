"""alexnet_cli.atomic: all-or-nothing writes, and the clean-up of temporaries left by killed
writers (never a live writer's, never a file of another name)."""

from __future__ import annotations

import errno
import os

import pytest

from alexnet_cli import atomic
from alexnet_cli.atomic import claim, partial_path, publish, remove_abandoned, temporary_name, write_atomic


def test_write_atomic_replaces_the_whole_file_and_leaves_no_temporary(tmp_path):
    path = tmp_path / "a.json"
    write_atomic(path, b"first version, longer")
    write_atomic(path, memoryview(b"second"))
    assert path.read_bytes() == b"second"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.json"]
    assert temporary_name(path).name == f".a.json.{os.getpid()}.tmp"


def test_a_failed_write_names_the_file_and_keeps_the_old_one(tmp_path, monkeypatch):
    path = tmp_path / "a.json"
    write_atomic(path, b"old")

    def full(fd):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(atomic.os, "fsync", full)
    with pytest.raises(OSError) as caught:
        write_atomic(path, b"new")
    assert caught.value.filename == str(path) and caught.value.errno == errno.ENOSPC
    assert path.read_bytes() == b"old" and sorted(p.name for p in tmp_path.iterdir()) == ["a.json"]


def test_only_the_temporaries_of_dead_writers_are_removed(tmp_path):
    dead = tmp_path / ".x.h5.123.tmp"
    os.close(claim(dead))                               # its writer is gone (as after SIGKILL)
    live = tmp_path / ".y.h5.456.tmp"
    fd = claim(live)
    other = tmp_path / ".notes.tmp"                     # not a name temporary_name gives
    other.write_text("mine")
    partial = tmp_path / ".pca.partial.json.789.tmp"
    os.close(claim(partial))
    try:
        remove_abandoned(tmp_path, "pca.partial.json")  # that file's only
        assert not partial.exists() and dead.exists()
        remove_abandoned(tmp_path)
        assert not dead.exists() and live.exists() and other.read_text() == "mine"
        remove_abandoned(tmp_path / "missing")          # a folder not made yet has none
    finally:
        os.close(fd)


def test_a_write_removes_the_temporaries_killed_writers_left_of_that_file_only(tmp_path):
    """The kill audit: `eval --predictions F`, `pca --out F` killed before their rename left
    .F.PID.tmp, and the rerun that wrote F kept it forever."""
    dead = tmp_path / ".pred.csv.123.tmp"
    os.close(claim(dead))                               # killed before its rename
    live = tmp_path / ".pred.csv.456.tmp"
    fd = claim(live)                                    # another process writing it now
    other = tmp_path / ".pc.csv.789.tmp"
    os.close(claim(other))                              # another file's: its own writer's business
    try:
        write_atomic(tmp_path / "pred.csv", b"rows")
        assert not dead.exists() and live.exists() and other.exists()
        assert (tmp_path / "pred.csv").read_bytes() == b"rows"
    finally:
        os.close(fd)


def test_a_checkpoint_temporary_of_an_older_version_is_removed_too(tmp_path):
    import tempfile
    fd, old = tempfile.mkstemp(prefix=".last.pt.", suffix=".tmp", dir=tmp_path)   # a checkpoint temporary before atomic.py
    os.close(fd)
    remove_abandoned(tmp_path)
    assert not os.path.exists(old)


def test_a_second_claim_fails_and_leaves_the_live_writers_file_whole(tmp_path):
    tmp = tmp_path / ".a.h5.123.tmp"
    fd = claim(tmp)
    try:
        os.write(fd, b"x" * 1000)
        with pytest.raises(OSError):
            claim(tmp)
        assert tmp.stat().st_size == 1000
    finally:
        os.close(fd)
    os.close(claim(tmp))                                # once its writer is gone, a claim empties it
    assert tmp.stat().st_size == 0


def test_a_partial_file_is_published_under_its_name(tmp_path):
    out = tmp_path / "features.h5"
    partial = partial_path(out)
    assert partial == tmp_path / "features.h5.partial"
    partial.write_bytes(b"rows")
    publish(partial, out)
    assert out.read_bytes() == b"rows" and not partial.exists()


def test_write_output_replaces_a_links_target_and_writes_into_a_fifo(tmp_path):
    """An output given as a symlink keeps the link (its target is replaced, whole); a FIFO (or
    /dev/stdout) has no folder for a temporary and nothing to keep: it is written straight."""
    import threading
    from alexnet_cli.atomic import cannot_write, write_output
    target, link = tmp_path / "real.csv", tmp_path / "link.csv"
    target.write_bytes(b"old")
    link.symlink_to(target)
    write_output(link, b"new")
    assert link.is_symlink() and target.read_bytes() == b"new"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["link.csv", "real.csv"]
    fifo = tmp_path / "pipe"
    os.mkfifo(fifo)
    got = []
    reader = threading.Thread(target=lambda: got.append(fifo.read_bytes()))
    reader.start()
    write_output(fifo, b"through the pipe")
    reader.join(10)
    assert got == [b"through the pipe"] and not list(tmp_path.glob(".*"))
    assert cannot_write(link, OSError(errno.EACCES, "Permission denied")) == "Permission denied"
    assert cannot_write(link, OSError(errno.ENOSPC, "x")).startswith("the disk is full (")


def test_a_full_disk_met_making_a_folder_is_a_full_disk_not_a_full_device(tmp_path):
    """The diff review: a folder (a mkdir on a full disk) is no regular file, and was said to be
    "the device is full ... choose another file"; only a device or a FIFO is."""
    from alexnet_cli.atomic import cannot_write
    said = cannot_write(tmp_path, OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(tmp_path)))
    assert said.startswith("the disk is full (") and said.endswith("free some space"), said
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    assert cannot_write(fifo, OSError(errno.ENOSPC, "x")).startswith("the device is full")
