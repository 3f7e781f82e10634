"""`sherpa-fixed demo`: see the package work before downloading gigabytes.

Builds a tiny Parakeet-TDT-shaped folder as a raw NeMo export leaves it (no
sherpa-onnx metadata, weights in scattered per-tensor files), shows what
stock sherpa-onnx says about it, inspects it, prepares it, and decodes with
stock sherpa-onnx. Weights are random, so the transcript is noise; that
sherpa-onnx loads and decodes at all is the point.
"""

from __future__ import annotations

import shutil
from collections.abc import Callable
from pathlib import Path

from .decoding.sherpa_check import run_sherpa
from .reading.inspector import inspect_folder
from .render import render_prepare, render_report
from .rewriting.prepare import prepare_folder
from .testing import ModelSpec, write_model_folder

DEMO_SPEC = ModelSpec(feat_dim=80, tdt=True, metadata="missing", external="scattered")


def _sherpa(folder: Path):
    return run_sherpa(folder / "encoder.onnx", folder / "decoder.onnx", folder / "joiner.onnx", folder / "tokens.txt")


def run_demo(folder: Path | None, *, as_json: bool = False, echo: Callable[[str], None] = print) -> int:
    folder = folder or Path("sherpa-fixed-demo")
    raw, prepared = folder / "raw-export", folder / "prepared"
    for p in (raw, prepared):
        if p.exists():
            shutil.rmtree(p)
    write_model_folder(raw, DEMO_SPEC)
    before = _sherpa(raw)
    report = inspect_folder(raw)
    result = prepare_folder(raw, output=prepared, report=report)
    after = _sherpa(prepared)
    if as_json:
        import json

        echo(json.dumps({"raw_export": str(raw), "sherpa_onnx_before": before.error,
                         "inspect": report.to_json(), "prepare": result.to_json(),
                         "sherpa_onnx_after": {"ok": after.ok, "error": after.error, "text": after.text}},
                        indent=2))
        return 0 if after.ok else 1
    echo(f"Built {raw}: a tiny 80-mel Parakeet-TDT-shaped raw NeMo export (random weights, no metadata,")
    echo("scattered weight files). Nothing was downloaded.\n")
    echo(f"stock sherpa-onnx on it says: {before.error}\n")
    echo(f"$ sherpa-fixed inspect {raw}")
    echo(render_report(report) + "\n")
    echo(f"$ sherpa-fixed prepare {raw} --output {prepared}")
    echo(render_prepare(result) + "\n")
    if after.ok:
        echo(f"stock sherpa-onnx {after.version} on {prepared}: loads and decodes 1 s of audio "
             f"({len(after.results[0]['tokens'])} tokens; random weights, so the text is noise).")
        return 0
    echo(f"stock sherpa-onnx still fails: {after.error}")
    return 1
