"""Output folders: built hidden, renamed into place whole, and never replacing what sherpa-fixed did not write.

Every command that writes a new folder (`prepare -o`, `quantize -o`,
`export`) goes through `staged_output`:

1. the output is checked against the rules below before anything is read;
2. the command writes into a hidden staging folder beside the output
   (`.sf-tmp-PID-...`), on the same file system, so the final step is a
   rename; a killed run leaves only that staging folder, which the next run
   sweeps (its pid is gone);
3. at the end a marker, `.sherpa-fixed.json`, listing every file written,
   goes into the staging folder; the rules are checked again (the caller
   holds the output parent's lock, but other programs do not take it); an
   existing output is renamed aside, checked once more, the staging folder
   renamed into place, and only then the old one deleted.

The rules (`check_output`): the output is not the source, does not contain
it, and is not inside it; its parent exists; it is not a symlink. An
existing, non-empty output is replaced only with `force`, and only if it
is a folder sherpa-fixed wrote: it has the marker, and every entry in it is
a file the marker lists (no subfolders, nothing added since). A folder of
notes, a home directory, a model folder from elsewhere or one of ours to
which the user added a file are refused, with or without `force`.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from .. import __version__
from ..errors import BadInputError
from .atomic import PREFIX, check_writable, disk_error, exchange, fsync_dir, sweep_stale, temp_path
from .bounded import read_bounded
from .confine import is_inside

MARKER = ".sherpa-fixed.json"
MARKER_LIMIT = 4 << 20


def _fix(what: str) -> str:
    return f"choose a new {what} beside the source; nothing was changed"


def foreign_entries(folder: Path) -> list[str]:
    """Entries of `folder` that sherpa-fixed did not write (empty for a folder it wrote and nobody changed).

    Our temp files (`.sf-*`) are ignored: they are swept by their owner or by the next run."""
    try:
        listed = set(json.loads(read_bounded(folder / MARKER, MARKER_LIMIT, what="marker"))["files"])
    except (BadInputError, ValueError, KeyError, TypeError):
        listed = None
    out = []
    for p in sorted(folder.iterdir()):
        if p.name.startswith(PREFIX) or p.name == MARKER:
            continue
        if listed is None or p.name not in listed or p.is_symlink() or not p.is_file():
            out.append(p.name + ("/" if p.is_dir() and not p.is_symlink() else ""))
    if listed is None and not out:
        return []  # an empty folder (perhaps with our temp files) is as good as new
    if listed is None:
        out.insert(0, f"(no {MARKER})")
    return out


def check_output(source: Path | None, output: Path, force: bool, *, what: str = "--output") -> None:
    """Refuse an output that would destroy or mix with the source or with anything not ours.

    Called before anything is read, and again, under the lock, just before the final rename."""
    out = Path(os.path.realpath(output))
    if source is not None:
        src = Path(os.path.realpath(source))
        kind = "folder" if src.is_dir() else "file"
        if out == src:
            raise BadInputError(f"{what} is the source {kind}", path=output,
                                fix="use --in-place for that" if kind == "folder" else _fix("folder"))
        if is_inside(out, src):
            raise BadInputError(f"{what} contains the source {kind} {src}", path=output, fix=_fix("folder"))
        if is_inside(src, out):
            raise BadInputError(f"{what} is inside the source folder", path=output, fix=_fix("folder"))
    parent = Path(os.path.abspath(output)).parent
    if not parent.is_dir():
        raise BadInputError("parent folder does not exist" if not parent.exists() else "parent is not a folder",
                            path=parent, fix="create it first")
    if os.path.islink(output):
        raise BadInputError(f"{what} is a symlink", path=output, fix="give the real folder, or a new one")
    if os.path.lexists(output) and not output.is_dir():
        raise BadInputError(f"{what} exists and is not a folder", path=output, fix=_fix("folder"))
    if output.is_dir():
        foreign = foreign_entries(output)
        entries = [p for p in output.iterdir() if not p.name.startswith(PREFIX)]
        if entries and not force:
            raise BadInputError(f"{what} exists and is not empty", path=output,
                                fix="choose a new folder, or pass --force to replace a folder sherpa-fixed wrote")
        if foreign:
            shown = ", ".join(foreign[:3]) + (" ..." if len(foreign) > 3 else "")
            raise BadInputError(f"--force replaces only a folder sherpa-fixed wrote ({MARKER} lists its files), "
                                f"and this one holds what it did not write: {shown}", path=output,
                                fix="move those files away or choose a new folder; nothing was changed")


class _Changed(BadInputError):
    def __init__(self, output: Path):
        super().__init__("the output folder changed while sherpa-fixed was writing", path=output,
                         fix="run again once nothing else writes there; nothing was changed")


@dataclass
class StagedOutput:
    """A hidden folder beside `output` that becomes `output` on `commit()`; see the module docstring."""

    output: Path
    source: Path | None
    force: bool
    command: str
    staging: Path = field(init=False)
    committed: bool = False

    def __post_init__(self) -> None:
        self.output = Path(os.path.abspath(self.output))
        self.staging = temp_path(self.output, "tmp")

    @property
    def parent(self) -> Path:
        return self.output.parent

    def commit(self) -> None:
        """Write the marker, then put the staging folder in place of the output (see the module docstring)."""
        files = sorted(p.name for p in self.staging.iterdir() if p.name != MARKER)
        record = {"written_by": f"sherpa-fixed {__version__}", "command": self.command, "files": files}
        (self.staging / MARKER).write_text(json.dumps(record, indent=1) + "\n", encoding="utf-8")
        fsync_dir(self.staging)
        check_output(self.source, self.output, self.force)
        try:
            if not os.path.lexists(self.output):
                os.replace(self.staging, self.output)
            elif exchange(self.staging, self.output):  # one atomic step: a kill leaves old or new in place
                if foreign_entries(self.staging):  # written into after our check: swap back, keep it all
                    exchange(self.staging, self.output)
                    raise _Changed(self.output)
                shutil.rmtree(self.staging, ignore_errors=True)
            else:
                old = temp_path(self.output, "old")  # a kill in between is undone by sweep_stale
                os.replace(self.output, old)
                if foreign_entries(old):
                    os.replace(old, self.output)
                    raise _Changed(self.output)
                os.replace(self.staging, self.output)
                shutil.rmtree(old, ignore_errors=True)
        except OSError as exc:
            raise disk_error(exc, self.output) from exc
        fsync_dir(self.parent)
        self.committed = True


@contextlib.contextmanager
def staged_output(output: str | os.PathLike, *, source: Path | None, force: bool,
                  command: str) -> Iterator[StagedOutput]:
    """Create the staging folder (the caller holds the output parent's lock); remove it unless committed."""
    staged = StagedOutput(Path(output), source, force, command)
    check_output(source, Path(output), force)
    check_writable(staged.parent)
    sweep_stale(staged.parent)
    try:
        staged.staging.mkdir()
    except OSError as exc:
        raise disk_error(exc, staged.output) from exc
    try:
        yield staged
    finally:
        if not staged.committed:
            shutil.rmtree(staged.staging, ignore_errors=True)
