"""The layout torch.onnx writes over 2 GiB (the real parakeet-tdt-1.1b export, FACTS.md section 9):
one file per tensor named after it, and a Constant NODE whose value is external data.

`prepare` moved such a Constant correctly but its byte proof compared the node including where the
value lives, so default prepare always failed on the genuine 1.1B export. These tests hold it to
success with both proofs, stock sherpa-onnx decoding the result, and the Constant's bytes intact.
"""

from __future__ import annotations

import copy

import numpy as np
import onnx
import pytest
from onnx import numpy_helper

from sherpa_fixed.decoding.sherpa_check import run_sherpa
from sherpa_fixed.reading.onnx_graph import external_info, load_graph, uses_external_data
from sherpa_fixed.rewriting.prepare import prepare_folder
from sherpa_fixed.rewriting.verify import byte_proof
from sherpa_fixed.rewriting.weights import set_external
from sherpa_fixed.safety.output import MARKER

from .test_prepare import assert_bit_identical, outputs, snapshot

SMALL = {"encoder.onnx", "decoder.onnx", "joiner.onnx", "tokens.txt"}


def external_constants(model: onnx.ModelProto) -> dict[str, onnx.TensorProto]:
    """Constant node name -> its value tensor, for values stored as external data."""
    out = {}
    for node in model.graph.node:
        if node.op_type == "Constant":
            for a in node.attribute:
                if a.name == "value" and a.HasField("t") and uses_external_data(a.t):
                    out[node.name] = a.t
    return out


def constant_value(folder, node_name: str) -> np.ndarray:
    model = onnx.load(str(folder / "encoder.onnx"))  # loads external data: the test models are tiny
    node = next(n for n in model.graph.node if n.name == node_name)
    return numpy_helper.to_array(next(a.t for a in node.attribute if a.name == "value"))


@pytest.fixture
def torch_folder(make_folder):
    return make_folder("raw", external="torch", metadata="missing")


def test_factory_writes_the_genuine_torch_layout(torch_folder):
    model = onnx.load(str(torch_folder / "encoder.onnx"), load_external_data=False)
    files = {p.name for p in torch_folder.iterdir()} - SMALL
    consts = external_constants(model)
    assert len(consts) == 1
    (name, value), = consts.items()
    assert name.startswith("Constant_") and value.name == f"{name}_attr::value"
    assert list(value.dims)[:2] == [1, 9999]  # pos_emb_max_len 5000, as the real table
    assert f"{name}_attr__value" in files
    assert "onnx__MatMul_pre" in files and "layers.0.ff.w1" in files
    external = [t for t in model.graph.initializer if uses_external_data(t)]
    inline = [t for t in model.graph.initializer if not uses_external_data(t)]
    assert external and inline  # small tensors stay inline, as torch leaves them
    for t in [*external, value]:
        assert set(external_info(t)) == {"location"}  # torch writes no offset or length
    assert files == {external_info(t)["location"] for t in [*external, value]}


@pytest.mark.parametrize("verify", ["auto", "full"])
def test_default_prepare_succeeds_with_both_proofs_and_sherpa_decodes(torch_folder, tmp_path, verify):
    snap = snapshot(torch_folder)
    (name, _), = external_constants(onnx.load(str(torch_folder / "encoder.onnx"), load_external_data=False)).items()
    want = constant_value(torch_folder, name)
    out = tmp_path / "prepared"
    result = prepare_folder(torch_folder, output=out, verify=verify)
    assert result.exit_code == 0, [c.detail for c in result.checks]
    kinds = {c.kind: c for c in result.checks}
    assert {"run", "bytes", "sherpa"} <= set(kinds) and all(c.ok for c in result.checks)
    assert "identical graph" in kinds["bytes"].detail
    assert snapshot(torch_folder) == snap  # the source is never touched
    assert {p.name for p in out.iterdir()} == SMALL | {"encoder.weights", MARKER}
    # The Constant now lives in encoder.weights, and its bytes are the original's.
    moved = external_constants(onnx.load(str(out / "encoder.onnx"), load_external_data=False))[name]
    assert external_info(moved)["location"] == "encoder.weights"
    assert np.array_equal(constant_value(out, name), want)
    assert_bit_identical(torch_folder / "encoder.onnx", out / "encoder.onnx", "encoder")
    run = run_sherpa(out / "encoder.onnx", out / "decoder.onnx", out / "joiner.onnx", out / "tokens.txt",
                     samples=[16000 * 3])
    assert run.ok, run.error
    assert run.results[0]["tokens"]


def test_in_place_prepare_removes_the_constant_file_too(torch_folder):
    scattered = {p.name for p in torch_folder.iterdir()} - SMALL
    result = prepare_folder(torch_folder, in_place=True)
    assert result.exit_code == 0
    assert {p.name for p in torch_folder.iterdir()} == SMALL | {"encoder.weights"}
    assert set(result.removed) == scattered  # Constant_<n>_attr__value included: no orphan left behind


def _prepared(torch_folder, tmp_path):
    out = tmp_path / "prepared"
    assert prepare_folder(torch_folder, output=out, verify="off").exit_code == 0
    original = load_graph(torch_folder / "encoder.onnx")
    new = onnx.load(str(out / "encoder.onnx"), load_external_data=False)
    return original, new, out


def test_byte_proof_reads_the_constant_bytes(torch_folder, tmp_path):
    """A flipped byte inside the moved Constant is caught: its content is compared, not skipped."""
    original, new, out = _prepared(torch_folder, tmp_path)
    (_name, t), = external_constants(new).items()
    assert byte_proof(original, new, out / "encoder.onnx").ok
    offset = int(external_info(t)["offset"]) + 123
    with open(out / "encoder.weights", "r+b") as f:
        f.seek(offset)
        b = f.read(1)
        f.seek(offset)
        f.write(bytes([b[0] ^ 0xFF]))
    check = byte_proof(original, new, out / "encoder.onnx")
    assert not check.ok
    assert t.name in check.detail and "differs at byte" in check.detail


def test_byte_proof_still_sees_a_changed_constant_shape(torch_folder, tmp_path):
    """Setting aside where a Constant's value lives must not set aside what it is."""
    original, new, out = _prepared(torch_folder, tmp_path)
    (name, _), = external_constants(new).items()
    changed = copy.deepcopy(new)
    t = external_constants(changed)[name]
    t.dims[1] -= 2
    check = byte_proof(original, changed, out / "encoder.onnx")
    assert not check.ok and f"node {name}" in check.detail


def test_byte_proof_sees_an_inline_constant_value_changed(torch_folder, tmp_path):
    original, new, out = _prepared(torch_folder, tmp_path)
    changed = copy.deepcopy(new)
    node = next(n for n in changed.graph.node if n.name == "/pos_enc/Constant_2")
    node.attribute[0].t.raw_data = np.array([7], np.int64).tobytes()
    check = byte_proof(original, changed, out / "encoder.onnx")
    assert not check.ok and "differs at byte" in check.detail



@pytest.mark.parametrize("verify", ["auto", "fast"])
def test_byte_proof_reads_a_skeleton_original_from_its_pinned_file(make_folder, monkeypatch, verify):
    """A large self-contained file is read as a skeleton (its inline tensors described as external
    data at the file itself, reading/protostream.py). After an in-place rename that path names the new
    file, so the proof must read the original's bytes from its pinned inode: read by path it compares
    the new file with itself at the old offsets (a false failure, or a lost tensor passed as unmoved).
    Here one small external tensor makes prepare rewrite the weights (inline_small), so the byte
    proof, not the streamed one, judges the result."""
    from sherpa_fixed.reading import onnx_graph

    monkeypatch.setattr(onnx_graph, "SKELETON_AT", 1, raising=False)  # every file read as a skeleton
    folder = make_folder(metadata="missing", d_model=64)  # self-contained; ff weights 32 KB each
    model = onnx.load(str(folder / "encoder.onnx"))
    small = next(t for t in model.graph.initializer if 0 < len(t.raw_data) < 1024)
    (folder / "encoder.small").write_bytes(small.raw_data)
    set_external(small, "encoder.small", 0, len(small.raw_data))
    onnx.save(model, str(folder / "encoder.onnx"))
    before = folder / "before.onnx"
    before.write_bytes((folder / "encoder.onnx").read_bytes())
    (folder / "before.small").write_bytes((folder / "encoder.small").read_bytes())
    want = outputs(before, "encoder")
    result = prepare_folder(folder, in_place=True, verify=verify)
    assert result.exit_code == 0, [c.detail for c in result.checks]
    assert "bytes" in {c.kind for c in result.checks} and all(c.ok for c in result.checks)
    got = outputs(folder / "encoder.onnx", "encoder")
    assert all(np.array_equal(a, b) for a, b in zip(want, got, strict=True))
