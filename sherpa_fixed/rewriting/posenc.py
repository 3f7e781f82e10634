"""Lift a dynamic NeMo encoder's length limit: regenerate its relative positional table longer.

NeMo's `RelPositionalEncoding` keeps a table of 2L-1 sinusoidal rows for
positions L-1 down to -(L-1) (L = `pos_emb_max_len`, 5000 for Parakeet) and
grows it in `forward()` when an input is longer. The export path never
grows it: the table is baked into the ONNX graph (a Constant node, inline or,
in torch's >2 GiB layout, with its value in an external file; an initializer
after some re-savers), and every attention layer gets the rows

    pe[:, centre - T : centre + T - 1]      centre = (2L-1) // 2 + 1 = L

for T output frames. Past T = L the Slice comes back short and the
attention's Add fails to broadcast (FACTS.md section 10). The table is
pure arithmetic, so it can be made longer:

- the new table holds positions L'-1 .. -(L'-1); the stored rows are its
  middle rows and are copied byte for byte (outputs for inputs within the
  old limit stay bit-identical); new rows at both ends come from NeMo's
  `create_pe` formula: div_i = exp(2i * -(ln 10000 / d)), pe[p, 2i] =
  sin(p * div_i), pe[p, 2i+1] = cos(p * div_i), all in float32 as torch does;
- the two integer constants that hold `centre` on the Slice's start and end
  paths move by L' - L, consistently.

torch's float32 `exp` is not correctly rounded, and differs between CPU
builds (measured: the speech model's table, exported on another machine,
has one of its 48 frequencies one float32 step away from this machine's
torch). So each frequency is taken from the stored rows themselves: among
the float32 neighbours of the formula's value, the one whose sines and
cosines reproduce the stored rows. A table that no candidate reproduces is
not NeMo's, and is refused.
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .. import __version__
from ..errors import BadInputError
from ..reading.external_data import resolve_location
from ..reading.onnx_graph import external_span, uses_external_data
from ..reading.positional import FLOAT_TYPES, MARKER, CentreConst, PosTable, find_tables, limit_seconds
from ..reading.protos import GraphProto, ModelProto, to_array
from ..safety.confine import inside

INF_VAL = 10000.0  # nemo.collections.asr.parts.submodules.multi_head_attention.INF_VAL
CHECK_ROWS = 256  # stored rows (the largest positions) used to recover each frequency


def formula_div(d_model: int) -> np.ndarray:
    """NeMo's frequencies: exp(arange(0, d, 2) * -(ln 10000 / d)), with torch's float32 argument,
    the exponential correctly rounded to float32."""
    arg = np.arange(0, d_model, 2, dtype=np.float32) * np.float32(-(math.log(INF_VAL) / d_model))
    return np.exp(arg.astype(np.float64)).astype(np.float32)


def formula_rows(positions: np.ndarray, div: np.ndarray, dtype=np.float32) -> np.ndarray:
    """Rows of NeMo's `create_pe` for these positions: the angle p * div in float32 (torch's
    product), its sine and cosine rounded to float32, interleaved sin, cos, ... per frequency."""
    angle = (positions.astype(np.float32)[:, None] * div[None, :]).astype(np.float64)
    out = np.empty((len(positions), 2 * len(div)), np.float32)
    out[:, 0::2] = np.sin(angle)
    out[:, 1::2] = np.cos(angle)
    return out.astype(dtype, copy=False)


def read_rows(table: PosTable, model_path: Path, start: int, stop: int) -> np.ndarray:
    """Rows [start, stop) of the stored table, reading only their bytes (external data included)."""
    dtype = np.dtype(FLOAT_TYPES[table.tensor.data_type])
    row_bytes = table.d_model * dtype.itemsize
    t = table.tensor
    if uses_external_data(t):
        location, base, _ = external_span(t)
        path = inside(model_path.parent, resolve_location(model_path, location),
                      what=f"positional table {table.value!r}")
        want = (stop - start) * row_bytes
        try:
            with open(path, "rb") as f:
                data = os.pread(f.fileno(), want, base + start * row_bytes)
        except OSError as exc:
            raise BadInputError(f"cannot read the positional table ({exc.strerror})", path=path) from exc
        if len(data) != want:
            raise BadInputError("ends inside the positional table", path=path,
                                fix="the weights file is truncated; re-download or re-export it")
        return np.frombuffer(data, dtype).reshape(stop - start, table.d_model)
    if t.raw_data:
        return np.frombuffer(t.raw_data, dtype, count=(stop - start) * table.d_model,
                             offset=start * row_bytes).reshape(stop - start, table.d_model)
    return to_array(t).reshape(table.rows, table.d_model)[start:stop]


def _neighbours(x: np.ndarray, k: int) -> np.ndarray:
    """(2k+1, n) float32 values: x and its k float32 neighbours on each side."""
    bits = x.view(np.int32).astype(np.int64)
    steps = np.arange(-k, k + 1)[:, None]
    return (bits[None, :] + steps * np.sign(bits)[None, :]).astype(np.int32).view(np.float32)


def recover_div(table: PosTable, model_path: Path, k: int = 4) -> tuple[np.ndarray, float]:
    """The frequencies the stored table was made with, and how far its checked rows are from them.

    Row r holds position L-1-r; the first CHECK_ROWS rows (the largest positions) tell neighbouring
    float32 frequencies apart best (a step in div moves the angle by p steps).
    """
    n = min(CHECK_ROWS, table.max_frames)
    stored = read_rows(table, model_path, 0, n).astype(np.float64)
    positions = np.arange(table.max_frames - 1, table.max_frames - 1 - n, -1)
    cands = _neighbours(formula_div(table.d_model), k)  # (2k+1, d/2)
    angle = (positions.astype(np.float32)[:, None, None] * cands[None]).astype(np.float64)  # (n, c, d/2)
    # compare float32 rows, so candidates that make the same rows tie exactly; ties go to the formula's value
    sin32, cos32 = np.sin(angle).astype(np.float32), np.cos(angle).astype(np.float32)
    err = np.maximum(np.abs(sin32 - stored[:, None, 0::2]), np.abs(cos32 - stored[:, None, 1::2]))
    worst = err.max(axis=0)  # (c, d/2)
    offset = np.abs(np.arange(-k, k + 1))[:, None]
    pick = np.lexsort((np.broadcast_to(offset, worst.shape), worst), axis=0)[0]
    div = cands[pick, np.arange(cands.shape[1])]
    return div, float(worst[pick, np.arange(cands.shape[1])].max())


def tolerance(dtype) -> float:
    """How far a stored row may be from the formula: a few float steps at magnitude 1 (torch's
    float32 sin/cos are within one step of the correctly rounded value)."""
    return 4 * float(np.finfo(dtype).eps)


def check_table(table: PosTable, model_path: Path) -> tuple[np.ndarray, float]:
    """Frequencies of a genuine NeMo table and the largest difference of ALL its stored rows from the
    formula; raises BadInputError when the table is not NeMo's."""
    dtype = FLOAT_TYPES[table.tensor.data_type]
    div, _ = recover_div(table, model_path)
    L = table.max_frames
    stored = read_rows(table, model_path, 0, table.rows)
    positions = np.arange(L - 1, -L, -1)
    worst = 0.0
    for a in range(0, table.rows, 4096):  # bounded memory for 1024-wide tables
        b = min(a + 4096, table.rows)
        worst = max(worst, float(np.abs(formula_rows(positions[a:b], div, dtype).astype(np.float64)
                                        - stored[a:b]).max()))
    if worst > tolerance(dtype) or not np.all(stored[L - 1, 0::2] == 0) or not np.all(stored[L - 1, 1::2] == 1):
        raise BadInputError(f"the table {table.value!r} {[1, table.rows, table.d_model]} is not NeMo's relative "
                            f"positional encoding (its rows are up to {worst:.3g} from the formula)",
                            path=model_path, fix="only NeMo RelPositionalEncoding tables can be extended")
    return div, worst


# ----------------------------------------------------------------------------- rewriting


@dataclass(frozen=True)
class PosencPlan:
    seconds: float
    frames: int  # output frames the new table serves
    subsampling: int


def _set_int(graph: GraphProto, c: CentreConst, new_value: int) -> None:
    """Give the path's users of constant c the value new_value; other users keep the old one."""
    all_users = sum(1 for n in graph.node for i in n.input if i == c.name)
    node = next((n for n in graph.node if n.op_type == "Constant" and n.output and n.output[0] == c.name), None)
    init = next((t for t in graph.initializer if t.name == c.name), None)
    src = node.attribute[0].t if node is not None else init
    from onnx import helper, numpy_helper

    arr = numpy_helper.to_array(src)
    new = numpy_helper.from_array(np.full(arr.shape, new_value, arr.dtype), c.name)
    if all_users == len(c.users):
        src.CopyFrom(new)
        return
    name = f"{c.name}/sf_posenc"
    new.name = name
    graph.node.insert(0, helper.make_node("Constant", [], [name], name=name, value=new))
    for n, idx in c.users:
        n.input[idx] = name


def extend_table(model: ModelProto, model_path: Path, table: PosTable, frames: int) -> dict:
    """Rewrite `table` in `model` (in memory) to serve `frames` output frames; returns what was done.

    Only the table's own bytes are read from disk; the new table goes inline into the graph (the
    weights file is never rewritten: the old rows it held are simply no longer referenced)."""
    L, d = table.max_frames, table.d_model
    if frames <= L:
        raise ValueError("the table already serves that many frames")
    dtype = FLOAT_TYPES[table.tensor.data_type]
    div, worst = check_table(table, model_path)
    delta = frames - L
    stored = read_rows(table, model_path, 0, table.rows)
    top = formula_rows(np.arange(frames - 1, L - 1, -1), div, dtype)  # positions L'-1 .. L
    bottom = formula_rows(np.arange(-L, -frames, -1), div, dtype)  # positions -L .. -(L'-1)
    new = np.concatenate([top, stored, bottom]).reshape(1, 2 * frames - 1, d)
    t = table.tensor
    keep_name = t.name
    from onnx import numpy_helper

    t.CopyFrom(numpy_helper.from_array(new, keep_name))
    for c in table.centres:
        _set_int(model.graph, c, c.value + delta)
    formula_div_ = formula_div(d)
    return {"table": table.value, "rows_before": table.rows, "rows_after": 2 * frames - 1,
            "frames_before": L, "frames_after": frames, "centre_constants": [c.name for c in table.centres],
            "frequencies_from_stored_rows": int(np.sum(div != formula_div_)),
            "stored_rows_max_difference_from_formula": worst}


def extend_model(model: ModelProto, model_path: Path, plan: PosencPlan) -> list[dict]:
    """Extend every positional table of the encoder `model` to plan.frames; record it in metadata."""
    done = []
    tables = find_tables(model.graph)
    for table in tables:
        if table.max_frames < plan.frames:
            done.append(extend_table(model, model_path, table, plan.frames))
    prior = next((p for p in model.metadata_props if p.key == MARKER), None)
    before = json.loads(prior.value).get("original_output_frames") if prior is not None else None
    record = {"max_seconds": plan.seconds, "output_frames": plan.frames, "subsampling_factor": plan.subsampling,
              "original_output_frames": before or min((t.max_frames for t in tables), default=None),
              "by": f"sherpa-fixed {__version__}"}
    if prior is None:
        prior = model.metadata_props.add()
        prior.key = MARKER
    prior.value = json.dumps(record, sort_keys=True)
    return done


def table_bytes(frames: int, d_model: int, itemsize: int = 4) -> int:
    return (2 * frames - 1) * d_model * itemsize


# ----------------------------------------------------------------------------- verification


def posenc_proof(original, new_path: Path, plan: PosencPlan, feat_dim: int, *, run: bool = True):
    """Prove the rewrite: the new table's middle rows are the stored rows byte for byte and its centre
    constants moved with it (always; reads only the two tables); then, when `run`, the original and
    the new encoder give bit-identical outputs within the old limit, and the new one runs past it."""
    from ..ort import first_line, session_from_path
    from ..reading.sessions import session_from_model
    from .verify import Check

    name = new_path.name
    new_model = ModelProto.FromString(new_path.read_bytes())
    old_tables = {t.value: t for t in find_tables(original.model.graph)}
    new_tables = {t.value: t for t in find_tables(new_model.graph)}
    for value, old in old_tables.items():
        new = new_tables.get(value)
        if new is None or new.max_frames != max(old.max_frames, plan.frames):
            return Check(name, "posenc", False, f"table {value!r} was not extended to {plan.frames} frames")
        delta = new.max_frames - old.max_frames
        kept = read_rows(new, new_path, delta, delta + old.rows)
        if kept.tobytes() != read_rows(old, original.path, 0, old.rows).tobytes():
            return Check(name, "posenc", False, f"table {value!r}: the stored rows changed")
        if sorted(c.value for c in new.centres) != sorted(c.value + delta for c in old.centres):
            return Check(name, "posenc", False, f"table {value!r}: the slice's centre constants did not move")
    detail = (f"stored rows of {len(old_tables)} table(s) kept byte for byte, centre constants moved; "
              f"limit {plan.frames} output frames ({limit_seconds(plan.frames, plan.subsampling):g} s)")
    if not run or not old_tables:
        return Check(name, "posenc", True, detail + " (not run: model over the run-proof size; --verify full runs it)")
    sf, old_frames = plan.subsampling, min(t.max_frames for t in old_tables.values())
    rng = np.random.default_rng(0)
    inside_old = sorted({min(800, old_frames * sf), min(old_frames, 1000) * sf})
    beyond = (old_frames + max(8, old_frames // 20)) * sf
    runs = []
    try:
        orig = session_from_model(original.model, original.path)
        ins = [i.name for i in orig.get_inputs()]
        len_type = np.int64 if "int64" in orig.get_inputs()[1].type else np.int32
        feeds = [{ins[0]: rng.standard_normal((1, feat_dim, n)).astype(np.float32), ins[1]: np.array([n], len_type)}
                 for n in inside_old]
        want = [orig.run(None, f) for f in feeds]
        del orig
        new = session_from_path(new_path)
        for n, f, w in zip(inside_old, feeds, want, strict=True):
            got = new.run(None, f)
            same = all(np.array_equal(a, b) for a, b in zip(w, got, strict=True))
            runs.append({"frames": n, "identical": same})
            if not same:
                return Check(name, "posenc", False, f"outputs differ from the original at {n} input frames", runs)
        f = {ins[0]: rng.standard_normal((1, feat_dim, beyond)).astype(np.float32),
             ins[1]: np.array([beyond], len_type)}
        out = new.run(None, f)
        runs.append({"frames": beyond, "output_frames": int(out[0].shape[2])})
    except Exception as exc:  # onnxruntime raises its own types
        return Check(name, "posenc", False, f"run failed: {first_line(exc)}", runs)
    return Check(name, "posenc", True, detail + f"; bit-identical to the original at {inside_old} input frames, "
                 f"and runs {beyond} frames (the original's limit: {old_frames * sf})", runs)
