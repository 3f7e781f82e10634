"""`sherpa-fixed inspect` as a user meets it: exit codes, one-line errors, documented JSON."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from click.testing import CliRunner

from sherpa_fixed.cli import main

DOC = Path(__file__).parent.parent / "docs" / "inspect-json.md"


def run(*args):
    result = CliRunner().invoke(main, list(map(str, args)))
    return result.exit_code, result.stdout, result.stderr


@pytest.mark.parametrize("spec, code", [({}, 0), ({"metadata": "missing"}, 1), ({"time": "baked"}, 1),
                                        ({"external": "missing"}, 2)])
def test_exit_codes_follow_the_verdict(make_folder, spec, code):
    exit_code, out, _ = run("inspect", make_folder(**spec))
    assert exit_code == code
    assert "verdict:" in out


def test_text_report_names_roles_and_fixes(make_folder):
    _, out, _ = run("inspect", make_folder(metadata="wrong_feat_dim"))
    assert "80 mel bins, time dynamic" in out
    assert re.search(r"feat_dim\s+wrong\s+'128' -> '80'", out)
    assert "sherpa-fixed prepare" in out


def _paths(obj, prefix=""):
    if isinstance(obj, dict):
        for k, v in obj.items():
            yield f"{prefix}.{k}" if prefix else k
            yield from _paths(v, f"{prefix}.{k}" if prefix else k)
    elif isinstance(obj, list):
        for item in obj:
            yield from _paths(item, prefix + "[]")


def _normalise(path: str) -> str:
    path = re.sub(r"\.models\.(encoder|decoder|joiner)", ".models.<role>", path)
    path = re.sub(r"\.files\.(encoder|decoder|joiner)", ".files.<role>", path)
    path = re.sub(r"\.(measured|expected_metadata)\.[a-z_]+", r".\1.<key>", path)
    path = re.sub(r"\.metadata\..+$", ".metadata", path)
    path = re.sub(r"\.quantization\.(operators|weights)\..+$", r".quantization.\1", path)  # counts by name
    path = re.sub(r"\.quantization\.by\..+$", ".quantization.by", path)  # sherpa-fixed's own record
    return path


def test_every_json_key_is_documented(make_folder):
    folder = make_folder(external="single", int8=True, int8_external="shared", time="declared")
    code, out, _ = run("inspect", folder, "--json", "--probe", "--sherpa-onnx", "2.0.1")
    data = json.loads(out)
    assert data["schema"] == "sherpa-fixed/inspect" and data["schema_version"] == 1
    assert data["verdict"]["exit_code"] == code
    assert data["variants"][0]["runtimes"]["requested"]["version"] == "2.0.1"
    documented = set(re.findall(r"^\| `([^`]+)` \|", DOC.read_text(), re.M))
    emitted = {_normalise(p) for p in _paths(data)}
    assert emitted - documented == set()


def test_bad_input_is_one_line_with_exit_2(tmp_path):
    missing = tmp_path / "nope"
    code, _, err = run("inspect", missing)
    assert code == 2
    assert err.count("\n") == 1 and "nope" in err and "Traceback" not in err


def test_corrupt_protobuf_json_error_object(make_folder):
    folder = make_folder()
    (folder / "joiner.onnx").write_bytes(b"\x0a\xff\xff\xff\xff\x0fnot onnx")
    code, out, err = run("inspect", folder, "--json")
    assert code == 2
    error = json.loads(out)["error"]
    assert error["path"].endswith("joiner.onnx")
    assert error["fix"]
    assert err.startswith("sherpa-fixed: error:") and err.count("\n") == 1


def test_variant_filter(make_folder):
    folder = make_folder(int8=True)
    _, out, _ = run("inspect", folder, "--json", "--variant", "int8")
    assert [v["name"] for v in json.loads(out)["variants"]] == ["int8"]


def test_help_explains_exit_codes():
    code, out, _ = run("inspect", "--help")
    assert code == 0
    assert ("Exit code: 0 works as is, 1 needs fixing (or --sherpa-onnx's release will not load it from any "
            "working directory), 2 unusable input.") in " ".join(out.split())


def test_prepare_json_reports_changes_and_checks(make_folder, tmp_path):
    folder = make_folder(metadata="wrong_feat_dim")
    code, out, _ = run("prepare", folder, "--output", tmp_path / "out", "--json")
    assert code == 0
    data = json.loads(out)
    assert data["schema"] == "sherpa-fixed/prepare" and data["exit_code"] == 0
    change = next(c for c in data["changes"] if c["what"] == "feat_dim")
    assert (change["old"], change["new"]) == ("128", "80")
    # only metadata changed: proven byte for byte (issue 23), and stock sherpa-onnx loads the small set
    assert {c["kind"] for c in data["checks"]} == {"bytes", "sherpa"}
    assert all(c["ok"] for c in data["checks"])


def test_prepare_needs_a_destination(make_folder):
    code, _, err = run("prepare", make_folder())
    assert code == 2 and "--output DIR, or --in-place" in err


def test_demo_builds_prepares_and_decodes(tmp_path):
    code, out, _ = run("demo", tmp_path / "demo")
    assert code == 0
    assert "'vocab_size' does not exist in the metadata" in out
    assert "loads and decodes 1 s of audio" in out
    assert (tmp_path / "demo" / "prepared" / "encoder.weights").exists()
