"""`sherpa-fixed quantize`: onnxruntime's dynamic int8 scheme, streamed tensor by tensor.

Entry point: `quantize_folder(source, ...) -> QuantizeResult`.
"""

from __future__ import annotations

__all__ = ["QuantizeResult", "quantize_folder", "render_quantize"]


def __getattr__(name: str):
    # Lazy: importing the package must not pull onnxruntime's quantizer in (protos.py).
    if name in __all__:
        from . import folder

        return getattr(folder, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
