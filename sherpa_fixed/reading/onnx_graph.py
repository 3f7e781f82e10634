"""Read ONNX graph files without touching their external weights.

A 1.1B encoder is a 40 MB graph beside a 4 GB weights file; every question
the inspector asks (shapes, metadata, where each tensor's bytes live) is
answered by the graph alone, so the weights are never opened here.
"""

from __future__ import annotations

import copy
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from google.protobuf.message import DecodeError

from ..errors import BadInputError
from . import protostream
from .protos import (
    AttributeProto,
    GraphProto,
    ModelProto,
    NodeProto,
    StringStringEntryProto,
    TensorProto,
    ValueInfoProto,
    np_dtype,
)
from .protostream import Pinned, Span

SKELETON_AT = 64 << 20
"""Files this big or bigger are read as a skeleton (protostream.py): their large inline tensors stay in the file."""

Dim = int | str | None
"""One dimension: an int when fixed, the dim_param name when symbolic, None when unnamed."""


@dataclass(frozen=True)
class TensorSpec:
    """Name, element type and declared shape of a graph input or output."""

    name: str
    dtype: str
    dims: tuple[Dim, ...]

    @property
    def rank(self) -> int:
        return len(self.dims)

    def is_fixed(self, axis: int) -> bool:
        return isinstance(self.dims[axis], int)

    def fixed(self, axis: int) -> int | None:
        d = self.dims[axis] if axis < len(self.dims) else None
        return d if isinstance(d, int) else None


@dataclass
class GraphFile:
    """One parsed ONNX file: its interface, metadata and the (weightless) proto."""

    path: Path
    size: int
    model: ModelProto
    inputs: list[TensorSpec]
    outputs: list[TensorSpec]
    metadata: dict[str, str]
    opset: int | None
    producer: str
    # Skeleton files only: raw_data offset -> where that inline tensor's bytes are (see inline_span).
    inline_spans: dict[int, Span] = field(default_factory=dict, repr=False)
    # The file's inode, held open so a rename over the path does not change what the spans read.
    pinned: Pinned | None = field(default=None, repr=False)

    @property
    def name(self) -> str:
        return self.path.name

    @property
    def skeleton(self) -> bool:
        """True when some inline tensors were left in the file (their protos say external, at this file)."""
        return bool(self.inline_spans)

    def pin(self) -> Pinned:
        """The file's bytes as they are now, whatever is later renamed over the path."""
        if self.pinned is None:
            self.pinned = Pinned(self.path)
        return self.pinned

    def input(self, name: str) -> TensorSpec | None:
        return next((t for t in self.inputs if t.name == name), None)


def _dtype_name(elem_type: int) -> str:
    try:
        return np_dtype(elem_type).name
    except Exception:  # unknown or string types
        return TensorProto.DataType.Name(elem_type).lower() if elem_type else "undefined"


def spec_of(value_info: ValueInfoProto) -> TensorSpec:
    tt = value_info.type.tensor_type
    dims: list[Dim] = []
    if tt.HasField("shape"):
        for d in tt.shape.dim:
            if d.HasField("dim_value"):
                dims.append(int(d.dim_value))
            elif d.HasField("dim_param") and d.dim_param:
                dims.append(d.dim_param)
            else:
                dims.append(None)
    return TensorSpec(value_info.name, _dtype_name(tt.elem_type), tuple(dims))


def load_graph(path: str | Path) -> GraphFile:
    """Parse an ONNX file's protobuf, leaving external data where it is.

    Raises BadInputError with a one-line reason for anything that is not a
    readable ONNX model, so callers never see a protobuf traceback.
    """
    path = Path(path)
    if not path.exists():
        raise BadInputError("file not found", path=path, fix="check the path or re-export the model")
    if path.is_dir():
        raise BadInputError("is a folder, expected an .onnx file", path=path)
    size = path.stat().st_size
    if size == 0:
        raise BadInputError("file is empty", path=path, fix="re-export or re-download it")
    spans: dict[int, Span] = {}
    pinned: Pinned | None = None
    try:
        model = None
        if size >= SKELETON_AT:
            pinned = Pinned(path)
            built = protostream.skeleton_bytes(pinned)
            if built is not None:
                model = ModelProto.FromString(built[0])
                spans = built[1]
            else:
                pinned.close()
                pinned = None
        if model is None:
            if size > (2 << 30):  # protobuf cannot hold it: reading it whole would only fail, at 2 GB+ of memory
                raise BadInputError(f"{size:,} bytes, over protobuf's 2 GiB limit, and not readable as an ONNX "
                                    "model", path=path, fix="the file is corrupt or not ONNX; re-export or "
                                    "re-download it")
            model = ModelProto.FromString(path.read_bytes())
    except BadInputError:
        raise
    except (DecodeError, ValueError, RuntimeError) as exc:
        raise BadInputError(
            f"not a readable ONNX file ({type(exc).__name__}: {(str(exc).splitlines() or ['parse error'])[0]})",
            path=path,
            fix="the file is corrupt or truncated; re-export or re-download it",
        ) from exc
    except OSError as exc:
        raise BadInputError(f"cannot read ({exc.strerror})", path=path) from exc
    if not model.HasField("graph") or (not model.graph.node and not model.graph.input):
        raise BadInputError(
            "not an ONNX model (no graph inside)",
            path=path,
            fix="the file is corrupt or not ONNX; re-export or re-download it",
        )
    initializer_names = {t.name for t in model.graph.initializer}
    inputs = [spec_of(v) for v in model.graph.input if v.name not in initializer_names]
    outputs = [spec_of(v) for v in model.graph.output]
    opset = next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), None)
    return GraphFile(
        path=path,
        size=size,
        model=model,
        inputs=inputs,
        outputs=outputs,
        metadata={p.key: p.value for p in model.metadata_props},
        opset=opset,
        producer=f"{model.producer_name} {model.producer_version}".strip(),
        inline_spans=spans,
        pinned=pinned,
    )


def inline_span(g: GraphFile, t: TensorProto) -> Span | None:
    """Where a skeleton tensor's inline bytes are, or None for any other tensor (truly external ones too)."""
    if not g.inline_spans or not uses_external_data(t):
        return None
    info = external_info(t)
    if info.get("location") != g.path.name:
        return None
    try:
        offset = external_field(info, "offset")
    except ValueError:
        return None
    return g.inline_spans.get(offset) if offset is not None else None


def materialize(g: GraphFile) -> ModelProto:
    """A copy of the model with every tensor's bytes in it, as `onnx.load` would give.

    For a skeleton this reads the left-out tensors back from the pinned file;
    code that rewrites and re-serializes a graph needs this, code that reads
    its structure does not.
    """
    model = copy.deepcopy(g.model)
    if g.skeleton:
        pinned = g.pin()
        for t in graph_tensors(model.graph):
            span = inline_span(g, t)
            if span is not None:
                protostream.restore(pinned, t, span)
    return model


def _attribute_tensors(attr: AttributeProto) -> Iterator[TensorProto]:
    if attr.HasField("t"):
        yield attr.t
    yield from attr.tensors
    if attr.HasField("g"):
        yield from graph_tensors(attr.g)
    for g in attr.graphs:
        yield from graph_tensors(g)


def graph_tensors(graph: GraphProto) -> Iterator[TensorProto]:
    """Every tensor that can hold weights: initializers and node attributes, subgraphs included."""
    yield from graph.initializer
    for node in graph.node:
        for attr in node.attribute:
            yield from _attribute_tensors(attr)


def initializer_tensors(graph: GraphProto) -> Iterator[TensorProto]:
    """Initializers of the graph and its subgraphs: the tensors onnx.save moves to external data.

    Constant-node attributes stay inline (onnx's convert_attribute=False default), and
    must: onnxruntime's shape inference cannot read a Constant whose data is external.
    """
    yield from graph.initializer
    for node in graph.node:
        for attr in node.attribute:
            if attr.HasField("g"):
                yield from initializer_tensors(attr.g)
            for g in attr.graphs:
                yield from initializer_tensors(g)


def all_nodes(graph: GraphProto) -> Iterator[NodeProto]:
    """Nodes of the graph and of every subgraph (Loop/Scan/If bodies)."""
    for node in graph.node:
        yield node
        for attr in node.attribute:
            if attr.HasField("g"):
                yield from all_nodes(attr.g)
            for g in attr.graphs:
                yield from all_nodes(g)


def tensor_nbytes(t: TensorProto) -> int | None:
    """Bytes the tensor's raw data must have, from its dims and type (None for strings)."""
    if t.data_type in (TensorProto.STRING, TensorProto.UNDEFINED):
        return None
    try:
        itemsize = np_dtype(t.data_type).itemsize
    except Exception:
        return None
    n = 1
    for d in t.dims:
        n *= d
    if t.data_type in (TensorProto.INT4, TensorProto.UINT4):
        return (n + 1) // 2
    return n * itemsize


def uses_external_data(t: TensorProto) -> bool:
    return t.HasField("data_location") and t.data_location == TensorProto.EXTERNAL


def external_info(t: TensorProto) -> dict[str, str]:
    return {e.key: e.value for e in t.external_data}


MAX_OFFSET = 1 << 50  # 1 PiB: no weights file is larger; past it a number is a forgery, not an offset


def external_field(info: dict[str, str], key: str) -> int | None:
    """An external tensor's `offset` or `length` as a non-negative integer; None when absent.

    ValueError when present but not a decimal integer in 0..MAX_OFFSET (`abc`, `-5`, `1e9`)."""
    if key not in info:
        return None
    text = info[key].strip()
    if not text.isdigit() or len(text) > 16 or int(text) > MAX_OFFSET:
        raise ValueError(f"external {key} {info[key]!r} is not a byte count")
    return int(text)


def external_span(t: TensorProto) -> tuple[str, int, int | None]:
    """(location, offset, length) of an external tensor: every reader of weights goes through this.

    BadInputError naming the tensor when offset or length is not a non-negative integer."""
    info = external_info(t)
    try:
        return info.get("location", ""), external_field(info, "offset") or 0, external_field(info, "length")
    except ValueError as exc:
        raise BadInputError(f"tensor {t.name!r}: {exc}",
                            fix="the model file is damaged or forged; re-download or re-export it") from exc


# ----------------------------------------------------------------------------- signature without parsing


@dataclass
class Signature:
    """Inputs, outputs and metadata of an ONNX file, read without parsing its nodes or tensors."""

    path: Path
    inputs: list[TensorSpec]
    outputs: list[TensorSpec]
    metadata: dict[str, str]


def read_signature(path: str | Path) -> Signature:
    """The graph's interface and metadata, reading only their bytes.

    A 1.1B int8 encoder.onnx holds a gigabyte of tensors inline; the
    recognizer only needs the audio input's shape and a few metadata keys.
    The file is walked field by field with positioned reads (protostream.py):
    tensor payloads are skipped by their length prefix and never read.
    """
    path = Path(path)
    inputs, outputs, inits, meta = [], [], set(), {}
    try:
        pinned = Pinned(path)
        try:
            r = protostream.Reader(pinned)
            for f in r.fields(0, r.size):
                if f.num == protostream.MODEL_METADATA and f.wire == 2:
                    entry = StringStringEntryProto.FromString(r.read(f.data, f.end))
                    meta[entry.key] = entry.value
                elif f.num == protostream.MODEL_GRAPH and f.wire == 2:
                    for g in r.fields(f.data, f.end):
                        if g.wire != 2:
                            continue
                        if g.num == protostream.GRAPH_INPUT:
                            inputs.append(spec_of(ValueInfoProto.FromString(r.read(g.data, g.end))))
                        elif g.num == protostream.GRAPH_OUTPUT:
                            outputs.append(spec_of(ValueInfoProto.FromString(r.read(g.data, g.end))))
                        elif g.num == protostream.GRAPH_INITIALIZER:
                            for t in r.fields(g.data, g.end):
                                if t.num == protostream.TENSOR_NAME and t.wire == 2:
                                    inits.add(r.read(t.data, t.end).decode("utf-8", "replace"))
                                    break
        finally:
            pinned.close()
    except BadInputError:
        raise
    except (OSError, ValueError, DecodeError) as exc:
        if isinstance(exc, FileNotFoundError):
            raise BadInputError("file not found", path=path, fix="check the path") from exc
        raise BadInputError(f"not a readable ONNX file ({exc})", path=path,
                            fix="the file is corrupt or truncated; re-export or re-download it") from exc
    if not inputs:
        raise BadInputError("not an ONNX model (no graph inputs)", path=path)
    return Signature(path, [t for t in inputs if t.name not in inits], outputs, meta)
