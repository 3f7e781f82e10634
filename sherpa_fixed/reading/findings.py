"""Findings and the verdict they add up to.

Each finding says who can fix it: `prepare` (sherpa-fixed rewrites the
folder), `window` (the encoder's time axis is really fixed: the windowed
recognizer, or `prepare --window`), `user` (a call-site choice), or `none`
(the input itself is broken). The verdict is the worst of them.

What to do about each finding is decided here too (`advice`, `next_steps`),
so that inspect, prepare, transcribe and validate give the same advice, and
only advise `prepare` for what prepare really changes.
"""

from __future__ import annotations

import shlex
from dataclasses import dataclass

from ..errors import EXIT_BAD_INPUT, EXIT_NEEDS_FIX, EXIT_OK

WORKS = "works"
NEEDS_PREPARE = "needs_prepare"
NEEDS_WINDOW = "needs_window"
CANNOT_WORK = "cannot_work"

VERDICT_TEXT = {
    WORKS: "works in sherpa-onnx as is",
    NEEDS_PREPARE: "needs `sherpa-fixed prepare`",
    NEEDS_WINDOW: "needs the windowed recognizer (sherpa_fixed.OfflineRecognizer)",
    CANNOT_WORK: "cannot work",
}
VERDICT_EXIT = {WORKS: EXIT_OK, NEEDS_PREPARE: EXIT_NEEDS_FIX, NEEDS_WINDOW: EXIT_NEEDS_FIX,
                CANNOT_WORK: EXIT_BAD_INPUT}
_RANK = {WORKS: 0, NEEDS_PREPARE: 1, NEEDS_WINDOW: 2, CANNOT_WORK: 3}


@dataclass
class Finding:
    severity: str  # error | warning | info
    code: str
    message: str
    fix: str | None = None  # prepare | window | user | none
    file: str | None = None

    def to_json(self) -> dict:
        return {"severity": self.severity, "code": self.code, "message": self.message, "fix": self.fix,
                "advice": advice(self), "file": self.file}


@dataclass
class Verdict:
    code: str
    reasons: list[str]

    @property
    def exit_code(self) -> int:
        return VERDICT_EXIT[self.code]

    @property
    def text(self) -> str:
        return VERDICT_TEXT[self.code]

    def to_json(self) -> dict:
        return {"code": self.code, "text": self.text, "exit_code": self.exit_code, "reasons": self.reasons}


def verdict_of(findings: list[Finding]) -> Verdict:
    errors = [f for f in findings if f.severity == "error"]
    code = WORKS
    for f in errors:
        this = {"none": CANNOT_WORK, "window": NEEDS_WINDOW, "prepare": NEEDS_PREPARE}.get(f.fix or "", WORKS)
        if f.fix == "user":
            this = NEEDS_PREPARE
        if _RANK[this] > _RANK[code]:
            code = this
    reasons = [f.message for f in errors if
               {"none": CANNOT_WORK, "window": NEEDS_WINDOW}.get(f.fix or "", NEEDS_PREPARE) == code] or \
              [f.message for f in errors]
    return Verdict(code, reasons[:5])


def worst(verdicts: list[Verdict]) -> Verdict:
    if not verdicts:
        return Verdict(CANNOT_WORK, ["no complete encoder/decoder/joiner set"])
    top = max(verdicts, key=lambda v: _RANK[v.code])
    reasons: list[str] = []
    for v in verdicts:
        if v.code == top.code:
            reasons += [r for r in v.reasons if r not in reasons]
    return Verdict(top.code, reasons[:5])


# ----------------------------------------------------------------------------- advice

PREPARE_ADVICE = "run: sherpa-fixed prepare {folder} --output {prepared}"
WINDOW_ADVICE = ("decode with sherpa_fixed.OfflineRecognizer (same API as sherpa_onnx), or for stock sherpa-onnx "
                 "run: sherpa-fixed prepare {folder} --window --output {windowed}")
BOTH_ADVICE = ("run: sherpa-fixed prepare {folder} --window --output {windowed} (stock sherpa-onnx then "
               "decodes any length; or prepare without --window and decode with sherpa_fixed.OfflineRecognizer)")
TOKENS_ADVICE = ("take tokens.txt from the same export as the models, or fix it: one 'piece id' per line, ids 0..N "
                 "each once, '<blk> N' last, N + 1 lines for a decoder with N + 1 embedding rows")
SAME_EXPORT = "use encoder, decoder, joiner and tokens.txt from one export of one model"
REEXPORT = "re-export the model, or re-download the folder"

# Problems prepare refuses (fix "none"): what does fix them. Keys are finding codes or code prefixes.
SOURCE_ADVICE = {
    "tokens.missing": "copy tokens.txt from the export into the folder",
    "tokens.": TOKENS_ADVICE,
    "external.missing": "the weights file is missing: " + REEXPORT,
    "external.truncated": "the weights file is incomplete: " + REEXPORT,
    "external.length_mismatch": "the graph and its weights disagree: " + REEXPORT,
    "external.no_location": REEXPORT,
    "external.bad_field": REEXPORT,
    "external.outside": "sherpa-fixed reads only files inside the model folder; put the weights file beside the "
                        "model (re-download or re-export it)",  # as prepare's refusal says it (refuse_outside)
    "model.role": SAME_EXPORT,
    "model.mismatch": SAME_EXPORT,
    "variants.mismatch": "keep only one model's files in the folder (" + SAME_EXPORT + ")",
    "encoder.signature": "not a NeMo transducer encoder: export one with NeMo's encoder.export() "
                         "(sherpa-onnx scripts/nemo)",
    "encoder.channels_last": "not a NeMo FastConformer encoder (mel bins last): export one with NeMo's "
                             "encoder.export() (sherpa-onnx scripts/nemo)",
}


def command_paths(folder: str) -> dict[str, str]:
    """The folder and the outputs the advice names, quoted for a POSIX shell (a path may hold spaces)."""
    return {"folder": shlex.quote(folder), "prepared": shlex.quote(folder + "-prepared"),
            "windowed": shlex.quote(folder + "-windowed")}


def advice(f: Finding, folder: str = "MODEL_DIR") -> str | None:
    """The step that fixes this finding, runnable as written; None when nothing needs doing."""
    if f.fix == "prepare":
        return PREPARE_ADVICE.format(**command_paths(folder))
    if f.fix == "window":
        return WINDOW_ADVICE.format(**command_paths(folder))
    if f.fix == "none":
        if f.code.startswith("model.mismatch") and "tokens.txt" in f.message:
            return TOKENS_ADVICE  # a count from tokens.txt disagrees with the graphs
        for key in sorted(SOURCE_ADVICE, key=len, reverse=True):
            if f.code == key or (key.endswith(".") and f.code.startswith(key)):
                return SOURCE_ADVICE[key]
        return REEXPORT
    return None


def next_steps(findings: list[Finding], folder: str) -> list[str]:
    """What to do, in order: fixes at the source first (prepare refuses those), then prepare, then windows.

    `prepare` is named only when no error remains that prepare refuses (it refuses the whole folder
    then); after fixes at the source the next step is to look again, since what prepare would change
    depends on the repaired files (a bad tokens.txt also makes the measured vocabulary wrong).
    """
    errors = [f for f in findings if f.severity == "error"]
    source = list(dict.fromkeys(advice(f, folder) for f in errors if f.fix == "none"))
    prepare = any(f.fix == "prepare" for f in errors)
    window = any(f.fix == "window" for f in errors)
    if prepare and window:  # prepare --window writes the metadata fixes too
        step = BOTH_ADVICE
    elif prepare or window:
        step = PREPARE_ADVICE if prepare else WINDOW_ADVICE
    else:
        return source
    if source:  # what prepare would then do depends on the repaired files: look again first
        return [*source, f"then check again: sherpa-fixed inspect {shlex.quote(folder)}"]
    return [step.format(**command_paths(folder))]


def report_steps(report) -> list[str]:
    """next_steps for an inspect report (FolderReport), every model set at once.

    prepare takes a folder and finds the files itself: when the inspected files are not all in
    the report's folder (loose files, --encoder from elsewhere), a prepare step would rewrite
    other files, so the advice first gathers them into one folder.
    """
    import os

    root = report.layout.root
    steps = next_steps([f for v in report.variants for f in v.findings], str(root))
    used = [p for v in report.variants for p in (m.graph.path for m in v.models.values())]
    used += [report.layout.tokens] if report.layout.tokens else []
    here = os.path.abspath(root)  # not resolved: a Hugging Face snapshot's links point into blobs/
    scattered = any(os.path.dirname(os.path.abspath(p)) != here for p in used)
    if scattered and any("sherpa-fixed prepare" in s for s in steps):
        steps = ["copy the encoder, decoder, joiner and tokens.txt inspected here into one folder FOLDER "
                 "(prepare takes a folder and finds the files in it)",
                 *next_steps([f for v in report.variants for f in v.findings], "FOLDER")]
    return steps


def advice_for(paths, **files) -> list[str]:
    """next_steps for a folder (or loose files, with encoder=... as inspect takes them), inspected afresh.

    For callers that met a refusal without a report at hand (the recognizer's preflight, transcribe):
    reads graphs and tokens only, never weights.
    """
    from .inspector import inspect_folder  # inspector builds on this module

    return report_steps(inspect_folder(paths, **files))
