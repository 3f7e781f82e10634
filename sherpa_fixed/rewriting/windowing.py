"""Turn a fixed-window encoder into one that takes any length, inside the ONNX graph.

For sherpa-onnx users outside Python (C++, Rust, Go, Android, iOS) the fix has
to live in the model file. The original fixed-T encoder graph becomes the
body of an ONNX Loop over windows; an outer Loop walks the batch, so the
result accepts any batch size too.

For one utterance of L frames, with window W = T, hop H and context C (in
frames, W = H + 2C, H and C multiples of the subsampling factor s):

- windows start at k * H; when L > W the last one slides back over real
  audio to the first multiple of s at or after L - W, so every window sits
  on the encoder's output grid;
- each window runs the original graph with `length` = the real frames it
  holds (W, or L when L < W, or what is left under the last window): a
  NeMo export masks frames past `length` (measured: padding content changes
  no valid output frame), so padding never reaches a kept frame;
- window k keeps output frames [b_k, b_{k+1}) of the utterance, with
  b_0 = 0, b_k = k*H/s + C/s, b_K = ceil(L/s): each kept frame has at least
  C frames of audio on both sides inside its window, except at the ends;
- `encoded_lengths` is ceil(L/s), what NeMo's conv subsampling gives for
  L frames; items of a batch are padded to the longest with zeros.

Initializers move, unchanged, into the Loop body that uses them (external
weights stay in their file, shared, never copied).
"""

from __future__ import annotations

import copy
import json
import math
from dataclasses import dataclass

import numpy as np

from .. import __version__
from ..errors import BadInputError
from ..reading.metadata import WINDOW_MARKER
from ..reading.protos import AttributeProto, GraphProto, ModelProto, NodeProto, TensorProto

# prepare --window on a DYNAMIC encoder: window length when none is given (measured on the accuracy
# benchmark, docs/long-audio.md).
DEFAULT_DYNAMIC_WINDOW_S = 20.0
MAX_WINDOW_S = 300.0  # a dynamic encoder's window: attention per window costs its square in memory


@dataclass(frozen=True)
class WindowParams:
    window: int  # frames: the encoder's fixed T
    hop: int  # frames between window starts
    context: int  # frames each kept stretch has on each side
    subsampling: int

    def to_json(self) -> dict:
        return {"window_frames": self.window, "hop_frames": self.hop, "context_frames": self.context,
                "subsampling_factor": self.subsampling, "by": f"sherpa-fixed {__version__}"}


def window_params(window: int, subsampling: int, *, hop_seconds: float | None = None,
                  context_seconds: float | None = None, frame_s: float = 0.01) -> WindowParams:
    """Hop and context in frames, on the output grid, with window = hop + 2 * context."""
    s = subsampling
    # Refused before any arithmetic: 1e308 s of hop is no number of frames (OverflowError, issue 20).
    if hop_seconds is not None and not (math.isfinite(hop_seconds) and s * frame_s <= hop_seconds
                                        <= window * frame_s):
        raise BadInputError(f"--hop {hop_seconds:g} s must be between one output frame ({s * frame_s:g} s) and "
                            f"the window ({window * frame_s:g} s)", fix="choose a hop in that range")
    if context_seconds is not None and not (math.isfinite(context_seconds) and 0 <= context_seconds
                                            <= window * frame_s):
        raise BadInputError(f"context {context_seconds:g} s leaves no hop in a {window * frame_s:g} s window",
                            fix="use a smaller --context")
    if window % s:
        raise BadInputError(f"the encoder's window ({window} frames) is not a multiple of its subsampling ({s})")
    if hop_seconds is not None and context_seconds is not None:
        hop, ctx = round(hop_seconds / frame_s / s) * s, round(context_seconds / frame_s / s) * s
        if hop + 2 * ctx != window:
            raise BadInputError(f"hop {hop_seconds} s + 2 x context {context_seconds} s must equal the window "
                                f"({window * frame_s:g} s)", fix="give one of --hop and --context")
    elif hop_seconds is not None:
        hop = round(hop_seconds / frame_s / s) * s
        if not s <= hop <= window:  # else the context below comes out negative ('context -46 s', issue 11)
            raise BadInputError(f"--hop {hop_seconds:g} s must be between one output frame ({s * frame_s:g} s) and "
                                f"the window ({window * frame_s:g} s)", fix="choose a hop in that range")
        ctx = (window - hop) // 2 // s * s
        hop = window - 2 * ctx
    else:
        ctx = round((1.0 if context_seconds is None else context_seconds) / frame_s / s) * s
        hop = window - 2 * ctx
    if hop < s or ctx < 0:
        raise BadInputError(f"context {ctx * frame_s:g} s leaves no hop in a {window * frame_s:g} s window",
                            fix="use a smaller --context")
    return WindowParams(window, hop, ctx, s)


class _G:
    """A little builder: nodes with unique names, int64 constants."""

    def __init__(self, prefix: str):
        self.prefix = prefix
        self.nodes: list[NodeProto] = []
        self.n = 0

    def name(self, base: str) -> str:
        self.n += 1
        return f"{self.prefix}{base}_{self.n}"

    def op(self, op: str, inputs: list[str], **attrs) -> str:
        from onnx import helper  # graph building only: reading the encoder never imports onnx (protos.py)

        out = self.name(op)
        self.nodes.append(helper.make_node(op, inputs, [out], name=out, **attrs))
        return out

    def const(self, value, dtype=np.int64) -> str:
        from onnx import helper, numpy_helper

        out = self.name("c")
        arr = np.array(value, dtype=dtype)
        self.nodes.append(helper.make_node("Constant", [], [out], name=out, value=numpy_helper.from_array(arr, out)))
        return out


def _inline(original: GraphProto, prefix: str, audio: str, length: str) -> tuple[list[NodeProto], str]:
    """The original encoder's nodes, values renamed under prefix, its two inputs bound to given names.

    Returns the nodes and the renamed name of its first output (the encoder frames).
    """
    inits = {t.name for t in original.initializer}
    inputs = [i.name for i in original.input if i.name not in inits]
    bind = {inputs[0]: audio, inputs[1]: length}

    def rename(name: str) -> str:
        if not name or name in inits:
            return name
        return bind.get(name, prefix + name)

    nodes = []
    for node in original.node:
        if any(a.type in (AttributeProto.GRAPH, AttributeProto.GRAPHS) for a in node.attribute):
            raise BadInputError("the encoder already contains control flow (If/Loop/Scan)",
                                fix="windowing supports plain feed-forward encoder graphs")
        n = copy.deepcopy(node)
        n.name = prefix + (node.name or node.output[0])
        n.input[:] = [rename(x) for x in node.input]
        n.output[:] = [rename(x) for x in node.output]
        nodes.append(n)
    return nodes, rename(original.output[0].name)


def window_encoder(model: ModelProto, params: WindowParams) -> ModelProto:
    """A new encoder model that accepts any batch and length (see the module docstring)."""
    from onnx import helper

    g0 = model.graph
    inits = {t.name for t in g0.initializer}
    ins = [i for i in g0.input if i.name not in inits]
    if len(ins) != 2 or len(g0.output) < 2:
        raise BadInputError("not a NeMo encoder signature (audio_signal, length -> outputs, encoded_lengths)")
    audio_vi, length_vi = ins
    feat = audio_vi.type.tensor_type.shape.dim[1].dim_value
    hidden = g0.output[0].type.tensor_type.shape.dim[1]
    len_type = length_vi.type.tensor_type.elem_type
    W, H, C, S = params.window, params.hop, params.context, params.subsampling
    Hs, Cs = H // S, C // S
    d_model = hidden.dim_value
    if not d_model:
        raise BadInputError("the encoder's output width is not fixed in its signature")

    # ---------------------------------------------------------------- inner body: one window
    b = _G("sfw/win/")
    # loop inputs
    k, cond_in = "sfw/win/k", "sfw/win/cond_in"
    audio_in = "audio_signal"  # the graph input, read from the outer scope
    # outer-scope values the body reads (defined in the batch body below)
    item_i1, len_b, last = "sfw/item/i1", "sfw/item/len", "sfw/item/last"
    start = b.op("Min", [b.op("Mul", [k, b.const(H)]), last])
    start1 = b.op("Unsqueeze", [start, b.const([0])])
    # Cut the window straight out of the input (no copy of the whole utterance: an hour of 80-mel
    # features is 115 MB) and zero-pad only a window that reaches past the real frames.
    real_end1 = b.op("Unsqueeze", [b.op("Min", [b.op("Add", [start, b.const(W)]), len_b]), b.const([0])])
    cut = b.op("Slice", [audio_in, b.op("Concat", [item_i1, start1], axis=0),
                         b.op("Concat", [b.op("Add", [item_i1, b.const([1])]), real_end1], axis=0), b.const([0, 2])])
    short = b.op("Sub", [b.const([W]), b.op("Sub", [real_end1, start1])])
    window = b.op("Pad", [cut, b.op("Concat", [b.const([0, 0, 0, 0, 0]), short], axis=0)], mode="constant")
    wlen = b.op("Min", [b.const(W), b.op("Sub", [len_b, start])])
    wlen1 = b.op("Unsqueeze", [wlen, b.const([0])])
    if len_type != TensorProto.INT64:
        wlen1 = b.op("Cast", [wlen1], to=len_type)
    body_nodes, enc_out = _inline(g0, "sfw/enc/", window, wlen1)
    b.nodes += body_nodes
    # Each window emits all of its P = W/S output frames as a scan output: equal pieces, stitched once
    # after the Loop by one Gather that also applies the keep rule. An accumulator grown by a Concat
    # per window copied the output so far at every window (quadratic time) and its ever-larger blocks
    # fragmented onnxruntime's arena (an hour at d_model 1024: 3.4x the output held beyond it, against
    # 1.9x with equal pieces; 14.6 s -> 5.1 s; docs/long-audio.md).
    P = W // S
    cond_out = "sfw/win/cond_out"
    b.nodes.append(helper.make_node("Identity", [cond_in], [cond_out], name="sfw/win/cond"))
    frames_vi = helper.make_tensor_value_info
    win_body = helper.make_graph(
        b.nodes, "window",
        [frames_vi(k, TensorProto.INT64, []), frames_vi(cond_in, TensorProto.BOOL, [])],
        [frames_vi(cond_out, TensorProto.BOOL, []), frames_vi(enc_out, TensorProto.FLOAT,
                                                              [1, d_model, P])])
    # The weights live in the body that uses them, unchanged (external data references included):
    # onnxruntime prepacks a MatMul's constant weights only when they are initializers of the node's
    # own graph. Measured with outer-scope weights: 1.27x slower, and 4.7e-6 off the by-hand windows;
    # in the body: 0.97x, and bit-identical.
    win_body.initializer.extend(g0.initializer)
    win_body.sparse_initializer.extend(g0.sparse_initializer)

    # ---------------------------------------------------------------- middle body: one batch item
    m = _G("sfw/item/")
    i, icond_in, icond_out = "sfw/item/i", "sfw/item/cond_in", "sfw/item/cond_out"
    audio, lengths, max_out = "audio_signal", "length", "sfw/max_out"
    i1 = item_i1
    m.nodes.append(helper.make_node("Unsqueeze", [i, m.const([0])], [i1], name="sfw/item/i1"))
    m.nodes.append(helper.make_node("Squeeze", [m.op("Cast", [m.op("Gather", [lengths, i1])], to=TensorProto.INT64)],
                                    [len_b], name="sfw/item/len"))
    over = m.op("Max", [m.op("Sub", [len_b, m.const(W)]), m.const(0)])
    extra = m.op("Div", [m.op("Add", [over, m.const(H - 1)]), m.const(H)])
    n_windows = m.op("Add", [extra, m.const(1)])
    total_out = m.op("Div", [m.op("Add", [len_b, m.const(S - 1)]), m.const(S)])
    # past one window, the last slides back over real audio to the first multiple of S at or after L - W
    m.nodes.append(helper.make_node("Mul", [m.op("Div", [m.op("Add", [over, m.const(S - 1)]), m.const(S)]),
                                            m.const(S)], [last], name="sfw/item/last"))
    true_c = m.const(True, np.bool_)
    pieces = m.op("Loop", [n_windows, true_c], body=win_body)  # (K, 1, D, P): window k's frames
    # The keep rule: output frame t comes from window j = min(max(t - C/S, 0) // (H/S), K - 1) (window 0
    # keeps [0, H/S + C/S), window j then [j*H/S + C/S, (j+1)*H/S + C/S), the last keeps the rest), which
    # starts at output frame s_j = min(j*H, last) / S: t sits at j*P + t - s_j of the pieces end to end.
    flat = m.op("Reshape", [m.op("Transpose", [pieces], perm=[1, 2, 0, 3]), m.const([1, d_model, -1])])
    t = m.op("Range", [m.const(0), total_out, m.const(1)])
    j = m.op("Min", [m.op("Div", [m.op("Max", [m.op("Sub", [t, m.const(Cs)]), m.const(0)]), m.const(Hs)]),
                     m.op("Sub", [n_windows, m.const(1)])])
    s_j = m.op("Div", [m.op("Min", [m.op("Mul", [j, m.const(H)]), last]), m.const(S)])
    at = m.op("Add", [m.op("Mul", [j, m.const(P)]), m.op("Sub", [t, s_j])])
    frames = m.op("Gather", [flat, at], axis=2)
    # (1, D, total_out) -> padded to the batch's longest -> scan output
    width = m.op("Sub", [max_out, total_out])
    tpad = m.op("Concat", [m.const([0, 0, 0, 0, 0]), m.op("Unsqueeze", [width, m.const([0])])], axis=0)
    padded = "sfw/item/out"
    m.nodes.append(helper.make_node("Pad", [frames, tpad], [padded], name="sfw/item/out_pad", mode="constant"))
    m.nodes.append(helper.make_node("Identity", [icond_in], [icond_out], name="sfw/item/cond"))
    item_body = helper.make_graph(
        m.nodes, "item",
        [frames_vi(i, TensorProto.INT64, []), frames_vi(icond_in, TensorProto.BOOL, [])],
        [frames_vi(icond_out, TensorProto.BOOL, []),
         frames_vi(padded, TensorProto.FLOAT, [1, d_model, "T_out"])])

    # ---------------------------------------------------------------- outer graph
    o = _G("sfw/")
    len64 = o.op("Cast", [lengths], to=TensorProto.INT64)
    out_lens = o.op("Div", [o.op("Add", [len64, o.const(S - 1)]), o.const(S)])
    o.nodes.append(helper.make_node("ReduceMax", [out_lens], [max_out], name="sfw/max", keepdims=0))
    batch = o.op("Gather", [o.op("Shape", [audio]), o.const(0)])
    stacked = o.op("Loop", [batch, o.const(True, np.bool_)], body=item_body)  # (N, 1, D, max_out)
    o.nodes.append(helper.make_node("Squeeze", [stacked, o.const([1])], [g0.output[0].name], name="sfw/out"))
    enc_lens = out_lens if g0.output[1].type.tensor_type.elem_type == TensorProto.INT64 else \
        o.op("Cast", [out_lens], to=g0.output[1].type.tensor_type.elem_type)
    o.nodes.append(helper.make_node("Identity", [enc_lens], [g0.output[1].name], name="sfw/lens"))

    inputs = [helper.make_tensor_value_info(audio_vi.name, audio_vi.type.tensor_type.elem_type,
                                            ["audio_signal_dynamic_axes_1", feat, "audio_signal_dynamic_axes_2"]),
              helper.make_tensor_value_info(length_vi.name, len_type, ["audio_signal_dynamic_axes_1"])]
    outputs = [helper.make_tensor_value_info(g0.output[0].name, g0.output[0].type.tensor_type.elem_type,
                                             ["audio_signal_dynamic_axes_1", d_model, "outputs_time"]),
               helper.make_tensor_value_info(g0.output[1].name, g0.output[1].type.tensor_type.elem_type,
                                             ["audio_signal_dynamic_axes_1"])]
    graph = helper.make_graph(o.nodes, g0.name or "windowed", inputs, outputs)
    new = helper.make_model(graph, opset_imports=list(model.opset_import), producer_name="sherpa-fixed",
                            producer_version=__version__)
    new.ir_version = model.ir_version
    for p in model.metadata_props:
        new.metadata_props.add().CopyFrom(p)
    marker = next((p for p in new.metadata_props if p.key == WINDOW_MARKER), None) or new.metadata_props.add()
    marker.key, marker.value = WINDOW_MARKER, json.dumps(params.to_json(), sort_keys=True)
    return new


def run_by_hand(session, samples: np.ndarray, length: int, params: WindowParams) -> np.ndarray:
    """The reference the windowed graph must equal: the fixed-T encoder run window by window in
    Python with the same placement and keep rules. samples: (1, F, >= length) features."""
    W, H, C, S = params.window, params.hop, params.context, params.subsampling
    feat = samples.shape[1]
    n = 1 if length <= W else 1 + -(-(length - W) // H)
    total = -(-length // S)
    padded = np.zeros((1, feat, max(W, length + S)), np.float32)
    padded[:, :, :length] = samples[:, :, :length]
    names = [i.name for i in session.get_inputs()]
    len_type = np.int64 if "int64" in session.get_inputs()[1].type else np.int32
    last = max(-(-(length - W) // S) * S, 0)
    pieces = []
    for k in range(n):
        start = min(k * H, last)
        out = session.run(None, {names[0]: padded[:, :, start:start + W],
                                 names[1]: np.array([min(W, length - start)], len_type)})[0]
        keep_from = 0 if k == 0 else k * H // S + C // S
        keep_to = total if k == n - 1 else (k + 1) * H // S + C // S
        pieces.append(out[:, :, keep_from - start // S: keep_to - start // S])
    return np.concatenate(pieces, axis=2)
