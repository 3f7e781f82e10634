"""One input file to one output line: the work every worker does, local process or Ray actor alike.

Local workers and Ray actors call the same two functions (load_recognizer once, decode_item per
file), so both runners write the same line for the same file. A file that cannot be read or decoded
gets a line with an `error` field instead of `pred_text`; nothing a single file does stops the run.
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import asdict, dataclass

from ..errors import SherpaFixedError
from .audio import check_length, declared, mono_blocks, open_audio
from .inputs import Item

# Fields this command writes. An input line's own fields of these names are replaced, so a previous
# output can be the input of a new run.
PRED_TEXT, ERROR, BOOKKEEPING = "pred_text", "error", "sherpa_fixed"
OURS = (PRED_TEXT, ERROR, BOOKKEEPING, "pred_tokens", "pred_timestamps", "pred_durations")


@dataclass(frozen=True)
class ModelConfig:
    """How each worker loads its recognizer (OfflineRecognizer.from_model_dir keyword arguments)."""

    model_dir: str  # absolute: workers may run elsewhere (Ray), with another working directory
    num_threads: int = 1
    int8: bool | None = None
    provider: str = "cpu"
    window_seconds: float | None = None
    overlap_seconds: float | None = None
    timestamps: bool = False  # also write pred_tokens, pred_timestamps (and pred_durations for TDT)

    def to_json(self) -> dict:
        return asdict(self)


@dataclass
class Result:
    """A decoded (or failed) input, with its output line ready to append."""

    key: str
    line: str  # one JSON object, no newline
    ok: bool
    audio_seconds: float = 0.0
    decode_seconds: float = 0.0
    decode_failed: bool = False  # sherpa-onnx itself raised: maybe the model, not this file
    path: str = ""
    error: str | None = None

    def to_json(self) -> dict:
        return asdict(self)


def load_recognizer(config: ModelConfig):
    """The drop-in recognizer for this config (load failures become advice: transcribe.open_recognizer)."""
    from ..decoding.transcribe import open_recognizer

    return open_recognizer(config.model_dir, int8=config.int8, provider=config.provider,
                           num_threads=config.num_threads, window_seconds=config.window_seconds,
                           overlap_seconds=config.overlap_seconds)


def decode_item(recognizer, item: Item, timestamps: bool = False) -> Result:
    """Read item's file block by block into one stream, decode it, and build its output line."""
    from ..decoding.transcribe import one_line

    t = time.perf_counter()
    seconds = 0.0
    try:
        with open_audio(item.path) as f:
            d = declared(f)
            check_length(d, item.path)
            stream = recognizer.create_stream()
            for block in mono_blocks(f, item.path):
                seconds += len(block) / d.sample_rate
                stream.accept_waveform(d.sample_rate, block)
        recognizer.decode_stream(stream)
    except SherpaFixedError as exc:
        return failure(item, exc.one_line(), seconds, time.perf_counter() - t)
    except RuntimeError as exc:  # onnxruntime inside sherpa-onnx: this file's input, or the model itself
        return failure(item, f"{item.path}: sherpa-onnx failed on this file: {one_line(exc)}", seconds,
                       time.perf_counter() - t, decode_failed=True)
    except Exception as exc:  # a bug in sherpa-fixed: one line for this file, and the run goes on
        return failure(item, f"{item.path}: internal error, please report it: {type(exc).__name__}: {one_line(exc)}",
                       seconds, time.perf_counter() - t)
    r = stream.result
    elapsed = time.perf_counter() - t
    line = _base(item)
    line[PRED_TEXT] = r.text
    if timestamps:
        line["pred_tokens"] = list(r.tokens)
        line["pred_timestamps"] = [round(x, 3) for x in r.timestamps]
        durations = list(getattr(r, "durations", []) or [])
        if durations:
            line["pred_durations"] = [round(x, 3) for x in durations]
    return _finish(item, line, True, seconds, elapsed)


def failure(item: Item, error: str, seconds: float = 0.0, elapsed: float = 0.0, *,
            decode_failed: bool = False) -> Result:
    line = _base(item)
    line[ERROR] = error
    return _finish(item, line, False, seconds, elapsed, decode_failed=decode_failed, error=error)


def _base(item: Item) -> dict:
    return {k: v for k, v in item.fields.items() if k not in OURS}


def _finish(item: Item, line: dict, ok: bool, seconds: float, elapsed: float, *, decode_failed: bool = False,
            error: str | None = None) -> Result:
    if ok and "duration" not in line:
        line["duration"] = round(seconds, 3)  # NeMo's loaders need it; a folder's files have none
    line[BOOKKEEPING] = {"key": item.key, "audio_seconds": round(seconds, 3), "decode_seconds": round(elapsed, 3),
                         "worker": f"{os.uname().nodename}:{os.getpid()}"}
    text = json.dumps(line, ensure_ascii=False, allow_nan=False)
    return Result(item.key, text, ok, seconds, elapsed, decode_failed, item.path, error)
