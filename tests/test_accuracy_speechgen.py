"""checking/speechgen.py: espeak-ng test speech, reproducible from its seed, with references beside it.

espeak-ng comes from the `espeakng-loader` wheel (the test extra): without it these tests fail, saying how to
install it.
"""

from __future__ import annotations

import itertools
import json
import os
import subprocess
import sys

import numpy as np
import pytest

from sherpa_fixed.checking import speechgen
from sherpa_fixed.decoding.audio import read_wav

from .conftest import REPO

SMALL = dict(long_minutes=1.0, n_short=4, long_seconds=(30.0, 40.0))


@pytest.fixture(scope="module")
def espeak():
    return speechgen.espeak_version()  # EspeakMissingError, naming the install, when the wheel is missing


def _files(folder):
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def test_same_seed_same_bytes_other_seed_other_audio(espeak, tmp_path):
    a = speechgen.make_set(tmp_path / "a", 11, name="x", **SMALL)
    b = speechgen.make_set(tmp_path / "b", 11, name="x", workers=1, **SMALL)
    speechgen.make_set(tmp_path / "c", 12, name="x", **SMALL)
    fa, fb, fc = _files(tmp_path / "a"), _files(tmp_path / "b"), _files(tmp_path / "c")
    assert a == b and fa == fb  # threads do not change a byte
    assert fa.keys() == fc.keys()
    assert fa["short/s000.wav"] != fc["short/s000.wav"]
    assert json.loads(fa["short.json"]) != json.loads(fc["short.json"])


def test_references_beside_audio(espeak, tmp_path):
    desc = speechgen.make_set(tmp_path, 5, **SMALL)
    assert desc["espeak_ng"].startswith("eSpeak NG") and desc["sample_rate"] == 16000
    longs = json.loads((tmp_path / "long.json").read_text())
    shorts = json.loads((tmp_path / "short.json").read_text())
    assert len(shorts) == 4 and len(longs) == desc["long"]["files"] >= 2
    vocab = set(speechgen.VOCAB)
    train = speechgen.training_texts()
    for item in longs + shorts:
        wav = tmp_path / item["file"]
        beside = json.loads(wav.with_suffix(".json").read_text())
        assert beside == item
        audio = read_wav(wav)
        assert audio.sample_rate == 16000 and audio.channels == 1
        assert abs(audio.seconds - item["seconds"]) < 0.01
        assert np.abs(audio.samples).max() > 0.05  # speech, not silence
        assert set(item["text"].split()) <= vocab
    for item in longs:
        segs = item["segments"]
        assert " ".join(s["text"] for s in segs) == item["text"]
        assert all(0 < s["start"] < s["end"] <= item["seconds"] for s in segs)
        assert all(a["end"] < b["start"] for a, b in itertools.pairwise(segs))  # pauses between
        assert item["seconds"] <= 40.0
        assert not any(s["text"] in train for s in segs)
    assert not any(s["text"] in train for s in shorts)


def test_voice_pools(espeak):
    _, seen = speechgen.short_clip(3, 0, speechgen.UNSEEN_JUDGED, p_unseen=0.0)
    _, held = speechgen.short_clip(3, 0, speechgen.UNSEEN_JUDGED, p_unseen=1.0)
    assert seen.voice.split("+")[1] in speechgen.SEEN and not seen.unseen
    assert held.voice.split("+")[1] in speechgen.UNSEEN_JUDGED and held.unseen
    assert not set(speechgen.SEEN) & set(speechgen.UNSEEN)


def test_training_texts_replay():
    texts = speechgen.training_texts()
    assert 4900 < len(texts) <= 5000  # a few of the 5000 random sentences repeat
    assert all(3 <= len(t.split()) <= 8 for t in texts)


def test_missing_espeak_says_how_to_install():
    """Without the wheel (blocked in a fresh interpreter), and asked for a missing program: one line each."""
    code = ("import sys; sys.modules['espeakng_loader'] = None\n"
            "from sherpa_fixed.checking import speechgen\n"
            "try:\n    speechgen.synthesize('yes', 'en', 150, 50)\nexcept speechgen.EspeakMissingError as e:\n"
            "    print(e)")
    env = dict(os.environ, PYTHONPATH=str(REPO))
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env).stdout
    assert "espeakng-loader is not installed" in out and "pip install 'sherpa-fixed[test]'" in out
    out = subprocess.run([sys.executable, "-c", code.replace("sys.modules['espeakng_loader'] = None", "")],
                         capture_output=True, text=True, env=dict(env, SHERPA_FIXED_ESPEAK="program",
                                                                  PATH="/nonexistent")).stdout
    assert "espeak-ng not found on PATH" in out and "apt-get install espeak-ng" in out


def test_the_library_is_the_pinned_one():
    """The audio every machine makes is the pinned wheel's: its version is in every set's description."""
    assert speechgen.espeak_version().startswith("eSpeak NG 1.52.0 (espeakng-loader 0.2.4)")
