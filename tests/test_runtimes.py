"""inspect --sherpa-onnx and prepare --sherpa-onnx: which release loads a folder, and the layout it loads.

The predictions come from the measured matrix (sherpa_fixed/reading/sherpa_releases.json, docs/runtimes.md);
tests/test_c_api.py checks that file against real releases' C API. Here: the rules on the folders users
have, and the layouts prepare writes, checked in the real sherpa-onnx 1.12.35 (the last release that
resolves weights against the working directory), run from another folder.
"""

from __future__ import annotations

import json

import pytest
from click.testing import CliRunner

from sherpa_fixed.cli import main
from sherpa_fixed.errors import BadInputError
from sherpa_fixed.reading import runtimes
from sherpa_fixed.reading.inspector import inspect_folder
from sherpa_fixed.reading.onnx_graph import read_signature
from sherpa_fixed.rewriting.prepare import prepare_folder
from sherpa_fixed.testing import ModelSpec, write_big_model_folder, write_model_folder

from .conftest import run_python


def run(*args) -> tuple[int, str]:
    r = CliRunner().invoke(main, [str(a) for a in args])
    return r.exit_code, r.output


def test_the_data_file_is_contiguous_and_sorted():
    rel = runtimes.releases()
    keys = [(runtimes.version_key(e.first), runtimes.version_key(e.last)) for e in rel.epochs]
    assert all(a <= b for a, b in keys) and all(keys[i][1] < keys[i + 1][0] for i in range(len(keys) - 1))
    assert rel.epoch("2.0.1") is rel.epochs[-1] and rel.epoch("1.9.23") is None
    assert rel.epoch("9.0.0") is rel.epochs[-1]  # newer than measured: like the newest, and said so


def facts(**kw) -> runtimes.FileFacts:
    base = {"name": "encoder.onnx", "external": True, "absolute": False, "optimizer_read": [], "inline_bytes": 10}
    return runtimes.FileFacts(**{**base, **kw})


@pytest.mark.parametrize("version, kw, tdt, where, says", [
    ("1.12.14", {"external": False}, True, "anywhere", "self-contained"),
    ("1.12.13", {"external": False}, True, "anywhere", None),  # but with the duration-0 warning (below)
    ("1.12.6", {"external": False}, True, "never", "without durations"),
    ("1.9.23", {"external": False}, False, "never", "no NeMo transducer"),
    ("1.12.14", {}, True, "model_folder", "working directory"),
    ("1.12.14", {"optimizer_read": ["pre_encode.conv.0.weight"]}, True, "never", "model_path must not be empty"),
    ("1.12.35", {"optimizer_read": ["pre_encode.conv.0.weight"]}, True, "model_folder", "working directory"),
    ("1.12.36", {}, True, "anywhere", "model's folder"),
    ("1.12.37", {"absolute": True}, True, "anywhere", "model's folder"),
    ("1.12.38", {"absolute": True}, True, "never", "refuses"),
    ("1.12.20", {"absolute": True}, True, "never", "under the working directory"),
])
def test_the_rules_of_docs_runtimes(version, kw, tdt, where, says):
    v = runtimes.judge([facts(**kw), facts(name="joiner.onnx", external=False)], version, tdt=tdt)
    assert v.where == where, v.text
    if says:
        assert says in v.why
    assert (version == "1.12.13") == any("duration 0" in w for w in v.warnings)


def test_a_release_newer_than_measured_is_said_to_be_assumed():
    v = runtimes.judge([facts()], "3.1.0", tdt=True)
    assert v.where == "anywhere" and not v.measured and "newer than any release measured" in v.warnings[0]


def test_bad_release_numbers_are_one_line(tmp_path):
    folder = write_model_folder(tmp_path / "m", ModelSpec())
    for bad in ("latest", "1.12", "1.12.x"):
        code, out = run("inspect", folder, "--sherpa-onnx", bad)
        assert code == 2 and f"--sherpa-onnx {bad!r} is not a release number" in out
        with pytest.raises(BadInputError):
            prepare_folder(folder, output=tmp_path / "o", sherpa_onnx=bad)
    assert not (tmp_path / "o").exists()


def test_inspect_names_the_oldest_release_and_judges_the_one_asked(tmp_path):
    folder = write_model_folder(tmp_path / "m", ModelSpec(external="single", int8=True))
    report = inspect_folder(folder, sherpa_onnx="1.12.35")
    by = {v.name: v.runtimes for v in report.variants}
    assert by["fp32"]["oldest_release"] == "1.12.36" and by["int8"]["oldest_release"] == "1.12.14"
    assert by["fp32"]["requested"]["loads"] == "model_folder" and by["int8"]["requested"]["loads"] == "anywhere"
    code, out = run("inspect", folder, "--sherpa-onnx", "1.12.35")
    assert code == 1 and "✗ sherpa-onnx 1.12.35 loads it only when the working directory is the model folder" in out
    assert run("inspect", folder, "--sherpa-onnx", "2.0.1")[0] == 0


def sherpa_from(python: str, folder, cwd) -> tuple[bool, str]:
    """Stock sherpa-onnx in `python` loads `folder` from `cwd` and decodes a second: (ok, its stderr)."""
    code = r"""
import sys, numpy as np, sherpa_onnx
d = sys.argv[1]
r = sherpa_onnx.OfflineRecognizer.from_transducer(encoder=d + "/encoder.onnx", decoder=d + "/decoder.onnx",
    joiner=d + "/joiner.onnx", tokens=d + "/tokens.txt", model_type="nemo_transducer")
s = r.create_stream(); s.accept_waveform(16000, np.zeros(16000, np.float32)); r.decode_stream(s)
print("decoded", s.result.text)
"""
    proc = run_python(python, code, str(folder), cwd=cwd)
    return proc.returncode == 0 and "decoded" in proc.stdout, proc.stderr


def test_prepare_for_a_release_writes_the_layout_it_loads_from_anywhere(tmp_path, old_sherpa_python):
    """The default layout loads in 1.12.35 only from the model folder (as inspect predicts); the layout
    prepare --sherpa-onnx 1.12.35 writes loads from another folder, in the real release."""
    src = write_model_folder(tmp_path / "m", ModelSpec(external="single", metadata="missing"))
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    default = tmp_path / "default"
    assert prepare_folder(src, output=default).exit_code == 0
    assert inspect_folder(default, sherpa_onnx="1.12.35").variants[0].runtimes["requested"]["loads"] == "model_folder"
    ok, err = sherpa_from(old_sherpa_python, default, elsewhere)
    assert not ok and "encoder.weights" in err
    assert sherpa_from(old_sherpa_python, default, default)[0]
    pinned = tmp_path / "for-1.12.35"
    result = prepare_folder(src, output=pinned, sherpa_onnx="1.12.35")
    assert result.exit_code == 0 and not (pinned / "encoder.weights").exists()
    assert any(c.what == "inline" and "--sherpa-onnx 1.12.35" in c.why for c in result.plan.changes)
    assert inspect_folder(pinned, sherpa_onnx="1.12.35").variants[0].runtimes["requested"]["loads"] == "anywhere"
    assert sherpa_from(old_sherpa_python, pinned, elsewhere)[0]
    meta = read_signature(pinned / "encoder.onnx").metadata
    assert json.loads(meta["sherpa_fixed_prepared"])["for_sherpa_onnx"] == "1.12.35"


def test_no_layout_exists_for_a_big_fp32_encoder_on_an_old_release(tmp_path):
    """Over 2 GiB (sparse files: nothing real is written) on a release that resolves weights against the
    working directory: refused before anything is written, naming what works."""
    folder = write_big_model_folder(tmp_path / "m", ModelSpec(d_model=1024, layers=140, metadata="missing",
                                                              external="single"), sparse=True)
    code, out = run("prepare", folder, "-o", tmp_path / "o", "--sherpa-onnx", "1.12.14")
    assert code == 2 and "cannot be self-contained (protobuf's 2 GiB limit)" in out
    assert "sherpa-fixed quantize" in out and ">= 1.12.36" in out and out.count("\n") == 1
    assert not (tmp_path / "o").exists()
    assert run("prepare", folder, "-o", tmp_path / "o2", "--sherpa-onnx", "2.0.1", "--verify", "fast")[0] == 0


def test_tdt_on_a_release_without_durations_is_refused(tmp_path):
    folder = write_model_folder(tmp_path / "m", ModelSpec())
    code, out = run("prepare", folder, "-o", tmp_path / "o", "--sherpa-onnx", "1.11.5")
    assert code == 2 and "without durations" in out and not (tmp_path / "o").exists()


def test_transcribe_and_the_drop_in_work_on_an_old_release_from_anywhere(tmp_path, old_sherpa_python):
    """sherpa-onnx 1.12.35 resolves external weights against the working directory; transcribe (through the
    drop-in recognizer's session_model_dir) decodes the default layout from `/`, in windows past 90 s."""
    import numpy as np

    from sherpa_fixed.decoding.audio import write_wav

    src = write_model_folder(tmp_path / "m", ModelSpec(external="single", metadata="missing"))
    out = tmp_path / "prepared"
    assert prepare_folder(src, output=out).exit_code == 0
    wav = tmp_path / "long.wav"
    write_wav(wav, np.random.default_rng(0).standard_normal(16000 * 100).astype(np.float32) * 0.1, 16000)
    code = ("import sys, json, sherpa_onnx\nfrom importlib.metadata import version\n"
            "from sherpa_fixed.cli import main\nprint(version('sherpa-onnx'))\n"
            "sys.argv = ['sherpa-fixed', 'transcribe', sys.argv[1], sys.argv[2], '--json']\nmain()")
    proc = run_python(old_sherpa_python, code, str(out), str(wav), cwd="/")
    assert proc.returncode == 0, proc.stderr
    version, doc = proc.stdout.split("\n", 1)
    assert version == "1.12.35" and json.loads(doc)["files"][0]["ok"]
