"""`sherpa-fixed export` on genuine tiny .nemo checkpoints: TDT 80 and 128 mel, RNNT, a hybrid TDT-CTC.

These need the optional [export] extra (torch, nemo-toolkit), which the
README's test command installs; without it they FAIL, never skip. They are
marked `export`, so `pytest -m "not export"` leaves them out on purpose
(a quick run in an environment without torch).

Checkpoints are built the way tests/data/nemo/make_exports.py builds its
exports (random weights, real NeMo classes, a SentencePiece tokenizer),
saved with NeMo's own `save_to()`. What an export must contain is checked
against the numbers the checkpoints were BUILT with (VARIANTS below), not
against what the exporter reports.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tarfile
from pathlib import Path

import numpy as np
import onnx
import pytest

from sherpa_fixed.safety.output import MARKER

from .conftest import REPO

pytestmark = pytest.mark.export

TEXT = [
    "hello world this is a tiny test",
    "the quick brown fox jumps over the lazy dog",
    "speech recognition with transducers",
    "sherpa onnx runs nemo models",
]
D_MODEL, PRED_HIDDEN, PRED_LAYERS, VOCAB = 64, 32, 2, 32
DURATIONS = [0, 1, 2, 3, 4]
# name: (class, mel bins, TDT?)
VARIANTS = {
    "tdt-80": ("EncDecRNNTBPEModel", 80, True),
    "tdt-128": ("EncDecRNNTBPEModel", 128, True),
    "rnnt-80": ("EncDecRNNTBPEModel", 80, False),
    "hybrid-tdt-ctc": ("EncDecHybridRNNTCTCBPEModel", 80, True),
    "ctc": ("EncDecCTCModelBPE", 80, False),
}


# ----------------------------------------------------------------------------- building checkpoints


def _tokenizer(folder: Path) -> None:
    import sentencepiece as spm

    text = folder / "text.txt"
    text.write_text(("\n".join(TEXT) + "\n") * 20, encoding="utf-8")
    spm.SentencePieceTrainer.train(input=str(text), model_prefix=str(folder / "tokenizer"), vocab_size=VOCAB,
                                   model_type="bpe", character_coverage=1.0, bos_id=-1, eos_id=-1, minloglevel=2)
    sp = spm.SentencePieceProcessor(model_file=str(folder / "tokenizer.model"))
    (folder / "vocab.txt").write_text("".join(sp.id_to_piece(i) + "\n" for i in range(sp.get_piece_size())),
                                      encoding="utf-8")


def _config(tokdir: Path, cls: str, n_mels: int, tdt: bool) -> dict:
    cfg = {
        "sample_rate": 16000,
        "tokenizer": {"dir": str(tokdir), "type": "bpe"},
        "model_defaults": {"enc_hidden": D_MODEL, "pred_hidden": PRED_HIDDEN, "joint_hidden": PRED_HIDDEN},
        "preprocessor": {"_target_": "nemo.collections.asr.modules.AudioToMelSpectrogramPreprocessor",
                         "sample_rate": 16000, "normalize": "per_feature", "window_size": 0.025,
                         "window_stride": 0.01, "window": "hann", "features": n_mels, "n_fft": 512,
                         "frame_splicing": 1, "dither": 0.0, "pad_to": 0},
        "encoder": {"_target_": "nemo.collections.asr.modules.ConformerEncoder", "feat_in": n_mels, "feat_out": -1,
                    "n_layers": 2, "d_model": D_MODEL, "subsampling": "dw_striding", "subsampling_factor": 8,
                    "subsampling_conv_channels": 16, "ff_expansion_factor": 2, "self_attention_model": "rel_pos",
                    "n_heads": 2, "att_context_size": [-1, -1], "xscaling": True, "untie_biases": True,
                    "pos_emb_max_len": 1000, "conv_kernel_size": 9, "conv_norm_type": "batch_norm",
                    "dropout": 0.0, "dropout_pre_encoder": 0.0, "dropout_emb": 0.0, "dropout_att": 0.0},
    }
    if cls == "EncDecCTCModelBPE":
        cfg["decoder"] = {"_target_": "nemo.collections.asr.modules.ConvASRDecoder", "feat_in": D_MODEL,
                          "num_classes": -1, "vocabulary": []}
        return cfg
    cfg.update({
        "decoder": {"_target_": "nemo.collections.asr.modules.RNNTDecoder", "normalization_mode": None,
                    "random_state_sampling": False, "blank_as_pad": True,
                    "prednet": {"pred_hidden": PRED_HIDDEN, "pred_rnn_layers": PRED_LAYERS, "t_max": None,
                                "dropout": 0.0}},
        "joint": {"_target_": "nemo.collections.asr.modules.RNNTJoint", "log_softmax": None,
                  "preserve_memory": False, "fuse_loss_wer": False, "fused_batch_size": 4,
                  "num_extra_outputs": len(DURATIONS) if tdt else 0,
                  "jointnet": {"joint_hidden": PRED_HIDDEN, "activation": "relu", "dropout": 0.0}},
        "decoding": {"strategy": "greedy_batch", "model_type": "tdt" if tdt else "rnnt",
                     "durations": DURATIONS if tdt else [], "greedy": {"max_symbols": 10}},
        "loss": ({"loss_name": "tdt", "tdt_kwargs": {"durations": DURATIONS, "sigma": 0.02, "omega": 0.1}}
                 if tdt else {"loss_name": "default"}),
    })
    if cls == "EncDecHybridRNNTCTCBPEModel":
        cfg["aux_ctc"] = {"ctc_loss_weight": 0.3, "use_cer": False, "ctc_reduction": "mean_batch",
                          "decoder": {"_target_": "nemo.collections.asr.modules.ConvASRDecoder", "feat_in": D_MODEL,
                                      "num_classes": -1, "vocabulary": []},
                          "decoding": {"strategy": "greedy"}}
    return cfg


def build_nemo(variant: str, folder: str | Path) -> Path:
    """Write folder/<variant>.nemo with NeMo's save_to(); random weights, exact NeMo structure."""
    import tempfile

    import torch
    from nemo.collections.asr import models
    from omegaconf import OmegaConf

    cls, n_mels, tdt = VARIANTS[variant]
    out = Path(folder) / f"{variant}.nemo"
    with tempfile.TemporaryDirectory() as tok:
        _tokenizer(Path(tok))
        torch.manual_seed(0)
        model = getattr(models, cls)(cfg=OmegaConf.create(_config(Path(tok), cls, n_mels, tdt)))
        model.eval()
        model.save_to(str(out))
    return out


# ----------------------------------------------------------------------------- fixtures

EXPORTED = ["tdt-80", "tdt-128", "rnnt-80", "hybrid-tdt-ctc"]


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory):
    """Every variant as a .nemo, built once per module. Fails (never skips) without the extra."""
    import nemo  # noqa: F401 - a missing extra is an error here, by design
    import torch  # noqa: F401

    folder = tmp_path_factory.mktemp("nemo")
    return {v: build_nemo(v, folder) for v in VARIANTS}


@pytest.fixture(scope="module")
def exports(checkpoints, tmp_path_factory):
    """Each transducer exported once by the library entry point, with its checks."""
    from sherpa_fixed.exporting import export_nemo

    root = tmp_path_factory.mktemp("exported")
    return {v: export_nemo(checkpoints[v], root / v) for v in EXPORTED}


def read_meta(path: Path) -> dict[str, str]:
    return {p.key: p.value for p in onnx.load(str(path), load_external_data=False).metadata_props}


# ----------------------------------------------------------------------------- exports


@pytest.mark.parametrize("variant", EXPORTED)
def test_export_writes_the_release_layout_and_checks_it(exports, variant):
    r = exports[variant]
    cls, n_mels, tdt = VARIANTS[variant]
    assert r.written and r.exit_code == 0, r.to_json()
    out = r.output
    layout = ["bpe.vocab", "decoder.onnx", "encoder.onnx", "encoder.weights", "joiner.onnx", "tokens.txt"]
    assert sorted(os.listdir(out)) == sorted([*layout, MARKER])
    assert json.loads((out / MARKER).read_text())["files"] == layout  # what --force may later replace
    assert not [n for n in os.listdir(out.parent) if n.startswith(".sf-")]
    # Every check ran and passed: inspect verdict, encoder vs torch, sherpa-onnx tokens == NeMo's.
    checks = {c.name: c for c in r.checks}
    assert set(checks) == {"inspect", "encoder", "tokens"} and all(c.ok for c in checks.values())
    assert checks["encoder"].data["max_abs"] < 1e-3 and checks["tokens"].data["tokens"] > 0
    tok = checks["tokens"].data
    # Random weights are full of near-ties; a difference must be one (NeMo's own margin, replayed in torch).
    assert tok["identical"] or (tok["first_difference"] >= 5 and abs(tok["tie_margin"]) < 0.02), tok
    # Metadata against what the checkpoint was BUILT with.
    meta = read_meta(out / "encoder.onnx")
    assert meta["feat_dim"] == str(n_mels)
    assert meta["vocab_size"] == str(VOCAB)
    assert meta["pred_rnn_layers"] == str(PRED_LAYERS) and meta["pred_hidden"] == str(PRED_HIDDEN)
    assert meta["subsampling_factor"] == "8" and meta["normalize_type"] == "per_feature"
    assert ("tdt" in meta["url"]) == tdt
    assert meta["model_type"] == cls
    assert meta["nemo_version"] == __import__("nemo").__version__ and meta["sherpa_fixed_version"]
    # The graph's own input is the mel count; the joiner is vocab + blank (+ durations).
    enc = onnx.load(str(out / "encoder.onnx"), load_external_data=False)
    assert enc.graph.input[0].type.tensor_type.shape.dim[1].dim_value == n_mels
    joiner = onnx.load(str(out / "joiner.onnx"))
    assert joiner.graph.output[0].type.tensor_type.shape.dim[-1].dim_value == VOCAB + 1 + (len(DURATIONS) if tdt else 0)


@pytest.mark.parametrize("variant", ["tdt-80", "hybrid-tdt-ctc"])
def test_one_weights_file_small_tensors_inline(exports, variant):
    from sherpa_fixed.reading.onnx_graph import all_nodes, external_info, uses_external_data

    out = exports[variant].output
    enc = onnx.load(str(out / "encoder.onnx"), load_external_data=False)
    external = [t for t in enc.graph.initializer if uses_external_data(t)]
    assert external, "the fp32 encoder keeps its weights in encoder.weights, as the release layout does"
    assert {external_info(t)["location"] for t in external} == {"encoder.weights"}
    assert all(int(external_info(t)["length"]) >= 1024 for t in external)
    # Inline: tensors under 1 KiB and the float 4-D Conv weights, which onnxruntime's optimisers read
    # while creating a session (older releases fail to find them outside the file: docs/runtimes.md).
    conv = {n.input[1] for n in all_nodes(enc.graph) if n.op_type == "Conv"}
    inline = [t for t in enc.graph.initializer if not uses_external_data(t)]
    assert all(len(t.raw_data) < 1024 or (t.name in conv and len(t.dims) == 4) for t in inline)
    assert any(t.name in conv and len(t.raw_data) >= 1024 for t in inline), "the subsampling convs are inline"
    assert not any(t.name in conv and len(t.dims) == 4 for t in external)
    end = max(int(external_info(t)["offset"]) + int(external_info(t)["length"]) for t in external)
    assert end <= (out / "encoder.weights").stat().st_size
    for name in ("decoder.onnx", "joiner.onnx"):
        m = onnx.load(str(out / name), load_external_data=False)
        assert not any(uses_external_data(t) for t in m.graph.initializer)


@pytest.mark.parametrize("variant", ["tdt-80", "rnnt-80"])
def test_tokens_and_bpe_vocab_come_from_the_tokenizer_itself(exports, checkpoints, variant, tmp_path):
    import sentencepiece as spm

    out = exports[variant].output
    with tarfile.open(checkpoints[variant]) as tar:  # the tokenizer model NeMo packed, read independently
        member = next(m for m in tar.getmembers() if m.name.endswith("tokenizer.model"))
        (tmp_path / "tok.model").write_bytes(tar.extractfile(member).read())
    sp = spm.SentencePieceProcessor(model_file=str(tmp_path / "tok.model"))
    lines = (out / "tokens.txt").read_text(encoding="utf-8").splitlines()
    assert lines[-1] == f"<blk> {VOCAB}" and len(lines) == VOCAB + 1
    assert [ln.rsplit(" ", 1)[0] for ln in lines[:-1]] == [sp.id_to_piece(i) for i in range(VOCAB)]
    vocab = [ln.split("\t") for ln in (out / "bpe.vocab").read_text(encoding="utf-8").splitlines()]
    assert [p for p, _ in vocab] == [sp.id_to_piece(i) for i in range(sp.get_piece_size())]
    assert [float(s) for _, s in vocab] == [sp.get_score(i) for i in range(sp.get_piece_size())]


HOTWORD_SCORE = 2.0


def test_hotwords_through_bpe_vocab_load_run_and_bias(exports):
    """sherpa-onnx modified_beam_search with hotwords encoded by bpe.vocab (ssentencepiece) on the export."""
    from sherpa_fixed.checking.validate import generated_audio
    from sherpa_fixed.exporting.agreement import sherpa_decode

    out = exports["tdt-80"].output
    audio = [generated_audio(8.0)[: 8 * 16000]]
    plain, err = sherpa_decode(out, audio, method="modified_beam_search", bpe_vocab=True)
    assert plain is not None, err
    hot, err = sherpa_decode(out, audio, method="modified_beam_search", bpe_vocab=True, hotwords="quick brown fox",
                             hotwords_score=HOTWORD_SCORE)
    assert hot is not None, err
    base, boosted = plain["results"][0]["text"].lower(), hot["results"][0]["text"].lower()
    assert boosted != base
    assert boosted.count("quick") > base.count("quick") or boosted.count("fox") > base.count("fox"), (base, boosted)


def test_static_frames_export_is_fixed_and_decodes_like_nemo(checkpoints, tmp_path):
    from sherpa_fixed.exporting import export_nemo

    r = export_nemo(checkpoints["tdt-80"], tmp_path / "static", static_frames=300)
    assert r.written and r.exit_code == 0, r.to_json()
    enc = onnx.load(str(tmp_path / "static" / "encoder.onnx"), load_external_data=False)
    dims = [d.dim_value for d in enc.graph.input[0].type.tensor_type.shape.dim]
    assert dims == [1, 80, 300]
    assert read_meta(tmp_path / "static" / "encoder.onnx")["static_frames"] == "300"
    assert {c.name: c.ok for c in r.checks} == {"inspect": True, "encoder": True, "tokens": True}


# ----------------------------------------------------------------------------- the command line and bad input


def cli(*args, block_extra: bool = False, cwd=REPO):
    pre = "import sys; sys.modules['torch'] = None; sys.modules['nemo'] = None; " if block_extra else ""
    env = dict(os.environ, PYTHONPATH=str(REPO))
    return subprocess.run([sys.executable, "-c", pre + "from sherpa_fixed.cli import main; main()", "export",
                           *map(str, args)], capture_output=True, text=True, env=env, cwd=cwd)


def test_cli_json_and_refusal_to_overwrite(checkpoints, tmp_path):
    out = tmp_path / "out"
    p = cli(checkpoints["tdt-128"], out, "--json", "--no-check")
    assert p.returncode == 0, p.stderr
    doc = json.loads(p.stdout)
    assert doc["schema"] == "sherpa-fixed/export" and doc["written"] and doc["model"]["feat_dim"] == 128
    assert doc["metadata"]["feat_dim"] == "128" and set(doc["files"]) >= {"encoder.onnx", "encoder.weights"}
    before = sorted(os.listdir(out))
    p = cli(checkpoints["tdt-128"], out)
    assert p.returncode == 2 and "not empty" in p.stderr and p.stderr.count("\n") == 1
    assert sorted(os.listdir(out)) == before


def nothing_written(parent: Path, out: Path) -> bool:
    return not out.exists() and not [n for n in os.listdir(parent) if n.startswith(".sf-")]


def test_missing_extra_is_one_line_naming_the_install(checkpoints, tmp_path):
    p = cli(checkpoints["tdt-80"], tmp_path / "out", block_extra=True)
    assert p.returncode == 2 and p.stderr.count("\n") == 1, p.stderr
    assert 'pip install "sherpa-fixed[export]"' in p.stderr and "download.pytorch.org/whl/cpu" in p.stderr
    assert nothing_written(tmp_path, tmp_path / "out")


@pytest.mark.parametrize("case", ["ctc", "tts", "truncated", "garbage-weights", "not-a-nemo"])
def test_bad_checkpoints_exit_2_and_leave_nothing(checkpoints, tmp_path, case):
    src = tmp_path / "in.nemo"
    if case == "ctc":
        src = checkpoints["ctc"]
    elif case == "tts":
        with tarfile.open(src, "w:") as tar:
            for name, data in (("model_config.yaml", b"target: nemo.collections.tts.models.FastPitchModel\n"
                                                     b"encoder: {}\n"), ("model_weights.ckpt", b"\0" * 64)):
                info = tarfile.TarInfo("./" + name)
                info.size = len(data)
                tar.addfile(info, __import__("io").BytesIO(data))
    elif case == "truncated":
        data = checkpoints["tdt-80"].read_bytes()
        src.write_bytes(data[: len(data) * 2 // 3])
    elif case == "garbage-weights":  # right size, wrong bytes: the archive is fine, the checkpoint is not
        data = bytearray(checkpoints["tdt-80"].read_bytes())
        with tarfile.open(checkpoints["tdt-80"]) as tar:
            m = next(m for m in tar.getmembers() if m.name.endswith("model_weights.ckpt"))
        data[m.offset_data: m.offset_data + m.size] = np.random.default_rng(0).bytes(m.size)
        src.write_bytes(bytes(data))
    else:
        src.write_bytes(np.random.default_rng(1).bytes(100_000))
    out = tmp_path / "out"
    p = cli(src, out)
    assert p.returncode == 2, p.stderr
    errors = [ln for ln in p.stderr.splitlines() if "error" in ln.lower()]
    assert len(errors) == 1 and errors[0] == p.stderr.splitlines()[-1] and str(src) in errors[0], p.stderr
    words = {"ctc": "CTC-only", "tts": "not a NeMo speech-recognition", "truncated": "cut short",
             "garbage-weights": "NeMo could not restore", "not-a-nemo": "not a .nemo"}[case]
    assert words in p.stderr
    assert nothing_written(tmp_path, out)


def test_not_enough_disk_is_refused_before_writing(checkpoints, tmp_path):
    """A real 8 MB tmpfs in a private mount namespace: the export needs more, and says so up front."""
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    code = (f"import subprocess, sys, os; subprocess.run(['mount', '-t', 'tmpfs', '-o', 'size=8m', 'tmpfs', "
            f"{str(mnt)!r}], check=True); p = subprocess.run([sys.executable, '-m', 'sherpa_fixed.cli', 'export', "
            f"{str(checkpoints['tdt-80'])!r}, {str(mnt / 'out')!r}], capture_output=True, text=True); "
            f"print(p.returncode); print(p.stderr.strip()); print(os.listdir({str(mnt)!r}))")
    prefix = ["unshare", "-m"] if os.geteuid() == 0 else ["unshare", "-rm"]
    proc = subprocess.run([*prefix, sys.executable, "-c", code], capture_output=True, text=True,
                          env=dict(os.environ, PYTHONPATH=str(REPO)), cwd=REPO)
    assert proc.returncode == 0, proc.stderr
    rc, err, listing = proc.stdout.strip().splitlines()
    assert rc == "2" and "GB free" in err and "nothing was changed" in err
    assert listing == "[]"
