"""`sherpa-fixed export MODEL.nemo OUT_DIR`: a NeMo checkpoint to a sherpa-onnx folder in one pass.

Order matters for memory and for the promise that nothing is half-written:
1. the archive is read (headers and config only, bounded and checked:
   archive.py) and refused early when it is not a transducer, before NeMo is
   imported or a byte is written;
2. the run opens through the shared safety mechanism (safety/): OUT_DIR's
   rules (not the checkpoint's folder, `--force` only over a folder
   sherpa-fixed wrote), the checkpoint locked shared and OUT_DIR's parent
   exclusively (two exports to one OUT_DIR run one after the other), free
   disk checked against everything the export will write;
3. everything happens in a hidden staging folder beside OUT_DIR, renamed
   into place only after the checks pass and after OUT_DIR's rules are
   checked again (a failure or kill leaves no OUT_DIR; a stale staging
   folder is swept by the next run);
4. the members the checkpoint needs are copied there (never a tar
   extraction), the model restored on CPU, the copies deleted; NeMo exports
   the three graphs; NeMo's own
   greedy decoding and encoder output are computed on sherpa-onnx's features
   of the check audio; then the torch model is freed, before any weights are
   streamed into encoder.weights or any onnxruntime session is made, so the
   peak is NeMo's own export and never the model twice;
5. int8 files come from `sherpa_fixed.quantizing` (our streamed quantizer);
6. the folder is inspected, its encoder compared with torch's output, and
   stock sherpa-onnx decodes the audio with exactly NeMo's tokens.
"""

from __future__ import annotations

import gc
import os
import shutil
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .. import __version__
from ..errors import EXIT_NEEDS_FIX, EXIT_OK, BadInputError
from ..safety.atomic import check_free_space, disk_error
from ..safety.lock import DEFAULT_WAIT
from ..safety.output import check_output, staged_output
from ..safety.session import writing
from .archive import classify, extract_members, parse_config, read_archive, refuse_unsupported

Progress = Callable[[str, int, int], None]
Notice = Callable[[str], None]

SCHEMA = "sherpa-fixed/export"
CHECK_SECONDS = 8.0  # random-weight models emit up to 10 tokens a frame; NeMo's greedy takes ~10 ms each
MARGIN = 64 << 20
MAX_STATIC_FRAMES = 60_000  # 10 minutes of 10 ms frames: far past any NPU window, short of an absurd graph


@dataclass
class Check:
    name: str
    ok: bool
    detail: str
    data: dict = field(default_factory=dict)

    def to_json(self) -> dict:
        return {"name": self.name, "ok": self.ok, "detail": self.detail, **({"data": self.data} if self.data else {})}


@dataclass
class ExportResult:
    source: Path
    output: Path
    facts: dict
    metadata: dict[str, str]
    files: dict[str, int] = field(default_factory=dict)
    checks: list[Check] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    seconds: dict[str, float] = field(default_factory=dict)
    layout: dict = field(default_factory=dict)
    written: bool = False

    @property
    def exit_code(self) -> int:
        return EXIT_OK if self.written and all(c.ok for c in self.checks) else EXIT_NEEDS_FIX

    def to_json(self) -> dict:
        return {"schema": SCHEMA, "schema_version": 1, "sherpa_fixed_version": __version__,
                "source": str(self.source), "output": str(self.output), "written": self.written,
                "exit_code": self.exit_code, "model": self.facts, "metadata": self.metadata, "files": self.files,
                "encoder_layout": self.layout, "checks": [c.to_json() for c in self.checks],
                "warnings": self.warnings, "seconds": {k: round(v, 2) for k, v in self.seconds.items()}}


def bytes_needed(weights_bytes: int, int8: bool, copied_bytes: int = 0) -> int:
    """Peak bytes in the staging folder: the members copied from the archive (mapped until the model is
    freed), torch's raw encoder and the consolidated copy side by side (each about the checkpoint's size),
    then the int8 set (about a quarter) beside the fp32 one."""
    return copied_bytes + int(weights_bytes * (2.1 + (0.6 if int8 else 0.0))) + MARGIN


def encoder_metadata(facts, nemo_version: str, source: Path, static_frames: int | None) -> dict[str, str]:
    """The keys sherpa-onnx reads (offline-transducer-nemo-model.cc, InitEncoder), from the model's own config,
    plus provenance. TDT is switched on only by 'tdt' in url; an RNNT url must not contain it."""
    meta = {
        "vocab_size": facts.vocab_size,
        "normalize_type": facts.normalize_type,
        "subsampling_factor": facts.subsampling_factor,
        "pred_rnn_layers": facts.pred_rnn_layers,
        "pred_hidden": facts.pred_hidden,
        "feat_dim": facts.feat_dim,
        "url": "nemo-tdt" if facts.tdt else "nemo-rnnt",
        "model_type": facts.nemo_class,
        "model_author": "NeMo",
        "comment": "Only the transducer branch is exported" if facts.kind == "hybrid" else "",
        "nemo_version": nemo_version,
        "sherpa_fixed_version": __version__,
        "exported_by": "sherpa-fixed export",
        "source_checkpoint": source.name,
    }
    if facts.tdt:
        meta["durations"] = ",".join(str(d) for d in facts.durations)
    if static_frames:
        meta["static_frames"] = static_frames
    return {k: str(v) for k, v in meta.items()}


def check_audio(audio: str | os.PathLike | None, static_frames: int | None) -> np.ndarray:
    """The audio the agreement check decodes: the user's WAV, or generated tone segments over noise.

    A static-shape encoder takes exactly T frames: (N + 80) // 160 = T for N = 160 T - 80 (FACTS section 5).
    """
    if audio is not None:
        from ..decoding.audio import read_wav, resample

        a = read_wav(audio)
        samples = resample(a.samples, a.sample_rate, 16000)
    else:
        from ..checking.validate import generated_audio

        samples = generated_audio(CHECK_SECONDS)[: int(CHECK_SECONDS * 16000)]
    samples = np.asarray(samples, dtype=np.float32)
    if static_frames:
        n = static_frames * 160 - 80
        samples = samples[:n] if len(samples) >= n else np.pad(samples, (0, n - len(samples)))
    return samples


def _int8_ready() -> str | None:
    """None when sherpa_fixed.quantizing can run, else why not (probed on an empty folder, writes nothing)."""
    try:
        from ..quantizing import quantize_folder
    except ImportError as exc:
        return f"sherpa_fixed.quantizing is not available ({exc})"
    with tempfile.TemporaryDirectory(prefix="sf-int8-probe-") as tmp:
        try:
            quantize_folder(tmp, in_place=True)
        except NotImplementedError:
            return "sherpa_fixed.quantizing is not finished in this build"
        except Exception:
            return None  # it ran and refused the empty folder: it is there
    return None


def export_nemo(
    source: str | os.PathLike,
    output: str | os.PathLike,
    *,
    int8: bool = False,
    static_frames: int | None = None,
    force: bool = False,
    check: bool = True,
    audio: str | os.PathLike | None = None,
    threads: int = 1,
    progress: Progress | None = None,
    notice: Notice | None = None,
    wait: float = DEFAULT_WAIT,
) -> ExportResult:
    """Export a .nemo transducer to a sherpa-onnx folder at `output`; see the module docstring."""
    t0 = time.perf_counter()
    source, output = Path(source), Path(output)
    say = notice or (lambda _m: None)
    if static_frames is not None and not 1 <= static_frames <= MAX_STATIC_FRAMES:
        raise BadInputError(f"--static-frames must be between 1 and {MAX_STATIC_FRAMES} feature frames (10 ms "
                            f"each), got {static_frames}", fix="NPU targets use a window of a few seconds, e.g. 800")
    if not isinstance(threads, int) or threads < 1:
        raise BadInputError(f"--num-threads must be 1 or more, got {threads}")
    out = Path(os.path.abspath(output))
    check_output(source, out, force, what="OUT_DIR")
    archive = read_archive(source)
    try:
        import yaml  # noqa: F401 - comes with the extra (omegaconf); cheap, unlike torch and NeMo
    except ImportError:
        from .extra import require_extra

        require_extra()
        raise
    config = parse_config(archive)
    kind, cls = classify(config)
    refuse_unsupported(kind, cls, source)
    with writing(source, output=out, wait=wait), \
            staged_output(out, source=source, force=force, command="export") as staged:
        check_free_space(out.parent, bytes_needed(archive.weights_bytes, int8, archive.needed_bytes))
        return _export(archive, kind, staged, int8=int8, static_frames=static_frames, check=check, audio=audio,
                       threads=threads, progress=progress, say=say, t0=t0)


def _export(archive, kind: str, staged, *, int8: bool, static_frames: int | None, check: bool, audio,
            threads: int, progress: Progress | None, say: Notice, t0: float) -> ExportResult:
    """The export proper, inside the staging folder `staged` (safety/output.py) that the caller opened."""
    source, out, staging = archive.path, staged.output, staged.staging
    if int8:
        why = _int8_ready()
        if why:
            raise BadInputError(f"--int8 cannot run: {why}", fix="export without --int8 now, and quantize the folder "
                                "later with `sherpa-fixed quantize`; nothing was written")
    samples = check_audio(audio, static_frames) if check else None
    from .extra import require_extra

    torch, nemo_asr, nemo_version = require_extra()  # 10 s of imports: only once the input is known good

    result = ExportResult(source, out, {}, {})
    try:
        extracted, raw = staging / ".nemo", staging / ".raw"
        extracted.mkdir()
        raw.mkdir()
        from .nemo_model import export_raw, load_model, model_facts, sentencepiece_of

        say(f"reading {source.name} ({archive.weights_bytes / 1e9:.2f} GB of weights) on CPU")
        t = time.perf_counter()
        extract_members(archive, extracted)
        model = load_model(archive, extracted, nemo_asr, torch)
        shutil.rmtree(extracted)  # its pages stay mapped (the weights) until the model is freed
        result.seconds["load"] = time.perf_counter() - t
        facts = model_facts(model, kind, source)
        result.facts = facts.to_json()
        result.warnings.extend(facts.warnings)
        say(f"{facts.nemo_class}: {'TDT' if facts.tdt else 'RNNT'}, {facts.feat_dim} mel, vocabulary "
            f"{facts.vocab_size}; exporting with NeMo's encoder/decoder/joint .export()")
        t = time.perf_counter()
        export_raw(model, raw, static_frames, torch, facts.feat_dim)
        result.seconds["nemo_export"] = time.perf_counter() - t
        sp = sentencepiece_of(model)
        bpe_lines = None
        if sp is None:
            result.warnings.append(f"tokenizer {facts.tokenizer} is not SentencePiece: no bpe.vocab, so sherpa-onnx "
                                   "hotwords will not work with this folder")
        reference = None
        if samples is not None:
            from .agreement import nemo_reference

            t = time.perf_counter()
            reference = nemo_reference(model, torch, samples, facts.feat_dim, facts.normalize_type,
                                       facts.vocabulary, tdt=facts.tdt)
            result.seconds["nemo_reference"] = time.perf_counter() - t
        from .assemble import move_small, write_bpe_vocab, write_encoder, write_tokens

        if sp is not None:
            bpe_lines = write_bpe_vocab(sp, staging)
        if reference is not None:  # copies of the small prediction net and joint stay for the near-tie analysis
            import copy  # (copies: the model's own tensors map the unpacked checkpoint, which must be released)

            reference.nets = (copy.deepcopy(model.decoder), copy.deepcopy(model.joint), torch, facts.vocabulary)
        del model, sp
        gc.collect()  # the torch model goes before any weights are streamed or sessions made

        t = time.perf_counter()
        result.metadata = encoder_metadata(facts, nemo_version, source, static_frames)
        result.layout = write_encoder(raw / "encoder.onnx", staging, result.metadata, progress)
        move_small(raw, staging, "decoder.onnx")
        move_small(raw, staging, "joiner.onnx")
        shutil.rmtree(raw)
        write_tokens(facts.vocabulary, staging)
        if bpe_lines is not None:
            result.layout["bpe_vocab_pieces"] = bpe_lines
        result.seconds["assemble"] = time.perf_counter() - t
        if int8:
            from ..quantizing import quantize_folder

            say("quantizing to int8 (sherpa_fixed.quantizing)")
            t = time.perf_counter()
            quantize_folder(staging, in_place=True, progress=progress)
            result.seconds["int8"] = time.perf_counter() - t
        result.files = {p.name: p.stat().st_size for p in sorted(staging.iterdir()) if p.is_file()}
        if check:
            t = time.perf_counter()
            say("checking: inspect, encoder against torch, sherpa-onnx tokens against NeMo's")
            result.checks = run_checks(staging, reference, static_frames, int8, threads)
            result.seconds["check"] = time.perf_counter() - t
        if any(not c.ok for c in result.checks):
            result.seconds["total"] = time.perf_counter() - t0
            return result  # the staging folder goes with the run (safety/output.py): nothing is written
        staged.commit()
        result.written = True
    except OSError as exc:
        raise disk_error(exc, out) from exc
    result.seconds["total"] = time.perf_counter() - t0
    return result


def run_checks(folder: Path, reference, static_frames: int | None, int8: bool, threads: int) -> list[Check]:
    from ..reading.findings import NEEDS_WINDOW, WORKS
    from ..reading.inspector import inspect_folder
    from .agreement import TIE_TOLERANCE, first_difference, onnx_encoder_difference, sherpa_decode, tie_margin

    checks: list[Check] = []
    report = inspect_folder(folder)
    allowed = (WORKS, NEEDS_WINDOW) if static_frames else (WORKS,)
    ok = report.verdict.code in allowed
    checks.append(Check("inspect", ok, f"sherpa-fixed inspect: {report.verdict.text}" +
                        ("" if ok else ": " + "; ".join(report.verdict.reasons[:3]))))
    if reference is None:
        return checks
    enc = onnx_encoder_difference(folder / "encoder.onnx", reference, threads)
    checks.append(Check("encoder", enc["ok"],
                        f"encoder output vs torch: max |diff| {enc['max_abs']:.2e} (outputs up to "
                        f"{enc['output_scale']:.2f}; tolerance {enc['tolerance']:g}), {enc['frames']} frames"
                        if enc["max_abs"] is not None else f"encoder output shape differs from torch's: {enc}",
                        enc))
    variants = [("fp32", "encoder.onnx", "decoder.onnx", "joiner.onnx")]
    if int8 and (folder / "encoder.int8.onnx").exists():
        variants.append(("int8", "encoder.int8.onnx", "decoder.int8.onnx", "joiner.int8.onnx"))
    for name, e, d, j in variants:
        res, err = sherpa_decode(folder, [reference.samples], encoder=e, decoder=d, joiner=j, threads=threads)
        if res is None:
            checks.append(Check(f"sherpa-onnx {name}", False, f"stock sherpa-onnx failed on the {name} set: {err}"))
            continue
        got = res["results"][0]["tokens"]
        if name == "fp32":
            i = first_difference(got, reference.pieces)
            same = i is None
            margin = None
            if not same and i < len(got) and i < len(reference.pieces) and getattr(reference, "nets", None):
                dec, joint, torch_mod, vocab = reference.nets
                margin = tie_margin(dec, joint, torch_mod, reference, i, got[i], vocab)
            ok = same or (margin is not None and abs(margin) <= TIE_TOLERANCE)
            secs = f"{len(reference.samples) / 16000:.1f} s of audio"
            if same:
                detail = (f"stock sherpa-onnx {res['version']} and NeMo's own greedy decoding give the same "
                          f"{len(got)} tokens on {secs}")
            elif ok:
                detail = (f"stock sherpa-onnx {res['version']} and NeMo's own greedy decoding give the same first "
                          f"{i} tokens on {secs}; at token {i} NeMo's two best candidates ({reference.pieces[i]!r} "
                          f"and sherpa-onnx's {got[i]!r}) are {abs(margin):.1e} apart, a near-tie (under "
                          f"{TIE_TOLERANCE}) that float noise decides (common with untrained weights, or audio unlike "
                          "the training data)")
            else:
                detail = (f"sherpa-onnx and NeMo differ at token {i}: sherpa-onnx {got[i:i + 3]} vs NeMo "
                          f"{reference.pieces[i:i + 3]} ({len(got)} vs {len(reference.pieces)} tokens)")
            checks.append(Check("tokens", ok, detail, {"tokens": len(got), "nemo_tokens": len(reference.pieces),
                                                       "first_difference": i, "tie_margin": margin,
                                                       "identical": same}))
        else:
            same = sum(a == b for a, b in zip(got, reference.pieces, strict=False))
            checks.append(Check("sherpa-onnx int8", True,
                                f"stock sherpa-onnx decoded with the int8 set: {len(got)} tokens, {same} at the "
                                f"same position as NeMo's fp32 {len(reference.pieces)} (int8 is not expected to be "
                                "token-identical)"))
    return checks


def render_export(r: ExportResult) -> str:
    lines = []
    f = r.facts
    if f:
        joint = f"TDT durations {f['durations']}" if f["tdt"] else "RNNT"
        lines.append(f"{r.source.name}: {f['nemo_class']}, {joint}, {f['feat_dim']} mel, "
                     f"vocabulary {f['vocab_size']} + blank, prediction net "
                     f"{f['pred_rnn_layers']} x {f['pred_hidden']}, subsampling {f['subsampling_factor']}, "
                     f"normalize {f['normalize_type'] or 'none'!r}")
    for name, size in r.files.items():
        lines.append(f"  {name:<22} {size / 1e6:>10.1f} MB")
    if r.layout.get("torch_external_files", 0) > 1:
        lines.append(f"  (torch wrote {r.layout['torch_external_files']} per-tensor files; consolidated into one "
                     "encoder.weights)")
    for c in r.checks:
        lines.append(f"  [{'ok' if c.ok else 'FAILED'}] {c.detail}")
    for w in r.warnings:
        lines.append(f"  warning: {w}")
    secs = ", ".join(f"{k} {v:.1f} s" for k, v in r.seconds.items())
    if r.written:
        lines.append(f"wrote {r.output} ({secs})")
    else:
        lines.append(f"nothing written: a check failed ({secs})")
    return "\n".join(lines)
