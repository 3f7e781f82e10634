"""One writer per folder (or file): flock(2), waited for, never left stale.

Two `prepare --in-place` runs on one folder, each planning from what it saw,
once deleted every weight file between them. A run therefore takes an
advisory lock on each folder it touches before it plans anything, and
holds it until its last rename: writers exclusively, a folder that is only
read (the source of `--output`) shared, so several runs may read one source
while nobody rewrites it.

The lock is `flock(2)` on the folder's own directory descriptor: nothing is
created inside the folder (a read-only or shared folder can still be
locked), the kernel drops it when the process dies (kill -9 leaves no stale
lock), and it works across processes. A second run waits, saying so once on
stderr, for at most `wait` seconds, then refuses with exit 2. A regular file
(a `.nemo` being exported, a corpus's output manifest) is locked the same way
through its own descriptor; anything else (a FIFO would block the open) is
refused.

`FileLock` holds the same lock on one regular file across a whole run, re-locking
what the path names if the file was atomically replaced while it waited.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
import stat
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

from ..errors import BadInputError

DEFAULT_WAIT = 600.0  # seconds a second run waits for the first before refusing
POLL = 0.1

Notice = Callable[[str], None]


def _stderr(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


@contextlib.contextmanager
def folder_lock(folder: str | os.PathLike, *, shared: bool = False, wait: float = DEFAULT_WAIT,
                notice: Notice | None = _stderr) -> Iterator[None]:
    """Hold an exclusive (or shared) lock on `folder` (or a regular file) for the body; wait up to `wait` s."""
    path = Path(os.path.realpath(folder))
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0))
    except OSError as exc:
        raise BadInputError(f"cannot open it to lock it ({exc.strerror})", path=folder) from exc
    try:
        mode_bits = os.fstat(fd).st_mode
        if not (stat.S_ISDIR(mode_bits) or stat.S_ISREG(mode_bits)):
            raise BadInputError("cannot be locked: it is neither a folder nor a regular file", path=folder)
        kind = "folder" if stat.S_ISDIR(mode_bits) else "file"
        _flock(fd, fcntl.LOCK_SH if shared else fcntl.LOCK_EX, wait, folder, kind,
               f"{folder}: another sherpa-fixed run is using this {kind}; waiting for it to finish", notice)
        yield
    finally:
        os.close(fd)  # closing the descriptor releases the lock


def _flock(fd: int, mode: int, wait: float, path, what: str, waiting: str, notice: Notice | None) -> None:
    """flock(fd, mode), polling for up to `wait` seconds; say `waiting` once; BadInputError when it times out."""
    deadline = time.monotonic() + wait
    told = False
    while True:
        try:
            fcntl.flock(fd, mode | fcntl.LOCK_NB)
            return
        except OSError as exc:
            if exc.errno not in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                raise BadInputError(f"cannot lock {what} ({exc.strerror})", path=path) from exc
        if time.monotonic() >= deadline:
            raise BadInputError(f"another sherpa-fixed run is still writing here after {wait:g} s", path=path,
                                fix="wait for it to finish, then run again; nothing was changed")
        if not told and notice is not None:
            notice(waiting)
            told = True
        time.sleep(POLL)


class FileLock:
    """An exclusive flock(2) on an existing regular file, held until `release()` (or the end of a `with`).

    The lock belongs to the file the path names: if another process atomically renames a new file over
    the path while we wait, the next holder locks that one instead. A holder that itself replaces the
    file locks the new file (a FileLock on its temp name, before the rename) and then releases this one.
    The file is opened without blocking, so a FIFO at the path is refused, not waited on forever.
    """

    def __init__(self, path: str | os.PathLike, *, wait: float = DEFAULT_WAIT, notice: Notice | None = _stderr):
        self.path = Path(path)
        while True:
            try:
                fd = os.open(self.path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
            except OSError as exc:
                raise BadInputError(f"cannot open file to lock it ({exc.strerror})", path=path) from exc
            try:
                st = os.fstat(fd)
                if not stat.S_ISREG(st.st_mode):
                    raise BadInputError("is not a regular file", path=path)
                _flock(fd, fcntl.LOCK_EX, wait, path, "file",
                       f"{path}: another sherpa-fixed run is writing this file; waiting for it to finish", notice)
                now = _stat_or_none(self.path)
            except BaseException:
                os.close(fd)
                raise
            if now is not None and (now.st_dev, now.st_ino) == (st.st_dev, st.st_ino):
                self.fd: int | None = fd
                return
            os.close(fd)  # replaced while we waited: lock what the path names now

    def release(self) -> None:
        if self.fd is not None:
            os.close(self.fd)  # closing the descriptor releases the lock
            self.fd = None

    def __enter__(self) -> FileLock:
        return self

    def __exit__(self, *exc) -> None:
        self.release()


def _stat_or_none(path: Path) -> os.stat_result | None:
    try:
        return os.stat(path)
    except FileNotFoundError:
        return None


@contextlib.contextmanager
def folder_locks(folders: list[tuple[str | os.PathLike, bool]], *, wait: float = DEFAULT_WAIT,
                 notice: Notice | None = _stderr) -> Iterator[None]:
    """Lock several folders, given as (folder, shared), always in one global order so two runs never deadlock.

    A folder named twice is locked once, exclusively if either asks for it.
    """
    wanted: dict[str, bool] = {}
    for folder, shared in folders:
        key = os.path.realpath(folder)
        wanted[key] = wanted.get(key, True) and shared
    with contextlib.ExitStack() as stack:
        for key in sorted(wanted):
            stack.enter_context(folder_lock(key, shared=wanted[key], wait=wait, notice=notice))
        yield
