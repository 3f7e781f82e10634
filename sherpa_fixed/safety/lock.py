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
        mode = fcntl.LOCK_SH if shared else fcntl.LOCK_EX
        deadline = time.monotonic() + wait
        told = False
        while True:
            try:
                fcntl.flock(fd, mode | fcntl.LOCK_NB)
                break
            except OSError as exc:
                if exc.errno not in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                    raise BadInputError(f"cannot lock folder ({exc.strerror})", path=folder) from exc
            if time.monotonic() >= deadline:
                raise BadInputError(f"another sherpa-fixed run is still writing here after {wait:g} s", path=folder,
                                    fix="wait for it to finish, then run again; nothing was changed")
            if not told and notice is not None:
                notice(f"{folder}: another sherpa-fixed run is using this "
                       f"{'folder' if stat.S_ISDIR(mode_bits) else 'file'}; waiting for it to finish")
                told = True
            time.sleep(POLL)
        yield
    finally:
        os.close(fd)  # closing the descriptor releases the lock


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
