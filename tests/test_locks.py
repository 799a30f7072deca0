"""Two commands writing the same files at once: the second fails at once with one `Error:` line
naming the files, the other process and what to do (locks.CommandLock), for `prep` (OUT/.lock),
`codes` (the codes file) and the features file of `features` and of the cache; and `codes`
refuses a features row that is not finite, naming it, on every path that reads the rows."""

from __future__ import annotations

import errno
import os
import shutil
import subprocess
import sys
from pathlib import Path

import h5py
import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from alexnet_cli import codes as codes_module
from alexnet_cli import locks
from alexnet_cli.cli.app import app
from alexnet_cli.codes import codes_path, held_out, make_codes, state_path
from alexnet_cli.errors import AlexnetError, DataError
from alexnet_cli.features import cache_path, create_features_file, load_encoder
from alexnet_cli.pca import compute_pca
from alexnet_cli.prep import PrepOptions, check_data_dir, prepare
from alexnet_cli.locks import CommandLock, missing_ancestor
from alexnet_cli.shards import read_split_index

runner = CliRunner()
ROOT = Path(__file__).parents[1]


class Holder:
    """Another process holding `CommandLock(*args, **kwargs)` (or `CommandLock.beside(path, command)`)
    until killed with SIGKILL, as a command killed midway would."""

    def __init__(self, code: str, *args: str):
        self.proc = subprocess.Popen(
            [sys.executable, "-c", "import sys, time; from alexnet_cli.locks import CommandLock; "
             f"{code}.acquire(); print('locked', flush=True); time.sleep(60)", *map(str, args)],
            stdout=subprocess.PIPE, text=True, env={**os.environ, "PYTHONPATH": str(ROOT)})
        assert self.proc.stdout.readline().strip() == "locked"

    @property
    def pid(self) -> int:
        return self.proc.pid

    def kill(self) -> None:
        self.proc.kill()
        self.proc.wait()
        self.proc.stdout.close()


def _one_error_line(result) -> str:
    assert result.exit_code == 1, result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in result.output, result.output
    return lines[0]


# ---------------------------------------------------------------------------- prep

def test_a_second_prep_into_the_same_out_fails_at_once(tiny_tree, tmp_path):
    out = tmp_path / "out"
    holder = Holder("CommandLock(sys.argv[1], command='prep', transient=True)", out)
    try:
        result = runner.invoke(app, ["prep", str(tiny_tree), str(out), "--splits", "val", "--workers", "1"])
        assert _one_error_line(result) == (f"Error: {out} is in use by another `alexnet prep` (process {holder.pid}): "
                                           "wait for it to end, or choose another OUT")
        assert sorted(p.name for p in out.iterdir()) == [".lock"]          # nothing read or written
        with pytest.raises(AlexnetError, match="in use by another `alexnet prep`"):
            prepare(tiny_tree, out, PrepOptions(workers=1, splits=["val"]), verify=True)
    finally:
        holder.kill()                                      # SIGKILL: its .lock stays, unlocked
    assert (out / ".lock").exists()
    done = runner.invoke(app, ["prep", str(tiny_tree), str(out), "--splits", "val", "--workers", "1"])
    assert done.exit_code == 0, done.output
    assert not (out / ".lock").exists()                     # a prep removes its lock file as it ends


def test_prep_holds_the_lock_for_its_whole_run_and_leaves_no_lock_file(tiny_tree, tmp_path, monkeypatch):
    """Held while the shards are written and the manifest is written last; a train starting
    in the folder then is refused naming prep; a prep that fails before writing leaves no folder."""
    from alexnet_cli import prep, shards
    out = tmp_path / "out"
    seen = []
    real_manifest = shards.write_manifest

    def manifest_seeing_the_lock(manifest):
        seen.append(CommandLock(out).held())
        with pytest.raises(AlexnetError) as refused:      # what a `train --out OUT` started now is told
            CommandLock(out).acquire()
        seen.append(str(refused.value))
        real_manifest(manifest)

    monkeypatch.setattr(prep, "write_manifest", manifest_seeing_the_lock)
    result = prepare(tiny_tree, out, PrepOptions(workers=1, splits=["val"]))
    assert not result.up_to_date and seen[0] is True
    assert seen[1] == (f"{out} is in use by another `alexnet prep` (process {os.getpid()}): wait for it to end, "
                       "or choose another `out`")
    assert not (out / ".lock").exists() and CommandLock(out).held() is None
    assert prepare(tiny_tree, out, PrepOptions(workers=1, splits=["val"])).up_to_date

    missing = tmp_path / "new"
    with pytest.raises(DataError):
        prepare(tmp_path / "no-source", missing / "a" / "b", PrepOptions(workers=1))
    assert not missing.exists()                               # nor the parents it made


def test_a_lock_file_left_in_a_data_folder_confuses_nothing(tiny_data, tmp_path):
    """A prep killed midway leaves OUT/.lock: prep's own checks, its rerun, the split index,
    `pca` and the loader's reading of the folder ignore it."""
    data = shutil.copytree(tiny_data, tmp_path / "data")
    (data / ".lock").write_text("123 prep\n")
    check_data_dir(data)
    paths, _ = read_split_index(data, "val")
    assert len(paths) == 16
    assert compute_pca(data, sample=2).images == 2
    from alexnet_cli.loader import ShardLoader
    assert sum(len(b.images) for b in ShardLoader(data, "val", 8, shuffle=False, device="cpu").epoch(0)) == 16


def test_prep_verify_on_a_folder_it_cannot_lock_still_reads_it(tiny_tree, tmp_path, monkeypatch):
    """A read-only OUT (the lock file cannot be made): --verify of intact data works unlocked."""
    out = tmp_path / "out"
    prepare(tiny_tree, out, PrepOptions(workers=1, splits=["val"]))
    real_open = os.open

    def read_only(path, flags, *args):
        if str(path).endswith(".lock") and flags & os.O_CREAT:
            raise OSError(errno.EROFS, os.strerror(errno.EROFS), str(path))
        return real_open(path, flags, *args)

    monkeypatch.setattr(locks.os, "open", read_only)
    again = prepare(tiny_tree, out, PrepOptions(workers=1, splits=["val"]), verify=True)
    assert again.up_to_date and not (out / ".lock").exists()
    with pytest.raises(OSError):                    # a train's lock is never silently skipped
        CommandLock(tmp_path / "run").acquire()


def test_a_transient_lock_removed_by_its_holder_is_taken_afresh(tmp_path, monkeypatch):
    """A process that opened the lock file just before its holder removed it and let go locks
    a file no one else sees: it must lock the file now at the path instead, or two would hold
    the lock at once."""
    first = CommandLock.beside(tmp_path / "f.h5", "codes")
    first.acquire()
    stale = os.open(first.path, os.O_RDWR)               # opened by a second process, then
    first.release()                                      # the holder removes it and lets go
    assert not first.path.exists()
    real_open, opened = os.open, []

    def open_the_stale_file_first(path, flags, *args):
        opened.append(path)
        return os.dup(stale) if len(opened) == 1 else real_open(path, flags, *args)

    monkeypatch.setattr(locks.os, "open", open_the_stale_file_first)
    second = CommandLock.beside(tmp_path / "f.h5", "codes")
    second.acquire()
    monkeypatch.undo()
    os.close(stale)
    try:
        assert len(opened) == 2 and os.path.samestat(os.fstat(second._fd), os.stat(second.path))
        third = CommandLock.beside(tmp_path / "f.h5", "features")
        with pytest.raises(AlexnetError, match=f"in use by another `alexnet codes` \\(process {os.getpid()}\\)"):
            third.acquire()
    finally:
        second.release()
    assert not second.path.exists()


# ---------------------------------------------------------------------------- codes and features

@pytest.fixture(autouse=True)
def one_thread():
    """Tiny networks train many times faster on one thread than on contended cores."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _features_file(path: Path, rows: np.ndarray) -> Path:
    n, dim = rows.shape
    labels = np.arange(n) % 3
    create_features_file(path, paths=[f"img{i}.png" for i in range(n)], labels=labels, classes=["a", "b", "c"],
                         class_names=["a", "b", "c"], split="train", key="k", data="d", dim=dim)
    with h5py.File(path, "r+") as f:
        f["features"][:] = rows
        f.attrs["done"] = n
    return path


def _rows(n: int = 60, dim: int = 16) -> np.ndarray:
    return np.abs(np.random.default_rng(0).standard_normal((n, dim))).astype(np.float16)


SMALL = dict(bits=64, hidden=8, batch_size=16, queries=6, rerank_depth=10)


def test_a_second_make_codes_of_the_same_codes_fails_at_once(tmp_path):
    features = _features_file(tmp_path / "f.h5", _rows())
    codes = codes_path(features, 64)
    holder = Holder("CommandLock.beside(sys.argv[1], 'codes')", codes)
    try:
        with pytest.raises(AlexnetError) as refused:
            make_codes(features, epochs=1, **SMALL)
        assert str(refused.value) == (f"{codes} is in use by another `alexnet codes` (process {holder.pid}): "
                                      "wait for it to end, then run the same command again")
        assert not codes.exists() and not state_path(features, 64).exists()
    finally:
        holder.kill()
    assert not make_codes(features, epochs=1, **SMALL).reused
    assert sorted(p.name for p in tmp_path.iterdir()) == ["f.codes64.h5", "f.h5"]     # no lock file left


@pytest.fixture(scope="module")
def data(tiny_data, tmp_path_factory):
    return shutil.copytree(tiny_data, tmp_path_factory.mktemp("locks") / "data")


@pytest.fixture(scope="module")
def checkpoint(data, tmp_path_factory, make_checkpoint):
    return make_checkpoint(tmp_path_factory.mktemp("locks_ckpt") / "model.pt", data)


@pytest.fixture(scope="module")
def cache(data, checkpoint):
    """Where `codes` and `neighbors` cache the features of 'val' by this checkpoint."""
    return cache_path(data, "val", load_encoder(checkpoint, data, "cpu").key)


def test_a_second_codes_fails_before_computing_the_features(data, checkpoint, cache):
    """Two `alexnet codes` on the same checkpoint and data: the second was told the cache
    could not be written in DATA (HDF5's own lock on the features file being filled)."""
    codes = codes_path(cache, 64)
    holder = Holder("CommandLock.beside(sys.argv[1], 'codes')", codes)
    try:
        result = runner.invoke(app, ["codes", str(checkpoint), str(data), "--split", "val", "--bits", "64",
                                     "--device", "cpu"])
        assert _one_error_line(result) == (f"Error: {codes} is in use by another `alexnet codes` (process "
                                           f"{holder.pid}): wait for it to end, then run the same command again")
        assert sorted(p.name for p in data.iterdir() if "features" in p.name) == [f".{codes.name}.lock"]  # only its
    finally:
        holder.kill()


def test_a_features_file_being_written_is_not_written_twice(data, checkpoint, tmp_path):
    out = tmp_path / "f.h5"
    holder = Holder("CommandLock.beside(sys.argv[1], 'features')", out)
    try:
        result = runner.invoke(app, ["features", str(checkpoint), str(data), "--out", str(out), "--split", "val",
                                     "--device", "cpu"])
        assert _one_error_line(result) == (f"Error: {out} is in use by another `alexnet features` (process "
                                           f"{holder.pid}): wait for it to end, then run the same command again")
        assert sorted(p.name for p in tmp_path.iterdir()) == [".f.h5.lock"]
    finally:
        holder.kill()


def test_a_cache_filled_by_another_command_is_not_filled_twice(data, checkpoint, cache):
    holder = Holder("CommandLock.beside(sys.argv[1], None)", cache)          # the cache, filled for no command named
    try:
        result = runner.invoke(app, ["codes", str(checkpoint), str(data), "--split", "val", "--bits", "128",
                                     "--device", "cpu"])
        assert _one_error_line(result) == (f"Error: {cache} is in use by another alexnet process (process "
                                           f"{holder.pid}): wait for it to end, then run the same command again")
    finally:
        holder.kill()


# ---------------------------------------------------------------------------- non-finite rows

def test_codes_refuses_a_non_finite_training_row_before_training(tmp_path):
    rows = _rows()
    train_row = next(i for i in range(len(rows)) if i not in set(held_out(len(rows), 0, SMALL["queries"])))
    rows[train_row, 3] = np.nan
    features = _features_file(tmp_path / "f.h5", rows)
    with pytest.raises(DataError) as refused:
        make_codes(features, epochs=1, **SMALL)
    assert str(refused.value).startswith(f"{features}: damaged (row {train_row} holds NaN or infinite values)")
    assert not state_path(features, 64).exists()                           # refused before any epoch


def test_codes_resumed_on_a_row_damaged_since_names_it(tmp_path, monkeypatch):
    """A training state skips the centring pass that checks the rows: the first step whose
    batch holds the row names it (before the update), instead of a loss 'not finite' after a
    whole epoch."""
    features = _features_file(tmp_path / "f.h5", _rows())

    def killed(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(codes_module, "_finish", killed)                  # killed after its epoch was saved
    with pytest.raises(KeyboardInterrupt):
        make_codes(features, epochs=1, **SMALL)
    monkeypatch.undo()
    assert state_path(features, 64).exists()
    held = set(held_out(60, 0, SMALL["queries"]))
    bad = [i for i in range(60) if i not in held][-1]
    with h5py.File(features, "r+") as f:
        f["features"][bad, 0] = np.inf
    with pytest.raises(DataError) as refused:
        make_codes(features, epochs=2, **SMALL)
    assert str(refused.value).startswith(f"{features}: damaged (row {bad} holds NaN or infinite values)")


def test_a_lock_whose_folder_its_holder_removed_is_taken_in_a_new_folder(tmp_path, monkeypatch):
    """A holder that lets go with remove_folders_up_to removes the folder between this
    process's mkdir and its open: the lock makes the folder again and is taken, not an OSError."""
    out = tmp_path / "out"
    real_open, calls = os.open, []

    def open_after_the_folder_went(path, flags, *args):
        calls.append(path)
        if len(calls) == 1:
            Path(path).parent.rmdir()                # the holder's release, just before this open
        return real_open(path, flags, *args)

    monkeypatch.setattr(os, "open", open_after_the_folder_went)
    lock = CommandLock(out, command="prep", transient=True)
    lock.acquire()
    monkeypatch.undo()
    assert len(calls) == 2 and (out / ".lock").read_text().split() == [str(os.getpid()), "prep"]
    lock.release()
    assert not (out / ".lock").exists()


def test_release_removes_the_empty_folders_it_made_and_no_others(tmp_path):
    """`missing_ancestor` names the outermost folder a lock's mkdir makes; release removes that
    chain while empty, stops at a folder something else was written in, and never goes above."""
    assert missing_ancestor(tmp_path) is None
    assert missing_ancestor(tmp_path / "a" / "b" / "c") == tmp_path / "a"
    run = tmp_path / "a" / "b" / "c"
    made = missing_ancestor(run)
    lock = CommandLock(run)
    lock.acquire()
    lock.release(remove_folders_up_to=made)
    assert not (tmp_path / "a").exists() and tmp_path.exists()

    made = missing_ancestor(run)
    lock = CommandLock(run)
    lock.acquire()
    (tmp_path / "a" / "other.txt").write_text("another command's file\n")
    lock.release(remove_folders_up_to=made)
    assert not (tmp_path / "a" / "b").exists() and (tmp_path / "a" / "other.txt").exists()

    lock = CommandLock(run)
    lock.acquire()
    (run / "last.pt").write_bytes(b"written")          # the run wrote something: all stays
    lock.release(remove_folders_up_to=tmp_path / "a" / "b")
    assert (run / "last.pt").exists() and (run / ".lock").exists()     # a run's lock file stays, for report
