"""`sherpa-fixed validate`: structure against the 0.6B reference, and sherpa-onnx against the baseline."""

from __future__ import annotations

import json

import numpy as np
import pytest
from click.testing import CliRunner

from sherpa_fixed.checking.baseline import TIE_TOLERANCE, Baseline
from sherpa_fixed.checking.reference import (
    BREAKING,
    EXPECTED,
    FIXABLE,
    choose_layout,
    compare_folder,
    load_reference,
)
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
    x = np.concatenate([generated_audio()] * 6)  # ~112 s, past the 90 s one-pass limit: 30 s windows
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


# ----------------------------------------------------------------------------- release layouts (issue 12)


def _drop(folder, *names):
    for n in names:
        (folder / n).unlink()
    return folder


FP32 = ("encoder.onnx", "decoder.onnx", "joiner.onnx")


@pytest.mark.parametrize("int8_external", ["none", "own"], ids=["0.6b-int8", "1.1b-int8-external"])
def test_int8_only_release_is_valid(make_folder, int8_external):
    """sherpa-onnx's int8 releases ship only the int8 set and tokens.txt: nothing is missing from them."""
    folder = _drop(make_folder(int8=True, int8_external=int8_external), *FP32)
    code, out, _ = run("validate", folder, "--json")
    data = json.loads(out)
    assert code == 0 and data["valid"] and data["layout"] == "int8-only", out
    assert [d["variant"] for d in data["decodes"]] == ["int8"]
    assert not any(d["what"].endswith(".onnx") and d["found"] == "missing" for d in data["differences"]["folder"])
    code, text, _ = run("validate", folder)
    assert code == 0 and "int8-only layout" in text and "breaking" not in text


def test_fp32_and_int8_layouts_are_told_apart(make_folder):
    from sherpa_fixed.reading.inspector import inspect_folder

    ref = load_reference("parakeet-tdt-0.6b")
    both = make_folder("both", int8=True)
    fp32 = make_folder("fp32")
    for folder in (both, fp32):
        report = inspect_folder(folder)
        assert choose_layout(report, ref)["name"] == "fp32+int8"
        diffs = compare_folder(report, ref)["folder"]
        assert not [d for d in diffs if d.category == BREAKING], diffs
        assert ({d.what for d in diffs if d.area == "files"} >= {"encoder.int8.onnx"}) == (folder == fp32)
    # an int8 set that borrows the fp32 joiner: complete, so not breaking, and said so
    mixed = _drop(make_folder("mixed", int8=True), "encoder.onnx", "decoder.onnx", "joiner.int8.onnx")
    diffs = compare_folder(inspect_folder(mixed), ref)["folder"]
    twin = [d for d in diffs if d.what == "joiner.int8.onnx"]
    assert len(twin) == 1 and twin[0].category == EXPECTED and "joiner.onnx" in twin[0].why
    # an fp32 set with no fp32 decoder at all borrows the int8 one the same way
    borrowed = _drop(make_folder("borrowed", int8=True), "decoder.onnx")
    diffs = compare_folder(inspect_folder(borrowed), ref)["folder"]
    assert [d.category for d in diffs if d.what == "decoder.onnx"] == [EXPECTED]


def test_incomplete_int8_release_is_refused_in_one_line(make_folder):
    folder = _drop(make_folder(int8=True), *FP32, "joiner.int8.onnx")
    code, out, err = run("validate", folder)
    assert code == 2 and err.count("\n") == 1 and "no joiner model found" in err and out == ""


def test_layouts_are_in_the_reference():
    ref = load_reference("parakeet-tdt-0.6b")
    assert [x["name"] for x in ref["layouts"]] == ["fp32+int8", "int8-only"]
    assert ref["layouts"][1]["variants"] == {"int8": True}


# ----------------------------------------------------------------------------- honest messages (issue 11)


def test_batch_is_fixable_only_when_prepare_frees_it(make_folder):
    """Every 'fixable' difference is gone after prepare, and every 'breaking' one is still there."""
    for name, spec in (("declared", dict(time="declared", batch="declared", frames=400)),
                       ("baked", dict(time="baked", batch="baked", frames=400)),
                       ("meta", dict(metadata="missing", external="scattered"))):
        folder = make_folder(name, **spec)
        before = validate_folder(folder).differences["fp32"]
        batch = [d for d in before if "(batch)" in d.what]
        assert batch or name == "meta"
        assert {d.category for d in batch} <= ({FIXABLE} if name == "declared" else {BREAKING})
        prepared = folder.parent / (name + "-prepared")
        prepare_folder(folder, output=prepared)
        after = validate_folder(prepared).differences["fp32"]
        assert not [d for d in after if d.category == FIXABLE], after
        kept = {d.what for d in after if d.category == BREAKING}
        assert {d.what for d in before if d.category == BREAKING} <= kept


def test_no_decode_is_not_called_a_disagreement(make_folder):
    folder = make_folder(metadata="wrong_feat_dim")  # sherpa-onnx refuses it; prepare fixes it
    code, out, _ = run("validate", folder)
    assert code == 1
    assert "do not agree" not in out and "sherpa-onnx refused the fp32 model set" in out
    assert f"run: sherpa-fixed prepare {folder} --output {folder}-prepared" in out


@pytest.mark.parametrize("problem", ["tokens", "truncated"])
def test_unusable_folder_exits_2_with_advice(make_folder, problem):
    folder = make_folder(external="truncated" if problem == "truncated" else "none")
    if problem == "tokens":
        (folder / "tokens.txt").write_text((folder / "tokens.txt").read_text().replace("<blk>", "<b>"))
    code, out, err = run("validate", folder)
    assert code == 2, out + err  # validate --help: 2 unusable input
    assert "not decoded" in out and "do not agree" not in out and "sherpa-fixed prepare" not in out
    assert ("tokens.txt" if problem == "tokens" else "re-download") in out.splitlines()[-1]
    data = json.loads(run("validate", folder, "--json")[1])
    assert data["exit_code"] == 2 and data["unusable"] and data["decodes"][0]["skipped"]


@pytest.mark.parametrize("content", ["<unk> 0\n<blk> 1\n", "[1, 2]", '{"name": "x"}', '{"name": "x", "files": [], '
                                     '"models": {"encoder": {"inputs": [], "outputs": [{}]}}}'])
def test_a_reference_that_is_not_a_layout_is_one_line(make_folder, tmp_path, content):
    ref = tmp_path / "ref.txt"
    ref.write_text(content)
    code, out, err = run("validate", make_folder(), "--reference", ref)
    assert code == 2 and out == "" and err.count("\n") == 1, err
    assert "not a reference layout" in err and "parakeet-tdt-0.6b" in err and "internal error" not in err


def test_audio_too_short_or_without_tokens(make_folder, tmp_path):
    folder = make_folder()
    tiny, short = tmp_path / "tiny.wav", tmp_path / "short.wav"
    write_wav(tiny, np.full(50, 0.3), 16000)  # under one feature frame: was an internal error (exit 3)
    write_wav(short, np.random.default_rng(1).standard_normal(400) * 0.3, 16000)
    code, out, err = run("validate", folder, "--audio", tiny)
    assert code == 2 and out == "" and "too short to decode" in err
    code, out, _ = run("validate", folder, "--audio", short)  # 25 ms of noise: this model emits nothing
    assert code == 0 and "both emitted no token" in out and "proves little" in out and "all 0 tokens" not in out
