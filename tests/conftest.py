"""Shared fixtures: model folders built by the factory, and the genuine NeMo exports."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
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


REPO = Path(__file__).resolve().parent.parent
OLD_SHERPA = "1.12.35"  # the last release whose sessions resolve relative weights against the cwd


@pytest.fixture(scope="session")
def old_sherpa_python() -> str:
    """Interpreter of a second environment with sherpa-onnx 1.12.35 (bundling onnxruntime 1.23.2).

    Made once in .venv-old-sherpa/ (from the package registry) unless $SHERPA_FIXED_OLD_PYTHON
    names one. sherpa_fixed itself is used there from this checkout via PYTHONPATH.
    """
    given = os.environ.get("SHERPA_FIXED_OLD_PYTHON")
    if given:
        return given
    venv = REPO / ".venv-old-sherpa"
    py = venv / "bin" / "python"
    if not (venv / ".complete").exists():
        subprocess.run([sys.executable, "-m", "venv", "--clear", str(venv)], check=True)
        subprocess.run([str(py), "-m", "pip", "install", "-q", f"sherpa-onnx=={OLD_SHERPA}", "numpy", "onnx",
                        "onnxruntime", "click"], check=True)
        (venv / ".complete").write_text("ok")
    return str(py)


def run_python(python: str, code: str, *args: str, cwd: str | Path | None = None) -> subprocess.CompletedProcess:
    """Run code in another interpreter with this checkout importable."""
    env = dict(os.environ, PYTHONPATH=str(REPO))
    return subprocess.run([python, "-c", code, *args], capture_output=True, text=True, cwd=cwd, env=env)
