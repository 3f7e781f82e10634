"""A transducer whose right answer is known: tones in, their tokens out.

Random-weight models cannot tell a right merge from a wrong one. This one
can: token k is a pure tone at the centre frequency of mel bin b_k, and the
model, in NeMo's exact export signature, reads it back.

- encoder: picks the K tone bins out of the (per-feature normalised) mel
  features, then three depthwise stride-2 convolutions average neighbouring
  frames (8x subsampling, as FastConformer's pre-encoder; a receptive field
  of 15 frames, so the model is context-free beyond 150 ms);
- decoder: the one-hot of the last emitted token (states pass through);
- joiner: token k scores ALPHA * e_k, minus BETA if k was the last token
  emitted; blank scores THETA; TDT durations always say "advance one frame".

So each tone segment yields its token once, at its onset frame, and silence
yields blank. Consecutive segments must carry different tokens (the model
cannot tell "k k" from one long "k", as a real model cannot tell a long
vowel from two). Pieces carry BPE word marks so word joins are tested too.
"""

from __future__ import annotations

import itertools
import math
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from .testing import OPSET, subsampled

PIECES = ["▁ba", "na", "▁ki", "wi", "▁lo", "ma", "▁pe", "ro"]
MEL_BINS = 80
HIGH_FREQ = 7600.0  # sherpa-onnx's NeMo front end: low_freq 0, high_freq = 8000 - 400, librosa mel
# 20, 28, ..., 76: seven empty bins between tones. Measured with kaldi-native-fbank over a 1e-2 noise
# floor: a tone raises its own bin by 8.9 (natural log) and any other tone's bin by at most 0.07.
TONE_BINS = [20 + 8 * i for i in range(len(PIECES))]
ALPHA, BETA, THETA = 4.0, 100.0, 5.0  # emit when the band sits 1.25 std above its mean


def _mel(f: float) -> float:  # Slaney mel scale (librosa's default, sherpa-onnx's is_librosa)
    return f / (200.0 / 3) if f < 1000 else 15.0 + 27.0 * math.log(f / 1000.0) / math.log(6.4)


def _hz(m: float) -> float:
    return m * (200.0 / 3) if m < 15.0 else 1000.0 * math.exp((m - 15.0) * math.log(6.4) / 27.0)


def tone_frequency(token: int) -> float:
    """Centre frequency (Hz) of the mel bin that stands for token id `token` (1..K)."""
    b = TONE_BINS[token - 1]
    top = _mel(HIGH_FREQ)
    return _hz(top * (b + 1) / (MEL_BINS + 1))


@dataclass(frozen=True)
class OracleSpec:
    tdt: bool = True
    fixed_frames: int | None = None  # None: dynamic time; else baked fixed window (batch fixed to 1)
    normalize_type: str = "per_feature"

    @property
    def vocab_size(self) -> int:  # NeMo's count: <unk> + pieces, no blank
        return len(PIECES) + 1

    @property
    def blank(self) -> int:
        return self.vocab_size


def _model(nodes, inits, inputs, outputs, meta=None) -> onnx.ModelProto:
    m = helper.make_model(helper.make_graph(nodes, "oracle", inputs, outputs, inits),
                          opset_imports=[helper.make_opsetid("", OPSET)], producer_name="sherpa-fixed.oracle")
    m.ir_version = 8
    for k, v in (meta or {}).items():
        p = m.metadata_props.add()
        p.key, p.value = k, str(v)
    return m


def make_encoder(spec: OracleSpec) -> onnx.ModelProto:
    k = len(PIECES)
    fixed = spec.fixed_frames
    pick = np.zeros((MEL_BINS, k), np.float32)
    for i, b in enumerate(TONE_BINS):
        pick[b, i] = 1.0
    inits = [numpy_helper.from_array(pick, "pick"),
             numpy_helper.from_array(np.full((k, 1, 3), 1 / 3, np.float32), "avg"),
             ]
    nodes = [helper.make_node("Transpose", ["audio_signal"], ["x_t"], name="/Transpose", perm=[0, 2, 1])]
    src = "x_t"
    if fixed:  # baked, as NeMo's static export: mask = arange(T) < length, T a constant
        inits += [numpy_helper.from_array(np.arange(fixed, dtype=np.int64), "/pre_encode/conv/Constant_1"),
                  numpy_helper.from_array(np.array([1], np.int64), "ax1"),
                  numpy_helper.from_array(np.array([-1, fixed, 1], np.int64), "mask_shape")]
        nodes += [helper.make_node("Unsqueeze", ["length", "ax1"], ["len_col"], name="/pre_encode/conv/Unsqueeze"),
                  helper.make_node("Less", ["/pre_encode/conv/Constant_1", "len_col"], ["mask_b"],
                                   name="/pre_encode/conv/Less"),
                  helper.make_node("Cast", ["mask_b"], ["mask_f"], name="/pre_encode/conv/Cast",
                                   to=TensorProto.FLOAT),
                  helper.make_node("Reshape", ["mask_f", "mask_shape"], ["mask"], name="/pre_encode/conv/Reshape"),
                  helper.make_node("Mul", ["x_t", "mask"], ["x_m"], name="/pre_encode/conv/Mul_3")]
        src = "x_m"
    nodes += [helper.make_node("MatMul", [src, "pick"], ["bands"], name="/pick/MatMul"),
              helper.make_node("Transpose", ["bands"], ["c0"], name="/Transpose_1", perm=[0, 2, 1])]
    for i in range(3):
        nodes.append(helper.make_node("Conv", [f"c{i}", "avg"], [f"c{i + 1}" if i < 2 else "outputs"],
                                      name=f"/pre_encode/conv/conv.{2 * i}/Conv", kernel_shape=[3], strides=[2],
                                      pads=[1, 1], group=k))
    ln = "length"
    nodes.append(helper.make_node("Cast", [ln], ["len_f"], name="/Cast", to=TensorProto.FLOAT))
    ln = "len_f"
    for i in range(3):
        for op, val in (("Add", -1.0), ("Div", 2.0)):
            c = f"c_{op}_{i}"
            inits.append(numpy_helper.from_array(np.array(val, np.float32), c))
            nodes.append(helper.make_node(op, [ln, c], [f"{ln}_{op}{i}"], name=f"/{op}_{i}"))
            ln = f"{ln}_{op}{i}"
        nodes.append(helper.make_node("Floor", [ln], [f"{ln}_f"], name=f"/Floor_{i}"))
        c = f"c_one_{i}"
        inits.append(numpy_helper.from_array(np.array(1.0, np.float32), c))
        nodes.append(helper.make_node("Add", [f"{ln}_f", c], [f"len{i}"], name=f"/Add_o{i}"))
        ln = f"len{i}"
    nodes.append(helper.make_node("Cast", [ln], ["encoded_lengths"], name="/Cast_1", to=TensorProto.INT64))
    batch = 1 if fixed else "audio_signal_dynamic_axes_1"
    time = fixed if fixed else "audio_signal_dynamic_axes_2"
    inputs = [helper.make_tensor_value_info("audio_signal", TensorProto.FLOAT, [batch, MEL_BINS, time]),
              helper.make_tensor_value_info("length", TensorProto.INT64, [1 if fixed else "length_dynamic_axes_1"])]
    outputs = [helper.make_tensor_value_info("outputs", TensorProto.FLOAT, ["N", k, "T"]),
               helper.make_tensor_value_info("encoded_lengths", TensorProto.INT64, ["N"])]
    meta = {"vocab_size": spec.vocab_size, "normalize_type": spec.normalize_type, "pred_rnn_layers": 1,
            "pred_hidden": spec.vocab_size + 1, "subsampling_factor": 8, "feat_dim": MEL_BINS,
            "model_type": "EncDecRNNTBPEModel", "model_author": "sherpa-fixed oracle",
            "url": "oracle-tdt" if spec.tdt else "oracle-rnnt"}
    return _model(nodes, inits, inputs, outputs, meta)


def make_decoder(spec: OracleSpec) -> onnx.ModelProto:
    h = spec.vocab_size + 1
    table = np.eye(h, dtype=np.float32)
    table[spec.blank] = 0  # the start symbol (blank) is "no token yet"
    inits = [numpy_helper.from_array(table, "embed")]
    nodes = [helper.make_node("Cast", ["targets"], ["t64"], name="/Cast", to=TensorProto.INT64),
             helper.make_node("Gather", ["embed", "t64"], ["emb"], name="/embed/Gather"),
             helper.make_node("Transpose", ["emb"], ["outputs"], name="/Transpose", perm=[0, 2, 1]),
             helper.make_node("Identity", ["target_length"], ["prednet_lengths"], name="/Identity"),
             helper.make_node("Identity", ["states.1"], ["states"], name="/Identity_1"),
             helper.make_node("Identity", ["onnx::Slice_3"], ["162"], name="/Identity_2")]
    inputs = [helper.make_tensor_value_info("targets", TensorProto.INT32, ["N", "U"]),
              helper.make_tensor_value_info("target_length", TensorProto.INT32, ["N"]),
              helper.make_tensor_value_info("states.1", TensorProto.FLOAT, [1, "states.1_dim_1", h]),
              helper.make_tensor_value_info("onnx::Slice_3", TensorProto.FLOAT, [1, 1, h])]
    outputs = [helper.make_tensor_value_info("outputs", TensorProto.FLOAT, ["N", h, "U"]),
               helper.make_tensor_value_info("prednet_lengths", TensorProto.INT32, ["N"]),
               helper.make_tensor_value_info("states", TensorProto.FLOAT, [1, "B", h]),
               helper.make_tensor_value_info("162", TensorProto.FLOAT, [1, 1, h])]
    return _model(nodes, inits, inputs, outputs)


def make_joiner(spec: OracleSpec) -> onnx.ModelProto:
    k, v1 = len(PIECES), spec.vocab_size + 1
    w_enc = np.zeros((k, v1), np.float32)
    for i in range(k):
        w_enc[i, i + 1] = ALPHA
    w_dec = np.zeros((v1, v1), np.float32)
    for i in range(1, k + 1):
        w_dec[i, i] = -BETA
    bias = np.zeros(v1, np.float32)
    bias[0] = -100.0  # <unk> never
    bias[spec.blank] = THETA
    inits = [numpy_helper.from_array(w_enc, "w_enc"), numpy_helper.from_array(w_dec, "w_dec"),
             numpy_helper.from_array(bias, "bias"), numpy_helper.from_array(np.array([2], np.int64), "ax2"),
             numpy_helper.from_array(np.array([1], np.int64), "ax1")]
    nodes = [helper.make_node("Transpose", ["encoder_outputs"], ["e"], name="/Transpose", perm=[0, 2, 1]),
             helper.make_node("Transpose", ["decoder_outputs"], ["d"], name="/Transpose_1", perm=[0, 2, 1]),
             helper.make_node("MatMul", ["e", "w_enc"], ["el"], name="/enc/MatMul"),
             helper.make_node("MatMul", ["d", "w_dec"], ["dl"], name="/pred/MatMul"),
             helper.make_node("Unsqueeze", ["el", "ax2"], ["e4"], name="/Unsqueeze"),
             helper.make_node("Unsqueeze", ["dl", "ax1"], ["d4"], name="/Unsqueeze_1"),
             helper.make_node("Add", ["e4", "d4"], ["s"], name="/Add"),
             helper.make_node("Add", ["s", "bias"], ["tok" if spec.tdt else "outputs"], name="/Add_1")]
    if spec.tdt:
        dur = np.array([0, 10, 0, 0, 0], np.float32)  # always advance one frame
        inits.append(numpy_helper.from_array(dur, "dur"))
        nodes += [helper.make_node("Slice", ["tok", "zero", "one1", "last"], ["first"], name="/Slice"),
                  helper.make_node("Mul", ["first", "zerof"], ["z"], name="/Mul"),
                  helper.make_node("Add", ["z", "dur"], ["d5"], name="/Add_2"),
                  helper.make_node("Concat", ["tok", "d5"], ["outputs"], name="/Concat", axis=-1)]
        inits += [numpy_helper.from_array(np.array([0], np.int64), "zero"),
                  numpy_helper.from_array(np.array([1], np.int64), "one1"),
                  numpy_helper.from_array(np.array([3], np.int64), "last"),
                  numpy_helper.from_array(np.zeros((1,), np.float32), "zerof")]
    width = v1 + (5 if spec.tdt else 0)
    inputs = [helper.make_tensor_value_info("encoder_outputs", TensorProto.FLOAT, ["N", k, "T"]),
              helper.make_tensor_value_info("decoder_outputs", TensorProto.FLOAT, ["N", v1, "U"])]
    outputs = [helper.make_tensor_value_info("outputs", TensorProto.FLOAT, ["N", "T", "U", width])]
    return _model(nodes, inits, inputs, outputs)


def write_oracle_folder(folder: str | os.PathLike, spec: OracleSpec | None = None) -> Path:
    spec = spec or OracleSpec()
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    onnx.save(make_encoder(spec), str(folder / "encoder.onnx"))
    onnx.save(make_decoder(spec), str(folder / "decoder.onnx"))
    onnx.save(make_joiner(spec), str(folder / "joiner.onnx"))
    lines = ["<unk> 0"] + [f"{p} {i + 1}" for i, p in enumerate(PIECES)] + [f"<blk> {spec.blank}"]
    (folder / "tokens.txt").write_text("\n".join(lines) + "\n", encoding="utf-8")
    return folder


@dataclass(frozen=True)
class Segment:
    token: int  # token id (1..K)
    start: float  # seconds
    end: float

    @property
    def piece(self) -> str:
        return PIECES[self.token - 1]


def oracle_audio(tokens: list[int], *, seed: int = 0, sample_rate: int = 16000, lead: float = 0.4,
                 tail: float = 0.4, seg: tuple[float, float] = (0.25, 0.6), gap: tuple[float, float] = (0.2, 0.4),
                 amplitude: float = 0.2, noise: float = 1e-2) -> tuple[np.ndarray, list[Segment]]:
    """Tones for the given token ids (no two equal in a row), with gaps, over a quiet noise floor."""
    for a, b in itertools.pairwise(tokens):
        if a == b:
            raise ValueError("consecutive tokens must differ: the oracle, like any transducer, cannot "
                             "split one steady sound into two identical tokens")
    rng = np.random.default_rng(seed)
    t = lead
    segments = []
    for tok in tokens:
        length = rng.uniform(*seg)
        segments.append(Segment(tok, t, t + length))
        t += length + rng.uniform(*gap)
    total = int((t + tail) * sample_rate)
    audio = (rng.standard_normal(total) * noise).astype(np.float32)
    ramp = int(0.01 * sample_rate)
    for s in segments:
        a, b = int(s.start * sample_rate), int(s.end * sample_rate)
        n = np.arange(b - a)
        env = np.minimum(1.0, np.minimum(n + 1, (b - a) - n) / ramp)
        audio[a:b] += (amplitude * env * np.sin(2 * np.pi * tone_frequency(s.token) * n / sample_rate)).astype(
            np.float32)
    return audio, segments


def random_tokens(count: int, seed: int = 0) -> list[int]:
    """A token sequence with no immediate repeats."""
    rng = np.random.default_rng(seed)
    out: list[int] = []
    for _ in range(count):
        choices = [k for k in range(1, len(PIECES) + 1) if not out or k != out[-1]]
        out.append(int(rng.choice(choices)))
    return out


def expected_text(tokens: list[int]) -> str:
    text = "".join(PIECES[t - 1] for t in tokens).replace("▁", " ")
    return text[1:] if text.startswith(" ") else text


__all__ = ["OracleSpec", "Segment", "expected_text", "oracle_audio", "random_tokens", "subsampled",
           "tone_frequency", "write_oracle_folder"]
