"""The start of every writing run: lock what it reads and writes, then finish or undo an interrupted one.

`prepare`, `quantize` and `export` (and anything later that writes) open
their run with `writing(...)`:

- the source (a model folder, or a `.nemo` file) is locked shared when it is
  only read, exclusively when it is rewritten in place; the parent of an
  output folder exclusively (lock.py: flock, waited for, never stale);
- a journal left in a source folder by an interrupted in-place run of any
  command is replayed first (journal.py), under the exclusive lock, so no
  run ever reads a half-swapped folder; the stale temp files of dead runs
  are swept after it (atomic.py);
- the caller then plans from what it finds under the lock.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable, Iterator
from pathlib import Path

from . import journal
from .atomic import sweep_stale
from .lock import DEFAULT_WAIT, folder_lock, folder_locks


def _recover(folder: Path, referenced: Callable[[], set[str]]) -> list[str]:
    done = journal.recover(folder, referenced)
    sweep_stale(folder)
    return done


@contextlib.contextmanager
def writing(source: str | os.PathLike, *, output: str | os.PathLike | None = None, in_place: bool = False,
            referenced: Callable[[], set[str]] = set, wait: float = DEFAULT_WAIT,
            dry_run: bool = False) -> Iterator[list[str]]:
    """Hold the run's locks for the body; yields what recovery of an interrupted run did (in words).

    referenced: the names of files the folder's graphs still point at (a reading fact the caller knows);
    a committed journal removes only superseded files outside this set.
    """
    source = Path(source)
    recovered: list[str] = []
    if source.is_dir() and not dry_run and not in_place and os.path.lexists(source / journal.JOURNAL):
        with folder_lock(source, wait=wait):  # briefly exclusive: a half-swapped folder is not read
            recovered = _recover(source, referenced)
    locks: list[tuple[Path, bool]] = [(source, not in_place or dry_run)]
    if output is not None and not dry_run:
        locks.append((Path(os.path.abspath(output)).parent, False))
    with folder_locks(locks, wait=wait):
        if in_place and not dry_run:
            recovered += _recover(source, referenced)
        yield recovered
