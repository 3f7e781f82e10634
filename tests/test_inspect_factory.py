"""The inspector on factory models covering every failure mode it must name."""

from __future__ import annotations

import shutil
import sys

import pytest

from sherpa_fixed.decoding.sherpa_check import run_sherpa
from sherpa_fixed.errors import BadInputError
from sherpa_fixed.reading.findings import CANNOT_WORK, NEEDS_PREPARE, NEEDS_WINDOW, WORKS
from sherpa_fixed.reading.inspector import inspect_folder
from sherpa_fixed.testing import ModelSpec


def codes(report_or_variant):
    return {f.code for f in report_or_variant.findings}


def sherpa(folder, enc="encoder.onnx", **kw):
    return run_sherpa(folder / enc, folder / "decoder.onnx", folder / "joiner.onnx", folder / "tokens.txt", **kw)


def test_correct_model_works_as_is_and_really_does(make_folder):
    folder = make_folder()
    report = inspect_folder(folder)
    assert report.verdict.code == WORKS
    assert report.verdict.exit_code == 0
    assert report.variants[0].sherpa_error is None
    assert sherpa(folder).ok


@pytest.mark.parametrize("spec", [
    ModelSpec(metadata="missing"),
    ModelSpec(metadata="wrong_feat_dim"),
    ModelSpec(metadata="tdt_no_url"),
    ModelSpec(metadata="wrong_vocab"),
    ModelSpec(metadata="wrong_vocab", tdt=False),
    ModelSpec(metadata="wrong_feat_dim", feat_dim=128),
], ids=["missing", "feat_dim", "tdt_url", "vocab_tdt", "vocab_rnnt", "feat_dim_128"])
def test_predicted_sherpa_error_is_the_one_sherpa_prints(make_folder, spec):
    folder = make_folder(spec=spec)
    v = inspect_folder(folder).variants[0]
    run = sherpa(folder)
    assert not run.ok
    assert v.sherpa_error is not None
    # onnxruntime's dimension errors span lines; compare the part sherpa-onnx controls.
    assert v.sherpa_error.split(" index:")[0] in " ".join(run.stderr.split())
    if "index:" in v.sherpa_error:
        assert v.sherpa_error.split("indices ")[1] in " ".join(run.stderr.split())
    assert v.verdict.code == NEEDS_PREPARE


def test_wrong_feat_dim_names_the_measured_value(make_folder):
    v = inspect_folder(make_folder(metadata="wrong_feat_dim")).variants[0]
    audit = {a.key: a for a in v.metadata_audit}["feat_dim"]
    assert (audit.status, audit.current, audit.expected) == ("wrong", "128", "80")
    assert "audio_signal axis 1" in audit.source
    assert "index: 1 Got: 128 Expected: 80" in audit.effect


def test_tdt_without_url_is_caught_from_the_joiner_width(make_folder):
    v = inspect_folder(make_folder(metadata="tdt_no_url")).variants[0]
    audit = {a.key: a for a in v.metadata_audit}["url"]
    assert audit.status == "wrong"
    assert "tdt" in audit.expected
    assert v.measured.get("num_durations") == 5
    assert audit.effect == "vocab_size: 17 != output_size: 22"


def test_missing_normalize_type_is_a_silent_error(make_folder):
    folder = make_folder(metadata="no_normalize")
    v = inspect_folder(folder).variants[0]
    audit = {a.key: a for a in v.metadata_audit}["normalize_type"]
    assert audit.status == "missing" and audit.fatal
    assert v.sherpa_error is None  # sherpa-onnx loads it without a word...
    assert sherpa(folder).ok  # ...and decodes unnormalised features
    assert v.verdict.code == NEEDS_PREPARE


def test_declared_fixed_time_has_no_evidence_and_the_probe_frees_it(make_folder):
    folder = make_folder(time="declared", frames=800)
    v = inspect_folder(folder).variants[0]
    t = v.time_axis()
    assert (t.size, t.baked, t.evidence) == (800, None, [])
    assert v.verdict.code == NEEDS_PREPARE
    p = inspect_folder(folder, probe=True).variants[0]
    assert p.time_axis().baked is False
    assert p.probe.time_baked is False
    assert p.verdict.code == NEEDS_PREPARE


def test_baked_time_needs_the_window(make_folder):
    folder = make_folder(time="baked", batch="baked", frames=400)
    v = inspect_folder(folder, probe=True).variants[0]
    assert v.time_axis().baked is True
    assert v.probe.batch_baked is True
    assert v.verdict.code == NEEDS_WINDOW
    assert "encoder.batch_fixed" in codes(v)


def test_declared_fixed_batch_is_a_warning_not_a_blocker(make_folder):
    v = inspect_folder(make_folder(batch="declared"), probe=True).variants[0]
    assert "encoder.batch_fixed" in codes(v)
    assert v.probe.batch_baked is False
    assert v.verdict.code == WORKS


@pytest.mark.parametrize("mode, code, verdict", [
    ("single", None, WORKS),
    ("scattered", "external.scattered", NEEDS_PREPARE),
    ("absolute", "external.absolute", NEEDS_PREPARE),
    ("escaping", "external.escapes", NEEDS_PREPARE),
    ("outside", "external.outside", CANNOT_WORK),
    ("missing", "external.missing", CANNOT_WORK),
    ("truncated", "external.truncated", CANNOT_WORK),
])
def test_external_data_audit(make_folder, mode, code, verdict):
    report = inspect_folder(make_folder(external=mode))
    v = report.variants[0]
    found = {c for c, _ in v.encoder.external.problems}
    if code:
        assert code in found
    else:
        assert not found
    assert v.verdict.code == verdict


def test_scattered_weights_count_files_and_small_tensors(make_folder):
    v = inspect_folder(make_folder(external="scattered")).variants[0]
    ext = v.encoder.external
    assert len(ext.files) == len(ext.refs) > 10
    assert "external.small_tensors" in {c for c, _ in ext.problems}


def test_truncated_weights_report_sizes(make_folder):
    folder = make_folder(external="truncated")
    v = inspect_folder(folder).variants[0]
    f = v.encoder.external.files[0]
    assert f.size == (folder / "encoder.weights").stat().st_size
    assert f.bytes_needed > f.size


def test_inspect_never_opens_weight_files(make_folder):
    folder = make_folder(external="single", int8=True, int8_external="own")
    opened = []

    def hook(event, args):
        if event == "open" and isinstance(args[0], (str, bytes)) and str(args[0]).endswith(".weights"):
            opened.append(args[0])

    sys.addaudithook(hook)
    report = inspect_folder(folder)
    assert {v.name for v in report.variants} == {"fp32", "int8"}
    assert report.variants[0].encoder.external.uses_external
    assert opened == []


def test_int8_pointing_at_fp32_weights_is_flagged(make_folder):
    report = inspect_folder(make_folder(external="single", int8=True, int8_external="shared"))
    shared = [f for f in report.findings if f.code == "external.shared"]
    assert shared and any("encoder.int8.onnx" in f.message for f in shared)


def test_int8_variant_found_and_checked(make_folder):
    report = inspect_folder(make_folder(int8=True, metadata="wrong_feat_dim"))
    names = [v.name for v in report.variants]
    assert names == ["fp32", "int8"]
    int8 = report.variant("int8")
    assert int8.models["encoder"].graph.name == "encoder.int8.onnx"
    assert int8.models["decoder"].graph.name == "decoder.int8.onnx"
    assert {a.key: a.status for a in int8.metadata_audit}["feat_dim"] == "wrong"


@pytest.mark.parametrize("edit, code", [
    (lambda lines: lines[:-1], "tokens.no_blank"),
    (lambda lines: [lines[-1].replace("16", "0")] + [ln.replace(" 0", " 16") if ln.startswith("<unk>") else ln
                                                     for ln in lines[:-1]], "tokens.blank_not_last"),
    (lambda lines: [ln for i, ln in enumerate(lines) if i != 3], "tokens.gaps"),
    (lambda lines: [*lines, "extra 99 x"], "tokens.bad_line"),
])
def test_tokens_problems(make_folder, edit, code):
    folder = make_folder()
    lines = (folder / "tokens.txt").read_text().splitlines()
    (folder / "tokens.txt").write_text("\n".join(edit(lines)) + "\n")
    report = inspect_folder(folder)
    assert code in codes(report.variants[0])
    assert report.verdict.code == CANNOT_WORK


def test_tokens_from_another_model_are_caught_by_the_decoder_embedding(make_folder):
    folder = make_folder()
    other = make_folder("other", vocab_size=20)
    shutil.copy(other / "tokens.txt", folder / "tokens.txt")
    report = inspect_folder(folder)
    assert "model.mismatch" in codes(report.variants[0])
    assert report.verdict.code == CANNOT_WORK


def test_joiner_from_another_model_is_caught(make_folder):
    folder = make_folder()
    other = make_folder("other", d_model=64)
    shutil.copy(other / "joiner.onnx", folder / "joiner.onnx")
    v = inspect_folder(folder).variants[0]
    assert any("different models" in f.message for f in v.findings)
    assert v.verdict.code == CANNOT_WORK


def test_loose_files_with_odd_names_are_classified_by_signature(make_folder, tmp_path):
    folder = make_folder()
    loose = tmp_path / "loose"
    loose.mkdir()
    for src, dst in (("encoder.onnx", "a.onnx"), ("decoder.onnx", "b.onnx"), ("joiner.onnx", "c.onnx"),
                     ("tokens.txt", "my-tokens.txt")):
        shutil.copy(folder / src, loose / dst)
    report = inspect_folder([loose / "c.onnx", loose / "a.onnx", loose / "b.onnx", loose / "my-tokens.txt"])
    v = report.variants[0]
    assert {r: m.graph.name for r, m in v.models.items()} == {"encoder": "a.onnx", "decoder": "b.onnx",
                                                              "joiner": "c.onnx"}
    assert report.verdict.code == WORKS


def test_misnamed_file_is_caught(make_folder):
    folder = make_folder()
    shutil.copy(folder / "joiner.onnx", folder / "encoder.onnx")
    v = inspect_folder(folder).variants[0]
    assert "model.role" in codes(v)
    assert v.verdict.code == CANNOT_WORK


@pytest.mark.parametrize("content, words", [
    (b"", "empty"),
    (b"\x08\x07garbage\xff\xff\xff\xff", "not a readable ONNX file"),
])
def test_corrupt_encoder_is_one_clear_error(make_folder, content, words):
    folder = make_folder()
    (folder / "encoder.onnx").write_bytes(content)
    with pytest.raises(BadInputError) as exc:
        inspect_folder(folder)
    assert words in str(exc.value)
    assert "encoder.onnx" in str(exc.value)
    assert "\n" not in str(exc.value)


def test_truncated_graph_file_is_one_clear_error(make_folder):
    folder = make_folder()
    data = (folder / "encoder.onnx").read_bytes()
    (folder / "encoder.onnx").write_bytes(data[: len(data) // 2])
    with pytest.raises(BadInputError, match=r"encoder\.onnx"):
        inspect_folder(folder)


def test_missing_decoder_is_named(make_folder):
    folder = make_folder()
    (folder / "decoder.onnx").unlink()
    with pytest.raises(BadInputError, match="no decoder model found"):
        inspect_folder(folder)


def test_fused_decoder_joint_layout_is_explained(make_folder, tmp_path):
    import onnx
    from onnx import TensorProto, helper

    g = helper.make_graph(
        [helper.make_node("Identity", ["encoder_outputs"], ["outputs"])], "g",
        [helper.make_tensor_value_info("encoder_outputs", TensorProto.FLOAT, ["n", 32, "t"]),
         helper.make_tensor_value_info("targets", TensorProto.INT32, ["n", "u"]),
         helper.make_tensor_value_info("target_length", TensorProto.INT32, ["n"])],
        [helper.make_tensor_value_info("outputs", TensorProto.FLOAT, ["n", 32, "t"])])
    path = tmp_path / "decoder_joint-model.onnx"
    onnx.save(helper.make_model(g), str(path))
    folder = make_folder()
    with pytest.raises(BadInputError, match="fused decoder"):
        inspect_folder([folder / "encoder.onnx", path])


def test_channels_last_encoder_cannot_work(tmp_path, make_folder):
    import onnx

    folder = make_folder()
    m = onnx.load(str(folder / "encoder.onnx"))
    dims = m.graph.input[0].type.tensor_type.shape.dim
    dims[1].Clear()
    dims[1].dim_param = "T"
    dims[2].Clear()
    dims[2].dim_value = 80
    onnx.save(m, str(folder / "encoder.onnx"))
    v = inspect_folder(folder).variants[0]
    assert "encoder.channels_last" in codes(v)
    assert v.verdict.code == CANNOT_WORK
