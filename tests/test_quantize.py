"""sherpa-fixed quantize: streamed and safe; `--scheme sherpa-onnx` equal to onnxruntime's quantize_dynamic.

Equality is checked against onnxruntime itself, run here on the same files:
the whole ModelProto (nodes, initializers with their int8 bytes, scales and
zero points, value_info, opsets, metadata) must be equal once our one
metadata key is removed, on factory models in every weight layout, on the
genuine tiny NeMo exports and on the speech model. The default scheme (fast)
goes through the same streaming and safety tests; its own properties are in
tests/test_int8_scheme.py.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from click.testing import CliRunner

from sherpa_fixed.cli import main
from sherpa_fixed.errors import BadInputError
from sherpa_fixed.quantizing import protowrite, quantize_folder
from sherpa_fixed.reading.quantization import QUANTIZED_KEY, describe
from sherpa_fixed.safety.output import MARKER

from .conftest import NEMO_DIR, NEMO_VARIANTS, REPO

SHERPA = "sherpa-onnx"  # the scheme equal to onnxruntime's quantize_dynamic

SPEECH = Path(__file__).parent / "data" / "speech" / "dynamic"  # the vendored speech model (PROVENANCE.md)
ROLES = ("encoder", "decoder", "joiner")


def ort_quantize(src: Path, dst: Path, role: str, **kw) -> onnx.ModelProto:
    """onnxruntime's quantize_dynamic with sherpa-onnx's settings (its export scripts)."""
    from onnxruntime.quantization import QuantType, quantize_dynamic

    quantize_dynamic(str(src), str(dst), weight_type=QuantType.QUInt8 if role == "encoder" else QuantType.QInt8, **kw)
    return onnx.load(str(dst))


def without_our_key(path: Path) -> onnx.ModelProto:
    m = onnx.load(str(path))
    keep = [p for p in m.metadata_props if p.key != QUANTIZED_KEY]
    assert len(keep) == len(m.metadata_props) - 1, "sherpa-fixed's metadata record is missing"
    del m.metadata_props[:]
    m.metadata_props.extend(keep)
    return m


def first_difference(a: onnx.ModelProto, b: onnx.ModelProto) -> str:
    ga, gb = a.graph, b.graph
    for i, (x, y) in enumerate(zip(ga.node, gb.node, strict=False)):
        if x != y:
            return f"node {i}: {x.op_type} {x.name!r} vs {y.op_type} {y.name!r}"
    if len(ga.node) != len(gb.node):
        return f"{len(ga.node)} vs {len(gb.node)} nodes"
    for x, y in zip(ga.initializer, gb.initializer, strict=False):
        if x != y:
            return f"initializer {x.name!r} vs {y.name!r}"
    return "graph-level fields or metadata differ"


def assert_equal_to_ort(ours: Path, theirs: onnx.ModelProto) -> None:
    mine = without_our_key(ours)
    assert mine == theirs, first_difference(mine, theirs)


def check_folder(src: Path, out: Path, tmp: Path, **kw) -> None:
    """Our int8 set from src equals onnxruntime's, role by role."""
    ort_kw = {}
    if kw.get("per_channel"):
        ort_kw["per_channel"] = True
    for role in ROLES:
        theirs = ort_quantize(src / f"{role}.onnx", tmp / f"ort-{role}.int8.onnx", role, **ort_kw)
        assert_equal_to_ort(out / f"{role}.int8.onnx", theirs)


@pytest.mark.parametrize("external", ["none", "single", "scattered"])
def test_factory_models_equal_onnxruntime(make_folder, tmp_path, external):
    src = make_folder("m", external=external, d_model=48, layers=2, attention_heads=2)
    result = quantize_folder(src, output=tmp_path / "q", scheme=SHERPA)
    assert result.exit_code == 0
    assert sorted(result.written) == [f"{r}.int8.onnx" for r in sorted(ROLES)] + ["tokens.txt"]
    check_folder(src, tmp_path / "q", tmp_path)


@pytest.mark.parametrize("variant", [v for v in NEMO_VARIANTS if "static" not in v])
def test_genuine_nemo_exports_equal_onnxruntime(nemo_copy, tmp_path, variant):
    src, _ = nemo_copy(variant)
    quantize_folder(src, output=tmp_path / "q", scheme=SHERPA)
    check_folder(src, tmp_path / "q", tmp_path)


def test_genuine_export_as_torch_writes_it_over_2gib(nemo_copy, tmp_path):
    """One external file per tensor, and the positional table's Constant NODE value stored externally."""
    src, _ = nemo_copy("tdt-80")
    m = onnx.load(str(src / "encoder.onnx"))
    onnx.save(m, str(src / "encoder.onnx"), save_as_external_data=True, all_tensors_to_one_file=False,
              size_threshold=0, convert_attribute=True)
    assert any(t.data_location == onnx.TensorProto.EXTERNAL for n in onnx.load(str(src / "encoder.onnx"),
               load_external_data=False).graph.node for a in n.attribute for t in [a.t] if a.HasField("t"))
    quantize_folder(src, output=tmp_path / "q", scheme=SHERPA)
    check_folder(src, tmp_path / "q", tmp_path)
    # The fast scheme reads (and transposes) the per-tensor pointwise weights from this layout too.
    quantize_folder(src, output=tmp_path / "fast")
    feed = {"audio_signal": np.random.default_rng(0).standard_normal((1, 80, 300)).astype(np.float32),
            "length": np.array([300], dtype=np.int64)}
    want = ort.InferenceSession(str(NEMO_DIR / "tdt-80" / "encoder.onnx")).run(None, feed)[0]  # the same model
    got = ort.InferenceSession(str(tmp_path / "fast" / "encoder.int8.onnx")).run(None, feed)[0]
    assert np.sqrt(np.mean((got - want) ** 2) / np.mean(want ** 2)) < 0.05


def test_speech_model_equal_onnxruntime_and_decodes_the_same(tmp_path):
    quantize_folder(SPEECH, output=tmp_path / "q", scheme=SHERPA)
    check_folder(SPEECH, tmp_path / "q", tmp_path)
    meta = {p.key: p.value for p in onnx.load(str(tmp_path / "q" / "encoder.int8.onnx")).metadata_props}
    fp32 = {p.key: p.value for p in onnx.load(str(SPEECH / "encoder.onnx")).metadata_props}
    assert {k: meta[k] for k in fp32} == fp32, "encoder metadata not carried over"


def test_per_channel_and_exclude_equal_onnxruntime(nemo_copy, tmp_path):
    src, _ = nemo_copy("tdt-80")
    names = [n.name for n in onnx.load(str(src / "encoder.onnx")).graph.node]
    pre = [n for n in names if n.startswith("/pre_encode/")]
    assert pre
    quantize_folder(src, output=tmp_path / "q", per_channel=True, exclude=["encoder:/pre_encode/*"], scheme=SHERPA)
    theirs = ort_quantize(src / "encoder.onnx", tmp_path / "ort.onnx", "encoder", per_channel=True,
                          nodes_to_exclude=pre)
    assert_equal_to_ort(tmp_path / "q" / "encoder.int8.onnx", theirs)
    ops = [n.op_type for n in theirs.graph.node if n.name.startswith("/pre_encode/")]
    assert "Conv" in ops and "ConvInteger" not in ops


def test_exclude_a_whole_model_keeps_it_float(nemo_copy, tmp_path):
    src, _ = nemo_copy("tdt-80")
    r = quantize_folder(src, output=tmp_path / "q", exclude=["joiner:*"])
    joiner = onnx.load(str(tmp_path / "q" / "joiner.int8.onnx"))
    assert not any(n.op_type == "MatMulInteger" for n in joiner.graph.node)
    assert next(f for f in r.files if f["role"] == "joiner")["weights_quantized"] == 0
    enc = onnx.load(str(tmp_path / "q" / "encoder.int8.onnx"))
    assert any(n.op_type == "MatMulInteger" for n in enc.graph.node)


def test_exclude_refuses_an_unknown_model_name_or_a_pattern_that_matches_nothing(nemo_copy, tmp_path):
    src, _ = nemo_copy("tdt-80")
    with pytest.raises(BadInputError, match="not a model"):
        quantize_folder(src, output=tmp_path / "q", exclude=["encodr:*"])
    with pytest.raises(BadInputError, match="matches no node") as e:
        quantize_folder(src, output=tmp_path / "q", exclude=["encoder:pre_encode"])
    assert "/pre_encode/out/MatMul" in e.value.one_line()
    assert not (tmp_path / "q").exists()


def test_over_2gib_keeps_external_weights_that_run_the_same(nemo_copy, tmp_path, monkeypatch):
    """Forced by a lower limit: the large tensors go to encoder.int8.weights, and the graph runs the same."""
    src, _ = nemo_copy("tdt-80")
    quantize_folder(src, output=tmp_path / "whole")
    monkeypatch.setattr(protowrite, "PROTOBUF_LIMIT", 200_000)
    r = quantize_folder(src, output=tmp_path / "split")
    enc = next(f for f in r.files if f["role"] == "encoder")
    assert enc["files"] == ["encoder.int8.onnx", "encoder.int8.weights"]
    g = onnx.load(str(tmp_path / "split" / "encoder.int8.onnx"), load_external_data=False)
    locs = {e.value for t in g.graph.initializer for e in t.external_data if e.key == "location"}
    assert locs == {"encoder.int8.weights"}
    feed = {"audio_signal": np.random.default_rng(0).standard_normal((1, 80, 200)).astype(np.float32),
            "length": np.array([200], dtype=np.int64)}
    a = ort.InferenceSession(str(tmp_path / "whole" / "encoder.int8.onnx")).run(None, feed)
    b = ort.InferenceSession(str(tmp_path / "split" / "encoder.int8.onnx")).run(None, feed)
    np.testing.assert_array_equal(a[0], b[0])


def test_in_place_adds_beside_and_needs_force_to_replace(nemo_copy, tmp_path):
    src, _ = nemo_copy("rnnt-80")
    before = sorted(p.name for p in src.iterdir())
    quantize_folder(src, in_place=True)
    after = sorted(p.name for p in src.iterdir())
    assert sorted(set(after) - set(before)) == sorted(f"{r}.int8.onnx" for r in ROLES)
    stamp = (src / "encoder.int8.onnx").stat().st_mtime_ns
    with pytest.raises(BadInputError, match="already exists"):
        quantize_folder(src, in_place=True)
    assert (src / "encoder.int8.onnx").stat().st_mtime_ns == stamp
    quantize_folder(src, in_place=True, force=True, per_channel=True)
    assert describe(onnx.load(str(src / "encoder.int8.onnx")))["by"]["per_channel"] is True
    assert not [p for p in src.iterdir() if p.name.startswith(".sf-")]


def test_output_is_an_int8_release_layout(nemo_copy, tmp_path):
    src, _ = nemo_copy("tdt-80")
    r = quantize_folder(src, output=tmp_path / "q")
    assert sorted(p.name for p in (tmp_path / "q").iterdir()) == sorted(
        [f"{x}.int8.onnx" for x in ROLES] + ["tokens.txt", MARKER])
    # tokens.txt is a copy, not a hard link: editing the output never edits the source (issue 20)
    assert r.linked == [] and "tokens.txt" in r.written
    assert (tmp_path / "q" / "tokens.txt").stat().st_ino != (src / "tokens.txt").stat().st_ino
    before = (src / "tokens.txt").read_bytes()
    with open(tmp_path / "q" / "tokens.txt", "a") as f:
        f.write("edited 9999\n")
    assert (src / "tokens.txt").read_bytes() == before
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".sf-")]


# ----------------------------------------------------------------------------- bad input


def _nothing_written(tmp_path: Path, out: Path) -> None:
    assert not out.exists()
    assert not [p for p in tmp_path.rglob(".sf-*")]


def test_int8_only_folder_is_refused(make_folder, tmp_path):
    src = make_folder("m", int8=True)
    for r in ROLES:
        (src / f"{r}.onnx").unlink()
    with pytest.raises(BadInputError, match="no fp32 encoder") as e:
        quantize_folder(src, output=tmp_path / "q")
    assert e.value.exit_code == 2 and "int8 set" in e.value.one_line()
    _nothing_written(tmp_path, tmp_path / "q")


def test_already_quantized_input_is_refused(make_folder, tmp_path):
    src = make_folder("m", int8=True)
    for r in ROLES:
        os.replace(src / f"{r}.int8.onnx", src / f"{r}.onnx")
    with pytest.raises(BadInputError, match="already quantized"):
        quantize_folder(src, output=tmp_path / "q")
    _nothing_written(tmp_path, tmp_path / "q")


def test_corrupt_protobuf_is_refused(make_folder, tmp_path):
    src = make_folder("m")
    data = (src / "encoder.onnx").read_bytes()
    (src / "encoder.onnx").write_bytes(data[: len(data) // 2] + b"\xff" * 64)
    with pytest.raises(BadInputError) as e:
        quantize_folder(src, output=tmp_path / "q")
    assert "encoder.onnx" in e.value.one_line()
    _nothing_written(tmp_path, tmp_path / "q")


def test_truncated_weights_are_refused_before_writing(make_folder, tmp_path):
    src = make_folder("m", external="truncated")
    with pytest.raises(BadInputError, match="truncated"):
        quantize_folder(src, output=tmp_path / "q")
    _nothing_written(tmp_path, tmp_path / "q")


def test_weights_truncated_after_planning_leave_nothing(make_folder, tmp_path, monkeypatch):
    """A weights file that shrinks while we run (or lies) fails mid-way: the staging folder goes away."""
    src = make_folder("m", external="single", d_model=48)
    from sherpa_fixed.quantizing import folder as qfolder

    real = qfolder._fp32_set

    def then_truncate(source):
        graphs = real(source)
        w = source / "encoder.weights"
        os.truncate(w, w.stat().st_size // 2)
        return graphs

    monkeypatch.setattr(qfolder, "_fp32_set", then_truncate)
    with pytest.raises(BadInputError, match=r"truncated|ends before"):
        quantize_folder(src, output=tmp_path / "q")
    _nothing_written(tmp_path, tmp_path / "q")


def test_weights_outside_the_folder_are_never_read(make_folder, tmp_path):
    src = make_folder("m", external="outside")
    with pytest.raises(BadInputError, match="outside"):
        quantize_folder(src, output=tmp_path / "q")
    _nothing_written(tmp_path, tmp_path / "q")


# ----------------------------------------------------------------------------- CLI, inspect, prepare, memory


def test_cli_json_and_exit_codes(nemo_copy, tmp_path):
    src, _ = nemo_copy("tdt-80")
    runner = CliRunner()
    res = runner.invoke(main, ["quantize", str(src), "-o", str(tmp_path / "q"), "--json"])
    assert res.exit_code == 0, res.output
    doc = json.loads(res.output)
    assert doc["schema"] == "sherpa-fixed/quantize" and doc["scheme"]["weight_type"]["encoder"] == "QInt8"
    assert doc["scheme"]["name"] == "fast"
    assert [f["output"] for f in doc["files"]] == [f"{r}.int8.onnx" for r in ROLES]
    res = runner.invoke(main, ["quantize", str(src)])
    assert res.exit_code == 2 and "--in-place" in res.output
    res = runner.invoke(main, ["quantize", str(tmp_path / "q"), "-o", str(tmp_path / "again"), "--json"])
    assert res.exit_code == 2 and '"error"' in res.output and "no fp32 encoder" in res.output


def test_inspect_reports_how_it_was_quantized(nemo_copy, tmp_path):
    from sherpa_fixed.reading.inspector import inspect_folder

    src, _ = nemo_copy("tdt-80")
    quantize_folder(src, in_place=True, exclude=["encoder:/pre_encode/*"])
    doc = inspect_folder(src).to_json()
    int8 = next(v for v in doc["variants"] if v["name"] == "int8")
    q = int8["models"]["encoder"]["quantization"]
    assert q["by"]["weight_type"] == "QInt8" and q["by"]["excluded_nodes"] > 0 and q["int8_scheme"] == "fast"
    assert q["operators"]["MatMulInteger"] > 0 and sum(q["weights"].values()) == q["by"]["weights_quantized"]
    assert q["weights"]["uint8"] == q["by"]["uint8_weights"] > 0  # attention v/out: full 8-bit, exact everywhere
    assert q["exact_on_every_cpu"] is True
    fp32 = next(v for v in doc["variants"] if v["name"] == "fp32")
    assert fp32["models"]["encoder"]["quantization"] is None


def test_prepare_and_quantize_take_each_others_output(nemo_copy, tmp_path):
    from sherpa_fixed.rewriting.prepare import prepare_folder

    src, _ = nemo_copy("tdt-80")  # a raw export: prepare adds the metadata sherpa-onnx needs
    prepared = prepare_folder(src, output=tmp_path / "prepared", verify="fast")
    assert prepared.exit_code == 0
    quantize_folder(tmp_path / "prepared", in_place=True, scheme=SHERPA)
    check_folder(tmp_path / "prepared", tmp_path / "prepared", tmp_path)
    raw_q = quantize_folder(src, output=tmp_path / "rawq")
    assert raw_q.exit_code == 0
    again = prepare_folder(tmp_path / "rawq", output=tmp_path / "rawq-prepared", verify="full")
    assert again.exit_code == 0, again.to_json()
    assert any(c.kind == "sherpa" and c.ok for c in again.checks)


def test_memory_stays_bounded_by_one_tensor(make_folder, tmp_path):
    """A model with 200 MB of external fp32 weights quantizes with far less extra memory than that."""
    src = make_folder("big", external="single", d_model=1024, layers=10)
    weights = (src / "encoder.weights").stat().st_size
    assert weights > 150e6
    code = ("import resource, sys; from sherpa_fixed.quantizing import quantize_folder; "
            "import onnxruntime.quantization, onnx; "
            "base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss; "
            f"quantize_folder({str(src)!r}, output={str(tmp_path / 'q')!r}); "
            "print(base, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    base_kb, peak_kb = map(int, out.split())
    grew = (peak_kb - base_kb) * 1024
    assert grew < weights / 4, f"peak grew by {grew / 1e6:.0f} MB for {weights / 1e6:.0f} MB of weights"
    assert (tmp_path / "q" / "encoder.int8.onnx").stat().st_size > weights / 4 * 0.9


def test_stock_sherpa_onnx_decodes_the_result(nemo_copy, tmp_path):
    from sherpa_fixed.decoding.sherpa_check import run_sherpa
    from sherpa_fixed.rewriting.prepare import prepare_folder

    src, _ = nemo_copy("tdt-80")
    prepare_folder(src, in_place=True, verify="off")
    quantize_folder(src, output=tmp_path / "q")
    q = (tmp_path / "q").resolve()
    run = run_sherpa(q / "encoder.int8.onnx", q / "decoder.int8.onnx", q / "joiner.int8.onnx", q / "tokens.txt",
                     samples=[16000 * 3], cwd=q)
    assert run.ok, run.error
    shutil.rmtree(tmp_path / "q")


def test_disk_full_mid_run_is_one_line_and_changes_nothing(make_folder, tmp_path):
    """A real tmpfs that runs out of inodes after the encoder: exit 2, 'disk full', the folder as it was."""
    from .test_prepare_disk import CHILD, unshare_prefix

    child = CHILD.replace('"prepare", dst, "--in-place"', '"quantize", dst, "--in-place"')
    assert child != CHILD
    folder = make_folder(external="single")
    files = len(list(folder.iterdir()))
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    env = dict(os.environ, PYTHONPATH=str(REPO))
    proc = subprocess.run([*unshare_prefix(), sys.executable, "-c", child, str(folder), str(mnt),
                           f"size=128m,nr_inodes={files + 4}"], capture_output=True, text=True, env=env)
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    assert out["rc"] == 2, out
    assert "disk full" in out["stderr"] and out["stderr"].count("\n") == 1, out["stderr"]
    assert out["same"]
    assert not [n for n in out["after"] if n.startswith(".sf-")]


def test_windowed_encoder_is_refused_with_the_order_that_works(tmp_path):
    """prepare --window puts the layers in a Loop, where quantize_dynamic quantizes nothing; the other order works."""
    from sherpa_fixed.rewriting.prepare import prepare_folder

    static = NEMO_DIR / "tdt-80-static800"
    prepare_folder(static, output=tmp_path / "win", window=True, verify="off")
    with pytest.raises(BadInputError, match="Loop") as e:
        quantize_folder(tmp_path / "win", output=tmp_path / "q")
    assert "prepare INT8_DIR --window" in e.value.one_line()
    assert not (tmp_path / "q").exists()
    quantize_folder(static, output=tmp_path / "q")
    r = prepare_folder(tmp_path / "q", output=tmp_path / "qwin", window=True)
    assert r.exit_code == 0 and all(c.ok for c in r.checks) and r.checks


def test_file_is_onnxruntimes_bytes_then_our_metadata_entry(nemo_copy, tmp_path):
    """Byte identity, the form the 1.1B benchmark checks by streaming: onnxruntime's file is a prefix of ours."""
    src, _ = nemo_copy("tdt-128")
    quantize_folder(src, output=tmp_path / "q", scheme=SHERPA)
    for role in ROLES:
        ort_quantize(src / f"{role}.onnx", tmp_path / f"ort-{role}.onnx", role)
        theirs = (tmp_path / f"ort-{role}.onnx").read_bytes()
        ours = (tmp_path / "q" / f"{role}.int8.onnx").read_bytes()
        assert ours[: len(theirs)] == theirs
        tail = onnx.ModelProto.FromString(ours[len(theirs):])
        assert [f.name for f, _ in tail.ListFields()] == ["metadata_props"]
        assert [p.key for p in tail.metadata_props] == [QUANTIZED_KEY]
