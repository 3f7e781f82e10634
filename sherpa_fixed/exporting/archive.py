"""Read what a .nemo archive says about itself, before NeMo (11 s to import) or torch is touched.

A .nemo file is a tar (uncompressed since NeMo 1.7, gzip before) holding
`model_config.yaml`, `model_weights.ckpt` and the tokenizer's files. Reading
only the tar headers and the small config tells us, in milliseconds, whether
the file is a .nemo at all, whether it is a transducer we can export (or a
CTC-only or non-ASR model we must refuse), and how many bytes of weights the
export will write, so the disk-space check happens before any work.
"""

from __future__ import annotations

import tarfile
from dataclasses import dataclass
from pathlib import Path

from ..errors import BadInputError

CONFIG = "model_config.yaml"
WEIGHTS = "model_weights.ckpt"

TRANSDUCER = "transducer"
HYBRID = "hybrid"  # transducer + auxiliary CTC head: the transducer branch is exported
CTC = "ctc"
OTHER = "other"


@dataclass
class NemoArchive:
    path: Path
    compressed: bool
    config_text: str
    weights_bytes: int
    members: list[str]


def _bare(name: str) -> str:
    return name[2:] if name.startswith("./") else name


def read_archive(path: str | Path) -> NemoArchive:
    """Open the tar, list it, read model_config.yaml; one-line BadInputError for anything else."""
    path = Path(path)
    if not path.exists():
        raise BadInputError("file not found", path=path, fix="give the path of a .nemo checkpoint")
    if path.is_dir():
        raise BadInputError("is a folder, expected a .nemo file", path=path,
                            fix="export takes a NeMo checkpoint (MODEL.nemo); use `sherpa-fixed prepare` for "
                                "a folder that is already exported")
    compressed = False
    try:
        try:
            tar = tarfile.open(path, "r:")  # noqa: SIM115 - closed by the `with tar` below
        except tarfile.ReadError:
            tar = tarfile.open(path, "r:gz")  # noqa: SIM115 - NeMo < 1.7 wrote gzipped archives
            compressed = True
    except (tarfile.ReadError, EOFError, OSError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else "not a tar archive"
        raise BadInputError(f"not a .nemo checkpoint ({reason})", path=path,
                            fix="a .nemo file is the tar archive NeMo's save_to() writes; check the path, or "
                                "re-download it if it is truncated") from exc
    config_text, weights, members = None, None, []
    try:
        with tar:
            for m in tar:
                name = _bare(m.name)
                members.append(name)
                if name == CONFIG and m.isfile():
                    f = tar.extractfile(m)
                    config_text = f.read().decode("utf-8", "replace") if f else None
                elif name == WEIGHTS and m.isfile():
                    weights = m
    except (tarfile.TarError, EOFError, OSError, UnicodeError) as exc:
        if weights is not None and not compressed:
            _refuse_cut_short(path, weights)
        raise BadInputError(f"corrupt .nemo archive ({type(exc).__name__}: {exc})", path=path,
                            fix="the file is truncated or damaged; re-download or re-save it") from exc
    if config_text is None:
        raise BadInputError(f"not a .nemo checkpoint: the archive has no {CONFIG}", path=path,
                            fix="export takes a checkpoint written by NeMo's save_to()")
    if weights is None:
        raise BadInputError(f"the .nemo archive has no {WEIGHTS}", path=path,
                            fix="the checkpoint is incomplete; re-download or re-save it")
    if not compressed:
        _refuse_cut_short(path, weights)
    return NemoArchive(path, compressed, config_text, weights.size, members)


def _refuse_cut_short(path: Path, weights: tarfile.TarInfo) -> None:
    have = path.stat().st_size - weights.offset_data
    if have < weights.size:
        raise BadInputError(f"corrupt .nemo archive: {WEIGHTS} is cut short ({max(have, 0)} of {weights.size} "
                            "bytes)", path=path, fix="the file is truncated; re-download or re-save it")


def classify(config: dict) -> tuple[str, str]:
    """(kind, class name) from the model config: TRANSDUCER, HYBRID, CTC or OTHER."""
    if "model" in config and isinstance(config["model"], dict) and "encoder" not in config:
        config = config["model"]
    target = str(config.get("target") or "")
    cls = target.rsplit(".", 1)[-1] if target else "?"
    decoder = config.get("decoder") or {}
    dec_target = str(decoder.get("_target_") or "") if isinstance(decoder, dict) else ""
    has_joint = isinstance(config.get("joint"), dict)
    asr = target.startswith("nemo.collections.asr.") or "preprocessor" in config
    if not asr or "encoder" not in config:
        return OTHER, cls
    if has_joint and ("RNNTDecoder" in dec_target or "StatelessTransducerDecoder" in dec_target or not dec_target):
        return (HYBRID if "aux_ctc" in config or "Hybrid" in cls else TRANSDUCER), cls
    if "ConvASRDecoder" in dec_target or "CTC" in cls:
        return CTC, cls
    return OTHER, cls


def refuse_unsupported(kind: str, cls: str, path: Path) -> None:
    if kind == CTC:
        raise BadInputError(f"is a CTC-only model ({cls}); export writes transducer (TDT/RNNT) folders", path=path,
                            fix="sherpa-onnx runs NeMo CTC models as nemo_ctc: use sherpa-onnx's "
                                "scripts/nemo export for CTC; hybrid TDT/RNNT-CTC models export fine here")
    if kind == OTHER:
        raise BadInputError(f"is not a NeMo speech-recognition transducer ({cls})", path=path,
                            fix="export takes an ASR transducer checkpoint (Parakeet TDT/RNNT, or a hybrid "
                                "TDT/RNNT-CTC model)")
