"""`sherpa-fixed validate`: structure against the 0.6B reference, and sherpa-onnx against the baseline."""

from __future__ import annotations

import json

import numpy as np
import pytest
from click.testing import CliRunner

from sherpa_fixed.checking.baseline import TIE_TOLERANCE, Baseline
from sherpa_fixed.checking.reference import BREAKING, EXPECTED, FIXABLE, compare_folder, load_reference
from sherpa_fixed.checking.validate import generated_audio, validate_folder
from sherpa_fixed.cli import main
from sherpa_fixed.decoding.audio import resample, write_wav
from sherpa_fixed.decoding.sherpa_check import run_recognizer
from sherpa_fixed.rewriting.prepare import prepare_folder
from sherpa_fixed.testing import ModelSpec

from .conftest import OLD_SHERPA, REPO


def run(*args):
    r = CliRunner().invoke(main, list(map(str, args)))
    return r.exit_code, r.stdout, r.stderr


def categories(report, key="fp32"):
    return {d.category for d in report.differences[key]}


def test_wrong_feat_dim_fails_with_the_reason_and_passes_after_prepare(make_folder):
    folder = make_folder(metadata="wrong_feat_dim")
    code, out, _ = run("validate", folder)
    assert code == 1
    assert "feat_dim" in out and "index: 1 Got: 128 Expected: 80" in out
    assert "sherpa-onnx refused the model" in out
    assert prepare_folder(folder, in_place=True).exit_code == 0
    code, out, _ = run("validate", folder)
    assert code == 0, out
    assert ("agree on all" in out or "is the Python baseline's best choice" in out), out
    assert out.strip().endswith("decodes like the baseline")


@pytest.mark.parametrize("name", ["tdt-80", "rnnt-80", "tdt-128"])
def test_genuine_nemo_exports_agree_token_for_token(nemo_copy, tmp_path, name):
    src, truth = nemo_copy(name)
    folder = tmp_path / "prepared"
    prepare_folder(src, output=folder)
    report = validate_folder(folder)
    assert report.valid, report.to_json()
    d = report.decodes[0]
    assert d.agree and d.tokens > 100 and d.divergence is None
    assert all(t["margin"] <= TIE_TOLERANCE for t in d.ties)
    kinds = {x.what for x in report.differences["fp32"] if x.category == EXPECTED}
    assert any("features" in k for k in kinds) == (truth["feat_dim"] != 128)


def test_static_export_windowed_decodes_agree_but_layout_is_breaking(nemo_copy, tmp_path):
    src, _ = nemo_copy("tdt-80-static800")
    folder = tmp_path / "prepared"
    prepare_folder(src, output=folder)
    audio = tmp_path / "long.wav"
    rng = np.random.default_rng(0)
    write_wav(audio, rng.standard_normal(16000 * 21) * 0.1, 16000)
    report = validate_folder(folder, audio=audio)
    d = report.decodes[0]
    assert d.agree and d.windows >= 3
    assert BREAKING in categories(report)
    assert any("baked" in x.why for x in report.differences["fp32"])
    assert report.exit_code == 1


@pytest.mark.parametrize("spec", [ModelSpec(int8=True), ModelSpec(tdt=False, int8=True)], ids=["tdt", "rnnt"])
def test_factory_models_fp32_and_int8_agree(make_folder, spec):
    folder = make_folder(spec=spec)
    report = validate_folder(folder)
    assert [d.variant for d in report.decodes] == ["fp32", "int8"]
    assert all(d.agree for d in report.decodes), [d.to_json() for d in report.decodes]


def test_long_audio_windowed_on_a_dynamic_model_agrees(make_folder, tmp_path):
    folder = make_folder(tdt=False)
    audio = tmp_path / "a.wav"
    x = np.concatenate([generated_audio()] * 4)  # ~75 s: windowed by both, 30 s windows
    write_wav(audio, resample(x, 16000, 44100), 44100)
    report = validate_folder(folder, audio=audio)
    assert report.decodes[0].windows >= 3 and report.decodes[0].agree


def test_a_real_disagreement_is_reported_with_its_place(make_folder, tmp_path):
    folder = make_folder()
    samples = generated_audio()
    path = tmp_path / "a.npy"
    np.save(path, samples)
    result, error = run_recognizer(folder / "encoder.onnx", folder / "decoder.onnx", folder / "joiner.onnx",
                                   folder / "tokens.txt", path)
    assert error is None
    base = Baseline(folder / "encoder.onnx", folder / "decoder.onnx", folder / "joiner.onnx", folder / "tokens.txt")
    assert base.decode(samples, guide=result)["divergence"] is None
    # Now say sherpa-onnx had emitted, at position 40, a token it never emits here.
    forged = dict(result, tokens=list(result["tokens"]))
    forged["tokens"][40] = next(t for t in base.table.values() if t not in set(result["tokens"]) | {"<blk>", "<unk>"})
    div = base.decode(samples, guide=forged)["divergence"]
    assert div is not None and div["index"] == 40 and div["kind"] == "token"
    assert div["margin"] > TIE_TOLERANCE
    # Or had stamped every token ten frames later than where it was emitted: beyond FRAME_SLACK.
    moved = dict(result, timestamps=[t + 10 * 0.08 for t in result["timestamps"]])
    assert base.decode(samples, guide=moved)["divergence"] is not None


@pytest.mark.parametrize("tdt", [True, False], ids=["tdt", "rnnt"])
def test_baseline_follows_sherpa_1x_greedy_rules_exactly(make_folder, old_sherpa_python, tmp_path, monkeypatch, tdt):
    """sherpa-onnx 1.12.35's greedy search is the one whose source the baseline follows: exact, no slack."""
    folder = make_folder(tdt=tdt)
    samples = generated_audio()
    path = tmp_path / "a.npy"
    np.save(path, samples)
    monkeypatch.setenv("PYTHONPATH", str(REPO))
    files = [folder / f for f in ("encoder.onnx", "decoder.onnx", "joiner.onnx", "tokens.txt")]
    result, error = run_recognizer(*files, path, python=old_sherpa_python)
    assert error is None and result["version"] == OLD_SHERPA
    out = Baseline(*files).decode(samples, guide=result)
    assert out["agreement"] == ["exact"] and not out["ties"] and not out["shifted"]
    assert out["tokens"] == result["tokens"] and len(result["tokens"]) > 100


def test_json_report(make_folder):
    code, out, _ = run("validate", make_folder(), "--json")
    data = json.loads(out)
    assert code == 0 and data["valid"] and data["schema"] == "sherpa-fixed/validate"
    assert data["decodes"][0]["agree"] and data["decodes"][0]["tie_tolerance"] == TIE_TOLERANCE
    assert {d["category"] for ds in data["differences"].values() for d in ds} <= {EXPECTED}


def test_bad_input(tmp_path, make_folder):
    assert run("validate", tmp_path / "missing")[0] == 2
    code, _, err = run("validate", make_folder(), "--provider", "cuda")
    assert code == 2 and "CUDAExecutionProvider" in err
    code, _, err = run("validate", make_folder(), "--reference", "no-such-model")
    assert code == 2 and "parakeet-tdt-0.6b" in err


def test_reference_classifies_differences(make_folder):
    from sherpa_fixed.reading.inspector import inspect_folder

    ref = load_reference("parakeet-tdt-0.6b")
    assert ref["models"]["encoder"]["inputs"][0]["dims"][1] == 128
    diffs = compare_folder(inspect_folder(make_folder(external="scattered", metadata="missing")), ref)["fp32"]
    assert {d.category for d in diffs} == {EXPECTED, FIXABLE}
    assert any(d.area == "metadata" and "vocab_size" in d.what and d.category == FIXABLE for d in diffs)
    diffs = compare_folder(inspect_folder(make_folder("b", time="baked", batch="baked")), ref)["fp32"]
    assert any(d.category == BREAKING and "time" in d.what for d in diffs)
    diffs = compare_folder(inspect_folder(make_folder("c", time="declared")), ref)["fp32"]
    assert any(d.category == FIXABLE and "time" in d.what for d in diffs)
