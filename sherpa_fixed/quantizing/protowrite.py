"""Serialize a model whose large tensors are stubs, streaming their bytes from disk.

`onnx.save` needs every byte of the model in one Python string first: 1.1 GB
for the int8 1.1B encoder, on top of the proto holding the same bytes. Here
the model is written in protobuf's own field order, message by message; a
stub's data is written as the `raw_data` field it would have had, its bytes
copied by the kernel from where they are (the source's weights file or the
quantizer's scratch file). Length prefixes are known beforehand because a
stub knows its length. The file is byte for byte what `onnx.save` would
write for the filled-in model (fields in number order, as upb serializes).

Models over protobuf's 2 GiB limit keep their large tensors in one external
`<stem>.weights` file beside the graph instead, with bare relative
locations, as prepare writes them.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

from google.protobuf.message import Message
from onnx import ModelProto, TensorProto

from ..reading.onnx_graph import initializer_tensors
from ..reading.protostream import key_bytes, varint_bytes
from ..rewriting.weights import aligned, copy_range_at, set_external
from ..safety.atomic import disk_error
from .stubs import Ref, Store, clear_stub, stub_key

PROTOBUF_LIMIT = (1 << 31) - 1  # bytes a protobuf message may have
RAW_DATA = 9  # TensorProto.raw_data
Chunk = bytes | Ref
Tick = Callable[[int], None]  # bytes just written


def _len_field(number: int, length: int) -> bytes:
    return key_bytes(number, 2) + varint_bytes(length)


def _repeated(fd) -> bool:
    rep = getattr(fd, "is_repeated", None)  # protobuf >= 6; older ones only have `label`
    return rep if rep is not None else fd.label == fd.LABEL_REPEATED


def _one_field(msg: Message, fd, value) -> bytes:
    m = type(msg)()
    if _repeated(fd):
        getattr(m, fd.name).extend(value)
    elif fd.type == fd.TYPE_MESSAGE:
        getattr(m, fd.name).CopyFrom(value)
    else:
        setattr(m, fd.name, value)
    return m.SerializeToString()


def _has_stub(msg: Message) -> bool:
    if isinstance(msg, TensorProto):
        return stub_key(msg) is not None
    for fd, value in msg.ListFields():
        if fd.type != fd.TYPE_MESSAGE or fd.message_type.name not in _CAN_HOLD:
            continue
        items = value if _repeated(fd) else [value]
        if any(_has_stub(v) for v in items):
            return True
    return False


# Message types on the way from a ModelProto to a tensor (graphs nest through node attributes).
_CAN_HOLD = {"GraphProto", "NodeProto", "AttributeProto", "TensorProto"}


def chunks(msg: Message, store: Store) -> tuple[list[Chunk], int]:
    """The serialized message as bytes and stub references, and its total length."""
    if isinstance(msg, TensorProto) and stub_key(msg) is not None:
        ref = store.ref_of(msg)
        bare = TensorProto()
        bare.CopyFrom(msg)
        clear_stub(bare)
        out: list[Chunk] = []
        size = 0
        inserted = False
        for fd, value in bare.ListFields():
            if fd.number > RAW_DATA and not inserted:
                out += [_len_field(RAW_DATA, ref.length), ref]
                size += len(out[-2]) + ref.length
                inserted = True
            b = _one_field(bare, fd, value)
            out.append(b)
            size += len(b)
        if not inserted:
            out += [_len_field(RAW_DATA, ref.length), ref]
            size += len(out[-2]) + ref.length
        return out, size
    if not _has_stub(msg):
        b = msg.SerializeToString()
        return [b], len(b)
    out = []
    size = 0
    for fd, value in msg.ListFields():
        if fd.type == fd.TYPE_MESSAGE and fd.message_type.name in _CAN_HOLD:
            items = value if _repeated(fd) else [value]
            for v in items:
                sub, n = chunks(v, store)
                head = _len_field(fd.number, n)
                out.append(head)
                out += sub
                size += len(head) + n
        else:
            b = _one_field(msg, fd, value)
            out.append(b)
            size += len(b)
    return out, size


def write_chunks(parts: list[Chunk], dst: Path, tick: Tick | None = None) -> int:
    """Write the parts to a new file; stub bytes are copied file to file by the kernel."""
    fds: dict[Path, int] = {}
    pos = 0
    buf = bytearray()
    try:
        with open(dst, "wb") as f:
            out = f.fileno()
            for part in parts:
                if isinstance(part, bytes):
                    buf += part
                    if len(buf) >= 1 << 20:
                        os.pwrite(out, buf, pos)
                        pos += len(buf)
                        buf.clear()
                    continue
                if buf:
                    os.pwrite(out, buf, pos)
                    pos += len(buf)
                    buf.clear()
                if part.path not in fds:
                    fds[part.path] = os.open(part.path, os.O_RDONLY)
                copy_range_at(fds[part.path], out, part.offset, pos, part.length, src_name=str(part.path))
                pos += part.length
                if tick:
                    tick(part.length)
            if buf:
                os.pwrite(out, buf, pos)
                pos += len(buf)
            f.flush()
            os.fsync(out)
    except OSError as exc:
        raise disk_error(exc, dst) from exc
    finally:
        for fd in fds.values():
            os.close(fd)
    return pos


def planned_size(model: ModelProto, store: Store) -> int:
    return chunks(model, store)[1]


def write_model(model: ModelProto, store: Store, dst: Path, weights_name: str, tick: Tick | None = None) -> list[Path]:
    """Write `model` to dst, self-contained when it fits in 2 GiB; return the files written.

    Over the limit, every large stub initializer goes to `dst.parent / weights_name`
    (external data, 64 KiB aligned for mmap) and attribute tensors stay inline.
    """
    parts, size = chunks(model, store)
    if size <= PROTOBUF_LIMIT:
        write_chunks(parts, dst, tick)
        return [dst]
    weights = dst.parent / weights_name
    fds: dict[Path, int] = {}
    pos = 0
    try:
        with open(weights, "wb") as w:
            for t in initializer_tensors(model.graph):
                ref = store.ref_of(t) if stub_key(t) is not None else None
                if ref is None:
                    continue
                pos = aligned(pos, ref.length)
                if ref.path not in fds:
                    fds[ref.path] = os.open(ref.path, os.O_RDONLY)
                copy_range_at(fds[ref.path], w.fileno(), ref.offset, pos, ref.length, src_name=str(ref.path))
                set_external(t, weights_name, pos, ref.length)
                pos += ref.length
                if tick:
                    tick(ref.length)
            w.flush()
            os.fsync(w.fileno())
    except OSError as exc:
        raise disk_error(exc, weights) from exc
    finally:
        for fd in fds.values():
            os.close(fd)
    parts, size = chunks(model, store)  # attribute stubs still inline
    write_chunks(parts, dst, tick)
    return [dst, weights]


__all__ = ["PROTOBUF_LIMIT", "chunks", "planned_size", "write_chunks", "write_model"]
