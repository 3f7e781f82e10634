"""Read an input file without trusting it: regular files only, never blocking, never more than it may need.

Inputs arrive from downloads and archives: `tokens.txt`, WAV files, recipes,
manifests, journals. Named `x.wav`, a FIFO blocks a plain `open()` forever;
`/dev/zero` never ends; a 126-byte `tokens.txt` can describe six gigabytes of
ids. So every input is opened here: with O_NONBLOCK (a FIFO opens at once and
is then refused by its type), checked to be a regular file by `fstat` on the
descriptor itself (no race with a rename between check and open), and read
only up to a bound the caller derives from what the file can legitimately
hold. Exceeding the bound is refused before the bytes are read.
"""

from __future__ import annotations

import fcntl
import os
import stat
from typing import BinaryIO

from ..errors import BadInputError

KIB, MIB = 1 << 10, 1 << 20


def kind_of(mode: int) -> str:
    """What a non-regular file is, in words."""
    if stat.S_ISDIR(mode):
        return "a folder"
    if stat.S_ISFIFO(mode):
        return "a FIFO"
    if stat.S_ISSOCK(mode):
        return "a socket"
    if stat.S_ISCHR(mode) or stat.S_ISBLK(mode):
        return "a device"
    return "not a regular file"


def open_regular(path: str | os.PathLike, *, what: str = "file", fix: str | None = None) -> BinaryIO:
    """Open `path` for binary reading if it is a regular file; BadInputError (naming it) otherwise.

    Symlinks are followed (callers that must stay inside a folder check that first: confine.py).
    """
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0))
    except FileNotFoundError as exc:
        raise BadInputError(f"{what} not found", path=path, fix=fix) from exc
    except OSError as exc:
        raise BadInputError(f"cannot open {what} ({exc.strerror})", path=path, fix=fix) from exc
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise BadInputError(f"{what} is {kind_of(st.st_mode)}, not a regular file", path=path,
                                fix=fix or "give the path of a regular file")
        flags = fcntl.fcntl(fd, fcntl.F_GETFL)
        fcntl.fcntl(fd, fcntl.F_SETFL, flags & ~os.O_NONBLOCK)
        return os.fdopen(fd, "rb")
    except BaseException:
        os.close(fd)
        raise


def size_of(f: BinaryIO) -> int:
    return os.fstat(f.fileno()).st_size


def refuse_over(size: int, limit: int, path: str | os.PathLike, what: str, why: str) -> None:
    if size > limit:
        raise BadInputError(f"{what} is {size:,} bytes, more than the {limit:,} {why}", path=path,
                            fix="this is not a genuine file of its kind (or it is damaged); nothing was read")


def read_bounded(path: str | os.PathLike, limit: int, *, what: str = "file", why: str = "such a file can need",
                 fix: str | None = None) -> bytes:
    """The whole of a regular file of at most `limit` bytes; larger ones are refused unread."""
    with open_regular(path, what=what, fix=fix) as f:
        refuse_over(size_of(f), limit, path, what, why)
        try:
            data = f.read(limit + 1)
        except OSError as exc:
            raise BadInputError(f"cannot read {what} ({exc.strerror})", path=path, fix=fix) from exc
    refuse_over(len(data), limit, path, what, why)  # grew while we read it
    return data


def read_text_bounded(path: str | os.PathLike, limit: int, *, what: str = "file", why: str = "such a file can need",
                      fix: str | None = None) -> str:
    """read_bounded, decoded as UTF-8 (a file that is not UTF-8 is refused with its name)."""
    data = read_bounded(path, limit, what=what, why=why, fix=fix)
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise BadInputError(f"{what} is not UTF-8 text (byte {exc.start})", path=path, fix=fix) from exc


def is_regular(path: str | os.PathLike) -> bool:
    """True for a regular file (symlinks followed); never opens it."""
    try:
        return stat.S_ISREG(os.stat(path).st_mode)
    except OSError:
        return False


__all__ = ["KIB", "MIB", "is_regular", "kind_of", "open_regular", "read_bounded", "read_text_bounded", "size_of"]
