"""`sherpa-fixed demo`: see the package work before downloading gigabytes.

Builds a tiny Parakeet-TDT-shaped folder as a raw NeMo export would leave
it (no sherpa-onnx metadata), and shows what the inspector finds.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from .inspector import inspect_folder
from .render import render_report
from .testing import ModelSpec, write_model_folder

DEMO_SPEC = ModelSpec(feat_dim=80, tdt=True, metadata="missing", external="single")


def run_demo(folder: Path | None, *, as_json: bool = False, echo: Callable[[str], None] = print) -> int:
    folder = folder or Path("sherpa-fixed-demo")
    raw = folder / "raw-export"
    write_model_folder(raw, DEMO_SPEC)
    report = inspect_folder(raw)
    if as_json:
        import json

        echo(json.dumps({"inspect": report.to_json()}, indent=2))
        return 0
    echo(f"Built a tiny 80-mel Parakeet-TDT-shaped export in {raw} (random weights, no metadata).")
    echo("")
    echo("$ sherpa-fixed inspect " + str(raw))
    echo(render_report(report))
    return 0
