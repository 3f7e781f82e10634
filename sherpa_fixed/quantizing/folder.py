"""Quantize a model folder's fp32 set into sherpa-onnx's int8 release files.

The fp32 encoder/decoder/joiner become `encoder.int8.onnx`, `decoder.int8.onnx`,
`joiner.int8.onnx` (the names sherpa-onnx's releases use), in one of two schemes
(fast_scheme.py): `fast` (the default: int8 where onnxruntime has a fast kernel, exact
on every CPU) or `sherpa-onnx`, as sherpa-onnx's export scripts do it (onnxruntime
`quantize_dynamic`, QUInt8 for the encoder, QInt8 for decoder and joiner, per tensor;
see k2-fsa/sherpa-onnx scripts/nemo/parakeet-tdt-0.6b-v2/export_onnx.py), with the
encoder's metadata carried over. Weights stream from disk one tensor at a
time (ort_scheme.py, protowrite.py).

Safety is the shared mechanism's (safety/, docs/safety.md): the source is
locked (shared for --output, exclusive for --in-place), every read stays
inside the model folder, every file is written under a temp name and renamed
into place, in-place renames are journaled (a killed run is undone by the
next), an output folder is staged and renamed into place whole, and small
files are copied, never linked, into it.
"""

from __future__ import annotations

import fnmatch
import json
import os
import shutil
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from .. import __version__
from ..errors import EXIT_OK, BadInputError
from ..reading.external_data import audit_external_data, referenced_in
from ..reading.layout import ROLES, find_layout
from ..reading.onnx_graph import GraphFile, all_nodes
from ..reading.quantization import QUANTIZED_KEY, quantized_ops
from ..safety import journal
from ..safety.atomic import PREFIX, bring, check_free_space, check_writable, disk_error, fsync_dir, temp_path
from ..safety.confine import inside
from ..safety.lock import DEFAULT_WAIT
from ..safety.output import StagedOutput, check_output, staged_output
from ..safety.session import writing
from .fast_scheme import DEFAULT_SCHEME, SCHEMES, quantize_role, scheme_summary, scratch_bytes
from .ort_scheme import Spill
from .protowrite import write_model
from .stubs import Store

Progress = Callable[[str, int, int], None]  # (phase, done, total), as prepare's

INT8_NAMES = {role: f"{role}.int8.onnx" for role in ROLES}
ROLE_FILES = {"tokens.txt", "bpe.vocab"}  # the non-model files an int8 release carries


@dataclass
class QuantizeResult:
    source: Path
    target: Path
    mode: str  # output | in-place
    scheme: dict
    written: list[str] = field(default_factory=list)
    linked: list[str] = field(default_factory=list)
    files: list[dict] = field(default_factory=list)  # per model: role, source, output, bytes, weights quantized
    seconds: dict[str, float] = field(default_factory=dict)

    @property
    def exit_code(self) -> int:
        return EXIT_OK

    def to_json(self) -> dict:
        return {
            "schema": "sherpa-fixed/quantize",
            "schema_version": 1,
            "sherpa_fixed_version": __version__,
            "source": str(self.source),
            "target": str(self.target),
            "mode": self.mode,
            "scheme": self.scheme,
            "exit_code": self.exit_code,
            "files": self.files,
            "written": self.written,
            "linked": self.linked,
            "seconds": {k: round(v, 3) for k, v in self.seconds.items()},
        }


def parse_exclude(patterns: Sequence[str]) -> dict[str, list[str]]:
    """`[ROLE:]GLOB` patterns -> globs per role; a pattern without a role applies to all three."""
    out: dict[str, list[str]] = {role: [] for role in ROLES}
    for p in patterns:
        role, sep, glob = p.partition(":")
        if sep and role in ROLES:
            out[role].append(glob or "*")
        elif sep and role not in ROLES and "/" not in role and "*" not in role:
            raise BadInputError(f"--exclude {p!r}: {role!r} is not a model (use encoder:, decoder: or joiner:)")
        else:
            for r in ROLES:
                out[r].append(p)
    return out


def _check_patterns(patterns: Sequence[str], graphs: dict[str, GraphFile]) -> None:
    """A pattern that matches no node is almost always a typo: refuse it before any work."""
    for p in patterns:
        per_role = parse_exclude([p])
        if not any(excluded_nodes([n.name for n in graphs[r].model.graph.node], globs)
                   for r, globs in per_role.items() if globs):
            example = next((n.name for n in graphs["encoder"].model.graph.node if n.op_type == "MatMul"), "")
            raise BadInputError(f"--exclude {p!r} matches no node", path=graphs["encoder"].path.parent,
                                fix=f"node names look like {example!r}; globs match the whole name, so use "
                                    "'*' (e.g. 'encoder:*/conv/*'); nothing was written")


def excluded_nodes(names: list[str], globs: list[str]) -> list[str]:
    return [n for n in names if n and any(fnmatch.fnmatchcase(n, g) for g in globs)]


def _fp32_set(source: Path) -> dict[str, GraphFile]:
    layout = find_layout(source)
    fp32 = layout.variants.get("fp32")
    if fp32 is None or fp32.encoder is None:
        has_int8 = "int8" in layout.variants
        raise BadInputError("no fp32 encoder here" + (" (only an int8 set)" if has_int8 else ""), path=source,
                            fix="quantize takes the fp32 export (encoder.onnx, decoder.onnx, joiner.onnx and their "
                                "weights); an int8 set cannot be quantized again")
    graphs = {role: layout.graph(p) for role, p in fp32.paths().items()}
    for role, g in graphs.items():
        ops = quantized_ops(g.model)
        if ops:
            raise BadInputError(f"the {role} is already quantized ({', '.join(sorted(ops)[:3])} nodes)", path=g.path,
                                fix="quantize the fp32 export instead; quantizing int8 again only loses accuracy")
        if _weights_in_subgraphs(g):
            raise BadInputError(
                f"the {role}'s layers run inside an ONNX Loop (made by prepare --window), and onnxruntime's "
                "quantizer does not enter subgraphs: nothing would be quantized", path=g.path,
                fix="quantize the folder before windowing it: sherpa-fixed quantize FP32_DIR -o INT8_DIR, then "
                    "sherpa-fixed prepare INT8_DIR --window -o OUT; nothing was written")
        audit = audit_external_data(g)
        if audit.broken:
            raise BadInputError(audit.broken[0], path=g.path, fix="re-download or re-export the model; nothing was "
                                "written")
    return graphs


def _weights_in_subgraphs(g: GraphFile) -> bool:
    """True when MatMul/Conv/LSTM nodes live in a Loop/Scan/If body, where quantize_dynamic never looks."""
    for node in g.model.graph.node:
        for attr in node.attribute:
            subs = ([attr.g] if attr.HasField("g") else []) + list(attr.graphs)
            if any(n.op_type in ("MatMul", "Conv", "LSTM", "Gemm") for sub in subs for n in all_nodes(sub)):
                return True
    return False


def quantize_folder(
    source: str | os.PathLike,
    *,
    output: str | os.PathLike | None = None,
    in_place: bool = False,
    per_channel: bool = False,
    exclude: Sequence[str] = (),
    force: bool = False,
    progress: Progress | None = None,
    wait: float = DEFAULT_WAIT,
    scheme: str = DEFAULT_SCHEME,
) -> QuantizeResult:
    """Write encoder/decoder/joiner.int8.onnx from the fp32 set in `source`.

    `in_place`: add the int8 files beside the fp32 set (existing int8 files are
    replaced only with `force`). `output`: a new folder in the layout of
    sherpa-onnx's int8 releases: the int8 set plus tokens.txt (and bpe.vocab).
    `exclude`: `[ROLE:]GLOB` patterns of node names kept in fp32 (e.g.
    `encoder:/pre_encode/*`, `joiner:*`). `scheme`: "fast" (fast_scheme.py) or
    "sherpa-onnx" (onnxruntime's quantize_dynamic as sherpa-onnx's releases, byte for byte).
    Raises SherpaFixedError (exit 2) on bad input, leaving nothing half-written. Safety is the shared
    mechanism's (safety/): locks, a journal for in-place runs, a staged output folder.
    """
    source = Path(source)
    if not source.is_dir():
        raise BadInputError("not a folder" if source.exists() else "folder not found", path=source,
                            fix="quantize takes the model folder")
    if in_place and output is not None:
        raise BadInputError("--in-place and --output exclude each other")
    if not in_place and output is None:
        raise BadInputError("say where to write: --output DIR, or --in-place", path=source)
    if scheme not in SCHEMES:
        raise BadInputError(f"--scheme {scheme!r} is not a scheme", fix=f"use one of: {', '.join(SCHEMES)}")
    globs = parse_exclude(exclude)
    out_path = Path(output) if output is not None else None
    if out_path is not None:
        check_output(source, out_path, force)
    summary = {**scheme_summary(scheme, per_channel), "exclude": list(exclude)}
    with writing(source, output=out_path, in_place=in_place, wait=wait, referenced=lambda: referenced_in(source)):
        t0 = time.perf_counter()
        graphs = _fp32_set(source)
        _check_patterns(exclude, graphs)
        if in_place and not force:
            existing = [INT8_NAMES[r] for r in ROLES if (source / INT8_NAMES[r]).exists()]
            if existing:
                raise BadInputError(f"{existing[0]} already exists", path=source / existing[0],
                                    fix="pass --force to replace the int8 set, or use --output DIR")
        target = source if in_place else out_path
        result = QuantizeResult(source, target, "in-place" if in_place else "output", summary)
        result.seconds["plan"] = time.perf_counter() - t0
        need = sum(g.size + audit_external_data(g).external_bytes for g in graphs.values())
        # int8 is a quarter of fp32, and the encoder's spill file and its output exist at the same time.
        need = scratch_bytes(need, scheme)
        if in_place:
            check_writable(source)
            check_free_space(source, need)
            staging = temp_path(source / "quantize", "tmp")
            try:
                staging.mkdir()
                _quantize_all(graphs, staging, globs, per_channel, scheme, result, progress)
                _commit_in_place(staging, source, result)
            except OSError as exc:
                raise disk_error(exc, target) from exc
            finally:
                shutil.rmtree(staging, ignore_errors=True)
        else:
            with staged_output(out_path, source=source, force=force, command="quantize") as out:
                check_free_space(out.parent, need)
                try:
                    _quantize_all(graphs, out.staging, globs, per_channel, scheme, result, progress)
                    _commit_output(out, source, result)
                except OSError as exc:
                    raise disk_error(exc, target) from exc
        result.seconds["total"] = time.perf_counter() - t0
        return result


def _quantize_all(graphs: dict[str, GraphFile], staging: Path, globs: dict[str, list[str]], per_channel: bool,
                  scheme: str, result: QuantizeResult, progress: Progress | None) -> None:
    for role in ROLES:
        g = graphs[role]
        t = time.perf_counter()
        names = [n.name for n in g.model.graph.node]
        nodes = excluded_nodes(names, globs[role])
        store = Store()
        spill = Spill(staging / f"{role}.spill", store)
        name = INT8_NAMES[role]
        tick_quantize = _ticker(progress, f"quantizing {g.path.name}", audit_external_data(g).external_bytes + g.size)
        tick_write = _ticker(progress, f"writing {name}", audit_external_data(g).external_bytes // 4 + g.size)

        try:
            model, quantized, record = quantize_role(g.path, role, scheme=scheme, per_channel=per_channel,
                                                     nodes_to_exclude=nodes, store=store, spill=spill,
                                                     scratch=staging, tick=tick_quantize, version=__version__,
                                                     ort_version=_ort_version())
            spill.close()
            entry = model.metadata_props.add()
            entry.key, entry.value = QUANTIZED_KEY, json.dumps(record, sort_keys=True)
            written = write_model(model, store, staging / name, f"{role}.int8.weights", tick=tick_write)
        finally:
            spill.close()
            store.close()
            (staging / f"{role}.spill").unlink(missing_ok=True)
        del model
        result.files.append({"role": role, "source": g.path.name, "output": name,
                             "bytes": sum(p.stat().st_size for p in written), "weights_quantized": quantized,
                             "nodes_excluded": len(nodes), "files": [p.name for p in written]})
        result.seconds[role] = time.perf_counter() - t


def _ticker(progress: Progress | None, phase: str, total: int) -> Callable[[int], None] | None:
    if progress is None:
        return None
    done = [0]
    total = max(1, total)

    def tick(n: int) -> None:
        done[0] += n
        progress(phase, min(done[0], total), total)

    return tick


def _ort_version() -> str:
    import onnxruntime

    return onnxruntime.__version__


def _outputs(staging: Path) -> list[Path]:
    return sorted(p for p in staging.iterdir() if p.is_file())


def _commit_in_place(staging: Path, folder: Path, result: QuantizeResult) -> None:
    """Rename each new file over its final name, journaled (safety/journal.py): a run killed between the
    renames is undone by the next run of any command, and a failure here undoes it at once."""
    j = journal.begin(folder)
    moved: list[str] = []
    try:
        for p in _outputs(staging):
            journal.swap_in(j, p, p.name)
            moved.append(p.name)
        fsync_dir(folder)
    except BaseException:
        journal.roll_back(j)
        raise
    journal.commit(j)
    result.written += moved


def _commit_output(out: StagedOutput, source: Path, result: QuantizeResult) -> None:
    result.written += [p.name for p in _outputs(out.staging)]
    for p in sorted(source.iterdir()):
        if p.is_file() and not p.name.startswith(PREFIX) and p.name.lower() in ROLE_FILES:
            inside(source, p, what="file")
            how = bring(p, out.staging / p.name)  # small files are copied: editing the output never edits the source
            (result.linked if how == "linked" else result.written).append(p.name)
    out.commit()


def render_quantize(result: QuantizeResult) -> str:
    """The text report: one line per int8 file, then where they are."""
    s = result.scheme
    if s["name"] == "sherpa-onnx":
        how = f"{s['method']}, " + ("per-channel" if s["per_channel"] else "per-tensor")
    else:
        how = "per-channel pair-safe int8; encoder: MatMuls only, pointwise convolutions as MatMuls"
    lines = [f"quantized {result.source} (scheme {s['name']}: {how}"
             + (f", kept fp32: {', '.join(s['exclude'])}" if s["exclude"] else "") + ")"]
    for f in result.files:
        extra = f", {f['nodes_excluded']} node(s) kept fp32" if f["nodes_excluded"] else ""
        lines.append(f"  {f['source']} -> {' + '.join(f['files'])}: {f['bytes'] / 1e6:.1f} MB, "
                     f"{f['weights_quantized']} weights {s['weight_type'][f['role']]}{extra}")
    lines.append(f"wrote {len(result.written)} file(s) to {result.target}"
                 + (f", linked {', '.join(result.linked)}" if result.linked else "")
                 + f" in {result.seconds.get('total', 0):.1f} s")
    return "\n".join(lines)
