"""A write-ahead journal, so an in-place run killed at any moment is finished or undone by the next one.

Atomic renames keep each file whole, but a run is several steps: new weight
files appear, graphs are swapped (their originals kept as hard-linked
backups), the result is verified, and only then are the backups and the
superseded weight files removed. Killed between those steps, a run used to
leave 1.2 GB of old scattered weights behind for good, and the next run
said "nothing needs doing". Now each step is recorded in `.sf-journal.json`
(written atomically) BEFORE it is taken, and the next run, holding the
folder's lock (so the writer is certainly gone), replays the journal:

- state `writing`: the run never passed verification: put every backup
  back over its graph and delete the weight files it created; the folder is
  exactly as before (then the new run plans afresh);
- state `committed`: verification passed: delete the backups and every
  superseded weight file that no graph references any more.

Every action is idempotent, so a kill during recovery is recovered too.
"""

from __future__ import annotations

import contextlib
import json
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path

from .atomic import fsync_dir, temp_path

JOURNAL = ".sf-journal.json"
WRITING = "writing"
COMMITTED = "committed"


@dataclass
class Journal:
    folder: Path
    state: str = WRITING
    backups: dict[str, str] = field(default_factory=dict)  # graph name -> backup name (all in `folder`)
    created: list[str] = field(default_factory=list)  # weight files this run made
    superseded: list[str] = field(default_factory=list)  # files to remove once committed, if unreferenced
    pid: int = field(default_factory=os.getpid)

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


def load(folder: Path) -> Journal | None:
    path = folder / JOURNAL
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        return Journal(folder, data["state"], dict(data["backups"]), list(data["created"]),
                       list(data["superseded"]), int(data.get("pid", 0)))
    except FileNotFoundError:
        return None
    except (OSError, ValueError, KeyError, TypeError):
        # A journal we cannot read was being written when the run died (it is written atomically, so
        # this is not ours or is damaged): nothing it says can be trusted, and its backups are swept
        # as stale temp files. The graphs themselves are whole (atomic renames).
        path.unlink(missing_ok=True)
        return None


def _safe_name(name: str) -> bool:
    """Journal entries name files in the folder itself: never a path (the journal is input too)."""
    return bool(name) and "/" not in name and "\\" not in name and name not in (".", "..")


def roll_back(j: Journal) -> None:
    """Undo a run that never committed: every graph back to its backup, created weight files deleted."""
    for final, backup in j.backups.items():
        if _safe_name(final) and _safe_name(backup) and os.path.lexists(j.folder / backup):
            os.replace(j.folder / backup, j.folder / final)
    for name in j.created:
        if _safe_name(name):
            with contextlib.suppress(FileNotFoundError):
                (j.folder / name).unlink()
    fsync_dir(j.folder)
    j.discard()


def finish(j: Journal, referenced: set[str]) -> list[str]:
    """Complete a committed run: drop backups and the superseded files no graph references. Returns removed."""
    for backup in j.backups.values():
        if _safe_name(backup):
            with contextlib.suppress(FileNotFoundError):
                (j.folder / backup).unlink()
    removed = []
    for name in j.superseded:
        if _safe_name(name) and name not in referenced and os.path.lexists(j.folder / name):
            (j.folder / name).unlink()  # a symlink (HF snapshot) is removed, never the blob behind it
            removed.append(name)
    fsync_dir(j.folder)
    j.discard()
    return removed
