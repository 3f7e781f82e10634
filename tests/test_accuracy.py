"""CI guard: no decode path may lose more than a set margin of WER against whole-utterance decoding.

The speech model (tests/data/speech, see PROVENANCE.md) really recognises espeak-ng speech, so a
mistake in the chunker, the seam stitcher, short-clip padding or the windowed graph shows up as
words lost or changed. The test speech is generated here (sherpa_fixed.checking.speechgen, seed
SEED, voices seen and held out of training): long-form recordings of 40-80 s, several times the
static encoder's 8 s window, so its seams are crossed, and short clips shorter than 8 s, which a
fixed-window encoder must pad. Every path decodes exactly the same samples; the reference is stock
sherpa-onnx on the whole utterance with the dynamic export.

Paths guarded: the drop-in recognizer at its defaults (dynamic export; it decodes audio up to 90 s in
one pass, so on these recordings it must give exactly the whole-utterance transcript), the static-800
encoder through the drop-in recognizer (the Python chunker), and the static-800 encoder after
`prepare --window` through stock sherpa-onnx.

The speech is synthesised by espeak-ng 1.52, the library the `espeakng-loader` wheel bundles (the
`test` extra pins it at 0.2.4), so every machine makes the same audio and needs no system package;
without the wheel these tests fail naming the install, never skip.

The margin (MARGIN, in WER points, per set) comes from measured noise: a correct decode path
differs from whole-utterance decoding only where a word sits near a window edge or a padded clip
tips a near-tie, so on a set of this size its difference wanders around zero from one seed to
another. Over 20 seeds (4242 and 200-218) of sets made exactly like this one from the same 1.52
audio (6 min of long-form speech, about 870 words; 150 clips, about 830 words; docs/accuracy.md,
`bench/accuracy.py --noise-seeds 4242,200-218`), the differences were:
long-form: static800 through the chunker mean -0.23, standard deviation 0.44, largest +0.49;
prepare --window mean -0.05, SD 0.29, largest +0.45; the drop-in exactly 0 on every seed.
Short clips: the drop-in and prepare --window exactly 0 on every seed; static800 through the
chunker mean +0.57, SD 0.46, largest +1.24 (+1.08 on this set).
MARGIN["long"] is 3 standard deviations of the noisiest path (0.44) above zero, 1.32, rounded up
to 1.5 points. MARGIN["short"] stays 1.5 points (4 SD of the chunker's noise on the earlier 1.51
audio, 0.38; 3.3 SD of its 0.46 now): the chunker's short-clip mean of +0.57 is not noise but a
known loss (it keeps words decoded from its reflected padding when a clip ends within about 0.1 s
of its last word; docs/accuracy.md), so the margin is not widened to cover it.
Real defects are far larger: the static-800 chunker's former short-clip padding cost +8 to +10
points (set A and the judged set; +10.05 on this seed's 1.51 set), and 4 s windows without overlap
cost +3.2 points on average over the same 20 seeds (+1.2 to +5.1); test_the_guard_has_teeth decodes
with that broken setting and checks it trips the margin on this set (+4.77 against 1.5).
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
MARGIN = {"long": 1.5, "short": 1.5}  # points above whole-utterance WER (measured: module docstring)
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
    assert all(u.seconds > 30 for u in longs)  # several static 8 s windows each: seams are crossed
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
