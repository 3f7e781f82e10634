"""`sherpa-fixed export`: a NeMo .nemo transducer to a working sherpa-onnx folder in one command.

Needs the optional extra (torch, nemo-toolkit), imported only inside the
export itself: `import sherpa_fixed` and every other command work without it.
Entry point: `export_nemo(source, output, ...) -> ExportResult`.
"""

from __future__ import annotations

from .export import ExportResult, export_nemo, render_export

__all__ = ["ExportResult", "export_nemo", "render_export"]
