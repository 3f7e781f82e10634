"""Shared fixtures: model folders built by the factory, and the genuine NeMo exports."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest

from sherpa_fixed.testing import ModelSpec, write_model_folder

NEMO_DIR = Path(__file__).parent / "data" / "nemo"
NEMO_VARIANTS = sorted(p.name for p in NEMO_DIR.iterdir() if (p / "truth.json").exists())


@pytest.fixture
def make_folder(tmp_path):
    """make_folder(name="m", **ModelSpec fields) -> Path of a freshly written model folder."""

    def make(name: str = "model", spec: ModelSpec | None = None, **changes) -> Path:
        return write_model_folder(tmp_path / name, spec, **changes)

    return make


@pytest.fixture
def nemo_copy(tmp_path):
    """nemo_copy("tdt-80") -> a writable copy of a genuine tiny NeMo export, and its truth.json."""

    def copy(name: str) -> tuple[Path, dict]:
        dst = tmp_path / name
        shutil.copytree(NEMO_DIR / name, dst)
        truth = json.loads((dst / "truth.json").read_text())
        (dst / "truth.json").unlink()  # not part of a real export folder
        return dst, truth

    return copy


def old_sherpa_python() -> str | None:
    """Interpreter of an environment with sherpa-onnx 1.12.35, if CI (or you) made one."""
    py = os.environ.get("SHERPA_FIXED_OLD_PYTHON")
    return py if py and Path(py).exists() else None
