"""reading/protos.py: onnx's messages without `import onnx`, the same classes once onnx is imported,
and values equal to onnx.numpy_helper's."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from sherpa_fixed.reading import protos
from sherpa_fixed.testing import write_model_folder

MODULES = ("onnx", "onnx.helper", "ml_dtypes", "onnxruntime", "sherpa_onnx")


def _fresh(code: str) -> dict:
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    return json.loads(out.strip().splitlines()[-1])


def test_inspect_and_metadata_prepare_import_neither_onnx_nor_runtimes(tmp_path):
    """The CLI's inspect and a metadata-only prepare run without onnx (a second of ml_dtypes), onnxruntime
    or sherpa-onnx; and what they report is right (the folder really gets prepared)."""
    folder = write_model_folder(tmp_path / "m", metadata="missing")
    out = tmp_path / "out"
    code = f"""
import json, sys
from sherpa_fixed.cli import main
results = []
for argv in (["inspect", {str(folder)!r}, "--json"], ["prepare", {str(folder)!r}, "--output", {str(out)!r},
             "--verify", "fast", "--json"]):
    sys.argv = ["sherpa-fixed", *argv]
    try:
        main()
    except SystemExit as e:
        results.append(e.code)
print()
print(json.dumps({{"codes": results, "loaded": {{m: m in sys.modules for m in {MODULES!r}}}}}))
"""
    got = _fresh(code)
    assert got["loaded"] == dict.fromkeys(MODULES, False), got
    assert got["codes"][0] == 1  # needs prepare: no metadata
    assert got["codes"][1] in (0, None)
    meta = {p.key: p.value for p in onnx.load(str(out / "encoder.onnx"), load_external_data=False).metadata_props}
    tokens = (folder / "tokens.txt").read_text().splitlines()
    assert meta["vocab_size"] == str(len(tokens) - 1)  # tokens minus <blk>
    assert meta["feat_dim"] == "80" and meta["subsampling_factor"] == "8"  # the builder's 80 mel, 3 x stride 2


def test_classes_are_onnx_classes_when_onnx_comes_second():
    code = """
import json
from sherpa_fixed.reading import protos
m = protos.ModelProto(ir_version=7)
import onnx
from onnx import helper
g = helper.make_graph([helper.make_node("Identity", ["x"], ["y"])], "g",
                      [helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, [1])],
                      [helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, [1])])
m.graph.CopyFrom(g)
m.opset_import.add().version = 17
onnx.checker.check_model(m)
print(json.dumps({"same": [protos.ModelProto is onnx.ModelProto, protos.TensorProto is onnx.TensorProto,
                           isinstance(m, onnx.ModelProto)],
                  "roundtrip": onnx.ModelProto.FromString(m.SerializeToString()) == m}))
"""
    got = _fresh(code)
    assert got == {"same": [True, True, True], "roundtrip": True}


def test_classes_are_onnx_classes_when_onnx_comes_first():
    assert protos.ModelProto is onnx.ModelProto  # this test process imported onnx above


CASES = [
    (np.float32, TensorProto.FLOAT), (np.float64, TensorProto.DOUBLE), (np.float16, TensorProto.FLOAT16),
    (np.int8, TensorProto.INT8), (np.int16, TensorProto.INT16), (np.int32, TensorProto.INT32),
    (np.int64, TensorProto.INT64), (np.uint8, TensorProto.UINT8), (np.uint16, TensorProto.UINT16),
    (np.uint32, TensorProto.UINT32), (np.uint64, TensorProto.UINT64), (np.bool_, TensorProto.BOOL),
]


@pytest.mark.parametrize("dtype,elem", CASES, ids=[c[0].__name__ for c in CASES])
@pytest.mark.parametrize("raw", [True, False], ids=["raw_data", "typed_fields"])
def test_to_array_and_dtype_agree_with_numpy_helper(dtype, elem, raw):
    rng = np.random.default_rng(elem)
    values = (rng.standard_normal((2, 3)) * 100).astype(dtype)
    t = helper.make_tensor("t", elem, values.shape, values.tobytes() if raw else values.reshape(-1).tolist(),
                           raw=raw) if elem != TensorProto.FLOAT16 or raw else numpy_helper.from_array(values, "t")
    want = numpy_helper.to_array(t)
    got = protos.to_array(t)
    assert got.dtype == want.dtype == np.dtype(dtype)
    assert got.shape == want.shape
    assert np.array_equal(got, want)
    assert protos.np_dtype(elem) == helper.tensor_dtype_to_np_dtype(elem)


def test_to_array_hands_other_types_to_onnx():
    t = helper.make_tensor("s", TensorProto.STRING, [2], [b"a", b"b"])
    assert list(protos.to_array(t)) == list(numpy_helper.to_array(t))
    assert protos.np_dtype(TensorProto.BFLOAT16) == helper.tensor_dtype_to_np_dtype(TensorProto.BFLOAT16)
