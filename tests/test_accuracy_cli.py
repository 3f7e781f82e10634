"""`transcribe --reference-text` and `validate --reference-text`: word error rate for the user's own audio.

The speech model (tests/data/speech/dynamic) and espeak-ng clips; the references are built from the
transcript itself with known edits, so the expected counts do not depend on what the model heard.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from sherpa_fixed.checking import speechgen
from sherpa_fixed.cli import main
from sherpa_fixed.decoding.audio import write_wav

MODEL = Path(__file__).parent / "data" / "speech" / "dynamic"


def run(*args):
    r = CliRunner().invoke(main, list(map(str, args)))
    return r.exit_code, r.stdout, r.stderr


@pytest.fixture(scope="module")
def clips(tmp_path_factory):
    root = tmp_path_factory.mktemp("wer-cli")
    out = []
    for k in range(2):
        audio, _ = speechgen.short_clip(77, k, speechgen.UNSEEN_JUDGED, p_unseen=0.0)
        wav = root / f"clip{k}.wav"
        write_wav(wav, audio, 16000)
        code, text, _ = run("transcribe", MODEL, wav)
        assert code == 0 and text.split()
        out.append((wav, text.strip()))
    return out


def edited(text: str) -> str:
    """The transcript with its first word substituted and one word more: 1 substitution, 1 deletion."""
    words = text.split()
    other = next(w for w in speechgen.VOCAB if w != words[0])
    return " ".join([other, *words[1:], "zero"])


def test_transcribe_prints_wer(clips):
    (wav, text), _ = clips
    code, out, _ = run("transcribe", MODEL, wav, "--reference-text", edited(text).upper() + ".")
    n = len(text.split()) + 1
    assert code == 0
    assert out.splitlines() == [text, f"WER {100 * 2 / n:.2f} % (1 substituted, 1 deleted, 0 inserted; {n} "
                                      "reference words)"]


def test_transcribe_json_and_reference_file(clips, tmp_path):
    (wav0, text0), (wav1, text1) = clips
    ref = tmp_path / "ref.txt"
    ref.write_text(edited(text0) + "\n", encoding="utf-8")
    code, out, _ = run("transcribe", MODEL, wav0, wav1, "--reference-text", ref, "--reference-text", text1,
                       "--json")
    assert code == 0
    doc = json.loads(out)
    n0, n1 = len(text0.split()) + 1, len(text1.split())
    assert doc["files"][0]["wer"] == {"wer": round(2 / n0, 6), "substitutions": 1, "deletions": 1,
                                      "insertions": 0, "reference_words": n0}
    assert doc["files"][1]["wer"]["wer"] == 0.0
    assert doc["wer"]["reference_words"] == n0 + n1 and doc["wer"]["files_scored"] == 2
    assert doc["wer"]["wer"] == round(2 / (n0 + n1), 6)


def test_transcribe_reference_count_and_missing_file(clips, tmp_path):
    (wav0, _), (wav1, _) = clips
    code, _, err = run("transcribe", MODEL, wav0, wav1, "--reference-text", "yes no")
    assert code == 2 and "1 reference transcript(s) for 2 audio file(s)" in err
    code, _, err = run("transcribe", MODEL, wav0, "--reference-text", tmp_path / "nope.txt")
    assert code == 2 and "reference transcript file not found" in err


def test_validate_reference_text(clips):
    _, (wav, text) = clips
    _, out, _ = run("validate", MODEL, "--audio", wav, "--reference-text", edited(text), "--json")
    doc = json.loads(out)
    n = len(text.split()) + 1
    fp32 = next(d for d in doc["decodes"] if d["variant"] == "fp32")
    assert fp32["text"].strip() == text
    assert fp32["wer"] == {"wer": round(2 / n, 6), "substitutions": 1, "deletions": 1, "insertions": 0,
                           "reference_words": n}
    _, out, _ = run("validate", MODEL, "--audio", wav, "--reference-text", text)
    assert "[fp32] sherpa-onnx transcript: WER 0.00 %" in out


def test_validate_reference_text_needs_audio():
    code, _, err = run("validate", MODEL, "--reference-text", "yes no")
    assert code == 2 and "--reference-text needs --audio" in err
