"""Write files so that a crash at any moment leaves either the old file or the new one.

Every file any command writes goes to a hidden temp name in the destination
folder, is fsynced, then renamed over its final name (rename is atomic
within a filesystem). Temp and backup names start with `.sf-` so that a run
killed with -9 leaves nothing a model loader would pick up, and the next run
sweeps them away (only those whose writer's pid is gone).
"""

from __future__ import annotations

import errno
import os
import shutil
import uuid
from pathlib import Path

from ..errors import BadInputError

PREFIX = ".sf-"


def temp_path(final: Path, tag: str = "tmp") -> Path:
    return final.with_name(f"{PREFIX}{tag}-{os.getpid()}-{uuid.uuid4().hex[:8]}-{final.name}")


def is_ours(name: str) -> bool:
    return name.startswith(PREFIX)


def fsync_dir(folder: Path) -> None:
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def write_temp(final: Path, data: bytes, durable: bool = True) -> Path:
    """Write data to a temp file beside `final` (fsynced when durable); the caller renames it."""
    tmp = temp_path(final)
    try:
        with open(tmp, "wb") as f:
            f.write(data)
            f.flush()
            if durable:
                os.fsync(f.fileno())
    except OSError as exc:
        tmp.unlink(missing_ok=True)
        raise disk_error(exc, final) from exc
    return tmp


_RENAME_EXCHANGE = 2  # linux/fs.h


def exchange(a: Path, b: Path) -> bool:
    """Swap two existing entries in one atomic step (Linux renameat2 RENAME_EXCHANGE); False where the
    kernel, libc or file system cannot, so the caller falls back to two renames."""
    import ctypes
    import ctypes.util

    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
        renameat2 = libc.renameat2
    except (OSError, AttributeError):
        return False
    at_fdcwd = -100
    rc = renameat2(at_fdcwd, os.fsencode(a), at_fdcwd, os.fsencode(b), _RENAME_EXCHANGE)
    if rc == 0:
        return True
    err = ctypes.get_errno()
    if err in (errno.EINVAL, errno.ENOSYS, errno.ENOTSUP, errno.EOPNOTSUPP):
        return False
    raise OSError(err, os.strerror(err), str(a))


def write_file(final: Path, data: bytes, mode: int | None = None) -> None:
    """Replace `final` with `data` atomically and durably: temp file, fsync, rename, fsync of the folder."""
    final = Path(final)
    tmp = write_temp(final, data)
    try:
        if mode is not None:
            os.chmod(tmp, mode)
        os.replace(tmp, final)
    except OSError as exc:
        tmp.unlink(missing_ok=True)
        raise disk_error(exc, final) from exc
    fsync_dir(final.parent)


def ensure_folder(folder: Path, *, what: str = "output folder") -> Path:
    """Create `folder` (and its parents) for writing, with one clear line when that cannot be done.

    An existing path that is not a folder, a parent that is a file, a read-only or pseudo file system
    (/sys, /proc) and missing permissions are all bad input, not internal errors.
    """
    folder = Path(folder)
    if os.path.lexists(folder) and not folder.is_dir():
        raise BadInputError(f"{what} exists and is not a folder", path=folder, fix="choose another folder")
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except FileExistsError as exc:
        raise BadInputError(f"{what} exists and is not a folder", path=folder, fix="choose another folder") from exc
    except NotADirectoryError as exc:
        raise BadInputError(f"cannot create the {what}: a part of its path is a file, not a folder", path=folder,
                            fix="choose a folder under an existing folder") from exc
    except OSError as exc:
        raise disk_error(exc, folder) from exc
    check_writable(folder)
    return folder


def disk_error(exc: OSError, path: Path) -> BadInputError:
    if exc.errno == errno.ENOSPC:
        return BadInputError("disk full while writing", path=path, fix="free space and run again; nothing was changed")
    if exc.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
        return BadInputError("no permission to write", path=path,
                             fix="write to a folder on a writable disk, or fix the folder's permissions")
    return BadInputError(f"cannot write ({exc.strerror})", path=path)


def sweep_stale(folder: Path, only: str | None = None) -> list[Path]:
    """Remove temp/backup files left by runs that were killed (their pid no longer exists).

    `only`: just those made for this one final name (a corpus's OUT, in a folder other runs share).
    An output folder set aside to be replaced (`.sf-old-...-NAME`) whose replacement never arrived
    (NAME is missing: the run died between its two renames, where no atomic exchange was possible)
    is put back, not removed."""
    removed = []
    for p in folder.iterdir():
        if not is_ours(p.name):
            continue
        parts = p.name[len(PREFIX):].split("-", 3)
        try:
            pid = int(parts[1])
        except (IndexError, ValueError):
            continue
        if only is not None and (len(parts) < 4 or parts[3] != only):
            continue
        if pid == os.getpid() or pid_alive(pid):
            continue
        if parts[0] == "old" and len(parts) == 4 and parts[3] and not os.path.lexists(folder / parts[3]):
            try:
                os.replace(p, folder / parts[3])
                continue
            except OSError:
                pass
        # Every graph was replaced by an atomic rename, so the folder is complete without these;
        # a backup only matters to the live run that made it.
        try:
            shutil.rmtree(p) if p.is_dir() else p.unlink()
            removed.append(p)
        except OSError:
            pass
    return removed


def pid_alive(pid: int) -> bool:
    """Whether process `pid` still runs (a temp name carries its writer's pid: only a dead writer's is stale)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def check_writable(folder: Path) -> None:
    probe = folder / f"{PREFIX}probe-{os.getpid()}"
    try:
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as exc:
        raise disk_error(exc, folder) from exc


def check_free_space(folder: Path, needed: int) -> None:
    free = shutil.disk_usage(folder).free
    if needed > free:
        raise BadInputError(f"needs {needed / 1e9:.2f} GB free but only {free / 1e9:.2f} GB are", path=folder,
                            fix="free space or use --output on another disk; nothing was changed")


LINK_MIN = 16 << 20  # files at least this big are hard-linked into an output folder (and reported); smaller copied


def bring(src: Path, dst: Path) -> str:
    """Put an unchanged source file into an output folder as a real file, never a link to a link.

    Big files (>= LINK_MIN) are hard-linked to the resolved file (no bytes copied; the caller lists them
    as linked, since the two names then share one file); small ones (tokens.txt, graphs) are copied with
    their mode, so that editing the output never edits the source. Returns "linked" or "copied".
    """
    real = Path(os.path.realpath(src))
    if real.stat().st_size >= LINK_MIN and link_or_copy(real, dst) == "linked":
        return "linked"
    try:
        shutil.copyfile(real, dst)
        shutil.copymode(real, dst)
    except OSError as exc:
        raise disk_error(exc, dst) from exc
    return "copied"


def link_or_copy(src: Path, dst: Path) -> str:
    """Hard-link src to dst (no bytes written), or copy it when linking is impossible."""
    try:
        os.link(src, dst)
        return "linked"
    except OSError:
        try:
            shutil.copyfile(src, dst)  # uses the kernel's copy (sendfile/copy_file_range) on Linux
        except OSError as exc:
            raise disk_error(exc, dst) from exc
        return "copied"
