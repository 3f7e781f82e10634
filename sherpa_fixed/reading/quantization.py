"""How a graph was quantized, read from the graph alone (for inspect, and to refuse int8 input).

Files sherpa-fixed writes say so in their metadata (`sherpa_fixed_quantized`:
scheme, method, weight type, per-channel, nodes kept fp32; files of the
sherpa-onnx scheme carry no scheme key, as before schemes existed). Files from elsewhere
(onnxruntime's quantize_dynamic, as in sherpa-onnx's releases) are
recognised by their operators: dynamic quantization leaves
DynamicQuantizeLinear + MatMulInteger/ConvInteger (DynamicQuantizeLSTM for
LSTMs); static QDQ models have QuantizeLinear/DequantizeLinear pairs.
"""

from __future__ import annotations

import json
from collections import Counter

from .onnx_graph import all_nodes
from .protos import ModelProto, TensorProto

QUANTIZED_KEY = "sherpa_fixed_quantized"
INTEGER_OPS = {"DynamicQuantizeLinear", "MatMulInteger", "ConvInteger", "DynamicQuantizeLSTM", "QuantizeLinear",
               "QLinearMatMul", "QLinearConv", "MatMulNBits", "DynamicQuantizeMatMul", "QGemm"}


def quantized_ops(model: ModelProto) -> Counter:
    """Quantized operators in the graph (subgraphs included), by type."""
    return Counter(n.op_type for n in all_nodes(model.graph) if n.op_type in INTEGER_OPS)


def weight_types(model: ModelProto) -> Counter:
    """Element types of the quantized weight initializers (onnxruntime names them `<name>_quantized`)."""
    names = {TensorProto.UINT8: "uint8", TensorProto.INT8: "int8"}
    return Counter(names[t.data_type] for t in model.graph.initializer
                   if t.data_type in names and t.name.endswith("_quantized"))


def per_column_weights(model: ModelProto) -> bool:
    """True when a MatMulInteger/ConvInteger weight has a zero point per output column (per-channel)."""
    inits = {t.name: t for t in model.graph.initializer}
    return any(n.op_type in ("MatMulInteger", "ConvInteger") and len(n.input) > 3 and n.input[3] in inits
               and any(d > 1 for d in inits[n.input[3]].dims) for n in all_nodes(model.graph))


def int8_scheme(model: ModelProto, ops: Counter, weights: Counter, record: dict | None) -> dict:
    """Which of quantize's schemes made the file, and whether its int8 products are exact on every CPU.

    From sherpa-fixed's record when there is one; else from the pattern: onnxruntime's dynamic
    quantization per tensor (DynamicQuantizeLinear/LSTM, one scale per weight) is what sherpa-onnx's
    releases ship (QUInt8 encoder, QInt8 decoder and joiner). Signed int8 weights go through
    onnxruntime's u8s8 GEMM, whose 16-bit pair sums can saturate on x86 without VNNI (pairsafe.py)
    unless the weights were made pair-safe, which only the record can tell; uint8 weights (u8u8) are
    exact everywhere.
    """
    dynamic = bool({"DynamicQuantizeLinear", "DynamicQuantizeLSTM"} & set(ops))
    if record is not None:
        name = record.get("scheme") or ("sherpa-onnx" if record.get("method") == "onnxruntime.quantize_dynamic"
                                        else "other")
        source = "sherpa-fixed's record"
    elif dynamic and not per_column_weights(model):
        name, source = "sherpa-onnx", "operators: onnxruntime quantize_dynamic, per tensor (sherpa-onnx's releases)"
    else:
        name, source = "other", "operators"
    out: dict = {"int8_scheme": name, "int8_scheme_from": source}
    if record is not None and record.get("pair_safe"):
        out["exact_on_every_cpu"] = True
    elif weights.get("int8"):
        out["exact_on_every_cpu"] = False
        out["portability"] = ("signed int8 weights: on x86 CPUs without AVX512-VNNI/AVX-VNNI, onnxruntime's u8s8 "
                              "kernel (vpmaddubsw) can saturate; `sherpa-fixed quantize` (scheme fast) writes "
                              "pair-safe weights")
    elif weights.get("uint8"):
        out["exact_on_every_cpu"] = True
    else:
        out["exact_on_every_cpu"] = None
    return out


def describe(model: ModelProto, metadata: dict[str, str] | None = None) -> dict | None:
    """None for a float graph; else what is known about how it was quantized (a pure function of the
    graph skeleton and its metadata: weight values are never needed)."""
    ops = quantized_ops(model)
    meta = metadata if metadata is not None else {p.key: p.value for p in model.metadata_props}
    if not ops and QUANTIZED_KEY not in meta:
        return None
    weights = weight_types(model)
    out: dict = {"operators": dict(sorted(ops.items())), "weights": dict(sorted(weights.items()))}
    if {"QuantizeLinear", "DequantizeLinear"} <= set(ops) and "DynamicQuantizeLinear" not in ops:
        out["scheme"] = "static (QDQ)"
    elif "MatMulNBits" in ops:
        out["scheme"] = "weight-only (MatMulNBits)"
    else:
        out["scheme"] = "dynamic (onnxruntime quantize_dynamic pattern)"
    record = None
    if QUANTIZED_KEY in meta:
        try:
            record = json.loads(meta[QUANTIZED_KEY])
            out["by"] = {"tool": "sherpa-fixed quantize", **record}
        except ValueError:
            out["by"] = {"tool": "sherpa-fixed quantize"}
        if not isinstance(record, dict):
            record = {}
    out.update(int8_scheme(model, ops, weights, record))
    return out
