"""The Conformer's pointwise convolutions as MatMuls, so that int8 reaches them through the fast MatMul path.

NeMo exports each Conformer convolution module as

    Transpose (B,T,D -> B,D,T) -> Conv k=1 (pointwise_conv1, D -> 2D) -> GLU (Split axis 1, Sigmoid, Mul)
    -> mask (Where) -> Pad -> depthwise Conv -> Swish -> Conv k=1 (pointwise_conv2, D -> D) -> Transpose back

A kernel-1, stride-1, ungrouped Conv1d is a MatMul over the channel axis:
y[b, :, t] = W[:, :, 0] @ x[b, :, t] + bias. As a Conv it stays fp32 in a MatMul-only int8 scheme
(ConvInteger is slow: docs/quantize.md), and at the 1.1B size the two of them are a fifth of an
int8 layer's time; as MatMuls they quantize like the feed-forward layers. The rewrite is exact in
real arithmetic (the fp32 outputs differ only by summation order; tests/test_int8_scheme.py
checks it in onnxruntime):

    Conv(X, W, b) -> Transpose(X) -> MatMul(., W[:, :, 0].T) -> Add(., b) -> Transpose

and the Transposes it adds cancel against the module's own: the one before pointwise_conv1 and the
one after pointwise_conv2 disappear, and the one left after pointwise_conv1 is pushed through the
GLU (its Split moves to the last axis) so that it transposes D channels instead of 2D. The module
then has two Transposes of D channels, as before.

Weights are read and written through a `WeightIO` (one tensor at a time): in memory for tests, from
stubs on disk for the streamed quantizer (scheme.py).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from ..reading.protos import GraphProto, NodeProto, TensorProto

SWAP = [0, 2, 1]  # (B, C, T) <-> (B, T, C)


@dataclass
class WeightIO:
    """How the rewrite reads a weight's values and makes a new initializer from values."""

    read: Callable[[TensorProto], np.ndarray]
    make: Callable[[str, np.ndarray], TensorProto]


@dataclass
class PointwiseReport:
    convs: int = 0
    transposes_removed: int = 0
    transposes_added: int = 0
    glu_moved: int = 0

    def to_json(self) -> dict:
        return {"convs_as_matmul": self.convs, "transposes_removed": self.transposes_removed,
                "transposes_added": self.transposes_added, "glu_transposes_moved": self.glu_moved}


def _attr(node: NodeProto, name: str, default=None):
    for a in node.attribute:
        if a.name == name:
            if a.ints:
                return list(a.ints)
            if a.HasField("s") or a.type == a.STRING:
                return a.s.decode()
            return a.i
    return default


def _is_swap(node: NodeProto | None) -> bool:
    return node is not None and node.op_type == "Transpose" and _attr(node, "perm") == SWAP


def is_pointwise(node: NodeProto, inits: dict[str, TensorProto]) -> bool:
    """A Conv1d with a kernel of 1, stride 1, no dilation, no padding, one group and constant weights."""
    if node.op_type != "Conv" or node.domain not in ("", "ai.onnx") or len(node.input) < 2:
        return False
    w = inits.get(node.input[1])
    if w is None or list(w.dims)[2:] != [1] or len(w.dims) != 3 or w.data_type != TensorProto.FLOAT:
        return False
    if len(node.input) > 2 and node.input[2] and node.input[2] not in inits:
        return False
    ones = (None, [1])
    return (_attr(node, "group", 1) == 1 and _attr(node, "kernel_shape") in ones and _attr(node, "strides") in ones
            and _attr(node, "dilations") in ones and _attr(node, "pads") in (None, [0, 0]))


class _Graph:
    """The graph's nodes as a list, with producers and consumers looked up as nodes are replaced.

    The nodes are edited in this list and written back once, at the end: rebuilding the repeated
    field after every edit would copy the messages and detach the references held here.
    """

    def __init__(self, graph: GraphProto):
        self.graph = graph
        self.nodes: list[NodeProto] = list(graph.node)
        self.outputs = {o.name for o in graph.output}

    def producer(self, name: str) -> NodeProto | None:
        return next((n for n in self.nodes if name in n.output), None)

    def consumers(self, name: str) -> list[NodeProto]:
        return [n for n in self.nodes if name in n.input]

    def only_consumer(self, name: str) -> NodeProto | None:
        users = self.consumers(name)
        return users[0] if len(users) == 1 and name not in self.outputs else None

    def index(self, node: NodeProto) -> int:
        return next(k for k, n in enumerate(self.nodes) if n is node)

    def replace(self, old: NodeProto, new: list[NodeProto]) -> None:
        i = self.index(old)
        self.nodes[i:i + 1] = new

    def insert_after(self, anchor: NodeProto, node: NodeProto) -> None:
        self.nodes.insert(self.index(anchor) + 1, node)

    def commit(self) -> None:
        del self.graph.node[:]
        self.graph.node.extend(self.nodes)


def _node(op: str, inputs: list[str], outputs: list[str], name: str, **attrs) -> NodeProto:
    from onnx import helper

    return helper.make_node(op, inputs, outputs, name=name, **attrs)


def _drop_value_info(graph: GraphProto, names: set[str]) -> None:
    keep = [v for v in graph.value_info if v.name not in names]
    del graph.value_info[:]
    graph.value_info.extend(keep)


def rewrite_pointwise(graph: GraphProto, io: WeightIO, only: Callable[[NodeProto], bool] | None = None
                      ) -> PointwiseReport:
    """Turn every pointwise Conv1d of the graph (or those `only` accepts) into Transpose/MatMul/Add."""
    report = PointwiseReport()
    inits = {t.name: t for t in graph.initializer}
    g = _Graph(graph)
    convs = [n for n in g.nodes if is_pointwise(n, inits) and (only is None or only(n))]
    stale: set[str] = set()
    dropped: set[str] = set()
    for conv in convs:
        x, w_name, y = conv.input[0], conv.input[1], conv.output[0]
        bias = conv.input[2] if len(conv.input) > 2 and conv.input[2] else None
        base = conv.name.rsplit("/", 1)[0] if "/" in conv.name else (conv.name or y)
        values = io.read(inits[w_name])
        wt = io.make(_fresh_name(inits, w_name + "_matmul"), np.ascontiguousarray(values[:, :, 0].T))
        del values
        inits[wt.name] = wt
        graph.initializer.append(wt)
        new: list[NodeProto] = []
        before = g.producer(x)
        if _is_swap(before) and g.only_consumer(x) is conv:
            source = before.input[0]
            g.replace(before, [])
            stale.add(x)
            report.transposes_removed += 1
        else:
            source = f"{base}/MatMul_input"
            new.append(_node("Transpose", [x], [source], f"{base}/Transpose_in", perm=SWAP))
            report.transposes_added += 1
        after = g.only_consumer(y)
        final = after.output[0] if _is_swap(after) else None
        mm_out = final if final and not bias else f"{base}/MatMul_output_0"
        new.append(_node("MatMul", [source, wt.name], [mm_out], f"{base}/MatMul"))
        out = mm_out
        if bias:
            out = final or f"{base}/Add_output_0"
            new.append(_node("Add", [mm_out, bias], [out], f"{base}/Add"))
        if final:
            g.replace(after, [])
            stale.add(y)
            report.transposes_removed += 1
        else:
            new.append(_node("Transpose", [out], [y], f"{base}/Transpose_out", perm=SWAP))
            report.transposes_added += 1
        g.replace(conv, new)
        if not g.consumers(w_name):
            dropped.add(w_name)
        report.convs += 1
    report.glu_moved = _move_transposes_past_glu(g, stale)
    g.commit()
    if dropped:
        keep = [t for t in graph.initializer if t.name not in dropped]
        del graph.initializer[:]
        graph.initializer.extend(keep)
    _drop_value_info(graph, stale)
    return report


def _fresh_name(inits: dict[str, TensorProto], name: str) -> str:
    k, out = 0, name
    while out in inits:
        k += 1
        out = f"{name}_{k}"
    return out


def _move_transposes_past_glu(g: _Graph, stale: set[str]) -> int:
    """Transpose(perm 0,2,1) -> Split(axis 1) -> Mul(a, Sigmoid(b))  ==>  Split(axis 2) -> Mul -> Transpose.

    GLU halves the channels, so the Transpose after it moves half the bytes.
    """
    moved = 0
    for t in [n for n in g.nodes if _is_swap(n)]:
        split = g.only_consumer(t.output[0])
        if split is None or split.op_type != "Split" or len(split.output) != 2 or split.input[0] != t.output[0]:
            continue
        if _attr(split, "axis", 0) not in (1, -2):
            continue
        a, b = split.output
        sig, mul = g.only_consumer(b), g.only_consumer(a)
        if sig is None or sig.op_type != "Sigmoid" or mul is None or mul.op_type != "Mul":
            continue
        if g.only_consumer(sig.output[0]) is not mul or sorted(mul.input) != sorted([a, sig.output[0]]):
            continue
        stale.update({t.output[0], a, b, sig.output[0]})
        split.input[0] = t.input[0]
        for attr in split.attribute:
            if attr.name == "axis":
                attr.i = 2
        glu_out = mul.output[0]
        mul.output[0] = glu_out + "_before_transpose"
        g.replace(t, [])
        g.insert_after(mul, _node("Transpose", [mul.output[0]], [glu_out], t.name or f"{glu_out}/Transpose",
                                  perm=SWAP))
        moved += 1
    return moved


def in_memory_io() -> WeightIO:
    """Weights held in the proto (tests and small models)."""
    from onnx import numpy_helper

    return WeightIO(read=numpy_helper.to_array, make=lambda name, a: numpy_helper.from_array(a, name))


__all__ = ["PointwiseReport", "WeightIO", "in_memory_io", "is_pointwise", "rewrite_pointwise"]
