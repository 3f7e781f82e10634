"""Prove a prepare run's result, choosing for each changed file the cheapest proof that covers its change.

- A change that leaves the graph and every tensor's bytes as they were
  (metadata only) is proven by the streamed byte proof at every size: the
  new file is the old one byte for byte outside the metadata, and the
  metadata is exactly as planned. Identical bytes compute identical
  outputs, so running onnxruntime on both (twice the model in memory: 5 GB
  for a 1 GB int8 encoder) would prove nothing more. sherpa-onnx's own
  metadata checks are then run statically on the new file
  (metadata.sherpa_first_error); small sets (up to SHERPA_LOAD_LIMIT) are
  also loaded by stock sherpa-onnx and decode a second of audio.
- Freed dims, moved weights, windowing and longer positional tables change
  what runs: onnxruntime runs old and new side by side (bit-identical
  outputs), and stock sherpa-onnx decodes with the new set, for models up
  to RUN_PROOF_LIMIT; larger ones are byte-proven where their bytes are
  meant to be equal.
- `--verify full` runs everything at every size; `fast` proves bytes only;
  `off` trusts the rewrite.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from ..decoding.sherpa_check import run_sherpa
from ..reading.metadata import sherpa_first_error
from ..reading.onnx_graph import read_signature
from ..reading.protos import ModelProto, StringStringEntryProto
from . import posenc as _posenc
from . import stream_rewrite
from .plan import FilePlan, Plan
from .verify import Check, byte_proof, run_proof, window_proof

RUN_PROOF_LIMIT = 1 << 30  # above this, files are byte-proven unless their graph changed or --verify full
SHERPA_LOAD_LIMIT = 100 << 20  # a metadata-only set above this is checked statically, not loaded (issue 23)
VERIFY_MODES = ("auto", "full", "fast", "off")

Progress = Callable[[str, int, int], None]


def metadata_only(fp: FilePlan) -> bool:
    """True when the file's graph and tensors stay byte for byte what they were."""
    return stream_rewrite.applies(fp) and not fp.freed


def _file_checks(fp: FilePlan, plan: Plan, new_path: Path, mode: str) -> list[Check]:
    v = plan.report.variant(fp.variant)
    feat = v.measured.get("feat_dim") if v else None
    vocab = v.measured.get("vocab_size") if v else None
    big = fp.total_bytes > RUN_PROOF_LIMIT
    if fp.window is not None:
        w = fp.window.window
        return [window_proof(fp.graph, new_path, fp.window, [w, max(1, w // 3), 2 * w + 13, 3 * w + 5],
                             feat or fp.graph.inputs[0].fixed(1) or 80)]
    if fp.posenc is not None:
        return [_posenc.posenc_proof(fp.graph, new_path, fp.posenc, feat or 80,
                                     run=mode == "full" or (mode == "auto" and not big))]
    checks = []
    same_bytes = metadata_only(fp)
    if fp.freed or mode == "full" or (mode == "auto" and not big and not same_bytes):
        time_freed = any("time" in c.what for c in fp.changes if c.kind == "dims")
        batch_freed = any("batch" in c.what for c in fp.changes if c.kind == "dims")
        native = fp.graph.inputs[0].fixed(2) if fp.role == "encoder" else None
        checks.append(run_proof(fp.role, fp.graph, new_path,
                                extra_frames=[native // 2, native * 2] if time_freed and native else None,
                                extra_batches=[2] if batch_freed else None, feat_dim=feat, vocab=vocab))
    if same_bytes or fp.weights != "keep" or mode == "fast" or big:
        if stream_rewrite.applies(fp):  # compared byte for byte, metadata included, never parsed whole
            checks.append(stream_rewrite.streamed_proof(fp.graph, new_path, fp.metadata, fp.freed))
        else:
            new_model = ModelProto.FromString(new_path.read_bytes())
            checks.append(byte_proof(fp.graph, new_model, new_path, fp.freed))
            checks.append(_metadata_check(fp, new_model, new_path))
    return checks


def _metadata_check(fp: FilePlan, new_model: ModelProto, new_path: Path) -> Check:
    """The rewritten file's metadata is the original's with exactly the planned keys set (the byte proof
    compares graphs and tensors, not metadata)."""
    entries = [StringStringEntryProto(key=p.key, value=p.value) for p in fp.graph.model.metadata_props]
    expected = stream_rewrite.edited(entries, stream_rewrite.set_metadata(entries, fp.metadata))
    got = list(new_model.metadata_props)
    if [(e.key, e.value) for e in expected] != [(e.key, e.value) for e in got]:
        have = {e.key: e.value for e in got}
        wrong = [k for k, v in fp.metadata.items() if have.get(k) != v]
        return Check(new_path.name, "metadata", False, "metadata is not the original with the planned keys set"
                     + (f" ({', '.join(wrong)})" if wrong else ""))
    return Check(new_path.name, "metadata", True, f"{len(fp.metadata)} metadata keys exactly as planned, the rest "
                 "as they were")


def _static_sherpa_check(plan: Plan, v, target: Path) -> Check:
    """sherpa-onnx's own refusals (InitEncoder, PostInit), evaluated on the new encoder's metadata."""
    enc_name = v.encoder.graph.path.name
    new_meta = read_signature(target / enc_name).metadata
    error = sherpa_first_error(new_meta, v.measured, plan.report.tokens)
    if error:
        return Check(enc_name, "sherpa-metadata", False, f"sherpa-onnx would refuse the new metadata: {error}")
    return Check(enc_name, "sherpa-metadata", True,
                 f"the {v.name} set passes every metadata check sherpa-onnx makes at load (checked statically on "
                 "the files as written, beside the byte proof of their graphs and tensors; --verify full loads "
                 "it)")


def _sherpa_check(plan: Plan, v, target: Path) -> Check:
    """Stock sherpa-onnx loads the set and decodes: 1 s of audio, or for an encoder whose time axis stays
    fixed, exactly one window's worth (FACTS.md section 5: (N + 80) // 160 frames)."""
    enc = v.encoder.graph
    fixed_t = enc.inputs[0].fixed(2) if not any(
        f.freed or f.window for f in plan.files if f.graph.path == enc.path) else None
    samples = fixed_t * 160 - 80 if fixed_t else 16000
    window = next((f.window for f in plan.files if f.graph.path == enc.path and f.window), None)
    if window is not None:  # several windows' worth, so seams are crossed
        samples = int(2.5 * window.window * 160)
    target = target.resolve()  # the child runs in `target`: relative paths would resolve twice
    files = {role: target / m.graph.path.name for role, m in v.models.items()}
    tokens = target / plan.report.layout.tokens.name
    run = run_sherpa(files["encoder"], files["decoder"], files["joiner"], tokens, samples=[samples], cwd=target)
    what = f"{samples / 16000:g} s of audio" + (f" (exactly its {fixed_t}-frame window)" if fixed_t else "")
    detail = (f"sherpa-onnx {run.version} loaded the {v.name} set and decoded {what}: "
              f"{len(run.results[0]['tokens'])} tokens") if run.ok else f"sherpa-onnx failed: {run.error}"
    return Check(files["encoder"].name, "sherpa", run.ok, detail)


def verify_plan(plan: Plan, target: Path, mode: str, progress: Progress | None = None) -> list[Check]:
    """Every proof the plan's changes call for, on the files written to `target` (see the module docstring)."""
    checks: list[Check] = []
    if mode == "off":
        return checks
    for fp in plan.files:
        if fp.changed:
            if progress:
                progress(f"verifying {fp.name}", 0, 1)
            checks += _file_checks(fp, plan, target / fp.name, mode)
    for v in plan.report.variants:
        changed = [f for f in plan.files if f.changed and f.variant == v.name]
        if not changed or mode == "fast":
            continue
        size = sum(m.graph.size + m.external.external_bytes for m in v.models.values())
        if mode == "full" or (size <= RUN_PROOF_LIMIT and not (all(map(metadata_only, changed))
                                                                and size > SHERPA_LOAD_LIMIT)):
            checks.append(_sherpa_check(plan, v, target))
        else:  # not loaded (too big): sherpa-onnx's own metadata rules, on the files as written
            checks.append(_static_sherpa_check(plan, v, target))
    return checks
