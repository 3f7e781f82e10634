"""Quantize a model folder's fp32 set into sherpa-onnx's int8 release files."""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from .. import __version__
from ..errors import EXIT_OK

Progress = Callable[[str, int, int], None]  # (phase, done, total), as prepare's


@dataclass
class QuantizeResult:
    source: Path
    target: Path
    mode: str  # output | in-place
    scheme: dict
    written: list[str] = field(default_factory=list)
    linked: list[str] = field(default_factory=list)
    files: list[dict] = field(default_factory=list)  # per model: role, source, output, bytes, quantized nodes
    seconds: dict[str, float] = field(default_factory=dict)

    @property
    def exit_code(self) -> int:
        return EXIT_OK

    def to_json(self) -> dict:
        return {
            "schema": "sherpa-fixed/quantize",
            "schema_version": 1,
            "sherpa_fixed_version": __version__,
            "source": str(self.source),
            "target": str(self.target),
            "mode": self.mode,
            "scheme": self.scheme,
            "exit_code": self.exit_code,
            "files": self.files,
            "written": self.written,
            "linked": self.linked,
            "seconds": {k: round(v, 3) for k, v in self.seconds.items()},
        }


def quantize_folder(
    source: str | os.PathLike,
    *,
    output: str | os.PathLike | None = None,
    in_place: bool = False,
    per_channel: bool = False,
    exclude: Sequence[str] = (),
    force: bool = False,
    progress: Progress | None = None,
) -> QuantizeResult:
    """Write encoder/decoder/joiner.int8.onnx from the fp32 set in `source`.

    `output`: a new folder holding the whole model (fp32 files linked, int8 files
    written); `in_place`: add the int8 files beside the fp32 set in `source`.
    Raises SherpaFixedError (exit 2) on bad input, leaving nothing half-written.
    """
    raise NotImplementedError("quantize_folder: work in progress (issue 14)")
