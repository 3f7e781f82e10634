"""The log-mel features sherpa-onnx feeds a NeMo transducer, computed independently in Python.

Same library (kaldi-native-fbank) and the same options sherpa-onnx sets for
NeMo models (offline-recognizer-transducer-nemo-impl.h, PostInit, and
offline-stream.cc): 25 ms povey windows every 10 ms, no dither, no DC
removal, pre-emphasis 0.97, snip_edges false (so N samples give
(N + 80) // 160 frames), librosa-style mel banks from 0 Hz to Nyquist - 400 Hz,
then per-feature normalisation with the population variance and
1 / (std + 1e-5), as NemoNormalizePerFeature does.
"""

from __future__ import annotations

import numpy as np

from ..errors import BadInputError


def fbank_options(feat_dim: int, sample_rate: int = 16000):
    try:
        import kaldi_native_fbank as knf
    except ImportError as exc:  # pragma: no cover - a declared dependency
        raise BadInputError("kaldi-native-fbank is not installed", fix="pip install kaldi-native-fbank") from exc
    opts = knf.FbankOptions()
    opts.frame_opts.dither = 0.0
    opts.frame_opts.snip_edges = False
    opts.frame_opts.samp_freq = float(sample_rate)
    opts.frame_opts.frame_shift_ms = 10.0
    opts.frame_opts.frame_length_ms = 25.0
    opts.frame_opts.remove_dc_offset = False
    opts.mel_opts.num_bins = int(feat_dim)
    opts.mel_opts.low_freq = 0.0
    opts.mel_opts.high_freq = -400.0
    opts.mel_opts.is_librosa = True
    return knf, opts


def log_mel(samples: np.ndarray, feat_dim: int, sample_rate: int = 16000) -> np.ndarray:
    """(frames, feat_dim) float32 log-mel energies, before normalisation."""
    knf, opts = fbank_options(feat_dim, sample_rate)
    fb = knf.OnlineFbank(opts)
    fb.accept_waveform(float(sample_rate), np.asarray(samples, dtype=np.float32).tolist())
    fb.input_finished()
    n = fb.num_frames_ready
    if n == 0:
        return np.zeros((0, feat_dim), np.float32)
    return np.stack([np.asarray(fb.get_frame(i), dtype=np.float32) for i in range(n)])


def normalize_per_feature(feats: np.ndarray) -> np.ndarray:
    """NeMo's per_feature normalisation, as sherpa-onnx computes it (float32, population variance)."""
    x = feats.astype(np.float32)
    mean = x.mean(axis=0, dtype=np.float32)
    var = np.maximum((x * x).mean(axis=0, dtype=np.float32) - mean * mean, 0.0)
    inv = 1.0 / (np.sqrt(var) + np.float32(1e-5))
    return ((x - mean) * inv).astype(np.float32)


def nemo_features(samples: np.ndarray, feat_dim: int, normalize_type: str = "per_feature",
                  sample_rate: int = 16000) -> np.ndarray:
    """(frames, feat_dim) features exactly as sherpa-onnx hands them to the encoder (before it
    transposes to (batch, feat, time))."""
    feats = log_mel(samples, feat_dim, sample_rate)
    if normalize_type in ("", "NA", None):
        return feats
    if normalize_type != "per_feature":
        raise BadInputError(f"normalize_type {normalize_type!r} is not supported (sherpa-onnx implements "
                            "only per_feature)")
    return normalize_per_feature(feats)
