"""Read audio files in blocks through soundfile (libsndfile): WAV, FLAC, OGG/Vorbis, Opus, MP3.

libsndfile comes inside the soundfile wheel from the package registry (no system package). Files
are opened without blocking and must be regular files (a FIFO or a device would block the worker or
never end), then read in blocks of about BLOCK_SAMPLES samples and mixed down to mono, so a
half-hour recording never sits in memory whole here: each block goes straight into the recognizer's
stream at the file's own rate (the stream resamples and windows).

Work is bounded by what the file declares: at most its declared frame count (plus a little slack for
MP3, whose count is an estimate) is ever read; a file that would decode to more, or ends well short of
its declaration (a truncated FLAC or MP3), is an error for that file, never a silent partial
transcript. Truncated WAV files declare what they hold (libsndfile counts the data present).
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np

from ..decoding.audio import model_rate_samples
from ..errors import BadInputError
from ..safety.bounded import open_regular

BLOCK_SAMPLES = 1 << 18  # samples per read, all channels together (1 MiB of float32)
MIN_RATE, MAX_RATE = 1000, 768_000
MAX_CHANNELS = 256


@dataclass(frozen=True)
class Declared:
    sample_rate: int
    channels: int
    frames: int
    format: str  # e.g. "FLAC/PCM_16"

    @property
    def seconds(self) -> float:
        return self.frames / self.sample_rate


def _soundfile():
    import soundfile

    return soundfile


@contextlib.contextmanager
def open_audio(path: str | os.PathLike) -> Iterator:
    """An open soundfile.SoundFile of a regular file, its declaration checked; BadInputError otherwise.

    libsndfile reads through a Python file object (its virtual I/O), so the descriptor is ours to
    close whatever libsndfile makes of the bytes."""
    sf = _soundfile()
    with open_regular(path, what="audio file") as raw:
        if os.fstat(raw.fileno()).st_size == 0:
            raise BadInputError("audio file is empty (0 bytes)", path=path)
        try:
            f = sf.SoundFile(raw)
        except (sf.SoundFileError, RuntimeError, TypeError, ValueError) as exc:
            raise BadInputError(f"not audio that libsndfile can read ({_reason(exc)})", path=path,
                                fix="WAV, FLAC, OGG/Vorbis, Opus and MP3 are read; convert others, e.g. "
                                    "ffmpeg -i INPUT out.flac") from exc
        with f:
            d = declared(f)
            if not MIN_RATE <= d.sample_rate <= MAX_RATE:
                raise BadInputError(f"sample rate {d.sample_rate} Hz is outside {MIN_RATE}-{MAX_RATE} Hz", path=path)
            if not 1 <= d.channels <= MAX_CHANNELS:
                raise BadInputError(f"{d.channels} channels (1 to {MAX_CHANNELS} are read)", path=path)
            if d.frames <= 0:
                raise BadInputError("audio is empty (no samples)", path=path)
            yield f


def declared(f) -> Declared:
    return Declared(int(f.samplerate), int(f.channels), int(f.frames), f"{f.format}/{f.subtype}")


def _reason(exc: BaseException) -> str:
    text = " ".join(str(exc).split())
    return text.split(": ", 1)[-1] if text.startswith("Error opening") else text or type(exc).__name__


def slack(d: Declared) -> int:
    """Frames an MP3 may decode beyond or short of its declared (estimated) count: 1 % or 0.5 s."""
    return max(d.frames // 100, d.sample_rate // 2)


def mono_blocks(f, path: str | os.PathLike) -> Iterator[np.ndarray]:
    """float32 mono blocks of the whole file, at most its declared length (+ slack); errors name the file."""
    sf = _soundfile()
    d = declared(f)
    limit = d.frames + slack(d)
    per_read = max(1024, BLOCK_SAMPLES // d.channels)
    done = 0
    while done < limit:
        try:
            block = f.read(min(per_read, limit - done), dtype="float32", always_2d=True)
        except (sf.SoundFileError, RuntimeError) as exc:
            raise BadInputError(f"cannot decode the audio after {done / d.sample_rate:.2f} s ({_reason(exc)}); "
                                "the file is damaged or truncated", path=path) from exc
        if len(block) == 0:
            break
        done += len(block)
        mono = block.mean(axis=1, dtype=np.float32) if d.channels > 1 else np.ascontiguousarray(block[:, 0])
        if not np.all(np.isfinite(mono)):
            raise BadInputError("audio contains NaN or infinite samples", path=path, fix="re-export the audio")
        yield mono
    if done >= limit and len(f.read(1, dtype="float32")):
        raise BadInputError(f"decodes to more audio than the {d.seconds:.2f} s its header declares", path=path,
                            fix="re-encode the file")
    if done < d.frames - slack(d):
        raise BadInputError(f"ends after {done / d.sample_rate:.2f} s of the {d.seconds:.2f} s its header declares "
                            "(truncated or damaged)", path=path, fix="re-encode or re-download the file")


def check_length(d: Declared, path: str | os.PathLike, model_rate: int = 16000, frame_shift_ms: float = 10.0) -> None:
    """Refuse audio too short for one feature frame (decoding.audio.check_decodable, from the declaration)."""
    shift = round(model_rate * frame_shift_ms / 1000)
    need = shift - shift // 2
    if model_rate_samples(d.frames, d.sample_rate, model_rate) < need:
        raise BadInputError(f"audio too short to decode: {d.frames} samples at {d.sample_rate} Hz "
                            f"({d.seconds * 1000:.1f} ms); one feature frame needs {need / model_rate * 1000:g} ms",
                            path=path, fix="check that the file was written completely")
