"""Write genuine NeMo ONNX exports of tiny, randomly initialised transducers.

Why this exists: real Parakeet weights cannot be downloaded in CI, but the
inspector and prepare must be tested on graphs that NeMo itself wrote (node
names, dynamic-axis names, the decoder's fixed-batch state input, the
positional-encoding constant that caps input length). These graphs come from
``encoder.export()`` / ``decoder.export()`` / ``joint.export()`` exactly as the
upstream sherpa-onnx export scripts call them; only the sizes are tiny.

Run (needs torch and nemo-toolkit, which are NOT project dependencies)::

    pip install torch==2.13.0 && pip install "nemo-toolkit[asr]"
    python tests/data/nemo/make_exports.py tests/data/nemo

Each variant folder gets encoder.onnx, decoder.onnx, joiner.onnx and
tokens.txt, with no sherpa-onnx metadata (a raw export), plus
``truth.json``: what the NeMo model object itself says (feature count,
vocabulary, prediction-network size, durations, normaliser). Tests compare
what our code measures from the graphs against this file.
"""

from __future__ import annotations

import json
import os
import shutil
import sys
import tempfile

import sentencepiece as spm
import torch
from omegaconf import OmegaConf

TEXT = [
    "hello world this is a tiny test",
    "the quick brown fox jumps over the lazy dog",
    "speech recognition with transducers",
    "sherpa onnx runs nemo models",
]

# name: (mel bins, tdt?, static time length or None)
VARIANTS = {
    "tdt-80": (80, True, None),
    "rnnt-80": (80, False, None),
    "tdt-128": (128, True, None),
    "tdt-80-static800": (80, True, 800),
}

D_MODEL = 64
PRED_HIDDEN = 32
PRED_LAYERS = 2
DURATIONS = [0, 1, 2, 3, 4]
POS_EMB_MAX_LEN = 1000  # caps the dynamic encoder at about 8000 input frames


def make_tokenizer(folder: str) -> None:
    text = os.path.join(folder, "text.txt")
    with open(text, "w", encoding="utf-8") as f:
        for _ in range(20):
            f.write("\n".join(TEXT) + "\n")
    spm.SentencePieceTrainer.train(
        input=text,
        model_prefix=os.path.join(folder, "tokenizer"),
        vocab_size=32,
        model_type="bpe",
        character_coverage=1.0,
        bos_id=-1,
        eos_id=-1,
        minloglevel=2,
    )
    sp = spm.SentencePieceProcessor(model_file=os.path.join(folder, "tokenizer.model"))
    with open(os.path.join(folder, "vocab.txt"), "w", encoding="utf-8") as f:
        for i in range(sp.get_piece_size()):
            f.write(sp.id_to_piece(i) + "\n")


def make_config(tokdir: str, n_mels: int, tdt: bool):
    return OmegaConf.create(
        {
            "sample_rate": 16000,
            "tokenizer": {"dir": tokdir, "type": "bpe"},
            "model_defaults": {
                "enc_hidden": D_MODEL,
                "pred_hidden": PRED_HIDDEN,
                "joint_hidden": PRED_HIDDEN,
            },
            "preprocessor": {
                "_target_": "nemo.collections.asr.modules.AudioToMelSpectrogramPreprocessor",
                "sample_rate": 16000,
                "normalize": "per_feature",
                "window_size": 0.025,
                "window_stride": 0.01,
                "window": "hann",
                "features": n_mels,
                "n_fft": 512,
                "frame_splicing": 1,
                "dither": 0.0,
                "pad_to": 0,
            },
            "encoder": {
                "_target_": "nemo.collections.asr.modules.ConformerEncoder",
                "feat_in": n_mels,
                "feat_out": -1,
                "n_layers": 2,
                "d_model": D_MODEL,
                "subsampling": "dw_striding",
                "subsampling_factor": 8,
                "subsampling_conv_channels": 16,
                "ff_expansion_factor": 2,
                "self_attention_model": "rel_pos",
                "n_heads": 2,
                "att_context_size": [-1, -1],
                "xscaling": True,
                "untie_biases": True,
                "pos_emb_max_len": POS_EMB_MAX_LEN,
                "conv_kernel_size": 9,
                "conv_norm_type": "batch_norm",
                "dropout": 0.0,
                "dropout_pre_encoder": 0.0,
                "dropout_emb": 0.0,
                "dropout_att": 0.0,
            },
            "decoder": {
                "_target_": "nemo.collections.asr.modules.RNNTDecoder",
                "normalization_mode": None,
                "random_state_sampling": False,
                "blank_as_pad": True,
                "prednet": {
                    "pred_hidden": PRED_HIDDEN,
                    "pred_rnn_layers": PRED_LAYERS,
                    "t_max": None,
                    "dropout": 0.0,
                },
            },
            "joint": {
                "_target_": "nemo.collections.asr.modules.RNNTJoint",
                "log_softmax": None,
                "preserve_memory": False,
                "fuse_loss_wer": False,
                "fused_batch_size": 4,
                "num_extra_outputs": len(DURATIONS) if tdt else 0,
                "jointnet": {"joint_hidden": PRED_HIDDEN, "activation": "relu", "dropout": 0.0},
            },
            "decoding": {
                "strategy": "greedy_batch",
                "model_type": "tdt" if tdt else "rnnt",
                "durations": DURATIONS if tdt else [],
                "greedy": {"max_symbols": 10},
            },
            "loss": (
                {"loss_name": "tdt", "tdt_kwargs": {"durations": DURATIONS, "sigma": 0.02, "omega": 0.1}}
                if tdt
                else {"loss_name": "default"}
            ),
        }
    )


def export_variant(out: str, n_mels: int, tdt: bool, static_frames: int | None) -> None:
    from nemo.collections.asr.models import EncDecRNNTBPEModel

    os.makedirs(out, exist_ok=True)
    with tempfile.TemporaryDirectory() as tokdir:
        make_tokenizer(tokdir)
        torch.manual_seed(0)
        model = EncDecRNNTBPEModel(cfg=make_config(tokdir, n_mels, tdt))
        model.eval()

        # Same tokens.txt as the upstream parakeet export script.
        with open(os.path.join(out, "tokens.txt"), "w", encoding="utf-8") as f:
            for i, s in enumerate(model.joint.vocabulary):
                f.write(f"{s} {i}\n")
            f.write(f"<blk> {i + 1}\n")

        if static_frames is None:
            model.encoder.export(os.path.join(out, "encoder.onnx"))
        else:
            example = (torch.randn(1, n_mels, static_frames), torch.tensor([static_frames]))
            model.encoder.export(os.path.join(out, "encoder.onnx"), input_example=example, dynamic_axes={})
        model.decoder.export(os.path.join(out, "decoder.onnx"))
        model.joint.export(os.path.join(out, "joiner.onnx"))

        truth = {
            "nemo_class": type(model).__name__,
            "feat_dim": n_mels,
            "vocab_size": model.decoder.vocab_size,
            "pred_rnn_layers": model.decoder.pred_rnn_layers,
            "pred_hidden": model.decoder.pred_hidden,
            "d_model": D_MODEL,
            "subsampling_factor": model.cfg.encoder.subsampling_factor,
            "normalize_type": model.cfg.preprocessor.normalize,
            "tdt": tdt,
            "durations": DURATIONS if tdt else [],
            "static_frames": static_frames,
            "pos_emb_max_len": POS_EMB_MAX_LEN,
            "torch": torch.__version__,
            "nemo": __import__("nemo").__version__,
        }
        with open(os.path.join(out, "truth.json"), "w", encoding="utf-8") as f:
            json.dump(truth, f, indent=2)
            f.write("\n")


def main() -> None:
    root = sys.argv[1] if len(sys.argv) > 1 else os.path.dirname(os.path.abspath(__file__))
    for name, (n_mels, tdt, static) in VARIANTS.items():
        out = os.path.join(root, name)
        shutil.rmtree(out, ignore_errors=True)
        export_variant(out, n_mels, tdt, static)
        print("wrote", out)


if __name__ == "__main__":
    main()
