"""Compare decode paths by word error rate on the same audio (the accuracy benchmark and its CI guard).

A *set* is a folder made by speechgen.py (or the shared set A): long.json and
short.json list files with their reference transcripts. A *path* is any way
of turning samples into text: stock sherpa-onnx on the whole utterance, the
drop-in recognizer at some window settings, a fixed-window encoder through
the chunker or through `prepare --window`, int8, the Python baseline. Every
path decodes exactly the same samples, so differences between paths are
differences of decoding, and the paired standard error (wer.py) says
whether they are larger than chance.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..decoding.audio import read_wav, resample
from ..errors import BadInputError
from ..safety.bounded import read_text_bounded
from .wer import WordErrors, paired_standard_error, standard_error, total, word_errors

SR = 16000
Decoder = Callable[[np.ndarray], str]  # 16 kHz float32 samples -> text


@dataclass
class Utterance:
    file: str
    text: str
    samples: np.ndarray
    unseen: bool | None = None

    @property
    def seconds(self) -> float:
        return len(self.samples) / SR


def _read(path: Path) -> np.ndarray:
    if path.suffix.lower() == ".flac":  # the shared set A is FLAC; soundfile is not a dependency
        try:
            import soundfile
        except ImportError as exc:
            raise BadInputError("reading FLAC needs the soundfile package", path=path,
                                fix="pip install soundfile, or convert the set to WAV") from exc
        x, rate = soundfile.read(str(path), dtype="float32")
        x = x.mean(axis=1) if x.ndim == 2 else x
    else:
        a = read_wav(path)
        x, rate = a.samples, a.sample_rate
    return resample(x, rate, SR) if rate != SR else np.asarray(x, np.float32)


def load_set(folder: str | os.PathLike, kind: str) -> list[Utterance]:
    """The `kind` ("long" or "short") files of a set folder, with their reference texts."""
    folder = Path(folder)
    manifest = folder / f"{kind}.json"
    if not manifest.is_file():
        raise BadInputError(f"no {kind}.json in the set folder", path=folder,
                            fix="make a set with: python -m sherpa_fixed.checking.speechgen OUT --seed N")
    items = json.loads(read_text_bounded(manifest, 64 << 20, what="set manifest"))
    return [Utterance(it["file"], it["text"], _read(folder / it["file"]),
                      it.get("unseen_voice")) for it in items]


def transducer_files(folder: str | os.PathLike, variant: str = "") -> dict:
    """from_transducer keyword arguments for encoder/decoder/joiner{variant}.onnx and tokens.txt."""
    folder = Path(folder)
    files = {role: str(folder / f"{role}{variant}.onnx") for role in ("encoder", "decoder", "joiner")}
    return dict(files, tokens=str(folder / "tokens.txt"), model_type="nemo_transducer",
                decoding_method="greedy_search")


def recognizer_decoder(recognizer) -> Decoder:
    """decode(samples) with any sherpa-onnx-style recognizer: one stream per utterance."""

    def decode(samples: np.ndarray) -> str:
        s = recognizer.create_stream()
        s.accept_waveform(SR, samples)
        recognizer.decode_stream(s)
        return s.result.text

    return decode


def windowed_model(static_folder: str | os.PathLike, out: str | os.PathLike, **kwargs) -> Path:
    """`sherpa-fixed prepare --window` of a fixed-window model folder, made afresh (a second or so),
    so the numbers are always those of the current rewrite."""
    from ..rewriting.prepare import prepare_folder

    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    result = prepare_folder(static_folder, output=out, window=True, force=True, **kwargs)
    if result.exit_code != 0:
        raise RuntimeError(f"prepare --window failed: {result.to_json()}")
    return out


@dataclass
class PathResult:
    """One decode path on one list of utterances."""

    name: str
    hypotheses: list[str]
    errors: list[WordErrors]
    decode_seconds: float = 0.0

    @property
    def total(self) -> WordErrors:
        return total(self.errors)

    @property
    def wer(self) -> float:
        return self.total.wer or 0.0

    @property
    def standard_error(self) -> float | None:
        return standard_error(self.errors)


def run_path(name: str, decode: Decoder, utterances: Sequence[Utterance]) -> PathResult:
    import time

    t = time.perf_counter()
    hyps = [decode(u.samples) for u in utterances]
    elapsed = time.perf_counter() - t
    return PathResult(name, hyps, [word_errors(u.text, h) for u, h in zip(utterances, hyps, strict=True)], elapsed)


def scored(name: str, hypotheses: Sequence[str], utterances: Sequence[Utterance],
           decode_seconds: float = 0.0) -> PathResult:
    """A PathResult for texts decoded elsewhere (another process, a binary)."""
    errs = [word_errors(u.text, h) for u, h in zip(utterances, hypotheses, strict=True)]
    return PathResult(name, list(hypotheses), errs, decode_seconds)


def delta(result: PathResult, reference: PathResult) -> tuple[float, float | None]:
    """WER(result) - WER(reference) in points, and its paired standard error in points."""
    se = paired_standard_error(result.errors, reference.errors)
    return 100 * (result.wer - reference.wer), None if se is None else 100 * se


def markdown_table(results: Sequence[PathResult], reference: PathResult, audio_seconds: float) -> str:
    """One row per path: WER, S/D/I, the corpus SE, and the paired difference from the reference."""
    n = reference.total.words
    lines = [f"{len(reference.errors)} files, {audio_seconds / 60:.1f} min, {n} words",
             "", "| path | WER % | ± SE | sub | del | ins | Δ vs whole (points) | ± paired SE | decode s |",
             "|---|---|---|---|---|---|---|---|---|"]
    for r in results:
        t = r.total
        se = r.standard_error
        d, dse = delta(r, reference)
        lines.append(f"| {r.name} | {100 * r.wer:.2f} | {'' if se is None else f'{100 * se:.2f}'} | "
                     f"{t.substitutions} | {t.deletions} | {t.insertions} | "
                     f"{'—' if r is reference else f'{d:+.2f}'} | "
                     f"{'' if r is reference or dse is None else f'{dse:.2f}'} | {r.decode_seconds:.1f} |")
    return "\n".join(lines)
