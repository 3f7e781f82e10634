"""onnxruntime's `quantize_dynamic`, run on a graph whose weights stay on disk.

Equality with onnxruntime is the point, so nothing of its scheme is
re-implemented: its own `ONNXQuantizer` decides which nodes to quantize,
builds the same DynamicQuantizeLinear / MatMulInteger / ConvInteger /
DynamicQuantizeLSTM patterns and computes scales, zero points and int8
values with its own numpy code. What changes is where the bytes are. The
graph is read without weights (stubs.py); the two methods through which the
quantizer reads a weight's values are wrapped so that exactly that tensor is
read from the source's external data, quantized, and its int8 result spilled
to a scratch file at once. Peak memory is one tensor, not the model.

`quantize_graph` mirrors `onnxruntime.quantization.quantize_dynamic` step by
step (shape inference on the source path, the infer marker, the opset bump,
the quantizer's arguments, the final topological sort); tests/test_quantize.py
compares the results proto by proto with onnxruntime's own output.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import os
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

import onnx
from onnx import ModelProto, TensorProto

from ..errors import BadInputError
from ..safety.atomic import disk_error
from .stubs import Ref, Store, all_tensors, clear_stub, make_stub, stub_external, stub_key

Tick = Callable[[int], None]  # bytes of fp32 weights just read

SPILL_MIN = 1024  # int8 tensors under onnx.save's threshold stay in the graph


def _ort():
    from onnxruntime.quantization import QuantType
    from onnxruntime.quantization.onnx_quantizer import ONNXQuantizer
    from onnxruntime.quantization.quant_utils import (
        QuantizationMode,
        add_infer_metadata,
        update_opset_version,
    )
    from onnxruntime.quantization.registry import IntegerOpsRegistry

    return QuantType, ONNXQuantizer, QuantizationMode, add_infer_metadata, update_opset_version, IntegerOpsRegistry


class Spill:
    """The scratch file quantized weights are appended to as they are made."""

    def __init__(self, path: Path, store: Store):
        self.path = path
        self.store = store
        self.f = open(path, "wb")  # noqa: SIM115 - closed in close()
        self.size = 0

    def put(self, t: TensorProto) -> None:
        data = t.raw_data
        offset = self.size
        try:
            self.f.write(data)
        except OSError as exc:
            raise disk_error(exc, self.path) from exc
        self.size += len(data)
        make_stub(t, self.store.add(Ref(self.path, offset, len(data))))
        t.ClearField("data_location")

    def close(self) -> None:
        if not self.f.closed:
            self.f.flush()
            self.f.close()
        self.store.forget(self.path)


def _quantizer_class():
    _, ONNXQuantizer, *_ = _ort()

    class StreamingQuantizer(ONNXQuantizer):
        """ONNXQuantizer whose weights are read when quantized and written out right after.

        Bytes never enter the model proto: protobuf (upb) keeps a cleared field's memory in the
        message's arena until the whole model is freed, so filling and clearing tensors in place
        would grow to the size of the model. Each weight's values go into a fresh TensorProto that
        the quantizer is shown instead of the stub, and each int8 tensor it makes is spilled to
        disk before it is added to the model.
        """

        store: Store
        spill: Spill
        tick: Tick | None
        keep: set[str]  # weights whose int8 form the quantizer reads back (LSTM: it transposes them)

        def _full(self, t: TensorProto) -> TensorProto:
            ref = self.store.ref_of(t)
            if ref is None:
                return t
            full = TensorProto()
            full.CopyFrom(t)
            clear_stub(full)
            full.raw_data = self.store.read(ref)
            if self.tick:
                self.tick(ref.length)
            return full

        @contextlib.contextmanager
        def _spilling(self, weight_name: str) -> Iterator[None]:
            onnx_model = self.model
            add = onnx_model.initializer_extend

            def extend(inits):
                if weight_name not in self.keep:
                    for t in inits:
                        if len(t.raw_data) >= SPILL_MIN and stub_key(t) is None:
                            self.spill.put(t)
                return add(inits)

            onnx_model.initializer_extend = extend
            try:
                yield
            finally:
                del onnx_model.initializer_extend

        @contextlib.contextmanager
        def _showing(self, full: TensorProto | None) -> Iterator[None]:
            onnx_model = self.model
            if full is None or stub_key(full) is not None:
                yield
                return
            graph = onnx_model.model.graph
            onnx_model.initializer = lambda: [full if t.name == full.name else t for t in graph.initializer]
            try:
                yield
            finally:
                del onnx_model.initializer

        def quantize_initializer_impl(self, weight, qType, reduce_range=False, keep_float_weight=False):
            full = self._full(weight)
            with self._spilling(weight.name):
                return super().quantize_initializer_impl(full, qType, reduce_range, keep_float_weight)

        def quantize_weight_per_channel_impl(self, weight_name, weight_qType, channel_axis, reduce_range=True,
                                             keep_float_weight=False):
            weight = self.model.get_initializer(weight_name)
            full = self._full(weight) if weight is not None else None
            with self._spilling(weight_name), self._showing(full):
                return super().quantize_weight_per_channel_impl(weight_name, weight_qType, channel_axis,
                                                                reduce_range, keep_float_weight)

    return StreamingQuantizer


@contextlib.contextmanager
def _quiet_ort() -> Iterator[None]:
    """onnxruntime logs a warning per integer tensor it declines to quantize, on the root logger."""
    root = logging.getLogger()
    level = root.level
    root.setLevel(logging.ERROR)
    try:
        yield
    finally:
        root.setLevel(level)


def weight_type_for(role: str) -> str:
    """sherpa-onnx's export scripts: QUInt8 for the encoder, QInt8 for decoder and joiner."""
    return "QUInt8" if role == "encoder" else "QInt8"


def load_inferred(src: Path, scratch: Path) -> ModelProto:
    """What onnxruntime's load_model_with_shape_infer gives, without the weights.

    onnxruntime runs onnx's shape inference on the model's path and loads the
    result; here the result is written to our scratch folder (never beside the
    source, which may be read-only) and loaded without external data.
    """
    _, _, _, add_infer_metadata, _, _ = _ort()
    inferred = scratch / "inferred.onnx"
    try:
        onnx.shape_inference.infer_shapes_path(str(src), str(inferred))
    except OSError:
        raise
    except Exception as exc:  # onnx's C++ errors (InferenceError, ValidationError) or a failed write
        if _disk_full(scratch):
            raise OSError(errno.ENOSPC, "No space left on device") from exc
        raise BadInputError(f"onnx shape inference fails on it ({type(exc).__name__}: "
                            f"{(str(exc).splitlines() or [''])[0]})", path=src,
                            fix="onnxruntime's quantize_dynamic fails the same way; re-export the model") from exc
    if not inferred.exists():  # onnx's C++ writer does not always report a failed write
        raise OSError(errno.ENOSPC if _disk_full(scratch) else errno.EIO, "shape inference wrote nothing")
    model = onnx.load(str(inferred), load_external_data=False)
    inferred.unlink()
    add_infer_metadata(model)
    return model


def _disk_full(folder: Path) -> bool:
    st = os.statvfs(folder)
    return st.f_bavail * st.f_frsize < (1 << 20) or st.f_favail == 0


def _materialize_gemm_b(model: ModelProto, store: Store) -> None:
    """onnxruntime turns Gemm(transB=1) into MatMul by transposing B in numpy: B needs its values."""
    inits = {t.name: t for t in model.graph.initializer}
    for node in model.graph.node:
        if node.op_type == "Gemm" and len(node.input) > 1 and node.input[1] in inits:
            t = inits[node.input[1]]
            ref = store.ref_of(t)
            if ref is not None:
                clear_stub(t)
                t.raw_data = store.read(ref)


def quantize_graph(src: Path, *, weight_type: str, per_channel: bool = False, nodes_to_exclude: Sequence[str] = (),
                   store: Store, spill: Spill, scratch: Path, tick: Tick | None = None,
                   op_types: Sequence[str] | None = None, rewrite: Callable[[ModelProto], None] | None = None,
                   quantizer_class: type | None = None) -> tuple[ModelProto, int]:
    """Quantize one graph as quantize_dynamic would; returns the model (with stubs) and the weights quantized.

    The defaults are quantize_dynamic's (sherpa-onnx's scheme). Other schemes (fast_scheme.py) pass
    the operator types to quantize, a `rewrite` of the stubbed graph before quantization, and a
    quantizer subclass with their own weight quantization.
    """
    QuantType, _, QuantizationMode, _, update_opset_version, IntegerOpsRegistry = _ort()
    qtype = QuantType.QUInt8 if weight_type == "QUInt8" else QuantType.QInt8
    with _quiet_ort():
        model = load_inferred(src, scratch)
        stub_external(model, src, store)
        _materialize_gemm_b(model, store)
        if rewrite is not None:
            rewrite(model)
        model = update_opset_version(model, qtype)
        cls = quantizer_class or _quantizer_class()
        quantizer = cls.__new__(cls)
        quantizer.store, quantizer.spill, quantizer.tick = store, spill, tick
        quantizer.keep = {i for n in model.graph.node if n.op_type == "LSTM" for i in n.input[1:3]}
        # quantize_dynamic's arguments with sherpa-onnx's settings: static=False, reduce_range=False,
        # activations QUInt8, all of IntegerOpsRegistry, nodes_to_quantize=[], MatMulConstBOnly.
        cls.__init__(quantizer, model, per_channel, False, QuantizationMode.IntegerOps, False, qtype,
                     QuantType.QUInt8, None, [], list(nodes_to_exclude),
                     list(op_types) if op_types is not None else list(IntegerOpsRegistry.keys()),
                     {"MatMulConstBOnly": True})
        quantizer.quantize_model()
        out = quantizer.model
        out.topological_sort()
    count = sum(1 for t in out.model.graph.initializer if t.name.endswith("_quantized"))
    return out.model, count


def stub_bytes(model: ModelProto, store: Store) -> int:
    return sum(store.refs[k].length for t in all_tensors(model) if (k := stub_key(t)) is not None)


def node_names(src: Path) -> list[str]:
    g = onnx.load(str(src), load_external_data=False)
    return [n.name for n in g.graph.node]


__all__ = ["Spill", "load_inferred", "node_names", "quantize_graph", "stub_bytes", "weight_type_for"]
