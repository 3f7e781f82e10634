"""Which sherpa-onnx release loads a folder: from any working directory, only from the model folder, or not at all.

Users run prepared folders through the release their binding pins (sherpa-rs, Go, C#, Swift, Dart and
Kotlin bind the C API), and through its C API a folder the release rejects aborts the host process or
exits it: knowing before loading is worth more there than anywhere. The answer comes from measurement,
not from reading release notes: `sherpa_releases.json` beside this module holds the behaviour epochs
that bench/runtimes/matrix.py measured (docs/runtimes.md: the matrix, the data file's schema and the
rules applied here), and tests/test_c_api.py checks them against real releases' C API on every run.

Judged per model file from its graph skeleton alone (the external-data audit the inspector already
made): self-contained files load anywhere; relative external data loads anywhere where sessions are
created from the model's path, and only from the model folder where they are created from bytes; an
external tensor that onnxruntime 1.17's optimisers read (a float 4-D Conv weight, a tensor under 1 KiB)
fails on those releases from any folder; absolute locations depend on the bundled onnxruntime. A
folder's verdict is the worst of its files'.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path

from ..errors import BadInputError
from .external_data import ExternalAudit, is_absolute_location
from .onnx_graph import GraphFile, all_nodes, external_span, uses_external_data
from .protos import ModelProto, TensorProto

DATA = Path(__file__).with_name("sherpa_releases.json")
ANYWHERE, MODEL_FOLDER, NEVER = "anywhere", "model_folder", "never"
RANK = {ANYWHERE: 0, MODEL_FOLDER: 1, NEVER: 2}
WORDS = {ANYWHERE: "loads from any working directory", MODEL_FOLDER: "loads only from the model folder",
         NEVER: "does not load"}
FLOAT_TYPES = (TensorProto.FLOAT, TensorProto.FLOAT16, TensorProto.DOUBLE, TensorProto.BFLOAT16)


def version_key(text: str) -> tuple[int, ...]:
    """'1.12.14' -> (1, 12, 14); BadInputError naming the option for anything else."""
    m = re.fullmatch(r"v?(\d+)\.(\d+)\.(\d+)", text.strip())
    if not m:
        raise BadInputError(f"--sherpa-onnx {text!r} is not a release number like 1.12.35",
                            fix="give the sherpa-onnx release your binding uses (e.g. sherpa-rs pins one)")
    return tuple(int(x) for x in m.groups())


@dataclass(frozen=True)
class Epoch:
    """Releases first..last that load folders alike (one row of the data file)."""

    first: str
    last: str
    facts: dict = field(repr=False, hash=False, compare=False)

    def __getitem__(self, key: str):
        return self.facts[key]

    def contains(self, version: tuple[int, ...]) -> bool:
        return version_key(self.first) <= version <= version_key(self.last)


@dataclass(frozen=True)
class Releases:
    """The data file, parsed."""

    data: dict = field(repr=False, hash=False, compare=False)
    epochs: tuple[Epoch, ...]

    @property
    def newest(self) -> str:
        return self.data["newest_measured"]

    def epoch(self, version: str) -> Epoch | None:
        """The epoch of a release; the last one for releases newer than any measured; None before NeMo."""
        v = version_key(version)
        if v < version_key(self.data["oldest_nemo_transducer"]):
            return None
        for e in self.epochs:
            if e.contains(v):
                return e
        return self.epochs[-1] if v > version_key(self.epochs[-1].last) else None


@cache
def releases() -> Releases:
    data = json.loads(DATA.read_text(encoding="utf-8"))
    return Releases(data, tuple(Epoch(e["first"], e["last"], e) for e in data["epochs"]))


@dataclass
class FileFacts:
    """What decides how a release loads one model file, from its skeleton."""

    name: str
    external: bool  # any tensor with external data
    absolute: bool  # any absolute location
    optimizer_read: list[str]  # external tensors onnxruntime 1.17's optimisers read (optimizer_read_rule)
    inline_bytes: int  # the file's size with every tensor inline (what --inline would write)


def optimizer_reads(model: ModelProto) -> Callable[[TensorProto, int], bool]:
    """Whether onnxruntime 1.17's graph optimisers read a tensor of `model` while creating a session (the
    data file's optimizer_read_rule): a tensor under 1 KiB (constant folding) or a float 4-D Conv weight
    (the NCHWc transformer). Every writer keeps these inline (prepare, export): they are small, and kept
    external they make releases <= 1.12.20 fail from any working directory. Called as f(tensor, nbytes)."""
    rule = releases().data["optimizer_read_rule"]
    conv = {n.input[1] for n in all_nodes(model.graph) if n.op_type == "Conv" and len(n.input) > 1}

    def reads(t: TensorProto, nbytes: int) -> bool:
        return nbytes < rule["small_external_below_bytes"] or (
            t.name in conv and len(t.dims) == rule["conv_weight_rank"] and t.data_type in FLOAT_TYPES)

    return reads


def file_facts(g: GraphFile, audit: ExternalAudit) -> FileFacts:
    reads = optimizer_reads(g.model)
    read = [t.name for t, nbytes in _external_sizes(g) if reads(t, nbytes)]
    return FileFacts(g.path.name, audit.uses_external, any(is_absolute_location(r.location) for r in audit.refs),
                     read, g.size + audit.external_bytes)


def _external_sizes(g: GraphFile):
    """(tensor, bytes) of each tensor kept outside the file. A forged offset or length is left to the
    external-data audit, which reports it as `external.bad_field`: it is not this table's job to refuse."""
    from .onnx_graph import graph_tensors, inline_span

    for t in graph_tensors(g.model.graph):
        if uses_external_data(t) and inline_span(g, t) is None:
            try:
                yield t, external_span(t)[2] or 0
            except BadInputError:
                continue


@dataclass
class LoadVerdict:
    """How one release loads one model set (fp32 or int8), and why."""

    version: str
    where: str  # ANYWHERE | MODEL_FOLDER | NEVER
    why: str
    warnings: list[str] = field(default_factory=list)
    measured: bool = True  # False for releases newer than any measured (assumed like the newest)

    @property
    def text(self) -> str:
        return f"sherpa-onnx {self.version} {WORDS[self.where]}: {self.why}"

    def to_json(self) -> dict:
        return {"version": self.version, "loads": self.where, "why": self.why, "warnings": self.warnings,
                "measured": self.measured}


def judge_file(f: FileFacts, e: Epoch) -> tuple[str, str]:
    """(where, why) for one file on one epoch: the rules of docs/runtimes.md, in order."""
    if not f.external:
        return ANYWHERE, f"{f.name} is self-contained"
    if f.absolute:
        if e["absolute_locations"] == "refused":
            return NEVER, f"{f.name} has absolute external-data locations, which onnxruntime {e['onnxruntime']} " \
                          "refuses (sherpa-fixed prepare makes them bare names)"
        if e["absolute_locations"] == "cwd_prefixed":
            return NEVER, f"{f.name} has absolute external-data locations, which onnxruntime {e['onnxruntime']} " \
                          "resolves under the working directory (sherpa-fixed prepare makes them bare names)"
    if e["optimizer_read_external"] == "fails" and f.optimizer_read:
        return NEVER, (f"{f.name} keeps {f.optimizer_read[0]!r}" + (f" and {len(f.optimizer_read) - 1} more"
                       if len(f.optimizer_read) > 1 else "") + " in external data, which onnxruntime "
                       f"{e['onnxruntime']}'s graph optimisers read while a session is created from bytes "
                       "('model_path must not be empty'); they are small: prepare keeps them inline")
    if e["relative_external_data"] == "model_dir":
        return ANYWHERE, "external weights resolve against the model's folder (sessions from the path, " \
                         "sherpa-onnx >= 1.12.36)"
    return MODEL_FOLDER, (f"{f.name}'s external weights resolve against the working directory (sessions created "
                          "from bytes): the process must run in the model folder while the recognizer is created "
                          "(sherpa_fixed.session_model_dir does it in Python); self-contained files load anywhere")


def judge(files: list[FileFacts], version: str, *, tdt: bool) -> LoadVerdict:
    """How release `version` loads the model set made of `files`."""
    rel = releases()
    e = rel.epoch(version)
    if e is None:
        return LoadVerdict(version, NEVER, f"releases before {rel.data['oldest_nemo_transducer']} have no NeMo "
                                           "transducer (model_type nemo_transducer)")
    measured = version_key(version) <= version_key(rel.newest)
    warnings = [] if measured else [f"{version} is newer than any release measured ({rel.newest}); assumed to "
                                    f"load as {rel.newest} does"]
    if tdt and e["tdt"] == "no_durations":
        return LoadVerdict(version, NEVER, "it loads a TDT model but decodes it without durations (wrong text; "
                           f"TDT decoding needs sherpa-onnx >= {rel.data['oldest_tdt_exact']})", warnings, measured)
    if tdt and e["tdt"] == "duration0_as_1":
        warnings.append("its TDT search reads a predicted duration 0 as 1, so text can differ from NeMo's "
                        f"(exact from {rel.data['oldest_tdt_exact']})")
    if not tdt and e["rnnt"] == "one_symbol_per_frame":
        warnings.append("its RNNT search emits at most one token per frame (NeMo emits up to 10): text can differ")
    verdicts = [judge_file(f, e) for f in files]
    worst = max(verdicts, key=lambda v: RANK[v[0]])
    return LoadVerdict(version, worst[0], worst[1], warnings, measured)


def oldest_release(files: list[FileFacts], *, tdt: bool) -> str | None:
    """The oldest measured release that loads this set from any working directory and decodes it exactly."""
    for e in releases().epochs:
        v = judge(files, e.first, tdt=tdt)
        if v.where == ANYWHERE and not v.warnings:
            return e.first
    return None
