"""The project's one safety mechanism (lock, temp files, atomic rename), imported here and only here.

Every writer in sherpa-fixed goes through the same lock and atomic-write helpers (docs/safety.md).
They live in sherpa_fixed.rewriting today; when they move, this file is the one line to change.
"""

from __future__ import annotations

from ..rewriting.atomic import disk_error, fsync_dir, temp_path
from ..rewriting.lock import FileLock

__all__ = ["FileLock", "disk_error", "fsync_dir", "temp_path"]
