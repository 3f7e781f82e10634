"""`sherpa-fixed validate`: does this folder match the 0.6B layout, and decode like a Python baseline?

Two halves. Structure: the inspector's analysis compared with a reference
layout (reference.py), each difference expected, fixable by prepare, or
breaking. Decoding: the same 16 kHz audio through sherpa-onnx (our drop-in
recognizer, in a child process, since sherpa-onnx exits on a model it
rejects) and through baseline.py (onnxruntime and our own greedy search);
the token sequences must agree, near-ties aside, or the first divergence is
reported.
"""

from __future__ import annotations

import os
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .. import __version__
from ..decoding.audio import check_audible, check_decodable, read_wav, resample
from ..decoding.sherpa_check import run_recognizer
from ..errors import EXIT_BAD_INPUT, EXIT_NEEDS_FIX, EXIT_OK
from ..reading.findings import CANNOT_WORK, PREPARE_ADVICE, command_paths, next_steps
from ..reading.inspector import inspect_folder
from .baseline import FRAME_SLACK, INT8_TIE_TOLERANCE, TIE_TOLERANCE, Baseline
from .reference import (
    BREAKING,
    DEFAULT_REFERENCE,
    FIXABLE,
    Difference,
    choose_layout,
    compare_folder,
    load_reference,
)

SCHEMA = "sherpa-fixed/validate"


@dataclass
class DecodeCheck:
    variant: str
    agree: bool
    sherpa_version: str | None = None
    sherpa_error: str | None = None
    baseline_provider: str = "cpu"
    tokens: int = 0
    windows: int = 0
    ties: list[dict] = field(default_factory=list)
    shifted: list[dict] = field(default_factory=list)
    divergence: dict | None = None
    text: str | None = None
    agreement: str | None = None  # exact | decisions | diverged
    tie_tolerance: float = TIE_TOLERANCE
    skipped: str | None = None  # why no decode ran (the model set cannot work)

    @property
    def ran(self) -> bool:
        return self.skipped is None and self.sherpa_error is None

    def to_json(self) -> dict:
        return {"variant": self.variant, "agree": self.agree, "sherpa_onnx_version": self.sherpa_version,
                "sherpa_onnx_error": self.sherpa_error, "baseline_provider": self.baseline_provider,
                "tokens": self.tokens, "windows": self.windows, "near_ties": len(self.ties),
                "max_tie_margin": max((t["margin"] for t in self.ties), default=None),
                "tie_tolerance": self.tie_tolerance, "frame_shifted": len(self.shifted), "frame_slack": FRAME_SLACK,
                "agreement": self.agreement, "first_divergence": self.divergence,
                "text": self.text, "skipped": self.skipped}


@dataclass
class ValidationReport:
    folder: Path
    reference: str
    audio: str
    audio_seconds: float
    differences: dict[str, list[Difference]]
    decodes: list[DecodeCheck]
    layout: dict = field(default_factory=dict)  # the release layout the folder was judged against
    unusable: list[str] = field(default_factory=list)  # inspect's advice when the folder cannot work at all

    @property
    def structure_ok(self) -> bool:
        return not any(d.category in (BREAKING, FIXABLE) for ds in self.differences.values() for d in ds)

    @property
    def decodes_agree(self) -> bool:
        return bool(self.decodes) and all(d.agree for d in self.decodes)

    @property
    def valid(self) -> bool:
        return self.structure_ok and self.decodes_agree

    @property
    def exit_code(self) -> int:
        if self.unusable:
            return EXIT_BAD_INPUT  # as --help says: 2 for unusable input
        return EXIT_OK if self.valid else EXIT_NEEDS_FIX

    def to_json(self) -> dict:
        return {"schema": SCHEMA, "schema_version": 1, "sherpa_fixed_version": __version__,
                "folder": str(self.folder), "reference": self.reference, "layout": self.layout.get("name"),
                "valid": self.valid, "unusable": self.unusable,
                "exit_code": self.exit_code, "audio": self.audio, "audio_seconds": round(self.audio_seconds, 3),
                "differences": {k: [d.to_json() for d in v] for k, v in self.differences.items()},
                "decodes": [d.to_json() for d in self.decodes]}


def generated_audio(seconds: float = 12.0) -> np.ndarray:
    """Deterministic test audio: tone segments over a noise floor (the oracle's generator)."""
    from ..oracle import oracle_audio, random_tokens

    audio, _ = oracle_audio(random_tokens(int(seconds * 2), seed=1234), seed=1234)
    return audio


def _decode(v, tokens: Path, samples_path: Path, samples: np.ndarray, provider: str, threads: int) -> DecodeCheck:
    files = {role: m.graph.path for role, m in v.models.items()}
    result, error = run_recognizer(files["encoder"], files["decoder"], files["joiner"], tokens, samples_path,
                                   threads=threads)
    check = DecodeCheck(v.name, False, baseline_provider=provider)
    if result is None:
        check.sherpa_error = error
        return check
    check.sherpa_version = result["version"]
    check.text = result["text"]
    check.tokens = len(result["tokens"])
    check.tie_tolerance = INT8_TIE_TOLERANCE if v.name == "int8" else TIE_TOLERANCE
    base = Baseline(files["encoder"], files["decoder"], files["joiner"], tokens, provider=provider, threads=threads,
                    tie=check.tie_tolerance)
    b = base.decode(samples, guide=result)
    check.windows = b["windows"]
    check.ties = b["ties"]
    check.shifted = b.get("shifted") or []
    check.divergence = b["divergence"]
    kinds = set(b.get("agreement") or [])
    check.agreement = "diverged" if "diverged" in kinds else "decisions" if "decisions" in kinds else "exact"
    same = b["tokens"] == result["tokens"] and b["timestamps"] == result["timestamps"]
    if check.divergence is None and not same:
        first = next((i for i, (x, y) in enumerate(zip(b["tokens"], result["tokens"], strict=False)) if x != y),
                     min(len(b["tokens"]), len(result["tokens"])))
        check.divergence = {"kind": "merged", "index": first,
                            "sherpa": result["tokens"][first:first + 3], "baseline": b["tokens"][first:first + 3]}
    if check.divergence is not None and "index" in check.divergence:
        i = check.divergence["index"]
        check.divergence["sherpa_context"] = result["tokens"][max(0, i - 3):i + 3]
        check.divergence["time"] = result["timestamps"][i] if i < len(result["timestamps"]) else None
    check.agree = check.divergence is None and same
    return check


def validate_folder(folder: str | os.PathLike, *, reference: str = DEFAULT_REFERENCE,
                    audio: str | os.PathLike | None = None, provider: str = "cpu",
                    variants: list[str] | None = None, threads: int = 1) -> ValidationReport:
    folder = Path(folder)
    ref = load_reference(reference)  # a bad --reference is refused before anything is read
    report = inspect_folder(folder, variants=variants)
    if any(v.encoder.inputs and any(a.fixed and a.role in ("batch", "time") for a in v.encoder.inputs[0].axes)
           for v in report.variants):  # baked or only declared: a run decides, as prepare decides
        report = inspect_folder(folder, variants=variants, probe=True)
    layout = choose_layout(report, ref)
    differences = compare_folder(report, ref, layout)
    unusable = next_steps([f for v in report.variants for f in v.findings], str(folder)) \
        if report.verdict.code == CANNOT_WORK else []
    if audio is not None:
        a = read_wav(audio)
        check_decodable(a)
        check_audible(a)
        samples = resample(a.samples, a.sample_rate, 16000)
        label = str(audio)
    else:
        samples = generated_audio()
        label = f"generated: {len(samples) / 16000:.1f} s of tone segments over a noise floor"
    decodes = []
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "audio.npy"
        np.save(path, samples.astype(np.float32))
        for v in report.variants:
            if v.verdict.code == CANNOT_WORK:
                decodes.append(DecodeCheck(v.name, False, baseline_provider=provider,
                                           skipped="not decoded: " + "; ".join(v.verdict.reasons[:2])))
                continue
            decodes.append(_decode(v, report.layout.tokens, path, samples, provider, threads))
    return ValidationReport(folder, ref["name"], label, len(samples) / 16000, differences, decodes, layout,
                            unusable)


def render_validation(r: ValidationReport, verbose: bool = False) -> str:
    lines = [f"{r.folder} against {r.reference}"
             + (f", {r.layout['name']} layout ({r.layout.get('description', '')})" if r.layout else "")]
    for key, diffs in r.differences.items():
        shown = [d for d in diffs if verbose or d.category != "expected"]
        expected = [d for d in diffs if d.category == "expected"]
        if not diffs:
            continue
        lines.append(f"[{key}]")
        for d in shown:
            lines.append(f"  {d.category:<9} {d.line()}")
        if expected and not verbose:
            lines.append(f"  expected  {len(expected)} differences that are properties of the model "
                         "(-v lists them)")
    lines.append(f"audio: {r.audio}" + ("" if r.audio.startswith("generated") else f" ({r.audio_seconds:.1f} s)"))
    for d in r.decodes:
        head = f"  [{d.variant}] "
        if d.skipped:
            lines.append(head + d.skipped)
            continue
        if d.sherpa_error:
            lines.append(head + f"sherpa-onnx refused the model: {d.sherpa_error}")
            continue
        ties = f", {len(d.ties)} near-ties within {d.tie_tolerance} resolved as sherpa-onnx did" if d.ties else ""
        if d.agree and d.tokens == 0:
            lines.append(head + f"sherpa-onnx {d.sherpa_version} and the Python baseline ({d.baseline_provider}) "
                         "both emitted no token: they agree, but this audio proves little about decoding")
        elif d.agree and d.agreement == "exact":
            lines.append(head + f"sherpa-onnx {d.sherpa_version} and the Python baseline ({d.baseline_provider}) "
                         f"agree on all {d.tokens} tokens in {d.windows} window(s){ties}")
        elif d.agree:
            shifted = (f"; {len(d.shifted)} of them at most {FRAME_SLACK} frames from the time sherpa-onnx gave them"
                       if d.shifted else "")
            lines.append(head + f"every one of the {d.tokens} tokens sherpa-onnx {d.sherpa_version} emitted is the "
                         f"Python baseline's best choice ({d.windows} window(s){ties}{shifted}); its search visits "
                         "other frames than sherpa-onnx 1.x's greedy rules, which the baseline follows")
        else:
            div = d.divergence or {}
            lines.append(head + f"DISAGREE at token {div.get('index')} (time {div.get('time')}): "
                         f"{div.get('kind')} decision, ours {div.get('ours', div.get('baseline'))} vs sherpa-onnx "
                         f"{div.get('theirs', div.get('sherpa'))}, margin {div.get('margin')}; "
                         f"sherpa-onnx context {div.get('sherpa_context')}")
    lines.append(verdict_line(r))
    lines += [f"next: {step}" for step in r.unusable]
    return "\n".join(lines)


def verdict_line(r: ValidationReport) -> str:
    """valid, or each reason it is not, each true of what ran (issue 11: no 'disagree' without a decode)."""
    if r.valid:
        return "valid: matches the reference layout and decodes like the baseline"
    if r.unusable:
        return "not valid: the folder cannot work (exit 2); fix it at the source first"
    reasons = []
    diffs = [d for ds in r.differences.values() for d in ds]
    breaking = sum(d.category == BREAKING for d in diffs)
    fixable = sum(d.category == FIXABLE for d in diffs)
    if breaking:
        reasons.append(f"{breaking} breaking difference(s): prepare cannot fix them (see each one's reason)")
    if fixable:
        reasons.append(f"{fixable} fixable difference(s): " + PREPARE_ADVICE.format(**command_paths(str(r.folder))))
    ran = [d for d in r.decodes if d.ran]
    refused = [d.variant for d in r.decodes if d.sherpa_error]
    if refused:
        reasons.append(f"sherpa-onnx refused the {', '.join(refused)} model set, so no decode was compared")
    if not r.decodes:
        reasons.append("no model set was decoded")
    if any(not d.agree for d in ran):
        reasons.append("decodes do not agree: " + ", ".join(d.variant for d in ran if not d.agree))
    return "not valid: " + "; ".join(reasons)
