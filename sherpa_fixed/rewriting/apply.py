"""Apply a prepare plan: new files under temp names, renamed into place, proven, or undone.

In place, every step is journaled first (safety/journal.py): new weight
files get their final names before anything references them, then each
graph is swapped keeping a hard-linked backup, then the result is proven
(proofs.py), and only a proven result is committed; a failed proof or a
kill puts every original back. Into a new folder, everything is written in
a hidden staging folder (safety/output.py) renamed into place once proven.
Weights that must move stream tensor by tensor with a bounded buffer; big
files that need no change are hard-linked into an output, never rewritten.
"""

from __future__ import annotations

import os
import shutil
import stat
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

from ..errors import BadInputError
from ..reading.external_data import referenced_in, referenced_names
from ..reading.onnx_graph import materialize
from ..reading.runtimes import optimizer_reads
from ..safety import journal
from ..safety.atomic import (
    PREFIX,
    bring,
    check_free_space,
    check_writable,
    disk_error,
    fsync_dir,
    link_or_copy,
    temp_path,
    write_temp,
)
from ..safety.confine import inside
from ..safety.output import MARKER, StagedOutput
from . import posenc as _posenc
from . import stream_rewrite
from .plan import FilePlan, Plan
from .proofs import verify_plan
from .weights import WeightMove, plan_moves, set_inline, write_weights_file
from .windowing import window_encoder

if TYPE_CHECKING:
    from .prepare import PrepareResult

Progress = Callable[[str, int, int], None]  # (phase, done, total)


# ----------------------------------------------------------------------------- writing files


def _rewrite_graph(fp: FilePlan, out_dir: Path, progress: Progress | None, durable: bool) -> tuple[Path, Path | None]:
    """Write the new graph and, when consolidating, its new weights file, both under temp names in
    out_dir; return their paths. Only one graph proto and its serialization are alive at a time."""
    if stream_rewrite.applies(fp):  # metadata/dims only: a kernel byte copy, the graph never parsed whole
        return stream_rewrite.rewrite_streamed(fp.graph, out_dir / fp.name, fp.metadata, fp.freed,
                                               durable=durable, progress=progress), None
    model = materialize(fp.graph)  # a C-level copy with every tensor's bytes; the original stays for verification
    stream_rewrite.set_model_metadata(model, fp.metadata)
    if fp.posenc is not None:
        _posenc.extend_model(model, fp.graph.path, fp.posenc)
    if fp.window is not None:
        model = window_encoder(model, fp.window)
    if fp.freed:
        for vi in list(model.graph.input) + list(model.graph.output):
            for axis, name in fp.freed.get(vi.name, {}).items():
                d = vi.type.tensor_type.shape.dim[axis]
                d.Clear()
                d.dim_param = name
        del model.graph.value_info[:]

    new_weights: Path | None = None
    src_path = fp.graph.path
    if fp.weights in ("relocate", "inline_small", "consolidate", "inline"):
        moves = plan_moves(model, src_path)
        reads = optimizer_reads(model)  # judged on the graph as written (a windowed one renames its tensors)
        small = [mv for mv in moves if fp.weights == "inline" or reads(mv.tensor, mv.length)]
        _inline(small, src_path)
        big = [mv for mv in moves if mv not in small]
        if fp.weights == "relocate":
            for mv in big:
                for e in mv.tensor.external_data:
                    if e.key == "location":
                        e.value = mv.source.name
        elif fp.weights == "consolidate" and big:
            new_weights = temp_path(out_dir / fp.weights_name)
            total = sum(mv.length for mv in big)
            done = [0]

            def tick(n: int) -> None:
                done[0] += n
                if progress:
                    progress(f"writing {fp.weights_name}", done[0], total)

            write_weights_file(big, new_weights, fp.weights_name, tick, durable=durable)
    data = model.SerializeToString()
    del model
    return write_temp(out_dir / fp.name, data, durable=durable), new_weights


def _inline(moves: list[WeightMove], model_path: Path) -> None:
    by_file: dict[Path, list[WeightMove]] = {}
    for mv in moves:
        by_file.setdefault(mv.source, []).append(mv)
    for path, mvs in by_file.items():
        try:
            with open(path, "rb") as f:
                for mv in mvs:
                    f.seek(mv.offset)
                    data = f.read(mv.length)
                    if len(data) != mv.length:
                        raise BadInputError(f"ended before tensor {mv.tensor.name!r}", path=path,
                                            fix="the weights file is truncated; re-download or re-export it")
                    set_inline(mv.tensor, data)
        except OSError as exc:
            raise BadInputError(f"cannot read weights ({exc.strerror})", path=path) from exc


def bytes_to_write(plan: Plan) -> int:
    n = 0
    for fp in plan.files:
        if fp.changed:
            n += fp.graph.size + 4096
            if fp.weights in ("consolidate", "inline"):
                n += fp.audit.external_bytes
    return n


# ----------------------------------------------------------------------------- in place


def _mode_of(path: Path) -> int:
    """The permission bits a rewritten file inherits from the file it replaces (0440 stays 0440)."""
    try:
        return stat.S_IMODE(os.stat(path).st_mode)
    except OSError:
        return 0o644


def apply_in_place(plan: Plan, result: PrepareResult, verify: str, progress: Progress | None) -> None:
    folder = result.source
    check_writable(folder)
    check_free_space(folder, bytes_to_write(plan))
    old_refs = {fp.graph.path: referenced_names(fp.graph.path) for fp in plan.files}
    # From here on, a killed run is undone (or finished) by the next run of any command.
    j = journal.begin(folder, sorted(set().union(*old_refs.values())) if old_refs else [])
    t = time.perf_counter()
    try:
        staged: list[tuple[FilePlan, Path, Path | None]] = []
        for fp in plan.files:
            if not fp.changed:
                continue
            if fp.weights == "consolidate":
                fp.weights_name = _free_name(folder, fp.weights_name, old_refs)
            graph_tmp, weights_tmp = _rewrite_graph(fp, folder, progress, durable=True)
            mode = _mode_of(fp.graph.path)
            os.chmod(graph_tmp, mode)
            if weights_tmp is not None:
                os.chmod(weights_tmp, mode)
            staged.append((fp, graph_tmp, weights_tmp))
        # New weights get their final names first: nothing references them yet, so this is safe.
        for fp, _graph_tmp, weights_tmp in staged:
            if weights_tmp is not None:
                journal.add_new(j, weights_tmp, fp.weights_name)
                result.written.append(fp.weights_name)
        fsync_dir(folder)
        # onnxruntime >= 1.28 refuses external data that resolves outside the folder of the resolved graph
        # file: once a snapshot's graph link becomes a real file, the weights links into blobs/ must become
        # real entries too (a hard link to the blob: no bytes copied, the blob itself untouched).
        for fp, _graph_tmp, _ in staged:
            if fp.weights in ("consolidate", "inline"):
                continue
            for f in fp.audit.files:
                entry = folder / f.path.name
                if Path(os.path.abspath(f.path)).parent != Path(os.path.abspath(folder)) or not entry.is_symlink() \
                        or entry.name in j.backups:
                    continue
                real_tmp = temp_path(entry)
                link_or_copy(Path(os.path.realpath(entry)), real_tmp)
                journal.swap_in(j, real_tmp, entry.name)
        # Then each graph, atomically, keeping a hard-linked backup of the original to restore from.
        for fp, graph_tmp, _ in staged:
            journal.swap_in(j, graph_tmp, fp.graph.path.name)
            result.written.append(fp.graph.path.name)
        fsync_dir(folder)
        result.seconds["write"] = time.perf_counter() - t
        t = time.perf_counter()
        result.checks = verify_plan(plan, folder, verify, progress)
        result.seconds["verify"] = time.perf_counter() - t
        if any(not c.ok for c in result.checks):
            raise _VerificationFailed()
    except BaseException as exc:
        journal.roll_back(j)
        for p in folder.iterdir():
            if p.name.startswith(f"{PREFIX}tmp-{os.getpid()}-"):
                p.unlink(missing_ok=True)
        fsync_dir(folder)
        result.written.clear()
        if isinstance(exc, _VerificationFailed):
            return
        if isinstance(exc, OSError):
            raise disk_error(exc, folder) from exc
        raise
    # Weight files no graph references any more (consolidated scattered files) are removed last.
    result.removed = journal.commit(j, lambda: referenced_in(folder))


class _VerificationFailed(Exception):
    pass


def _free_name(folder: Path, name: str, old_refs: dict[Path, set[str]]) -> str:
    """`name` unless an existing graph still references a file of that name (never overwrite those)."""
    referenced = set().union(*old_refs.values()) if old_refs else set()
    candidate, n = name, 1
    while candidate in referenced:
        stem = name[: -len(".weights")]
        candidate = f"{stem}.{n}.weights"
        n += 1
    return candidate


def apply_to_output(plan: Plan, result: PrepareResult, out: StagedOutput, verify: str,
                    progress: Progress | None) -> None:
    """Write the prepared folder into `out`'s staging folder, prove it, and commit it (or leave nothing)."""
    source, staging = result.source, out.staging
    check_free_space(out.parent, bytes_to_write(plan))
    t = time.perf_counter()
    try:
        written_graphs: set[str] = set()
        consolidated_sources: set[str] = set()
        kept_refs: set[str] = set()
        own_copies: set[str] = set()  # weights of windowed graphs: copied, never hard-linked (plan.py)
        for fp in plan.files:
            refs = {f.path.name for f in fp.audit.files}
            if fp.window is not None:
                own_copies |= refs
            if fp.changed:
                # A fresh folder replaces nothing until its final rename, and the source is never
                # touched: no fsync here, like cp.
                graph_tmp, weights_tmp = _rewrite_graph(fp, staging, progress, durable=False)
                mode = _mode_of(fp.graph.path)
                os.chmod(graph_tmp, mode)
                os.replace(graph_tmp, staging / fp.name)
                written_graphs.add(fp.name)
                result.written.append(fp.name)
                if weights_tmp is not None:
                    os.chmod(weights_tmp, mode)
                    os.replace(weights_tmp, staging / fp.weights_name)
                    result.written.append(fp.weights_name)
                if fp.weights in ("consolidate", "inline"):
                    consolidated_sources |= refs
                else:
                    kept_refs |= refs
            else:
                kept_refs |= refs
        for p in sorted(source.iterdir()):
            if p.name.startswith(PREFIX) or p.name == MARKER or p.name in written_graphs or not p.is_file():
                continue
            if p.name in consolidated_sources and p.name not in kept_refs:
                continue  # scattered files replaced by one consolidated file
            if (staging / p.name).exists():
                continue
            inside(source, p)  # a symlink out of the folder is never followed (confine.py)
            if p.name in own_copies:
                try:
                    shutil.copyfile(os.path.realpath(p), staging / p.name)  # the kernel copies (copy_file_range)
                except OSError as exc:
                    raise disk_error(exc, staging / p.name) from exc
                result.written.append(p.name)
                continue
            (result.linked if bring(p, staging / p.name) == "linked" else result.written).append(p.name)
        result.seconds["write"] = time.perf_counter() - t
        t = time.perf_counter()
        result.checks = verify_plan(plan, staging, verify, progress)
        result.seconds["verify"] = time.perf_counter() - t
        if any(not c.ok for c in result.checks):
            result.written.clear()
            result.linked.clear()
            return
        out.commit()
    except OSError as exc:
        raise disk_error(exc, out.output) from exc
