"""Load a .nemo transducer on CPU, read its facts from its own config, and export it as NeMo does.

Everything sherpa-onnx needs in the encoder metadata comes from the model
object (never from a per-family guess): the mel count the encoder was built
for, the vocabulary without blank, the prediction network's shape, the
normaliser, the subsampling factor, and whether the joint carries TDT
duration outputs. The graphs themselves come from NeMo's own
`encoder.export()`, `decoder.export()` and `joint.export()`, as sherpa-onnx's
scripts/nemo/parakeet-tdt-0.6b-v2/export_onnx.py calls them; for a hybrid
TDT/RNNT-CTC model the decoder type is switched to the transducer first, as
scripts/nemo/fast-conformer-hybrid-transducer-ctc/export-onnx-transducer-non-streaming.py
does.
"""

from __future__ import annotations

import contextlib
import io
import logging
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path

from ..errors import BadInputError
from .archive import HYBRID, NemoArchive

# sherpa-onnx's NeMo front end (offline-stream.cc, offline-recognizer-transducer-nemo-impl.h): 16 kHz,
# 25 ms windows every 10 ms, per_feature normalisation or none. Anything else decodes wrongly there.
SHERPA_FRONT_END = {"window_stride": 0.01, "window_size": 0.025}
SHERPA_NORMALIZE = ("per_feature", "")


@dataclass
class ModelFacts:
    """What the checkpoint says about itself; the encoder metadata is built from these alone."""

    nemo_class: str
    kind: str
    feat_dim: int
    vocab_size: int  # without blank (NeMo's count; sherpa-onnx adds 1)
    pred_rnn_layers: int
    pred_hidden: int
    subsampling_factor: int
    normalize_type: str  # "" for none ("NA" in NeMo)
    durations: list[int]
    sample_rate: int
    d_model: int | None
    tokenizer: str
    vocabulary: list[str] = field(repr=False, default_factory=list)
    warnings: list[str] = field(default_factory=list)

    @property
    def tdt(self) -> bool:
        return bool(self.durations)

    def to_json(self) -> dict:
        d = asdict(self)
        d.pop("vocabulary")
        d["tdt"] = self.tdt
        return d


def quiet_nemo() -> None:
    """NeMo logs dozens of INFO lines per restore; keep warnings and errors only."""
    for name in ("nemo_logger", "nemo", "pytorch_lightning", "lightning", "torch.onnx"):
        logging.getLogger(name).setLevel(logging.ERROR)
    os.environ.setdefault("NEMO_TESTING", "0")


def mapped_connector():
    """NeMo's SaveRestoreConnector, except that the weights are memory-mapped and assigned, not copied.

    NeMo's restore builds the model (random init, the model's full size), then
    torch.loads the checkpoint (the full size again) and copies it in: two
    copies at the peak. Here `torch.load(mmap=True)` maps the unpacked
    checkpoint and `load_state_dict(assign=True)` makes those mapped tensors
    the parameters, freeing the random init: one copy, and its pages are the
    file's (reclaimable). Anything that refuses (an old non-zip checkpoint, an
    old torch) falls back to NeMo's own way.
    """
    from nemo.core.connectors.save_restore_connector import SaveRestoreConnector

    class MappedConnector(SaveRestoreConnector):
        @staticmethod
        def _load_state_dict_from_disk(model_weights, map_location="cpu"):
            import torch

            try:
                return torch.load(model_weights, map_location=map_location, mmap=True, weights_only=True)
            except Exception:
                return SaveRestoreConnector._load_state_dict_from_disk(model_weights, map_location=map_location)

        def load_instance_with_state_dict(self, instance, state_dict, strict):
            try:
                instance.load_state_dict(state_dict, strict=strict, assign=True)
            except TypeError:
                instance.load_state_dict(state_dict, strict=strict)
            instance._set_model_restore_state(is_being_restored=False)

    return MappedConnector()


def load_model(archive: NemoArchive, extracted: Path, nemo_asr, torch):
    """Restore the model on CPU from an already extracted archive; transducer branch selected."""
    quiet_nemo()
    connector = mapped_connector()
    connector.model_extracted_dir = str(extracted)
    sink = io.StringIO()
    try:
        with contextlib.redirect_stdout(sink), torch.no_grad():
            model = nemo_asr.models.ASRModel.restore_from(str(archive.path), map_location=torch.device("cpu"),
                                                          save_restore_connector=connector)
    except BadInputError:
        raise
    except Exception as exc:  # NeMo raises anything from KeyError to RuntimeError on a bad checkpoint
        first = (str(exc).strip().splitlines() or [""])[0][:200]
        if "weights_only" in first or "Unpickl" in type(exc).__name__ or "PytorchStreamReader" in first:
            first = "model_weights.ckpt is not a readable torch checkpoint"
        raise BadInputError(f"NeMo could not restore the checkpoint ({type(exc).__name__}: {first})",
                            path=archive.path, fix="check that it is a NeMo ASR checkpoint saved by a NeMo version "
                            "compatible with the installed one; re-download it if it is damaged") from exc
    model.eval()
    if hasattr(model, "cur_decoder"):  # hybrid RNNT/TDT + CTC: export the transducer branch
        with contextlib.redirect_stdout(sink):
            model.change_decoding_strategy(decoder_type="rnnt", verbose=False)
        model.set_export_config({"decoder_type": "rnnt"})
    for name in ("encoder", "decoder", "joint"):
        if not hasattr(model, name) or getattr(model, name) is None:
            raise BadInputError(f"the restored {type(model).__name__} has no {name}; it is not a transducer",
                                path=archive.path, fix="export takes TDT/RNNT transducers and hybrid TDT/RNNT-CTC "
                                "models")
    return model


def _cfg(cfg, *keys, default=None):
    for k in keys:
        if cfg is None:
            return default
        cfg = cfg.get(k) if hasattr(cfg, "get") else None
    return default if cfg is None else cfg


def model_facts(model, kind: str, path: Path) -> ModelFacts:
    """Read the facts from the model object and its config; refuse what sherpa-onnx cannot run right."""
    cfg = model.cfg
    warnings: list[str] = []
    joint = model.joint
    extra = int(getattr(joint, "num_extra_outputs", 0) or 0)
    durations = [int(d) for d in (_cfg(cfg, "decoding", "durations") or _cfg(cfg, "model_defaults", "tdt_durations")
                                  or _cfg(cfg, "loss", "tdt_kwargs", "durations") or [])] if extra else []
    if extra and not durations:
        durations = list(range(extra))
        warnings.append(f"the joint has {extra} duration outputs but the config lists no durations; assumed "
                        f"{durations}")
    if extra and len(durations) != extra:
        raise BadInputError(f"the joint has {extra} duration outputs but the config lists durations {durations}",
                            path=path, fix="the checkpoint's config is inconsistent; fix decoding.durations")
    if durations and durations != list(range(len(durations))):
        # offline-transducer-greedy-search-nemo-decoder.cc (DecodeOneTDT) skips `argmax index` frames.
        raise BadInputError(f"TDT durations {durations} are not 0..{len(durations) - 1}: sherpa-onnx uses the "
                            "index of the best duration as the number of frames to skip, so it would decode this "
                            "model wrongly", path=path, fix="sherpa-onnx supports TDT models with durations 0..N-1 "
                            "(as every Parakeet-TDT has)")
    pre = cfg.get("preprocessor") or {}
    feat_dim = int(getattr(model.encoder, "_feat_in", None) or _cfg(cfg, "encoder", "feat_in")
                   or pre.get("features") or 0)
    if pre.get("features") is not None and int(pre.get("features")) != feat_dim:
        warnings.append(f"preprocessor.features={pre.get('features')} but the encoder takes {feat_dim}; "
                        f"feat_dim={feat_dim} (the encoder's) is written")
    normalize = str(pre.get("normalize", "per_feature") or "")
    normalize = "" if normalize == "NA" else normalize
    if normalize not in SHERPA_NORMALIZE:
        raise BadInputError(f"preprocessor.normalize={normalize!r} is not supported by sherpa-onnx (only "
                            "per_feature or none; offline-stream.cc)", path=path,
                            fix="sherpa-onnx cannot reproduce this model's features")
    mismatch = [f"{k}={pre.get(k)} (sherpa-onnx uses {v})" for k, v in SHERPA_FRONT_END.items()
                if pre.get(k) is not None and abs(float(pre.get(k)) - v) > 1e-9]
    if mismatch:
        warnings.append("the model's front end differs from sherpa-onnx's: " + ", ".join(mismatch))
    sample_rate = int(pre.get("sample_rate") or cfg.get("sample_rate") or 16000)
    if sample_rate != 16000:
        warnings.append(f"the model was trained at {sample_rate} Hz; sherpa-onnx's NeMo front end runs at 16 kHz")
    dither = pre.get("dither")
    if dither:
        warnings.append(f"preprocessor.dither={dither}: NeMo dithers only in training; sherpa-onnx never does")
    vocabulary = [str(s) for s in joint.vocabulary]
    vocab_size = int(model.decoder.vocab_size)
    if vocab_size != len(vocabulary):
        raise BadInputError(f"decoder vocab_size {vocab_size} != joint vocabulary {len(vocabulary)}", path=path,
                            fix="the checkpoint is inconsistent")
    sub = getattr(model.encoder, "subsampling_factor", None) or _cfg(cfg, "encoder", "subsampling_factor") or 4
    tok = getattr(model, "tokenizer", None)
    tok_name = type(tok).__name__ if tok is not None else "labels"
    return ModelFacts(
        nemo_class=type(model).__name__, kind=kind, feat_dim=feat_dim, vocab_size=vocab_size,
        pred_rnn_layers=int(model.decoder.pred_rnn_layers), pred_hidden=int(model.decoder.pred_hidden),
        subsampling_factor=int(sub), normalize_type=normalize, durations=durations, sample_rate=sample_rate,
        d_model=getattr(model.encoder, "d_model", None), tokenizer=tok_name, vocabulary=vocabulary,
        warnings=warnings + ([] if kind != HYBRID else ["hybrid model: the transducer branch is exported; the CTC "
                                                         "head is not"]))


def sentencepiece_of(model):
    """The SentencePieceProcessor behind a NeMo SentencePieceTokenizer, else None."""
    tok = getattr(model, "tokenizer", None)
    sp = getattr(tok, "tokenizer", None)
    if sp is not None and hasattr(sp, "get_score") and hasattr(sp, "id_to_piece") and hasattr(sp, "get_piece_size"):
        return sp
    return None


def export_raw(model, folder: Path, static_frames: int | None, torch, feat_dim: int) -> None:
    """NeMo's own export of the three graphs into `folder` (what upstream's scripts do)."""
    sink = io.StringIO()
    with contextlib.redirect_stdout(sink), torch.no_grad():
        if static_frames is None:
            model.encoder.export(str(folder / "encoder.onnx"))
        else:
            example = (torch.randn(1, feat_dim, static_frames), torch.tensor([static_frames]))
            model.encoder.export(str(folder / "encoder.onnx"), input_example=example, dynamic_axes={})
        model.decoder.export(str(folder / "decoder.onnx"))
        model.joint.export(str(folder / "joiner.onnx"))
