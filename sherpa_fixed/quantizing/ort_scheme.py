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
import logging
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

import onnx
from onnx import ModelProto, TensorProto

from .stubs import Ref, Store, all_tensors, make_stub, stub_external, stub_key

Tick = Callable[[int], None]  # bytes of fp32 weights just read

# Kept in memory after quantizing: LSTMQuant re-reads the two int8 tensors it has just made (W and R)
# to transpose them, so the newest two are spilled only once later weights come.
KEEP_NEWEST = 2
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
        self.f.write(data)
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
        """ONNXQuantizer whose weights are read when quantized and written out right after."""

        store: Store
        spill: Spill
        tick: Tick | None
        pending: list[str]

        @contextlib.contextmanager
        def _values(self, t: TensorProto) -> Iterator[None]:
            filled = self.store.fill(t)
            if self.tick:
                self.tick(len(t.raw_data))
            try:
                yield
            finally:
                if filled:
                    self.store.unfill(t)

        def _made(self, q_name: str) -> None:
            self.pending.append(q_name)
            self.spill_pending(keep=KEEP_NEWEST)

        def spill_pending(self, keep: int = 0) -> None:
            if len(self.pending) <= keep:
                return
            names = set(self.pending[: len(self.pending) - keep])
            self.pending = self.pending[len(self.pending) - keep:]
            for t in reversed(self.model.model.graph.initializer):  # new tensors are at the end
                if t.name in names:
                    names.discard(t.name)
                    if len(t.raw_data) >= SPILL_MIN and stub_key(t) is None:
                        self.spill.put(t)
                    if not names:
                        break

        def quantize_initializer_impl(self, weight, qType, reduce_range=False, keep_float_weight=False):
            with self._values(weight):
                out = super().quantize_initializer_impl(weight, qType, reduce_range, keep_float_weight)
            if not keep_float_weight:
                self._made(out[0])
            return out

        def quantize_weight_per_channel_impl(self, weight_name, weight_qType, channel_axis, reduce_range=True,
                                             keep_float_weight=False):
            weight = self.model.get_initializer(weight_name)
            with self._values(weight) if weight is not None else contextlib.nullcontext():
                out = super().quantize_weight_per_channel_impl(weight_name, weight_qType, channel_axis, reduce_range,
                                                               keep_float_weight)
            if not keep_float_weight:
                self._made(out[0])
            return out

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
    onnx.shape_inference.infer_shapes_path(str(src), str(inferred))
    model = onnx.load(str(inferred), load_external_data=False)
    inferred.unlink()
    add_infer_metadata(model)
    return model


def _materialize_gemm_b(model: ModelProto, store: Store) -> None:
    """onnxruntime turns Gemm(transB=1) into MatMul by transposing B in numpy: B needs its values."""
    inits = {t.name: t for t in model.graph.initializer}
    for node in model.graph.node:
        if node.op_type == "Gemm" and len(node.input) > 1 and node.input[1] in inits:
            t = inits[node.input[1]]
            if store.fill(t):
                del t.external_data[:]


def quantize_graph(src: Path, *, weight_type: str, per_channel: bool = False, nodes_to_exclude: Sequence[str] = (),
                   store: Store, spill: Spill, scratch: Path, tick: Tick | None = None) -> tuple[ModelProto, int]:
    """Quantize one graph as quantize_dynamic would; returns the model (with stubs) and the weights quantized."""
    QuantType, _, QuantizationMode, _, update_opset_version, IntegerOpsRegistry = _ort()
    qtype = QuantType.QUInt8 if weight_type == "QUInt8" else QuantType.QInt8
    with _quiet_ort():
        model = load_inferred(src, scratch)
        stub_external(model, src, store)
        _materialize_gemm_b(model, store)
        model = update_opset_version(model, qtype)
        cls = _quantizer_class()
        quantizer = cls.__new__(cls)
        quantizer.store, quantizer.spill, quantizer.tick, quantizer.pending = store, spill, tick, []
        # quantize_dynamic's arguments with sherpa-onnx's settings: static=False, reduce_range=False,
        # activations QUInt8, all of IntegerOpsRegistry, nodes_to_quantize=[], MatMulConstBOnly.
        cls.__init__(quantizer, model, per_channel, False, QuantizationMode.IntegerOps, False, qtype,
                     QuantType.QUInt8, None, [], list(nodes_to_exclude), list(IntegerOpsRegistry.keys()),
                     {"MatMulConstBOnly": True})
        quantizer.quantize_model()
        quantizer.spill_pending()
        out = quantizer.model
        out.topological_sort()
    count = sum(1 for t in out.model.graph.initializer if t.name.endswith("_quantized"))
    return out.model, count


def stub_bytes(model: ModelProto, store: Store) -> int:
    return sum(store.refs[k].length for t in all_tensors(model) if (k := stub_key(t)) is not None)


def node_names(src: Path) -> list[str]:
    g = onnx.load(str(src), load_external_data=False)
    return [n.name for n in g.graph.node]


__all__ = ["Spill", "node_names", "quantize_graph", "stub_bytes", "weight_type_for"]
