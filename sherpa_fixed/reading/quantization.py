"""How a graph was quantized, read from the graph alone (for inspect, and to refuse int8 input).

Files sherpa-fixed writes say so in their metadata (`sherpa_fixed_quantized`:
method, weight type, per-channel, nodes kept fp32). Files from elsewhere
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


def describe(model: ModelProto, metadata: dict[str, str] | None = None) -> dict | None:
    """None for a float graph; else what is known about how it was quantized."""
    ops = quantized_ops(model)
    meta = metadata if metadata is not None else {p.key: p.value for p in model.metadata_props}
    if not ops and QUANTIZED_KEY not in meta:
        return None
    out: dict = {"operators": dict(sorted(ops.items())), "weights": dict(sorted(weight_types(model).items()))}
    if {"QuantizeLinear", "DequantizeLinear"} <= set(ops) and "DynamicQuantizeLinear" not in ops:
        out["scheme"] = "static (QDQ)"
    elif "MatMulNBits" in ops:
        out["scheme"] = "weight-only (MatMulNBits)"
    else:
        out["scheme"] = "dynamic (onnxruntime quantize_dynamic pattern)"
    if QUANTIZED_KEY in meta:
        try:
            out["by"] = {"tool": "sherpa-fixed quantize", **json.loads(meta[QUANTIZED_KEY])}
        except ValueError:
            out["by"] = {"tool": "sherpa-fixed quantize"}
    return out
