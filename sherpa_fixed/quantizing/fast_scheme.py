"""The `fast` int8 scheme (quantize's default): int8 where onnxruntime has a fast kernel, exact on every CPU.

Measured on the parakeet-tdt-1.1b architecture (docs/quantize.md, "The fast scheme"): sherpa-onnx's
release setting (quantize_dynamic, QUInt8 weights, Conv included) is only 1.2-1.5x faster than
fp32 on the encoder, because uint8 weights miss onnxruntime's u8s8 VNNI kernel and ConvInteger is
slow. This scheme, for the encoder:

- the Conformer's pointwise convolutions become MatMuls (pointwise.py), exactly, so they quantize
  like the feed-forward layers;
- only MatMuls with constant weights are quantized (the attention's activation x activation
  products, the depthwise and subsampling convolutions stay fp32): dynamic uint8 activations
  (DynamicQuantizeLinear, shared by the MatMuls that read the same tensor, e.g. q/k/v), signed int8
  weights, one scale per output column;
- the weights are pair-safe (pairsafe.py): no pair of them can saturate the 16-bit sums of
  `vpmaddubsw`, which onnxruntime uses for u8s8 on x86 without VNNI, so the file computes the same
  on every CPU it is shipped to. That costs up to one bit of weight resolution (all of it on weights
  as uniform as a random init's), and at 42 layers the attention's value and output projections are
  where that bit shows: the encoder's error went from 1.94 % (plain per-channel int8, not safe) to
  2.36 %, above sherpa-onnx's release setting (2.12 %), while 8-bit feed-forward weights changed
  nothing measurable. So those two projections keep full 8-bit weights as uint8 (per-channel,
  asymmetric): u8u8 is exact on every CPU (both operands widened to 16 bits), at the cost of the
  VNNI kernel for 2 of the 25 M weights of a layer (6-8 % of the encoder's time; error 2.00 %).

Decoder and joiner (a few percent of a decode) are quantized as sherpa-onnx's releases do it
(every operator onnxruntime can quantize: MatMuls, the decoder's LSTMs as DynamicQuantizeLSTM, its
embedding), with the same pair-safe per-channel signed weights, so they too are exact everywhere.

Everything streams as sherpa-onnx's scheme does (ort_scheme.py): onnxruntime's own ONNXQuantizer
builds the graph pattern on a weightless model, and each weight is read, transposed or quantized,
and spilled to the scratch file one at a time.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from ..reading.protos import ModelProto, TensorProto
from .ort_scheme import Spill, Tick, _quantizer_class, quantize_graph
from .pairsafe import max_pair_sum, quantize_pairsafe
from .pointwise import PointwiseReport, WeightIO, rewrite_pointwise
from .stubs import Store

FAST = "fast"
SHERPA_ONNX = "sherpa-onnx"
SCHEMES = (FAST, SHERPA_ONNX)
DEFAULT_SCHEME = FAST
METHOD = "sherpa-fixed fast int8"
# MatMuls whose weights stay 8-bit unsigned (u8u8, exact everywhere): NeMo names them after their module.
EXACT_U8 = re.compile(r"/self_attn/linear_(v|out)/")


def weight_type(scheme: str, role: str) -> str:
    """sherpa-onnx's scripts: QUInt8 encoder, QInt8 decoder/joiner. fast: QInt8 (pair-safe) for all three."""
    if scheme == FAST:
        return "QInt8"
    return "QUInt8" if role == "encoder" else "QInt8"


def scheme_summary(scheme: str, per_channel: bool) -> dict:
    """What quantize reports as its scheme (QuantizeResult.scheme), role by role."""
    roles = ("encoder", "decoder", "joiner")
    if scheme == SHERPA_ONNX:
        return {"name": SHERPA_ONNX, "method": "onnxruntime.quantize_dynamic", "per_channel": per_channel,
                "weight_type": {r: weight_type(scheme, r) for r in roles}}
    return {"name": FAST, "method": METHOD, "per_channel": True, "pair_safe": True,
            "weight_type": {r: weight_type(scheme, r) for r in roles}}


def stub_io(store: Store, spill: Spill) -> WeightIO:
    """Weights read from their stubs (bounded reads) and new ones spilled to the scratch file at once."""
    from onnx import numpy_helper

    from .stubs import clear_stub

    def read(t: TensorProto) -> np.ndarray:
        ref = store.ref_of(t)
        if ref is None:
            return numpy_helper.to_array(t)
        full = TensorProto()
        full.CopyFrom(t)
        clear_stub(full)
        full.raw_data = store.read(ref)
        return numpy_helper.to_array(full)

    def make(name: str, values: np.ndarray) -> TensorProto:
        t = numpy_helper.from_array(values, name)
        if values.nbytes < 1024:
            return t
        spill.put(t)
        # A fresh message: protobuf keeps a cleared field's bytes until its message is freed (stubs.py).
        stub = TensorProto()
        stub.CopyFrom(t)
        return stub

    return WeightIO(read=read, make=make)


def _type_new_tensors(model: ModelProto, known: set[str]) -> None:
    """Float value_info for the tensors the rewrite made (onnxruntime's quantizer needs each MatMul output's type)."""
    from onnx import helper

    typed = known | {v.name for v in model.graph.value_info}
    for node in model.graph.node:
        for name in node.output:
            if name and name not in typed:
                model.graph.value_info.append(helper.make_tensor_value_info(name, TensorProto.FLOAT, None))
                typed.add(name)


def _pairsafe_quantizer_class():
    base = _quantizer_class()

    class PairSafeQuantizer(base):
        """The streaming quantizer, with pair-safe per-channel int8 for 2-D weights.

        MatMul weights are [K, N] with a scale per column (axis 1); LSTM weights reach here as
        [4*hidden, input] with a scale per row (axis 0) and are transposed to [input, 4*hidden] for
        the kernel by onnxruntime's LSTM quantizer afterwards, so K is their axis 1.
        """

        max_pair: int = 0
        u8_weights: frozenset[str] = frozenset()  # kept full 8-bit as uint8 (EXACT_U8)

        def quantize_weight_per_channel_impl(self, weight_name, weight_qType, channel_axis, reduce_range=True,
                                             keep_float_weight=False):
            from onnx import helper, numpy_helper

            if weight_name in self.u8_weights and weight_qType == TensorProto.INT8:
                return super().quantize_weight_per_channel_impl(weight_name, TensorProto.UINT8, channel_axis,
                                                                reduce_range, keep_float_weight)
            weight = self.model.get_initializer(weight_name)
            if (weight is None or len(weight.dims) != 2 or channel_axis not in (0, 1, -1)
                    or weight_qType != TensorProto.INT8 or keep_float_weight):
                return super().quantize_weight_per_channel_impl(weight_name, weight_qType, channel_axis,
                                                                reduce_range, keep_float_weight)
            values = numpy_helper.to_array(self._full(weight))
            if channel_axis == 0:
                q, scale = quantize_pairsafe(values.T)
                q = np.ascontiguousarray(q.T)
            else:
                q, scale = quantize_pairsafe(values)
            del values
            self.max_pair = max(self.max_pair, max_pair_sum(q if channel_axis != 0 else q.T))
            n = int(weight.dims[0 if channel_axis == 0 else 1])
            names = (weight_name + "_quantized", weight_name + "_zero_point", weight_name + "_scale")
            scale_t = helper.make_tensor(names[2], weight.data_type, [n], scale.tolist())
            zero_t = helper.make_tensor(names[1], TensorProto.INT8, [n], [0] * n)
            q_t = numpy_helper.from_array(q, names[0])
            del q
            with self._spilling(weight_name):
                self.model.initializer_extend([scale_t, zero_t])
                self.model.initializer_extend([q_t])
            return names

    return PairSafeQuantizer


def quantize_fast(src: Path, role: str, *, nodes_to_exclude: Sequence[str], store: Store, spill: Spill,
                  scratch: Path, tick: Tick | None = None) -> tuple[ModelProto, int, dict]:
    """The fast scheme for one model: returns the model (with stubs), the weights quantized, and a record."""
    excluded = set(nodes_to_exclude)
    report = PointwiseReport()

    u8: set[str] = set()

    def rewrite(model: ModelProto) -> None:
        nonlocal report
        known = {v.name for v in model.graph.input} | {v.name for v in model.graph.output}
        known |= {o for n in model.graph.node for o in n.output}
        report = rewrite_pointwise(model.graph, stub_io(store, spill), only=lambda n: n.name not in excluded)
        _type_new_tensors(model, known)
        u8.update(n.input[1] for n in model.graph.node if n.op_type == "MatMul" and EXACT_U8.search(n.name))

    holder: dict = {}

    class Recording(_pairsafe_quantizer_class()):
        def quantize_model(self):
            holder["q"] = self
            self.u8_weights = frozenset(u8)
            return super().quantize_model()

    encoder = role == "encoder"
    model, count = quantize_graph(src, weight_type="QInt8", per_channel=True, nodes_to_exclude=sorted(excluded),
                                  store=store, spill=spill, scratch=scratch, tick=tick,
                                  op_types=["MatMul"] if encoder else None, rewrite=rewrite if encoder else None,
                                  quantizer_class=Recording)
    q = holder.get("q")
    info = {"pair_safe": True, "max_pair_sum": q.max_pair if q is not None else 0}
    if encoder:
        info.update(report.to_json())
        info["uint8_weights"] = sum(1 for t in model.graph.initializer
                                    if t.name.endswith("_quantized") and t.data_type == TensorProto.UINT8)
    return model, count, info


def quantize_role(src: Path, role: str, *, scheme: str, per_channel: bool, nodes_to_exclude: Sequence[str],
                  store: Store, spill: Spill, scratch: Path, tick: Tick | None, version: str, ort_version: str
                  ) -> tuple[ModelProto, int, dict]:
    """One model of the set in `scheme`: the model (with stubs), the weights quantized, and the record
    written under QUANTIZED_KEY (report.py reads it back; sherpa-onnx's record is unchanged from before
    schemes existed, so that scheme's files stay byte-identical)."""
    wt = weight_type(scheme, role)
    if scheme == FAST:
        model, count, info = quantize_fast(src, role, nodes_to_exclude=nodes_to_exclude, store=store, spill=spill,
                                           scratch=scratch, tick=tick)
        record = {"version": version, "scheme": FAST, "method": METHOD, "weight_type": wt,
                  "per_channel": True, **info, "excluded_nodes": len(nodes_to_exclude), "weights_quantized": count,
                  "onnxruntime": ort_version}
        return model, count, record
    model, count = quantize_graph(src, weight_type=wt, per_channel=per_channel, nodes_to_exclude=nodes_to_exclude,
                                  store=store, spill=spill, scratch=scratch, tick=tick)
    record = {"version": version, "method": "onnxruntime.quantize_dynamic", "weight_type": wt,
              "per_channel": per_channel, "excluded_nodes": len(nodes_to_exclude), "weights_quantized": count,
              "onnxruntime": ort_version}
    return model, count, record


def scratch_bytes(fp32_bytes: int, scheme: str) -> int:
    """Disk the run needs at its peak: the int8 spill and output (a quarter of fp32 each), and for fast the
    transposed pointwise weights in fp32 (an eighth of the 1.1B encoder's weights)."""
    return fp32_bytes // 2 + (fp32_bytes // 8 if scheme == FAST else 0) + (64 << 20)


__all__ = ["DEFAULT_SCHEME", "FAST", "SCHEMES", "SHERPA_ONNX", "quantize_fast", "quantize_role",
           "scheme_summary", "scratch_bytes", "stub_io", "weight_type"]
