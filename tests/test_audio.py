"""WAV reading and resampling: formats a user will hand us, and the errors for what is not audio."""

from __future__ import annotations

import struct

import numpy as np
import pytest

from sherpa_fixed.decoding.audio import Resampler, check_audible, read_wav, resample, write_wav
from sherpa_fixed.errors import BadInputError


def wav_bytes(samples: np.ndarray, rate: int, fmt: int, bits: int, channels: int, extensible: bool = False) -> bytes:
    frames = samples.reshape(-1, channels)
    if fmt == 3:
        payload = frames.astype("<f4" if bits == 32 else "<f8").tobytes()
    elif bits == 8:
        payload = (np.clip(frames, -1, 1) * 127 + 128).astype(np.uint8).tobytes()
    elif bits == 24:
        ints = (np.clip(frames, -1, 1) * 8388607).astype("<i4").reshape(-1)
        payload = b"".join(int(v).to_bytes(4, "little", signed=True)[:3] for v in ints)
    else:
        dtype, scale = {16: ("<i2", 32767), 32: ("<i4", 2147483647)}[bits]
        payload = (np.clip(frames, -1, 1) * scale).astype(dtype).tobytes()
    align = channels * bits // 8
    if extensible:
        fmt_body = struct.pack("<HHIIHH", 0xFFFE, channels, rate, rate * align, align, bits)
        fmt_body += struct.pack("<HHI", 22, bits, 0) + struct.pack("<H", fmt) + b"\0" * 14
    else:
        fmt_body = struct.pack("<HHIIHH", fmt, channels, rate, rate * align, align, bits)
    body = b"WAVE" + b"fmt " + struct.pack("<I", len(fmt_body)) + fmt_body
    body += b"LIST" + struct.pack("<I", 4) + b"INFO"  # an extra chunk readers must skip
    body += b"data" + struct.pack("<I", len(payload)) + payload
    return b"RIFF" + struct.pack("<I", len(body)) + body


@pytest.mark.parametrize("fmt, bits, tol", [(1, 8, 1e-2), (1, 16, 1e-4), (1, 24, 1e-6), (1, 32, 1e-8),
                                            (3, 32, 1e-7), (3, 64, 1e-7)])
@pytest.mark.parametrize("channels", [1, 2])
@pytest.mark.parametrize("extensible", [False, True])
def test_formats_round_trip(tmp_path, fmt, bits, tol, channels, extensible):
    rng = np.random.default_rng(0)
    mono = (rng.uniform(-0.5, 0.5, 1000)).astype(np.float32)
    frames = np.stack([mono] * channels, 1) if channels > 1 else mono[:, None]
    if channels == 2:
        frames[:, 1] = -mono * 0.5  # mixdown must average, not take channel 0
    path = tmp_path / "a.wav"
    path.write_bytes(wav_bytes(frames.reshape(-1), 22050, fmt, bits, channels, extensible))
    audio = read_wav(path)
    expect = frames.mean(axis=1)
    assert audio.sample_rate == 22050 and audio.channels == channels
    assert np.max(np.abs(audio.samples - expect)) < tol * 2 + 1e-7


@pytest.mark.parametrize("content, words", [
    (b"", "empty"),
    (b"hello world, this is text", "not a WAV file"),
    (b"RIFF\x10\x00\x00\x00WAVEfmt \x02\x00\x00\x00\x01\x00", "corrupt"),
])
def test_bad_files_name_the_problem(tmp_path, content, words):
    path = tmp_path / "x.wav"
    path.write_bytes(content)
    with pytest.raises(BadInputError, match=words) as exc:
        read_wav(path)
    assert "x.wav" in str(exc.value)


def test_no_samples_and_silence(tmp_path):
    path = tmp_path / "e.wav"
    write_wav(path, np.zeros(0), 16000)
    with pytest.raises(BadInputError, match="no samples"):
        read_wav(path)
    write_wav(path, np.zeros(8000), 16000)
    with pytest.raises(BadInputError, match="silent"):
        check_audible(read_wav(path))


def test_truncated_data_chunk_uses_what_is_there(tmp_path):
    path = tmp_path / "t.wav"
    write_wav(path, np.full(1000, 0.25), 16000)
    data = path.read_bytes()
    path.write_bytes(data[:-501])  # cut mid-sample too
    audio = read_wav(path)
    assert len(audio.samples) == 749 and np.allclose(audio.samples, 0.25, atol=1e-4)


@pytest.mark.parametrize("rate", [8000, 11025, 22050, 44100, 48000, 96000])
def test_resampling_keeps_in_band_tones(rate):
    t = np.arange(rate) / rate
    x = (0.5 * np.sin(2 * np.pi * 440 * t) + 0.3 * np.sin(2 * np.pi * 1800 * t)).astype(np.float32)
    y = resample(x, rate, 16000)
    assert len(y) == 16000
    tt = np.arange(16000) / 16000
    ref = 0.5 * np.sin(2 * np.pi * 440 * tt) + 0.3 * np.sin(2 * np.pi * 1800 * tt)
    assert np.max(np.abs(y[1600:-1600] - ref[1600:-1600])) < 2e-3


def test_resampling_removes_what_cannot_exist_at_the_new_rate():
    t = np.arange(44100) / 44100
    y = resample(np.sin(2 * np.pi * 10000 * t).astype(np.float32), 44100, 16000)  # above 8 kHz Nyquist
    assert np.sqrt(np.mean(y[1600:-1600] ** 2)) < 0.01


def test_streaming_equals_one_shot():
    x = np.random.default_rng(0).standard_normal(44100).astype(np.float32)
    r = Resampler(44100, 16000)
    parts = [r.process(x[i:i + 777]) for i in range(0, len(x), 777)] + [r.flush()]
    assert np.allclose(np.concatenate(parts), resample(x, 44100, 16000), atol=1e-6)
