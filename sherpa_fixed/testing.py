"""Small NeMo-shaped transducer folders built with onnx.helper, for tests, demos and benchmarks.

Real Parakeet weights cannot be downloaded everywhere, but every behaviour
this package cares about lives in the graphs' signatures, metadata and
weight files. These models copy the real export signatures (FACTS.md
section 6: names, ranks, dtypes, dim names, the decoder's second state
input with batch fixed to 1, the pre-encoder's strided convolutions and
node names) with random weights, and run in onnxruntime and sherpa-onnx.

    from sherpa_fixed.testing import ModelSpec, write_model_folder
    write_model_folder("tiny", ModelSpec(feat_dim=80, time="baked"))
"""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from .reading.onnx_graph import uses_external_data
from .rewriting.weights import ONNX_THRESHOLD, aligned, externalize_inline, safe_file_name, set_external

OPSET = 17

TIME_MODES = ("dynamic", "declared", "baked")
BATCH_MODES = ("dynamic", "declared", "baked")
METADATA_MODES = ("correct", "wrong_feat_dim", "missing", "tdt_no_url", "no_normalize", "wrong_vocab")
EXTERNAL_MODES = ("none", "single", "scattered", "torch", "absolute", "escaping", "outside", "missing", "truncated")
INT8_EXTERNAL_MODES = ("none", "own", "shared")


@dataclass(frozen=True)
class ModelSpec:
    """What to build. Defaults: a dynamic 80-mel TDT model with correct metadata, weights inline."""

    feat_dim: int = 80
    tdt: bool = True
    num_durations: int = 5
    vocab_size: int = 16  # NeMo count, without blank
    d_model: int = 32
    pred_hidden: int = 8
    pred_rnn_layers: int = 2
    joint_hidden: int = 8
    conv_channels: int = 4
    layers: int = 1
    time: str = "dynamic"
    frames: int = 800  # the fixed time length when time != "dynamic"
    batch: str = "dynamic"
    pos_emb_max_len: int | None = None  # cap on output frames, as NeMo's rel-pos table
    attention_heads: int = 0  # >0: each block also has full self-attention over time (memory O(T'^2))
    blank_bias: float = 0.0  # added to the joiner's blank logit: >0 makes random weights emit fewer tokens
    metadata: str = "correct"
    normalize_type: str = "per_feature"
    url: str | None = None
    external: str = "none"
    int8: bool = False
    int8_external: str = "none"
    seed: int = 0

    def __post_init__(self):
        for field, allowed in (("time", TIME_MODES), ("batch", BATCH_MODES), ("metadata", METADATA_MODES),
                               ("external", EXTERNAL_MODES), ("int8_external", INT8_EXTERNAL_MODES)):
            if getattr(self, field) not in allowed:
                raise ValueError(f"{field} must be one of {allowed}")
        if self.batch == "baked" and self.time == "dynamic":
            raise ValueError("a baked batch needs a fixed time axis (static-shape export)")

    @property
    def output_size(self) -> int:
        return self.vocab_size + 1 + (self.num_durations if self.tdt else 0)

    def with_(self, **changes) -> ModelSpec:
        return dataclasses.replace(self, **changes)


def conv_out(n: int) -> int:
    """Length after one k=3, stride 2, pad 1 convolution (NeMo's calc_length)."""
    return (n + 2 - 3) // 2 + 1


def subsampled(n: int, stages: int = 3) -> int:
    for _ in range(stages):
        n = conv_out(n)
    return n


class WeightSink:
    """Streams large random weights straight into an external file, so a multi-GB test encoder
    never exists in memory (benchmarks of inspect/prepare on >2 GiB models use this)."""

    def __init__(self, path: Path, location: str, threshold: int = ONNX_THRESHOLD, sparse: bool = False):
        self.path, self.location, self.threshold, self.sparse = path, location, threshold, sparse
        self.file = open(path, "wb")  # noqa: SIM115 - closed by close()
        self.offset = 0

    def add(self, name: str, shape: tuple[int, ...], scale: float, rng: np.random.Generator) -> TensorProto | None:
        count = int(np.prod(shape))
        if count * 4 < self.threshold:
            return None
        start = aligned(self.offset, count * 4)
        self.file.write(b"\0" * (start - self.offset))
        remaining = count
        if self.sparse:  # all-zero weights as a hole: real dims and sizes, no disk or time spent
            self.file.seek(count * 4, os.SEEK_CUR)
            remaining = 0
        while remaining:
            n = min(remaining, 1 << 22)
            self.file.write((rng.standard_normal(n, dtype=np.float32) * scale).tobytes())
            remaining -= n
        t = TensorProto()
        t.name, t.data_type = name, TensorProto.FLOAT
        t.dims.extend(shape)
        set_external(t, self.location, start, count * 4)
        self.offset = start + count * 4
        return t

    def close(self) -> None:
        self.file.truncate(self.offset)
        self.file.close()


class _Builder:
    def __init__(self, seed: int, sink: WeightSink | None = None):
        self.rng = np.random.default_rng(seed)
        self.nodes: list[onnx.NodeProto] = []
        self.inits: list[TensorProto] = []
        self.sink = sink

    def weight(self, name: str, shape: tuple[int, ...], scale: float = 0.3) -> str:
        external = self.sink.add(name, shape, scale, self.rng) if self.sink else None
        if external is not None:
            self.inits.append(external)
            return name
        arr = (self.rng.standard_normal(shape) * scale).astype(np.float32)
        self.inits.append(numpy_helper.from_array(arr, name))
        return name

    def const(self, name: str, value: np.ndarray) -> str:
        out = f"{name}_output_0"
        self.nodes.append(helper.make_node("Constant", [], [out], name=name,
                                           value=numpy_helper.from_array(value, name=name)))
        return out

    def node(self, op: str, inputs: list[str], name: str, n_out: int = 1, **attrs) -> list[str]:
        outs = [f"{name}_output_{i}" for i in range(n_out)]
        self.nodes.append(helper.make_node(op, inputs, outs, name=name, **attrs))
        return outs

    def op(self, op: str, inputs: list[str], name: str, **attrs) -> str:
        return self.node(op, inputs, name, **attrs)[0]


def _model(b: _Builder, name: str, inputs, outputs, metadata: dict[str, str] | None = None) -> onnx.ModelProto:
    graph = helper.make_graph(b.nodes, name, inputs, outputs, b.inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)],
                              producer_name="sherpa-fixed.testing", producer_version="1")
    model.ir_version = 8
    for k, v in (metadata or {}).items():
        p = model.metadata_props.add()
        p.key, p.value = k, str(v)
    return model


def make_encoder(spec: ModelSpec, sink: WeightSink | None = None) -> onnx.ModelProto:
    """audio_signal (N, mel, T) f32, length (N) i64 -> outputs (N, D, T'), encoded_lengths (N)."""
    b = _Builder(spec.seed, sink)
    fixed_t = spec.time != "dynamic"
    batch_dim = 1 if spec.batch != "dynamic" else "audio_signal_dynamic_axes_1"
    time_dim = spec.frames if fixed_t else "audio_signal_dynamic_axes_2"
    len_dim = 1 if spec.batch != "dynamic" else "length_dynamic_axes_1"
    c, f = spec.conv_channels, spec.feat_dim

    x = b.op("Transpose", ["audio_signal"], "/pre_encode/Transpose", perm=[0, 2, 1])
    x = b.op("Unsqueeze", [x, b.const("/pre_encode/Constant", np.array([1], np.int64))], "/pre_encode/Unsqueeze")
    if spec.time == "baked":
        # As in NeMo's static export: the padding mask arange(T) < length is built from a constant of
        # the fixed length, so other lengths fail to broadcast, and frames past `length` are zeroed.
        frames = b.const("/pre_encode/conv/Constant_1", np.arange(spec.frames, dtype=np.int64))
        mask = b.op("Less", [frames, b.op("Unsqueeze", ["length", b.const("/pre_encode/conv/Constant_3",
                                                                             np.array([1], np.int64))],
                                          "/pre_encode/conv/Unsqueeze")], "/pre_encode/conv/Less")
        mask = b.op("Cast", [mask], "/pre_encode/conv/Cast", to=TensorProto.FLOAT)
        mask = b.op("Reshape", [mask, b.const("/pre_encode/conv/Constant_2",
                                              np.array([-1, 1, spec.frames, 1], np.int64))],
                    "/pre_encode/conv/Reshape")
        x = b.op("Mul", [x, mask], "/pre_encode/conv/Mul_3")
    in_ch = 1
    for i, (group, k, stride) in enumerate([(1, 3, 2), (None, 3, 2), (1, 1, 1), (None, 3, 2), (1, 1, 1)]):
        idx = [0, 2, 3, 5, 6][i]
        groups = c if group is None else 1
        w = b.weight(f"pre_encode.conv.{idx}.weight", (c, in_ch // groups if groups > 1 else in_ch, k, k))
        bias = b.weight(f"pre_encode.conv.{idx}.bias", (c,), 0.1)
        pad = 1 if k == 3 else 0
        x = b.op("Conv", [x, w, bias], f"/pre_encode/conv/conv.{idx}/Conv", kernel_shape=[k, k],
                 strides=[stride, stride], pads=[pad] * 4, group=groups, dilations=[1, 1])
        if idx in (0, 3, 6):
            x = b.op("Relu", [x], f"/pre_encode/conv/conv.{idx + 1}/Relu")
        in_ch = c
    f_out = subsampled(f)
    x = b.op("Transpose", [x], "/pre_encode/Transpose_1", perm=[0, 2, 1, 3])
    if spec.batch == "baked":
        shape = np.array([1, subsampled(spec.frames), c * f_out], np.int64)
    else:
        shape = np.array([0, 0, -1], np.int64)
    x = b.op("Reshape", [x, b.const("/pre_encode/Constant_2", shape)], "/pre_encode/Reshape")
    x = b.op("MatMul", [x, b.weight("onnx::MatMul_pre", (c * f_out, spec.d_model), 0.1)], "/pre_encode/out/MatMul")
    x = b.op("Add", [x, b.weight("pre_encode.out.bias", (spec.d_model,), 0.1)], "/pre_encode/out/Add")

    if spec.pos_emb_max_len:
        cap = spec.pos_emb_max_len
        pe = b.const("/pos_enc/Constant", b.rng.standard_normal((1, 2 * cap - 1, spec.d_model)).astype(np.float32)
                     * 0.01)
        t_now = b.op("Gather", [b.op("Shape", [x], "/pos_enc/Shape"),
                                b.const("/pos_enc/Constant_1", np.array([1], np.int64))], "/pos_enc/Gather")
        start = b.op("Max", [b.op("Sub", [b.const("/pos_enc/Constant_2", np.array([cap], np.int64)), t_now],
                                  "/pos_enc/Sub"), b.const("/pos_enc/Constant_3", np.array([0], np.int64))],
                     "/pos_enc/Max")
        rows = b.op("Slice", [pe, start, b.const("/pos_enc/Constant_4", np.array([cap], np.int64)),
                              b.const("/pos_enc/Constant_5", np.array([1], np.int64))], "/pos_enc/Slice")
        x = b.op("Add", [x, rows], "/pos_enc/Add")

    for layer in range(spec.layers):
        if spec.attention_heads:
            x = _attention(b, x, spec, layer)
        p = f"/layers.{layer}/feed_forward"
        h = b.op("MatMul", [x, b.weight(f"layers.{layer}.ff.w1", (spec.d_model, 2 * spec.d_model), 0.2)],
                 f"{p}/linear1/MatMul")
        h = b.op("Relu", [h], f"{p}/activation/Relu")
        h = b.op("MatMul", [h, b.weight(f"layers.{layer}.ff.w2", (2 * spec.d_model, spec.d_model), 0.2)],
                 f"{p}/linear2/MatMul")
        x = _norm(b, b.op("Add", [x, h], f"/layers.{layer}/Add"), spec.d_model, f"/layers.{layer}/norm_out")
    b.nodes.append(helper.make_node("Transpose", [x], ["outputs"], name="/Transpose", perm=[0, 2, 1]))

    # encoded_lengths: NeMo's calc_length, three times floor((L + 2 - 3) / 2 + 1).
    ln = b.op("Cast", ["length"], "/Cast", to=TensorProto.FLOAT)
    for i in range(3):
        ln = b.op("Add", [ln, b.const(f"/Constant_a{i}", np.array(-1.0, np.float32))], f"/Add_{i}")
        ln = b.op("Div", [ln, b.const(f"/Constant_d{i}", np.array(2.0, np.float32))], f"/Div_{i}")
        ln = b.op("Floor", [ln], f"/Floor_{i}")
        ln = b.op("Add", [ln, b.const(f"/Constant_o{i}", np.array(1.0, np.float32))], f"/Add_o{i}")
    b.nodes.append(helper.make_node("Cast", [ln], ["encoded_lengths"], name="/Cast_1", to=TensorProto.INT64))

    inputs = [helper.make_tensor_value_info("audio_signal", TensorProto.FLOAT, [batch_dim, f, time_dim]),
              helper.make_tensor_value_info("length", TensorProto.INT64, [len_dim])]
    outputs = [helper.make_tensor_value_info("outputs", TensorProto.FLOAT,
                                             ["Transposeoutputs_dim_0", spec.d_model, "Transposeoutputs_dim_2"]),
               helper.make_tensor_value_info("encoded_lengths", TensorProto.INT64, [len_dim])]
    return _model(b, "main_graph", inputs, outputs, encoder_metadata(spec))


def _attention(b: _Builder, x: str, spec: ModelSpec, layer: int) -> str:
    """Multi-head self-attention over all output frames, as in a Conformer block (no positions)."""
    d, h = spec.d_model, spec.attention_heads
    dh = d // h
    p = f"/layers.{layer}/self_attn"
    split = b.const(f"{p}/Constant", np.array([0, 0, h, dh], np.int64))
    heads = []
    for name in ("q", "k", "v"):
        t = b.op("MatMul", [x, b.weight(f"layers.{layer}.self_attn.linear_{name}.weight", (d, d), 0.1)],
                 f"{p}/linear_{name}/MatMul")
        t = b.op("Reshape", [t, split], f"{p}/Reshape_{name}")
        perm = [0, 2, 3, 1] if name == "k" else [0, 2, 1, 3]  # k: (N, H, Dh, T); q, v: (N, H, T, Dh)
        heads.append(b.op("Transpose", [t], f"{p}/Transpose_{name}", perm=perm))
    q, k, v = heads
    scores = b.op("MatMul", [q, k], f"{p}/MatMul")
    scores = b.op("Mul", [scores, b.const(f"{p}/Constant_1", np.array(1 / np.sqrt(dh), np.float32))], f"{p}/Mul")
    attn = b.op("Softmax", [scores], f"{p}/Softmax", axis=-1)
    ctx = b.op("MatMul", [attn, v], f"{p}/MatMul_1")
    ctx = b.op("Transpose", [ctx], f"{p}/Transpose", perm=[0, 2, 1, 3])
    ctx = b.op("Reshape", [ctx, b.const(f"{p}/Constant_2", np.array([0, 0, -1], np.int64))], f"{p}/Reshape")
    out = b.op("MatMul", [ctx, b.weight(f"layers.{layer}.self_attn.linear_out.weight", (d, d), 0.1)],
               f"{p}/linear_out/MatMul")
    return _norm(b, b.op("Add", [x, out], f"/layers.{layer}/Add_attn"), d, f"/layers.{layer}/norm_attn")


def _norm(b: _Builder, x: str, d: int, name: str) -> str:
    """LayerNorm over the model dimension, as after every Conformer sub-block: keeps deep random stacks finite."""
    scale = f"{name}.weight"
    bias = f"{name}.bias"
    b.inits += [numpy_helper.from_array(np.ones(d, np.float32), scale),
                numpy_helper.from_array(np.zeros(d, np.float32), bias)]
    return b.op("LayerNormalization", [x, scale, bias], f"{name}/LayerNormalization", axis=-1, epsilon=1e-5)


def make_decoder(spec: ModelSpec) -> onnx.ModelProto:
    """targets (N, U) i32, target_length (N) i32, states.1 (L, N, H), onnx::Slice_3 (L, 1, H)."""
    b = _Builder(spec.seed + 1)
    hd, nl = spec.pred_hidden, spec.pred_rnn_layers
    tgt = b.op("Cast", ["targets"], "/Cast", to=TensorProto.INT64)
    emb = b.weight("prediction.embed.weight", (spec.vocab_size + 1, hd), 0.5)
    x = b.op("Gather", [emb, tgt], "/embed/Gather")
    x = b.op("Transpose", [x], "/Transpose", perm=[1, 0, 2])  # (U, N, H)
    hs, cs = [], []
    for layer in range(nl):
        def sl(src: str, name: str, layer=layer) -> str:
            return b.op("Slice", [src, b.const(f"{name}_s", np.array([layer], np.int64)),
                                  b.const(f"{name}_e", np.array([layer + 1], np.int64)),
                                  b.const(f"{name}_a", np.array([0], np.int64))], name)
        h0 = sl("states.1", f"/dec_rnn/lstm/Slice_{2 * layer}")
        c0 = sl("onnx::Slice_3", f"/dec_rnn/lstm/Slice_{2 * layer + 1}")
        w = b.weight(f"onnx::LSTM_{182 + 20 * layer}", (1, 4 * hd, hd), 0.3)
        r = b.weight(f"onnx::LSTM_{183 + 20 * layer}", (1, 4 * hd, hd), 0.3)
        bias = b.weight(f"onnx::LSTM_{184 + 20 * layer}", (1, 8 * hd), 0.1)
        name = "/dec_rnn/lstm/LSTM" + (f"_{layer}" if layer else "")
        y, yh, yc = b.node("LSTM", [x, w, r, bias, "", h0, c0], name, 3, hidden_size=hd)
        x = b.op("Squeeze", [y, b.const(f"{name}_sq", np.array([1], np.int64))], f"/dec_rnn/lstm/Squeeze_{layer}")
        hs.append(yh)
        cs.append(yc)
    b.nodes.append(helper.make_node("Transpose", [x], ["outputs"], name="/Transpose_1", perm=[1, 2, 0]))
    b.nodes.append(helper.make_node("Identity", ["target_length"], ["prednet_lengths"], name="/Identity"))
    b.nodes.append(helper.make_node("Concat", hs, ["states"], name="/dec_rnn/lstm/Concat", axis=0))
    b.nodes.append(helper.make_node("Concat", cs, ["162"], name="/dec_rnn/lstm/Concat_1", axis=0))
    inputs = [
        helper.make_tensor_value_info("targets", TensorProto.INT32,
                                      ["targets_dynamic_axes_1", "targets_dynamic_axes_2"]),
        helper.make_tensor_value_info("target_length", TensorProto.INT32, ["target_length_dynamic_axes_1"]),
        helper.make_tensor_value_info("states.1", TensorProto.FLOAT, [nl, "states.1_dim_1", hd]),
        helper.make_tensor_value_info("onnx::Slice_3", TensorProto.FLOAT, [nl, 1, hd]),
    ]
    outputs = [
        helper.make_tensor_value_info("outputs", TensorProto.FLOAT,
                                      ["targets_dynamic_axes_1", hd, "targets_dynamic_axes_2"]),
        helper.make_tensor_value_info("prednet_lengths", TensorProto.INT32, ["target_length_dynamic_axes_1"]),
        helper.make_tensor_value_info("states", TensorProto.FLOAT, [nl, "states_dynamic_axes_1", hd]),
        helper.make_tensor_value_info("162", TensorProto.FLOAT, [nl, "Concat162_dim_1", hd]),
    ]
    return _model(b, "main_graph", inputs, outputs)


def make_joiner(spec: ModelSpec) -> onnx.ModelProto:
    """encoder_outputs (N, D, 1), decoder_outputs (N, H, 1) -> outputs (N, 1, 1, V + 1 [+ durations])."""
    b = _Builder(spec.seed + 2)
    j = spec.joint_hidden
    e = b.op("Transpose", ["encoder_outputs"], "/Transpose", perm=[0, 2, 1])
    d = b.op("Transpose", ["decoder_outputs"], "/Transpose_1", perm=[0, 2, 1])
    e = b.op("Add", [b.op("MatMul", [e, b.weight("onnx::MatMul_enc", (spec.d_model, j))], "/enc/MatMul"),
                     b.weight("enc.bias", (j,), 0.1)], "/enc/Add")
    d = b.op("Add", [b.op("MatMul", [d, b.weight("onnx::MatMul_pred", (spec.pred_hidden, j))], "/pred/MatMul"),
                     b.weight("pred.bias", (j,), 0.1)], "/pred/Add")
    e = b.op("Unsqueeze", [e, b.const("/Constant", np.array([2], np.int64))], "/Unsqueeze")
    d = b.op("Unsqueeze", [d, b.const("/Constant_1", np.array([1], np.int64))], "/Unsqueeze_1")
    h = b.op("Relu", [b.op("Add", [e, d], "/Add")], "/joint_net/joint_net.0/Relu")
    h = b.op("MatMul", [h, b.weight("onnx::MatMul_out", (j, spec.output_size), 0.5)], "/joint_net/joint_net.2/MatMul")
    bias = (b.rng.standard_normal(spec.output_size) * 0.1).astype(np.float32)
    bias[spec.vocab_size] += spec.blank_bias
    b.inits.append(numpy_helper.from_array(bias, "joint_net.2.bias"))
    b.nodes.append(helper.make_node("Add", [h, "joint_net.2.bias"], ["outputs"], name="/joint_net/joint_net.2/Add"))
    inputs = [
        helper.make_tensor_value_info("encoder_outputs", TensorProto.FLOAT,
                                      ["encoder_outputs_dynamic_axes_1", spec.d_model,
                                       "encoder_outputs_dynamic_axes_2"]),
        helper.make_tensor_value_info("decoder_outputs", TensorProto.FLOAT,
                                      ["decoder_outputs_dynamic_axes_1", spec.pred_hidden,
                                       "decoder_outputs_dynamic_axes_2"]),
    ]
    outputs = [helper.make_tensor_value_info("outputs", TensorProto.FLOAT,
                                             ["Addoutputs_dim_0", "Addoutputs_dim_1", "Addoutputs_dim_2",
                                              spec.output_size])]
    return _model(b, "main_graph", inputs, outputs)


def encoder_metadata(spec: ModelSpec) -> dict[str, str]:
    if spec.metadata == "missing":
        return {}
    url = spec.url or ("https://huggingface.co/nvidia/parakeet-tdt-tiny-test" if spec.tdt
                       else "https://huggingface.co/nvidia/parakeet-rnnt-tiny-test")
    meta = {
        "vocab_size": str(spec.vocab_size),
        "normalize_type": spec.normalize_type,
        "pred_rnn_layers": str(spec.pred_rnn_layers),
        "pred_hidden": str(spec.pred_hidden),
        "subsampling_factor": "8",
        "model_type": "EncDecRNNTBPEModel",
        "version": "2",
        "model_author": "NeMo",
        "url": url,
        "comment": "sherpa-fixed test model (random weights)",
        "feat_dim": str(spec.feat_dim),
    }
    if spec.metadata == "wrong_feat_dim":
        meta["feat_dim"] = "128" if spec.feat_dim != 128 else "80"
    elif spec.metadata == "tdt_no_url":
        meta["url"] = "https://huggingface.co/nvidia/parakeet-custom"
    elif spec.metadata == "no_normalize":
        del meta["normalize_type"]
    elif spec.metadata == "wrong_vocab":
        meta["vocab_size"] = str(spec.vocab_size + 1)
    return meta


PIECES = ["▁the", "▁a", "s", "▁to", "ing", "e", "▁and", "d", "▁of", "t", "er", "▁in", "o", "n", "▁is", "y",
          "▁it", "r", "l", "ed", "▁th", "i", "▁w", "c", "m", "re", "h", "u", "p", "▁s", "g", "b"]


def tokens_text(spec: ModelSpec) -> str:
    pieces = ["<unk>"] + [PIECES[i % len(PIECES)] + ("" if i < len(PIECES) else str(i))
                          for i in range(spec.vocab_size - 1)]
    lines = [f"{p} {i}" for i, p in enumerate(pieces)] + [f"<blk> {spec.vocab_size}"]
    return "\n".join(lines) + "\n"


def _save(model: onnx.ModelProto, path: Path, mode: str) -> None:
    folder = path.parent
    stem = path.name[: -len(".onnx")]
    if mode == "none":
        onnx.save(model, str(path))
        return
    if mode == "torch":
        torch_layout(model, folder)
        onnx.save(model, str(path))
        return
    if mode == "scattered":  # torch.onnx over 2 GiB: one file per initializer, small ones too
        externalize_inline(model, folder, lambda t: safe_file_name(t.name))
    elif mode == "escaping":  # climbs out with '..' and back in: inside the folder, but ORT >= 1.28 refuses it
        externalize_inline(model, folder, lambda t: f"../{folder.name}/{stem}.weights", threshold=ONNX_THRESHOLD)
    elif mode == "outside":  # weights really outside the folder: sherpa-fixed must refuse to read them
        externalize_inline(model, folder, lambda t: f"../{folder.name}-{stem}.weights", threshold=ONNX_THRESHOLD)
    else:  # as onnx.save(save_as_external_data=True) with its default size_threshold
        externalize_inline(model, folder, lambda t: f"{stem}.weights", threshold=ONNX_THRESHOLD)
        if mode == "absolute":
            absolute = str((folder / f"{stem}.weights").resolve())
            for t in model.graph.initializer:
                for e in t.external_data:
                    if e.key == "location":
                        e.value = absolute
    onnx.save(model, str(path))
    weights = folder / f"{stem}.weights"
    if mode == "missing":
        weights.unlink()
    elif mode == "truncated":
        size = weights.stat().st_size
        with open(weights, "r+b") as f:
            f.truncate(size // 2)


TORCH_EXTERNAL_ELEMENTS = 1024


def torch_layout(model: onnx.ModelProto, folder: Path) -> list[str]:
    """Store tensors the way torch.onnx does for a model over 2 GiB (the real 1.1B export, FACTS.md 9).

    Measured on parakeet-tdt-1.1b's architecture exported by NeMo 3.0.0 / torch 2.13: every tensor
    of more than 1024 elements gets its own file named after it (`onnx::MatMul_12309` ->
    `onnx__MatMul_12309`, `layers.0.conv.pointwise_conv1.weight`), smaller ones stay inline; the
    external entry has a location only (no offset, no length); and a large Constant NODE's value is
    external too, in a file named `<node>_attr__value` (there `Constant_4053_attr__value`, the
    relative positional table). Such Constant nodes are renamed `Constant_<index>` as torch names
    them. Returns the file names written.
    """
    files: list[str] = []

    def externalize(t: TensorProto) -> None:
        if uses_external_data(t) or not t.HasField("raw_data") or int(np.prod(t.dims)) <= TORCH_EXTERNAL_ELEMENTS:
            return
        name = safe_file_name(t.name)
        (folder / name).write_bytes(t.raw_data)
        del t.external_data[:]
        e = t.external_data.add()
        e.key, e.value = "location", name
        t.data_location = TensorProto.EXTERNAL
        t.ClearField("raw_data")
        files.append(name)

    for t in model.graph.initializer:
        externalize(t)
    for i, node in enumerate(model.graph.node):
        if node.op_type != "Constant":
            continue
        for attr in node.attribute:
            if attr.name == "value" and attr.HasField("t") and int(np.prod(attr.t.dims)) > TORCH_EXTERNAL_ELEMENTS:
                node.name = f"Constant_{i}"
                attr.t.name = f"{node.name}_attr::value"
                externalize(attr.t)
    return files


def write_model_folder(folder: str | os.PathLike, spec: ModelSpec | None = None, **changes) -> Path:
    """Write encoder.onnx, decoder.onnx, joiner.onnx and tokens.txt (and int8 twins if asked)."""
    spec = (spec or ModelSpec()).with_(**changes) if changes else (spec or ModelSpec())
    if spec.external == "torch" and not spec.pos_emb_max_len:
        spec = spec.with_(pos_emb_max_len=5000)  # the real rel-pos table: the Constant torch stores externally
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    encoder = make_encoder(spec)
    _save(encoder, folder / "encoder.onnx", spec.external)
    onnx.save(make_decoder(spec), str(folder / "decoder.onnx"))
    onnx.save(make_joiner(spec), str(folder / "joiner.onnx"))
    (folder / "tokens.txt").write_text(tokens_text(spec), encoding="utf-8")
    if spec.int8:
        write_int8(folder, spec)
    return folder


def write_big_model_folder(folder: str | os.PathLike, spec: ModelSpec, *, sparse: bool = False) -> Path:
    """Like write_model_folder, but the encoder's weights stream to encoder.weights as they are
    generated: memory stays flat however large d_model and layers make it. sparse=True writes
    all-zero weights as a file hole (real-size models for structural tests, in no time)."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    sink = WeightSink(folder / "encoder.weights", "encoder.weights", sparse=sparse)
    try:
        encoder = make_encoder(spec, sink)
    finally:
        sink.close()
    onnx.save(encoder, str(folder / "encoder.onnx"))
    onnx.save(make_decoder(spec), str(folder / "decoder.onnx"))
    onnx.save(make_joiner(spec), str(folder / "joiner.onnx"))
    (folder / "tokens.txt").write_text(tokens_text(spec), encoding="utf-8")
    return folder


def write_int8(folder: Path, spec: ModelSpec) -> None:
    """encoder/decoder/joiner.int8.onnx the way the upstream export script makes them (quantize_dynamic)."""
    from onnxruntime.quantization import QuantType, quantize_dynamic

    for role, model, qtype in (("encoder", make_encoder(spec), QuantType.QUInt8),
                               ("decoder", make_decoder(spec), QuantType.QInt8),
                               ("joiner", make_joiner(spec), QuantType.QInt8)):
        src = folder / f".{role}.fp32-for-int8.onnx"
        onnx.save(model, str(src))
        dst = folder / f"{role}.int8.onnx"
        quantize_dynamic(model_input=str(src), model_output=str(dst), weight_type=qtype)
        src.unlink()
        if role != "encoder":
            continue
        q = onnx.load(str(dst))
        del q.metadata_props[:]
        for k, v in encoder_metadata(spec).items():
            p = q.metadata_props.add()
            p.key, p.value = k, v
        if spec.int8_external == "own":
            externalize_inline(q, folder, lambda t: "encoder.int8.weights", threshold=ONNX_THRESHOLD)
        onnx.save(q, str(dst))
    if spec.int8_external == "shared":
        # The int8 encoder's big tensors appended to the fp32 encoder's weights file, as a careless
        # re-save can leave it: both graphs then depend on encoder.weights.
        weights = folder / "encoder.weights"
        if not weights.exists():
            raise ValueError("int8_external='shared' needs external='single' for the fp32 encoder")
        q = onnx.load(str(folder / "encoder.int8.onnx"))
        with open(weights, "ab") as f:
            for t in q.graph.initializer:
                if len(t.raw_data) >= ONNX_THRESHOLD:
                    start = aligned(f.tell(), len(t.raw_data))
                    f.write(b"\0" * (start - f.tell()))
                    f.write(t.raw_data)
                    set_external(t, "encoder.weights", start, len(t.raw_data))
        onnx.save(q, str(folder / "encoder.int8.onnx"))


def make_hf_snapshot(folder: str | os.PathLike, cache: str | os.PathLike, *, repo: str = "models--nvidia--tiny",
                     revision: str = "0123abcd") -> Path:
    """Move a model folder into a Hugging Face cache layout and return its snapshot folder.

    As huggingface_hub lays it out: every file of `repo/snapshots/REV/` is a relative symlink to
    `../../blobs/<sha256>`, and blobs are shared between revisions (FACTS.md section 11).
    """
    import hashlib
    import shutil

    folder, root = Path(folder), Path(cache) / repo
    blobs, snap = root / "blobs", root / "snapshots" / revision
    blobs.mkdir(parents=True, exist_ok=True)
    snap.mkdir(parents=True, exist_ok=True)
    (root / "refs").mkdir(exist_ok=True)
    (root / "refs" / "main").write_text(revision)
    for p in sorted(folder.iterdir()):
        h = hashlib.sha256()
        with open(p, "rb") as f:
            for chunk in iter(lambda: f.read(1 << 20), b""):
                h.update(chunk)
        blob = blobs / h.hexdigest()
        if not blob.exists():
            shutil.move(str(p), blob)
        else:
            p.unlink()
        os.symlink(os.path.join("..", "..", "blobs", blob.name), snap / p.name)
    folder.rmdir()
    return snap
