"""The drop-in recognizer: exact transcripts across window seams, identity with plain sherpa-onnx
where no windowing is needed, and the real static-shape NeMo export running at any length."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import sherpa_onnx

from sherpa_fixed import OfflineRecognizer
from sherpa_fixed.decoding.audio import resample
from sherpa_fixed.errors import BadInputError
from sherpa_fixed.oracle import OracleSpec, expected_text, oracle_audio, random_tokens, write_oracle_folder
from sherpa_fixed.rewriting.prepare import prepare_folder


def files(d, suffix=""):
    return dict(encoder=f"{d}/encoder{suffix}.onnx", decoder=f"{d}/decoder{suffix}.onnx",
                joiner=f"{d}/joiner{suffix}.onnx", tokens=f"{d}/tokens.txt", model_type="nemo_transducer")


def decode(rec, audio, rate=16000, chunk=None):
    s = rec.create_stream()
    chunk = chunk or len(audio)
    for i in range(0, len(audio), chunk):
        s.accept_waveform(rate, audio[i:i + chunk])
    rec.decode_stream(s)
    return s.result


@pytest.fixture(scope="module", params=[True, False], ids=["tdt", "rnnt"])
def oracle(request, tmp_path_factory):
    root = tmp_path_factory.mktemp("oracle")
    tdt = request.param
    return (write_oracle_folder(root / "dynamic", OracleSpec(tdt=tdt)),
            write_oracle_folder(root / "fixed", OracleSpec(tdt=tdt, fixed_frames=400)))


def test_oracle_full_context_decode_is_the_known_sequence(oracle):
    dynamic, _ = oracle
    plain = sherpa_onnx.OfflineRecognizer.from_transducer(**files(dynamic))
    for seed in range(5):
        toks = random_tokens(40, seed)
        audio, _ = oracle_audio(toks, seed=seed)
        assert decode(plain, audio).text == expected_text(toks)


def test_oracle_fixed_window_refuses_other_lengths_in_plain_sherpa(oracle):
    _, fixed = oracle
    from sherpa_fixed.decoding.sherpa_check import run_sherpa

    run = run_sherpa(*(files(fixed)[k] for k in ("encoder", "decoder", "joiner", "tokens")), samples=[16000 * 7])
    assert not run.ok and "Expected: 400" in run.stderr


@pytest.mark.parametrize("overlap", [0.48, 1.0, 2.0])
def test_chunked_decode_is_exact_at_every_seam_placement(oracle, overlap):
    _, fixed = oracle
    rec = OfflineRecognizer.from_transducer(**files(fixed), overlap_seconds=overlap)
    checked = 0
    for seed, count in ((0, 3), (1, 12), (2, 45)):
        toks = random_tokens(count, seed)
        audio, segments = oracle_audio(toks, seed=seed)
        for shift in range(0, 4 * 16000, 3331):  # seams land inside segments, in gaps, everywhere
            lead = (np.random.default_rng(shift).standard_normal(shift) * 1e-2).astype(np.float32)
            a = np.concatenate([lead, audio])
            r = decode(rec, a, chunk=[None, 1600, 12345][shift % 3])
            assert r.text == expected_text(toks), (seed, shift, r.text)
            assert list(r.timestamps) == sorted(r.timestamps)
            assert all(0 <= t < len(a) / 16000 for t in r.timestamps)
            onsets = [s.start + shift / 16000 for s in segments]
            assert all(abs(t - o) <= 0.2 for t, o in zip(r.timestamps, onsets, strict=True))
            checked += 1
    assert checked > 50


def test_audio_shorter_than_one_window_decodes_as_the_dynamic_model_does_whole(oracle):
    """A clip shorter than the fixed window gives what plain sherpa-onnx gives for the same clip on the
    dynamic model (whole-utterance normalisation). The oracle emits where a tone band sits 1.25 std above
    its mean, so it is as sensitive to normalisation as a model can be: seed 0's tone fills 46 % of its
    clip, the dynamic model hears nothing, and the former noise padding (which diluted the statistics)
    made the fixed window hear a token the whole utterance does not contain."""
    dynamic, fixed = oracle
    rec = OfflineRecognizer.from_transducer(**files(fixed))
    plain = sherpa_onnx.OfflineRecognizer.from_transducer(**files(dynamic))
    for seed in range(6):
        toks = random_tokens(1 + seed % 3, seed)
        audio, _ = oracle_audio(toks, seed=seed, lead=0.2, tail=0.1)
        assert len(audio) < 4 * 16000
        r, whole = decode(rec, audio), decode(plain, audio)
        assert same_result(r, whole), (seed, r.text, whole.text)
        assert all(t < len(audio) / 16000 for t in r.timestamps)


def test_short_audio_is_padded_with_itself_reflected():
    from sherpa_fixed.decoding.chunker import Window, window_samples

    real = np.arange(1, 6, dtype=np.float32)
    fed = window_samples(real, Window(0, 0, 5, 12, 0, 5))
    assert fed.tolist() == [1, 2, 3, 4, 5, 5, 4, 3, 2, 1, 1, 2, 3, 4, 5, 5, 4]
    tail = window_samples(real, Window(3, 1280, 5, 2, 0, 5))  # a slid-back final window: mirrored edge
    assert tail.tolist() == [1, 2, 3, 4, 5, 5, 4]


def test_final_window_slides_back_over_real_audio(oracle):
    from sherpa_fixed.decoding.chunker import plan_windows

    _, fixed = oracle
    rec = OfflineRecognizer.from_transducer(**files(fixed), overlap_seconds=1.0)
    spec = rec._chunking.spec
    for n in (64001, 64000 + 1279, 100000, 16000 * 9 + 77):
        plan = plan_windows(n, spec)
        last = plan[-1]
        assert last.start + last.length == n and last.pad < spec.grid
        assert all(w.start % spec.grid == 0 for w in plan)
        assert [w.keep_from for w in plan[1:]] == [w.keep_to for w in plan[:-1]]


def test_dynamic_encoder_long_audio_is_windowed_exactly(oracle):
    dynamic, _ = oracle
    rec = OfflineRecognizer.from_transducer(**files(dynamic), window_seconds=5.0, overlap_seconds=1.0)
    toks = random_tokens(60, 9)
    audio, _ = oracle_audio(toks, seed=9)
    r = decode(rec, audio, chunk=4000)
    assert r.windows > 5
    assert r.text == expected_text(toks)


def test_resampled_input_is_exact(oracle):
    _, fixed = oracle
    rec = OfflineRecognizer.from_transducer(**files(fixed))
    toks = random_tokens(30, 4)
    audio, _ = oracle_audio(toks, seed=4)
    for rate in (22050, 44100, 48000):
        assert decode(rec, resample(audio, 16000, rate), rate=rate, chunk=rate // 3).text == expected_text(toks)


class CountingRecognizer(OfflineRecognizer):
    """Counts the windows per sherpa-onnx call (instrumentation, the decoding is real)."""

    calls: list[int]

    def _decode_pending(self, streams):
        self.calls = getattr(self, "calls", [])
        original = sherpa_onnx.OfflineRecognizer.decode_streams

        def spy(rec, ss):
            self.calls.append(len(ss))
            return original(rec, ss)

        sherpa_onnx.OfflineRecognizer.decode_streams = spy
        try:
            return super()._decode_pending(streams)
        finally:
            sherpa_onnx.OfflineRecognizer.decode_streams = original


def test_windows_are_batched_when_the_batch_axis_is_dynamic(tmp_path):
    dynamic = write_oracle_folder(tmp_path / "d", OracleSpec())
    toks = random_tokens(80, 5)
    audio, _ = oracle_audio(toks, seed=5)
    batched = CountingRecognizer.from_transducer(**files(dynamic), window_seconds=4.0, max_batch=4)
    single = CountingRecognizer.from_transducer(**files(dynamic), window_seconds=4.0, max_batch=1)
    a, b = decode(batched, audio), decode(single, audio)
    assert a.text == b.text == expected_text(toks)
    assert a.timestamps == b.timestamps
    assert max(batched.calls) == 4
    assert getattr(single, "calls", []) == []  # batch 1: one decode_stream per window, never decode_streams


def test_fixed_batch_encoder_decodes_windows_one_by_one(oracle):
    _, fixed = oracle  # batch fixed to 1, as static exports are
    rec = CountingRecognizer.from_transducer(**files(fixed))
    assert rec._chunking.batch == 1
    toks = random_tokens(40, 6)
    audio, _ = oracle_audio(toks, seed=6)
    assert decode(rec, audio).text == expected_text(toks)
    assert getattr(rec, "calls", []) == []


# ----------------------------------------------------------------------------- identity with plain sherpa-onnx


def same_result(a, b):
    return (a.text, list(a.tokens), list(a.timestamps)) == (b.text, list(b.tokens), list(b.timestamps))


@pytest.mark.parametrize("name", ["tdt-80", "rnnt-80", "tdt-128"])
def test_dynamic_nemo_export_short_audio_identical_to_plain_sherpa(nemo_copy, tmp_path, name):
    src, _truth = nemo_copy(name)
    folder = tmp_path / "prepared"
    assert prepare_folder(src, output=folder).exit_code == 0
    ours = OfflineRecognizer.from_model_dir(folder)
    plain = sherpa_onnx.OfflineRecognizer.from_transducer(**files(folder))
    rng = np.random.default_rng(0)
    for seconds in (0.5, 3.0, 11.7):
        audio = (rng.standard_normal(int(16000 * seconds)) * 0.1).astype(np.float32)
        a, b = decode(ours, audio), decode(plain, audio)
        assert type(a) is type(b)  # delegated: plain sherpa-onnx's own result object
        assert same_result(a, b)
    streams = []
    for rec in (ours, plain):
        ss = [rec.create_stream() for _ in range(3)]
        for i, s in enumerate(ss):
            s.accept_waveform(16000, (np.random.default_rng(i).standard_normal(8000 * (i + 1)) * 0.1)
                              .astype(np.float32))
        rec.decode_streams(ss)
        streams.append(ss)
    assert all(same_result(x.result, y.result) for x, y in zip(*streams, strict=True))


def test_static_nemo_export_one_window_matches_plain_and_any_length_runs(nemo_copy, tmp_path):
    src, _truth = nemo_copy("tdt-80-static800")
    folder = tmp_path / "prepared"
    result = prepare_folder(src, output=folder)
    assert result.exit_code == 1  # metadata fixed; time stays baked, so plain sherpa-onnx needs exact windows
    ours = OfflineRecognizer.from_model_dir(folder)
    assert ours._chunking.fixed_frames == 800 and ours._chunking.batch == 1
    plain = sherpa_onnx.OfflineRecognizer.from_transducer(**files(folder))
    audio = (np.random.default_rng(3).standard_normal(800 * 160) * 0.1).astype(np.float32)
    assert same_result(decode(ours, audio), decode(plain, audio))
    for seconds in (2.5, 8.0, 31.3, 75.0):  # shorter than, equal to, several windows, beyond
        long = (np.random.default_rng(int(seconds)).standard_normal(int(16000 * seconds)) * 0.1).astype(np.float32)
        r = decode(ours, long, chunk=16000)
        assert list(r.timestamps) == sorted(r.timestamps)
        assert all(0 <= t < seconds for t in r.timestamps)
        assert r.tokens


def test_dynamic_audio_up_to_the_one_pass_limit_is_plain_sherpa_onnx(tmp_path):
    """Dynamic encoders: up to 90 s (by default) is one pass, sherpa-onnx's own call and result object,
    since at the 1.1B size one pass is cheaper than 30 s windows plus overlaps up to about 60 s
    (docs/benchmarks.md); past it, 30 s windows. Given window_seconds alone, the window is the limit."""
    dynamic = write_oracle_folder(tmp_path / "d", OracleSpec())
    ours = OfflineRecognizer.from_transducer(**files(dynamic))
    plain = sherpa_onnx.OfflineRecognizer.from_transducer(**files(dynamic))
    assert ours._chunking.whole == 90 * 16000 and ours._chunking.spec.window == 30 * 16000
    rng = np.random.default_rng(5)
    for seconds, windowed in ((45.0, False), (89.9, False), (95.0, True)):
        audio = (rng.standard_normal(int(16000 * seconds)) * 0.1).astype(np.float32)
        a = decode(ours, audio, chunk=16000 * 7)
        if windowed:
            assert a.windows == 4  # 30 s windows, 2 s overlap: 0-30, 28-58, then two of one length
        else:
            b = decode(plain, audio)
            assert type(a) is type(b) and same_result(a, b)
    assert OfflineRecognizer.from_transducer(**files(dynamic), window_seconds=10.0)._chunking.whole == 10 * 16000
    assert OfflineRecognizer.from_transducer(**files(dynamic), whole_seconds=40.0)._chunking.whole == 40 * 16000


def test_dynamic_nemo_export_beyond_its_positional_limit_works_windowed(nemo_copy, tmp_path):
    src, _truth = nemo_copy("tdt-80")  # pos_emb_max_len 1000: plain sherpa-onnx fails past ~80 s
    folder = tmp_path / "prepared"
    prepare_folder(src, output=folder)
    from sherpa_fixed.decoding.sherpa_check import run_sherpa

    assert not run_sherpa(*(files(folder)[k] for k in ("encoder", "decoder", "joiner", "tokens")),
                          samples=[16000 * 90]).ok
    ours = OfflineRecognizer.from_model_dir(folder)
    assert ours._chunking.whole == 999 * 1280  # one pass stops an output frame short of the table's 1000
    r = decode(ours, (np.random.default_rng(1).standard_normal(16000 * 90) * 0.1).astype(np.float32))
    assert r.windows >= 3 and r.tokens and max(r.timestamps) < 90


# ----------------------------------------------------------------------------- API surface


def test_drop_in_surface(make_folder):
    folder = make_folder(int8=True)
    rec = OfflineRecognizer.from_model_dir(folder)
    assert isinstance(rec, sherpa_onnx.OfflineRecognizer)
    assert rec.config.model_config.transducer.encoder_filename.endswith("encoder.int8.onnx")
    assert OfflineRecognizer.from_model_dir(folder, int8=False).config.model_config.transducer.encoder_filename \
        .endswith("encoder.onnx")
    s = rec.create_stream()
    s.set_option("k", "v")
    assert s.has_option("k") and s.get_option("k") == "v"
    assert str(s.result)  # an empty result before decoding, as sherpa-onnx's
    for name in ("from_whisper", "from_paraformer", "from_nemo_ctc", "from_sense_voice"):
        assert getattr(OfflineRecognizer, name) is not None


@pytest.mark.parametrize("meta, words", [("missing", "'vocab_size' does not exist"),
                                         ("wrong_feat_dim", "index: 1 Got: 128 Expected: 80")])
def test_a_model_sherpa_would_exit_on_raises_instead(make_folder, meta, words):
    folder = make_folder(metadata=meta)
    with pytest.raises(BadInputError, match=words):
        OfflineRecognizer.from_model_dir(folder)


def test_empty_stream_is_a_clear_error(make_folder):
    rec = OfflineRecognizer.from_model_dir(make_folder())
    with pytest.raises(BadInputError, match="no audio"):
        rec.decode_stream(rec.create_stream())


def test_recognizer_loads_external_weights_in_old_sherpa_from_any_folder(make_folder, old_sherpa_python, tmp_path):
    from .conftest import run_python

    folder = make_folder(external="single")
    code = r"""
import sys, numpy as np
from sherpa_fixed import OfflineRecognizer
r = OfflineRecognizer.from_model_dir(sys.argv[1])
s = r.create_stream(); s.accept_waveform(16000, np.zeros(16000, np.float32) + 0.01); r.decode_stream(s)
from importlib.metadata import version; print(version("sherpa-onnx"), len(s.result.tokens))
"""
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    proc = run_python(old_sherpa_python, code, str(folder), cwd=elsewhere)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith("1.12.35")


def test_seam_rule_pairs_jittered_tokens():
    from sherpa_fixed.decoding.chunker import Token, seam

    g = 1280
    a = [Token(t, s, s / 16000) for t, s in ((" a", 10 * g), ("b", 20 * g), (" c", 30 * g))]
    b = [Token(t, s, s / 16000) for t, s in (("b", 21 * g), (" c", 30 * g), (" d", 40 * g))]
    # split at 21g: a's "b" (20g) and b's "b" (21g) are one token seen one frame apart
    keep, first = seam(a, b, split=21 * g, b_start=15 * g, a_end=35 * g, grid=g, reach=8 * g)
    merged = [t.text for t in a[:keep]] + [t.text for t in b[first:]]
    assert merged == [" a", "b", " c", " d"]
    # no shared token near the split: the time cut
    keep, first = seam(a[:1], b[2:], split=25 * g, b_start=15 * g, a_end=35 * g, grid=g, reach=8 * g)
    assert (keep, first) == (1, 0)


def test_chunker_plans_cover_everything_once():
    from sherpa_fixed.decoding.chunker import WindowSpec, plan_windows

    for fixed, window, overlap in itertools.product((True, False), (64000, 128000), (0, 16 * 1280)):
        spec = WindowSpec(window, overlap, 1280, fixed)
        for n in (1, 1279, window - 1, window, window + 1, window + spec.hop, window + spec.hop + 1,
                  2 * window - 1, 3 * window + 12345):
            plan = plan_windows(n, spec)
            assert plan[0].keep_from == 0 and plan[-1].keep_to == n
            assert all(a.keep_to == b.keep_from and a.keep_from <= a.keep_to for a, b in itertools.pairwise(plan))
            assert all(w.keep_from >= w.start and w.keep_to <= w.start + w.length for w in plan)
            assert all(w.start % 1280 == 0 and w.length <= window for w in plan)
            assert all(b.start <= a.end for a, b in itertools.pairwise(plan))  # nothing unheard
            if fixed:
                assert all(w.length + w.pad == window for w in plan)
            elif len(plan) > 1:
                # the final stretch is two (or three) windows of one length, each more than half a
                # window: no short tail for sherpa-onnx to pad a batch to, none without context
                tail = [w for w in plan if w.start >= plan[-1].start - 2 * window]
                tail = tail[next(i for i, w in enumerate(tail) if w.length == plan[-1].length):]
                assert len(tail) >= 2 and all(w.length == plan[-1].length > window // 2 for w in tail)
                assert all(w.length == window for w in plan[:len(plan) - len(tail)])
                assert plan[-1].end == n


def test_no_batch_mixes_window_lengths(tmp_path, monkeypatch):
    """sherpa-onnx pads every stream of a decode_streams batch to the longest and runs the encoder over
    the padding (DecodeStreams: PadSequence). Record what each sherpa-onnx call really receives: the
    samples accepted by every raw stream of the batch. Formerly 60 s in 30 s windows was 30 + 30 + 4 s
    in one batch: 90 s of encoder work for 60 s of audio."""
    from sherpa_onnx.lib._sherpa_onnx import OfflineStream as RawStream

    fed: dict[int, int] = {}
    alive = []  # every raw stream stays referenced, so no id is reused
    batches: list[list[int]] = []
    accept = RawStream.accept_waveform

    def spy_accept(self, rate, samples):
        alive.append(self)
        fed[id(self)] = fed.get(id(self), 0) + len(samples)
        return accept(self, rate, samples)

    original = sherpa_onnx.OfflineRecognizer.decode_streams

    def spy_decode(rec, ss):
        batches.append([fed[id(x)] for x in ss])
        return original(rec, ss)

    monkeypatch.setattr(RawStream, "accept_waveform", spy_accept)
    monkeypatch.setattr(sherpa_onnx.OfflineRecognizer, "decode_streams", spy_decode)
    dynamic = write_oracle_folder(tmp_path / "d", OracleSpec())
    rec = OfflineRecognizer.from_transducer(**files(dynamic), window_seconds=4.0, overlap_seconds=0.48, max_batch=8)
    window = rec._chunking.spec.window
    for count, seed in ((20, 1), (33, 2), (47, 3)):
        toks = random_tokens(count, seed)
        audio, _ = oracle_audio(toks, seed=seed)
        for chunk in (None, 7777):
            batches.clear()
            r = decode(rec, audio, chunk=chunk)
            assert r.text == expected_text(toks)
            assert batches and all(len(set(b)) == 1 for b in batches), batches
            sizes = [n for b in batches for n in b]
            assert min(sizes) > window // 2 and max(sizes) <= window
            extra = sum(sizes) - len(audio)  # encoder work beyond the audio: the overlaps only
            assert extra <= (r.windows - 1) * (rec._chunking.spec.overlap + 2 * rec._chunking.spec.grid)


def test_static_speech_model_short_clips_match_whole_utterance_decoding():
    """The trained speech model (tests/data/speech): its static 800-frame export through the recognizer
    against plain sherpa-onnx with its dynamic export, whole utterance, on clips shorter than the window
    (espeak-ng speech no set was tuned on). Measured: the former noise padding agreed on 18 of these 40
    clips and doubled the WER (15.8 % against 7.4 %); reflection padding agrees on 38."""
    from pathlib import Path

    from sherpa_fixed.checking import speechgen
    from sherpa_fixed.checking.wer import total, word_errors

    speech = Path(__file__).parent / "data" / "speech"
    static = OfflineRecognizer.from_transducer(**files(speech / "static800"))
    assert static._chunking.fixed_frames == 800
    plain = sherpa_onnx.OfflineRecognizer.from_transducer(**files(speech / "dynamic"))
    clips = [speechgen.short_clip(8, i, speechgen.UNSEEN_JUDGED, p_unseen=0.3) for i in range(40)]
    assert all(len(a) < 800 * 160 for a, _ in clips)
    ours = [decode(static, a).text for a, _ in clips]
    whole = [decode(plain, a).text for a, _ in clips]
    same = sum(a == b for a, b in zip(ours, whole, strict=True))
    wer_ours = total([word_errors(item.text, h) for (_, item), h in zip(clips, ours, strict=True)]).wer
    wer_whole = total([word_errors(item.text, h) for (_, item), h in zip(clips, whole, strict=True)]).wer
    assert same >= 34, (same, ours, whole)
    assert wer_ours <= wer_whole + 0.015, (wer_ours, wer_whole)


def test_a_word_begun_in_the_last_frame_of_a_padded_clip_is_dropped():
    """Audio shorter than the window: a word-initial token in its last output frame was begun from the
    reflected padding (the real audio holds at most 80 ms of it), so it is not kept; a continuation token
    there is, and so is anything in a window that is not padded (docs/accuracy.md, chunker.py)."""
    from types import SimpleNamespace

    from sherpa_fixed.decoding.chunker import Window, WindowSpec, window_tokens

    spec = WindowSpec(64000, 0, 1280, True)
    n = 1280 * 10 + 500  # the last output frame starts at sample 12800
    result = SimpleNamespace(tokens=[" go", "ing", " on", "ly"], timestamps=[0.08, 0.16, 0.80, 0.80])
    padded = Window(0, 0, n, 64000 - n, 0, n)
    kept = [t.text for t in window_tokens(result, padded, spec, 16000, n)]
    assert kept == [" go", "ing", "ly"]
    full = Window(0, 0, 64000, 0, 0, 64000)
    assert [t.text for t in window_tokens(result, full, spec, 16000, 64000 * 2)] == [" go", "ing", " on", "ly"]
