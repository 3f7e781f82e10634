"""Keep every read inside the model folder.

Model folders come from the internet. A graph's external-data `location`
is a path chosen by whoever made the file: `/etc/passwd`, `../../.ssh/id_rsa`,
or a plain name that is a symlink to anywhere. Reading it and copying its
bytes into a prepared `encoder.weights` would leak a private file into a
folder the user may then publish. So every path we are about to open is
resolved (symlinks followed) and must land inside the folder's root, or the
run stops before a byte is read.

The root is the folder itself, except for a Hugging Face cache snapshot
(`models--ORG--NAME/snapshots/REV/`), whose files are relative symlinks to
`../../blobs/SHA`: there the root is the repo tree `models--ORG--NAME/`, so
its blobs count as inside while the rest of the cache does not.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path

from ..errors import BadInputError


def hf_repo_root(folder: Path) -> Path | None:
    """The repo tree of a Hugging Face cache snapshot folder, else None.

    Judged from the path as given (not resolved): `.../snapshots/REV` whose
    grandparent has a `blobs/` folder.
    """
    folder = Path(os.path.abspath(folder))
    if folder.parent.name == "snapshots" and (folder.parent.parent / "blobs").is_dir():
        return folder.parent.parent
    return None


def model_root(folder: str | os.PathLike) -> Path:
    """The resolved folder that every file of this model must resolve into."""
    folder = Path(folder)
    repo = hf_repo_root(folder)
    return Path(os.path.realpath(repo if repo is not None else folder))


def is_inside(root: Path, path: str | os.PathLike) -> bool:
    """True when `path`, symlinks resolved, is `root` or below it."""
    real = os.path.realpath(path)
    root_s = str(root)
    return real == root_s or real.startswith(root_s.rstrip(os.sep) + os.sep)


def outside_reason(folder: str | os.PathLike, path: str | os.PathLike) -> str | None:
    """Why `path` may not be read as part of the model in `folder`, or None when it may.

    Refuses what resolves outside the root, and what is not a regular file
    once resolved (a FIFO blocks a reader forever; a device or socket is not
    a weights file). A missing file is not refused here: callers report it
    as missing.
    """
    if "\0" in str(path):
        return "is not a valid file name (it contains a NUL byte)"
    root = model_root(folder)
    if not is_inside(root, path):
        return f"resolves to {os.path.realpath(path)}, outside the model folder {root}"
    try:
        st = os.stat(path)
    except FileNotFoundError:
        return None
    except OSError as exc:  # ELOOP (symlink loop), EACCES, ENAMETOOLONG, ...
        return f"cannot be opened ({exc.strerror})"
    if not stat.S_ISREG(st.st_mode):
        kind = "a folder" if stat.S_ISDIR(st.st_mode) else "a FIFO" if stat.S_ISFIFO(st.st_mode) else \
            "a socket" if stat.S_ISSOCK(st.st_mode) else "a device" if stat.S_ISCHR(st.st_mode) or \
            stat.S_ISBLK(st.st_mode) else "not a regular file"
        return f"is {kind}, not a regular file"
    return None


def inside(folder: str | os.PathLike, path: str | os.PathLike, *, what: str = "file") -> Path:
    """Return `path` if it may be read as part of the model in `folder`; raise BadInputError otherwise."""
    reason = outside_reason(folder, path)
    if reason is not None:
        raise BadInputError(f"{what} {reason}", path=path,
                            fix="sherpa-fixed reads only files inside the model folder; put the real file "
                                "there (re-download or re-export the model)")
    return Path(path)
