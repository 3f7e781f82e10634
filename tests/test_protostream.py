"""Self-contained ONNX files read as a skeleton and rewritten streaming (issue 12).

The models here are the factory's NeMo-shaped ones, saved self-contained (weights inline, as
onnxruntime's quantize_dynamic writes the int8 encoder), with the relative positional table as a
big Constant NODE as real exports have it. The thresholds that decide what is "large" are lowered
so small files exercise the same code a 1.1 GB file does; one test uses a real ~160 MB file and
measures a child process's memory.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest

from sherpa_fixed.errors import BadInputError
from sherpa_fixed.reading import onnx_graph, protostream
from sherpa_fixed.reading.external_data import audit_external_data
from sherpa_fixed.reading.inspector import inspect_folder
from sherpa_fixed.reading.onnx_graph import inline_span, load_graph, materialize, read_signature
from sherpa_fixed.reading.sessions import session_from_model
from sherpa_fixed.rewriting import stream_rewrite
from sherpa_fixed.rewriting.prepare import prepare_folder
from sherpa_fixed.testing import ModelSpec, make_encoder, write_model_folder

SPEC = ModelSpec(d_model=64, layers=2, pos_emb_max_len=5000)  # the table: Constant [1, 9999, 64], 2.5 MB


@pytest.fixture
def skeleton_everything(monkeypatch):
    """Read every file as a skeleton, leaving every tensor of 1 KB or more in the file."""
    monkeypatch.setattr(onnx_graph, "SKELETON_AT", 0)
    monkeypatch.setattr(protostream, "STRIP_AT", 1024)


def _meta_bytes(model: onnx.ModelProto) -> bytes:
    """metadata_props as protobuf writes them (field 14 entries), computed by onnx itself."""
    return onnx.ModelProto(metadata_props=model.metadata_props).SerializeToString()


def _run(path_or_session, feeds):
    sess = path_or_session if not isinstance(path_or_session, (str, Path)) else ort.InferenceSession(
        str(path_or_session), providers=["CPUExecutionProvider"])
    return sess.run(None, feeds)


def _feeds(frames: int = 160):
    rng = np.random.default_rng(3)
    return {"audio_signal": rng.standard_normal((1, 80, frames)).astype(np.float32),
            "length": np.array([frames], np.int64)}


def test_skeleton_leaves_big_tensors_and_the_constant_node_in_the_file(tmp_path, skeleton_everything):
    folder = write_model_folder(tmp_path / "m", SPEC)
    path = folder / "encoder.onnx"
    full = onnx.load(str(path))
    g = load_graph(path)
    assert g.skeleton
    skel_tensors = list(onnx_graph.graph_tensors(g.model.graph))
    full_tensors = list(onnx_graph.graph_tensors(full.graph))
    left = [(t, f) for t, f in zip(skel_tensors, full_tensors, strict=True) if inline_span(g, t)]
    big = [f for f in full_tensors if len(f.raw_data) >= 1024]
    assert len(left) == len(big) > 0
    # the positional table is a Constant node's value, and it stayed in the file too
    table = next(n for n in g.model.graph.node if n.op_type == "Constant"
                 and list(n.attribute[0].t.dims) == [1, 9999, 64])
    assert inline_span(g, table.attribute[0].t) is not None
    data = path.read_bytes()
    for t, f in left:  # each span is exactly that tensor's bytes in the file
        span = inline_span(g, t)
        assert data[span.offset:span.offset + span.length] == f.raw_data
        assert (t.name, list(t.dims), t.data_type) == (f.name, list(f.dims), f.data_type)
    assert len(g.model.SerializeToString()) < len(data) // 2
    # the audit counts them as inline bytes, not as an external weights file
    audit = audit_external_data(g)
    assert not audit.uses_external and audit.files == []
    assert audit.inline_bytes >= sum(len(f.raw_data) for f in big)


def test_an_explicit_default_data_location_is_still_left_in_the_file(tmp_path, skeleton_everything):
    """torch stores the positional table externally; loaded back and re-saved inline (quantize_dynamic), its
    tensor keeps an explicit data_location=DEFAULT. The real 1.1B int8 encoder has exactly that (41 MB)."""
    model = make_encoder(SPEC)
    table = next(n for n in model.graph.node if n.op_type == "Constant" and len(n.attribute[0].t.raw_data) > 1e6)
    table.attribute[0].t.data_location = onnx.TensorProto.DEFAULT
    path = tmp_path / "encoder.onnx"
    onnx.save(model, str(path))
    g = load_graph(path)
    node = next(n for n in g.model.graph.node if n.name == table.name)
    assert inline_span(g, node.attribute[0].t) is not None
    assert materialize(g).SerializeToString() == path.read_bytes()


def test_skeleton_inspects_exactly_as_a_full_parse(tmp_path, monkeypatch):
    folder = write_model_folder(tmp_path / "m", SPEC.with_(int8=True, metadata="wrong_feat_dim"))
    want = inspect_folder(folder).to_json()
    monkeypatch.setattr(onnx_graph, "SKELETON_AT", 0)
    monkeypatch.setattr(protostream, "STRIP_AT", 1024)
    assert load_graph(folder / "encoder.int8.onnx").skeleton and load_graph(folder / "encoder.onnx").skeleton
    assert inspect_folder(folder).to_json() == want


def test_materialize_gives_back_what_onnx_load_gives(tmp_path, skeleton_everything):
    path = write_model_folder(tmp_path / "m", SPEC) / "encoder.onnx"
    g = load_graph(path)
    assert materialize(g).SerializeToString() == onnx.load(str(path)).SerializeToString()
    assert g.model.SerializeToString() != onnx.load(str(path)).SerializeToString()  # g itself stays a skeleton


def test_onnxruntime_runs_a_skeleton_from_the_file(tmp_path, skeleton_everything):
    path = write_model_folder(tmp_path / "m", SPEC) / "encoder.onnx"
    g = load_graph(path)
    got = _run(session_from_model(g.model, g.path), _feeds())
    want = _run(path, _feeds())
    assert all(np.array_equal(a, b) for a, b in zip(got, want, strict=True))


def test_read_signature_walks_fields_only(tmp_path):
    path = write_model_folder(tmp_path / "m", SPEC) / "encoder.onnx"
    sig, g = read_signature(path), load_graph(path)
    assert (sig.inputs, sig.outputs, sig.metadata) == (g.inputs, g.outputs, g.metadata)


@pytest.mark.parametrize("how", ["truncated", "garbage"])
def test_a_broken_big_file_is_one_line_bad_input(tmp_path, skeleton_everything, how):
    path = write_model_folder(tmp_path / "m", SPEC) / "encoder.onnx"
    data = path.read_bytes()
    path.write_bytes(data[: len(data) * 2 // 3] if how == "truncated" else b"\x0a\xff\xff\xff\xff\x0f" + data[6:])
    with pytest.raises(BadInputError) as exc:
        load_graph(path)
    assert "encoder.onnx" in str(exc.value) and "\n" not in str(exc.value)
    with pytest.raises(BadInputError):
        read_signature(path)


def test_metadata_only_prepare_copies_every_other_byte(tmp_path, skeleton_everything):
    src = write_model_folder(tmp_path / "m", SPEC.with_(metadata="wrong_feat_dim"))
    out = tmp_path / "out"
    result = prepare_folder(src, output=out, verify="fast")
    assert result.exit_code == 0, result.to_json()
    assert [c.kind for c in result.plan.changes] == ["metadata"]
    assert [(c.kind, c.ok) for c in result.checks] == [("bytes", True)]
    assert "byte-identical outside metadata_props" in result.checks[0].detail
    old_bytes, new_bytes = (src / "encoder.onnx").read_bytes(), (out / "encoder.onnx").read_bytes()
    old, new = onnx.load_from_string(old_bytes), onnx.load_from_string(new_bytes)
    meta = {p.key: p.value for p in new.metadata_props}
    assert meta["feat_dim"] == "80" and "sherpa_fixed_prepared" in meta
    assert {k: v for k, v in meta.items() if k not in ("feat_dim", "sherpa_fixed_prepared")} == \
        {p.key: p.value for p in old.metadata_props if p.key != "feat_dim"}
    # onnx writes metadata_props last here: everything before it is the old file, byte for byte
    old_meta = _meta_bytes(old)
    assert old_bytes.endswith(old_meta) and new_bytes.endswith(_meta_bytes(new))
    assert new_bytes[: len(new_bytes) - len(_meta_bytes(new))] == old_bytes[: len(old_bytes) - len(old_meta)]
    want, got = _run(src / "encoder.onnx", _feeds()), _run(out / "encoder.onnx", _feeds())
    assert all(np.array_equal(a, b) for a, b in zip(want, got, strict=True))


def test_freed_dims_in_place_stream_and_still_run(tmp_path, skeleton_everything):
    folder = write_model_folder(tmp_path / "m", SPEC.with_(time="declared", metadata="wrong_feat_dim"))
    before = onnx.load(str(folder / "encoder.onnx"))
    fixed = _run(folder / "encoder.onnx", _feeds(800))
    result = prepare_folder(folder, in_place=True, verify="fast")
    assert result.exit_code == 0, result.to_json()
    kinds = {c.kind: c for c in result.checks}
    assert kinds["bytes"].ok and "freed dims" in kinds["bytes"].detail and kinds["run"].ok
    after = onnx.load(str(folder / "encoder.onnx"))
    assert after.graph.input[0].type.tensor_type.shape.dim[2].dim_param
    assert not after.graph.value_info
    assert list(after.graph.node) == list(before.graph.node)
    assert list(after.graph.initializer) == list(before.graph.initializer)
    assert all(np.array_equal(a, b) for a, b in zip(fixed, _run(folder / "encoder.onnx", _feeds(800)),
                                                       strict=True))
    assert _run(folder / "encoder.onnx", _feeds(333))[0].shape[-1] != fixed[0].shape[-1]  # other lengths run
    assert not [p for p in folder.iterdir() if p.name.startswith(".sf-")]


@pytest.mark.parametrize("chunk", [8 << 20, 4096])  # whole fields at once, and in threaded chunks
def test_streamed_proof_catches_a_changed_byte_and_a_wrong_key(tmp_path, skeleton_everything, monkeypatch, chunk):
    monkeypatch.setattr(stream_rewrite, "CHUNK", chunk)
    src = write_model_folder(tmp_path / "m", SPEC)
    g = load_graph(src / "encoder.onnx")
    planned = {"feat_dim": "80", "new_key": "x"}
    tmp = stream_rewrite.rewrite_streamed(g, tmp_path / "new.onnx", planned, durable=False)
    assert stream_rewrite.streamed_proof(g, tmp, planned).ok
    span = next(iter(g.inline_spans.values()))
    data = bytearray(tmp.read_bytes())
    data[span.offset + span.length // 2] ^= 1  # one bit of one weight (offsets before metadata are unchanged)
    bad = tmp_path / "bad.onnx"
    bad.write_bytes(bytes(data))
    check = stream_rewrite.streamed_proof(g, bad, planned)
    assert not check.ok and "differs" in check.detail
    check = stream_rewrite.streamed_proof(g, tmp, {**planned, "new_key": "y"})
    assert not check.ok and "new_key" in check.detail


def test_streamed_rewrite_of_a_file_without_metadata_appends_it(tmp_path):
    path = tmp_path / "bare.onnx"
    model = make_encoder(SPEC)
    del model.metadata_props[:]
    onnx.save(model, str(path))
    g = load_graph(path)
    tmp = stream_rewrite.rewrite_streamed(g, path, {"a": "1", "b": "2"}, durable=False)
    assert {p.key: p.value for p in onnx.load(str(tmp)).metadata_props} == {"a": "1", "b": "2"}
    assert stream_rewrite.streamed_proof(g, tmp, {"a": "1", "b": "2"}).ok
    assert tmp.read_bytes().startswith(path.read_bytes())


_CHILD = r"""
import json, sys
from sherpa_fixed.reading.inspector import inspect_folder
from sherpa_fixed.reading.onnx_graph import read_signature
if sys.argv[2] == "inspect":
    inspect_folder(sys.argv[1])
else:
    read_signature(sys.argv[1] + "/encoder.onnx")
hwm = next(int(l.split()[1]) for l in open("/proc/self/status") if l.startswith("VmHWM:"))
print(json.dumps(hwm * 1024))
"""


def _peak_rss(folder: Path, what: str) -> int:
    p = subprocess.run([sys.executable, "-c", _CHILD, str(folder), what], capture_output=True, text=True,
                       env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert p.returncode == 0, p.stderr[-2000:]
    return json.loads(p.stdout.strip().splitlines()[-1])


def test_inspect_of_a_160mb_self_contained_encoder_stays_small(tmp_path):
    # d_model 1024, 7 layers: ~160 MB of fp32 weights inline in encoder.onnx, as quantize_dynamic writes.
    folder = write_model_folder(tmp_path / "big", SPEC.with_(d_model=1024, layers=7))
    size = (folder / "encoder.onnx").stat().st_size
    assert size > 150e6
    baseline = _peak_rss(folder, "signature")  # python + onnx + the package imported, the file walked
    peak = _peak_rss(folder, "inspect")
    # A full parse holds the file at least once (onnx.load: twice). The skeleton holds the graph's nodes.
    assert peak - baseline < size / 4, (peak, baseline, size)
    assert baseline < size / 2
