"""The inspector on genuine NeMo exports: what it measures must equal what NeMo itself said."""

from __future__ import annotations

import pytest

from sherpa_fixed.decoding.sherpa_check import run_sherpa
from sherpa_fixed.reading.findings import NEEDS_PREPARE, NEEDS_WINDOW
from sherpa_fixed.reading.inspector import inspect_folder

from .conftest import NEMO_DIR, NEMO_VARIANTS


@pytest.mark.parametrize("name", NEMO_VARIANTS)
def test_measurements_equal_nemo_truth(nemo_copy, name):
    folder, truth = nemo_copy(name)
    v = inspect_folder(folder).variants[0]
    m = v.measured
    assert m.get("feat_dim") == truth["feat_dim"]
    assert m.get("vocab_size") == truth["vocab_size"]
    assert m.get("pred_rnn_layers") == truth["pred_rnn_layers"]
    assert m.get("pred_hidden") == truth["pred_hidden"]
    assert m.get("subsampling_factor") == truth["subsampling_factor"]
    assert m.get("encoder_dim") == truth["d_model"]
    assert m.get("tdt") == truth["tdt"]
    assert m.get("num_durations") == len(truth["durations"])
    assert not m.conflicts


def test_the_famous_80_is_the_mel_axis_and_time_is_dynamic():
    v = inspect_folder(NEMO_DIR / "tdt-80").variants[0]
    audio = v.encoder.inputs[0]
    assert audio.shape_text() == "[audio_signal_dynamic_axes_1, 80, audio_signal_dynamic_axes_2]"
    roles = [(a.role, a.size) for a in audio.axes]
    assert roles == [("batch", None), ("features", 80), ("time", None)]
    assert [a.describe() for a in audio.axes] == ["batch dynamic", "80 mel bins", "time dynamic"]
    assert not any(f.code.startswith("encoder.time_fixed") for f in v.findings)


@pytest.mark.parametrize("name", ["tdt-80", "rnnt-80", "tdt-128"])
def test_raw_exports_need_prepare_and_the_predicted_error_is_what_sherpa_prints(nemo_copy, name):
    folder, truth = nemo_copy(name)
    report = inspect_folder(folder)
    v = report.variants[0]
    assert report.verdict.code == NEEDS_PREPARE
    audit = {a.key: a for a in v.metadata_audit}
    for key in ("vocab_size", "subsampling_factor", "pred_rnn_layers", "pred_hidden"):
        assert audit[key].status == "missing" and audit[key].fatal
        assert audit[key].expected == str(truth[key])
    assert audit["feat_dim"].expected == str(truth["feat_dim"])
    assert ("tdt" in audit["url"].expected) == truth["tdt"]
    run = run_sherpa(folder / "encoder.onnx", folder / "decoder.onnx", folder / "joiner.onnx", folder / "tokens.txt")
    assert not run.ok
    assert v.sherpa_error == run.error


def test_static_export_is_baked_statically_and_by_probe(nemo_copy):
    folder, truth = nemo_copy("tdt-80-static800")
    report = inspect_folder(folder)
    v = report.variants[0]
    time = v.time_axis()
    assert (time.size, time.baked) == (800, True)
    assert any("800" in e for e in time.evidence)
    assert report.verdict.code == NEEDS_WINDOW

    probed = inspect_folder(folder, probe=True).variants[0]
    assert probed.probe.time_baked is True
    assert probed.probe.batch_baked is True
    assert probed.probe.subsampling_factor == truth["subsampling_factor"]
    failed = [r for r in probed.probe.runs if not r.ok]
    assert any("Mul_3" in (r.error or "") for r in failed)  # FACTS.md section 4's node


def test_dynamic_export_probe_measures_subsampling_by_running(nemo_copy):
    folder, truth = nemo_copy("rnnt-80")
    v = inspect_folder(folder, probe=True).variants[0]
    assert v.probe.error is None
    assert v.probe.subsampling_factor == truth["subsampling_factor"]
    assert v.measured.values["subsampling_factor"].source.startswith("probe")
    assert all(r.ok for r in v.probe.runs)


def test_positional_encoding_limit_is_found_and_true(nemo_copy):
    folder, truth = nemo_copy("tdt-80")
    v = inspect_folder(folder).variants[0]
    limit = v.measured.get("max_output_frames")
    assert limit == truth["pos_emb_max_len"]
    import numpy as np

    from sherpa_fixed.ort import session_from_path

    sess = session_from_path(folder / "encoder.onnx")
    frames = (limit + 8) * 8
    with pytest.raises(Exception, match="broadcast"):
        sess.run(None, {"audio_signal": np.zeros((1, 80, frames), np.float32), "length": np.array([frames])})
