"""Build a random-weight parakeet-tdt-1.1b-architecture NeMo model and export it the way
sherpa-onnx's scripts/nemo/parakeet-tdt-0.6b-v2/export_onnx.py does (encoder.export /
decoder.export / joint.export), timing each stage.

    NEMO_VENV/bin/python bench/realscale/build_export.py OUT_DIR     # SAVE_NEMO=FILE also saves the .nemo

The project's shared realscale/build_export.py, tidied for this repository's linter with the same
model, config and export calls. Runs in the separate NeMo venv only (README.md); nothing in
sherpa_fixed imports it. FastConformer 42 x 1024, 8 heads, ff x4, conv kernel 9, dw_striding x8
with 256 channels, rel_pos with pos_emb_max_len 5000, 80 mel; 2 x 640 LSTM decoder; joint 640;
vocab 1024; TDT durations [0..4]: 1.07 B parameters.
"""

import json
import os
import random
import resource
import sys
import time

import sentencepiece as spm
import torch
from omegaconf import OmegaConf

N_MELS = 80
D_MODEL = 1024
N_LAYERS = 42
PRED_HIDDEN = 640
DURATIONS = [0, 1, 2, 3, 4]
VOCAB = 1024
T0 = time.time()


def log(stage):
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"[{time.time() - T0:8.1f}s] {stage}: peak RSS so far {rss:.0f} MB", flush=True)


def make_tokenizer(folder):
    rng = random.Random(0)
    letters = "abcdefghijklmnopqrstuvwxyz"
    text = os.path.join(folder, "text.txt")
    with open(text, "w") as f:
        for _ in range(30000):
            f.write(" ".join("".join(rng.choice(letters) for _ in range(rng.randint(2, 9))) for _ in range(12)) + "\n")
    spm.SentencePieceTrainer.train(input=text, model_prefix=os.path.join(folder, "tokenizer"), vocab_size=VOCAB,
                                   model_type="bpe", character_coverage=1.0, bos_id=-1, eos_id=-1, minloglevel=2)
    sp = spm.SentencePieceProcessor(model_file=os.path.join(folder, "tokenizer.model"))
    with open(os.path.join(folder, "vocab.txt"), "w") as f:
        for i in range(sp.get_piece_size()):
            f.write(sp.id_to_piece(i) + "\n")


def make_config(tokdir):
    return OmegaConf.create({
        "sample_rate": 16000,
        "tokenizer": {"dir": tokdir, "type": "bpe"},
        "model_defaults": {"enc_hidden": D_MODEL, "pred_hidden": PRED_HIDDEN, "joint_hidden": PRED_HIDDEN},
        "preprocessor": {"_target_": "nemo.collections.asr.modules.AudioToMelSpectrogramPreprocessor",
                         "sample_rate": 16000, "normalize": "per_feature", "window_size": 0.025,
                         "window_stride": 0.01, "window": "hann", "features": N_MELS, "n_fft": 512,
                         "frame_splicing": 1, "dither": 0.0, "pad_to": 0},
        "encoder": {"_target_": "nemo.collections.asr.modules.ConformerEncoder", "feat_in": N_MELS, "feat_out": -1,
                    "n_layers": N_LAYERS, "d_model": D_MODEL, "subsampling": "dw_striding", "subsampling_factor": 8,
                    "subsampling_conv_channels": 256, "ff_expansion_factor": 4, "self_attention_model": "rel_pos",
                    "n_heads": 8, "att_context_size": [-1, -1], "xscaling": True, "untie_biases": True,
                    "pos_emb_max_len": 5000, "conv_kernel_size": 9, "conv_norm_type": "batch_norm",
                    "dropout": 0.0, "dropout_pre_encoder": 0.0, "dropout_emb": 0.0, "dropout_att": 0.0},
        "decoder": {"_target_": "nemo.collections.asr.modules.RNNTDecoder", "normalization_mode": None,
                    "random_state_sampling": False, "blank_as_pad": True,
                    "prednet": {"pred_hidden": PRED_HIDDEN, "pred_rnn_layers": 2, "t_max": None, "dropout": 0.0}},
        "joint": {"_target_": "nemo.collections.asr.modules.RNNTJoint", "log_softmax": None, "preserve_memory": False,
                  "fuse_loss_wer": False, "fused_batch_size": 4, "num_extra_outputs": len(DURATIONS),
                  "jointnet": {"joint_hidden": PRED_HIDDEN, "activation": "relu", "dropout": 0.0}},
        "decoding": {"strategy": "greedy_batch", "model_type": "tdt", "durations": DURATIONS,
                     "greedy": {"max_symbols": 10}},
        "loss": {"loss_name": "tdt", "tdt_kwargs": {"durations": DURATIONS, "sigma": 0.02, "omega": 0.1}},
    })


def timed_export(module, path, what):
    ts = time.time()
    module.export(path)
    print(f"{what} export s", round(time.time() - ts, 1))
    log(f"{what} exported")


def main(out):
    from nemo.collections.asr.models import EncDecRNNTBPEModel

    os.makedirs(out, exist_ok=True)
    tokdir = os.path.join(os.path.dirname(os.path.abspath(out)), "tokenizer")
    os.makedirs(tokdir, exist_ok=True)
    make_tokenizer(tokdir)
    log("tokenizer")
    torch.manual_seed(0)
    model = EncDecRNNTBPEModel(cfg=make_config(tokdir))
    model.eval()
    n_enc = sum(p.numel() for p in model.encoder.parameters())
    n_all = sum(p.numel() for p in model.parameters())
    print("params: encoder", n_enc, "all", n_all, flush=True)
    log("model built")
    with open(os.path.join(out, "tokens.txt"), "w", encoding="utf-8") as f:
        for i, s in enumerate(model.joint.vocabulary):
            f.write(f"{s} {i}\n")
        f.write(f"<blk> {i + 1}\n")
    if os.environ.get("SAVE_NEMO"):
        model.save_to(os.environ["SAVE_NEMO"])
        log("saved .nemo")
    timed_export(model.encoder, os.path.join(out, "encoder.onnx"), "encoder")
    timed_export(model.decoder, os.path.join(out, "decoder.onnx"), "decoder")
    timed_export(model.joint, os.path.join(out, "joiner.onnx"), "joiner")
    truth = {"feat_dim": N_MELS, "vocab_size": model.decoder.vocab_size,
             "pred_rnn_layers": model.decoder.pred_rnn_layers, "pred_hidden": model.decoder.pred_hidden,
             "d_model": D_MODEL, "n_layers": N_LAYERS, "subsampling_factor": model.cfg.encoder.subsampling_factor,
             "normalize_type": model.cfg.preprocessor.normalize, "durations": DURATIONS, "params_encoder": n_enc,
             "params_all": n_all, "torch": torch.__version__, "nemo": __import__("nemo").__version__}
    with open(os.path.join(os.path.dirname(os.path.abspath(out)), "truth.json"), "w") as f:
        json.dump(truth, f, indent=2)


if __name__ == "__main__":
    main(sys.argv[1])
