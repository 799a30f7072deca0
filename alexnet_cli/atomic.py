"""Files that are never seen half-written: the data, checkpoints and every other file a later
command reads are written through here.

Two kinds of temporaries, both beside their target (same folder, so the final rename is
atomic on every POSIX file system):

- `.NAME.PID.tmp` (`temporary_name`): a file written in one go (`write_atomic`, `replacing`:
  the manifest, shards, the mean image, pca.json, run files, checkpoints, codes; `write_output`:
  the pictures and CSV files that commands write for their user). It is
  created by `claim`, which holds an exclusive flock on it while it is written; the lock
  dies with its process, so `abandoned` tells the temporaries of killed runs from those of
  live ones, and `remove_abandoned` deletes only the former.
- `NAME.partial` (`partial_path`): a file filled over many runs (the features), resumed
  where a killed run stopped and renamed onto NAME by `publish` once complete; also the
  demo's generated image tree, a folder made again from the start when a run was killed.

A new file's mode is what the umask allows (0o666 & ~umask), as for any file a program
creates, also when a temporary of the same name was left with another mode.

A write refused for want of room (`no_room`: a full disk, a quota, or a file larger than the
process's limit, `ulimit -f`, or than the file system allows, FAT32's 4 GiB) is one rule for
every command: `room_advice` says why and what to do, and `check_file_size` refuses such a
file before anything is written (HDF5, meeting EFBIG half-way, leaves broken handles behind
that crash the interpreter at exit).
"""

from __future__ import annotations

import errno
import fcntl
import functools
import glob
import os
import re
import resource
import shutil
import stat
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

from alexnet_cli.errors import AlexnetError

# The names temporary_name gives (.NAME.PID.tmp), and those of checkpoints saved by versions
# before it (tempfile.mkstemp: .NAME.<8 random characters>.tmp), which killed runs left too.
_TEMPORARY = re.compile(r"\..+\.(\d+|[a-z0-9_]{8})\.tmp")


def temporary_name(path: Path) -> Path:
    """Where `path` is written before it is complete: `.<name>.<pid>.tmp` beside it."""
    return path.with_name(f".{path.name}.{os.getpid()}.tmp")


@functools.cache
def _umask() -> int:
    """The process's umask, read once (setting it to read it back is racy with threads)."""
    try:
        with open("/proc/self/status", encoding="ascii") as f:
            for line in f:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def claim(tmp: Path) -> int:
    """Create `tmp` (emptied if it exists), with the mode the umask allows, and hold an
    exclusive lock on it while it is being written; the lock dies with the process, so
    `abandoned` can tell the files of killed runs. Returns the open file descriptor."""
    fd = os.open(tmp, os.O_RDWR | os.O_CREAT, 0o666)      # mode as umask allows
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        os.ftruncate(fd, 0)                    # only once it is ours: a live writer's file stays whole
        try:                                   # a leftover of the same name keeps its own mode otherwise
            os.fchmod(fd, 0o666 & ~_umask())
        except (OSError, AttributeError):      # a file system without modes (vfat, some mounts)
            pass
    except BaseException:
        os.close(fd)
        raise
    return fd


def abandoned(tmp: Path) -> bool:
    """True if no live process holds `tmp` (see `claim`)."""
    try:
        fd = os.open(tmp, os.O_RDONLY | os.O_NONBLOCK)   # never blocks, even on a FIFO
    except OSError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        return True
    except OSError:
        return False
    finally:
        os.close(fd)


def remove_abandoned(folder: Path, target: str | None = None) -> None:
    """Delete the temporaries (`temporary_name`) in `folder` that killed runs left, of any
    file or of the file named `target` only; a live writer's are kept. A missing folder has
    none."""
    pattern = ".*.tmp" if target is None else f".{glob.escape(target)}.*.tmp"
    for tmp in folder.glob(pattern):
        if _TEMPORARY.fullmatch(tmp.name) and abandoned(tmp):
            tmp.unlink(missing_ok=True)


@contextmanager
def replacing(path: Path) -> Iterator[int]:
    """Write `path` through a claimed temporary beside it: the body writes to the yielded file
    descriptor; on success it is fsynced and renamed onto `path` (os.replace), on any error
    removed. Never half a file at `path`. Once it is written, temporaries of `path` that killed
    writers left beside it are removed (a rerun after a kill leaves nothing behind)."""
    tmp = temporary_name(path)
    fd = claim(tmp)
    try:
        yield fd
        os.fsync(fd)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    finally:
        os.close(fd)
    try:
        remove_abandoned(path.parent, path.name)
    except OSError:                      # the write succeeded; leftovers are only untidy
        pass


def write_atomic(path: Path, data: bytes | memoryview) -> None:
    """`data` into `path`, all or nothing (`replacing`). A failed write (a full disk) raises an
    OSError that names `path`."""
    try:
        with replacing(path) as fd:
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view):]
    except OSError as exc:
        if exc.filename is None:        # os.write and os.fsync name no file: say which
            raise OSError(exc.errno, exc.strerror, str(path)) from None
        raise


def write_output(path: Path, data: bytes | memoryview) -> None:
    """A command's output (a picture, a CSV file) into `path` as `write_atomic` writes it, where
    that can be: through a symlink the target is replaced (the link is kept), and what is not a
    regular file (/dev/stdout, a FIFO: nothing to keep, no folder to put a temporary in) is
    written straight into."""
    try:
        regular = stat.S_ISREG(os.stat(path).st_mode)
    except OSError:                         # nothing there yet (or a broken link: refused before)
        regular = True
    if regular:
        write_atomic(Path(os.path.realpath(path)), data)
        return
    try:
        with open(path, "wb") as f:
            f.write(data)
    except OSError as exc:
        if exc.filename is None:
            raise OSError(exc.errno, exc.strerror, str(path)) from None
        raise


def save_output(path: Path, data: bytes | memoryview, what: str) -> Path:
    """A command's output for its user (`what` it is: "it", "the picture") into `path` by
    `write_output`, its folder made if need be: a full disk leaves an earlier file of that name
    as it was, and no half file; a path that cannot be written is one AlexnetError line, a want
    of room said with what to do (cannot_write)."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        write_output(path, data)
    except OSError as exc:
        raise AlexnetError(f"{path}: cannot write {what}: {cannot_write(path, exc)}") from None
    return path


def partial_path(path: str | Path) -> Path:
    """Where a file filled over several runs (or a folder, the demo's images) is kept until
    complete: `NAME.partial` beside it."""
    path = Path(path)
    return path.with_name(path.name + ".partial")


def publish(partial: Path, path: Path) -> None:
    """A complete `partial_path` file, or folder, becomes `path` (os.replace: atomic; a folder
    replaces only a missing or empty one)."""
    os.replace(partial, path)


# ---------------------------------------------------------------------------- writes refused for want of room

NO_ROOM = (errno.ENOSPC, errno.EDQUOT, errno.EFBIG)

# HDF5 names the errno in its error text only ("..., errno = 27, error message = 'File too large'")
_HDF5_ERRNO = {errno.ENOSPC: "No space left on device", errno.EDQUOT: "Disk quota exceeded",
               errno.EFBIG: "File too large"}


def no_room(exc: BaseException | None) -> int | None:
    """ENOSPC, EDQUOT or EFBIG when one is behind `exc` (an OSError, or HDF5's text of one inside
    another exception; its causes and contexts are looked through, but not the context of an
    error raised `from None`, which has said it in its own words), else None."""
    seen = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        if isinstance(exc, OSError) and exc.errno in NO_ROOM:
            return exc.errno
        text = str(exc)
        for code, words in _HDF5_ERRNO.items():
            if f"errno = {code}," in text or words.lower() in text.lower():
                return code
        exc = exc.__cause__ or (None if exc.__suppress_context__ else exc.__context__)   # `from None`: said already
    return None


def file_size_limit() -> int | None:
    """The largest file this process may write (its soft RLIMIT_FSIZE, `ulimit -f`), in bytes;
    None when unlimited."""
    soft, _ = resource.getrlimit(resource.RLIMIT_FSIZE)
    return None if soft == resource.RLIM_INFINITY else soft


def check_file_size(path: Path, nbytes: int, *, probe: bool = True) -> None:
    """OSError(EFBIG) naming `path`, before anything is written, if a file of `nbytes` cannot be
    written there: larger than `file_size_limit`, or (`probe`) than the file system allows,
    which is found by extending `path` to `nbytes` (sparse, no blocks written; the caller
    writes the file afresh, or it is removed on failure). SIGXFSZ is never raised: the limit
    is compared first."""
    limit = file_size_limit()
    if limit is not None and nbytes > limit:
        raise OSError(errno.EFBIG, os.strerror(errno.EFBIG), str(path))
    if not probe:
        return
    created = not path.exists()
    try:
        with open(path, "ab") as f:
            if os.fstat(f.fileno()).st_size < nbytes:
                os.ftruncate(f.fileno(), nbytes)
    except OSError as exc:
        if created:
            path.unlink(missing_ok=True)
        if exc.errno in NO_ROOM:
            raise OSError(exc.errno, exc.strerror, str(path)) from None
        raise


def room_advice(path: Path, code: int) -> tuple[str, str]:
    """What refused a write to `path` (`no_room`'s errno) and what to do, for an error line:
    ("the disk is full (12.0 MiB free)", "free some space"), or for EFBIG the file-size limit
    and how to lift it."""
    if code == errno.EFBIG:
        limit = file_size_limit()
        ulimit = f"`ulimit -f` is {limit / 2**20:,.1f} MiB" if limit is not None else "no `ulimit -f`"
        return (f"the file would exceed the file-size limit of this process or file system ({ulimit})",
                "write it to a file system that allows large files (not FAT32: 4 GiB at most), or lift the "
                "process's limit (`ulimit -f unlimited`)")
    if code == errno.EDQUOT:
        return "the disk quota is exceeded", "free some space"
    try:
        mode = os.stat(path).st_mode
    except OSError:
        mode = 0
    if stat.S_ISCHR(mode) or stat.S_ISBLK(mode) or stat.S_ISFIFO(mode):   # /dev/full: no disk to free space on
        return f"the device is full ({os.strerror(code)})", "choose another file"
    try:
        free = f"{shutil.disk_usage(path.parent).free / 2**20:,.1f} MiB free"
    except OSError:
        free = "unknown space free"
    return f"the disk is full ({free})", "free some space"


def cannot_write(path: Path, exc: OSError) -> str:
    """Why `exc` stopped a write to `path`, for the end of an error line: a want of room with
    what to do (room_advice), else the system's words ("Permission denied")."""
    room = no_room(exc)
    if room is None:
        return exc.strerror or str(exc)
    reason, remedy = room_advice(path, room)
    return f"{reason}: {remedy}"
