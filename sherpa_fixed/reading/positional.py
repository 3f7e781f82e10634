"""Where a dynamic NeMo encoder's length limit lives: its relative positional table, read from the graph.

NeMo's `RelPositionalEncoding` bakes a table of 2L-1 sinusoidal rows
(positions L-1 down to -(L-1); L = `pos_emb_max_len`, 5000 for Parakeet)
into the export, and every attention layer slices it around its middle row
for T output frames: past T = L the slice comes back short and the encoder
fails (FACTS.md section 10). This module finds those tables and the
integer constants that hold their centre, from the graph's structure alone
(no tensor data), so the inspector can report the limit, the recognizer
can stay under it, and rewriting/posenc.py can extend it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from .onnx_graph import external_info, uses_external_data
from .protos import GraphProto, NodeProto, TensorProto, to_array

MARKER = "sherpa_fixed_max_seconds"
FLOAT_TYPES = {TensorProto.FLOAT: np.float32, TensorProto.FLOAT16: np.float16}
# Ops that carry the centre constant to a Slice's start/end in torch's export of
# `self.pe[:, center_pos - input_len : center_pos + input_len - 1]`; Shape/Gather (the length) end a walk.
_PATH_OPS = {"Unsqueeze", "Squeeze", "Reshape", "Cast", "Sub", "Add", "Concat", "Identity", "Neg", "Max", "Min"}


@dataclass
class CentreConst:
    """An integer constant on a Slice's start or end path that holds the table's centre."""

    name: str  # its value name
    value: int
    users: list[tuple[NodeProto, int]] = field(default_factory=list)  # (node, input index) on the path


@dataclass
class PosTable:
    """One relative positional table in a graph and how the graph slices it."""

    value: str  # the table's value name
    tensor: TensorProto
    rows: int
    d_model: int
    slices: list[str]
    centres: list[CentreConst]

    @property
    def max_frames(self) -> int:
        """Longest encoder output (frames) the table serves."""
        return (self.rows + 1) // 2

    @property
    def location(self) -> str:
        return external_info(self.tensor).get("location", "?") if uses_external_data(self.tensor) else "inline"

    def to_json(self) -> dict:
        return {"tensor": self.value, "shape": [1, self.rows, self.d_model], "output_frames": self.max_frames,
                "stored": self.location, "slices": self.slices}


def _const_values(graph: GraphProto) -> dict[str, TensorProto]:
    out: dict[str, TensorProto] = {t.name: t for t in graph.initializer}
    for n in graph.node:
        if n.op_type == "Constant" and n.output:
            for a in n.attribute:
                if a.name == "value" and a.HasField("t"):
                    out[n.output[0]] = a.t
    return out


def _small_ints(t: TensorProto) -> list[int] | None:
    if t.data_type not in (TensorProto.INT64, TensorProto.INT32) or uses_external_data(t):
        return None
    n = 1
    for d in t.dims:
        n *= d
    if n > 4:
        return None
    return [int(x) for x in to_array(t).reshape(-1)]


def _centres(graph: GraphProto, start: str, centre: int, consts: dict[str, TensorProto],
             producer: dict[str, NodeProto]) -> list[CentreConst]:
    """Integer constants equal to `centre` (or centre - 1, a folded `centre + T - 1`) upstream of `start`."""
    found: dict[str, CentreConst] = {}
    seen: set[str] = set()
    todo = [start]
    while todo:
        value = todo.pop()
        if value in seen:
            continue
        seen.add(value)
        node = producer.get(value)
        if node is None or node.op_type not in _PATH_OPS or len(seen) > 64:
            continue
        for idx, inp in enumerate(node.input):
            t = consts.get(inp)
            ints = _small_ints(t) if t is not None else None
            if ints is not None and len(ints) == 1 and ints[0] in (centre, centre - 1) and centre > 2:
                found.setdefault(inp, CentreConst(inp, ints[0])).users.append((node, idx))
            elif t is None:
                todo.append(inp)
    return list(found.values())


def find_tables(graph: GraphProto) -> list[PosTable]:
    """Every [1, 2L-1, d] float table the graph slices on axis 1 around its middle row, NeMo's way.

    Reads no tensor data (the shape comes from the proto's dims), so it is as cheap for a 4 GB
    model as for a tiny one.
    """
    consts = _const_values(graph)
    producer = {o: n for n in graph.node for o in n.output}
    tables = []
    for name, t in consts.items():
        if t.data_type not in FLOAT_TYPES or len(t.dims) != 3 or t.dims[0] != 1 or t.dims[1] % 2 == 0 \
                or t.dims[1] < 5:
            continue
        rows, d = int(t.dims[1]), int(t.dims[2])
        centre = rows // 2 + 1
        slices, centres = [], {}
        for n in graph.node:
            if n.op_type != "Slice" or not n.input or n.input[0] != name or len(n.input) < 3:
                continue
            axes = consts.get(n.input[3]) if len(n.input) > 3 and n.input[3] else None
            if axes is None or _small_ints(axes) not in ([1], [-2]):
                continue
            found = [_centres(graph, n.input[i], centre, consts, producer) for i in (1, 2)]
            if not all(found):
                continue
            slices.append(n.name or n.output[0])
            for c in found[0] + found[1]:
                prior = centres.setdefault(c.name, CentreConst(c.name, c.value))
                prior.users += [u for u in c.users if u not in prior.users]
        if slices:
            tables.append(PosTable(name, t, rows, d, slices, list(centres.values())))
    return tables


def frames_for(seconds: float, subsampling: int, frame_shift: float = 0.01) -> int:
    """Encoder output frames for `seconds` of audio: ceil(frames / subsampling), as NeMo's conv
    subsampling gives (each stride-2 stage: ceil(n / 2))."""
    return max(1, math.ceil(round(seconds / frame_shift, 6) / subsampling))


def limit_seconds(frames: int, subsampling: int, frame_shift: float = 0.01) -> float:
    return round(frames * subsampling * frame_shift, 3)


# ----------------------------------------------------------------------------- values
