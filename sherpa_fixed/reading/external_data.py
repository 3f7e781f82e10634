"""Audit where each model's weights live, from the graph file alone.

Checked per tensor, with `stat` only (no weights are read): the file
exists, `offset + length` fits inside it, `length` matches the tensor's
dims and type, and the location is a bare relative name. Absolute
locations are refused by onnxruntime >= 1.28; relative ones resolve against
the model folder in sherpa-onnx >= 1.12.36 and against the working directory
in older builds and asset loaders (FACTS.md section 3), which is why a
location that leaves the folder (`..`, subfolders) is fragile.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath, PureWindowsPath

from ..errors import SherpaFixedError
from ..safety.atomic import PREFIX
from ..safety.confine import outside_reason
from .onnx_graph import (
    GraphFile,
    external_field,
    external_info,
    graph_tensors,
    inline_span,
    tensor_nbytes,
    uses_external_data,
)

# Problems no loader survives (onnxruntime reads past an end, at a forged offset, or nothing): every command
# that would hand the model to onnxruntime refuses them first, naming the tensor and the file.
BROKEN = ("external.missing", "external.truncated", "external.outside", "external.length_mismatch",
          "external.no_location", "external.bad_field")
SCATTERED_THRESHOLD = 2  # more distinct files than this (per model) counts as scattered
SMALL_TENSOR = 1024  # onnx.save's default size_threshold; see weights.ONNX_THRESHOLD


@dataclass
class ExternalRef:
    tensor: str
    location: str
    offset: int
    length: int | None
    expected_length: int | None
    bad: str | None = None  # why its offset or length cannot be used (not a byte count)


@dataclass
class ExternalFile:
    location: str
    path: Path
    exists: bool
    size: int | None
    tensors: int
    bytes_needed: int
    shared_with: list[str] = field(default_factory=list)  # other model files that point here
    outside: str | None = None  # why it may not be read (outside the model folder, not a regular file)
    real: Path = field(default=None, repr=False)  # resolved once: folders hold hundreds of these

    def __post_init__(self):
        if self.real is None:
            self.real = self.path if self.outside else Path(os.path.realpath(self.path))

    def to_json(self) -> dict:
        return {
            "location": self.location,
            "path": str(self.path),
            "exists": self.exists,
            "size": self.size,
            "tensors": self.tensors,
            "bytes_needed": self.bytes_needed,
            "shared_with": self.shared_with,
            "outside": self.outside,
        }


@dataclass
class ExternalAudit:
    model: Path
    refs: list[ExternalRef]
    files: list[ExternalFile]
    problems: list[tuple[str, str]]  # (code, message)
    inline_bytes: int

    @property
    def uses_external(self) -> bool:
        return bool(self.refs)

    @property
    def outside(self) -> list[tuple[ExternalRef, ExternalFile]]:
        """(first tensor, file) for every weights file that may not be read: see confine.py."""
        by_loc = {f.location: f for f in self.files if f.outside}
        seen: dict[str, ExternalRef] = {}
        for r in self.refs:
            if r.location in by_loc and r.location not in seen:
                seen[r.location] = r
        return [(r, by_loc[loc]) for loc, r in seen.items()]

    @property
    def broken(self) -> list[str]:
        """Messages of the problems in BROKEN, most telling first."""
        return [m for code in BROKEN for c, m in self.problems if c == code]

    @property
    def external_bytes(self) -> int:
        return sum(r.length or r.expected_length or 0 for r in self.refs)

    def to_json(self) -> dict:
        return {
            "uses_external_data": self.uses_external,
            "tensors": len(self.refs),
            "external_bytes": self.external_bytes,
            "inline_bytes": self.inline_bytes,
            "files": [f.to_json() for f in self.files],
            "problems": [{"code": c, "message": m} for c, m in self.problems],
        }


def is_absolute_location(location: str) -> bool:
    return PurePosixPath(location).is_absolute() or PureWindowsPath(location).is_absolute()


def escapes_folder(location: str) -> bool:
    parts = PurePosixPath(location.replace("\\", "/")).parts
    return ".." in parts


def resolve_location(model_path: Path, location: str) -> Path:
    if is_absolute_location(location):
        return Path(location)
    return model_path.parent / location


def external_refs(g: GraphFile) -> tuple[list[ExternalRef], int]:
    refs: list[ExternalRef] = []
    inline = 0
    for t in graph_tensors(g.model.graph):
        span = inline_span(g, t)  # a skeleton's inline tensor (protostream.py): inline, not a weights file
        if span is not None:
            inline += span.length
        elif uses_external_data(t):
            info = external_info(t)
            bad = None
            try:
                offset, length = external_field(info, "offset") or 0, external_field(info, "length")
            except ValueError as exc:
                offset, length, bad = 0, None, str(exc)
            refs.append(ExternalRef(t.name, info.get("location", ""), offset, length, tensor_nbytes(t), bad))
        else:
            inline += len(t.raw_data)
    return refs, inline


def audit_external_data(g: GraphFile) -> ExternalAudit:
    refs, inline = external_refs(g)
    problems: list[tuple[str, str]] = []
    by_location: dict[str, list[ExternalRef]] = {}
    for r in refs:
        by_location.setdefault(r.location, []).append(r)

    bad = [r for r in refs if r.bad]
    if bad:
        problems.append(("external.bad_field", f"tensor {bad[0].tensor!r}: {bad[0].bad}"
                         + (f" ({len(bad) - 1} more tensors like it)" if len(bad) > 1 else "")
                         + "; the model file is damaged or forged (re-download or re-export it)"))
    files: list[ExternalFile] = []
    for location, rs in by_location.items():
        path = resolve_location(g.path, location)
        needed = max(r.offset + (r.length if r.length is not None else (r.expected_length or 0)) for r in rs)
        if not location:
            files.append(ExternalFile(location, path, False, None, len(rs), needed))
            problems.append(("external.no_location", f"{len(rs)} tensors have external data without a location"))
            continue
        # Confinement first: a file outside the model folder is not even stat'ed for its size.
        outside = outside_reason(g.path.parent, path)
        if outside is not None:
            files.append(ExternalFile(location, path, False, None, len(rs), needed, outside=outside))
            problems.append(("external.outside", f"tensor {rs[0].tensor!r} has location {location!r}, which "
                             f"{outside}; sherpa-fixed reads nothing outside the model folder"))
            continue
        try:
            size: int | None = os.stat(path).st_size
            exists = True
        except OSError:
            size, exists = None, False
        files.append(ExternalFile(location, path, exists, size, len(rs), needed))
        if is_absolute_location(location):
            problems.append(("external.absolute", f"location {location!r} is absolute: onnxruntime >= 1.28 "
                             "refuses it ('Absolute path not allowed for external data location')"))
        elif escapes_folder(location):
            problems.append(("external.escapes", f"location {location!r} leaves the model folder: onnxruntime "
                             ">= 1.28 refuses it ('External data path escapes model directory')"))
        elif "/" in location or "\\" in location:
            problems.append(("external.subfolder", f"location {location!r} is in a subfolder (loads, but "
                             "prepare flattens it to a bare name beside the model)"))
        if not exists:
            problems.append(("external.missing", f"weights file {location!r} does not exist (looked for {path}); "
                             f"sherpa-onnx fails with 'cannot get file size: No such file or directory "
                             f"[{location}]'"))
        elif size is not None and needed > size:
            problems.append(("external.truncated", f"weights file {location!r} is {size} bytes but tensors "
                             f"need {needed}; it is truncated (re-download or re-export it)"))
        for r in rs:
            if r.length is not None and r.expected_length is not None and r.length != r.expected_length:
                problems.append(("external.length_mismatch", f"tensor {r.tensor!r} declares {r.length} bytes "
                                 f"but its shape needs {r.expected_length}"))
                break
    small = [r for r in refs if (r.length if r.length is not None else (r.expected_length or 0)) < SMALL_TENSOR]
    if small:
        problems.append(("external.small_tensors", f"{len(small)} tensors under {SMALL_TENSOR} bytes are stored "
                         "externally (e.g. " + ", ".join(repr(r.tensor) for r in small[:3]) + "); sherpa-onnx <= "
                         "1.12.20 (onnxruntime 1.17) then fails with 'model_path must not be empty' from any "
                         "folder (docs/runtimes.md); onnx.save keeps them inline"))
    if len(by_location) > SCATTERED_THRESHOLD:
        problems.append(("external.scattered", f"weights are scattered over {len(by_location)} files "
                         f"(one per tensor, as torch.onnx writes models over 2 GiB); sherpa-fixed prepare "
                         f"consolidates them into one {g.path.stem}.weights"))
    return ExternalAudit(g.path, refs, files, problems, inline)


def mark_shared(audits: dict[Path, ExternalAudit]) -> list[tuple[Path, str, str]]:
    """Flag weight files referenced by more than one model file (e.g. int8 pointing at fp32 weights)."""
    users: dict[Path, list[Path]] = {}
    for model, a in audits.items():
        for f in a.files:
            users.setdefault(f.real, []).append(model)
    out: list[tuple[Path, str, str]] = []
    for a in audits.values():
        for f in a.files:
            others = [m for m in users[f.real] if m != a.model]
            f.shared_with = [m.name for m in others]
            if others:
                out.append((a.model, "external.shared",
                            f"weights file {f.location!r} is also used by {', '.join(m.name for m in others)}; "
                            "rewriting one model must not change the other"))
    return out


def referenced_names(model_path: Path) -> set[str]:
    """Names of the files beside `model_path` that its graph's external data points at (Constant nodes too)."""
    from .onnx_graph import load_graph

    here = Path(os.path.abspath(model_path)).parent
    out = set()
    g = load_graph(model_path)
    for t in graph_tensors(g.model.graph):
        if uses_external_data(t) and inline_span(g, t) is None:  # a skeleton's inline bytes are no weights file
            p = Path(os.path.abspath(resolve_location(model_path, external_info(t).get("location", ""))))
            if p.parent == here:
                out.add(p.name)
    return out


def referenced_in(folder: Path) -> set[str]:
    """Every file name some graph in `folder` still points at; a graph we cannot parse keeps everything."""
    names: set[str] = set()
    for p in folder.glob("*.onnx"):
        if p.name.startswith(PREFIX):  # our backups and temp files (pathlib's glob matches dot-files)
            continue
        try:
            names |= referenced_names(p)
        except SherpaFixedError:
            return {q.name for q in folder.iterdir()}  # unreadable graph: remove nothing
    return names
