"""The parts of `sherpa-fixed export` that need no torch: reading .nemo archives, refusing bad ones,
and turning torch's raw encoder (one file per tensor over 2 GiB) into encoder.onnx + ONE encoder.weights.

These run in the default environment (no [export] extra); the end-to-end
exports are in test_export.py (`pytest -m export`).
"""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
import tarfile

import onnx
import pytest

from sherpa_fixed.errors import BadInputError
from sherpa_fixed.exporting.archive import CTC, HYBRID, OTHER, TRANSDUCER, classify, read_archive
from sherpa_fixed.exporting.assemble import WEIGHTS_NAME, write_encoder
from sherpa_fixed.reading.onnx_graph import external_info, graph_tensors, uses_external_data
from sherpa_fixed.rewriting.weights import ONNX_THRESHOLD

from .conftest import REPO
from .test_prepare import assert_bit_identical

TRANSDUCER_CFG = """target: nemo.collections.asr.models.rnnt_bpe_models.EncDecRNNTBPEModel
preprocessor: {features: 80}
encoder: {feat_in: 80}
decoder: {_target_: nemo.collections.asr.modules.RNNTDecoder}
joint: {_target_: nemo.collections.asr.modules.RNNTJoint}
"""
CTC_CFG = """target: nemo.collections.asr.models.ctc_bpe_models.EncDecCTCModelBPE
preprocessor: {features: 80}
encoder: {feat_in: 80}
decoder: {_target_: nemo.collections.asr.modules.ConvASRDecoder}
"""
TTS_CFG = """target: nemo.collections.tts.models.fastpitch.FastPitchModel
encoder: {}
"""


def make_nemo(path, config: str | None, weights: bytes = b"\0" * 4096, mode: str = "w:", prefix: str = "./",
              weights_last: bool = False):
    with tarfile.open(path, mode) as tar:
        items = [("model_weights.ckpt", weights)] + ([("model_config.yaml", config.encode())] if config else [])
        if weights_last:  # NeMo's own order
            items.reverse()
        for name, data in items:
            info = tarfile.TarInfo(prefix + name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return path


def test_archive_is_read_from_headers_and_config(tmp_path):
    for mode, prefix in (("w:", "./"), ("w:", ""), ("w:gz", "./")):
        p = make_nemo(tmp_path / f"m-{mode[2:] or 'tar'}-{len(prefix)}.nemo", TRANSDUCER_CFG, mode=mode, prefix=prefix)
        a = read_archive(p)
        assert a.weights_bytes == 4096 and "RNNTJoint" in a.config_text and a.compressed == (mode == "w:gz")


@pytest.mark.parametrize("case", ["text", "folder", "missing", "no-config", "truncated", "truncated-weights",
                                  "empty"])
def test_not_a_nemo_is_one_clear_error(tmp_path, case):
    p = tmp_path / "model.nemo"
    if case == "text":
        p.write_text("not an archive\n" * 100)
    elif case == "folder":
        p.mkdir()
    elif case == "no-config":
        make_nemo(p, None)
    elif case.startswith("truncated"):
        make_nemo(p, TRANSDUCER_CFG, weights=os.urandom(1 << 20), weights_last=case == "truncated-weights")
        p.write_bytes(p.read_bytes()[: 700_000])
    elif case == "empty":
        p.write_bytes(b"")
    with pytest.raises(BadInputError) as e:
        read_archive(p)
    line = e.value.one_line()
    assert "\n" not in line and str(p) in line
    assert {"text": "not a .nemo", "folder": "is a folder", "missing": "not found", "no-config": "no model_config",
            "truncated": "truncated", "truncated-weights": "cut short", "empty": "not a .nemo"}[case] in line


ASR = "nemo.collections.asr"
TRANSDUCER_DICT = {"target": f"{ASR}.models.rnnt_bpe_models.EncDecRNNTBPEModel", "preprocessor": {"features": 80},
                   "encoder": {"feat_in": 80}, "decoder": {"_target_": f"{ASR}.modules.RNNTDecoder"},
                   "joint": {"_target_": f"{ASR}.modules.RNNTJoint"}}


def test_classify_transducer_hybrid_ctc_and_other():
    assert classify(TRANSDUCER_DICT) == (TRANSDUCER, "EncDecRNNTBPEModel")
    assert classify({"model": TRANSDUCER_DICT})[0] == TRANSDUCER  # a training config wraps it in `model`
    hybrid = dict(TRANSDUCER_DICT, target=f"{ASR}.models.hybrid_rnnt_ctc_bpe_models.EncDecHybridRNNTCTCBPEModel",
                  aux_ctc={"decoder": {}})
    assert classify(hybrid) == (HYBRID, "EncDecHybridRNNTCTCBPEModel")
    ctc = {"target": f"{ASR}.models.ctc_bpe_models.EncDecCTCModelBPE", "preprocessor": {}, "encoder": {},
           "decoder": {"_target_": f"{ASR}.modules.ConvASRDecoder"}}
    assert classify(ctc) == (CTC, "EncDecCTCModelBPE")
    assert classify({"target": "nemo.collections.tts.models.fastpitch.FastPitchModel", "encoder": {}})[0] == OTHER
    assert classify({"target": f"{ASR}.models.label_models.EncDecSpeakerLabelModel", "preprocessor": {},
                     "encoder": {}, "decoder": {"_target_": f"{ASR}.modules.SpeakerDecoder"}})[0] == OTHER


def run_cli(*args, block_extra: bool = False):
    """The real CLI in a child; block_extra makes `import torch` / `import nemo` fail as if not installed."""
    pre = "import sys; sys.modules['torch'] = None; sys.modules['nemo'] = None; " if block_extra else ""
    code = pre + "from sherpa_fixed.cli import main; main()"
    env = dict(os.environ, PYTHONPATH=str(REPO))
    return subprocess.run([sys.executable, "-c", code, "export", *map(str, args)], capture_output=True, text=True,
                          env=env, cwd=REPO)


def test_cli_bad_input_exit_2_and_nothing_written(tmp_path):
    bad = tmp_path / "x.nemo"
    bad.write_text("hello")
    out = tmp_path / "out"
    p = run_cli(bad, out)
    assert p.returncode == 2 and p.stderr.count("\n") == 1 and "not a .nemo" in p.stderr
    p = run_cli(bad, out, "--json")
    assert p.returncode == 2 and json.loads(p.stdout)["error"]["exit_code"] == 2
    assert sorted(os.listdir(tmp_path)) == ["x.nemo"]


def test_torch_per_tensor_layout_becomes_one_weights_file(make_folder, tmp_path):
    """The 1.1B's raw export, in small: a file per tensor and an external Constant node value."""
    raw = make_folder("raw", external="torch", metadata="missing", layers=3)
    torch_files = [p.name for p in raw.iterdir() if not p.name.endswith((".onnx", ".txt"))]
    n_files = len(torch_files)
    assert n_files > 5 and any(n.endswith("_attr__value") for n in torch_files)
    out = tmp_path / "out"
    out.mkdir()
    meta = {"vocab_size": "500", "feat_dim": "80", "url": "nemo-tdt"}
    layout = write_encoder(raw / "encoder.onnx", out, meta)
    assert sorted(os.listdir(out)) == ["encoder.onnx", WEIGHTS_NAME]
    assert layout["torch_external_files"] == n_files
    m = onnx.load(str(out / "encoder.onnx"), load_external_data=False)
    assert {p.key: p.value for p in m.metadata_props} == meta
    for t in graph_tensors(m.graph):
        if uses_external_data(t):
            info = external_info(t)
            assert info["location"] == WEIGHTS_NAME and int(info["length"]) >= ONNX_THRESHOLD
    init_inline = [t for t in m.graph.initializer if not uses_external_data(t)]
    assert all(len(t.raw_data) < ONNX_THRESHOLD for t in init_inline)
    assert_bit_identical(raw / "encoder.onnx", out / "encoder.onnx", "encoder", frames=200)
