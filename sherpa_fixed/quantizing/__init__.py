"""`sherpa-fixed quantize`: onnxruntime's dynamic int8 scheme, streamed tensor by tensor.

Entry point: `quantize_folder(source, ...) -> QuantizeResult`.
"""

from __future__ import annotations

from .folder import QuantizeResult, quantize_folder, render_quantize

__all__ = ["QuantizeResult", "quantize_folder", "render_quantize"]
