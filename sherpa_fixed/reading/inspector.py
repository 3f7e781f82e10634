"""Tell a user, before anything runs, what sherpa-onnx will do with their folder and why.

`inspect_folder` is the analysis every other command builds on: prepare
plans its rewrites from it, validate compares it with the 0.6B reference,
and the recognizer reads the window size from it.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path

from .. import __version__
from ..errors import BadInputError
from ..safety.journal import JOURNAL
from . import positional, runtimes
from .axes import Port, baking_evidence, ports_for
from .external_data import ExternalAudit, audit_external_data, mark_shared
from .findings import Finding, Verdict, verdict_of, worst
from .layout import FolderLayout, ModelSet, classify_graph, find_layout
from .measure import Measurements, measure
from .metadata import (
    WINDOW_MARKER,
    Expected,
    KeyAudit,
    atoi,
    audit_metadata,
    duplicated_keys,
    expected_metadata,
    sherpa_first_error,
)
from .onnx_graph import GraphFile
from .probe import EncoderProbe, probe_encoder
from .recipes import Recipe, find_recipe
from .tokens import Tokens, read_tokens

SCHEMA = "sherpa-fixed/inspect"
SCHEMA_VERSION = 1
FRAME_SHIFT_S = 0.01


@dataclass
class ModelReport:
    role: str
    graph: GraphFile
    inputs: list[Port]
    outputs: list[Port]
    external: ExternalAudit

    def to_json(self) -> dict:
        g = self.graph
        return {
            "role": self.role,
            "path": str(g.path),
            "bytes": g.size,
            "opset": g.opset,
            "producer": g.producer,
            "inputs": [p.to_json() for p in self.inputs],
            "outputs": [p.to_json() for p in self.outputs],
            "metadata": dict(g.metadata),
            "external_data": self.external.to_json(),
            "quantization": _quantization(g),
        }


def _quantization(g: GraphFile) -> dict | None:
    """How the graph was quantized (operators, weight types, sherpa-fixed's record), or None for float."""
    from .quantization import describe

    return describe(g.model, g.metadata)


@dataclass
class VariantReport:
    name: str
    models: dict[str, ModelReport]
    measured: Measurements
    recipe: Recipe | None
    recipe_reason: str
    expected: dict[str, Expected]
    metadata_audit: list[KeyAudit]
    sherpa_error: str | None
    probe: EncoderProbe | None
    findings: list[Finding]
    verdict: Verdict
    window: dict | None = None  # set for encoders windowed by prepare --window
    positional: dict | None = None  # the dynamic encoder's positional limit (positional.py)
    runtimes: dict | None = None  # which sherpa-onnx releases load this set (runtimes.py)

    @property
    def encoder(self) -> ModelReport:
        return self.models["encoder"]

    def time_axis(self):
        return self.encoder.inputs[0].axis("time") if self.encoder.inputs else None

    def to_json(self) -> dict:
        return {
            "name": self.name,
            "verdict": self.verdict.to_json(),
            "files": {role: str(m.graph.path) for role, m in self.models.items()},
            "models": {role: m.to_json() for role, m in self.models.items()},
            "measured": self.measured.to_json(),
            "family": {"name": self.recipe.family if self.recipe else None, "reason": self.recipe_reason},
            "expected_metadata": {k: {"value": e.value, "source": e.source, "measured": e.measured}
                                  for k, e in self.expected.items()},
            "metadata_audit": [a.to_json() for a in self.metadata_audit],
            "sherpa_onnx_would_say": self.sherpa_error,
            "probe": self.probe.to_json() if self.probe else None,
            "window": self.window,
            "positional_limit": self.positional,
            "runtimes": self.runtimes,
            "findings": [f.to_json() for f in self.findings],
        }


@dataclass
class FolderReport:
    layout: FolderLayout
    tokens: Tokens | None
    variants: list[VariantReport]
    findings: list[Finding] = field(default_factory=list)

    @property
    def verdict(self) -> Verdict:
        return worst([x.verdict for x in self.variants])

    def variant(self, name: str) -> VariantReport | None:
        return next((v for v in self.variants if v.name == name), None)

    @property
    def exit_code(self) -> int:
        """The verdict's, raised to 1 when the release asked about (--sherpa-onnx) does not load a set from
        any working directory."""
        asked = [(v.runtimes or {}).get("requested") for v in self.variants]
        if any(a and a["loads"] != runtimes.ANYWHERE for a in asked):
            return max(self.verdict.exit_code, 1)
        return self.verdict.exit_code

    def to_json(self) -> dict:
        v = self.verdict
        return {
            "schema": SCHEMA,
            "schema_version": SCHEMA_VERSION,
            "sherpa_fixed_version": __version__,
            "folder": str(self.layout.root.resolve()),
            "verdict": v.to_json(),
            "tokens": self.tokens.to_json() if self.tokens else None,
            "bpe_vocab": str(self.layout.bpe_vocab) if self.layout.bpe_vocab else None,
            "variants": [x.to_json() for x in self.variants],
            "findings": [f.to_json() for f in self.findings],
        }


# ----------------------------------------------------------------------------- checks


def _encoder_findings(
    rep: ModelReport, measured: Measurements, probe: EncoderProbe | None
) -> list[Finding]:
    out: list[Finding] = []
    name = rep.graph.name
    if not rep.inputs or rep.inputs[0].axes == [] or len(rep.inputs[0].axes) != 3:
        return [Finding("error", "encoder.signature", f"{name}: first input is not (batch, mel, time)", "none",
                        name)]
    audio = rep.inputs[0]
    feat, time, batch = audio.axis("features"), audio.axis("time"), audio.axis("batch")
    if feat and not feat.fixed:
        if time and time.fixed and time.size in (64, 80, 128):
            out.append(Finding(
                "error", "encoder.channels_last",
                f"{name}: input {audio.name}{audio.shape_text()} looks like (batch, time, mel) with {time.size} "
                "mel bins last; sherpa-onnx's NeMo path feeds (batch, mel, time), so this is not a NeMo "
                "FastConformer export", "none", name))
            return out
        out.append(Finding("warning", "encoder.features_dynamic",
                           f"{name}: the mel axis is dynamic; sherpa-onnx will feed feat_dim from the metadata "
                           "or from_transducer(feature_dim=...)", None, name))

    if time and time.fixed:
        lengths = [time.size]
        sf = measured.get("subsampling_factor")
        if sf:
            lengths.append(-(-time.size // sf))
        time.evidence = baking_evidence(rep.graph, lengths)
        if probe is not None and probe.time_baked is not None:
            time.baked = probe.time_baked
            run = next((r for r in probe.runs if r.frames != time.size), None)
            if run is not None:
                time.evidence.append(
                    f"probe: ran at {run.frames} frames: " + ("ok" if run.ok else f"failed ({run.error})"))
        else:
            time.baked = True if time.evidence else None
        seconds = time.size * FRAME_SHIFT_S
        if time.baked:
            out.append(Finding(
                "error", "encoder.time_fixed_baked",
                f"{name}: time axis fixed at {time.size} frames ({seconds:g} s) and baked into the graph "
                f"({time.evidence[0]}); sherpa-onnx fails on any other length with 'index: 2 Got: N Expected: "
                f"{time.size}'. Use sherpa_fixed.OfflineRecognizer, which feeds it exact {seconds:g} s windows",
                "window", name))
        elif time.baked is False:
            out.append(Finding(
                "error", "encoder.time_fixed_declared",
                f"{name}: time axis declared fixed at {time.size} frames but the graph runs at other lengths "
                "(probe); prepare frees the declared size", "prepare", name))
        else:
            out.append(Finding(
                "error", "encoder.time_fixed_declared",
                f"{name}: time axis declared fixed at {time.size} frames ({seconds:g} s); no constant in the "
                "graph carries that length, so it is probably only declared: prepare frees it and verifies by "
                "running other lengths (inspect --probe checks now)", "prepare", name))
    if batch and batch.fixed:
        if probe is not None and probe.batch_baked is not None:
            batch.baked = probe.batch_baked
            batch.evidence.append("probe: batch 2 " + ("failed" if probe.batch_baked else "ran"))
        out.append(Finding(
            "warning", "encoder.batch_fixed",
            f"{name}: batch fixed to {batch.size}" + (" (baked)" if batch.baked else "") +
            "; sherpa-onnx's decode_streams() puts several streams in one encoder call and fails with more "
            f"than {batch.size}; decode_stream() and sherpa_fixed.OfflineRecognizer work", None, name))
    limit = measured.get("max_output_frames")
    sf = measured.get("subsampling_factor") or 8
    if limit and not (time and time.fixed):
        seconds = limit * sf * FRAME_SHIFT_S
        out.append(Finding(
            "info", "encoder.max_length",
            f"{name}: inputs longer than about {seconds:g} s fail (relative positional encoding table holds "
            f"{limit} output frames); sherpa_fixed.OfflineRecognizer windows long audio", None, name))
    return out


def _external_findings(rep: ModelReport) -> list[Finding]:
    name = rep.graph.name
    fixes = {
        "external.outside": ("error", "none"),
        "external.missing": ("error", "none"),
        "external.truncated": ("error", "none"),
        "external.length_mismatch": ("error", "none"),
        "external.no_location": ("error", "none"),
        "external.bad_field": ("error", "none"),
        "external.absolute": ("error", "prepare"),
        "external.escapes": ("error", "prepare"),
        "external.scattered": ("warning", "prepare"),
        "external.small_tensors": ("error", "prepare"),
        "external.subfolder": ("info", "prepare"),
        "external.shared": ("warning", None),
    }
    out = []
    for code, message in rep.external.problems:
        severity, fix = fixes.get(code, ("warning", None))
        out.append(Finding(severity, code, f"{name}: {message}", fix, name))
    if rep.external.uses_external and not any(c in ("external.missing", "external.absolute")
                                               for c, _ in rep.external.problems):
        out.append(Finding(
            "info", "external.cwd",
            f"{name}: external weights with relative locations load in sherpa-onnx >= 1.12.36 from any folder; "
            "older builds and asset loaders resolve them against the working directory "
            "(sherpa_fixed.OfflineRecognizer and session_model_dir() handle this)", None, name))
    return out


def _metadata_findings(audits: list[KeyAudit], encoder_name: str) -> list[Finding]:
    out = []
    for a in audits:
        if a.status in ("missing", "wrong"):
            exp = f" -> {a.expected!r}" if a.expected is not None else ""
            msg = f"{encoder_name}: metadata {a.key} {a.status} ({a.current!r}{exp}, from {a.source})"
            if a.effect:
                msg += f": {a.effect}"
            out.append(Finding("error" if a.fatal else "warning", f"metadata.{a.key}.{a.status}", msg, "prepare",
                               encoder_name))
    return out


def _consistency_findings(measured: Measurements, models: dict[str, ModelReport]) -> list[Finding]:
    out = [Finding("error", "model.mismatch", c, "none") for c in measured.conflicts]
    pairs = (("encoder_dim", "joiner_encoder_dim", "encoder output", "joiner's encoder input"),
             ("pred_hidden", "joiner_decoder_dim", "decoder state", "joiner's decoder input"))
    for a, b, an, bn in pairs:
        va, vb = measured.get(a), measured.get(b)
        if va is not None and vb is not None and va != vb:
            out.append(Finding("error", "model.mismatch",
                               f"{an} is {va} wide but the {bn} expects {vb}: the files come from different "
                               "models", "none"))
    for role, rep in models.items():
        kind = classify_graph(rep.graph)
        if kind != role:
            why = kind[4:] if kind.startswith("not:") else f"its signature is a {kind}'s"
            out.append(Finding("error", "model.role", f"{rep.graph.name} is used as the {role}, but {why}", "none",
                               rep.graph.name))
    return out


def _tokens_findings(tokens: Tokens | None, layout: FolderLayout) -> list[Finding]:
    if tokens is None:
        return [Finding("error", "tokens.missing", f"no tokens.txt in {layout.root}; sherpa-onnx needs it",
                        "none")]
    out = []
    for code, msg in tokens.problems:
        severity, fix = ("warning", None) if code == "tokens.duplicate_symbol" else ("error", "none")
        out.append(Finding(severity, code, f"{tokens.path.name}: {msg}", fix, tokens.path.name))
    return out


# ----------------------------------------------------------------------------- assembly


def _window_info(encoder: GraphFile) -> dict | None:
    raw = encoder.metadata.get(WINDOW_MARKER)
    if not raw:
        return None
    import json

    try:
        return json.loads(raw)
    except ValueError:
        return {"raw": raw}


def _positional_limit(encoder: GraphFile, measured: Measurements) -> dict | None:
    """How long an input the dynamic encoder's relative positional table allows (None: no table found).

    From the table's shape and the Slice that reads it (positional.find_tables); no tensor is read."""
    tables = positional.find_tables(encoder.model.graph)
    if not tables:
        return None
    sf = measured.get("subsampling_factor") or 8
    frames = min(t.max_frames for t in tables)
    raw = encoder.metadata.get(positional.MARKER)
    try:
        extended = json.loads(raw) if raw else None
    except ValueError:
        extended = {"raw": raw}
    return {"output_frames": frames, "seconds": positional.limit_seconds(frames, sf), "subsampling_factor": sf,
            "tables": [t.to_json() for t in tables], "extended": extended}


def inspect_variant(
    ms: ModelSet,
    layout: FolderLayout,
    tokens: Tokens | None,
    audits: dict[Path, ExternalAudit],
    *,
    probe: bool = False,
    sherpa_onnx: str | None = None,
) -> VariantReport:
    models: dict[str, ModelReport] = {}
    for role, path in ms.paths().items():
        g = layout.graph(path)
        ins, outs = ports_for(role, g)
        if path not in audits:
            audits[path] = audit_external_data(g)
        models[role] = ModelReport(role, g, ins, outs, audits[path])
    enc = models["encoder"].graph
    current = dict(enc.metadata)
    measured = measure(enc, models["decoder"].graph, models["joiner"].graph, tokens, atoi(current.get("vocab_size")))

    probe_result = None
    if probe:
        probe_result = probe_encoder(enc, measured.get("feat_dim") or atoi(current.get("feat_dim")))
        if probe_result.subsampling_factor:
            static = measured.get("subsampling_factor")
            if static and static != probe_result.subsampling_factor:
                measured.conflicts.append(
                    f"conv strides say subsampling {static}, but a run gave {probe_result.subsampling_factor}")
            measured.set("subsampling_factor", probe_result.subsampling_factor,
                         f"probe: frames in / frames out = {probe_result.subsampling_factor}")

    family_keys = {k: measured.get(k) for k in ("feat_dim", "vocab_size", "num_durations", "encoder_dim",
                                                 "encoder_layers", "pred_hidden", "pred_rnn_layers")}
    recipe, reason = find_recipe(family_keys, current.get("url"))
    expected = expected_metadata(measured, recipe, current)
    key_audits = audit_metadata(current, expected, measured)

    findings: list[Finding] = []
    findings += _consistency_findings(measured, models)
    findings += _encoder_findings(models["encoder"], measured, probe_result)
    if probe_result is not None and probe_result.error:
        findings.append(Finding("warning", "probe.failed", f"{enc.name}: probe could not run: {probe_result.error}",
                                None, enc.name))
    for rep in models.values():
        findings += _external_findings(rep)
    findings += _metadata_findings(key_audits, enc.name)
    for key, values in duplicated_keys(enc.model).items():
        shown = ", ".join(map(repr, values[:3]))
        findings.append(Finding("error", "metadata.duplicate",
                                f"{enc.name}: metadata {key} is written {len(values)} times ({shown}); sherpa-onnx "
                                f"reads the last, {values[-1]!r}, and editors change the first", "prepare", enc.name))
    if measured.get("decoder_state_batch_fixed"):
        findings.append(Finding("info", "decoder.state_batch_fixed",
                                f"{models['decoder'].graph.name}: a decoder state input has batch fixed to 1, as "
                                "in every NeMo export; sherpa-onnx always runs the decoder with batch 1",
                                None, models["decoder"].graph.name))
    if recipe is None:
        findings.append(Finding("info", "family.unknown", f"model family not recognised ({reason}); values no "
                                "graph can tell come from NeMo defaults", None))
    window = _window_info(enc)
    time_axis = models["encoder"].inputs[0].axis("time") if models["encoder"].inputs else None
    positional = _positional_limit(enc, measured) if window is None and not (time_axis and time_axis.fixed) \
        else None
    if positional is not None:
        findings = [f for f in findings if f.code != "encoder.max_length"]
        ext = positional["extended"]
        how = (f"extended by sherpa-fixed prepare --max-seconds from {ext.get('original_output_frames')} frames"
               if ext else "NeMo's pos_emb_max_len; prepare --max-seconds N raises it, prepare --window removes it")
        findings.append(Finding("info", "encoder.max_length",
                                f"{enc.name}: positional limit {positional['seconds']:g} s "
                                f"({positional['output_frames']} output frames; {how}); longer input fails in the "
                                "attention's Add, and one frame over runs with a wrong encoding", None, enc.name))
    if window is not None:  # its positional table and fixed sizes live inside the Loop, per window
        findings = [f for f in findings if not f.code.startswith(("encoder.time_fixed", "encoder.max_length"))]
        findings.append(Finding("info", "encoder.windowed",
                                f"{enc.name}: windowed by sherpa-fixed prepare --window (window "
                                f"{window.get('window_frames')} frames, hop {window.get('hop_frames')}, context "
                                f"{window.get('context_frames')}); time axis dynamic", None, enc.name))

    sherpa_error = sherpa_first_error(current, measured, tokens)
    return VariantReport(ms.variant, models, measured, recipe, reason, expected, key_audits, sherpa_error,
                         probe_result, findings, verdict_of(findings), window, positional,
                         _runtimes(models, measured, sherpa_onnx))


def _runtimes(models: dict[str, ModelReport], measured: Measurements, version: str | None) -> dict:
    """The oldest release that loads the set from any working directory, and how `version` loads it."""
    files = [runtimes.file_facts(m.graph, m.external) for m in models.values()]
    tdt = bool(measured.get("num_durations"))
    asked = runtimes.judge(files, version, tdt=tdt) if version else None
    return {"oldest_release": runtimes.oldest_release(files, tdt=tdt),
            "requested": asked.to_json() if asked else None}


def inspect_folder(
    paths: list[str | Path] | str | Path,
    *,
    probe: bool = False,
    encoder: str | Path | None = None,
    decoder: str | Path | None = None,
    joiner: str | Path | None = None,
    tokens: str | Path | None = None,
    variants: list[str] | None = None,
    sherpa_onnx: str | None = None,
) -> FolderReport:
    """Analyse a model folder (or loose files) without loading any weights (unless probe=True).

    sherpa_onnx: a release number: say how that release loads each model set (runtimes.py)."""
    if sherpa_onnx is not None:
        runtimes.version_key(sherpa_onnx)  # a bad number is refused before anything is read
    layout = find_layout(paths, encoder=encoder, decoder=decoder, joiner=joiner, tokens=tokens)
    toks = read_tokens(layout.tokens) if layout.tokens else None
    audits: dict[Path, ExternalAudit] = {}
    reports = []
    for name, ms in layout.variants.items():
        if variants and name not in variants:
            continue
        reports.append(inspect_variant(ms, layout, toks, audits, probe=probe, sherpa_onnx=sherpa_onnx))
    if not reports:
        raise BadInputError(f"no {'/'.join(variants or [])} model set found", path=layout.root)

    folder_findings = _tokens_findings(toks, layout)
    if os.path.lexists(Path(layout.root) / JOURNAL):
        folder_findings.append(Finding(
            "error", "folder.interrupted", f"{layout.root}: an interrupted sherpa-fixed run left this folder "
            f"half-changed ({JOURNAL}), so a loader may see old and new files mixed; the next sherpa-fixed "
            "prepare or quantize of it finishes or undoes that run first", "prepare"))
    for model, code, message in mark_shared(audits):
        folder_findings.append(Finding("warning", code, f"{model.name}: {message}", None, model.name))
    _cross_variant(reports, folder_findings)
    for r in reports:  # folder-level errors (tokens) decide every variant's verdict too
        r.findings = r.findings + [f for f in folder_findings if f.severity == "error"]
        r.verdict = verdict_of(r.findings)
    return FolderReport(layout, toks, reports, [f for f in folder_findings if f.severity != "error"])


def _cross_variant(reports: list[VariantReport], out: list[Finding]) -> None:
    if len(reports) < 2:
        return
    base = reports[0]
    for other in reports[1:]:
        for key in ("feat_dim", "vocab_size", "num_durations", "pred_hidden", "pred_rnn_layers", "encoder_dim"):
            a, b = base.measured.get(key), other.measured.get(key)
            if a is not None and b is not None and a != b:
                out.append(Finding("error", "variants.mismatch",
                                   f"{base.name} and {other.name} models disagree on {key} ({a} vs {b}): "
                                   "they are not the same model", "none"))
