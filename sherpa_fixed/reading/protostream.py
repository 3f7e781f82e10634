"""Walk an ONNX file's protobuf field by field, never holding its tensors in memory.

A self-contained ONNX file (the 1.1 GB int8 encoder that onnxruntime's
`quantize_dynamic` writes, FACTS.md section 9) is one protobuf message;
`onnx.load` parses all of it, which costs twice the file in memory. Every
question sherpa-fixed asks of a graph needs names, shapes, nodes and
attributes, and those are a few MB of it. This module reads the file with
positioned reads through a small block buffer (no mmap: a mapped file's
touched pages count in RSS, and the kernel maps 64 KB around every touch)
and builds a *skeleton*: the same ModelProto with each large tensor's
`raw_data` left in the file and described the way ONNX describes bytes that
live elsewhere, as external data (location = the file itself, offset, length).

Code that only reads structure works on the skeleton unchanged, and so does
onnxruntime (a session reads those bytes from the file at that offset, like
any external weight). Code that must hold the bytes asks for them by span
(`Span`, `restore`). The file is pinned by an open descriptor (`Pinned`), so a
rewrite that renames a new file over it leaves the skeleton's bytes readable.

Wire format: https://protobuf.dev/programming-guides/encoding/ ; field
numbers from onnx/onnx.proto (ModelProto.graph = 7, metadata_props = 14;
GraphProto.node = 1, initializer = 5, input = 11, output = 12, value_info = 13;
NodeProto.attribute = 5; AttributeProto.t = 5, g = 6, tensors = 10, graphs = 11;
TensorProto.raw_data = 9, external_data = 13, data_location = 14).
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

from .protos import TensorProto

# ModelProto
MODEL_GRAPH = 7
MODEL_METADATA = 14
# GraphProto
GRAPH_NODE = 1
GRAPH_INITIALIZER = 5
GRAPH_INPUT = 11
GRAPH_OUTPUT = 12
GRAPH_VALUE_INFO = 13
# NodeProto / AttributeProto
NODE_ATTRIBUTE = 5
ATTR_T, ATTR_G, ATTR_TENSORS, ATTR_GRAPHS = 5, 6, 10, 11
# TensorProto
TENSOR_NAME = 8
TENSOR_RAW = 9
TENSOR_EXTERNAL = 13
TENSOR_LOCATION = 14

STRIP_AT = 16 << 10
"""A tensor's raw_data this big or bigger stays in the file; smaller ones (scales, shape vectors) are parsed."""

# Which length-delimited fields of a message may hold a big tensor, and what they hold.
_CHILDREN = {
    "graph": {GRAPH_NODE: "node", GRAPH_INITIALIZER: "tensor"},
    "node": {NODE_ATTRIBUTE: "attr"},
    "attr": {ATTR_T: "tensor", ATTR_TENSORS: "tensor", ATTR_G: "graph", ATTR_GRAPHS: "graph"},
}


class ProtoError(ValueError):
    """The bytes are not a well-formed protobuf message (truncated, or not protobuf at all)."""


class Pinned:
    """An open descriptor on the file a skeleton was read from.

    A rename over the path (prepare --in-place) does not change what this reads:
    the descriptor holds the original inode until it is closed.
    """

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)
        self.fd = os.open(self.path, os.O_RDONLY)
        self.size = os.fstat(self.fd).st_size

    def pread(self, start: int, end: int) -> bytes:
        n = end - start
        parts = []
        while n > 0:
            chunk = os.pread(self.fd, min(n, 1 << 30), start)
            if not chunk:
                raise ProtoError(f"file ends at byte {start}, {n} bytes early")
            parts.append(chunk)
            start += len(chunk)
            n -= len(chunk)
        return parts[0] if len(parts) == 1 else b"".join(parts)

    def __copy__(self) -> Pinned:
        return self  # one descriptor, one owner: a copied GraphFile shares it rather than closing it twice

    def __deepcopy__(self, memo) -> Pinned:
        return self

    def close(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1

    def __del__(self):
        with contextlib.suppress(Exception):
            self.close()


class Field(NamedTuple):
    """One field of a message: [start, end) is the whole field (key included); [data, end) its payload
    for length-delimited fields; value is the integer for varints. (A tuple: a 1.1B graph has ~30k.)"""

    num: int
    wire: int
    start: int
    data: int
    end: int
    value: int = 0

    @property
    def size(self) -> int:
        return self.end - self.data


class Reader:
    """Random access to a file through one block buffer: field headers cost a block read, payloads are
    skipped by their length prefix, so a gigabyte of tensors is never read to walk past it."""

    BLOCK = 64 << 10

    def __init__(self, pinned: Pinned):
        self.pinned = pinned
        self.size = pinned.size
        self._start = 0
        self._buf = b""

    def _window(self, pos: int) -> tuple[bytes, int]:
        if not (self._start <= pos and pos + 20 <= self._start + len(self._buf)) and not (
            self._start <= pos < self._start + len(self._buf) == self.size
        ):
            self._buf = os.pread(self.pinned.fd, self.BLOCK, pos)
            self._start = pos
        return self._buf, pos - self._start

    def varint(self, pos: int, limit: int) -> tuple[int, int]:
        buf, i = self._window(pos)
        if pos < limit and i < len(buf) and buf[i] < 0x80:  # one byte: most keys and small lengths
            return buf[i], pos + 1
        result = shift = 0
        while True:
            if pos >= limit or i >= len(buf):
                raise ProtoError(f"message ends inside a varint at byte {pos}")
            b = buf[i]
            i += 1
            pos += 1
            result |= (b & 0x7F) << shift
            if not b & 0x80:
                return result, pos
            shift += 7
            if shift > 63:
                raise ProtoError(f"varint too long at byte {pos}")

    def fields(self, start: int, end: int) -> Iterator[Field]:
        """The fields of the message occupying [start, end), in file order.

        The loop decodes one-byte keys and lengths (nearly all of them) from the block buffer inline:
        a 1.1B int8 graph has ~25k fields, and a method call per varint was most of inspect's time."""
        if end > self.size:
            raise ProtoError(f"message runs to byte {end}, past the end of the file ({self.size} bytes)")
        pos = start
        varint = self.varint
        while pos < end:
            buf, i = self._window(pos)
            key = buf[i] if i < len(buf) else 0x80
            if key < 0x80:
                p = pos + 1
            else:
                key, p = varint(pos, end)
            num, wire = key >> 3, key & 7
            if num == 0:
                raise ProtoError(f"field number 0 at byte {pos}")
            if wire == 2:
                j = i + 1 + (p - pos - 1)
                if j < len(buf) and buf[j] < 0x80 and p < end:
                    n, p = buf[j], p + 1
                else:
                    n, p = varint(p, end)
                q = p + n
                if q > end:
                    raise ProtoError(f"field {num} at byte {pos} claims {n} bytes, past the end of its message")
                yield Field(num, wire, pos, p, q)
            elif wire == 0:
                value, q = varint(p, end)
                yield Field(num, wire, pos, p, q, value)
            elif wire in (1, 5):
                q = p + (8 if wire == 1 else 4)
                if q > end:
                    raise ProtoError(f"field {num} at byte {pos} is cut off")
                yield Field(num, wire, pos, p, q)
            else:
                raise ProtoError(f"unsupported wire type {wire} at byte {pos}")
            pos = q

    def read(self, start: int, end: int) -> bytes:
        if self._start <= start and end <= self._start + len(self._buf):
            return self._buf[start - self._start:end - self._start]
        return self.pinned.pread(start, end)


# ----------------------------------------------------------------------------- encoding


def varint_bytes(n: int) -> bytes:
    out = bytearray()
    while True:
        b = n & 0x7F
        n >>= 7
        if n:
            out.append(b | 0x80)
        else:
            out.append(b)
            return bytes(out)


def key_bytes(num: int, wire: int) -> bytes:
    return varint_bytes(num << 3 | wire)


def len_field(num: int, payload: bytes) -> bytes:
    return key_bytes(num, 2) + varint_bytes(len(payload)) + payload


# ----------------------------------------------------------------------------- skeleton


@dataclass(frozen=True)
class Span:
    """Where one inline tensor's bytes stay in the file: its raw_data payload, and its whole TensorProto
    message (to restore the tensor exactly as it was written)."""

    offset: int
    length: int
    message_start: int
    message_end: int


class _Pieces:
    """A message being rebuilt: runs of unchanged file bytes (coalesced) and new bytes."""

    def __init__(self, reader: Reader):
        self.reader = reader
        self.items: list[bytes | tuple[int, int]] = []

    def keep(self, start: int, end: int) -> None:
        if self.items and isinstance(self.items[-1], tuple) and self.items[-1][1] == start:
            self.items[-1] = (self.items[-1][0], end)
        else:
            self.items.append((start, end))

    def add(self, data: bytes) -> None:
        self.items.append(data)

    def join(self) -> bytes:
        return b"".join(x if isinstance(x, bytes) else self.reader.read(*x) for x in self.items)


def _tensor(reader: Reader, msg: Field, location: str, strip_at: int, spans: dict[int, Span]) -> bytes | None:
    raw = None
    drop: list[Field] = []
    for f in reader.fields(msg.data, msg.end):
        if f.num == TENSOR_EXTERNAL or (f.num == TENSOR_LOCATION and (f.wire != 0 or f.value != 0)):
            return None  # already external: leave exactly as written
        if f.num == TENSOR_LOCATION:
            drop.append(f)  # an explicit DEFAULT (torch's external Constant, loaded back inline) is replaced
        elif f.num == TENSOR_RAW and f.wire == 2 and f.size >= strip_at:
            raw = f
    if raw is None:
        return None
    out = _Pieces(reader)
    pos = msg.data
    for f in sorted([raw, *drop], key=lambda f: f.start):
        if f.start > pos:
            out.keep(pos, f.start)
        pos = f.end
    if pos < msg.end:
        out.keep(pos, msg.end)
    for key, value in (("location", location), ("offset", str(raw.data)), ("length", str(raw.size))):
        entry = len_field(1, key.encode()) + len_field(2, value.encode())
        out.add(len_field(TENSOR_EXTERNAL, entry))
    out.add(key_bytes(TENSOR_LOCATION, 0) + varint_bytes(TensorProto.EXTERNAL))
    spans[raw.data] = Span(raw.data, raw.size, msg.data, msg.end)
    return out.join()


def _message(reader: Reader, msg: Field, kind: str, location: str, strip_at: int,
             spans: dict[int, Span]) -> bytes | None:
    """The message's payload with big tensors left in the file, or None when nothing in it is big."""
    children = _CHILDREN[kind]
    out = _Pieces(reader)
    changed = False
    for f in reader.fields(msg.data, msg.end):
        child = children.get(f.num) if f.wire == 2 and f.size >= strip_at else None
        new = None
        if child == "tensor":
            new = _tensor(reader, f, location, strip_at, spans)
        elif child is not None:
            new = _message(reader, f, child, location, strip_at, spans)
        if new is None:
            out.keep(f.start, f.end)
        else:
            out.add(len_field(f.num, new))
            changed = True
    return out.join() if changed else None


def skeleton_bytes(pinned: Pinned, *, strip_at: int | None = None) -> tuple[bytes, dict[int, Span]] | None:
    """The serialized skeleton ModelProto and the spans left in the file; None when no tensor is big.

    Raises ProtoError when the file is not a well-formed protobuf message.
    """
    strip_at = STRIP_AT if strip_at is None else max(1, strip_at)
    reader = Reader(pinned)
    location = pinned.path.name
    spans: dict[int, Span] = {}
    out = _Pieces(reader)
    changed = False
    for f in reader.fields(0, reader.size):
        if f.num == MODEL_GRAPH and f.wire == 2:
            new = _message(reader, f, "graph", location, strip_at, spans)
            if new is not None:
                out.add(len_field(f.num, new))
                changed = True
                continue
        out.keep(f.start, f.end)
    if not changed:
        return None
    return out.join(), spans


def restore(pinned: Pinned, tensor: TensorProto, span: Span) -> None:
    """Put a skeleton tensor back exactly as the file holds it (raw_data inline, no external fields)."""
    tensor.Clear()
    tensor.ParseFromString(pinned.pread(span.message_start, span.message_end))


# ----------------------------------------------------------------------------- top-level fields


def top_fields(reader: Reader) -> list[Field]:
    return list(reader.fields(0, reader.size))
