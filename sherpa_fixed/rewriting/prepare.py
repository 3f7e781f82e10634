"""Rewrite an exported folder so stock sherpa-onnx accepts it, safely and at disk speed.

The plan comes from the inspector's analysis (never re-derived here):
metadata keys it found missing or wrong, fixed sizes it found only
declared, and weight layouts that some sherpa-onnx build refuses. Applying
it writes each changed file to a temp name and renames it into place; big
weight files that need no change are never rewritten (linked into an
output folder, left alone in place); weights that must move are streamed
tensor by tensor with a bounded buffer. Then the result is verified, and a
failed verification restores the original.
"""

from __future__ import annotations

import json
import os
import shutil
import stat
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from .. import __version__
from ..decoding.sherpa_check import run_sherpa
from ..errors import EXIT_NEEDS_FIX, EXIT_OK, BadInputError, NeedsFixError, SherpaFixedError
from ..reading.confine import inside, is_inside
from ..reading.external_data import ExternalAudit, escapes_folder, is_absolute_location, resolve_location
from ..reading.findings import CANNOT_WORK, next_steps
from ..reading.inspector import FolderReport, VariantReport, inspect_folder
from ..reading.metadata import PREPARED_BY_KEY
from ..reading.onnx_graph import (
    GraphFile,
    external_info,
    graph_tensors,
    inline_span,
    load_graph,
    materialize,
    uses_external_data,
)
from ..reading.probe import EncoderProbe, probe_encoder
from ..reading.protos import ModelProto
from . import journal, stream_rewrite
from . import posenc as _posenc
from .atomic import (
    PREFIX,
    check_free_space,
    check_writable,
    disk_error,
    fsync_dir,
    link_or_copy,
    sweep_stale,
    temp_path,
    write_temp,
)
from .lock import DEFAULT_WAIT, folder_locks
from .verify import Check, byte_proof, run_proof, window_proof
from .weights import ONNX_THRESHOLD, WeightMove, plan_moves, set_inline, write_weights_file
from .windowing import DEFAULT_DYNAMIC_WINDOW_S, WindowParams, window_encoder, window_params

PROTOBUF_LIMIT = (2 << 30) - (64 << 20)  # 2 GiB, with room for the graph itself
RUN_PROOF_LIMIT = 1 << 30  # models above this are byte-proven unless their graph changed or --verify full
VERIFY_MODES = ("auto", "full", "fast", "off")

Progress = Callable[[str, int, int], None]  # (phase, done, total)


@dataclass
class Change:
    file: str
    kind: str  # metadata | dims | weights
    what: str
    old: str | None
    new: str | None
    why: str

    def to_json(self) -> dict:
        return {"file": self.file, "kind": self.kind, "what": self.what, "old": self.old, "new": self.new,
                "why": self.why}

    def line(self) -> str:
        arrow = f"{self.old!r} -> {self.new!r}" if self.kind == "metadata" else f"{self.old} -> {self.new}"
        return f"{self.file}: {self.what}: {arrow}  ({self.why})"


@dataclass
class FilePlan:
    role: str
    variant: str
    graph: GraphFile
    audit: ExternalAudit
    metadata: dict[str, str] = field(default_factory=dict)  # keys to set
    freed: dict[str, dict[int, str]] = field(default_factory=dict)  # port name -> axis -> new dim name
    weights: str = "keep"  # keep | relocate | inline_small | consolidate | inline
    weights_name: str | None = None
    window: WindowParams | None = None  # --window: the fixed-T graph becomes a Loop over windows
    posenc: _posenc.PosencPlan | None = None  # --max-seconds: a longer relative positional table
    changes: list[Change] = field(default_factory=list)

    @property
    def name(self) -> str:
        return self.graph.path.name

    @property
    def changed(self) -> bool:
        return bool(self.changes)

    @property
    def total_bytes(self) -> int:
        return self.graph.size + self.audit.external_bytes


@dataclass
class Plan:
    report: FolderReport
    files: list[FilePlan]
    warnings: list[str]
    blockers: list[str]  # what prepare cannot fix (e.g. a baked time axis)

    @property
    def changes(self) -> list[Change]:
        return [c for f in self.files for c in f.changes]


@dataclass
class PrepareResult:
    source: Path
    target: Path
    mode: str  # output | in-place | dry-run
    plan: Plan
    written: list[str] = field(default_factory=list)
    linked: list[str] = field(default_factory=list)
    removed: list[str] = field(default_factory=list)
    checks: list[Check] = field(default_factory=list)
    seconds: dict[str, float] = field(default_factory=dict)
    recovered: list[str] = field(default_factory=list)  # what was done about an interrupted earlier run

    @property
    def nothing_to_do(self) -> bool:
        return not self.plan.changes

    @property
    def exit_code(self) -> int:
        if any(not c.ok for c in self.checks):
            return EXIT_NEEDS_FIX
        return EXIT_NEEDS_FIX if self.plan.blockers else EXIT_OK

    def to_json(self) -> dict:
        return {
            "schema": "sherpa-fixed/prepare",
            "schema_version": 1,
            "sherpa_fixed_version": __version__,
            "source": str(self.source),
            "target": str(self.target),
            "mode": self.mode,
            "nothing_to_do": self.nothing_to_do,
            "exit_code": self.exit_code,
            "changes": [c.to_json() for c in self.plan.changes],
            "warnings": self.plan.warnings,
            "blockers": self.plan.blockers,
            "written": self.written,
            "linked": self.linked,
            "removed": self.removed,
            "recovered": self.recovered,
            "checks": [c.to_json() for c in self.checks],
            "seconds": {k: round(v, 3) for k, v in self.seconds.items()},
        }


# ----------------------------------------------------------------------------- planning


def _usage(report: FolderReport) -> dict[Path, set[Path]]:
    """Weights file -> model files (resolved) that reference it."""
    users: dict[Path, set[Path]] = {}
    for v in report.variants:
        for m in v.models.values():
            for f in m.external.files:
                users.setdefault(f.real, set()).add(m.graph.path.resolve())
    return users


def _plan_weights(fp: FilePlan, users: dict[Path, set[Path]], inline: bool) -> None:
    audit = fp.audit
    if not audit.uses_external:
        return
    stem = fp.name[: -len(".onnx")] if fp.name.endswith(".onnx") else fp.name
    if inline:
        size = fp.graph.size + audit.external_bytes
        if size > PROTOBUF_LIMIT:
            raise NeedsFixError(
                f"--inline would make a {size / 1e9:.2f} GB graph, over protobuf's 2 GiB limit",
                path=fp.graph.path,
                fix="keep external weights for this model (the int8 model usually fits), nothing was changed",
            )
        fp.weights = "inline"
        fp.changes.append(Change(fp.name, "weights", "inline", f"{len(audit.files)} external file(s)",
                                 "inside the graph", "--inline: models loaded from memory need no weight files"))
        return
    files = audit.files
    # Judged on the path as written, not resolved: a Hugging Face snapshot's links point into blobs/,
    # and that is where they belong (confinement has already refused anything truly outside).
    here = Path(os.path.abspath(fp.graph.path)).parent
    outside = [f for f in files if Path(os.path.abspath(f.path)).parent != here]
    foreign_shared = [f for f in files if len(users.get(f.real, ())) > 1
                      and f.path.name != f"{stem}.weights"]
    if len(files) > 1 or outside or foreign_shared:
        fp.weights = "consolidate"
        fp.weights_name = f"{stem}.weights"
        if len(files) > 1:
            why = f"{len(files)} scattered files become one per model"
        elif outside:
            why = f"{outside[0].location!r} is outside the model folder"
        else:
            why = f"{foreign_shared[0].location!r} is shared with another model; each model gets its own file"
        fp.changes.append(Change(fp.name, "weights", "consolidate", ", ".join(f.location for f in files[:3])
                                 + (" ..." if len(files) > 3 else ""), fp.weights_name, why))
        return
    only = files[0]
    if is_absolute_location(only.location) or escapes_folder(only.location):
        fp.weights = "relocate"
        fp.changes.append(Change(fp.name, "weights", "location", only.location, only.path.name,
                                 "onnxruntime >= 1.28 refuses absolute locations and locations with '..'"))
    small = [r for r in _refs(fp) if (r.length or 0) < ONNX_THRESHOLD]
    if small:
        fp.weights = "relocate" if fp.weights == "relocate" else "inline_small"
        fp.changes.append(Change(fp.name, "weights", "inline small tensors", f"{len(small)} external",
                                 "inside the graph", "sherpa-onnx <= 1.12.35 fails on small external "
                                 "initializers ('model_path must not be empty')"))


def refuse_outside(report: FolderReport) -> None:
    """Stop before any weight byte is read if a model points at a file outside its folder (confine.py)."""
    for v in report.variants:
        for m in v.models.values():
            for ref, f in m.external.outside:
                raise BadInputError(
                    f"tensor {ref.tensor!r} has external location {ref.location!r}, which {f.outside}",
                    path=m.graph.path,
                    fix="sherpa-fixed reads only files inside the model folder; put the weights file beside the "
                        "model (re-download or re-export it); nothing was read or written")


def _refs(fp: FilePlan):
    return fp.audit.refs


def _plan_metadata(fp: FilePlan, v: VariantReport, warnings: list[str]) -> None:
    current = fp.graph.metadata
    for audit in v.metadata_audit:
        if audit.status in ("missing", "wrong") and audit.expected is not None:
            exp = v.expected[audit.key]
            fp.metadata[audit.key] = audit.expected
            fp.changes.append(Change(fp.name, "metadata", audit.key, audit.current, audit.expected,
                                     exp.source))
            if not exp.measured and not exp.source.startswith("recipe") and audit.key != "url":
                warnings.append(f"{audit.key}={audit.expected!r} cannot be measured from the graphs; it is the "
                                f"{exp.source.split(' (')[0]}: check it against the model's NeMo config")
    for key, exp in v.expected.items():
        if key not in current and key not in fp.metadata and exp.source.startswith("recipe"):
            fp.metadata[key] = exp.value
            fp.changes.append(Change(fp.name, "metadata", key, None, exp.value, exp.source))


def _dim_name(port: str, axis: int) -> str:
    return f"{port.replace('.', '_').replace(':', '_')}_dynamic_axes_{axis + 1}"


def _plan_dims(fp: FilePlan, v: VariantReport, probe: EncoderProbe | None, blockers: list[str],
               warnings: list[str], window: dict | None = None) -> None:
    audio = v.encoder.inputs[0]
    time, batch = audio.axis("time"), audio.axis("batch")
    if window is not None and time is not None and not time.fixed:
        _plan_dynamic_window(fp, v, window)
        return
    if window is not None and time is not None and time.fixed:
        sf = v.measured.get("subsampling_factor") or 8
        fp.window = window_params(time.size, sf, hop_seconds=window.get("hop"), context_seconds=window.get("context"))
        p = fp.window
        fp.changes.append(Change(fp.name, "window", "time axis", f"fixed {time.size} frames",
                                 f"any length: windows of {p.window} frames ({p.window / 100:g} s), hop {p.hop} "
                                 f"({p.hop / 100:g} s), context {p.context} ({p.context / 100:g} s) each side",
                                 "--window: the fixed-T graph runs once per window inside an ONNX Loop"))
        _own_weights_for_window(fp)
        return
    free_time = time is not None and time.fixed and not time.baked and not (probe and probe.time_baked)
    free_batch = batch is not None and batch.fixed and probe is not None and probe.batch_baked is False
    if time is not None and time.fixed and not free_time:
        blockers.append(f"{fp.name}: the time axis is baked at {time.size} frames; stock sherpa-onnx cannot "
                        "decode other lengths. Use sherpa_fixed.OfflineRecognizer (same API), or prepare --window")
    if batch is not None and batch.fixed and not free_batch and probe is not None:
        warnings.append(f"{fp.name}: batch stays fixed to {batch.size} (baked); decode one stream at a time")
    for port in v.encoder.inputs + v.encoder.outputs:
        for a in port.axes:
            if a.fixed and ((a.role == "time" and free_time) or (a.role == "batch" and free_batch)):
                fp.freed.setdefault(port.name, {})[a.index] = _dim_name(port.name, a.index)
                fp.changes.append(Change(fp.name, "dims", f"{port.name} axis {a.index} ({a.role})", str(a.size),
                                         fp.freed[port.name][a.index],
                                         "declared only: the graph runs at other sizes (probe)"))


def _plan_dynamic_window(fp: FilePlan, v: VariantReport, window: dict) -> None:
    """--window on a dynamic encoder: windows of window["seconds"] (default measured, docs/long-audio.md)."""
    if v.window is not None:
        return  # already windowed by sherpa-fixed: nothing to do (idempotent)
    sf = v.measured.get("subsampling_factor") or 8
    seconds = window.get("seconds") or DEFAULT_DYNAMIC_WINDOW_S
    frames = max(1, round(seconds * 100 / sf)) * sf
    tables = _posenc.find_tables(fp.graph.model.graph)
    limit = min((t.max_frames for t in tables), default=None)
    if limit is not None and frames > limit * sf:
        raise BadInputError(f"a {seconds:g} s window is longer than the encoder's positional limit "
                            f"({_posenc.limit_seconds(limit, sf):g} s)", path=fp.graph.path,
                            fix="choose a shorter --window-seconds")
    fp.window = window_params(frames, sf, hop_seconds=window.get("hop"), context_seconds=window.get("context"))
    p = fp.window
    fp.changes.append(Change(fp.name, "window", "time axis", "dynamic, full attention over the whole input",
                             f"windows of {p.window} frames ({p.window / 100:g} s), hop {p.hop} ({p.hop / 100:g} s), "
                             f"context {p.context} ({p.context / 100:g} s) each side",
                             "--window: attention per window, so any length decodes in bounded encoder memory"))
    _own_weights_for_window(fp)


def _own_weights_for_window(fp: FilePlan) -> None:
    """A windowed graph keeps its weights in the Loop body, and onnxruntime (sherpa-onnx 2.0.1 too) refuses
    external data of subgraph tensors in a file with more than one hard link ("potential hardlink attack";
    main-graph tensors load fine). A weights file already hard-linked elsewhere is replaced by the encoder's
    own, streamed (the consolidate path); an --output folder copies the others instead of linking them."""
    if not fp.audit.uses_external or fp.weights in ("consolidate", "inline"):
        return
    if all(os.stat(f.real).st_nlink == 1 for f in fp.audit.files if f.real.exists()):
        return
    stem = fp.name[: -len(".onnx")] if fp.name.endswith(".onnx") else fp.name
    fp.weights, fp.weights_name = "consolidate", f"{stem}.weights"
    fp.changes.append(Change(fp.name, "weights", "own weights file", ", ".join(f.location for f in fp.audit.files[:3]),
                             fp.weights_name, "the file has other hard links, and onnxruntime refuses a Loop body's "
                             "external weights in a hard-linked file"))


def _plan_posenc(fp: FilePlan, v: VariantReport, max_seconds: float, warnings: list[str]) -> None:
    """--max-seconds: extend every positional table that serves fewer frames than asked for."""
    if v.window is not None:
        return  # windowed by prepare --window: attention is per window, no positional limit is left
    time = v.time_axis()
    if time is not None and time.fixed:
        raise BadInputError(f"--max-seconds is for dynamic encoders; this one's time axis is fixed at {time.size} "
                            "frames", path=fp.graph.path, fix="use prepare --window for static-shape encoders")
    if max_seconds <= 0:
        raise BadInputError("--max-seconds must be positive")
    sf = v.measured.get("subsampling_factor") or 8
    tables = _posenc.find_tables(fp.graph.model.graph)
    if not tables:
        warnings.append(f"{fp.name}: no NeMo relative positional table found; nothing in the graph caps its "
                        "length that sherpa-fixed knows of, so --max-seconds changes nothing")
        return
    frames = _posenc.frames_for(max_seconds, sf)
    short = [t for t in tables if t.max_frames < frames]
    if not short:
        return  # already long enough: idempotent
    t = short[0]
    size = fp.graph.size + sum(_posenc.table_bytes(frames, x.d_model) for x in short)
    if size > PROTOBUF_LIMIT:
        raise BadInputError(f"--max-seconds {max_seconds:g} needs a {size / 1e9:.2f} GB graph, over protobuf's "
                            "2 GiB limit", path=fp.graph.path, fix="use prepare --window for audio that long")
    fp.posenc = _posenc.PosencPlan(float(max_seconds), frames, sf)
    fp.changes.append(Change(fp.name, "posenc", "positional table",
                             f"{t.max_frames} output frames ({_posenc.limit_seconds(t.max_frames, sf):g} s)",
                             f"{frames} frames ({_posenc.limit_seconds(frames, sf):g} s)",
                             "--max-seconds: new rows from NeMo's RelPositionalEncoding formula, stored rows "
                             "kept bit-identical"))


def plan_prepare(report: FolderReport, *, inline: bool = False, window: dict | None = None,
                 max_seconds: float | None = None) -> Plan:
    """Decide every change from an inspect report; writes nothing."""
    refuse_outside(report)
    if report.verdict.code == CANNOT_WORK:
        raise BadInputError("cannot be prepared: " + "; ".join(report.verdict.reasons[:3]),
                            path=report.layout.root,
                            fix="; ".join(next_steps([f for v in report.variants for f in v.findings],
                                                     str(report.layout.root))))
    users = _usage(report)
    plans: dict[Path, FilePlan] = {}
    warnings: list[str] = []
    blockers: list[str] = []
    for v in report.variants:
        for role, m in v.models.items():
            path = m.graph.path.resolve()
            fp = plans.get(path)
            if fp is None:
                fp = plans[path] = FilePlan(role, v.name, m.graph, m.external)
                _plan_weights(fp, users, inline)
            if role == "encoder":
                _plan_metadata(fp, v, warnings)
                time = v.time_axis()
                batch = v.encoder.inputs[0].axis("batch")
                # Static evidence of baking is only evidence: before deciding, run the graph.
                needs_probe = ((time is not None and time.fixed) or (batch is not None and batch.fixed)) and \
                    not (window is not None and time is not None and time.fixed)
                probe = v.probe
                if needs_probe and probe is None:
                    probe = probe_encoder(m.graph, v.measured.get("feat_dim"))
                    if probe.time_baked is not None and time is not None:
                        time.baked = probe.time_baked
                _plan_dims(fp, v, probe, blockers, warnings, window)
                if max_seconds is not None:
                    _plan_posenc(fp, v, max_seconds, warnings)
    files = list(plans.values())
    for fp in files:
        if fp.changed:
            record = {"version": __version__,
                      "changed": sorted({c.what for c in fp.changes})}
            fp.metadata[PREPARED_BY_KEY] = json.dumps(record, sort_keys=True)
    for v in report.variants:  # name only the keys really written from a default, not measured ones
        defaulted = sorted({c.what for f in files for c in f.changes if c.kind == "metadata" and "default" in c.why})
        if v.recipe is None and defaulted:
            warnings.append(f"[{v.name}] model family not recognised ({v.recipe_reason}): {' and '.join(defaulted)} "
                            f"{'comes' if len(defaulted) == 1 else 'come'} from defaults, not from a recipe; add a "
                            "recipe in patches/ if you know the family")
            break
    return Plan(report, files, list(dict.fromkeys(warnings)), list(dict.fromkeys(blockers)))


# ----------------------------------------------------------------------------- applying


def _rewrite_graph(fp: FilePlan, out_dir: Path, progress: Progress | None, durable: bool) -> tuple[Path, Path | None]:
    """Write the new graph and, when consolidating, its new weights file, both under temp names in
    out_dir; return their paths. Only one graph proto and its serialization are alive at a time."""
    if stream_rewrite.applies(fp):  # metadata/dims only: a kernel byte copy, the graph never parsed whole
        return stream_rewrite.rewrite_streamed(fp.graph, out_dir / fp.name, fp.metadata, fp.freed,
                                               durable=durable, progress=progress), None
    model = materialize(fp.graph)  # a C-level copy with every tensor's bytes; the original stays for verification
    for key, value in fp.metadata.items():
        existing = next((p for p in model.metadata_props if p.key == key), None)
        if existing is None:
            existing = model.metadata_props.add()
            existing.key = key
        existing.value = value
    if fp.posenc is not None:
        _posenc.extend_model(model, fp.graph.path, fp.posenc)
    if fp.window is not None:
        model = window_encoder(model, fp.window)
    if fp.freed:
        for vi in list(model.graph.input) + list(model.graph.output):
            for axis, name in fp.freed.get(vi.name, {}).items():
                d = vi.type.tensor_type.shape.dim[axis]
                d.Clear()
                d.dim_param = name
        del model.graph.value_info[:]

    new_weights: Path | None = None
    src_path = fp.graph.path
    if fp.weights in ("relocate", "inline_small", "consolidate", "inline"):
        moves = plan_moves(model, src_path)
        small = [mv for mv in moves if mv.length < ONNX_THRESHOLD or fp.weights == "inline"]
        _inline(small, src_path)
        big = [mv for mv in moves if mv not in small]
        if fp.weights == "relocate":
            for mv in big:
                for e in mv.tensor.external_data:
                    if e.key == "location":
                        e.value = mv.source.name
        elif fp.weights == "consolidate" and big:
            new_weights = temp_path(out_dir / fp.weights_name)
            total = sum(mv.length for mv in big)
            done = [0]

            def tick(n: int) -> None:
                done[0] += n
                if progress:
                    progress(f"writing {fp.weights_name}", done[0], total)

            write_weights_file(big, new_weights, fp.weights_name, tick, durable=durable)
    data = model.SerializeToString()
    del model
    return write_temp(out_dir / fp.name, data, durable=durable), new_weights


def _inline(moves: list[WeightMove], model_path: Path) -> None:
    by_file: dict[Path, list[WeightMove]] = {}
    for mv in moves:
        by_file.setdefault(mv.source, []).append(mv)
    for path, mvs in by_file.items():
        try:
            with open(path, "rb") as f:
                for mv in mvs:
                    f.seek(mv.offset)
                    data = f.read(mv.length)
                    if len(data) != mv.length:
                        raise BadInputError(f"ended before tensor {mv.tensor.name!r}", path=path,
                                            fix="the weights file is truncated; re-download or re-export it")
                    set_inline(mv.tensor, data)
        except OSError as exc:
            raise BadInputError(f"cannot read weights ({exc.strerror})", path=path) from exc


def _bytes_to_write(plan: Plan) -> int:
    n = 0
    for fp in plan.files:
        if fp.changed:
            n += fp.graph.size + 4096
            if fp.weights in ("consolidate", "inline"):
                n += fp.audit.external_bytes
    return n


def _verify(plan: Plan, target: Path, mode: str, progress: Progress | None) -> list[Check]:
    checks: list[Check] = []
    if mode == "off":
        return checks
    for fp in plan.files:
        if not fp.changed:
            continue
        new_path = target / fp.name
        v = plan.report.variant(fp.variant)
        feat = v.measured.get("feat_dim") if v else None
        vocab = v.measured.get("vocab_size") if v else None
        if progress:
            progress(f"verifying {fp.name}", 0, 1)
        big = fp.total_bytes > RUN_PROOF_LIMIT
        if fp.window is not None:
            w = fp.window.window
            checks.append(window_proof(fp.graph, new_path, fp.window, [w, max(1, w // 3), 2 * w + 13, 3 * w + 5],
                                       feat or fp.graph.inputs[0].fixed(1) or 80))
            continue
        if fp.posenc is not None:
            checks.append(_posenc.posenc_proof(fp.graph, new_path, fp.posenc, feat or 80,
                                               run=mode == "full" or (mode == "auto" and not big)))
            continue
        if fp.freed or mode == "full" or (mode == "auto" and not big):
            time_freed = any("time" in c.what for c in fp.changes if c.kind == "dims")
            batch_freed = any("batch" in c.what for c in fp.changes if c.kind == "dims")
            native = fp.graph.inputs[0].fixed(2) if fp.role == "encoder" else None
            checks.append(run_proof(fp.role, fp.graph, new_path,
                                    extra_frames=[native // 2, native * 2] if time_freed and native else None,
                                    extra_batches=[2] if batch_freed else None, feat_dim=feat, vocab=vocab))
        if fp.weights in ("consolidate", "relocate", "inline_small", "inline") or (mode == "fast" or big):
            if stream_rewrite.applies(fp):  # compared byte for byte, never parsed whole
                checks.append(stream_rewrite.streamed_proof(fp.graph, new_path, fp.metadata, fp.freed))
                continue
            new_model = ModelProto.FromString(new_path.read_bytes())
            checks.append(byte_proof(fp.graph, new_model, new_path, fp.freed))
    # sherpa-onnx itself loads every model set and decodes: 1 s of audio, or for an encoder whose
    # time axis stays fixed, exactly one window's worth (FACTS.md section 5: (N + 80) // 160 frames).
    for v in plan.report.variants:
        size = sum(m.graph.size + m.external.external_bytes for m in v.models.values())
        if mode == "fast" or (mode == "auto" and size > RUN_PROOF_LIMIT):
            continue
        if not any(f.changed and f.variant == v.name for f in plan.files):
            continue
        enc = v.encoder.graph
        fixed_t = enc.inputs[0].fixed(2) if not any(
            f.freed or f.window for f in plan.files if f.graph.path == enc.path) else None
        samples = fixed_t * 160 - 80 if fixed_t else 16000
        window = next((f.window for f in plan.files if f.graph.path == enc.path and f.window), None)
        if window is not None:  # several windows' worth, so seams are crossed
            samples = int(2.5 * window.window * 160)
        target = target.resolve()  # the child runs in `target`: relative paths would resolve twice
        files = {role: target / m.graph.path.name for role, m in v.models.items()}
        tokens = target / plan.report.layout.tokens.name
        run = run_sherpa(files["encoder"], files["decoder"], files["joiner"], tokens, samples=[samples],
                         cwd=target)
        what = f"{samples / 16000:g} s of audio" + (f" (exactly its {fixed_t}-frame window)" if fixed_t else "")
        detail = (f"sherpa-onnx {run.version} loaded the {v.name} set and decoded {what}: "
                  f"{len(run.results[0]['tokens'])} tokens") if run.ok else f"sherpa-onnx failed: {run.error}"
        checks.append(Check(files["encoder"].name, "sherpa", run.ok, detail))
    return checks


def prepare_folder(
    source: str | os.PathLike,
    *,
    output: str | os.PathLike | None = None,
    in_place: bool = False,
    dry_run: bool = False,
    inline: bool = False,
    force: bool = False,
    verify: str = "auto",
    progress: Progress | None = None,
    report: FolderReport | None = None,
    window: bool = False,
    hop: float | None = None,
    context: float | None = None,
    wait: float = DEFAULT_WAIT,
    window_seconds: float | None = None,
    max_seconds: float | None = None,
) -> PrepareResult:
    """Plan and apply the rewrite; see the module docstring. Raises SherpaFixedError on bad input.

    The source folder (and the output's parent) are locked before anything is planned (lock.py), and
    an in-place run interrupted earlier is finished or undone first (journal.py). `report` is used
    for dry runs only: a run that writes plans from what it sees under the lock.
    """
    if verify not in VERIFY_MODES:
        raise BadInputError(f"--verify must be one of {', '.join(VERIFY_MODES)}")
    source = Path(source)
    if not source.is_dir():
        raise BadInputError("not a folder" if source.exists() else "folder not found", path=source,
                            fix="prepare takes the model folder")
    if not dry_run and not in_place and output is None:
        raise BadInputError("say where to write: --output DIR, or --in-place", path=source)
    if in_place and output is not None:
        raise BadInputError("--in-place and --output exclude each other")
    if not window and (hop is not None or context is not None or window_seconds is not None):
        raise BadInputError("--hop, --context and --window-seconds go with --window")
    if window and max_seconds is not None:
        raise BadInputError("--window and --max-seconds are two answers to long audio; choose one",
                            fix="--window: bounded memory at any length; --max-seconds: one pass up to N s")
    out_path = Path(output) if output is not None else None
    if out_path is not None:
        check_output(source, out_path, force)
    locks: list[tuple[Path, bool]] = [(source, dry_run)]
    if out_path is not None and not dry_run:
        locks.append((_output_parent(out_path), False))
    with folder_locks(locks, wait=wait):
        recovered: list[str] = []
        if not dry_run:
            recovered = recover(source)
            sweep_stale(source)
            if out_path is not None:
                check_output(source, out_path, force)  # again: the folder may have changed while we waited
                sweep_stale(_output_parent(out_path))
        t0 = time.perf_counter()
        report = report if (dry_run and report is not None) else inspect_folder(source)
        plan = plan_prepare(report, inline=inline, max_seconds=max_seconds,
                            window={"hop": hop, "context": context, "seconds": window_seconds} if window else None)
        seconds = {"plan": time.perf_counter() - t0}
        target = out_path if out_path is not None else source
        mode = "dry-run" if dry_run else ("in-place" if in_place else "output")
        result = PrepareResult(source, target, mode, plan, seconds=seconds, recovered=recovered)
        if dry_run:
            if journal.load(source) is not None:
                plan.warnings.append("an interrupted in-place run left a journal here; the next run that writes "
                                     "finishes or undoes it first")
            return result
        if in_place:
            if plan.changes:
                _apply_in_place(plan, result, verify, progress)
            return result
        _apply_to_output(plan, result, out_path, force, verify, progress)
        return result


def recover(folder: Path) -> list[str]:
    """Finish or undo an in-place run that was killed (journal.py); the caller holds the folder's lock."""
    j = journal.load(folder)
    if j is None:
        return []
    if j.state == journal.COMMITTED:
        removed = journal.finish(j, _referenced_in(folder))
        return [f"finished an interrupted run: removed {len(removed)} superseded file(s)"
                + (f" ({', '.join(removed[:3])}{' ...' if len(removed) > 3 else ''})" if removed else "")]
    journal.roll_back(j)
    return [f"undid an interrupted run (pid {j.pid}): {len(j.backups)} graph(s) restored, "
            f"{len(j.created)} unfinished weight file(s) removed"]


def _output_parent(output: Path) -> Path:
    return Path(os.path.abspath(output)).parent


def check_output(source: Path, output: Path, force: bool) -> None:
    """Refuse an output that would destroy or mix with the source, before anything is read or written.

    `--force` replaces an existing folder only if it looks like a model folder (files, at least one
    .onnx, no subfolders): `--output ~ --force` must not empty a home directory.
    """
    src = Path(os.path.realpath(source))
    out = Path(os.path.realpath(output))
    fix = "choose a new folder beside the source; nothing was changed"
    if out == src:
        raise BadInputError("--output is the source folder", path=output, fix="use --in-place for that")
    if is_inside(out, src):
        raise BadInputError(f"--output contains the source folder {src}", path=output, fix=fix)
    if is_inside(src, out):
        raise BadInputError("--output is inside the source folder", path=output, fix=fix)
    if not out.parent.exists():
        raise BadInputError("parent folder does not exist", path=out.parent, fix="create it first")
    if os.path.lexists(output) and not output.is_dir():
        raise BadInputError("--output exists and is not a folder", path=output, fix=fix)
    if output.is_dir():
        entries = [p for p in output.iterdir() if not p.name.startswith(PREFIX)]
        if entries and not force:
            raise BadInputError("output folder exists and is not empty", path=output,
                                fix="choose a new folder, or pass --force to replace it")
        if entries:
            subdirs = [p.name for p in entries if p.is_dir()]
            if subdirs or not any(p.name.endswith(".onnx") for p in entries):
                raise BadInputError(
                    "--force replaces only a folder holding a model, and this one "
                    + (f"has subfolders ({', '.join(sorted(subdirs)[:3])})" if subdirs else "holds no .onnx file"),
                    path=output, fix=fix)


def _referenced(model_path: Path) -> set[str]:
    """Names of the files beside `model_path` that its graph's external data points at (Constant nodes too)."""
    here = Path(os.path.abspath(model_path)).parent
    out = set()
    g = load_graph(model_path)
    for t in graph_tensors(g.model.graph):
        if uses_external_data(t) and inline_span(g, t) is None:  # a skeleton's inline bytes are no weights file
            p = Path(os.path.abspath(resolve_location(model_path, external_info(t).get("location", ""))))
            if p.parent == here:
                out.add(p.name)
    return out


def _referenced_in(folder: Path) -> set[str]:
    """Every file name some graph in `folder` still points at; files we cannot parse keep all they might."""
    names: set[str] = set()
    for p in folder.glob("*.onnx"):
        if p.name.startswith(PREFIX):  # our backups and temp files (pathlib's glob matches dot-files)
            continue
        try:
            names |= _referenced(p)
        except SherpaFixedError:
            return {q.name for q in folder.iterdir()}  # unreadable graph: remove nothing
    return names


def _mode_of(path: Path) -> int:
    """The permission bits a rewritten file inherits from the file it replaces (0440 stays 0440)."""
    try:
        return stat.S_IMODE(os.stat(path).st_mode)
    except OSError:
        return 0o644


def _apply_in_place(plan: Plan, result: PrepareResult, verify: str, progress: Progress | None) -> None:
    folder = result.source
    check_writable(folder)
    check_free_space(folder, _bytes_to_write(plan))
    old_refs = {fp.graph.path: _referenced(fp.graph.path) for fp in plan.files}
    j = journal.Journal(folder)
    j.superseded = sorted(set().union(*old_refs.values())) if old_refs else []
    j.save()  # from here on, a killed run is undone (or finished) by the next one
    t = time.perf_counter()
    try:
        staged: list[tuple[FilePlan, Path, Path | None]] = []
        for fp in plan.files:
            if not fp.changed:
                continue
            if fp.weights == "consolidate":
                fp.weights_name = _free_name(folder, fp.weights_name, old_refs)
            graph_tmp, weights_tmp = _rewrite_graph(fp, folder, progress, durable=True)
            mode = _mode_of(fp.graph.path)
            os.chmod(graph_tmp, mode)
            if weights_tmp is not None:
                os.chmod(weights_tmp, mode)
            staged.append((fp, graph_tmp, weights_tmp))
        # New weights get their final names first: nothing references them yet, so this is safe.
        for fp, _graph_tmp, weights_tmp in staged:
            if weights_tmp is not None:
                j.created.append(fp.weights_name)
                j.save()
                os.replace(weights_tmp, folder / fp.weights_name)
                result.written.append(fp.weights_name)
        fsync_dir(folder)
        # onnxruntime >= 1.28 refuses external data that resolves outside the folder of the resolved graph
        # file: once a snapshot's graph link becomes a real file, the weights links into blobs/ must become
        # real entries too (a hard link to the blob: no bytes copied, the blob itself untouched).
        for fp, _graph_tmp, _ in staged:
            if fp.weights in ("consolidate", "inline"):
                continue
            for f in fp.audit.files:
                entry = folder / f.path.name
                if Path(os.path.abspath(f.path)).parent != Path(os.path.abspath(folder)) or not entry.is_symlink() \
                        or entry.name in j.backups:
                    continue
                backup = temp_path(entry, "bak")
                j.backups[entry.name] = backup.name
                j.save()
                os.link(entry, backup, follow_symlinks=False)
                real_tmp = temp_path(entry)
                link_or_copy(Path(os.path.realpath(entry)), real_tmp)
                os.replace(real_tmp, entry)
        # Then each graph, atomically, keeping a hard-linked backup of the original to restore from. The
        # backup links the directory entry itself (a Hugging Face snapshot's symlink stays a symlink).
        for fp, graph_tmp, _ in staged:
            final = fp.graph.path
            backup = temp_path(final, "bak")
            j.backups[final.name] = backup.name
            j.save()
            os.link(final, backup, follow_symlinks=False)
            os.replace(graph_tmp, final)  # replaces a symlink, never writes into the blob behind it
            result.written.append(final.name)
        fsync_dir(folder)
        result.seconds["write"] = time.perf_counter() - t
        t = time.perf_counter()
        result.checks = _verify(plan, folder, verify, progress)
        result.seconds["verify"] = time.perf_counter() - t
        if any(not c.ok for c in result.checks):
            raise _VerificationFailed()
    except BaseException as exc:
        journal.roll_back(j)
        for p in folder.iterdir():
            if p.name.startswith(f"{PREFIX}tmp-{os.getpid()}-"):
                p.unlink(missing_ok=True)
        fsync_dir(folder)
        result.written.clear()
        if isinstance(exc, _VerificationFailed):
            return
        if isinstance(exc, OSError):
            raise disk_error(exc, folder) from exc
        raise
    j.state = journal.COMMITTED
    j.save()
    # Weight files no graph references any more (consolidated scattered files) are removed last.
    result.removed = journal.finish(j, _referenced_in(folder))


class _VerificationFailed(Exception):
    pass


def _free_name(folder: Path, name: str, old_refs: dict[Path, set[str]]) -> str:
    """`name` unless an existing graph still references a file of that name (never overwrite those)."""
    referenced = set().union(*old_refs.values()) if old_refs else set()
    candidate, n = name, 1
    while candidate in referenced:
        stem = name[: -len(".weights")]
        candidate = f"{stem}.{n}.weights"
        n += 1
    return candidate


LINK_MIN = 16 << 20  # files at least this big are hard-linked into an output folder (and reported); smaller copied


def _bring(src: Path, dst: Path, result: PrepareResult) -> None:
    """Put an unchanged source file into the output: a real file, never a link to a link.

    Big files are hard-linked to the resolved file (no bytes copied; listed as linked, since the two
    names then share one file); small ones (tokens.txt, graphs) are copied so that editing the output
    never edits the source.
    """
    real = Path(os.path.realpath(src))
    if real.stat().st_size >= LINK_MIN and link_or_copy(real, dst) == "linked":
        result.linked.append(dst.name)
        return
    try:
        shutil.copyfile(real, dst)
        shutil.copymode(real, dst)
    except OSError as exc:
        raise disk_error(exc, dst) from exc
    result.written.append(dst.name)


def _apply_to_output(plan: Plan, result: PrepareResult, output: Path, force: bool, verify: str,
                     progress: Progress | None) -> None:
    source = result.source
    parent = _output_parent(output)
    check_writable(parent)
    check_free_space(parent, _bytes_to_write(plan))
    staging = temp_path(Path(os.path.abspath(output)), "tmp")
    t = time.perf_counter()
    try:
        staging.mkdir()
        written_graphs: set[str] = set()
        consolidated_sources: set[str] = set()
        kept_refs: set[str] = set()
        own_copies: set[str] = set()  # weights of windowed graphs: copied, never hard-linked (_own_weights_for_window)
        for fp in plan.files:
            refs = {f.path.name for f in fp.audit.files}
            if fp.window is not None:
                own_copies |= refs
            if fp.changed:
                # A fresh folder replaces nothing until its final rename, and the source is never
                # touched: no fsync here, like cp.
                graph_tmp, weights_tmp = _rewrite_graph(fp, staging, progress, durable=False)
                mode = _mode_of(fp.graph.path)
                os.chmod(graph_tmp, mode)
                os.replace(graph_tmp, staging / fp.name)
                written_graphs.add(fp.name)
                result.written.append(fp.name)
                if weights_tmp is not None:
                    os.chmod(weights_tmp, mode)
                    os.replace(weights_tmp, staging / fp.weights_name)
                    result.written.append(fp.weights_name)
                if fp.weights in ("consolidate", "inline"):
                    consolidated_sources |= refs
                else:
                    kept_refs |= refs
            else:
                kept_refs |= refs
        for p in sorted(source.iterdir()):
            if p.name.startswith(PREFIX) or p.name in written_graphs or not p.is_file():
                continue
            if p.name in consolidated_sources and p.name not in kept_refs:
                continue  # scattered files replaced by one consolidated file
            if (staging / p.name).exists():
                continue
            inside(source, p)  # a symlink out of the folder is never followed (confine.py)
            if p.name in own_copies:
                try:
                    shutil.copyfile(os.path.realpath(p), staging / p.name)  # the kernel copies (copy_file_range)
                except OSError as exc:
                    raise disk_error(exc, staging / p.name) from exc
                result.written.append(p.name)
                continue
            _bring(p, staging / p.name, result)
        result.seconds["write"] = time.perf_counter() - t
        t = time.perf_counter()
        result.checks = _verify(plan, staging, verify, progress)
        result.seconds["verify"] = time.perf_counter() - t
        if any(not c.ok for c in result.checks):
            shutil.rmtree(staging, ignore_errors=True)
            result.written.clear()
            result.linked.clear()
            return
        if output.exists():
            old = temp_path(Path(os.path.abspath(output)), "old")
            os.replace(output, old)
            os.replace(staging, output)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(staging, output)
        fsync_dir(parent)
    except BaseException as exc:
        shutil.rmtree(staging, ignore_errors=True)
        if isinstance(exc, OSError):
            raise disk_error(exc, output) from exc
        raise
