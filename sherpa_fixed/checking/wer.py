"""Word error rate against a reference transcript: substitutions, deletions, insertions, standard errors.

The alignment is jiwer's (a minimum-edit-distance word alignment on
RapidFuzz); this module adds the normalisation both sides get (case,
punctuation, Unicode forms) and the statistics a comparison of decode
paths needs. jiwer is not a runtime dependency of sherpa-fixed (it is in
the `test` extra): only WER reporting needs it, and it says how to get it.

Standard errors are over independent units (clips, or recordings), not
words: errors cluster within a recording (one voice, one noise), so the
binomial sqrt(p(1-p)/N) understates the uncertainty of a corpus WER. For
two decode paths on the same audio, `paired_standard_error` gives the
uncertainty of their difference, which is what says whether a 1-point gap
is real.
"""

from __future__ import annotations

import math
import re
import unicodedata
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from ..errors import BadInputError, SherpaFixedError
from ..safety.bounded import read_text_bounded

_NON_WORD = re.compile(r"[^\w']+")
_EDGE_QUOTES = re.compile(r"(^'+|'+$)")


class JiwerMissingError(SherpaFixedError):
    """WER needs jiwer, which is optional."""


def _jiwer():
    try:
        import jiwer
    except ImportError as exc:
        raise JiwerMissingError("word error rate needs the jiwer package, which is not installed",
                                fix='pip install jiwer (or: pip install "sherpa-fixed[test]")') from exc
    return jiwer


def normalize(text: str) -> str:
    """Lower case, punctuation and underscores to spaces, apostrophes kept inside words ("don't")."""
    text = unicodedata.normalize("NFKC", text).lower().replace("\u2019", "'").replace("_", " ")
    words = (_EDGE_QUOTES.sub("", w) for w in _NON_WORD.sub(" ", text).split())
    return " ".join(w for w in words if w)


@dataclass(frozen=True)
class WordErrors:
    """Edit counts of a hypothesis against a reference of `words` words."""

    substitutions: int = 0
    deletions: int = 0
    insertions: int = 0
    words: int = 0

    @property
    def errors(self) -> int:
        return self.substitutions + self.deletions + self.insertions

    @property
    def wer(self) -> float | None:
        return self.errors / self.words if self.words else None

    def __add__(self, other: WordErrors) -> WordErrors:
        return WordErrors(self.substitutions + other.substitutions, self.deletions + other.deletions,
                          self.insertions + other.insertions, self.words + other.words)

    def to_json(self) -> dict:
        return {"wer": None if self.wer is None else round(self.wer, 6), "substitutions": self.substitutions,
                "deletions": self.deletions, "insertions": self.insertions, "reference_words": self.words}

    def line(self) -> str:
        rate = "n/a" if self.wer is None else f"{100 * self.wer:.2f} %"
        return (f"WER {rate} ({self.substitutions} substituted, {self.deletions} deleted, {self.insertions} "
                f"inserted; {self.words} reference words)")


def word_errors(reference: str, hypothesis: str) -> WordErrors:
    """Align one hypothesis with its reference, both normalised."""
    ref, hyp = normalize(reference), normalize(hypothesis)
    if not ref:
        return WordErrors(insertions=len(hyp.split()))
    o = _jiwer().process_words(ref, hyp)
    return WordErrors(o.substitutions, o.deletions, o.insertions, len(ref.split()))


def total(items: Sequence[WordErrors]) -> WordErrors:
    out = WordErrors()
    for i in items:
        out = out + i
    return out


def standard_error(items: Sequence[WordErrors]) -> float | None:
    """Standard error of the corpus WER sum(errors)/sum(words), treating each item as one sample.

    The delta-method (ratio estimator) error: sqrt(k/(k-1) * sum((e_i - W n_i)^2)) / N."""
    t = total(items)
    if len(items) < 2 or not t.words:
        return None
    w = t.errors / t.words
    k = len(items)
    return math.sqrt(k / (k - 1) * sum((i.errors - w * i.words) ** 2 for i in items)) / t.words


def paired_standard_error(a: Sequence[WordErrors], b: Sequence[WordErrors]) -> float | None:
    """Standard error of WER(a) - WER(b) when a[i] and b[i] are decodes of the same audio."""
    if len(a) != len(b):
        raise ValueError("paired items must be decodes of the same audio, one for one")
    n = sum(i.words for i in a)
    if len(a) < 2 or not n:
        return None
    d = [x.errors - y.errors for x, y in zip(a, b, strict=True)]
    diff = sum(d) / n
    k = len(a)
    return math.sqrt(k / (k - 1) * sum((di - diff * x.words) ** 2 for di, x in zip(d, a, strict=True))) / n


def read_reference(value: str) -> str:
    """A reference transcript given as text or as the path of a text file.

    A value naming an existing file is read (UTF-8). A single word that looks like a path (it
    ends in .txt or contains a path separator) but names no file is an error, so a typo in a
    file name is not scored as a transcript."""
    single = len(value.split()) == 1
    looks_like_path = single and (value.endswith(".txt") or "/" in value or "\\" in value)
    try:
        is_file = single and len(value) < 4096 and Path(value).is_file()
    except OSError:
        is_file = False
    if is_file:
        text = read_text_bounded(value, 64 << 20, what="reference transcript",
                                 why="a transcript of days of speech needs")
        if not normalize(text):
            raise BadInputError("the reference transcript file has no words", path=value)
        return text
    if looks_like_path:
        raise BadInputError("reference transcript file not found", path=value,
                            fix="give the transcript's text, or the path of an existing UTF-8 text file")
    if not normalize(value):
        raise BadInputError("the reference transcript has no words", fix="give the words that were spoken")
    return value


def references_for(values: Sequence[str], count: int) -> list[str]:
    """One reference per audio file, in order (TEXT or FILE each)."""
    if len(values) != count:
        raise BadInputError(f"{len(values)} reference transcript(s) for {count} audio file(s)",
                            fix="give --reference-text once per audio file, in the same order")
    return [read_reference(v) for v in values]


# ----------------------------------------------------------------------------- the CLI's --reference-text


def references_for_files(values: Sequence[str], count: int) -> list[str]:
    """`transcribe --reference-text`: checked (and jiwer found) before any audio is decoded."""
    refs = references_for(values, count)
    _jiwer()
    return refs


def reference_for_audio(value: str, audio: str | None) -> str:
    """`validate --reference-text`: the transcript of --audio (the generated tones have no words)."""
    if audio is None:
        raise BadInputError("--reference-text needs --audio: the default generated audio is tones, not words",
                            fix="add --audio WAV with the recording the transcript belongs to")
    ref = read_reference(value)
    _jiwer()
    return ref


def _score(hypothesis: str | None, reference: str) -> WordErrors | None:
    return None if hypothesis is None else word_errors(reference, hypothesis)


def transcribe_document_wer(doc: dict, references: Sequence[str] | None) -> dict:
    """Add "wer" to each file of a `transcribe --json` document (null when it failed) and a corpus total."""
    if not references:
        return doc
    scored_ = [_score(f["text"] if f["ok"] else None, ref) for f, ref in zip(doc["files"], references, strict=True)]
    for f, e in zip(doc["files"], scored_, strict=True):
        f["wer"] = None if e is None else e.to_json()
    done = [e for e in scored_ if e is not None]
    doc["wer"] = dict(total(done).to_json(), files_scored=len(done), standard_error=standard_error(done))
    return doc


def transcribe_lines(paths: Sequence[str], texts: Sequence[str | None], references: Sequence[str]) -> str:
    """One WER line per file (and a total for several) for `transcribe --reference-text`."""
    scored_ = [_score(t, r) for t, r in zip(texts, references, strict=True)]
    lines = [f"{p}: " + ("not transcribed" if e is None else e.line()) for p, e in zip(paths, scored_, strict=True)]
    if len(paths) == 1:
        return lines[0].split(": ", 1)[1]
    done = [e for e in scored_ if e is not None]
    return "\n".join([*lines, f"all {len(done)} transcribed files: {total(done).line()}"])


def validate_document_wer(doc: dict, reference: str | None) -> dict:
    """Add "wer" to each decode of a `validate --json` document (null where sherpa-onnx refused the model)."""
    if reference is not None:
        for d in doc["decodes"]:
            e = _score(d.get("text"), reference)
            d["wer"] = None if e is None else e.to_json()
    return doc


def validate_lines(variants: Sequence[str], texts: Sequence[str | None], reference: str) -> str:
    """One WER line per model set (fp32, int8) for `validate --reference-text`."""
    return "\n".join(f"  [{v}] " + ("no transcript (sherpa-onnx refused the model)" if t is None
                                    else "sherpa-onnx transcript: " + word_errors(reference, t).line())
                     for v, t in zip(variants, texts, strict=True))
