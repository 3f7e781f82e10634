"""sherpa-fixed: make NeMo transducer exports run in sherpa-onnx, unchanged for the user.

Library entry points mirror the CLI: `inspect_folder` (sherpa-fixed inspect).
"""

from __future__ import annotations

__version__ = "0.1.0"

from .errors import BadInputError, NeedsFixError, SherpaFixedError
from .inspector import FolderReport, inspect_folder

__all__ = [
    "BadInputError",
    "FolderReport",
    "NeedsFixError",
    "SherpaFixedError",
    "__version__",
    "inspect_folder",
]
