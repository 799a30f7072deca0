"""A lock held with flock(2) by the command that writes a folder or a file, so that a second
command writing the same files fails at once, with one error naming the files, the process and
its command, instead of interleaving with the first (`train`'s run folder, `prep`'s data
folder, the features and codes files beside the shards)."""

from __future__ import annotations

import errno
import os
import time
from pathlib import Path

from alexnet_cli.errors import AlexnetError

try:
    import fcntl
except ImportError:            # not POSIX: no lock (Linux is the supported platform)
    fcntl = None


LOCK_TRIES = 10        # CommandLock.acquire: about 0.2 s for a `report` that peeks at the lock


class CommandLock:
    """An exclusive lock, held with flock(2) by the command that writes a folder or a file, so
    that a second command writing the same files fails at once (one error naming the files, the
    process and its command) instead of interleaving with the first: RUN/.lock while a run
    trains (`command` "train"), OUT/.lock while `prep` writes a data folder, and `.NAME.lock`
    beside a file NAME that one command makes over a long time (`beside`: a features file, the
    codes). The file holds the holder's process id and command. The kernel drops the lock when
    its process ends, however it ends (SIGKILL, a lost node), so a killed run never blocks its
    --resume; the (hidden) file stays, for `report` (held()), unless the lock is `transient`:
    then it is removed on release, and a folder this process cannot create it in is not locked
    (nothing can be written there by it: it only reads what is there). Under torchrun rank 0
    alone takes a run's lock, as rank 0 alone writes."""

    NAME = ".lock"
    # What the error asks of the second command besides waiting, and the settings it mentions
    ADVICE: dict[str, tuple[str, tuple[str, ...]]] = {
        "train": (", or choose another `out`", ("out",)),
        "prep": (", or choose another OUT", ()),
    }
    AGAIN = (", then run the same command again", ())     # the others: what that one made is reused
    _READ_ONLY = (errno.EACCES, errno.EPERM, errno.EROFS)

    def __init__(self, run_dir: str | Path, command: str | None = "train", *, name: str = NAME,
                 target: str | Path | None = None, transient: bool = False):
        """`command`: the `alexnet` command that takes the lock (None: a library call for no
        command in particular); `name`: the lock file's in `run_dir`; `target`: what the error
        says is in use (`run_dir` unless given)."""
        self.path = Path(run_dir) / name
        self.command, self.transient = command, transient
        self.target = Path(run_dir) if target is None else Path(target)
        self._fd: int | None = None

    @classmethod
    def beside(cls, path: str | Path, command: str | None) -> "CommandLock":
        """The transient lock of the file `path`: `.NAME.lock` in its folder."""
        path = Path(path)
        return cls(path.parent, command, name=f".{path.name}.lock", target=path, transient=True)

    def acquire(self) -> None:
        fd, writable = None, False
        try:
            for _ in range(LOCK_TRIES):
                self.path.parent.mkdir(parents=True, exist_ok=True)   # again: a holder may remove it as it lets go
                try:
                    fd, writable = self._open()
                except FileNotFoundError:
                    continue
                if fcntl is None:
                    os.close(fd)
                    return
                exc = self._lock_exclusive(fd)
                if exc is not None:
                    holder = os.read(fd, 64).decode("ascii", "replace").split()
                    os.close(fd)
                    if exc.errno not in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                        return                  # a file system without locks (ENOLCK, EOPNOTSUPP): go on unlocked
                    raise self._in_use(holder) from None
                if self._still_named(fd):
                    break
                os.close(fd)      # its last holder removed it as it let go (transient): lock the one there now
                fd = None
        except OSError as exc:
            if self.transient and exc.errno in self._READ_ONLY:
                return
            raise
        if fd is None:
            raise AlexnetError(f"{self.target}: could not lock {self.path}: it was removed {LOCK_TRIES} times "
                               "while this command tried to lock it")
        if writable:
            os.ftruncate(fd, 0)
            os.write(fd, f"{os.getpid()}{f' {self.command}' if self.command else ''}\n".encode("ascii"))
        self._fd = fd

    def _open(self) -> tuple[int, bool]:
        """The lock file's descriptor, and whether it is open for writing: an existing lock file
        another user made (0644 in a shared folder) opens read-only, which flock locks as well;
        this process's id is then not written in it."""
        try:
            return os.open(self.path, os.O_RDWR | os.O_CREAT, 0o666), True
        except PermissionError:
            if not self.path.exists():
                raise
            return os.open(self.path, os.O_RDONLY), False

    def _in_use(self, holder: list[str]) -> AlexnetError:
        """The error for a lock held by another process; `holder`: the words of its lock file
        (process id, command). The id alone: a library call's transient lock, or a run's lock
        taken by a version before commands were recorded (only `train` took one)."""
        pid = f" (process {holder[0]})" if holder and holder[0].isdigit() else ""
        if len(holder) > 1 and holder[1].isalpha():
            command = holder[1]
        else:
            command = None if self.transient else "train"
        who = f"`alexnet {command}`" if command else "alexnet process"
        advice, mentions = self.ADVICE.get(self.command, self.AGAIN)
        return AlexnetError(f"{self.target} is in use by another {who}{pid}: wait for it to end{advice}",
                            mentions=mentions)

    def _still_named(self, fd: int) -> bool:
        """Whether the locked file is still the one at `path` (a transient lock's holder removes
        it before letting go: the lock taken on it then is on no file anyone else sees)."""
        try:
            return os.path.samestat(os.fstat(fd), os.stat(self.path))
        except FileNotFoundError:
            return False

    @staticmethod
    def _lock_exclusive(fd: int) -> OSError | None:
        """flock(LOCK_EX) without blocking; None once held. Tried LOCK_TRIES times 20 ms apart:
        `report` (held()) may hold a shared lock for an instant."""
        for attempt in range(LOCK_TRIES):
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                return None
            except OSError as exc:
                if exc.errno not in (errno.EWOULDBLOCK, errno.EAGAIN) or attempt == LOCK_TRIES - 1:
                    return exc
                time.sleep(0.02)
        return None

    def held(self) -> bool | None:
        """Whether a live process (a `train`, for a run's lock) holds the lock now: True or False,
        or None where the lock cannot tell (no lock file, as in runs of older versions; no
        permission to open it; a file system without locks). Read-only and never blocking: a
        shared lock is tried and dropped at once, so a training that holds the lock is not
        disturbed."""
        if fcntl is None:
            return None
        try:
            fd = os.open(self.path, os.O_RDONLY | os.O_NONBLOCK)
        except OSError:
            return None
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except OSError as exc:
            return True if exc.errno in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES) else None
        else:
            fcntl.flock(fd, fcntl.LOCK_UN)
            return False
        finally:
            os.close(fd)

    def __enter__(self) -> "CommandLock":
        self.acquire()
        return self

    def __exit__(self, *exc_info) -> None:
        self.release()

    def release(self, *, remove_folders_up_to: Path | None = None) -> None:
        """Drop the lock, a transient one's file first. With `remove_folders_up_to` (what
        `missing_ancestor` named before the lock made the folder), also the lock file and the
        folder when nothing else is in it, and the folders above it up to that one that are
        then empty: a run that failed before writing anything leaves nothing, not even the
        parents of `--out a/b/run` that it made."""
        if self._fd is None:
            return
        folder = self.path.parent
        alone = remove_folders_up_to is not None and [p.name for p in folder.iterdir()] == [self.path.name]
        if alone or self.transient:
            self.path.unlink(missing_ok=True)          # while held: one waiting for it then locks a new file
        if alone:
            _remove_empty_folders(folder, remove_folders_up_to)
        os.close(self._fd)
        self._fd = None


def missing_ancestor(path: str | Path) -> Path | None:
    """The outermost of `path` and its parents that does not exist (the first folder a
    `mkdir(parents=True)` of it would make), or None when `path` exists."""
    path = Path(path)
    if path.exists():
        return None
    top = path
    for parent in path.parents:
        if parent.exists():
            break
        top = parent
    return top


def _remove_empty_folders(folder: Path, top: Path) -> None:
    """rmdir `folder`, then its parents up to and including `top`, each while empty (rmdir
    fails on a folder another process wrote in meanwhile, which then stays with its parents)."""
    folder, top = Path(os.path.abspath(folder)), Path(os.path.abspath(top))
    while True:
        try:
            folder.rmdir()
        except OSError:
            return
        if folder == top or top not in folder.parents:
            return
        folder = folder.parent
