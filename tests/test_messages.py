"""Every message a user sees is true, every piece of advice runnable, every exit code as `--help` says.

Each test here started as a reproduction of a message that lied, advice that could not be followed,
or an exit code that contradicted the help text (issue 11).
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import sherpa_onnx
from click.testing import CliRunner

from sherpa_fixed import OfflineRecognizer
from sherpa_fixed.cli import main
from sherpa_fixed.decoding.audio import write_wav
from sherpa_fixed.oracle import OracleSpec, expected_text, oracle_audio, random_tokens, write_oracle_folder


def run(*args):
    r = CliRunner().invoke(main, list(map(str, args)))
    return r.exit_code, r.stdout, r.stderr


@pytest.fixture(scope="module")
def dynamic_oracle(tmp_path_factory):
    """A dynamic-time model that really recognises its tone "speech", and one utterance of it."""
    root = tmp_path_factory.mktemp("msg")
    model = write_oracle_folder(root / "model", OracleSpec())
    toks = random_tokens(12, 5)
    audio, _ = oracle_audio(toks, seed=5)
    wav = root / "speech.wav"
    write_wav(wav, audio, 16000)
    return model, wav, expected_text(toks), root


# ----------------------------------------------------------------------------- audio


def test_tiny_audio_is_reported_and_the_batch_goes_on(dynamic_oracle):
    """Under 80 samples a dynamic encoder gets no feature frame; this used to end the batch with exit 3."""
    model, wav, text, root = dynamic_oracle
    write_wav(root / "tiny.wav", np.full(50, 0.3), 16000)
    write_wav(root / "silence.wav", np.zeros(16000), 16000)
    code, out, err = run("transcribe", model, wav, root / "tiny.wav", root / "silence.wav", wav)
    assert code == 1  # some failed: the documented code
    assert out.count(f"{wav}: {text}") == 2
    assert f"{root / 'silence.wav'}: \n" in out
    assert err.count("\n") == 1 and "tiny.wav: audio too short" in err and "internal error" not in err


def test_silence_is_an_empty_transcript(dynamic_oracle):
    model, _, _, root = dynamic_oracle
    write_wav(root / "silence2.wav", np.zeros(8000), 16000)
    code, out, err = run("transcribe", model, root / "silence2.wav")
    assert (code, out, err) == (0, "\n", "")


@pytest.mark.parametrize("rate", [16000, 44100, 8000, 22050])
def test_drop_in_gives_nothing_where_stock_raises_on_tiny_input(dynamic_oracle, rate):
    """The drop-in decodes every length stock sherpa-onnx decodes, identically, and tiny ones to nothing.

    The boundary (80 samples at the model's rate, after sherpa-onnx's own resampling) is found by
    stock sherpa-onnx here, not assumed: its error and our empty result must switch at the same length.
    """
    model, *_ = dynamic_oracle
    files = [str(model / n) for n in ("encoder.onnx", "decoder.onnx", "joiner.onnx", "tokens.txt")]
    stock = sherpa_onnx.OfflineRecognizer.from_transducer(*files, model_type="nemo_transducer")
    ours = OfflineRecognizer.from_transducer(*files, model_type="nemo_transducer")
    edge = math.floor(79 * rate / 16000)
    raised = []
    for n in range(max(1, edge - 2), edge + 4):
        x = np.random.default_rng(n).standard_normal(n).astype(np.float32) * 0.1
        s = stock.create_stream()
        s.accept_waveform(rate, x)
        try:
            stock.decode_stream(s)
            want = s.result.tokens
        except RuntimeError:
            want = None
            raised.append(n)
        o = ours.create_stream()
        o.accept_waveform(rate, x)
        ours.decode_stream(o)
        assert list(o.result.tokens) == (list(want) if want is not None else []), n
    assert raised and raised[-1] < edge + 3  # the boundary was inside the range tried
    s = stock.create_stream()
    s.accept_waveform(rate, np.zeros(rate, np.float32))
    stock.decode_stream(s)
    o = ours.create_stream()
    o.accept_waveform(rate, np.zeros(rate, np.float32))
    ours.decode_stream(o)
    assert o.result.text == s.result.text
