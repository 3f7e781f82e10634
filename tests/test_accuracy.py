"""CI guard: no decode path may lose more than a set margin of WER against whole-utterance decoding.

The speech model (tests/data/speech, see PROVENANCE.md) really recognises espeak-ng speech, so a
mistake in the chunker, the seam stitcher, short-clip padding or the windowed graph shows up as
words lost or changed. The test speech is generated here (sherpa_fixed.checking.speechgen, seed
SEED, voices seen and held out of training): long-form recordings longer than the drop-in
recognizer's 30 s window and than the static encoder's 8 s window, so seams are crossed, and short
clips shorter than 8 s, which a fixed-window encoder must pad. Every path decodes exactly the same
samples; the reference is stock sherpa-onnx on the whole utterance with the dynamic export.

Paths guarded: the drop-in recognizer at its defaults (dynamic export), the static-800 encoder
through the drop-in recognizer (the Python chunker), and the static-800 encoder after
`prepare --window` through stock sherpa-onnx.

The margin (MARGIN, in WER points, per set) comes from measured noise: a correct decode path
differs from whole-utterance decoding only where a word sits near a window edge or a padded clip
tips a near-tie, so on a set of this size its difference wanders around zero from one seed to
another. Over 20 seeds of sets made exactly like this one (6 min of long-form speech, about 760
words; 150 clips, about 830 words; docs/accuracy.md), the correct paths' differences were:
long-form: largest +1.21, standard deviation at most 0.69 (static800 through the chunker);
short clips: largest +0.72, standard deviation 0.38 (the same path; the others were exactly 0).
MARGIN is about 3 standard deviations above the noisiest path's mean on long-form speech (2.0
points) and about 4 on short clips (1.5 points). Real defects are far larger: the static-800
chunker's former short-clip padding cost +8 to +10 points (set A and the judged set; +10.05 on
this very set, measured with the chunker before commit 4350371), and 4 s windows without
overlap cost +3.9 points on average (+1.4 to +6.5); test_the_guard_has_teeth decodes with that
broken setting and checks it trips the margin on this set.

The speech is synthesised by the espeak-ng that the `espeakng-loader` wheel bundles (the `test`
extra pins it), so every machine makes the same audio and needs no system package; without the
wheel these tests fail naming the install, never skip.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from sherpa_fixed.checking import speechgen
from sherpa_fixed.checking.accuracy import (
    PathResult,
    delta,
    load_set,
    markdown_table,
    recognizer_decoder,
    run_path,
    transducer_files,
    windowed_model,
)

MODEL = Path(__file__).parent / "data" / "speech"
SEED = 4242
LONG_MINUTES, LONG_SECONDS, N_SHORT = 6.0, (40.0, 80.0), 150
MARGIN = {"long": 2.0, "short": 1.5}  # points above whole-utterance WER
GUARDED = ["drop-in defaults (dynamic)", "static800 · drop-in chunker",
           "static800 · prepare --window · stock sherpa-onnx"]


@pytest.fixture(scope="module")
def speech_set(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("speech") / f"seed{SEED}"
    speechgen.make_set(folder, SEED, long_minutes=LONG_MINUTES, n_short=N_SHORT, long_seconds=LONG_SECONDS)
    return folder


@pytest.fixture(scope="module")
def recognizers(tmp_path_factory) -> dict:
    import sherpa_onnx

    from sherpa_fixed import OfflineRecognizer

    win = windowed_model(MODEL / "static800", tmp_path_factory.mktemp("window") / "static800_window")
    kw = dict(num_threads=2)
    return {
        "whole": sherpa_onnx.OfflineRecognizer.from_transducer(**transducer_files(MODEL / "dynamic"), **kw),
        GUARDED[0]: OfflineRecognizer.from_transducer(**transducer_files(MODEL / "dynamic"), **kw),
        GUARDED[1]: OfflineRecognizer.from_transducer(**transducer_files(MODEL / "static800"), **kw),
        GUARDED[2]: sherpa_onnx.OfflineRecognizer.from_transducer(**transducer_files(win), **kw),
    }


@pytest.fixture(scope="module")
def decoded(speech_set, recognizers) -> dict[tuple[str, str], PathResult]:
    out = {}
    for kind in ("long", "short"):
        utts = load_set(speech_set, kind)
        for name, rec in recognizers.items():
            out[name, kind] = run_path(name, recognizer_decoder(rec), utts)
        out["seconds", kind] = sum(u.seconds for u in utts)
    return out


def _table(decoded, kind: str) -> str:
    rows = [decoded[p, kind] for p in ["whole", *GUARDED]]
    return markdown_table(rows, rows[0], decoded["seconds", kind])


def test_the_set_exercises_windows_and_padding(speech_set):
    longs, shorts = load_set(speech_set, "long"), load_set(speech_set, "short")
    assert sum(u.seconds for u in longs) >= LONG_MINUTES * 60
    assert all(u.seconds > 30 for u in longs)  # past the drop-in's 30 s window: seams are crossed
    assert all(u.seconds < 8 for u in shorts)  # under the static encoder's 8 s window: padding is used
    assert any(u.unseen for u in longs + shorts) and not all(u.unseen for u in longs + shorts)


def test_whole_utterance_really_recognises(decoded):
    """The instrument works: a broken front end or model gives 50-100 %, not this."""
    for kind in ("long", "short"):
        assert decoded["whole", kind].wer < 0.15, _table(decoded, kind)


@pytest.mark.parametrize("kind", ["long", "short"])
@pytest.mark.parametrize("path", GUARDED)
def test_within_margin_of_whole_utterance(decoded, path, kind):
    d, se = delta(decoded[path, kind], decoded["whole", kind])
    assert d <= MARGIN[kind], (
        f"{path} on the {kind} set: WER {d:+.2f} points against whole-utterance decoding (paired SE "
        f"{se or 0:.2f}), margin {MARGIN[kind]}\n{_table(decoded, kind)}")


def test_the_guard_has_teeth(speech_set):
    """Windows of 4 s with no overlap (a stitcher with no context at its seams) must trip the margin."""
    from sherpa_fixed import OfflineRecognizer

    utts = load_set(speech_set, "long")
    import sherpa_onnx

    whole = run_path("whole", recognizer_decoder(sherpa_onnx.OfflineRecognizer.from_transducer(
        **transducer_files(MODEL / "dynamic"), num_threads=2)), utts)
    broken = run_path("4 s / 0 s", recognizer_decoder(OfflineRecognizer.from_transducer(
        **transducer_files(MODEL / "dynamic"), window_seconds=4, overlap_seconds=0, num_threads=2)), utts)
    assert delta(broken, whole)[0] > MARGIN["long"], markdown_table([whole, broken], whole, 0)
