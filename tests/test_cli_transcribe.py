"""`sherpa-fixed transcribe` as a user meets it."""

from __future__ import annotations

import itertools
import json
import re

import numpy as np
import pytest
from click.testing import CliRunner

from sherpa_fixed.cli import main
from sherpa_fixed.decoding.audio import resample, write_wav
from sherpa_fixed.oracle import OracleSpec, expected_text, oracle_audio, random_tokens, write_oracle_folder


@pytest.fixture(scope="module")
def oracle_files(tmp_path_factory):
    root = tmp_path_factory.mktemp("tr")
    model = write_oracle_folder(root / "model", OracleSpec(fixed_frames=400))
    toks = random_tokens(40, 2)
    audio, _ = oracle_audio(toks, seed=2)
    stereo44 = resample(audio, 16000, 44100)
    wav = root / "speech.wav"
    import struct

    pcm = (np.stack([stereo44, stereo44], 1).reshape(-1) * 32767).astype("<i2").tobytes()
    wav.write_bytes(b"RIFF" + struct.pack("<I", 36 + len(pcm)) + b"WAVEfmt "
                    + struct.pack("<IHHIIHH", 16, 1, 2, 44100, 44100 * 4, 4, 16)
                    + b"data" + struct.pack("<I", len(pcm)) + pcm)
    return model, wav, expected_text(toks), root


def run(*args):
    r = CliRunner().invoke(main, list(map(str, args)))
    return r.exit_code, r.stdout, r.stderr


def test_text(oracle_files):
    model, wav, text, _ = oracle_files
    code, out, _ = run("transcribe", model, wav)
    assert code == 0 and out.strip() == text


def test_json_has_tokens_and_monotonic_timestamps(oracle_files):
    model, wav, text, _ = oracle_files
    code, out, _ = run("transcribe", model, wav, "--json")
    data = json.loads(out)
    f = data["files"][0]
    assert code == 0 and f["ok"] and f["text"] == text
    assert f["timestamps"] == sorted(f["timestamps"]) and len(f["timestamps"]) == len(f["tokens"])
    assert f["timestamps"][-1] < f["audio_seconds"] and f["sample_rate"] == 44100 and f["channels"] == 2


def test_srt(oracle_files):
    model, wav, text, _ = oracle_files
    code, out, _ = run("transcribe", model, wav, "--srt")
    assert code == 0
    cues = re.findall(r"(\d+)\n(\d\d:\d\d:\d\d,\d{3}) --> (\d\d:\d\d:\d\d,\d{3})\n(.+)\n", out)
    assert [int(c[0]) for c in cues] == list(range(1, len(cues) + 1))
    assert " ".join(c[3] for c in cues) == text
    assert all(a[2] <= b[1] for a, b in itertools.pairwise(cues))


def test_bad_files_are_reported_and_the_rest_goes_on(oracle_files):
    model, wav, text, root = oracle_files
    (root / "empty.wav").write_bytes(b"")
    write_wav(root / "silent.wav", np.zeros(16000), 16000)
    (root / "text.wav").write_text("not audio")
    write_wav(root / "tiny.wav", np.full(50, 0.3), 16000)
    code, out, err = run("transcribe", model, root / "empty.wav", wav, root / "silent.wav", root / "text.wav",
                         root / "missing.wav", root / "tiny.wav", wav)
    assert code == 1
    assert out.count(f"{wav}: {text}") == 2  # files after the bad ones are transcribed too
    assert f"{root / 'silent.wav'}: \n" in out  # silence is audio: an empty transcript, not an error
    for words in ("empty", "not a WAV file", "not found", "tiny.wav: audio too short"):
        assert words in err
    assert "silent" not in err
    assert len(err.splitlines()) == 4 and "Traceback" not in err


def test_output_dir(oracle_files, tmp_path):
    model, wav, text, _ = oracle_files
    code, _, _ = run("transcribe", model, wav, "--json", "-o", tmp_path)
    assert code == 0
    assert json.loads((tmp_path / "speech.json").read_text())["text"] == text


def test_unprepared_model_says_run_prepare(make_folder, tmp_path):
    folder = make_folder(metadata="missing")
    write_wav(tmp_path / "a.wav", np.random.default_rng(0).standard_normal(16000) * 0.1, 16000)
    code, _, err = run("transcribe", folder, tmp_path / "a.wav")
    assert code == 2 and "sherpa-fixed prepare" in err and err.count("\n") == 1


def test_output_dir_refuses_two_inputs_that_would_write_one_file(oracle_files, tmp_path):
    """a/x.wav and b/x.wav both became out/x.txt: the first transcript was overwritten without a word."""
    model, wav, _, _ = oracle_files
    other = tmp_path / "b" / wav.name
    other.parent.mkdir()
    other.write_bytes(wav.read_bytes())
    code, _, err = run("transcribe", model, wav, other, "-o", tmp_path / "out")
    assert code == 2 and f"{wav.stem}.txt" in err and not (tmp_path / "out").exists()
    assert run("transcribe", model, wav, wav, "-o", tmp_path / "same")[0] == 0  # the same file twice is fine
