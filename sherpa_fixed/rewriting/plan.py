"""Plan a prepare run: every change, and why, decided from an inspect report before a byte is written.

The plan comes from the inspector's analysis (never re-derived here):
metadata keys it found missing, wrong or duplicated, fixed sizes it found
only declared, and weight layouts that some sherpa-onnx build refuses; plus
what `--window`, `--max-seconds` and `--inline` ask for. Applying it is
apply.py's job; proving the result, proofs.py's.
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass, field
from pathlib import Path

from .. import __version__
from ..errors import BadInputError, NeedsFixError
from ..reading import positional, runtimes
from ..reading.external_data import ExternalAudit, escapes_folder, is_absolute_location
from ..reading.findings import CANNOT_WORK, next_steps
from ..reading.inspector import FolderReport, VariantReport
from ..reading.metadata import PREPARED_BY_KEY, duplicated_keys
from ..reading.onnx_graph import GraphFile
from ..reading.probe import EncoderProbe, probe_encoder
from . import posenc as _posenc
from .windowing import DEFAULT_DYNAMIC_WINDOW_S, MAX_WINDOW_S, WindowParams, window_params

PROTOBUF_LIMIT = (2 << 30) - (64 << 20)  # 2 GiB, with room for the graph itself
MAX_ONE_PASS_S = 86_400.0  # --max-seconds: a day; a d_model 1024 table that long would be 8.8 GB anyway


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
    read = runtimes.file_facts(fp.graph, fp.audit).optimizer_read
    if read:
        fp.weights = "relocate" if fp.weights == "relocate" else "inline_small"
        fp.changes.append(Change(fp.name, "weights", "inline small tensors and Conv weights", f"{len(read)} external",
                                 "inside the graph", "sherpa-onnx <= 1.12.20 (onnxruntime 1.17) reads them while "
                                 "optimising a session made from bytes and fails from any folder (docs/runtimes.md)"))


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


def _plan_metadata(fp: FilePlan, v: VariantReport, warnings: list[str]) -> None:
    current = fp.graph.metadata
    # A key written twice: sherpa-onnx (onnxruntime's metadata map) reads the last entry, a careless fix
    # edits the first. Every planned key is written as exactly one entry (stream_rewrite.set_metadata), so
    # a duplicated key is planned even when its last value is right.
    for key, values in duplicated_keys(fp.graph.model).items():
        fp.metadata[key] = values[-1]
        fp.changes.append(Change(fp.name, "metadata", f"{key} (written {len(values)} times)", values[-1],
                                 values[-1], "duplicate entries become one, with the value sherpa-onnx reads "
                                 "(the last)"))
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
    if not (math.isfinite(seconds) and 0 < seconds <= MAX_WINDOW_S):
        raise BadInputError(f"--window-seconds {seconds:g} must be above 0 and at most {MAX_WINDOW_S:g} s "
                            "(attention memory grows with its square)", fix="the default, 20 s, is measured best "
                            "(docs/long-audio.md)")
    frames = max(1, round(seconds * 100 / sf)) * sf
    tables = positional.find_tables(fp.graph.model.graph)
    limit = min((t.max_frames for t in tables), default=None)
    if limit is not None and frames > limit * sf:
        raise BadInputError(f"a {seconds:g} s window is longer than the encoder's positional limit "
                            f"({positional.limit_seconds(limit, sf):g} s)", path=fp.graph.path,
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
    if not (math.isfinite(max_seconds) and 0 < max_seconds <= MAX_ONE_PASS_S):
        raise BadInputError(f"--max-seconds {max_seconds:g} must be above 0 and at most {MAX_ONE_PASS_S:g} s",
                            fix="for longer audio use prepare --window (bounded memory at any length)")
    sf = v.measured.get("subsampling_factor") or 8
    tables = positional.find_tables(fp.graph.model.graph)
    if not tables:
        warnings.append(f"{fp.name}: no NeMo relative positional table found; nothing in the graph caps its "
                        "length that sherpa-fixed knows of, so --max-seconds changes nothing")
        return
    frames = positional.frames_for(max_seconds, sf)
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
                             f"{t.max_frames} output frames ({positional.limit_seconds(t.max_frames, sf):g} s)",
                             f"{frames} frames ({positional.limit_seconds(frames, sf):g} s)",
                             "--max-seconds: new rows from NeMo's RelPositionalEncoding formula, stored rows "
                             "kept bit-identical"))


def _planned_facts(fp: FilePlan) -> runtimes.FileFacts:
    """The file as this plan writes it: weights external unless inlined, bare locations, and what
    onnxruntime 1.17's optimisers read always inline (_plan_weights)."""
    return runtimes.FileFacts(fp.name, fp.audit.uses_external and fp.weights != "inline", False, [], fp.total_bytes)


def _plan_release(plans: dict[Path, FilePlan], report: FolderReport, version: str) -> list[str]:
    """--sherpa-onnx VERSION: the layout that release loads from any working directory, or a refusal.

    Releases that create sessions from bytes (<= 1.12.35) resolve external weights against the working
    directory, so every file that fits in protobuf's 2 GiB goes inline (self-contained files load from
    anywhere); a file that does not fit has no such layout there, and nothing is written."""
    warnings: list[str] = []
    for v in report.variants:
        tdt = bool(v.measured.get("num_durations"))
        fps = [plans[m.graph.path.resolve()] for m in v.models.values()]
        verdict = runtimes.judge([_planned_facts(fp) for fp in fps], version, tdt=tdt)
        if verdict.where == runtimes.NEVER:  # nothing about the layout: the release cannot decode this model
            raise BadInputError(f"sherpa-onnx {version} cannot run the {v.name} set: {verdict.why}",
                                path=report.layout.root, fix="use a newer sherpa-onnx release (docs/runtimes.md); "
                                "nothing was written")
        warnings += [f"[{v.name}] sherpa-onnx {version}: {w}" for w in verdict.warnings]
        if verdict.where == runtimes.ANYWHERE:
            continue
        for fp in fps:
            if not _planned_facts(fp).external:
                continue
            if fp.total_bytes > PROTOBUF_LIMIT:
                raise BadInputError(
                    f"sherpa-onnx {version} reads external weights relative to the working directory, and "
                    f"{fp.name} ({fp.total_bytes / 1e9:.2f} GB) cannot be self-contained (protobuf's 2 GiB "
                    "limit): no layout of this folder loads there from any working directory",
                    path=fp.graph.path, fix=f"quantize it (sherpa-fixed quantize {report.layout.root} -o OUT: a "
                    "self-contained int8 set loads anywhere), or use sherpa-onnx >= 1.12.36, or load it with the "
                    "model folder as working directory (sherpa-fixed prepare without --sherpa-onnx); nothing "
                    "was written")
            fp.weights = "inline"
            fp.changes.append(Change(fp.name, "weights", "inline", f"{len(fp.audit.files)} external file(s)",
                                     "inside the graph", f"--sherpa-onnx {version}: it resolves external weights "
                                     "against the working directory; a self-contained file loads from anywhere"))
    return warnings


def plan_prepare(report: FolderReport, *, inline: bool = False, window: dict | None = None,
                 max_seconds: float | None = None, sherpa_onnx: str | None = None) -> Plan:
    """Decide every change from an inspect report; writes nothing.

    sherpa_onnx: a release the result must load in from any working directory (docs/runtimes.md)."""
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
    if sherpa_onnx is not None:
        warnings += _plan_release(plans, report, sherpa_onnx)
    files = list(plans.values())
    for fp in files:
        if fp.changed:
            record = {"version": __version__,
                      "changed": sorted({c.what for c in fp.changes})}
            if sherpa_onnx is not None:
                record["for_sherpa_onnx"] = sherpa_onnx
            fp.metadata[PREPARED_BY_KEY] = json.dumps(record, sort_keys=True)
    for v in report.variants:  # name only the keys really written from a default, not measured ones
        defaulted = sorted({c.what for f in files for c in f.changes if c.kind == "metadata" and "default" in c.why})
        if v.recipe is None and defaulted:
            warnings.append(f"[{v.name}] model family not recognised ({v.recipe_reason}): {' and '.join(defaulted)} "
                            f"{'comes' if len(defaulted) == 1 else 'come'} from defaults, not from a recipe; add a "
                            "recipe in patches/ if you know the family")
            break
    return Plan(report, files, list(dict.fromkeys(warnings)), list(dict.fromkeys(blockers)))
