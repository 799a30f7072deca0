"""A file larger than the process may write (`ulimit -f`, RLIMIT_FSIZE: batch systems) or than
its file system allows (FAT32: 4 GiB): one `Error:` line that says so and what to do, never
HDF5's tracebacks and a segfault at exit, and a rerun without the limit finishes.

The real case runs the CLI in a subprocess under RLIMIT_FSIZE. Python ignores SIGXFSZ at
start-up (as it ignores SIGPIPE), so under `ulimit -f` a write past the limit fails with
EFBIG rather than killing the process: the subprocess sees what a user's shell gives it."""

from __future__ import annotations

import errno
import os
import resource
import shutil
import subprocess
import sys
from pathlib import Path

import h5py
import numpy as np
import pytest

from alexnet_cli.atomic import check_file_size, no_room, partial_path, room_advice
from alexnet_cli.errors import DataError
from alexnet_cli.features import create_features_file, read_features_info, write_features

ROOT = Path(__file__).resolve().parents[1]
LIMIT = 300 << 10          # below the train split's features (48 rows of 8 KiB: about 400 KiB)


@pytest.fixture(scope="module")
def checkpoint(tiny_data, tmp_path_factory, make_checkpoint):
    return make_checkpoint(tmp_path_factory.mktemp("limits_ckpt") / "model.pt", tiny_data)


def _cli(*args: str, limit: int | None = LIMIT) -> subprocess.CompletedProcess:
    """`alexnet ARGS` in a fresh interpreter, its files limited to `limit` bytes (None: unlimited)."""
    def limited():
        if limit is not None:
            resource.setrlimit(resource.RLIMIT_FSIZE, (limit, resource.getrlimit(resource.RLIMIT_FSIZE)[1]))
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.run([sys.executable, "-m", "alexnet_cli", *args], capture_output=True, text=True, env=env,
                          preexec_fn=limited, timeout=600)


def _one_error_line(run: subprocess.CompletedProcess, after: str | None = None) -> str:
    """The run's one `Error:` line, after nothing (or one progress line starting with `after`)."""
    assert run.returncode == 1, run.stderr[-3000:]
    assert "Traceback" not in run.stderr and "Exception ignored" not in run.stderr, run.stderr[-3000:]
    lines = run.stderr.strip().splitlines()
    if after is not None:
        assert lines[0].startswith(after), run.stderr[-3000:]
        lines = lines[1:]
    assert len(lines) == 1 and lines[0].startswith("Error:"), run.stderr[-3000:]
    return lines[0]


def test_python_ignores_sigxfsz_so_a_limited_write_fails_with_efbig(tmp_path):
    """What the tests below rely on: under RLIMIT_FSIZE a Python process gets EFBIG, not SIGXFSZ
    (the shell's `ulimit -f` leaves SIGXFSZ at its default, which would kill a C program)."""
    script = (f"import errno, os\nfd = os.open({str(tmp_path / 'big')!r}, os.O_WRONLY | os.O_CREAT)\n"
              f"try:\n    os.pwrite(fd, b'x', {LIMIT})\nexcept OSError as e:\n    print(errno.errorcode[e.errno])")
    run = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60,
                         preexec_fn=lambda: resource.setrlimit(resource.RLIMIT_FSIZE, (LIMIT, LIMIT)))
    assert run.returncode == 0 and run.stdout.strip() == "EFBIG", (run.returncode, run.stdout, run.stderr)


def test_features_beyond_ulimit_is_one_error_line_and_a_rerun_without_it_finishes(tiny_data, checkpoint, tmp_path):
    out = tmp_path / "feat.h5"
    args = ("features", str(checkpoint), str(tiny_data), "--out", str(out), "--batch-size", "16", "--workers", "1",
            "--device", "cpu")
    line = _one_error_line(_cli(*args))                     # the old code: HDF5 tracebacks, exit 139
    assert str(partial_path(out)) in line and "file-size limit" in line and "ulimit -f unlimited" in line
    assert not out.exists() and not partial_path(out).exists() and not list(tmp_path.glob(".*"))
    run = _cli(*args, limit=None)
    assert run.returncode == 0, run.stderr[-3000:]
    assert read_features_info(out).complete and read_features_info(out).count == 48


def test_a_partial_file_beyond_a_lower_limit_is_kept_and_resumed(tiny_data, checkpoint, tmp_path):
    """A run stopped half-way, resumed under a limit below its file's size: one line, the rows
    written are kept, and a rerun without the limit continues from them."""
    from alexnet_cli.features import load_encoder
    from test_features import Interrupt
    out = tmp_path / "feat.h5"
    with pytest.raises(KeyboardInterrupt):
        write_features(load_encoder(checkpoint, tiny_data, "cpu"), tiny_data, "train", out, batch_size=16,
                       progress=Interrupt(after=1))
    assert read_features_info(partial_path(out)).done == 16
    args = ("features", str(checkpoint), str(tiny_data), "--out", str(out), "--batch-size", "16", "--workers", "1",
            "--device", "cpu")
    line = _one_error_line(_cli(*args), after="resuming ")
    assert "file-size limit" in line and "continues from the rows already written" in line
    assert read_features_info(partial_path(out)).done == 16
    run = _cli(*args, limit=None)
    assert run.returncode == 0 and "resuming" in run.stderr, run.stderr[-3000:]
    assert read_features_info(out).complete


def test_neighbors_cache_beyond_ulimit_is_one_error_line(tiny_data, checkpoint, tiny_tree, tmp_path):
    """The features cache `neighbors` fills in DATA: the same one line, and nothing left behind."""
    data = Path(shutil.copytree(tiny_data, tmp_path / "data"))
    query = next((tiny_tree / "val").rglob("*.JPEG"))
    line = _one_error_line(_cli("neighbors", str(checkpoint), str(data), "--query", str(query), "--json",
                                "--device", "cpu", "--workers", "1"))
    assert "file-size limit" in line and "ulimit -f unlimited" in line
    assert not list(data.glob("features-*")) and not list(data.glob(".*"))


def test_a_file_system_too_small_for_the_file_is_refused_before_hdf5_writes(tmp_path, monkeypatch):
    """FAT32 (4 GiB at most) refuses to extend a file past its limit with EFBIG: the probe of
    check_file_size meets it, HDF5 never does, and no file is left."""
    real = os.ftruncate

    def fat32(fd, length):
        if length > 100_000:
            raise OSError(errno.EFBIG, os.strerror(errno.EFBIG))
        real(fd, length)
    monkeypatch.setattr(os, "ftruncate", fat32)
    monkeypatch.setattr(h5py, "File", lambda *a, **k: pytest.fail("HDF5 wrote the file"))
    path = tmp_path / "f.h5"
    with pytest.raises(DataError, match=r"f\.h5: the file would exceed the file-size limit .*file system"):
        create_features_file(path, paths=[f"p{i}" for i in range(20)], labels=np.zeros(20), classes=["a"],
                             class_names=["a"], split="train", key="k")
    assert not list(tmp_path.iterdir())


def test_check_file_size_compares_the_limit_without_writing(tmp_path):
    path = tmp_path / "f"
    check_file_size(path, 1 << 20)                         # sparse: extended, no blocks written
    assert path.stat().st_size == 1 << 20 and path.stat().st_blocks * 512 < 1 << 20
    soft, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
    resource.setrlimit(resource.RLIMIT_FSIZE, (1 << 16, hard))
    try:
        with pytest.raises(OSError) as caught:
            check_file_size(tmp_path / "g", 1 << 20)
        assert caught.value.errno == errno.EFBIG and caught.value.filename == str(tmp_path / "g")
        assert not (tmp_path / "g").exists()
        assert "`ulimit -f` is 0.1 MiB" in room_advice(path, errno.EFBIG)[0]
    finally:
        resource.setrlimit(resource.RLIMIT_FSIZE, (soft, hard))


def test_no_room_reads_oserrors_and_hdf5_text():
    hdf5 = RuntimeError("Can't decrement id ref count (file write failed: ..., errno = 27, error message = "
                        "'File too large', ...)")
    assert no_room(hdf5) == errno.EFBIG
    assert no_room(OSError(errno.ENOSPC, "No space left on device")) == errno.ENOSPC
    try:
        try:
            raise OSError(errno.EDQUOT, "Disk quota exceeded")
        except OSError:
            raise ValueError("while writing")
    except ValueError as exc:
        assert no_room(exc) == errno.EDQUOT                   # through the context
    try:
        try:
            raise OSError(errno.EFBIG, "File too large")
        except OSError:
            raise DataError("said in other words") from None
    except DataError as exc:
        assert no_room(exc) is None                           # `from None`: said already
    assert no_room(OSError(errno.EACCES, "Permission denied")) is None


LOWERED = """
import resource, sys
import alexnet_cli.features as F
from alexnet_cli.features import load_encoder, write_features
checkpoint, data, out = sys.argv[1:]
encoder = load_encoder(checkpoint, data, "cpu")
F.check_file_size = lambda *a, **k: None       # as if the limit were lowered after the checks (prlimit)
F.need_space = lambda *a, **k: None
resource.setrlimit(resource.RLIMIT_FSIZE, (200 << 10, resource.RLIM_INFINITY))
try:
    write_features(encoder, data, "train", out, batch_size=8, workers=1)
except Exception as exc:
    print(type(exc).__name__, exc)
"""


@pytest.mark.parametrize("started", [False, True])
def test_hdf5_meeting_the_limit_after_all_closes_its_file_and_a_rerun_finishes(tiny_data, checkpoint, tmp_path,
                                                                               started):
    """The checks' last line of defence (features._writing): HDF5 meeting EFBIG while it creates
    the file (`started` False) or writes its rows (True) crashed the interpreter at exit (exit
    139, pages of tracebacks); now the error is a DataError, the process ends normally, and a
    rerun without the limit resumes or starts afresh and finishes."""
    from alexnet_cli.features import load_encoder
    encoder = load_encoder(checkpoint, tiny_data, "cpu")
    out = tmp_path / "feat.h5"
    if started:                                  # the file made (its full size) before the limit
        with pytest.raises(KeyboardInterrupt):
            from test_features import Interrupt
            write_features(encoder, tiny_data, "train", out, batch_size=8, progress=Interrupt(after=1))
    run = subprocess.run([sys.executable, "-c", LOWERED, str(checkpoint), str(tiny_data), str(out)],
                         capture_output=True, text=True, timeout=600, env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert run.returncode == 0, run.stderr[-3000:]
    assert "Traceback" not in run.stderr and "Exception ignored" not in run.stderr, run.stderr[-3000:]
    assert run.stdout.startswith("DataError ") and "file-size limit" in run.stdout, run.stdout
    info = write_features(encoder, tiny_data, "train", out, batch_size=8)
    assert info.complete and info.count == 48
    with h5py.File(out) as f:
        rows = f["features"][:]
    assert np.isfinite(rows).all() and (rows != 0).any(axis=1).all()      # every row written


def test_prep_beyond_ulimit_is_one_error_line_and_a_rerun_without_it_finishes(tiny_tree, tmp_path):
    """A shard larger than `ulimit -f` (raw shards of 16 images: 3 MiB each): one line that says
    how to lift the limit and to run the same command again, which then finishes."""
    out = tmp_path / "data"
    args = ("prep", str(tiny_tree), str(out), "--shard-size", "16", "--workers", "1")
    line = _one_error_line(_cli(*args))
    assert "file-size limit" in line and "ulimit -f unlimited" in line and "run the same command again" in line, line
    run = _cli(*args, limit=None)
    assert run.returncode == 0, run.stderr[-3000:]
    assert (out / "manifest.json").is_file() and len(list(out.glob("train-*.h5"))) == 3
    assert not list(out.glob(".*"))
