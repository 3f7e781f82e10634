"""sherpa-fixed: make NeMo transducer exports run in sherpa-onnx, unchanged for the user.

Library entry points mirror the CLI: `inspect_folder` (sherpa-fixed inspect),
`prepare_folder` (sherpa-fixed prepare), and `session_model_dir` for creating
sessions whose relative weight paths must resolve in every sherpa-onnx build.
"""

from __future__ import annotations

__version__ = "0.1.0"

from .errors import BadInputError, NeedsFixError, SherpaFixedError
from .inspector import FolderReport, inspect_folder
from .prepare import PrepareResult, prepare_folder
from .recognizer import OfflineRecognizer, OfflineStream
from .session_dir import session_model_dir

__all__ = [
    "BadInputError",
    "FolderReport",
    "NeedsFixError",
    "OfflineRecognizer",
    "OfflineStream",
    "PrepareResult",
    "SherpaFixedError",
    "__version__",
    "inspect_folder",
    "prepare_folder",
    "session_model_dir",
]
