"""A write-ahead journal, so an in-place run killed at any moment is finished or undone by the next one.

Atomic renames keep each file whole, but a run is several steps: new files
appear (weights, int8 models), existing ones are swapped (their originals
kept as hard-linked backups), the result is verified, and only then are the
backups and the superseded files removed. Killed between those steps, a run
used to leave 1.2 GB of old scattered weights behind for good (prepare), or
a mixed int8 set whose backups the next run swept away (quantize). Now each
step is recorded in `.sf-journal.json` (written atomically) BEFORE it is
taken, by every command that writes in place, and the next run of any of
them, holding the folder's lock (so the writer is certainly gone), replays
the journal before it looks at the folder:

- state `writing`: the run never passed verification: put every backup
  back over its graph and delete the weight files it created; the folder is
  exactly as before (then the new run plans afresh);
- state `committed`: verification passed: delete the backups and every
  superseded weight file that no graph references any more.

Every action is idempotent, so a kill during recovery is recovered too.

The journal is itself a file in a folder that may have been downloaded, so
it is not trusted: it names only entries of its own folder, and it records
each file's identity (device and inode, `lstat`) when the run makes or
backs it up. Recovery deletes or restores an entry only while it is still
that very file; a planted journal naming `encoder.weights` as "created"
deletes nothing.
Which superseded files are still referenced is a fact about the graphs in
the folder, so the caller passes it in (`referenced`): this module knows
files, not models.
"""

from __future__ import annotations

import contextlib
import json
import os
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

from ..errors import SherpaFixedError
from .atomic import fsync_dir, temp_path
from .bounded import read_bounded

JOURNAL = ".sf-journal.json"
WRITING = "writing"
COMMITTED = "committed"
JOURNAL_LIMIT = 16 << 20  # a journal names files of one folder: far less than this


def identity(path: Path) -> list[int] | None:
    """(device, inode) of the directory entry itself (a symlink is its own entry), None when absent."""
    try:
        st = os.lstat(path)
    except OSError:
        return None
    return [st.st_dev, st.st_ino]


@dataclass
class Journal:
    folder: Path
    state: str = WRITING
    backups: dict[str, str] = field(default_factory=dict)  # file name -> backup name (all in `folder`)
    created: list[str] = field(default_factory=list)  # files this run made
    superseded: list[str] = field(default_factory=list)  # files to remove once committed, if unreferenced
    pid: int = field(default_factory=os.getpid)
    ids: dict[str, list[int]] = field(default_factory=dict)  # entry name -> identity when journaled

    def save(self) -> None:
        data = asdict(self)
        data["folder"] = str(self.folder)
        path = self.folder / JOURNAL
        tmp = temp_path(path, "jtmp")
        with open(tmp, "w", encoding="utf-8") as f:
            json.dump(data, f, indent=1)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
        fsync_dir(self.folder)

    def discard(self) -> None:
        with contextlib.suppress(FileNotFoundError):
            (self.folder / JOURNAL).unlink()
        fsync_dir(self.folder)

    def remember(self, name: str, path: Path | None = None) -> None:
        """Record the identity of the entry `name` (or of `path`, which will be renamed to `name`)."""
        ident = identity(path if path is not None else self.folder / name)
        if ident is not None:
            self.ids[name] = ident

    def still(self, name: str) -> bool:
        """True when `name` is a safe entry of this folder and still the very file this journal recorded."""
        return _safe_name(name) and name in self.ids and identity(self.folder / name) == self.ids[name]


def begin(folder: Path, superseded: list[str] | None = None) -> Journal:
    """A new journal for a run about to write in `folder`, saved before its first step."""
    j = Journal(Path(folder))
    for name in sorted(set(superseded or ())):
        if _safe_name(name):
            j.superseded.append(name)
            j.remember(name)
    j.save()
    return j


def load(folder: Path) -> Journal | None:
    path = folder / JOURNAL
    if not os.path.lexists(path):
        return None
    try:
        data = json.loads(read_bounded(path, JOURNAL_LIMIT, what="journal").decode("utf-8"))
        ids = {str(k): [int(x) for x in v] for k, v in dict(data.get("ids") or {}).items()}
        return Journal(folder, str(data["state"]), {str(k): str(v) for k, v in dict(data["backups"]).items()},
                       [str(x) for x in data["created"]], [str(x) for x in data["superseded"]],
                       int(data.get("pid", 0)), ids)
    except (OSError, ValueError, KeyError, TypeError, AttributeError, SherpaFixedError):
        # A journal we cannot read was not written by us (ours are written atomically) or is damaged:
        # nothing it says can be trusted, and its backups are swept as stale temp files. The files
        # themselves are whole (atomic renames).
        path.unlink(missing_ok=True)
        return None


def _safe_name(name: str) -> bool:
    """Journal entries name files in the folder itself: never a path (the journal is input too)."""
    return bool(name) and "/" not in name and "\\" not in name and "\0" not in name and name not in (".", "..")


def roll_back(j: Journal) -> None:
    """Undo a run that never committed: every replaced file back from its backup, created files deleted."""
    for final, backup in j.backups.items():
        if _safe_name(final) and j.still(backup):
            os.replace(j.folder / backup, j.folder / final)
    for name in j.created:
        if j.still(name):
            with contextlib.suppress(FileNotFoundError):
                (j.folder / name).unlink()
    fsync_dir(j.folder)
    j.discard()


def add_new(j: Journal, tmp: Path, final_name: str) -> None:
    """Rename a new file (nothing references it yet) to its final name, journaled as created first."""
    j.created.append(final_name)
    j.remember(final_name, tmp)
    j.save()
    os.replace(tmp, j.folder / final_name)


def swap_in(j: Journal, tmp: Path, final_name: str) -> None:
    """Rename `tmp` over `final_name`; an existing entry is first kept as a journaled hard-linked backup
    (the directory entry itself: a Hugging Face snapshot's symlink stays a symlink). A name that did not
    exist is journaled as created."""
    final = j.folder / final_name
    if not os.path.lexists(final):
        add_new(j, tmp, final_name)
        return
    backup = temp_path(final, "bak")
    j.backups[final_name] = backup.name
    j.remember(backup.name, final)  # the link will share the entry's inode
    j.save()
    os.link(final, backup, follow_symlinks=False)
    os.replace(tmp, final)  # replaces a symlink, never writes into the file behind it


def commit(j: Journal, referenced: Callable[[], set[str]] | None = None) -> list[str]:
    """Mark the run committed (the point of no return), then finish it. Returns the files removed."""
    j.state = COMMITTED
    j.save()
    return finish(j, referenced() if referenced is not None and j.superseded else set())


def recover(folder: Path, referenced: Callable[[], set[str]]) -> list[str]:
    """Finish or undo the run a journal in `folder` describes (the caller holds the folder's lock).

    Returns what was done, in words (empty when there was no journal)."""
    j = load(folder)
    if j is None:
        return []
    if j.state == COMMITTED:
        removed = finish(j, referenced() if j.superseded else set())
        return [f"finished an interrupted run: removed {len(removed)} superseded file(s)"
                + (f" ({', '.join(removed[:3])}{' ...' if len(removed) > 3 else ''})" if removed else "")]
    restored = sum(1 for b in j.backups.values() if j.still(b))
    removed = sum(1 for n in j.created if j.still(n))
    roll_back(j)
    return [f"undid an interrupted run (pid {j.pid}): {restored} file(s) restored, "
            f"{removed} unfinished new file(s) removed"]


def finish(j: Journal, referenced: set[str]) -> list[str]:
    """Complete a committed run: drop backups and the superseded files nothing references. Returns removed."""
    for backup in j.backups.values():
        if j.still(backup):
            with contextlib.suppress(FileNotFoundError):
                (j.folder / backup).unlink()
    removed = []
    for name in j.superseded:
        if name not in referenced and j.still(name):
            (j.folder / name).unlink()  # a symlink (HF snapshot) is removed, never the blob behind it
            removed.append(name)
    fsync_dir(j.folder)
    j.discard()
    return removed
