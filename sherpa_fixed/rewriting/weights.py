"""Move tensor bytes between ONNX files and external weight files, streaming.

A 1.1B encoder's weights are 4 GB; nothing here holds more than one
bounded chunk of them in memory. Bytes are moved with `os.copy_file_range`
where the kernel offers it (no copy through user space at all) and with a
fixed-size buffer otherwise.
"""

from __future__ import annotations

import errno
import os
import re
import threading
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from ..errors import BadInputError
from ..reading.external_data import resolve_location
from ..reading.onnx_graph import (
    external_span,
    graph_tensors,
    initializer_tensors,
    tensor_nbytes,
    uses_external_data,
)
from ..reading.protos import ModelProto, TensorProto

CHUNK = 8 << 20  # bytes per read/write when the kernel cannot copy for us
ALIGN_SMALL = 64
ALIGN_LARGE = 64 << 10  # page/allocation-granularity aligned, so onnxruntime can mmap big tensors
LARGE_TENSOR = 1 << 20
# onnx.save's default size_threshold. Smaller tensors stay inline in the graph: onnxruntime 1.17
# (sherpa-onnx <= 1.12.20) fails with "model_path must not be empty" when a graph optimizer folds
# a small external initializer of a model loaded from bytes, whatever the working directory
# (reading/runtimes.py keeps 4-D Conv weights inline for the same reason; docs/runtimes.md).
ONNX_THRESHOLD = 1024

Progress = Callable[[int], None]  # called with bytes just written


def set_external(t: TensorProto, location: str, offset: int, length: int) -> None:
    del t.external_data[:]
    for key, value in (("location", location), ("offset", str(offset)), ("length", str(length))):
        e = t.external_data.add()
        e.key, e.value = key, value
    t.data_location = TensorProto.EXTERNAL
    t.ClearField("raw_data")


def set_inline(t: TensorProto, data: bytes) -> None:
    del t.external_data[:]
    t.data_location = TensorProto.DEFAULT
    t.raw_data = data


def aligned(offset: int, length: int) -> int:
    a = ALIGN_LARGE if length >= LARGE_TENSOR else ALIGN_SMALL
    return (offset + a - 1) // a * a


def safe_file_name(name: str) -> str:
    """A tensor name as torch.onnx names per-tensor weight files."""
    return re.sub(r"[^A-Za-z0-9_.-]", "_", name) or "tensor"


def copy_range_at(src_fd: int, dst_fd: int, src_offset: int, dst_offset: int, length: int,
                  progress: Progress | None = None, src_name: str = "?") -> None:
    """Copy length bytes between positions of two files, without a large buffer.

    Positional on both sides (no shared file offset), so several threads may
    copy different tensors into one file at once. The kernel copies
    (copy_file_range) where it can; otherwise pread/pwrite of CHUNK bytes.
    """
    remaining, s_pos, d_pos = length, src_offset, dst_offset
    use_kernel = hasattr(os, "copy_file_range")
    while remaining > 0:
        n = 0
        if use_kernel:
            try:
                n = os.copy_file_range(src_fd, dst_fd, min(remaining, 1 << 30), s_pos, d_pos)
            except OSError as exc:
                if exc.errno not in (errno.EXDEV, errno.EINVAL, errno.ENOSYS, errno.EOPNOTSUPP, errno.EBADF):
                    raise
                use_kernel = False
        if n <= 0:
            use_kernel = False
            chunk = os.pread(src_fd, min(remaining, CHUNK), s_pos)
            if not chunk:
                raise BadInputError(f"ended {remaining} bytes early", path=src_name,
                                    fix="the weights file is truncated; re-download or re-export it")
            n = os.pwrite(dst_fd, chunk, d_pos)
        s_pos += n
        d_pos += n
        remaining -= n
        if progress:
            progress(n)


def copy_range(src: BinaryIO, dst: BinaryIO, offset: int, length: int, progress: Progress | None = None) -> None:
    """Copy length bytes from src at offset to dst's current position (advancing it)."""
    dst.flush()
    pos = dst.tell()
    copy_range_at(src.fileno(), dst.fileno(), offset, pos, length, progress, getattr(src, "name", "?"))
    dst.seek(pos + length)


@dataclass
class WeightMove:
    """Where one tensor's bytes come from."""

    tensor: TensorProto
    source: Path | None  # None: the bytes are inline (raw_data)
    offset: int
    length: int


def plan_moves(model: ModelProto, model_path: Path) -> list[WeightMove]:
    moves = []
    for t in graph_tensors(model.graph):
        if uses_external_data(t):
            location, offset, length = external_span(t)
            src = resolve_location(model_path, location)
            moves.append(WeightMove(t, src, offset, length if length is not None else (tensor_nbytes(t) or 0)))
    return moves


def write_weights_file(
    moves: Iterable[WeightMove],
    out_path: Path,
    location: str,
    progress: Progress | None = None,
    durable: bool = True,
    workers: int | None = None,
) -> int:
    """Stream every tensor into one weights file at out_path; point the tensors at `location`.

    Offsets are laid out first, then tensors are copied by a few threads at
    once (the kernel copy releases the GIL; memory stays at most one CHUNK per
    thread). The tensor protos are updated in place; returns the file's size.
    The caller owns out_path (normally a temp file renamed into place later).
    durable=True fsyncs before returning: needed when a rename will make the
    file replace something, not when writing a fresh output folder.
    """
    moves = list(moves)
    layout: list[tuple[WeightMove, int]] = []
    offset = 0
    for mv in moves:
        start = aligned(offset, mv.length)
        layout.append((mv, start))
        offset = start + mv.length
    handles: dict[Path, int] = {}
    lock = threading.Lock()

    def tick(n: int) -> None:
        if progress:
            with lock:
                progress(n)

    def fd_of(path: Path) -> int:
        with lock:
            if path not in handles:
                try:
                    handles[path] = os.open(path, os.O_RDONLY)
                except OSError as exc:
                    raise BadInputError(f"cannot read weights ({exc.strerror})", path=path,
                                        fix="restore the file beside the model") from exc
            return handles[path]

    dst_fd = os.open(out_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    try:
        os.ftruncate(dst_fd, offset)  # padding between tensors reads back as zeros

        def copy_one(item: tuple[WeightMove, int]) -> None:
            mv, start = item
            if mv.source is None:
                os.pwrite(dst_fd, mv.tensor.raw_data, start)
                tick(mv.length)
            else:
                copy_range_at(fd_of(mv.source), dst_fd, mv.offset, start, mv.length, tick, str(mv.source))

        n_workers = workers or min(4, os.cpu_count() or 1)
        if n_workers > 1 and len(layout) > 1:
            with ThreadPoolExecutor(n_workers) as pool:
                for f in [pool.submit(copy_one, item) for item in layout]:
                    f.result()
        else:
            for item in layout:
                copy_one(item)
        for mv, start in layout:
            set_external(mv.tensor, location, start, mv.length)
        if durable:
            os.fsync(dst_fd)
        return offset
    finally:
        os.close(dst_fd)
        for fd in handles.values():
            os.close(fd)


def externalize_inline(
    model: ModelProto,
    folder: Path,
    location_for: Callable[[TensorProto], str],
    *,
    threshold: int = 0,
) -> dict[str, int]:
    """Move inline tensors (raw_data >= threshold bytes) into external files in folder.

    Used to build test models and by `prepare` for graphs too big for one protobuf.
    Returns bytes written per location.
    """
    written: dict[str, int] = {}
    files: dict[str, BinaryIO] = {}
    try:
        for t in initializer_tensors(model.graph):
            if uses_external_data(t) or not t.HasField("raw_data") or len(t.raw_data) < max(threshold, 1):
                continue
            loc = location_for(t)
            f = files.get(loc)
            if f is None:
                path = Path(loc) if os.path.isabs(loc) else folder / loc
                path.parent.mkdir(parents=True, exist_ok=True)
                f = files[loc] = open(path, "wb")  # noqa: SIM115
                written[loc] = 0
            start = aligned(written[loc], len(t.raw_data))
            f.write(b"\0" * (start - written[loc]))
            data = t.raw_data
            f.write(data)
            set_external(t, loc, start, len(data))
            written[loc] = start + len(data)
    finally:
        for f in files.values():
            f.close()
    return written


def inline_external(model: ModelProto, model_path: Path) -> int:
    """Read every external tensor into raw_data (for --inline). Returns bytes read."""
    total = 0
    handles: dict[Path, BinaryIO] = {}
    try:
        for mv in plan_moves(model, model_path):
            src = handles.get(mv.source)
            if src is None:
                src = handles[mv.source] = open(mv.source, "rb")  # noqa: SIM115
            src.seek(mv.offset)
            data = src.read(mv.length)
            if len(data) != mv.length:
                raise BadInputError(f"ended before tensor {mv.tensor.name!r}", path=mv.source,
                                    fix="the weights file is truncated; re-download or re-export it")
            set_inline(mv.tensor, data)
            total += mv.length
    finally:
        for h in handles.values():
            h.close()
    return total
