"""prepare --window: a fixed-window encoder that any sherpa-onnx binding can feed any length."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import sherpa_onnx

from sherpa_fixed import OfflineRecognizer
from sherpa_fixed.decoding.audio import write_wav
from sherpa_fixed.decoding.sherpa_check import run_sherpa
from sherpa_fixed.errors import BadInputError
from sherpa_fixed.oracle import OracleSpec, expected_text, oracle_audio, random_tokens, write_oracle_folder
from sherpa_fixed.reading.inspector import inspect_folder
from sherpa_fixed.rewriting.prepare import prepare_folder
from sherpa_fixed.rewriting.windowing import run_by_hand, window_params

from .conftest import run_python


def files(d):
    return dict(encoder=f"{d}/encoder.onnx", decoder=f"{d}/decoder.onnx", joiner=f"{d}/joiner.onnx",
                tokens=f"{d}/tokens.txt", model_type="nemo_transducer")


def plain_decode(folder, audio):
    rec = sherpa_onnx.OfflineRecognizer.from_transducer(**files(folder))
    s = rec.create_stream()
    s.accept_waveform(16000, audio)
    rec.decode_stream(s)
    return s.result


@pytest.fixture(scope="module")
def windowed_static(tmp_path_factory):
    from .conftest import NEMO_DIR

    folder = tmp_path_factory.mktemp("w") / "static"
    shutil.copytree(NEMO_DIR / "tdt-80-static800", folder)
    (folder / "truth.json").unlink()
    result = prepare_folder(folder, in_place=True, window=True)
    assert result.exit_code == 0, result.to_json()
    assert {c.kind for c in result.checks} == {"window", "sherpa"} and all(c.ok for c in result.checks)
    return folder


def test_genuine_static_export_decodes_minutes_in_stock_sherpa(windowed_static):
    audio = (np.random.default_rng(0).standard_normal(16000 * 180) * 0.1).astype(np.float32)
    r = plain_decode(windowed_static, audio)
    assert len(r.tokens) > 1000
    assert list(r.timestamps) == sorted(r.timestamps) and r.timestamps[-1] < 180


def test_sherpa_onnx_command_line_decoder_decodes_it(windowed_static, tmp_path):
    wav = tmp_path / "long.wav"
    write_wav(wav, np.random.default_rng(1).standard_normal(16000 * 95) * 0.1, 16000)
    exe = shutil.which("sherpa-onnx-offline", path=os.pathsep.join([str(Path(sys.executable).parent),
                                                                     os.environ.get("PATH", "")]))
    assert exe, "sherpa-onnx-bin (a test dependency) provides sherpa-onnx-offline"
    f = files(windowed_static)
    proc = subprocess.run([exe, f"--encoder={f['encoder']}", f"--decoder={f['decoder']}",
                           f"--joiner={f['joiner']}", f"--tokens={f['tokens']}", "--model-type=nemo_transducer",
                           str(wav)], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    out = proc.stdout + proc.stderr
    assert '"tokens"' in out and "Real time factor" in out


@pytest.mark.parametrize("tdt", [True, False], ids=["tdt", "rnnt"])
def test_oracle_transcript_exact_at_every_seam_in_stock_sherpa(tmp_path, tdt):
    folder = write_oracle_folder(tmp_path / "o", OracleSpec(tdt=tdt, fixed_frames=400))
    assert prepare_folder(folder, in_place=True, window=True, context=0.48).exit_code == 0
    rec = sherpa_onnx.OfflineRecognizer.from_transducer(**files(folder))
    for seed, count in ((3, 2), (4, 50)):
        toks = random_tokens(count, seed)
        audio, _ = oracle_audio(toks, seed=seed)
        for shift in range(0, 4 * 16000, 2917):
            a = np.concatenate([(np.random.default_rng(shift).standard_normal(shift) * 1e-2).astype(np.float32),
                                audio])
            s = rec.create_stream()
            s.accept_waveform(16000, a)
            rec.decode_stream(s)
            assert s.result.text == expected_text(toks), (seed, shift)


def test_windowed_graph_equals_windows_by_hand_for_any_length_and_batch(make_folder):
    folder = make_folder(time="baked", batch="baked", frames=400, external="single")
    original = onnx.load(str(folder / "encoder.onnx"))
    params = window_params(400, 8, context_seconds=0.8)
    assert (params.hop, params.context) == (240, 80)
    assert prepare_folder(folder, in_place=True, window=True, context=0.8).exit_code == 0
    so = ort.SessionOptions()
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    orig = ort.InferenceSession(original.SerializeToString(), so, providers=["CPUExecutionProvider"])
    win = ort.InferenceSession(str(folder / "encoder.onnx"), so, providers=["CPUExecutionProvider"])
    rng = np.random.default_rng(0)
    lengths = [500, 1, 17, 399, 400, 401, 1313]
    x = rng.standard_normal((len(lengths), 80, max(lengths))).astype(np.float32)
    out, lens = win.run(None, {"audio_signal": x, "length": np.array(lengths)})
    assert list(lens) == [-(-n // 8) for n in lengths]
    for i, n in enumerate(lengths):
        want = run_by_hand(orig, x[i:i + 1], n, params)
        assert np.array_equal(out[i:i + 1, :, :want.shape[2]], want)
        assert not out[i, :, want.shape[2]:].any()  # batch padding is zeros


def test_windows_emit_equal_pieces_and_the_loop_carries_nothing_that_grows(make_folder):
    """An hour is 180 windows of 20 s: a Loop that carried the output so far and grew it by a Concat
    copied it at every window (quadratic time) and fragmented onnxruntime's arena (docs/long-audio.md)."""
    folder = make_folder()
    assert prepare_folder(folder, in_place=True, window=True, window_seconds=10).exit_code == 0
    model = onnx.load(str(folder / "encoder.onnx"), load_external_data=False)
    item_loop = next(n for n in model.graph.node if n.op_type == "Loop")
    item_body = next(a.g for a in item_loop.attribute if a.name == "body")
    window_loop = next(n for n in item_body.node if n.op_type == "Loop")
    assert list(window_loop.input)[2:] == []  # no loop-carried values: trip count and condition only
    body = next(a.g for a in window_loop.attribute if a.name == "body")
    (piece,) = body.output[1:]
    dims = [d.dim_value for d in piece.type.tensor_type.shape.dim]
    assert dims == [1, 32, 1000 // 8] and all(dims)  # one window's frames, every window the same size
    assert not any(n.op_type == "Concat" and n.attribute[0].i == 2 for n in body.node)  # no time concat


def test_external_weights_stay_shared_and_old_sherpa_loads_it(make_folder, old_sherpa_python, tmp_path):
    folder = make_folder(time="baked", batch="baked", frames=400, external="single", metadata="missing")
    digest = hashlib.sha256((folder / "encoder.weights").read_bytes()).hexdigest()
    inode = (folder / "encoder.weights").stat().st_ino
    assert prepare_folder(folder, in_place=True, window=True).exit_code == 0
    assert sorted(p.name for p in folder.iterdir()) == ["decoder.onnx", "encoder.onnx", "encoder.weights",
                                                        "joiner.onnx", "tokens.txt"]
    assert (folder / "encoder.weights").stat().st_ino == inode
    assert hashlib.sha256((folder / "encoder.weights").read_bytes()).hexdigest() == digest
    assert (folder / "encoder.onnx").stat().st_size < 200_000  # the graph holds no weights
    assert run_sherpa(*(files(folder)[k] for k in ("encoder", "decoder", "joiner", "tokens")),
                      samples=[16000 * 20], cwd=folder, python=old_sherpa_python).ok
    code = r"""
import sys, numpy as np
from sherpa_fixed import OfflineRecognizer
r = OfflineRecognizer.from_model_dir(sys.argv[1])
x = np.random.default_rng(0).standard_normal(16000 * 30).astype(np.float32) * 0.1
s = r.create_stream(); s.accept_waveform(16000, x)
r.decode_stream(s); print(type(s.result).__module__, len(s.result.tokens))
"""
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    proc = run_python(old_sherpa_python, code, str(folder), cwd=elsewhere)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith("sherpa_onnx")  # delegated whole: the graph windows itself


def test_inspect_reports_it_prepare_leaves_it_and_the_recognizer_does_not_rewindow(windowed_static):
    report = inspect_folder(windowed_static)
    v = report.variants[0]
    assert report.verdict.code == "works"
    assert v.window == {"window_frames": 800, "hop_frames": 608, "context_frames": 96, "subsampling_factor": 8,
                        "by": v.window["by"]}
    assert json.loads(json.dumps(report.to_json()))["variants"][0]["window"]["hop_frames"] == 608
    assert any(f.code == "encoder.windowed" for f in v.findings)
    before = {p.name: p.stat().st_mtime_ns for p in windowed_static.iterdir()}
    again = prepare_folder(windowed_static, in_place=True, window=True)
    assert again.nothing_to_do and {p.name: p.stat().st_mtime_ns for p in windowed_static.iterdir()} == before
    rec = OfflineRecognizer.from_model_dir(windowed_static)
    audio = (np.random.default_rng(2).standard_normal(16000 * 70) * 0.1).astype(np.float32)
    s = rec.create_stream()
    s.accept_waveform(16000, audio)
    rec.decode_stream(s)
    assert type(s.result).__module__.startswith("sherpa_onnx")  # sherpa-onnx's own result: no chunking
    assert list(s.result.tokens) == list(plain_decode(windowed_static, audio).tokens)


def test_int8_static_encoder_windows_too(make_folder):
    folder = make_folder(time="baked", batch="baked", frames=400, int8=True)
    result = prepare_folder(folder, in_place=True, window=True)
    assert result.exit_code == 0, result.to_json()
    windowed = [c for c in result.checks if c.kind == "window"]
    assert {c.file for c in windowed} == {"encoder.onnx", "encoder.int8.onnx"} and all(c.ok for c in windowed)
    audio = (np.random.default_rng(3).standard_normal(16000 * 25) * 0.1).astype(np.float32)
    assert run_sherpa(folder / "encoder.int8.onnx", folder / "decoder.int8.onnx", folder / "joiner.int8.onnx",
                      folder / "tokens.txt", samples=[len(audio)]).ok


def test_parameters_are_checked(make_folder):
    with pytest.raises(BadInputError, match="must equal the window"):
        window_params(800, 8, hop_seconds=5.0, context_seconds=2.0)
    with pytest.raises(BadInputError, match="no hop"):
        window_params(800, 8, context_seconds=4.0)
    p = window_params(800, 8, hop_seconds=6.0)  # on the 8-frame grid: context 100 -> 96 frames, hop 608
    assert (p.hop, p.context) == (608, 96) and p.hop + 2 * p.context == 800
    with pytest.raises(BadInputError, match="go with --window"):
        prepare_folder(make_folder(), dry_run=True, hop=2.0)


def test_window_on_a_dynamic_encoder_bounds_attention_to_windows(make_folder):
    """Issue 16: on a dynamic encoder --window builds the same Loop, over windows of --window-seconds;
    a second run changes nothing."""
    folder = make_folder()
    result = prepare_folder(folder, in_place=True, window=True, window_seconds=10)
    assert result.exit_code == 0 and [c.kind for c in result.plan.changes] == ["window"]
    assert all(c.ok for c in result.checks) and {c.kind for c in result.checks} == {"window", "sherpa"}
    assert prepare_folder(folder, in_place=True, window=True, window_seconds=10).nothing_to_do
