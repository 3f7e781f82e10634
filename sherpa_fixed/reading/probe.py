"""Settle by running the graph what static reading can only suggest.

A fixed time or batch size in the declared input shape may be a mere
declaration (rename the dim and any length runs) or baked into the graph
(static-shape exports fold masks of that length into constants, FACTS.md
section 4). The probe frees the declared dims in an in-memory copy and runs
onnxruntime at the declared size and at another one. It also measures the
subsampling factor as frames in over frames out.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field

import numpy as np

from ..ort import first_line
from .onnx_graph import GraphFile, TensorSpec
from .protos import ModelProto
from .sessions import session_from_model


@dataclass
class ProbeRun:
    batch: int
    frames: int
    ok: bool
    output_frames: int | None = None
    encoded_lengths: list[int] | None = None
    error: str | None = None

    def to_json(self) -> dict:
        return {
            "batch": self.batch,
            "frames": self.frames,
            "ok": self.ok,
            "output_frames": self.output_frames,
            "encoded_lengths": self.encoded_lengths,
            "error": self.error,
        }


@dataclass
class EncoderProbe:
    runs: list[ProbeRun] = field(default_factory=list)
    time_baked: bool | None = None
    batch_baked: bool | None = None
    subsampling_factor: int | None = None
    error: str | None = None  # the probe itself could not run (e.g. weights missing)

    def to_json(self) -> dict:
        return {
            "runs": [r.to_json() for r in self.runs],
            "time_baked": self.time_baked,
            "batch_baked": self.batch_baked,
            "subsampling_factor": self.subsampling_factor,
            "error": self.error,
        }


def free_dims(model: ModelProto, names: dict[str, dict[int, str]]) -> ModelProto:
    """Copy of the graph (weights untouched) with the given input axes made symbolic,
    and every output shape and value_info dropped, so onnxruntime checks nothing it
    need not check."""
    m = copy.deepcopy(model)
    for vi in m.graph.input:
        for axis, name in names.get(vi.name, {}).items():
            dim = vi.type.tensor_type.shape.dim[axis]
            dim.Clear()
            dim.dim_param = name
    for vi in m.graph.output:
        for i, dim in enumerate(vi.type.tensor_type.shape.dim):
            if dim.HasField("dim_value"):
                dim.Clear()
                dim.dim_param = f"{vi.name}_dim{i}"
    del m.graph.value_info[:]
    return m


def _feed(audio: TensorSpec, length: TensorSpec | None, batch: int, feat: int, frames: int, seed: int = 0):
    rng = np.random.default_rng(seed)
    feeds = {audio.name: rng.standard_normal((batch, feat, frames)).astype(np.float32)}
    if length is not None:
        feeds[length.name] = np.full((batch,), frames, dtype=np.dtype(length.dtype))
    return feeds


def probe_encoder(g: GraphFile, feat_dim: int | None, *, try_frames: int = 1600) -> EncoderProbe:
    """Run the encoder at its declared size and at another, and measure subsampling."""
    result = EncoderProbe()
    audio = g.inputs[0]
    length = g.inputs[1] if len(g.inputs) > 1 else None
    feat = audio.fixed(1) or feat_dim or 80
    fixed_t = audio.fixed(2)
    fixed_b = audio.fixed(0)
    names: dict[str, dict[int, str]] = {audio.name: {0: "probe_batch", 2: "probe_time"}}
    if length is not None:
        names[length.name] = {0: "probe_batch"}
    try:
        sess = session_from_model(free_dims(g.model, names), g.path)
    except Exception as exc:  # weights missing/unreadable: the probe cannot say anything
        result.error = first_line(exc)
        return result

    def run(batch: int, frames: int) -> ProbeRun:
        try:
            outs = sess.run(None, _feed(audio, length, batch, feat, frames))
        except Exception as exc:
            r = ProbeRun(batch, frames, False, error=first_line(exc))
        else:
            lens = [int(x) for x in np.asarray(outs[1]).reshape(-1)] if len(outs) > 1 else None
            r = ProbeRun(batch, frames, True, int(outs[0].shape[-1]), lens)
        result.runs.append(r)
        return r

    base_t = fixed_t or try_frames
    native = run(fixed_b or 1, base_t)
    if not native.ok:
        result.error = f"the encoder fails even at its declared size: {native.error}"
        return result
    other_t = max(base_t // 2, 16) if fixed_t else base_t // 2
    other = run(fixed_b or 1, other_t)
    if fixed_t:
        result.time_baked = not other.ok
    if other.ok and native.output_frames and other.output_frames and native.output_frames != other.output_frames:
        ratio = (base_t - other_t) / (native.output_frames - other.output_frames)
        result.subsampling_factor = round(ratio)
    elif native.output_frames:
        result.subsampling_factor = round(base_t / native.output_frames)
    if fixed_b == 1:
        result.batch_baked = not run(2, base_t).ok
    return result
