"""Read WAV files and resample, in numpy, with errors a user can act on.

The standard library's `wave` reads neither float WAV nor (before 3.12)
WAVE_FORMAT_EXTENSIBLE, so RIFF chunks are walked here: 8/16/24/32-bit PCM
and 32/64-bit float, any channel count (mixed down to mono by averaging).

The resampler is a windowed-sinc (Hann) band-limited interpolator with the
same design parameters as the one sherpa-onnx uses internally (cutoff at
0.99 of the lower Nyquist, 6 zero crossings), written to run in blocks so a
long file never needs a second full-length copy in flight.
"""

from __future__ import annotations

import math
import struct
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..errors import BadInputError

PCM, IEEE_FLOAT, EXTENSIBLE = 1, 3, 0xFFFE
SILENCE_PEAK = 1e-5  # below this everything is numerically silent (under -100 dBFS)


@dataclass
class Audio:
    samples: np.ndarray  # float32 mono in [-1, 1]
    sample_rate: int
    channels: int
    path: Path | None = None

    @property
    def seconds(self) -> float:
        return len(self.samples) / self.sample_rate


def read_wav(path: str | Path) -> Audio:
    """Mono float32 samples of a WAV file; BadInputError naming the file and the fix otherwise."""
    path = Path(path)
    try:
        data = path.read_bytes()
    except FileNotFoundError as exc:
        raise BadInputError("audio file not found", path=path) from exc
    except IsADirectoryError as exc:
        raise BadInputError("is a folder, expected a WAV file", path=path) from exc
    except OSError as exc:
        raise BadInputError(f"cannot read ({exc.strerror})", path=path) from exc
    if not data:
        raise BadInputError("audio file is empty (0 bytes)", path=path)
    if len(data) < 12 or data[:4] not in (b"RIFF", b"RF64") or data[8:12] != b"WAVE":
        raise BadInputError("not a WAV file", path=path,
                            fix="convert it first, e.g. ffmpeg -i INPUT -ar 16000 -ac 1 out.wav")
    fmt = None
    payload = None
    pos = 12
    while pos + 8 <= len(data):
        cid, size = data[pos:pos + 4], struct.unpack("<I", data[pos + 4:pos + 8])[0]
        body = data[pos + 8:pos + 8 + size]
        if cid == b"fmt ":
            if len(body) < 16:
                raise BadInputError("corrupt WAV: short fmt chunk", path=path)
            tag, channels, rate, _, align, bits = struct.unpack("<HHIIHH", body[:16])
            if tag == EXTENSIBLE and len(body) >= 26:
                tag = struct.unpack("<H", body[24:26])[0]
            fmt = (tag, channels, rate, align, bits)
        elif cid == b"data":
            payload = body  # a truncated file gives a short body: we use what is there
            break
        pos += 8 + size + (size & 1)
    if fmt is None or payload is None:
        raise BadInputError("corrupt WAV: no " + ("fmt" if fmt is None else "data") + " chunk", path=path,
                            fix="re-export the audio")
    tag, channels, rate, align, bits = fmt
    if channels < 1 or rate < 1000 or align < 1:
        raise BadInputError(f"corrupt WAV header ({channels} channels, {rate} Hz)", path=path)
    usable = len(payload) // align * align
    payload = payload[:usable]
    if tag == PCM and bits in (8, 16, 24, 32):
        samples = _pcm(payload, bits)
    elif tag == IEEE_FLOAT and bits in (32, 64):
        samples = np.frombuffer(payload, dtype="<f4" if bits == 32 else "<f8").astype(np.float32)
    else:
        raise BadInputError(f"unsupported WAV encoding (format {tag}, {bits} bits)", path=path,
                            fix="convert to 16-bit PCM, e.g. ffmpeg -i INPUT -ar 16000 -ac 1 -c:a pcm_s16le out.wav")
    if samples.size == 0:
        raise BadInputError("audio is empty (no samples)", path=path)
    samples = samples.reshape(-1, channels)
    mono = samples.mean(axis=1, dtype=np.float32) if channels > 1 else samples[:, 0]
    if not np.all(np.isfinite(mono)):
        raise BadInputError("audio contains NaN or infinite samples", path=path, fix="re-export the audio")
    return Audio(np.ascontiguousarray(mono, dtype=np.float32), rate, channels, path)


def _pcm(payload: bytes, bits: int) -> np.ndarray:
    if bits == 8:
        return (np.frombuffer(payload, dtype=np.uint8).astype(np.float32) - 128.0) / 128.0
    if bits == 16:
        return np.frombuffer(payload, dtype="<i2").astype(np.float32) / 32768.0
    if bits == 32:
        return (np.frombuffer(payload, dtype="<i4").astype(np.float64) / 2147483648.0).astype(np.float32)
    raw = np.frombuffer(payload, dtype=np.uint8).reshape(-1, 3)
    ints = (raw[:, 0].astype(np.int32) | (raw[:, 1].astype(np.int32) << 8) | (raw[:, 2].astype(np.int32) << 16))
    ints = np.where(ints & 0x800000, ints - 0x1000000, ints)
    return ints.astype(np.float32) / 8388608.0


def model_rate_samples(n: int, rate: int, model_rate: int = 16000) -> int:
    """How many samples sherpa-onnx's resampler makes of n at `rate` (LinearResample, flushed: ceil)."""
    return n if rate == model_rate else -(-n * model_rate // rate)


def check_decodable(audio: Audio, model_rate: int = 16000, frame_shift_ms: float = 10.0) -> None:
    """Refuse audio too short for one feature frame; silence is fine (it decodes to nothing).

    kaldi-native-fbank (snip_edges=false, as sherpa-onnx's NeMo front end) makes (n + shift/2) // shift
    frames of n samples, so under half a frame shift (80 samples at 16 kHz) the encoder gets no input
    and onnxruntime raises. A file that short holds nothing to hear: it is most likely cut off.
    """
    shift = round(model_rate * frame_shift_ms / 1000)
    need = shift - shift // 2
    n = model_rate_samples(len(audio.samples), audio.sample_rate, model_rate)
    if n < need:
        raise BadInputError(f"audio too short to decode: {len(audio.samples)} samples at {audio.sample_rate} Hz "
                            f"({audio.seconds * 1000:.1f} ms); one feature frame needs {need / model_rate * 1000:g} "
                            f"ms ({need} samples at {model_rate} Hz)", path=audio.path,
                            fix="check that the file was written completely")


def check_audible(audio: Audio) -> None:
    """Refuse digital silence where a decode of it would prove nothing (validate compares decodes)."""
    peak = float(np.max(np.abs(audio.samples)))
    if peak < SILENCE_PEAK:
        raise BadInputError(f"audio is silent (peak {peak:.1e}, {audio.seconds:.1f} s): both decodes would be "
                            "empty, which proves nothing", path=audio.path,
                            fix="give --audio a recording with speech, or leave --audio out for generated audio")


def write_wav(path: str | Path, samples: np.ndarray, sample_rate: int) -> None:
    """16-bit PCM mono WAV (for tests, demos and benchmarks)."""
    pcm = np.clip(np.asarray(samples, dtype=np.float64), -1, 1)
    pcm = (pcm * 32767).round().astype("<i2").tobytes()
    header = b"RIFF" + struct.pack("<I", 36 + len(pcm)) + b"WAVE"
    header += b"fmt " + struct.pack("<IHHIIHH", 16, PCM, 1, sample_rate, sample_rate * 2, 2, 16)
    header += b"data" + struct.pack("<I", len(pcm))
    Path(path).write_bytes(header + pcm)


# ----------------------------------------------------------------------------- resampling


class Resampler:
    """Streaming band-limited resampler: feed blocks, get blocks, `flush` at the end.

    Output sample n sits at input time n * in_rate / out_rate; it is the sum
    of input samples weighted by a Hann-windowed sinc whose cutoff is 0.99 of
    the lower of the two Nyquist frequencies, six zero crossings wide.
    """

    def __init__(self, in_rate: int, out_rate: int, zeros: int = 6):
        self.in_rate, self.out_rate = int(in_rate), int(out_rate)
        g = math.gcd(self.in_rate, self.out_rate)
        self.step_in, self.step_out = self.in_rate // g, self.out_rate // g  # n out -> n*step_in/step_out in
        cutoff = 0.99 * 0.5 * min(self.in_rate, self.out_rate)  # Hz
        self.width = zeros / (2.0 * cutoff)  # seconds each side
        self.half = math.ceil(self.width * self.in_rate)  # input samples each side
        taps = np.arange(-self.half, self.half + 1, dtype=np.float64)
        # One filter per output phase: fractional part of n * step_in / step_out.
        phases = np.arange(self.step_out) * self.step_in % self.step_out / self.step_out
        t = (taps[None, :] - phases[:, None]) / self.in_rate  # seconds from the output instant
        window = np.where(np.abs(t) < self.width, 0.5 * (1 + np.cos(np.pi * t / self.width)), 0.0)
        self.filters = (2 * cutoff * np.sinc(2 * cutoff * t) * window / self.in_rate).astype(np.float32)
        self.buf = np.zeros(self.half, dtype=np.float32)  # left context: zeros before the signal
        self.buf_start = -self.half  # input index of buf[0]
        self.n_in = 0
        self.n_out = 0

    def _emit(self, last: int) -> np.ndarray:
        """Outputs n_out.. while their input span ends at or before input index `last` (exclusive)."""
        if last <= 0:
            return np.zeros(0, np.float32)
        # largest n with floor(n*step_in/step_out) + half < last
        n_end = ((last - self.half) * self.step_out + self.step_in - 1) // self.step_in
        n_end = max(n_end, self.n_out)
        if n_end <= self.n_out:
            return np.zeros(0, np.float32)
        n = np.arange(self.n_out, n_end, dtype=np.int64)
        centre = n * self.step_in // self.step_out
        phase = n % self.step_out
        idx = centre[:, None] - self.half + np.arange(2 * self.half + 1)[None, :] - self.buf_start
        out = np.einsum("ij,ij->i", self.buf[idx], self.filters[phase]).astype(np.float32)
        self.n_out = n_end
        # keep only what later outputs can still reach
        keep_from = (self.n_out * self.step_in // self.step_out) - self.half
        drop = max(0, keep_from - self.buf_start)
        if drop:
            self.buf = self.buf[drop:]
            self.buf_start += drop
        return out

    def process(self, block: np.ndarray) -> np.ndarray:
        block = np.asarray(block, dtype=np.float32).reshape(-1)
        self.buf = np.concatenate([self.buf, block])
        self.n_in += len(block)
        return self._emit(self.n_in)

    def flush(self) -> np.ndarray:
        """The remaining outputs, with zeros beyond the end of the input; total = ceil(n_in * out/in)."""
        total = -(-self.n_in * self.step_out // self.step_in)
        self.buf = np.concatenate([self.buf, np.zeros(self.half + 1, np.float32)])
        out = self._emit(self.n_in + self.half + 1)
        return out[: max(0, total - (self.n_out - len(out)))]


def resample(samples: np.ndarray, in_rate: int, out_rate: int, block: int = 1 << 20) -> np.ndarray:
    if in_rate == out_rate:
        return np.asarray(samples, dtype=np.float32)
    r = Resampler(in_rate, out_rate)
    parts = [r.process(samples[i:i + block]) for i in range(0, len(samples), block)]
    parts.append(r.flush())
    return np.concatenate(parts)
