"""Prove that a rewritten model computes exactly what the original did.

Two proofs, used as the change demands:

- run proof: both graphs run in onnxruntime on the same random inputs and
  every output is bit-identical (needed whenever the graph itself changed,
  e.g. freed dims, and done for every model small enough to load cheaply);
- byte proof: the graphs are identical once metadata and weight locations
  are set aside, and every tensor's bytes at its new location equal the
  bytes at its old one, compared in bounded chunks. Identical graph and
  identical bytes make identical outputs; this costs a read of the weights,
  not a 4 GB onnxruntime session.
"""

from __future__ import annotations

import copy
import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..ort import first_line, session_from_path
from ..reading.external_data import resolve_location
from ..reading.onnx_graph import (
    GraphFile,
    TensorSpec,
    external_info,
    external_span,
    graph_tensors,
    inline_span,
    uses_external_data,
)
from ..reading.protos import ModelProto, NodeProto, TensorProto
from ..reading.sessions import session_from_model

CHUNK = 8 << 20


@dataclass
class Check:
    file: str
    kind: str  # run | bytes | sherpa
    ok: bool
    detail: str
    runs: list[dict] = field(default_factory=list)

    def to_json(self) -> dict:
        return {"file": self.file, "kind": self.kind, "ok": self.ok, "detail": self.detail, "runs": self.runs}


def _np_dtype(spec: TensorSpec) -> np.dtype:
    return np.dtype(spec.dtype)


def feeds_for(role: str, g: GraphFile, *, frames: int | None = None, batch: int | None = None,
              feat_dim: int | None = None, vocab: int | None = None, seed: int = 0) -> dict[str, np.ndarray]:
    """Random inputs of the right shapes and types for an encoder, decoder or joiner."""
    rng = np.random.default_rng(seed)
    feeds: dict[str, np.ndarray] = {}
    if role == "encoder":
        audio, length = g.inputs[0], g.inputs[1]
        b = batch or audio.fixed(0) or 1
        t = frames or audio.fixed(2) or 800
        f = audio.fixed(1) or feat_dim or 80
        feeds[audio.name] = rng.standard_normal((b, f, t)).astype(_np_dtype(audio))
        feeds[length.name] = np.full((b,), t, dtype=_np_dtype(length))
    elif role == "decoder":
        targets, lengths, *states = g.inputs
        feeds[targets.name] = rng.integers(0, max(vocab or 2, 2), size=(1, 1)).astype(_np_dtype(targets))
        feeds[lengths.name] = np.ones((1,), dtype=_np_dtype(lengths))
        for s in states:
            dims = [d if isinstance(d, int) else 1 for d in s.dims]
            feeds[s.name] = rng.standard_normal(dims).astype(_np_dtype(s))
    else:
        for spec in g.inputs:
            dims = [d if isinstance(d, int) else 1 for d in spec.dims]
            feeds[spec.name] = rng.standard_normal(dims).astype(_np_dtype(spec))
    return feeds


def _runnable(original: GraphFile) -> ModelProto:
    """The original's model with every tensor's bytes where onnxruntime will find them.

    A skeleton (reading/protostream.py) points its large inline tensors at its own path; after an
    in-place rename that path is the NEW file, so onnxruntime would read the new bytes (or garbage)
    as the original's. Its bytes come back from the pinned original instead. Run proofs are for
    models under RUN_PROOF_LIMIT or asked for with --verify full, so this costs the model's size once.
    """
    if getattr(original, "skeleton", False):
        from ..reading.onnx_graph import materialize

        return materialize(original)
    return original.model


def _identical(a: list[np.ndarray], b: list[np.ndarray]) -> str | None:
    if len(a) != len(b):
        return f"{len(a)} outputs vs {len(b)}"
    for i, (x, y) in enumerate(zip(a, b, strict=True)):
        if x.dtype != y.dtype or x.shape != y.shape:
            return f"output {i}: {x.dtype}{x.shape} vs {y.dtype}{y.shape}"
        same = np.array_equal(x, y, equal_nan=x.dtype.kind == "f")
        if not same:
            diff = float(np.max(np.abs(x.astype(np.float64) - y.astype(np.float64))))
            return f"output {i} differs (max abs difference {diff:g})"
    return None


def run_proof(
    role: str,
    original: GraphFile,
    new_path: Path,
    *,
    extra_frames: list[int] | None = None,
    extra_batches: list[int] | None = None,
    feat_dim: int | None = None,
    vocab: int | None = None,
) -> Check:
    """Bit-identical outputs at the original's shapes; then, for freed dims, runs at other sizes."""
    name = new_path.name
    try:
        orig = session_from_model(_runnable(original), original.path)
    except Exception as exc:
        return Check(name, "run", False, f"the original does not load in onnxruntime: {first_line(exc)}")
    feeds = feeds_for(role, original, feat_dim=feat_dim, vocab=vocab)
    want = orig.run(None, feeds)
    del orig
    try:
        new = session_from_path(new_path)
        got = new.run(None, feeds)
    except Exception as exc:
        return Check(name, "run", False, f"rewritten model fails: {first_line(exc)}")
    problem = _identical(want, got)
    shape = {k: list(v.shape) for k, v in feeds.items()}
    runs = [{"inputs": shape, "identical": problem is None}]
    how = "bit-identical outputs"
    if problem and (extra_frames or extra_batches):
        # Freed dims change what onnxruntime's optimizer knows about shapes, so it may fuse or pick
        # kernels differently (a LayerNorm reduction order, say): the graphs are the same if their
        # unoptimized runs are bit-identical.
        # One session at a time: each may hold the model's weights.
        want = session_from_model(_runnable(original), original.path, optimize=False).run(None, feeds)
        unopt = _identical(want, session_from_path(new_path, optimize=False).run(None, feeds))
        runs.append({"inputs": shape, "optimizations": "off", "identical": unopt is None})
        if unopt is None:
            how = f"bit-identical outputs with graph optimizations off (with them on, {problem})"
            problem = None
    if problem:
        return Check(name, "run", False, f"outputs differ from the original's: {problem}", runs)
    new_graph = GraphFile(new_path, 0, original.model, original.inputs, original.outputs, {}, None, "")
    for frames in extra_frames or []:
        try:
            out = new.run(None, feeds_for(role, new_graph, frames=frames, feat_dim=feat_dim, seed=1))
            runs.append({"frames": frames, "ok": True, "output_frames": int(out[0].shape[-1])})
        except Exception as exc:
            runs.append({"frames": frames, "ok": False, "error": first_line(exc)})
            return Check(name, "run", False, f"does not run at {frames} frames: {first_line(exc)}", runs)
    for batch in extra_batches or []:
        try:
            new.run(None, feeds_for(role, new_graph, batch=batch, feat_dim=feat_dim, seed=2))
            runs.append({"batch": batch, "ok": True})
        except Exception as exc:
            runs.append({"batch": batch, "ok": False, "error": first_line(exc)})
            return Check(name, "run", False, f"does not run at batch {batch}: {first_line(exc)}", runs)
    detail = f"{how} on random input " + ", ".join(f"{k}{v}" for k, v in shape.items())
    return Check(name, "run", True, detail, runs)


def _graph_difference(a: ModelProto, b: ModelProto, freed: dict[str, dict[int, str]]) -> str | None:
    """Where two models differ, ignoring metadata, tensor storage and the planned freed dims.

    Compares message by message (upb compares in C), never copying or serialising the
    whole graph: a 40 MB constant costs no extra memory here.
    """
    if (a.ir_version, list(a.opset_import)) != (b.ir_version, list(b.opset_import)):
        return "opset or IR version"
    ga, gb = a.graph, b.graph
    if len(ga.node) != len(gb.node):
        return f"{len(ga.node)} nodes vs {len(gb.node)}"
    for na, nb in zip(ga.node, gb.node, strict=True):
        if na != nb and _without_storage(na) != _without_storage(nb):
            return f"node {na.name or na.op_type}"
    if len(ga.initializer) != len(gb.initializer):
        return "number of initializers"
    for ta, tb in zip(ga.initializer, gb.initializer, strict=True):
        if (ta.name, list(ta.dims), ta.data_type) != (tb.name, list(tb.dims), tb.data_type):
            return f"initializer {ta.name}"
    for va_list, vb_list in ((ga.input, gb.input), (ga.output, gb.output)):
        if len(va_list) != len(vb_list):
            return "graph inputs/outputs"
        for va, vb in zip(va_list, vb_list, strict=True):
            if va.name != vb.name:
                return f"port {va.name}"
            vb = copy.deepcopy(vb)
            for axis in freed.get(vb.name, {}):
                vb.type.tensor_type.shape.dim[axis].CopyFrom(va.type.tensor_type.shape.dim[axis])
            if va != vb:
                return f"port {va.name}"
    if not freed and list(ga.value_info) != list(gb.value_info):
        return "value_info"
    if list(a.functions) != list(b.functions):
        return "functions"
    return None


def _without_storage(node: NodeProto) -> NodeProto:
    """The node with its attribute tensors' bytes and their location set aside (name, type, dims kept).

    Constant nodes do not stay inline: over 2 GiB torch stores a Constant's `value` as external
    data like any initializer (the 1.1B encoder's rel-pos table, `Constant_4053_attr__value`,
    41 MB), and prepare moves it with the weights. Its bytes are compared by byte_proof, streamed
    like an initializer's (graph_tensors yields attribute tensors too); here only where it lives
    may differ. Subgraphs (Loop/If bodies) are handled the same way, their initializers included.
    Called only for nodes that differ, so an inline tensor is copied at most once, and rarely.
    """
    out = NodeProto()
    out.CopyFrom(node)
    for attr in out.attribute:
        tensors = ([attr.t] if attr.HasField("t") else []) + list(attr.tensors)
        subgraphs = ([attr.g] if attr.HasField("g") else []) + list(attr.graphs)
        for g in subgraphs:
            tensors += list(graph_tensors(g))
        for t in tensors:
            t.ClearField("raw_data")
            t.ClearField("data_location")
            del t.external_data[:]
    return out


class _EndsEarly(Exception):
    def __init__(self, path: Path):
        self.path = path


def _skeleton_span(g: GraphFile | None, t: TensorProto):
    """Where an inline tensor of a skeleton-read graph (reading/protostream.py) really is, else None.

    A skeleton describes a large inline tensor as external data at its own file. After an in-place
    rewrite that path names the NEW file, so those bytes must be read from the original's pinned
    descriptor, never by path (and never taken as "unmoved" because the path is the same).
    """
    return None if g is None else inline_span(g, t)


def _tensor_reader(model_path: Path, graph: GraphFile | None = None):
    """read(tensor, start, n) -> a view of n bytes of the tensor, into one reused buffer per reader.

    `graph`: the original's GraphFile, whose skeleton tensors are read from its pinned file.
    """
    handles: dict[Path, object] = {}
    buf = bytearray(CHUNK)

    def read(t: TensorProto, start: int, n: int) -> np.ndarray:
        """A uint8 view of the bytes (no copy); compared with numpy, as fast as memcmp."""
        if not uses_external_data(t):
            return np.frombuffer(t.raw_data, dtype=np.uint8, count=n, offset=start)
        span = _skeleton_span(graph, t)
        if span is not None:
            pinned = graph.pin()
            got = os.preadv(pinned.fd, [memoryview(buf)[:n]], span.offset + start)
            if got < n:
                raise _EndsEarly(pinned.path)
            return np.frombuffer(buf, dtype=np.uint8, count=got)
        location, offset, _ = external_span(t)
        path = resolve_location(model_path, location)
        f = handles.get(path)
        if f is None:
            f = handles[path] = open(path, "rb", buffering=0)  # noqa: SIM115 - closed by close()
        f.seek(offset + start)
        got = f.readinto(memoryview(buf)[:n])
        if got < n:
            raise _EndsEarly(path)
        return np.frombuffer(buf, dtype=np.uint8, count=got)

    def close() -> None:
        for f in handles.values():
            f.close()

    return read, close


def _nbytes(t: TensorProto) -> int:
    if uses_external_data(t):
        length = external_span(t)[2]
        if length is not None:
            return length
        from ..reading.onnx_graph import tensor_nbytes

        return tensor_nbytes(t) or 0
    return len(t.raw_data)


def _equal(a: np.ndarray, b: np.ndarray) -> bool:
    """Two uint8 views, compared 8 bytes at a time: 3x faster than np.array_equal on bytes, which is
    most of the proof's time on a 4.3 GB export (measured 0.57 against 1.58 ms per 8 MB)."""
    if a.shape != b.shape:
        return False
    n = a.size // 8 * 8
    return bool(np.array_equal(a[:n].view(np.uint64), b[:n].view(np.uint64))) and bool(np.array_equal(a[n:], b[n:]))


def byte_proof(original: GraphFile, new_model: ModelProto, new_path: Path,
               freed: dict[str, dict[int, str]] | None = None) -> Check:
    """Same graph (metadata, weight locations and planned freed dims aside) and the same tensor bytes."""
    name = new_path.name
    where = _graph_difference(original.model, new_model, freed or {})
    if where:
        return Check(name, "bytes", False, f"the rewritten graph differs from the original beyond metadata and "
                                           f"weight locations ({where})")
    read_a, close_a = _tensor_reader(original.path, original)
    read_b, close_b = _tensor_reader(new_path)
    compared = same_place = 0
    pool = ThreadPoolExecutor(1)
    try:
        for ta, tb in zip(graph_tensors(original.model.graph), graph_tensors(new_model.graph), strict=True):
            n = _nbytes(ta)
            if _nbytes(tb) != n:
                return Check(name, "bytes", False, f"tensor {ta.name!r} has {_nbytes(tb)} bytes, was {n}")
            if _same_place(ta, original, tb, new_path):
                same_place += n  # the very same bytes of the very same file (inode): nothing to compare
                continue
            pos = 0
            while pos < n:
                k = min(CHUNK, n - pos)
                other = pool.submit(read_b, tb, pos, k)  # the new file is read meanwhile (readinto frees the GIL)
                if not _equal(read_a(ta, pos, k), other.result()):
                    return Check(name, "bytes", False, f"tensor {ta.name!r} differs at byte {pos}")
                pos += k
            compared += n
    except _EndsEarly as exc:
        return Check(name, "bytes", False, f"tensor {ta.name!r}: {exc.path.name} ends before its bytes do")
    except OSError as exc:
        return Check(name, "bytes", False, f"cannot read weights: {exc}")
    finally:
        pool.shutdown()
        close_a()
        close_b()
    detail = f"identical graph; {compared} tensor bytes compared equal"
    if same_place:
        detail += f", {same_place} bytes unmoved (same file, same offsets)"
    return Check(name, "bytes", True, detail)


def _same_place(ta: TensorProto, original: GraphFile, tb: TensorProto, path_b: Path) -> bool:
    """True when both tensors are the very same bytes of the very same file (inode), so nothing to compare.

    Files are compared by inode, not by path: after an in-place rename the original model's path
    names the new file, while a skeleton's bytes stay in the original's pinned inode.
    """
    if not (uses_external_data(ta) and uses_external_data(tb)):
        return False
    ia, ib = external_info(ta), external_info(tb)
    span = _skeleton_span(original, ta)
    where_a = (span.offset, span.length) if span is not None else external_span(ta)[1:]
    where_b = external_span(tb)[1:]
    if where_a != where_b:
        return False
    try:
        if span is not None:
            sa = os.fstat(original.pin().fd)
        else:
            sa = os.stat(resolve_location(original.path, ia.get("location", "")))
        sb = os.stat(resolve_location(path_b, ib.get("location", "")))
    except OSError:
        return False
    return (sa.st_dev, sa.st_ino) == (sb.st_dev, sb.st_ino)


def window_proof(original: GraphFile, new_path: Path, params, lengths: list[int], feat_dim: int) -> Check:
    """The windowed encoder against the fixed-T encoder run window by window by hand.

    Both run with onnxruntime's graph optimiser and weight prepacking off, so the comparison is
    exact: both pick other kernels inside Loop bodies (about 1e-6 apart), which says nothing about
    the windowing.
    """
    from .windowing import run_by_hand

    name = new_path.name
    try:
        orig = session_from_model(_runnable(original), original.path, optimize=False)
        new = session_from_path(new_path, optimize=False)
    except Exception as exc:
        return Check(name, "window", False, f"does not load: {first_line(exc)}")
    rng = np.random.default_rng(0)
    runs = []
    names = [i.name for i in new.get_inputs()]
    len_type = np.int64 if "int64" in new.get_inputs()[1].type else np.int32
    for n in lengths:
        x = rng.standard_normal((1, feat_dim, n)).astype(np.float32)
        try:
            got = new.run(None, {names[0]: x, names[1]: np.array([n], len_type)})[0]
        except Exception as exc:
            return Check(name, "window", False, f"fails at {n} frames: {first_line(exc)}", runs)
        want = run_by_hand(orig, x, n, params)
        same = got.shape == want.shape and np.array_equal(got, want)
        runs.append({"frames": n, "output_frames": int(got.shape[-1]), "identical": bool(same)})
        if not same:
            return Check(name, "window", False, f"at {n} frames the windowed output differs from the by-hand "
                         f"windows ({got.shape} vs {want.shape})", runs)
    return Check(name, "window", True, "bit-identical to the fixed-T encoder run on the same windows by hand at "
                 + ", ".join(f"{n}" for n in lengths) + " frames", runs)
