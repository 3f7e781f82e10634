"""transcribe, quantize, inspect, prepare and the drop-in recognizer on hostile or careless input.

Each case is a file or an option a user (or an attacker) could hand us. The promise: exit 2 and one true
line naming the file or option (a ValueError subclass naming the argument in Python), memory and time
bounded by what the input can legitimately need, nothing half-written, never an internal error.
"""

from __future__ import annotations

import os
import re
import struct
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import onnx
import pytest
from click.testing import CliRunner
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from sherpa_fixed.cli import main
from sherpa_fixed.decoding.audio import write_wav
from sherpa_fixed.decoding.recognizer import OfflineRecognizer
from sherpa_fixed.errors import BadInputError
from sherpa_fixed.reading.findings import CANNOT_WORK
from sherpa_fixed.reading.inspector import inspect_folder
from sherpa_fixed.rewriting.prepare import prepare_folder
from sherpa_fixed.testing import ModelSpec, write_model_folder

from .conftest import REPO


def run_cli(*args) -> tuple[int, str]:
    r = CliRunner().invoke(main, [str(a) for a in args])
    return r.exit_code, r.output


def one_line_refusal(code: int, out: str, *words: str) -> None:
    """Exit 2 and one error line (ours, or click's for an option it checks itself) holding `words`."""
    errors = [ln for ln in out.splitlines() if ln.startswith(("sherpa-fixed: ", "Error: "))]
    assert code == 2, out
    assert len(errors) == 1 and "internal error" not in out, out
    assert all(w in errors[0] for w in words), out


@pytest.fixture(scope="module")
def model(tmp_path_factory) -> Path:
    return write_model_folder(tmp_path_factory.mktemp("m") / "model", ModelSpec())


@pytest.fixture(scope="module")
def wav(tmp_path_factory) -> Path:
    p = tmp_path_factory.mktemp("a") / "a.wav"
    write_wav(p, np.random.default_rng(0).standard_normal(16000).astype(np.float32) * 0.1, 16000)
    return p


def peak_of(args: list[str], timeout: float = 60) -> tuple[subprocess.CompletedProcess, float]:
    """A CLI run in its own process: the result and its peak RSS in MB (from /usr/bin/time)."""
    p = subprocess.run(["/usr/bin/time", "-f", "PEAK %M", sys.executable, "-m", "sherpa_fixed.cli", *args],
                       capture_output=True, text=True, timeout=timeout, env=dict(os.environ, PYTHONPATH=str(REPO)))
    peak = float(re.search(r"PEAK (\d+)", p.stderr).group(1)) / 1024
    return p, peak


# ----------------------------------------------------------------------------- transcribe's audio


def test_dev_zero_and_a_fifo_are_refused_at_once(model, wav, tmp_path):
    fifo = tmp_path / "x.wav"
    os.mkfifo(fifo)
    t = time.perf_counter()
    p, peak = peak_of(["transcribe", str(model), "/dev/zero", str(fifo), str(wav)])
    assert time.perf_counter() - t < 60 and peak < 700, peak  # was: MemoryError at 5.4 GB; a FIFO blocked forever
    assert p.returncode == 1  # the good file was transcribed, the two others reported
    assert "/dev/zero: audio file is a device, not a regular file" in p.stderr
    assert f"{fifo}: audio file is a FIFO, not a regular file" in p.stderr


def wav_header(channels: int, rate: int, bits: int = 16, data: bytes = b"\0" * 64, align: int | None = None) -> bytes:
    align = channels * bits // 8 if align is None else align
    fmt = struct.pack("<HHIIHH", 1, channels, rate, rate * align, align, bits)
    body = b"fmt " + struct.pack("<I", len(fmt)) + fmt + b"data" + struct.pack("<I", len(data)) + data
    return b"RIFF" + struct.pack("<I", 4 + len(body)) + b"WAVE" + body


@pytest.mark.parametrize("header, says", [
    (wav_header(65535, 16000, bits=8), "65535 channels"),
    (wav_header(1, 1), "sample rate 1 is not a sample rate between 1000 and 384000"),
    (wav_header(1, 2**31 - 1), "is not a sample rate between"),
    (wav_header(2, 16000, align=7), "block align 7"),
    (wav_header(1, 16000, data=b""), "audio is empty"),
])
def test_forged_wav_headers_are_one_line(model, tmp_path, header, says):
    bad = tmp_path / "bad.wav"
    bad.write_bytes(header)
    code, out = run_cli("transcribe", model, bad)
    assert code == 1 and says in out and "internal error" not in out, out


def test_a_declared_data_size_is_bounded_by_the_file(model, tmp_path):
    """A data chunk claiming 4 GB in a 100-byte file: what is there is used, nothing more is allocated."""
    p = tmp_path / "liar.wav"
    raw = bytearray(wav_header(1, 16000, data=b"\1\0" * 8000))
    raw[raw.index(b"data") + 4: raw.index(b"data") + 8] = struct.pack("<I", 0xFFFFFFF0)
    p.write_bytes(bytes(raw))
    proc, peak = peak_of(["transcribe", str(model), str(p), "--json"])
    assert proc.returncode == 0 and peak < 700, (proc.stderr, peak)
    assert '"audio_seconds": 0.5' in proc.stdout


def test_output_dir_under_a_file_or_in_sys_is_one_line(model, wav, tmp_path):
    afile = tmp_path / "file"
    afile.write_text("x")
    for target, says in ((afile / "out", "a part of its path is a file"), (afile, "is a file"),
                         (Path("/sys/kernel/sherpa-fixed-test"), "")):
        code, out = run_cli("transcribe", model, wav, "-o", target)
        one_line_refusal(code, out, str(target), says)
    assert afile.read_text() == "x"


def test_output_files_are_written_whole_through_a_rename(model, wav, tmp_path):
    out = tmp_path / "out"
    code, _ = run_cli("transcribe", model, wav, "-o", out, "--json")
    assert code == 0 and (out / "a.json").exists()
    assert not [p for p in out.iterdir() if p.name.startswith(".sf-")]


# ----------------------------------------------------------------------------- folders


def test_a_tokens_file_claiming_huge_ids_costs_nothing(model, wav, tmp_path):
    folder = tmp_path / "m"
    folder.mkdir()
    for p in model.iterdir():
        (folder / p.name).write_bytes(p.read_bytes())
    with open(folder / "tokens.txt", "a") as f:
        f.write("x 60000000\n")
    for args in (["inspect", str(folder)], ["prepare", str(folder), "--dry-run"],
                 ["transcribe", str(folder), str(wav)]):
        t = time.perf_counter()
        proc, peak = peak_of(args)
        assert time.perf_counter() - t < 30 and peak < 700, (args, peak)  # was 6 GB and 15-26 s
        assert proc.returncode in (1, 2) and "internal error" not in proc.stderr, proc.stderr
        if args[0] != "transcribe":  # (transcribe names the first refusal and inspect's advice)
            assert "60000000" in proc.stdout + proc.stderr


def set_external_field(folder: Path, key: str, value: str) -> str:
    path = folder / "encoder.onnx"
    m = onnx.load(str(path), load_external_data=False)
    t = next(t for t in m.graph.initializer if t.data_location == onnx.TensorProto.EXTERNAL)
    for e in t.external_data:
        if e.key == key:
            e.value = value
    if key not in {e.key for e in t.external_data}:
        t.external_data.add(key=key, value=value)
    onnx.save(m, str(path))
    return t.name


@pytest.mark.parametrize("key, value", [("offset", "-64"), ("offset", "abc"), ("length", "-1"), ("offset", "1e9"),
                                        ("offset", str(1 << 60))])
def test_a_forged_external_offset_is_refused_by_every_command(tmp_path, wav, key, value):
    folder = write_model_folder(tmp_path / "m", ModelSpec(external="single"))
    tensor = set_external_field(folder, key, value)
    report = inspect_folder(folder)
    assert report.verdict.code == CANNOT_WORK
    assert any(f.code == "external.bad_field" and tensor in f.message for v in report.variants for f in v.findings)
    code, out = run_cli("inspect", folder)
    assert code == 2 and re.search(rf"✗ encoder.onnx: tensor '{re.escape(tensor)}': external {key} .* is not a "
                                   "byte count", out), out
    for args in (["prepare", folder, "-o", tmp_path / "o"], ["quantize", folder, "-o", tmp_path / "q"],
                 ["transcribe", folder, wav]):
        code, out = run_cli(*args)
        one_line_refusal(code, out, tensor)
    assert not (tmp_path / "o").exists() and not (tmp_path / "q").exists()


def test_duplicate_metadata_keys_become_the_one_sherpa_onnx_reads(tmp_path, wav):
    """vocab_size written twice: sherpa-onnx reads the last. inspect says so; prepare (even --verify off)
    leaves one entry with a value that works, and transcribe then decodes."""
    folder = write_model_folder(tmp_path / "m", ModelSpec())
    path = folder / "encoder.onnx"
    m = onnx.load(str(path))
    right = next(p.value for p in m.metadata_props if p.key == "vocab_size")
    for p in m.metadata_props:
        if p.key == "vocab_size":
            p.value = "99999"  # the first entry wrong...
    m.metadata_props.add(key="vocab_size", value=right)  # ...the last, which sherpa-onnx reads, right
    onnx.save(m, str(path))
    report = inspect_folder(folder)
    dup = [f for f in report.variants[0].findings if f.code == "metadata.duplicate"]
    assert dup and "written 2 times" in dup[0].message and f"reads the last, {right!r}" in dup[0].message
    result = prepare_folder(folder, in_place=True, verify="off")
    assert result.exit_code == 0
    props = [(p.key, p.value) for p in onnx.load(str(path), load_external_data=False).metadata_props]
    assert [v for k, v in props if k == "vocab_size"] == [right]
    assert inspect_folder(folder).verdict.code == "works"
    code, out = run_cli("transcribe", folder, wav)
    assert code == 0, out


# ----------------------------------------------------------------------------- the drop-in recognizer


@pytest.fixture(scope="module")
def recognizer(model):
    return OfflineRecognizer.from_model_dir(model, int8=False)


@pytest.mark.parametrize("rate, samples, says", [
    (0, np.zeros(1600, np.float32), "sample_rate 0"),
    (2**31 - 1, np.zeros(1600, np.float32), "sample_rate 2147483647"),
    (1, np.zeros(1600, np.float32), "sample_rate 1 "),
    (16000.5, np.zeros(1600, np.float32), "sample_rate 16000.5"),
    (16000, np.array([0.0, np.nan, 0.1], np.float32), "NaN or infinite samples (the first at index 1"),
    (16000, np.array([0.0, 0.1, np.inf], np.float32), "the first at index 2"),
    (16000, np.zeros((2, 1600), np.float32), "waveform has shape (2, 1600)"),
    (16000, "not audio", "waveform is not an array of numbers"),
])
def test_bad_audio_is_a_value_error_naming_the_argument(recognizer, rate, samples, says):
    s = recognizer.create_stream()
    with pytest.raises(ValueError, match=re.escape(says)) as err:
        s.accept_waveform(rate, samples)
    assert isinstance(err.value, BadInputError)


def test_one_channel_as_a_column_is_accepted(recognizer):
    s = recognizer.create_stream()
    s.accept_waveform(16000, np.zeros((1600, 1), np.float32))
    recognizer.decode_stream(s)
    assert s.result.text == "" or isinstance(s.result.text, str)


def test_an_empty_stream_in_a_batch_is_named_and_nothing_is_decoded(recognizer):
    streams = [recognizer.create_stream() for _ in range(3)]
    streams[0].accept_waveform(16000, np.zeros(16000, np.float32))
    streams[2].accept_waveform(16000, np.zeros(16000, np.float32))
    with pytest.raises(BadInputError, match="stream 1 of the 3 given to decode_streams has no audio"):
        recognizer.decode_streams(streams)
    recognizer.decode_streams([streams[0], streams[2]])  # the others were left untouched, and still decode


def test_a_2_second_static_encoder_needs_no_overlap_from_the_user(tmp_path):
    folder = write_model_folder(tmp_path / "m", ModelSpec(time="baked", frames=200))
    rec = OfflineRecognizer.from_model_dir(folder)
    s = rec.create_stream()
    s.accept_waveform(16000, np.random.default_rng(1).standard_normal(16000 * 7).astype(np.float32) * 0.1)
    rec.decode_stream(s)  # used to fail: a default overlap of 2 s does not fit in a 2 s window
    spec = rec._chunking.spec
    assert spec.window == 200 * 160 and 0 < spec.overlap <= spec.window // 4 and spec.overlap % spec.grid == 0
    assert s.result.timestamps == sorted(s.result.timestamps)


# ----------------------------------------------------------------------------- options, generated


FLOATS = st.one_of(st.floats(allow_nan=True, allow_infinity=True), st.sampled_from([1e308, -1e308, 5e5, 0.0, 1e-9]))


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(option=st.sampled_from(["--hop", "--context", "--window-seconds", "--max-seconds"]), value=FLOATS)
def test_window_and_length_options_never_crash(tmp_path_factory, option, value):
    """Any number for any of prepare's long-audio options: done, or exit 2 with one line; never exit 3."""
    base = tmp_path_factory.getbasetemp() / "opt-model"
    if not base.exists():
        write_model_folder(base, ModelSpec(time="baked", frames=400))
    out = tmp_path_factory.mktemp("o") / "out"
    extra = [] if option == "--max-seconds" else ["--window"]
    code, text = run_cli("prepare", base, "-o", out, *extra, option, repr(value), "--verify", "fast")
    assert code in (0, 1, 2) and "internal error" not in text, text
    if code == 2:
        assert len([ln for ln in text.splitlines() if ln.startswith(("sherpa-fixed: ", "Error"))]) == 1, text
        assert not out.exists()


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(key=st.sampled_from(["offset", "length", "location"]),
       value=st.text(alphabet=st.characters(blacklist_categories=["Cs"]), max_size=30))
def test_any_external_field_text_is_handled(tmp_path_factory, key, value):
    folder = tmp_path_factory.mktemp("ext") / "m"
    write_model_folder(folder, ModelSpec(external="single"))
    set_external_field(folder, key, value)
    code, text = run_cli("inspect", folder)
    assert code in (0, 1, 2) and "internal error" not in text, text
