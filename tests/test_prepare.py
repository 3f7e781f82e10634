"""`sherpa-fixed prepare`: stock sherpa-onnx decodes the result, outputs stay bit-identical,
a second run changes nothing, and nothing is ever half-written."""

from __future__ import annotations

import hashlib
import json
import os

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from click.testing import CliRunner

from sherpa_fixed.cli import main
from sherpa_fixed.decoding.sherpa_check import run_sherpa
from sherpa_fixed.errors import BadInputError, NeedsFixError
from sherpa_fixed.reading.inspector import inspect_folder
from sherpa_fixed.reading.metadata import PREPARED_BY_KEY
from sherpa_fixed.rewriting.prepare import prepare_folder
from sherpa_fixed.safety.atomic import LINK_MIN
from sherpa_fixed.testing import ModelSpec, write_big_model_folder

from .conftest import NEMO_VARIANTS


def snapshot(folder):
    out = {}
    for p in sorted(folder.iterdir()):
        if p.is_file():
            st = p.stat()
            out[p.name] = (hashlib.sha256(p.read_bytes()).hexdigest(), st.st_mtime_ns, st.st_size)
    return out


def sherpa(folder, enc="encoder.onnx", dec="decoder.onnx", joi="joiner.onnx", **kw):
    return run_sherpa(folder / enc, folder / dec, folder / joi, folder / "tokens.txt", **kw)


def outputs(path, role, frames=800, feat=80):
    """Outputs of a model file on fixed random inputs, with plain onnxruntime from its path."""
    so = ort.SessionOptions()
    so.intra_op_num_threads = 1
    sess = ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])
    rng = np.random.default_rng(42)
    feeds = {}
    for i in sess.get_inputs():
        shape = [d if isinstance(d, int) else 1 for d in i.shape]
        if role == "encoder" and i.name == "audio_signal":
            shape = [1, feat, frames]
        if "int" in i.type:
            feeds[i.name] = (np.full(shape, frames if role == "encoder" else 1)).astype(
                np.int64 if "int64" in i.type else np.int32)
        else:
            feeds[i.name] = rng.standard_normal(shape).astype(np.float32)
    return sess.run(None, feeds)


def assert_bit_identical(a_path, b_path, role, **kw):
    for x, y in zip(outputs(a_path, role, **kw), outputs(b_path, role, **kw), strict=True):
        assert x.dtype == y.dtype and x.shape == y.shape
        assert np.array_equal(x, y)


@pytest.mark.parametrize("name", [n for n in NEMO_VARIANTS if "static" not in n])
def test_genuine_nemo_exports_decode_after_prepare(nemo_copy, tmp_path, name):
    src, truth = nemo_copy(name)
    assert not sherpa(src).ok
    out = tmp_path / "prepared"
    result = prepare_folder(src, output=out)
    assert result.exit_code == 0, result.to_json()
    run = sherpa(out)
    assert run.ok, run.error
    meta = onnx.load(str(out / "encoder.onnx"), load_external_data=False).metadata_props
    meta = {p.key: p.value for p in meta}
    assert meta["feat_dim"] == str(truth["feat_dim"])
    assert meta["vocab_size"] == str(truth["vocab_size"])
    assert ("tdt" in meta.get("url", "")) == truth["tdt"]
    for role in ("encoder", "decoder", "joiner"):
        assert_bit_identical(src / f"{role}.onnx", out / f"{role}.onnx", role, feat=truth["feat_dim"])
    again = prepare_folder(out, in_place=True)
    assert again.nothing_to_do and again.exit_code == 0


@pytest.mark.parametrize("spec", [
    ModelSpec(metadata="wrong_feat_dim"),
    ModelSpec(metadata="missing", external="single"),
    ModelSpec(metadata="missing", external="scattered"),
    ModelSpec(metadata="tdt_no_url", int8=True, external="single", int8_external="shared"),
    ModelSpec(metadata="no_normalize", feat_dim=128, tdt=False),
    ModelSpec(external="absolute"),
], ids=["feat_dim", "no-metadata", "scattered", "int8-shared", "no-normalize", "absolute"])
def test_prepare_in_place_then_stock_sherpa_decodes_and_second_run_is_a_no_op(make_folder, spec):
    folder = make_folder(spec=spec)
    before_ok = sherpa(folder).ok
    original = make_folder("original", spec=spec)
    result = prepare_folder(folder, in_place=True)
    assert result.exit_code == 0, result.to_json()
    assert all(c.ok for c in result.checks) and result.checks
    assert sherpa(folder).ok
    if spec.int8:
        assert sherpa(folder, "encoder.int8.onnx", "decoder.int8.onnx", "joiner.int8.onnx").ok
    if spec.external != "absolute":  # the absolute original cannot load in this onnxruntime at all
        assert_bit_identical(original / "encoder.onnx", folder / "encoder.onnx", "encoder", feat=spec.feat_dim)
    report = inspect_folder(folder)
    assert report.verdict.code == "works", report.verdict.reasons
    snap = snapshot(folder)
    again = prepare_folder(folder, in_place=True)
    assert again.nothing_to_do
    assert snapshot(folder) == snap  # same bytes, same mtimes
    assert before_ok is False or spec.metadata == "no_normalize"


def test_scattered_weights_become_one_file_and_old_files_go(make_folder):
    folder = make_folder(external="scattered", metadata="missing")
    scattered = {p.name for p in folder.iterdir()} - {"encoder.onnx", "decoder.onnx", "joiner.onnx", "tokens.txt"}
    assert len(scattered) > 10
    result = prepare_folder(folder, in_place=True)
    assert result.exit_code == 0
    names = {p.name for p in folder.iterdir()}
    assert names == {"encoder.onnx", "encoder.weights", "decoder.onnx", "joiner.onnx", "tokens.txt"}
    assert set(result.removed) == scattered
    locations = {e.value for t in onnx.load(str(folder / "encoder.onnx"), load_external_data=False).graph.initializer
                 for e in t.external_data if e.key == "location"}
    assert locations == {"encoder.weights"}


def test_int8_sharing_fp32_weights_gets_its_own_file(make_folder):
    folder = make_folder(external="single", int8=True, int8_external="shared")
    prepare_folder(folder, in_place=True)
    assert (folder / "encoder.int8.weights").exists()
    (folder / "encoder.weights").rename(folder / "moved-away.weights")  # fp32 gone: int8 must not care
    assert sherpa(folder, "encoder.int8.onnx", "decoder.int8.onnx", "joiner.int8.onnx").ok


def test_metadata_only_change_leaves_the_weights_file_untouched(make_folder, tmp_path):
    folder = make_folder(external="single", metadata="wrong_feat_dim")
    before = snapshot(folder)["encoder.weights"]
    inode = (folder / "encoder.weights").stat().st_ino
    result = prepare_folder(folder, in_place=True)
    assert result.written == ["encoder.onnx"]
    assert snapshot(folder)["encoder.weights"] == before
    assert (folder / "encoder.weights").stat().st_ino == inode
    out = tmp_path / "out"
    src = make_folder("src", external="single", metadata="wrong_feat_dim")
    result = prepare_folder(src, output=out)
    # Small files are copied, so editing the output never edits the source (tokens.txt, small weights).
    assert "encoder.weights" in result.written and not result.linked
    for name in ("encoder.weights", "tokens.txt", "decoder.onnx"):
        assert (out / name).stat().st_ino != (src / name).stat().st_ino
        assert (out / name).read_bytes() == (src / name).read_bytes()


def test_big_unchanged_weights_are_hard_linked_and_reported(tmp_path):
    src = write_big_model_folder(tmp_path / "src", ModelSpec(d_model=1024, layers=2, metadata="wrong_feat_dim"),
                                 sparse=True)
    big = src / "encoder.weights"
    assert big.stat().st_size >= LINK_MIN
    result = prepare_folder(src, output=tmp_path / "out", verify="fast")
    assert result.exit_code == 0, result.checks
    assert result.linked == ["encoder.weights"]
    assert (tmp_path / "out" / "encoder.weights").stat().st_ino == big.stat().st_ino


def test_provenance_is_recorded(make_folder):
    folder = make_folder(metadata="wrong_feat_dim")
    prepare_folder(folder, in_place=True)
    meta = {p.key: p.value for p in onnx.load(str(folder / "encoder.onnx")).metadata_props}
    record = json.loads(meta[PREPARED_BY_KEY])
    assert record["version"]
    assert "feat_dim" in record["changed"]


def test_dry_run_changes_nothing_and_lists_old_and_new(make_folder):
    folder = make_folder(metadata="wrong_feat_dim", external="scattered")
    snap = snapshot(folder)
    result = CliRunner().invoke(main, ["prepare", str(folder), "--dry-run"])
    assert result.exit_code == 0
    assert "feat_dim: '128' -> '80'" in result.stdout
    assert "consolidate" in result.stdout
    assert snapshot(folder) == snap


def test_declared_fixed_time_is_freed_and_runs_at_any_length(make_folder):
    folder = make_folder(time="declared", frames=400, batch="declared")
    result = prepare_folder(folder, in_place=True)
    assert result.exit_code == 0, result.to_json()
    dims = [d.dim_param or d.dim_value for d in
            onnx.load(str(folder / "encoder.onnx")).graph.input[0].type.tensor_type.shape.dim]
    assert isinstance(dims[0], str) and dims[1] == 80 and isinstance(dims[2], str)
    assert sherpa(folder, samples=[16000 * 7, 16000 * 2]).ok  # other lengths, several streams at once


def test_baked_time_gets_metadata_fixed_but_exit_1(make_folder):
    folder = make_folder(time="baked", batch="baked", frames=400, metadata="wrong_feat_dim")
    result = prepare_folder(folder, in_place=True)
    assert result.exit_code == 1
    assert any("baked" in b for b in result.plan.blockers)
    assert [c for c in result.checks if c.kind == "sherpa" and c.ok]  # decodes exactly one window
    assert sherpa(folder, samples=[400 * 160 - 80]).ok
    assert not sherpa(folder, samples=[16000]).ok


def test_failed_verification_restores_the_original(make_folder):
    # Runs at 400 and 200 frames (what the probe tries) but its positional table caps it at 50
    # output frames, so the rewritten graph fails verification at 800 frames: a real failure.
    folder = make_folder(time="declared", frames=400, pos_emb_max_len=50)
    snap = snapshot(folder)
    result = prepare_folder(folder, in_place=True)
    assert result.exit_code == 1
    failed = [c for c in result.checks if not c.ok]
    assert failed and "800 frames" in failed[0].detail
    assert snapshot(folder) == {k: v for k, v in snap.items()}
    assert not [p for p in folder.iterdir() if p.name.startswith(".sf-")]


def test_output_folder_is_complete_and_source_untouched(make_folder, tmp_path):
    src = make_folder(metadata="missing", external="scattered", int8=True)
    (src / "bpe.vocab").write_text("▁the -1.0\n")
    (src / "README.md").write_text("model card\n")
    snap = snapshot(src)
    out = tmp_path / "out"
    result = prepare_folder(src, output=out)
    assert result.exit_code == 0
    assert snapshot(src) == snap
    assert {"bpe.vocab", "README.md", "tokens.txt", "encoder.weights"} <= {p.name for p in out.iterdir()}
    assert not any(p.name.startswith("pre_encode") for p in out.iterdir())
    with pytest.raises(BadInputError, match="not empty"):
        prepare_folder(src, output=out)
    assert prepare_folder(src, output=out, force=True).exit_code == 0


def test_inline_puts_everything_in_the_graph(make_folder):
    folder = make_folder(external="scattered", metadata="missing")
    result = prepare_folder(folder, in_place=True, inline=True)
    assert result.exit_code == 0
    assert {p.name for p in folder.iterdir()} == {"encoder.onnx", "decoder.onnx", "joiner.onnx", "tokens.txt"}
    data = (folder / "encoder.onnx").read_bytes()  # loads from memory with no folder at all
    ort.InferenceSession(data, providers=["CPUExecutionProvider"])


def test_inline_over_two_gib_is_refused_without_reading_or_writing(tmp_path):
    folder = write_big_model_folder(tmp_path / "big", ModelSpec(d_model=1024, layers=140), sparse=True)
    assert (folder / "encoder.weights").stat().st_size > 2 << 30
    snap = {p.name: p.stat().st_mtime_ns for p in folder.iterdir()}
    with pytest.raises(NeedsFixError, match="2 GiB"):
        prepare_folder(folder, in_place=True, inline=True)
    assert {p.name: p.stat().st_mtime_ns for p in folder.iterdir()} == snap


def test_real_size_1_1b_structure_gets_its_family_recipe(tmp_path):
    spec = ModelSpec(d_model=1024, layers=42, vocab_size=1024, pred_hidden=640, joint_hidden=640,
                     pos_emb_max_len=5000, metadata="missing")
    folder = write_big_model_folder(tmp_path / "m", spec, sparse=True)
    report = inspect_folder(folder)
    assert report.variants[0].recipe.family == "parakeet-tdt-1.1b"
    result = prepare_folder(folder, output=tmp_path / "out", report=report, verify="fast")
    assert result.exit_code == 0, result.to_json()
    meta = {p.key: p.value for p in onnx.load(str(tmp_path / "out" / "encoder.onnx"),
                                               load_external_data=False).metadata_props}
    assert meta["url"] == "https://huggingface.co/nvidia/parakeet-tdt-1.1b"
    assert meta["feat_dim"] == "80" and meta["vocab_size"] == "1024"
    assert meta["normalize_type"] == "per_feature"
    assert [c.kind for c in result.checks] == ["bytes"] and result.checks[0].ok
    assert "encoder.weights" in result.linked


def test_models_over_1_gib_are_byte_proven_by_default(tmp_path):
    folder = write_big_model_folder(tmp_path / "m", ModelSpec(d_model=1024, layers=70, metadata="wrong_feat_dim"),
                                    sparse=True)
    result = prepare_folder(folder, in_place=True)
    assert result.exit_code == 0
    # only metadata changed: the byte proof, and sherpa-onnx's metadata checks run on the new file
    assert [(c.kind, c.ok) for c in result.checks] == [("bytes", True), ("sherpa-metadata", True)]


def test_user_recipe_folder(make_folder, tmp_path, monkeypatch):
    recipes = tmp_path / "recipes"
    recipes.mkdir()
    (recipes / "tiny.json").write_text(json.dumps({
        "family": "tiny-test", "match": {"feat_dim": 80, "vocab_size": 16, "num_durations": 5, "encoder_dim": 32},
        "metadata": {"normalize_type": "per_feature", "url": "https://example.org/tiny-tdt", "comment": "ours"}}))
    monkeypatch.setenv("SHERPA_FIXED_RECIPES", str(recipes))
    folder = make_folder(metadata="missing")
    prepare_folder(folder, in_place=True)
    meta = {p.key: p.value for p in onnx.load(str(folder / "encoder.onnx")).metadata_props}
    assert meta["url"] == "https://example.org/tiny-tdt"
    assert meta["comment"] == "ours"


@pytest.mark.parametrize("breakage, words", [
    (lambda f: (f / "decoder.onnx").unlink(), "no decoder model found"),
    (lambda f: (f / "tokens.txt").write_text("\n".join((f / "tokens.txt").read_text().splitlines()[2:]) + "\n"),
     "cannot be prepared"),
    (lambda f: (f / "encoder.onnx").write_bytes(b"garbage"), "not a readable ONNX file"),
])
def test_bad_input_exit_2_and_nothing_changed(make_folder, breakage, words):
    folder = make_folder(metadata="missing")
    breakage(folder)
    snap = snapshot(folder)
    result = CliRunner().invoke(main, ["prepare", str(folder), "--in-place"])
    assert result.exit_code == 2
    assert words in result.stderr and result.stderr.count("\n") == 1
    assert snapshot(folder) == snap


def test_truncated_weights_exit_2(make_folder):
    folder = make_folder(external="truncated", metadata="missing")
    snap = snapshot(folder)
    result = CliRunner().invoke(main, ["prepare", str(folder), "--in-place"])
    assert result.exit_code == 2 and "truncated" in result.stderr
    assert snapshot(folder) == snap


def test_not_a_nemo_model_exit_2(make_folder, tmp_path):
    from onnx import TensorProto, helper

    folder = tmp_path / "resnet"
    folder.mkdir()
    g = helper.make_graph([helper.make_node("Relu", ["x"], ["y"])], "g",
                          [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 224, 224])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 3, 224, 224])])
    onnx.save(helper.make_model(g), str(folder / "model.onnx"))
    result = CliRunner().invoke(main, ["prepare", str(folder), "--in-place"])
    assert result.exit_code == 2 and "no encoder model found" in result.stderr


def test_folder_without_write_permission_exit_2(make_folder):
    folder = make_folder(metadata="missing")
    snap = snapshot(folder)
    import subprocess
    import sys

    code = ("import sys; from sherpa_fixed.cli import main; "
            "sys.argv = ['sherpa-fixed', 'prepare', sys.argv[1], '--in-place']; main()")
    argv = [sys.executable, "-c", code, str(folder)]
    if os.geteuid() == 0:  # root ignores permission bits unless it gives up the capabilities that do so
        argv = ["setpriv", "--bounding-set=-dac_override,-dac_read_search,-fowner", "--", *argv]
    os.chmod(folder, 0o555)
    try:
        proc = subprocess.run(argv, capture_output=True, text=True)
    finally:
        os.chmod(folder, 0o755)
    assert proc.returncode == 2, proc.stderr
    assert "permission" in proc.stderr and "Traceback" not in proc.stderr
    assert snapshot(folder) == snap


def test_prepared_external_weights_load_in_old_and_new_sherpa_via_session_dir(make_folder, old_sherpa_python,
                                                                             tmp_path):
    from .conftest import run_python

    folder = make_folder(external="scattered", metadata="missing")
    prepare_folder(folder, in_place=True)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    # New sherpa-onnx resolves relative weights against the model folder, from anywhere.
    assert sherpa(folder, cwd=elsewhere).ok
    # Old sherpa-onnx resolves them against the working directory...
    old = sherpa(folder, cwd=elsewhere, python=old_sherpa_python)
    assert not old.ok and "encoder.weights" in old.stderr
    # ...which session_model_dir() sets, under its lock, just for the session creation.
    code = r"""
import sys, os, numpy as np, sherpa_onnx
from sherpa_fixed.decoding.session_dir import session_model_dir
d = sys.argv[1]
with session_model_dir(d):
    r = sherpa_onnx.OfflineRecognizer.from_transducer(encoder=d + "/encoder.onnx", decoder=d + "/decoder.onnx",
        joiner=d + "/joiner.onnx", tokens=d + "/tokens.txt", model_type="nemo_transducer")
assert os.getcwd() == sys.argv[2]
s = r.create_stream(); s.accept_waveform(16000, np.zeros(16000, np.float32)); r.decode_stream(s)
from importlib.metadata import version; print(version("sherpa-onnx"))
"""
    proc = run_python(old_sherpa_python, code, str(folder), str(elsewhere), cwd=elsewhere)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "1.12.35"


def test_relative_paths_work(make_folder, monkeypatch):
    folder = make_folder(metadata="missing")
    monkeypatch.chdir(folder.parent)
    result = prepare_folder(folder.name, output="out-relative")
    assert result.exit_code == 0 and all(c.ok for c in result.checks), result.to_json()
    assert prepare_folder(folder.name, in_place=True).exit_code == 0


def test_a_rewritten_graph_has_its_metadata_checked_too(make_folder, tmp_path):
    """The byte proof compares graphs and tensors; the planned metadata is checked beside it, and a file
    whose metadata is not exactly the plan's fails that check."""
    from sherpa_fixed.reading.onnx_graph import load_graph
    from sherpa_fixed.reading.protos import ModelProto
    from sherpa_fixed.rewriting.proofs import _metadata_check

    folder = make_folder(external="scattered", metadata="wrong_feat_dim")
    out = tmp_path / "out"
    result = prepare_folder(folder, output=out, verify="fast")
    assert result.exit_code == 0
    checks = {c.kind: c for c in result.checks}
    assert checks["metadata"].ok and checks["bytes"].ok
    fp = next(f for f in result.plan.files if f.role == "encoder")
    new = ModelProto.FromString((out / "encoder.onnx").read_bytes())
    next(p for p in new.metadata_props if p.key == "feat_dim").value = "128"
    bad = _metadata_check(fp, new, out / "encoder.onnx")
    assert not bad.ok and "feat_dim" in bad.detail
    assert load_graph(out / "encoder.onnx").metadata["feat_dim"] == "80"
