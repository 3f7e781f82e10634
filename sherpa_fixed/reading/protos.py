"""ONNX's protobuf messages without `import onnx`, and the few numbers inspect needs from them.

`import onnx` costs about a second on a 2-core machine (0.85-1.3 s measured here, nearly all of
it ml_dtypes' extension registering its number types with numpy, which onnx.helper imports):
more than inspecting a 1.1 GB encoder or rewriting its metadata (docs/benchmarks.md). Reading a
model needs onnx's message classes, never its helpers, and those classes are plain generated
protobuf code in one file (onnx/onnx_ml_pb2.py, which imports google.protobuf only).

So this module loads that one file under the very name `import onnx` gives it
(`onnx.onnx_ml_pb2`). When onnx is imported later, its `from .onnx_ml_pb2 import *` finds the
module already loaded and uses the same classes: a ModelProto made here IS an onnx.ModelProto
(tests/test_protos.py checks this in a fresh interpreter). If onnx is already imported, or its
file is not where it was, onnx is simply imported; nothing else differs.

Code that builds or checks graphs (onnx.helper, shape inference, the checker) still imports onnx
itself, where it needs it.
"""

from __future__ import annotations

import importlib.util
import os
import sys

import numpy as np

_NAME = "onnx.onnx_ml_pb2"


def _load():
    if "onnx" in sys.modules or _NAME in sys.modules:
        import onnx

        return onnx
    try:
        spec = importlib.util.find_spec("onnx")
        path = os.path.join(os.path.dirname(spec.origin), "onnx_ml_pb2.py")
        pb2_spec = importlib.util.spec_from_file_location(_NAME, path)
        module = importlib.util.module_from_spec(pb2_spec)
        sys.modules[_NAME] = module
        pb2_spec.loader.exec_module(module)
        return module
    except Exception:  # a different onnx layout: the slow, sure way
        sys.modules.pop(_NAME, None)
        import onnx

        return onnx


_pb = _load()

AttributeProto = _pb.AttributeProto
GraphProto = _pb.GraphProto
ModelProto = _pb.ModelProto
NodeProto = _pb.NodeProto
StringStringEntryProto = _pb.StringStringEntryProto
TensorProto = _pb.TensorProto
ValueInfoProto = _pb.ValueInfoProto

T = TensorProto
# numpy types of the element types a NeMo export (fp32, fp16, int8-quantized) holds, as onnx.helper
# maps them; anything else (bfloat16, float8, int4, strings) is asked of onnx.helper.
_NP: dict[int, np.dtype] = {
    T.FLOAT: np.dtype(np.float32), T.DOUBLE: np.dtype(np.float64), T.FLOAT16: np.dtype(np.float16),
    T.INT8: np.dtype(np.int8), T.INT16: np.dtype(np.int16), T.INT32: np.dtype(np.int32),
    T.INT64: np.dtype(np.int64), T.UINT8: np.dtype(np.uint8), T.UINT16: np.dtype(np.uint16),
    T.UINT32: np.dtype(np.uint32), T.UINT64: np.dtype(np.uint64), T.BOOL: np.dtype(np.bool_),
}
# Where a tensor without raw_data keeps its values (onnx.proto's comments on each typed field).
_FIELD = {T.FLOAT: "float_data", T.DOUBLE: "double_data", T.INT64: "int64_data", T.UINT32: "uint64_data",
          T.UINT64: "uint64_data", **dict.fromkeys((T.INT8, T.INT16, T.INT32, T.UINT8, T.UINT16, T.BOOL),
                                                   "int32_data")}


def np_dtype(elem_type: int) -> np.dtype:
    """numpy's type for an ONNX element type, as onnx.helper.tensor_dtype_to_np_dtype gives it."""
    dtype = _NP.get(elem_type)
    if dtype is not None:
        return dtype
    from onnx import helper

    return helper.tensor_dtype_to_np_dtype(elem_type)


def to_array(t: TensorProto) -> np.ndarray:
    """An inline tensor's values, as onnx.numpy_helper.to_array gives them (a copy, native byte order)."""
    dtype = _NP.get(t.data_type)
    external = t.HasField("data_location") and t.data_location == T.EXTERNAL
    if dtype is None or external or t.segment.ByteSize():
        from onnx import numpy_helper

        return numpy_helper.to_array(t)
    shape = tuple(t.dims)
    if t.HasField("raw_data"):
        return np.frombuffer(t.raw_data, dtype=dtype.newbyteorder("<")).astype(dtype).reshape(shape)
    if t.data_type == T.FLOAT16:  # float16 bits, one per int32
        return np.asarray(t.int32_data, dtype=np.uint16).view(np.float16).reshape(shape)
    return np.asarray(getattr(t, _FIELD[t.data_type]), dtype=dtype).reshape(shape)
