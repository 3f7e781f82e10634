"""The factory's models must be what they claim: real NeMo signatures that really run."""

from __future__ import annotations

import numpy as np
import onnx
import pytest

from sherpa_fixed.decoding.sherpa_check import run_sherpa
from sherpa_fixed.ort import session_from_path
from sherpa_fixed.reading.onnx_graph import load_graph
from sherpa_fixed.testing import ModelSpec, subsampled

from .conftest import NEMO_DIR


def files(folder, enc="encoder.onnx"):
    return folder / enc, folder / "decoder.onnx", folder / "joiner.onnx", folder / "tokens.txt"


def signature(path):
    g = load_graph(path)
    return [(t.name, t.dtype, t.rank) for t in g.inputs], [(t.dtype, t.rank) for t in g.outputs]


@pytest.mark.parametrize("role", ["encoder", "decoder", "joiner"])
def test_signatures_match_a_genuine_nemo_export(make_folder, role):
    folder = make_folder()
    ours = signature(folder / f"{role}.onnx")
    genuine = signature(NEMO_DIR / "tdt-80" / f"{role}.onnx")
    assert ours[0] == genuine[0]
    assert ours[1] == genuine[1]


def test_decoder_second_state_input_has_batch_fixed_to_one(make_folder):
    g = load_graph(make_folder() / "decoder.onnx")
    assert g.inputs[3].name == "onnx::Slice_3"
    assert g.inputs[3].dims == (2, 1, 8)
    assert isinstance(g.inputs[2].dims[1], str)


@pytest.mark.parametrize("frames", [17, 160, 801, 1600])
def test_encoder_lengths_follow_nemo_subsampling(make_folder, frames):
    folder = make_folder()
    sess = session_from_path(folder / "encoder.onnx")
    out, lens = sess.run(None, {"audio_signal": np.zeros((2, 80, frames), np.float32),
                                "length": np.array([frames, frames // 2], np.int64)})
    assert out.shape == (2, 32, subsampled(frames))
    assert list(lens) == [subsampled(frames), subsampled(frames // 2)]


def test_all_models_pass_the_onnx_checker(make_folder):
    folder = make_folder(spec=ModelSpec(tdt=False, feat_dim=128, int8=True, external="single"))
    for name in ("encoder.onnx", "decoder.onnx", "joiner.onnx", "decoder.int8.onnx", "joiner.int8.onnx"):
        onnx.checker.check_model(str(folder / name))


@pytest.mark.parametrize("spec", [ModelSpec(), ModelSpec(tdt=False), ModelSpec(feat_dim=128),
                                  ModelSpec(external="single"), ModelSpec(external="scattered")],
                         ids=["tdt80", "rnnt80", "tdt128", "external", "scattered"])
def test_correct_models_decode_in_sherpa_onnx(make_folder, spec):
    folder = make_folder(spec=spec)
    run = run_sherpa(*files(folder), feature_dim=spec.feat_dim)
    assert run.ok, run.error
    assert run.results[0]["tokens"], "random weights still emit tokens"


def test_int8_twins_decode_in_sherpa_onnx(make_folder):
    folder = make_folder(spec=ModelSpec(int8=True, external="single", int8_external="own"))
    assert (folder / "encoder.int8.weights").exists()
    run = run_sherpa(folder / "encoder.int8.onnx", folder / "decoder.int8.onnx", folder / "joiner.int8.onnx",
                     folder / "tokens.txt")
    assert run.ok, run.error


@pytest.mark.parametrize("metadata, message", [
    ("missing", "'vocab_size' does not exist in the metadata"),
    ("tdt_no_url", "vocab_size: 17 != output_size: 22"),
    ("wrong_feat_dim", "index: 1 Got: 128 Expected: 80"),
])
def test_broken_metadata_fails_in_sherpa_onnx_as_in_real_exports(make_folder, metadata, message):
    run = run_sherpa(*files(make_folder(metadata=metadata)))
    assert not run.ok
    assert message in run.stderr


def test_baked_time_fails_at_other_lengths_like_a_static_nemo_export(make_folder):
    folder = make_folder(time="baked", batch="baked", frames=800)
    run = run_sherpa(*files(folder), samples=[32000])
    assert not run.ok
    assert "index: 2 Got: 200 Expected: 800" in run.stderr


def test_absolute_location_is_refused_by_current_onnxruntime(make_folder):
    run = run_sherpa(*files(make_folder(external="absolute")))
    assert not run.ok
    assert "Absolute path not allowed" in run.stderr


def test_positional_encoding_caps_length(make_folder):
    folder = make_folder(pos_emb_max_len=50)
    sess = session_from_path(folder / "encoder.onnx")
    ok = sess.run(None, {"audio_signal": np.zeros((1, 80, 400), np.float32), "length": np.array([400])})
    assert ok[0].shape[2] == 50
    with pytest.raises(Exception, match="broadcast"):
        sess.run(None, {"audio_signal": np.zeros((1, 80, 480), np.float32), "length": np.array([480])})
