"""Tensors whose bytes stay on disk until the moment they are needed.

onnxruntime's quantizer wants a ModelProto with every weight inside it: for
the 1.1B encoder that is 4.3 GB of fp32 in memory, copied several times
(12.7 GB peak). Here the graph is held without its weights: each large
tensor becomes a *stub* (name, type and dims, no data) that remembers where
its bytes are: a range of the source model's external data, or a range of
the scratch file quantized weights were spilled to. Stubs survive every
copy and save/reload the quantizer makes, because the reference is kept in
the proto itself (an `external_data` entry under our own key, with the data
location left DEFAULT so onnx.load never tries to read it).

When a tensor's values are really needed (quantizing it), `Store.read`
reads exactly that range.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from onnx import AttributeProto, GraphProto, ModelProto, TensorProto

from ..errors import BadInputError
from ..reading.external_data import resolve_location
from ..reading.onnx_graph import external_span, tensor_nbytes, uses_external_data
from ..rewriting.weights import ONNX_THRESHOLD
from ..safety.confine import inside

STUB_KEY = "sherpa_fixed.stub"


@dataclass(frozen=True)
class Ref:
    """Where a stub's bytes are: `length` bytes of `path` from `offset`."""

    path: Path
    offset: int
    length: int


class Store:
    """The registry of stubs and the files their bytes live in, read with bounded positional reads.

    Reads are `pread` into a fresh bytes object, not slices of a memory map: mapped pages
    would stay resident (and be counted) long after the tensor was quantized.
    """

    def __init__(self) -> None:
        self.refs: dict[str, Ref] = {}
        self._fds: dict[Path, int] = {}

    def add(self, ref: Ref) -> str:
        key = str(len(self.refs))
        self.refs[key] = ref
        return key

    def ref_of(self, t: TensorProto) -> Ref | None:
        key = stub_key(t)
        return self.refs.get(key) if key is not None else None

    def read(self, ref: Ref) -> bytes:
        fd = self._fds.get(ref.path)
        if fd is None:
            fd = self._fds[ref.path] = os.open(ref.path, os.O_RDONLY)
        parts = []
        got = 0
        while got < ref.length:
            chunk = os.pread(fd, ref.length - got, ref.offset + got)
            if not chunk:
                raise BadInputError(f"ends before byte {ref.offset + ref.length}", path=ref.path,
                                    fix="the weights file is truncated; re-download or re-export it")
            parts.append(chunk)
            got += len(chunk)
        return parts[0] if len(parts) == 1 else b"".join(parts)

    def forget(self, path: Path) -> None:
        fd = self._fds.pop(path, None)
        if fd is not None:
            os.close(fd)

    def close(self) -> None:
        for path in list(self._fds):
            self.forget(path)


def stub_key(t: TensorProto) -> str | None:
    for e in t.external_data:
        if e.key == STUB_KEY:
            return e.value
    return None


def make_stub(t: TensorProto, key: str) -> None:
    """Leave only the reference. data_location is the caller's: onnx.load sets an explicit DEFAULT
    on tensors it read from external data, and a byte-equal result must keep that."""
    del t.external_data[:]
    t.ClearField("raw_data")
    e = t.external_data.add()
    e.key, e.value = STUB_KEY, key


def clear_stub(t: TensorProto) -> None:
    del t.external_data[:]


def _all_tensors(graph: GraphProto):
    yield from graph.initializer
    for node in graph.node:
        for attr in node.attribute:
            if attr.type == AttributeProto.TENSOR or attr.HasField("t"):
                yield attr.t
            yield from attr.tensors
            if attr.HasField("g"):
                yield from _all_tensors(attr.g)
            for g in attr.graphs:
                yield from _all_tensors(g)


def all_tensors(model: ModelProto):
    """Initializers and attribute tensors (Constant values), subgraphs included."""
    yield from _all_tensors(model.graph)


def stub_external(model: ModelProto, model_path: Path, store: Store) -> int:
    """Turn every external tensor of a weightless model into a stub; small ones are read inline.

    Small tensors (under onnx.save's 1 KiB threshold) and non-float ones (shape and index
    constants, which shape inference may read) are cheap, so they get their bytes now, as
    onnxruntime's in-memory model has them. Every location must resolve inside the model's
    folder (confine.py) and its range must fit in the file. Returns the bytes left on disk.
    """
    folder = model_path.parent
    on_disk = 0
    for t in all_tensors(model):
        if not uses_external_data(t):
            continue
        location, offset, length = external_span(t)
        if not location:
            raise BadInputError(f"tensor {t.name!r} has external data without a location", path=model_path,
                                fix="the model is corrupt; re-export it")
        path = inside(folder, resolve_location(model_path, location), what="weights file")
        need = tensor_nbytes(t)
        length = length if length is not None else need
        if length is None or (need is not None and length != need):
            raise BadInputError(f"tensor {t.name!r} declares {length} bytes but its shape needs {need}",
                                path=model_path, fix="the model is corrupt; re-export it")
        try:
            size = os.stat(path).st_size
        except OSError as exc:
            raise BadInputError(f"weights file {location!r} cannot be read ({exc.strerror})", path=path,
                                fix="put the model's weights file beside it (re-download or re-export it)") from exc
        if offset + length > size:
            raise BadInputError(f"is {size} bytes but tensor {t.name!r} needs {offset + length}", path=path,
                                fix="the weights file is truncated; re-download or re-export it")
        ref = Ref(Path(path), offset, length)
        t.data_location = TensorProto.DEFAULT  # as onnx.load leaves a tensor it read from external data
        if length < ONNX_THRESHOLD or t.data_type not in (TensorProto.FLOAT, TensorProto.FLOAT16):
            data = store.read(ref)
            del t.external_data[:]
            t.raw_data = data
        else:
            make_stub(t, store.add(ref))
            on_disk += length
    return on_disk
