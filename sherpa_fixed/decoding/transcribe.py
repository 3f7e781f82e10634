"""Transcribe WAV files with the drop-in recognizer: text, JSON with timestamps, or SRT.

One bad file (missing, empty, too short for one feature frame, corrupt, not
audio) yields an error entry for that file and the others go on. Digital
silence is not an error: sherpa-onnx decodes it, to an empty transcript.
"""

from __future__ import annotations

import contextlib
import itertools
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

from ..errors import BadInputError, SherpaFixedError
from ..safety.atomic import ensure_folder, sweep_stale, write_file
from ..safety.lock import folder_lock
from .audio import check_length, wav_blocks, wav_info

FRAME_S = 0.08  # a token's span when the model gives no duration (one encoder output frame)


@dataclass
class FileResult:
    path: str
    ok: bool
    error: str | None = None
    text: str = ""
    tokens: list[str] = field(default_factory=list)
    timestamps: list[float] = field(default_factory=list)
    durations: list[float] = field(default_factory=list)
    audio_seconds: float = 0.0
    decode_seconds: float = 0.0
    sample_rate: int | None = None
    channels: int | None = None
    decode_failed: bool = False  # sherpa-onnx itself raised: maybe the model, not this file (model_problem)

    @property
    def rtf(self) -> float | None:
        return self.decode_seconds / self.audio_seconds if self.audio_seconds else None

    def to_json(self) -> dict:
        return {"file": self.path, "ok": self.ok, "error": self.error, "text": self.text, "tokens": self.tokens,
                "timestamps": [round(t, 3) for t in self.timestamps],
                "durations": [round(d, 3) for d in self.durations],
                "audio_seconds": round(self.audio_seconds, 3), "decode_seconds": round(self.decode_seconds, 3),
                "real_time_factor": None if self.rtf is None else round(self.rtf, 4),
                "sample_rate": self.sample_rate, "channels": self.channels}


def open_recognizer(model_dir: str | Path, **kwargs):
    """OfflineRecognizer.from_model_dir, with sherpa-onnx's load failures turned into advice.

    onnxruntime raises a bare RuntimeError on, e.g., a truncated or missing weights file; the
    inspector knows what fixes those (findings.next_steps), so the user gets that instead.
    """
    from ..errors import BadInputError
    from ..reading.findings import advice_for
    from .recognizer import OfflineRecognizer

    try:
        return OfflineRecognizer.from_model_dir(model_dir, **kwargs)
    except RuntimeError as exc:
        steps = advice_for(model_dir)
        if not steps:
            raise  # nothing the inspector can name: a bug to report, with its traceback
        raise BadInputError(f"sherpa-onnx could not load the model: {one_line(exc)}", path=model_dir,
                            fix="; ".join(steps)) from exc


def model_problem(model_dir: str | Path, failed: FileResult):
    """A BadInputError for the model when inspect says the folder itself needs fixing, else None.

    sherpa-onnx raises the same RuntimeError for a file it cannot decode and for a model it loaded
    but cannot run (e.g. no feat_dim metadata on a 128-mel encoder: every file fails); only the
    second makes the whole run hopeless (exit 2, with inspect's advice).
    """
    from ..errors import BadInputError
    from ..reading.findings import advice_for

    steps = advice_for(model_dir) if failed.decode_failed else []
    if not steps:
        return None
    why = (failed.error or "").split(": sherpa-onnx failed on this file: ", 1)[-1]
    return BadInputError(f"the model cannot decode {failed.path}: {why}",
                         path=model_dir, fix="; ".join(steps))


def one_line(exc: BaseException) -> str:
    """An exception's text on one line (onnxruntime's messages span several)."""
    return " ".join(str(exc).split()) or type(exc).__name__


def transcribe_file(recognizer, path: str | Path,
                    progress: Callable[[int, int], None] | None = None) -> FileResult:
    """Decode one WAV file, read and fed in blocks (a long file is never whole in memory: the drop-in's
    stream windows it as it arrives); a bad file gives a FileResult with its error, never an exception."""
    try:
        info = wav_info(path)
        if info.frames == 0:
            raise BadInputError("audio is empty (no samples)", path=path)
        check_length(info.frames, info.sample_rate, path)
    except SherpaFixedError as exc:
        return FileResult(str(path), False, exc.one_line())
    t = time.perf_counter()
    stream = recognizer.create_stream()
    if progress is not None and hasattr(stream, "on_progress"):
        stream.on_progress = progress
    try:
        for block in wav_blocks(info):
            stream.accept_waveform(info.sample_rate, block)
        recognizer.decode_stream(stream)
    except SherpaFixedError as exc:
        return FileResult(str(path), False, exc.one_line())
    except RuntimeError as exc:  # onnxruntime inside sherpa-onnx: this file's input, or the model (model_problem)
        return FileResult(str(path), False, f"{path}: sherpa-onnx failed on this file: {one_line(exc)}",
                          decode_failed=True)
    elapsed = time.perf_counter() - t
    r = stream.result
    return FileResult(str(path), True, None, r.text, list(r.tokens), list(r.timestamps),
                      list(getattr(r, "durations", []) or []), info.seconds, elapsed, info.sample_rate,
                      info.channels)


@contextlib.contextmanager
def output_folder(path: str | Path) -> Iterator[Callable[[str, str], None]]:
    """`transcribe -o DIR`: the folder created (a clear line when it cannot be), held by this run alone
    (safety/lock.py), and a `write(name, text)` that replaces each file atomically (temp file, fsync,
    rename): a killed run leaves every transcript whole, old or new."""
    folder = ensure_folder(Path(path))
    with folder_lock(folder):
        sweep_stale(folder)

        def write(name: str, text: str) -> None:
            write_file(folder / name, text.encode("utf-8"))

        yield write


def transcript_document(model: str | Path, results: list[FileResult]) -> dict:
    """The `transcribe --json` object: one entry per file, failed ones with their error."""
    return {"schema": "sherpa-fixed/transcribe", "schema_version": 1, "model": str(model),
            "files": [r.to_json() for r in results]}


# ----------------------------------------------------------------------------- subtitles


@dataclass
class Word:
    text: str
    start: float
    end: float


def words(result: FileResult) -> list[Word]:
    """Words from BPE tokens: a token starting with a space (sherpa-onnx's rendering of "▁") opens one."""
    out: list[Word] = []
    for i, (tok, ts) in enumerate(zip(result.tokens, result.timestamps, strict=False)):
        dur = result.durations[i] if i < len(result.durations) and result.durations[i] > 0 else FRAME_S
        if not out or tok.startswith(" "):
            out.append(Word(tok.strip(), ts, ts + dur))
        else:
            out[-1].text += tok
            out[-1].end = max(out[-1].end, ts + dur)
    for a, b in itertools.pairwise(out):
        a.end = min(a.end, b.start) if b.start > a.start else a.end
    return [w for w in out if w.text]


def _stamp(seconds: float) -> str:
    ms = max(0, round(seconds * 1000))
    h, ms = divmod(ms, 3_600_000)
    m, ms = divmod(ms, 60_000)
    s, ms = divmod(ms, 1000)
    return f"{h:02d}:{m:02d}:{s:02d},{ms:03d}"


def to_srt(result: FileResult, max_chars: int = 42, max_seconds: float = 5.0, max_gap: float = 1.0) -> str:
    """SubRip cues of at most max_chars characters and max_seconds, split at pauses over max_gap."""
    cues: list[list[Word]] = []
    for w in words(result):
        if cues:
            cur = cues[-1]
            text_len = len(" ".join(x.text for x in cur)) + 1 + len(w.text)
            if text_len <= max_chars and w.end - cur[0].start <= max_seconds and w.start - cur[-1].end <= max_gap:
                cur.append(w)
                continue
        cues.append([w])
    blocks = []
    for i, cue in enumerate(cues, 1):
        end = max(cue[-1].end, cue[0].start + 0.3)
        if i < len(cues):
            end = min(end, cues[i][0].start)
        blocks.append(f"{i}\n{_stamp(cue[0].start)} --> {_stamp(end)}\n{' '.join(w.text for w in cue)}\n")
    return "\n".join(blocks)
