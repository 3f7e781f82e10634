"""sherpa-fixed: make NeMo transducer exports run in sherpa-onnx, unchanged for the user.

Library entry points mirror the CLI: `inspect_folder` (sherpa-fixed inspect),
`prepare_folder` (sherpa-fixed prepare), and `session_model_dir` for creating
sessions whose relative weight paths must resolve in every sherpa-onnx build.
"""

from __future__ import annotations

__version__ = "0.1.0"

from .decoding.recognizer import OfflineRecognizer, OfflineStream
from .decoding.session_dir import session_model_dir
from .errors import BadInputError, NeedsFixError, SherpaFixedError
from .reading.inspector import FolderReport, inspect_folder
from .rewriting.prepare import PrepareResult, prepare_folder

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
