"""sherpa-fixed: make NeMo transducer exports run in sherpa-onnx, unchanged for the user.

Library entry points mirror the CLI: `inspect_folder` (sherpa-fixed inspect),
`prepare_folder` (sherpa-fixed prepare), and `session_model_dir` for creating
sessions whose relative weight paths must resolve in every sherpa-onnx build.
"""

from __future__ import annotations

__version__ = "0.1.0"

from .errors import BadInputError, NeedsFixError, SherpaFixedError

# Loaded on first use: the CLI's inspect and prepare never pay for sherpa-onnx, onnxruntime or the
# recognizer (`sherpa-fixed inspect` on a 1.1 GB encoder takes less time than those imports).
_LAZY = {
    "OfflineRecognizer": ".decoding.recognizer",
    "OfflineStream": ".decoding.recognizer",
    "session_model_dir": ".decoding.session_dir",
    "FolderReport": ".reading.inspector",
    "inspect_folder": ".reading.inspector",
    "PrepareResult": ".rewriting.prepare",
    "prepare_folder": ".rewriting.prepare",
}


def __getattr__(name: str):
    if name in _LAZY:
        import importlib

        value = getattr(importlib.import_module(_LAZY[name], __name__), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(__all__)


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
