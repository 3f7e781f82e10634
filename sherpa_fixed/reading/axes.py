"""Give every axis of every input and output a role, and say whether it is fixed.

Roles follow from position, because sherpa-onnx feeds NeMo graphs
positionally and channels-first: the encoder gets (batch, mel, time) after
sherpa-onnx transposes its (batch, time, mel) features. So the famous
`['audio_signal_dynamic_axes_1', 80, 'audio_signal_dynamic_axes_2']` is
80 mel bins with a dynamic time axis, not a fixed time of 80.

Whether a fixed size is merely declared or really baked into the graph is
answered two ways: statically here (a constant in the graph whose shape
carries the fixed length is evidence of baking), and by running the graph
at another size in `probe.py`.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from .onnx_graph import GraphFile, TensorSpec, all_nodes
from .protos import GraphProto, TensorProto, to_array

# Positional roles of NeMo transducer signatures as sherpa-onnx consumes them.
ENCODER_IN = (("batch", "features", "time"), ("batch",))
ENCODER_OUT = (("batch", "hidden", "time"), ("batch",))
DECODER_IN = (("batch", "token"), ("batch",))
DECODER_STATE = ("state_layers", "state_batch", "state_hidden")
DECODER_OUT = (("batch", "hidden", "token"), ("batch",))
JOINER_IN = (("batch", "hidden", "time"), ("batch", "hidden", "token"))
JOINER_OUT = (("batch", "time", "token", "vocab"),)

ROLE_WORDS = {
    "batch": "batch",
    "features": "mel bins",
    "time": "time",
    "hidden": "hidden",
    "token": "tokens",
    "vocab": "classes (vocab + blank + durations)",
    "state_layers": "state layers",
    "state_batch": "state batch",
    "state_hidden": "state hidden",
}


@dataclass
class Axis:
    index: int
    role: str
    size: int | None  # fixed size, None when dynamic
    dim_name: str | None  # symbolic name when dynamic
    baked: bool | None = None  # True/False when known, None when not examined
    evidence: list[str] = field(default_factory=list)

    @property
    def fixed(self) -> bool:
        return self.size is not None

    def describe(self) -> str:
        word = ROLE_WORDS.get(self.role, self.role)
        if self.size is None:
            return f"{word} dynamic"
        if self.role in ("features", "state_layers", "vocab"):
            return f"{self.size} {word}"
        if self.role in ("hidden", "state_hidden", "state_batch"):
            return f"{word} {self.size}"
        return f"{word} FIXED {self.size}"

    def to_json(self) -> dict:
        return {
            "index": self.index,
            "role": self.role,
            "fixed": self.fixed,
            "size": self.size,
            "dim_name": self.dim_name,
            "baked": self.baked,
            "evidence": list(self.evidence),
        }


@dataclass
class Port:
    """An input or output with its axes."""

    name: str
    dtype: str
    axes: list[Axis]

    def axis(self, role: str) -> Axis | None:
        return next((a for a in self.axes if a.role == role), None)

    def shape_text(self) -> str:
        return "[" + ", ".join(str(a.size) if a.fixed else (a.dim_name or "?") for a in self.axes) + "]"

    def to_json(self) -> dict:
        return {"name": self.name, "dtype": self.dtype, "axes": [a.to_json() for a in self.axes]}


def _port(spec: TensorSpec, roles: tuple[str, ...] | None) -> Port:
    axes = []
    for i, d in enumerate(spec.dims):
        role = roles[i] if roles and i < len(roles) else "unknown"
        if isinstance(d, int):
            axes.append(Axis(i, role, d, None))
        else:
            axes.append(Axis(i, role, None, d))
    return Port(spec.name, spec.dtype, axes)


def ports_for(role: str, g: GraphFile) -> tuple[list[Port], list[Port]]:
    """Inputs and outputs of a graph, each axis labelled for the given model role."""
    ins, outs = g.inputs, g.outputs
    if role == "encoder":
        in_roles = list(ENCODER_IN)
        out_roles = list(ENCODER_OUT)
    elif role == "decoder":
        in_roles = [*DECODER_IN, *([DECODER_STATE] * max(0, len(ins) - 2))]
        out_roles = [*DECODER_OUT, *([DECODER_STATE] * max(0, len(outs) - 2))]
    elif role == "joiner":
        in_roles, out_roles = list(JOINER_IN), list(JOINER_OUT)
    else:
        in_roles, out_roles = [], []
    inputs = [_port(s, in_roles[i] if i < len(in_roles) and len(in_roles[i]) == s.rank else None)
              for i, s in enumerate(ins)]
    outputs = [_port(s, out_roles[i] if i < len(out_roles) and len(out_roles[i]) == s.rank else None)
               for i, s in enumerate(outs)]
    return inputs, outputs


# ---------------------------------------------------------------- baking evidence


def _constant_shapes(graph: GraphProto) -> list[tuple[str, tuple[int, ...], TensorProto]]:
    found = []
    for t in graph.initializer:
        found.append((t.name, tuple(t.dims), t))
    for node in all_nodes(graph):
        if node.op_type == "Constant":
            for a in node.attribute:
                if a.name == "value" and a.HasField("t"):
                    found.append((node.name or node.output[0], tuple(a.t.dims), a.t))
    return found


def _int_values(t: TensorProto) -> list[int]:
    """Small integer constants (shape vectors): Reshape/Expand targets that can pin a length."""
    if t.data_type not in (TensorProto.INT64, TensorProto.INT32) or len(t.dims) > 1:
        return []
    n = 1
    for d in t.dims:
        n *= d
    if n > 8:
        return []
    try:
        return [int(v) for v in to_array(t).reshape(-1)]
    except Exception:
        return []


def baking_evidence(g: GraphFile, lengths: list[int], *, skip_names: tuple[str, ...] = ()) -> list[str]:
    """Constants whose shape (or value, for shape vectors) carries one of the given lengths.

    A static-shape NeMo export folds masks and attention biases into
    constants of the input length (e.g. `/pre_encode/conv/Constant_1` of
    shape [800], `/Constant_8` of shape [1, 100, 100]); a graph that only
    declares a fixed length has none. This is evidence, not proof: the probe
    runs the graph to settle it.
    """
    wanted = {n for n in lengths if n and n > 1}
    hits: list[str] = []
    for name, dims, t in _constant_shapes(g.model.graph):
        if name in skip_names:
            continue
        if any(d in wanted for d in dims):
            hits.append(f"constant {name} has shape {list(dims)}")
        elif len(dims) <= 1 and any(v in wanted for v in _int_values(t)):
            hits.append(f"constant {name} holds {_int_values(t)}")
        if len(hits) >= 5:
            break
    return hits


def positional_encoding_limit(g: GraphFile) -> tuple[int, str] | None:
    """Longest encoder output (in frames) the relative positional encoding table allows.

    NeMo exports the rel-pos table as a constant of shape [1, 2L-1, d_model];
    past L output frames the attention's Add fails to broadcast. This caps
    dynamic models too (pos_emb_max_len=5000 is 400 s at 8x subsampling).
    """
    hidden = None
    if len(g.outputs) >= 1 and g.outputs[0].rank == 3:
        hidden = g.outputs[0].fixed(1)
    best = None
    for name, dims, _t in _constant_shapes(g.model.graph):
        if len(dims) == 3 and dims[0] == 1 and dims[1] % 2 == 1 and dims[1] > 100 and (
            hidden is None or dims[2] == hidden
        ) and ("pos" in name.lower() or "Constant" in name or "Slice" in name):
            limit = (dims[1] + 1) // 2
            if best is None or limit > best[0]:
                best = (limit, f"constant {name} of shape {list(dims)}")
    return best


def pre_encoder_strides(g: GraphFile) -> tuple[int, list[str]] | None:
    """Product of time strides of the pre-encoder's strided convolutions (the subsampling factor).

    NeMo's conv subsampling transposes (batch, mel, time) to (batch, 1, time,
    mel) before Conv2d, so the first spatial stride is the time stride. Only
    convolutions with a stride above 1 count; the Conformer's own
    depthwise convolutions have stride 1.
    """
    factor = 1
    used: list[str] = []
    # ConvInteger / QLinearConv: the same convolutions after quantize_dynamic / static quantization.
    convs = [n for n in all_nodes(g.model.graph) if n.op_type in ("Conv", "ConvInteger", "QLinearConv")]
    pre = [n for n in convs if "pre_encode" in n.name] or convs
    for node in pre:
        strides = next((list(a.ints) for a in node.attribute if a.name == "strides"), [])
        if strides and strides[0] > 1:
            factor *= strides[0]
            used.append(f"{node.name or node.output[0]} stride {strides[0]}")
    if not used:
        return None
    return factor, used
