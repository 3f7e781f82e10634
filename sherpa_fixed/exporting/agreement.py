"""Does the exported folder compute what NeMo computes? Measured, not assumed.

While the model is still loaded, NeMo itself is run on features made by
sherpa-onnx's own front end (`decoding.features`, kaldi-native-fbank): its
encoder output and its own greedy decoding (`model.decoding`, the strategy in
the checkpoint's config) are kept. After the torch model is gone, the
exported encoder runs in onnxruntime on the same features, and stock
sherpa-onnx decodes the same audio from the exported folder in a child
process; tokens must be equal and encoder outputs equal within float
tolerance. Holding only these small references (never the torch model and
an onnxruntime session at once) keeps the export's peak memory at that of
NeMo's own export.

`frontend_difference` measures the other half of the story users suspect:
how far sherpa-onnx's features are from NeMo's own preprocessor.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..decoding.features import nemo_features
from ..decoding.sherpa_check import die_with_parent, error_line

ENCODER_TOLERANCE = 1e-3  # absolute, on encoder outputs of magnitude ~1; fp32 reordering gives ~1e-5
TIE_TOLERANCE = 0.02  # logit margin below which two searches may pick differently (as checking/baseline.py)


@dataclass
class NemoReference:
    samples: np.ndarray = field(repr=False)
    features: np.ndarray = field(repr=False)  # (frames, feat_dim), sherpa-onnx's front end
    encoder_out: np.ndarray = field(repr=False)  # (1, D, T') from torch
    encoded_frames: int
    token_ids: list[int]
    pieces: list[str]
    frames: list[int] = field(default_factory=list)  # encoder frame of each token (NeMo's timestamps)
    nets: tuple | None = field(default=None, repr=False)  # (decoder, joint, torch, vocabulary) kept by export


def nemo_greedy(model, torch, features: np.ndarray) -> tuple[np.ndarray, int, list[int], list[int]]:
    """NeMo's encoder and its own configured greedy decoding on (frames, feat_dim) features."""
    x = torch.from_numpy(np.ascontiguousarray(features.T[None], dtype=np.float32))
    length = torch.tensor([features.shape[0]], dtype=torch.int64)
    with torch.no_grad():
        enc, enc_len = model.encoder(audio_signal=x, length=length)
        hyps = model.decoding.rnnt_decoder_predictions_tensor(encoder_output=enc, encoded_lengths=enc_len,
                                                              return_hypotheses=True)
    if isinstance(hyps, tuple):  # older NeMo: (best, all)
        hyps = hyps[0]
    hyp = hyps[0]
    ids = hyp.y_sequence
    ids = ids.tolist() if hasattr(ids, "tolist") else list(ids)
    ts = getattr(hyp, "timestamp", None)
    ts = ts.tolist() if hasattr(ts, "tolist") else list(ts or [])
    frames = [int(t) for t in ts] if len(ts) == len(ids) else []
    return enc.numpy(), int(enc_len[0]), [int(i) for i in ids], frames


# Tokens one frame may emit in sherpa-onnx's greedy search: offline-transducer-greedy-search-nemo-decoder.cc,
# DecodeOneTDT (max_tokens_per_frame = 5) and DecodeOne (max_symbols_per_frame = 10).
SHERPA_MAX_SYMBOLS = {True: 5, False: 10}


def match_sherpa_cap(model, tdt: bool) -> int | None:
    """Set NeMo's greedy max_symbols to sherpa-onnx's per-frame cap; returns the checkpoint's own value.

    Only a model emitting more than 5 tokens on one frame (random weights do; trained ones do not)
    can tell the two apart; everything else about the search is NeMo's own.
    """
    import copy

    from omegaconf import open_dict

    cfg = copy.deepcopy(model.cfg.decoding)
    with open_dict(cfg):
        own = cfg.get("greedy", {}).get("max_symbols")
        cfg.setdefault("greedy", {})
        cfg.greedy.max_symbols = SHERPA_MAX_SYMBOLS[tdt]
    kw = {"decoder_type": "rnnt"} if hasattr(model, "cur_decoder") else {}
    model.change_decoding_strategy(cfg, verbose=False, **kw)
    return own


def nemo_reference(model, torch, samples: np.ndarray, feat_dim: int, normalize_type: str,
                   vocabulary: list[str], tdt: bool | None = None) -> NemoReference:
    if tdt is not None:
        match_sherpa_cap(model, tdt)
    feats = nemo_features(samples, feat_dim, normalize_type)
    enc, n, ids, frames = nemo_greedy(model, torch, feats)
    return NemoReference(samples.astype(np.float32), feats, enc, n, ids, [as_sherpa(vocabulary[i]) for i in ids],
                         frames)


def as_sherpa(piece: str) -> str:
    """A vocabulary piece as sherpa-onnx's result.tokens spells it (the SentencePiece '▁' becomes a space)."""
    return piece.replace("\u2581", " ")


def frontend_difference(model, torch, samples: np.ndarray, feat_dim: int, normalize_type: str) -> dict:
    """NeMo's preprocessor against sherpa-onnx's front end on the same audio (normalised features).

    Frames are compared index by index over the frames both produce: NeMo
    centres frame i on sample 160 i (torch.stft center=True), kaldi-native-fbank
    with snip_edges=false on 160 i + 80, so even identical maths differ by
    half a hop; both numbers are reported as measured.
    """
    x = torch.from_numpy(samples.astype(np.float32)[None])
    n = torch.tensor([len(samples)], dtype=torch.int64)
    with torch.no_grad():
        feats, feat_len = model.preprocessor(input_signal=x, length=n)
    ours_nemo = feats[0, :, : int(feat_len[0])].numpy().T  # (frames, feat)
    sherpa = nemo_features(samples, feat_dim, normalize_type)
    m = min(len(ours_nemo), len(sherpa))
    d = ours_nemo[:m] - sherpa[:m]
    return {"nemo_frames": len(ours_nemo), "sherpa_frames": len(sherpa), "compared_frames": m,
            "max_abs": float(np.abs(d).max()) if m else None, "rms": float(np.sqrt(np.mean(d * d))) if m else None,
            "feature_rms": float(np.sqrt(np.mean(sherpa[:m] ** 2))) if m else None}


def tie_margin(decoder, joint, torch, ref: NemoReference, index: int, other_piece: str,
               vocabulary: list[str]) -> float | None:
    """NeMo's own logit margin, at token `index`, between its choice and the piece sherpa-onnx chose there.

    The prediction network is replayed in torch over NeMo's tokens before `index` (its state when it
    chose), and the joint is evaluated at NeMo's frame for that token on torch's encoder output. A
    margin within TIE_TOLERANCE is a near-tie: float noise between torch and onnxruntime decides it
    (random weights are full of them), not a wrong export.
    """
    pieces = [as_sherpa(v) for v in vocabulary]
    if other_piece not in pieces or index >= len(ref.frames):
        return None
    other = pieces.index(other_piece)
    with torch.no_grad():
        g, state = decoder.predict(None, None, add_sos=False, batch_size=1)[:2]
        for tok in ref.token_ids[:index]:
            g, state = decoder.predict(torch.tensor([[tok]]), state, add_sos=False, batch_size=1)[:2]
        f = torch.from_numpy(ref.encoder_out).transpose(1, 2)[:, ref.frames[index]:ref.frames[index] + 1, :]
        logits = joint.joint_after_projection(joint.project_encoder(f), joint.project_prednet(g))[0, 0, 0]
    return float(logits[ref.token_ids[index]] - logits[other])


def onnx_encoder_difference(encoder: Path, ref: NemoReference, threads: int = 1) -> dict:
    """Max |torch - onnxruntime| over the encoder output, and the output length, for the reference features."""
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.intra_op_num_threads = threads
    so.inter_op_num_threads = 1
    sess = ort.InferenceSession(str(encoder), so, providers=["CPUExecutionProvider"])
    names = [i.name for i in sess.get_inputs()]
    x = np.ascontiguousarray(ref.features.T[None], dtype=np.float32)
    out, out_len = sess.run(None, {names[0]: x, names[1]: np.array([x.shape[2]], dtype=np.int64)})[:2]
    del sess
    n = int(out_len[0])
    same_shape = out.shape == ref.encoder_out.shape
    diff = float(np.abs(out - ref.encoder_out).max()) if same_shape else None
    return {"max_abs": diff, "frames": n, "torch_frames": ref.encoded_frames, "same_shape": same_shape,
            "output_scale": float(np.abs(ref.encoder_out).max()), "tolerance": ENCODER_TOLERANCE,
            "ok": same_shape and n == ref.encoded_frames and diff is not None and diff <= ENCODER_TOLERANCE}


CHILD = r"""
import json, sys
import numpy as np
import sherpa_onnx
a = json.loads(sys.argv[1])
kw = dict(encoder=a["encoder"], decoder=a["decoder"], joiner=a["joiner"], tokens=a["tokens"],
          model_type="nemo_transducer", num_threads=a.get("threads", 1),
          decoding_method=a.get("method", "greedy_search"))
if a.get("bpe_vocab"):
    kw.update(modeling_unit="bpe", bpe_vocab=a["bpe_vocab"], hotwords_file=a.get("hotwords_file", ""),
              hotwords_score=a.get("hotwords_score", 1.5))
r = sherpa_onnx.OfflineRecognizer.from_transducer(**kw)
out = []
for path in a["audio"]:
    s = r.create_stream(a["hotwords"]) if a.get("hotwords") else r.create_stream()
    s.accept_waveform(16000, np.load(path))
    r.decode_stream(s)
    out.append({"text": s.result.text, "tokens": list(s.result.tokens), "timestamps": list(s.result.timestamps)})
from importlib.metadata import version
print("@@RESULT@@" + json.dumps({"version": version("sherpa-onnx"), "results": out}))
"""


def sherpa_decode(folder: Path, audio: list[np.ndarray], *, method: str = "greedy_search", bpe_vocab: bool = False,
                  hotwords: str | None = None, hotwords_file: str | None = None, hotwords_score: float = 1.5,
                  encoder: str = "encoder.onnx", decoder: str = "decoder.onnx", joiner: str = "joiner.onnx",
                  threads: int = 1, timeout: float = 1800) -> tuple[dict | None, str | None]:
    """Stock sherpa-onnx on the folder, in a child (it exit()s on a model it rejects), cwd = the folder so
    relative weight locations resolve in every build (FACTS section 3). Returns (result, None) or (None, error)."""
    folder = Path(folder).resolve()
    with tempfile.TemporaryDirectory(prefix="sf-export-") as tmp:
        paths = []
        for i, a in enumerate(audio):
            p = Path(tmp) / f"a{i}.npy"
            np.save(p, np.asarray(a, dtype=np.float32))
            paths.append(str(p))
        args = {"encoder": str(folder / encoder), "decoder": str(folder / decoder), "joiner": str(folder / joiner),
                "tokens": str(folder / "tokens.txt"), "audio": paths, "method": method, "threads": threads,
                "bpe_vocab": str(folder / "bpe.vocab") if bpe_vocab else "", "hotwords": hotwords,
                "hotwords_file": hotwords_file or "", "hotwords_score": hotwords_score}
        env = dict(os.environ)
        env.setdefault("OMP_NUM_THREADS", str(threads))
        proc = subprocess.run([sys.executable, "-c", CHILD, json.dumps(args)], cwd=str(folder), capture_output=True,
                              text=True, timeout=timeout, env=env, preexec_fn=die_with_parent)
    marker = next((ln for ln in proc.stdout.splitlines() if ln.startswith("@@RESULT@@")), None)
    if proc.returncode == 0 and marker:
        return json.loads(marker[len("@@RESULT@@"):]), None
    return None, error_line(proc.stderr) or f"exit code {proc.returncode}"


def first_difference(a: list[str], b: list[str]) -> int | None:
    for i, (x, y) in enumerate(zip(a, b, strict=False)):
        if x != y:
            return i
    return None if len(a) == len(b) else min(len(a), len(b))
