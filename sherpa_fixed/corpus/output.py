"""The output manifest: one writer, appended line by line, resumable after kill -9 with each input exactly once.

How exactly-once holds:
- One writer. The run holds an exclusive flock on OUT itself (the project's lock, safety module) from
  before it reads OUT until it has written its last line; a second run on the same OUT refuses (or
  waits, `wait` seconds). Workers never touch OUT: results come back to the one process that writes.
- One line, one write. Each line (ending in a newline) is appended with one write(2) on an O_APPEND
  descriptor, and fsynced in small batches (FSYNC_LINES lines or FSYNC_SECONDS). A line is written
  only once its file is completely decoded.
- Every line carries its input's key (inputs.py) under `sherpa_fixed.key`. On open, every complete
  line is parsed and its key recorded; those inputs are skipped, and a result for a key already in
  OUT (a Ray task retried after its first result arrived) is dropped, never written twice.
- A torn last line (the process died inside a write, or the machine lost unsynced data) is whatever
  follows the last newline: it is never counted, and is truncated away under the lock before anything
  is appended; its input is decoded again. Only bytes that look like the start of one of our lines (or
  zeros, what a filesystem shows for unsynced blocks after a crash) are ever truncated.
- OUT is checked before anything is changed: a line that is not one of ours, a key seen twice, or keys
  of inputs that are not in this input (OUT belongs to another manifest, or the manifest was edited
  under it) refuse the run with exit 2, OUT untouched.
- retry_failed rewrites OUT without its error lines through a temp file, fsync and an atomic rename,
  locking the new file before the rename so the lock never lapses.
"""

from __future__ import annotations

import contextlib
import json
import os
import time
from pathlib import Path

from ..errors import BadInputError
from ..safety.atomic import disk_error, fsync_dir, sweep_stale, temp_path
from ..safety.lock import FileLock
from .decode import BOOKKEEPING, ERROR
from .summary import Tally

FSYNC_LINES = 16
FSYNC_SECONDS = 1.0
MAX_OUT_LINE = 64 << 20  # bytes; a 24-hour file with timestamps writes about 10 MB
READ_CHUNK = 1 << 20


def line_key(line: bytes, path: Path, number: int) -> tuple[str, dict]:
    """The key of one complete output line, and the line; BadInputError when it is not one of ours."""
    try:
        obj = json.loads(line)
        key = obj[BOOKKEEPING]["key"]
        if not isinstance(key, str):
            raise TypeError
    except (ValueError, KeyError, TypeError, RecursionError) as exc:
        raise BadInputError(f"line {number} is not a line sherpa-fixed corpus wrote (no {BOOKKEEPING}.key)",
                            path=path, fix="give --output a new file, or the output of an earlier run over this "
                                           "same input; nothing was changed") from exc
    return key, obj


def _torn(tail: bytes) -> bool:
    """Bytes after the last newline that an interrupted append of ours could have left."""
    return tail.startswith(b"{") or not tail.strip(b"\0")


class Output:
    """OUT, locked and checked, open for appending; use as a context manager."""

    def __init__(self, path: str | os.PathLike, keys: set[str], *, wait: float = 0.0, notice=None):
        self.path = Path(path)
        self.done: set[str] = set()
        self.tally = Tally()
        self.torn_bytes = 0
        self.duplicates = 0
        self._pending = 0
        self._last_sync = time.monotonic()
        self._fd: int | None = None
        _create(self.path)
        self._lock = FileLock(self.path, wait=wait, notice=notice)
        try:
            self._open()
            end = self._scan(keys)
            size = os.fstat(self._fd).st_size
            if end < size:
                self.torn_bytes = size - end
                os.ftruncate(self._fd, end)
                os.fsync(self._fd)
        except BaseException:
            self.close()
            raise

    # ----------------------------------------------------------------------------- reading what is there

    def _open(self) -> None:
        try:
            fd = os.open(self.path, os.O_RDWR | os.O_APPEND | os.O_CLOEXEC)
        except OSError as exc:
            raise disk_error(exc, self.path) from exc
        if os.fstat(fd).st_ino != os.fstat(self._lock.fd).st_ino:
            os.close(fd)
            raise BadInputError("was replaced while being opened", path=self.path, fix="run again")
        self._fd = fd

    def _lines(self):
        """(offset after the line, line bytes without newline, number) of every complete line; the tail is kept
        for _scan in self._tail. Reads in chunks; a line longer than MAX_OUT_LINE is refused."""
        buf = b""
        offset = 0  # file offset of buf[0]
        number = 0
        self._tail = b""
        while True:
            chunk = os.pread(self._fd, READ_CHUNK, offset + len(buf))
            if not chunk:
                break
            buf += chunk
            start = 0
            while (nl := buf.find(b"\n", start)) >= 0:
                number += 1
                yield offset + nl + 1, buf[start:nl], number
                start = nl + 1
            offset += start
            buf = buf[start:]
            if len(buf) > MAX_OUT_LINE:
                raise BadInputError(f"line {number + 1} is longer than {MAX_OUT_LINE >> 20} MiB: not an output of "
                                    "sherpa-fixed corpus", path=self.path, fix="give --output a new file")
        self._tail = buf

    def _scan(self, keys: set[str]) -> int:
        end = 0
        stale: list[str] = []
        for end, raw, number in self._lines():  # noqa: B007 (end is the offset after the last complete line)
            if not raw.strip():
                raise BadInputError(f"line {number} is empty: not an output of sherpa-fixed corpus", path=self.path,
                                    fix="give --output a new file")
            key, obj = line_key(raw, self.path, number)
            if key in self.done:
                raise BadInputError(f"line {number} repeats the input {key!r}", path=self.path,
                                    fix="this file was edited or concatenated; give --output a new file")
            if key not in keys:
                stale.append(key)
            self.done.add(key)
            self.tally.add(obj)
        if self._tail and not _torn(self._tail):
            raise BadInputError("ends with bytes that are not an output line", path=self.path,
                                fix="give --output a new file; nothing was changed")
        if stale:
            raise BadInputError(f"{len(stale)} lines are for inputs that are not in this input (e.g. {stale[0]!r}): "
                                "it was written for another manifest, or the manifest changed since",
                                path=self.path, fix="give --output a new file; nothing was changed")
        return end

    # ----------------------------------------------------------------------------- changing it

    def drop_failed(self) -> int:
        """Rewrite OUT without its error lines (atomically), so their inputs are decoded again; how many."""
        if not self.tally.failed:
            return 0
        tmp = temp_path(self.path)
        dropped = 0
        keep_done: set[str] = set()
        try:
            with open(tmp, "wb") as f:
                for _end, raw, number in self._lines():
                    key, obj = line_key(raw, self.path, number)
                    if ERROR in obj:
                        dropped += 1
                        continue
                    keep_done.add(key)
                    f.write(raw + b"\n")
                f.flush()
                os.fsync(f.fileno())
            with contextlib.suppress(OSError):
                os.chmod(tmp, os.stat(self.path).st_mode & 0o7777)
            new_lock = FileLock(tmp, wait=0)  # nobody else knows this file: immediate
            os.replace(tmp, self.path)
        except OSError as exc:
            tmp.unlink(missing_ok=True)
            raise disk_error(exc, self.path) from exc
        fsync_dir(self.path.parent)
        os.close(self._fd)
        self._lock.release()
        self._lock = new_lock
        self._lock.path = self.path
        self._open()
        self.done = keep_done
        self.tally.remove_failures()
        return dropped

    def append(self, key: str, line: str) -> bool:
        """Append one line for `key` in one write; False (nothing written) when key is already in OUT."""
        if key in self.done:
            self.duplicates += 1
            return False
        data = (line + "\n").encode("utf-8")
        size = os.fstat(self._fd).st_size
        try:
            view = memoryview(data)
            while view:
                n = os.write(self._fd, view)
                view = view[n:]
        except OSError as exc:
            with contextlib.suppress(OSError):
                os.ftruncate(self._fd, size)  # never leave half a line (disk full): take it back
            raise disk_error(exc, self.path) from exc
        self.done.add(key)
        self._pending += 1
        if self._pending >= FSYNC_LINES or time.monotonic() - self._last_sync >= FSYNC_SECONDS:
            self.sync()
        return True

    def sync(self) -> None:
        if self._fd is not None and self._pending:
            os.fsync(self._fd)
        self._pending = 0
        self._last_sync = time.monotonic()

    def close(self) -> None:
        if self._fd is not None:
            with contextlib.suppress(OSError):
                self.sync()
            os.close(self._fd)
            self._fd = None
        if getattr(self, "_lock", None) is not None:
            self._lock.release()

    def __enter__(self) -> Output:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def _create(path: Path) -> None:
    """Make OUT (empty) if it does not exist, durably; refuse what is not a regular file.

    Also removes temp files a killed retry_failed rewrite of this OUT left beside it (their pid is gone)."""
    if "\0" in str(path):
        raise BadInputError("is not a valid file name (NUL byte)", path=path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_NONBLOCK | os.O_CLOEXEC, 0o644)
    except IsADirectoryError as exc:
        raise BadInputError("is a folder; --output names the output manifest file", path=path) from exc
    except OSError as exc:
        if exc.errno == 6:  # ENXIO: a FIFO nobody reads
            raise BadInputError("is a FIFO, not a regular file", path=path) from exc
        raise disk_error(exc, path) from exc
    os.close(fd)
    fsync_dir(path.parent)
    sweep_stale(path.parent, only=path.name)

