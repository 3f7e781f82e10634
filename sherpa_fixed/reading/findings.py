"""Findings and the verdict they add up to.

Each finding says who can fix it: `prepare` (sherpa-fixed rewrites the
folder), `window` (the encoder's time axis is really fixed: the windowed
recognizer, or `prepare --window`), `user` (a call-site choice), or `none`
(the input itself is broken). The verdict is the worst of them.
"""

from __future__ import annotations

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
                "file": self.file}


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
