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
import os
import struct
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..errors import BadInputError
from ..safety.bounded import open_regular

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


MIN_RATE, MAX_RATE = 1000, 384_000  # Hz: telephony to studio; outside it a resampler's filters are absurd
MAX_CHANNELS = 256  # mixed down to mono; more is not a recording (a forged header: 65535 channels)
BLOCK_FRAMES = 1 << 20  # frames read, converted and handed on at a time


@dataclass
class WavInfo:
    """What a WAV file's header says, checked against the file itself."""

    path: Path
    tag: int
    channels: int
    sample_rate: int
    bits: int
    align: int
    data_offset: int
    frames: int  # whole frames in the data chunk that the file really holds

    @property
    def seconds(self) -> float:
        return self.frames / self.sample_rate


def check_rate(rate, what: str = "sample rate", path: str | Path | None = None) -> int:
    """A sample rate sherpa-fixed can work with, as an int; BadInputError naming `what` otherwise."""
    try:
        ok = float(rate) == int(rate) and MIN_RATE <= int(rate) <= MAX_RATE
    except (TypeError, ValueError, OverflowError):
        ok = False
    if not ok:
        raise BadInputError(f"{what} {rate!r} is not a sample rate between {MIN_RATE} and {MAX_RATE} Hz", path=path,
                            fix="give the audio's real rate in Hz (e.g. 16000)")
    return int(rate)


def wav_info(path: str | Path) -> WavInfo:
    """Walk the RIFF chunks with seeks, reading only headers; refuse what is not a usable WAV."""
    path = Path(path)
    fix = "convert it first, e.g. ffmpeg -i INPUT -ar 16000 -ac 1 out.wav"
    with open_regular(path, what="audio file", fix=fix) as f:
        size = os.fstat(f.fileno()).st_size
        if size == 0:
            raise BadInputError("audio file is empty (0 bytes)", path=path)
        head = f.read(12)
        if len(head) < 12 or head[:4] not in (b"RIFF", b"RF64") or head[8:12] != b"WAVE":
            raise BadInputError("not a WAV file", path=path, fix=fix)
        fmt = None
        pos = 12
        while pos + 8 <= size:
            f.seek(pos)
            cid, csize = f.read(4), struct.unpack("<I", f.read(4))[0]
            if cid == b"fmt ":
                body = f.read(min(csize, 64))
                if len(body) < 16:
                    raise BadInputError("corrupt WAV: short fmt chunk", path=path)
                tag, channels, rate, _, align, bits = struct.unpack("<HHIIHH", body[:16])
                if tag == EXTENSIBLE and len(body) >= 26:
                    tag = struct.unpack("<H", body[24:26])[0]
                fmt = (tag, channels, rate, align, bits)
            elif cid == b"data":
                if fmt is None:
                    break
                tag, channels, rate, align, bits = fmt
                if not 1 <= channels <= MAX_CHANNELS:
                    raise BadInputError(f"WAV header says {channels} channels; sherpa-fixed mixes 1 to "
                                        f"{MAX_CHANNELS} down to mono", path=path, fix=fix)
                check_rate(rate, "WAV header's sample rate", path)
                if align < 1 or align != channels * ((bits + 7) // 8):
                    raise BadInputError(f"corrupt WAV header (block align {align} for {channels} x {bits} bits)",
                                        path=path, fix=fix)
                if not ((tag == PCM and bits in (8, 16, 24, 32)) or (tag == IEEE_FLOAT and bits in (32, 64))):
                    raise BadInputError(f"unsupported WAV encoding (format {tag}, {bits} bits)", path=path,
                                        fix="convert to 16-bit PCM, e.g. ffmpeg -i INPUT -ar 16000 -ac 1 -c:a "
                                            "pcm_s16le out.wav")
                # Bounded by the file itself: a truncated file (or a streaming header's 0xFFFFFFFF) gives
                # what is there, never more.
                available = min(csize, size - (pos + 8))
                return WavInfo(path, tag, channels, rate, bits, align, pos + 8, available // align)
            pos += 8 + csize + (csize & 1)
    raise BadInputError("corrupt WAV: no " + ("fmt" if fmt is None else "data") + " chunk", path=path,
                        fix="re-export the audio")


def wav_blocks(info: WavInfo, frames: int = BLOCK_FRAMES) -> Iterator[np.ndarray]:
    """The file's samples as float32 mono blocks of at most `frames` frames: memory is one block."""
    with open_regular(info.path, what="audio file") as f:
        f.seek(info.data_offset)
        left = info.frames
        while left:
            n = min(left, frames)
            payload = f.read(n * info.align)
            n = len(payload) // info.align
            if n == 0:
                return  # the file shrank while we read it: what was there
            payload = payload[: n * info.align]
            if info.tag == PCM:
                samples = _pcm(payload, info.bits)
            else:
                samples = np.frombuffer(payload, dtype="<f4" if info.bits == 32 else "<f8").astype(np.float32)
            samples = samples.reshape(-1, info.channels)
            mono = samples.mean(axis=1, dtype=np.float32) if info.channels > 1 else samples[:, 0]
            if not np.all(np.isfinite(mono)):
                raise BadInputError("audio contains NaN or infinite samples", path=info.path,
                                    fix="re-export the audio")
            yield np.ascontiguousarray(mono, dtype=np.float32)
            left -= n


def read_wav(path: str | Path) -> Audio:
    """Mono float32 samples of a WAV file; BadInputError naming the file and the fix otherwise.

    8/16/24/32-bit PCM and 32/64-bit float, any channel count up to MAX_CHANNELS (averaged). The whole
    file in memory: callers with long files use wav_info + wav_blocks."""
    info = wav_info(path)
    if info.frames == 0:
        raise BadInputError("audio is empty (no samples)", path=path)
    blocks = list(wav_blocks(info))
    samples = np.concatenate(blocks) if len(blocks) > 1 else blocks[0]
    return Audio(samples, info.sample_rate, info.channels, Path(path))


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
    """Refuse audio too short for one feature frame; silence is fine (it decodes to nothing)."""
    check_length(len(audio.samples), audio.sample_rate, audio.path, model_rate, frame_shift_ms)


def mono_samples(waveform, name: str = "waveform") -> np.ndarray:
    """`waveform` (the argument called `name`) as float32 mono samples; a BadInputError naming the argument
    for what sherpa-onnx would take silently and decode wrongly (several channels flattened into one) or
    not at all (NaN, infinity)."""
    try:
        samples = np.asarray(waveform, dtype=np.float32)
    except (TypeError, ValueError) as exc:
        raise BadInputError(f"{name} is not an array of numbers ({exc})") from exc
    if samples.ndim != 1:
        if samples.ndim == 2 and 1 in samples.shape:
            return samples.reshape(-1)  # one channel as a column or a row: nothing to mix
        raise BadInputError(f"{name} has shape {samples.shape}; accept_waveform takes one channel of samples "
                            "(1-D)", fix=f"mix the channels first, e.g. {name}.mean(axis=1) for (samples, "
                                         "channels)")
    bad = ~np.isfinite(samples)
    if bad.any():
        i = int(np.argmax(bad))
        raise BadInputError(f"{name} holds NaN or infinite samples (the first at index {i}: {samples[i]})",
                            fix="check the audio pipeline that produced it")
    return samples


def check_length(frames: int, rate: int, path: str | Path | None, model_rate: int = 16000,
                 frame_shift_ms: float = 10.0) -> None:
    """Refuse `frames` samples at `rate` when they make no feature frame.

    kaldi-native-fbank (snip_edges=false, as sherpa-onnx's NeMo front end) makes (n + shift/2) // shift
    frames of n samples, so under half a frame shift (80 samples at 16 kHz) the encoder gets no input
    and onnxruntime raises. A file that short holds nothing to hear: it is most likely cut off.
    """
    shift = round(model_rate * frame_shift_ms / 1000)
    need = shift - shift // 2
    n = model_rate_samples(frames, rate, model_rate)
    if n < need:
        raise BadInputError(f"audio too short to decode: {frames} samples at {rate} Hz "
                            f"({frames / rate * 1000:.1f} ms); one feature frame needs {need / model_rate * 1000:g} "
                            f"ms ({need} samples at {model_rate} Hz)", path=path,
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
