"""Compare a model folder with a reference layout (models/reference/*.json), difference by difference.

Each difference is sorted into one of three kinds:

- expected: a property of the model, not a defect (80 vs 128 mel bins, model
  width, vocabulary size, TDT vs RNNT, missing optional files);
- fixable: `sherpa-fixed prepare` repairs it (metadata, weight layout,
  declared-only fixed sizes);
- breaking: stock sherpa-onnx cannot use it as is, and prepare cannot fix it
  (a different signature, a baked fixed time axis, broken tokens, files
  from different models).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

from ..errors import BadInputError
from ..reading.inspector import FolderReport, VariantReport

EXPECTED, FIXABLE, BREAKING = "expected", "fixable", "breaking"
DEFAULT_REFERENCE = "parakeet-tdt-0.6b"

# What a fixed size on each axis role is, when it differs from the reference.
ROLE_REASON = {
    "features": "features",
    "hidden": "encoder hidden",
    "state_hidden": "decoder hidden",
    "state_layers": "decoder hidden",
    "vocab": "vocabulary",
}


@dataclass
class Difference:
    category: str
    area: str  # files | signature | shape | metadata | tokens | weights | model
    what: str
    reference: str | None
    found: str | None
    why: str

    def to_json(self) -> dict:
        return {"category": self.category, "area": self.area, "what": self.what, "reference": self.reference,
                "found": self.found, "why": self.why}

    def line(self) -> str:
        vals = ""
        if self.reference is not None or self.found is not None:
            vals = f" (reference {self.reference}, found {self.found})"
        return f"{self.what}{vals}: {self.why}"


def reference_dirs() -> list[Path]:
    here = Path(__file__).resolve().parent.parent
    return [p for p in (here / "_data" / "reference", here.parent / "models" / "reference") if p.is_dir()]


def available_references() -> list[str]:
    return sorted({p.stem for d in reference_dirs() for p in d.glob("*.json")})


@lru_cache(maxsize=8)
def load_reference(name: str = DEFAULT_REFERENCE) -> dict:
    for d in reference_dirs():
        p = d / f"{name}.json"
        if p.is_file():
            try:
                return json.loads(p.read_text(encoding="utf-8"))
            except ValueError as exc:
                raise BadInputError(f"reference is not valid JSON ({exc})", path=p) from exc
    path = Path(name)
    if path.is_file():
        return json.loads(path.read_text(encoding="utf-8"))
    raise BadInputError(f"no reference layout named {name!r}",
                        fix=f"choose one of: {', '.join(available_references()) or 'none installed'}")


def _dims_text(dims) -> str:
    return "[" + ", ".join(str(d) for d in dims) + "]"


def compare_variant(v: VariantReport, ref: dict) -> list[Difference]:
    out: list[Difference] = []
    expected = ref.get("expected_differences", {})
    durations = v.measured.get("num_durations")
    if durations is not None and durations != ref.get("num_durations", 5):
        out.append(Difference(EXPECTED, "model", "duration outputs of the joiner", str(ref.get("num_durations", 5)),
                              str(durations), expected.get("durations", "TDT vs RNNT")))
    vocab = v.measured.get("vocab_size")
    if vocab is not None and vocab not in ref.get("vocab_sizes", [1024, 8192]):
        out.append(Difference(EXPECTED, "model", "vocabulary size", "1024 or 8192", str(vocab),
                              expected.get("vocabulary", "a different tokenizer")))
    for role, model in v.models.items():
        want = ref["models"][role]
        for kind, ports, want_ports in (("input", model.inputs, want["inputs"]),
                                        ("output", model.outputs, want["outputs"])):
            if len(ports) != len(want_ports):
                out.append(Difference(BREAKING, "signature", f"{model.graph.name} {kind}s", str(len(want_ports)),
                                      str(len(ports)), "sherpa-onnx feeds and reads them by position"))
                continue
            for port, w in zip(ports, want_ports, strict=True):
                label = f"{model.graph.name} {kind} {port.name}"
                if w["name"] != "*" and port.name != w["name"]:
                    out.append(Difference(EXPECTED, "signature", f"{label} name", w["name"], port.name,
                                          "names do not matter: sherpa-onnx feeds inputs by position"))
                if port.dtype != w["dtype"]:
                    out.append(Difference(BREAKING, "signature", f"{label} type", w["dtype"], port.dtype,
                                          "sherpa-onnx creates this tensor with the reference's type"))
                if len(port.axes) != len(w["dims"]):
                    out.append(Difference(BREAKING, "signature", f"{label} rank", _dims_text(w["dims"]),
                                          port.shape_text(), "sherpa-onnx builds tensors of the reference's rank"))
                    continue
                for axis, wd in zip(port.axes, w["dims"], strict=True):
                    out += _axis_difference(label, axis, wd, expected)
    return out


def _axis_difference(label: str, axis, want, expected: dict) -> list[Difference]:
    found = axis.size if axis.fixed else "dynamic"
    if want == found or (isinstance(want, str) and want not in ("dynamic",) and axis.role == "vocab"):
        return []
    what = f"{label} axis {axis.index} ({axis.role})"
    if want == "dynamic":
        if axis.role == "time":
            if axis.baked:
                return [Difference(BREAKING, "shape", what, "dynamic", str(found),
                                   "baked into the graph: stock sherpa-onnx decodes only exact windows; use "
                                   "sherpa_fixed.OfflineRecognizer or prepare --window")]
            return [Difference(FIXABLE, "shape", what, "dynamic", str(found),
                               "only declared: prepare frees it")]
        if axis.role in ("batch", "state_batch"):
            return [Difference(BREAKING if axis.baked else FIXABLE, "shape", what, "dynamic", str(found),
                               "decode_streams() with several streams fails; decode_stream() works"
                               + ("" if axis.baked else "; prepare frees a declared batch"))]
        return [Difference(BREAKING, "shape", what, "dynamic", str(found), "sherpa-onnx varies this size")]
    if found == "dynamic":
        return [Difference(EXPECTED, "shape", what, str(want), "dynamic", "dynamic where the reference is fixed: "
                           "any size the reference takes still works")]
    reason = ROLE_REASON.get(axis.role)
    if axis.role == "hidden" and "decoder" in label:  # decoder output, joiner's decoder input
        reason = "decoder hidden"
    why = expected.get(reason, "a different model size") if reason else "a different model size"
    return [Difference(EXPECTED, "shape", what, str(want), str(found), why)]


def compare_folder(report: FolderReport, ref: dict) -> dict[str, list[Difference]]:
    """Differences per model set (fp32, int8), plus folder-level ones under the key 'folder'."""
    out: dict[str, list[Difference]] = {"folder": []}
    names = {p.name for p in report.layout.root.iterdir() if p.is_file()} if report.layout.root.is_dir() else set()
    for f in ref["files"]:
        role, variant = f["role"], f.get("variant")
        if role in ("encoder", "decoder", "joiner"):
            present = any(v.name == variant and v.models[role].graph.path.name == f["name"]
                          for v in report.variants) or f["name"] in names
        else:
            present = f["name"] in names or (role == "tokens" and report.tokens is not None) or \
                (role == "bpe_vocab" and report.layout.bpe_vocab is not None)
        if not present:
            cat = BREAKING if f.get("required") else EXPECTED
            why = "sherpa-onnx needs it" if f.get("required") else f.get("why", "optional in the release layout")
            out["folder"].append(Difference(cat, "files", f["name"], "present", "missing", why))
    for v in report.variants:
        diffs = compare_variant(v, ref)
        enc = v.models["encoder"]
        want_ext = next((f for f in ref["files"] if f["role"] == "encoder" and f.get("variant") == v.name
                         and f.get("external_weights")), None)
        if want_ext and not enc.external.uses_external:
            diffs.append(Difference(EXPECTED, "weights", f"{enc.graph.name} weights", "external", "inside the graph",
                                    "a model this size fits in one protobuf"))
        for a in v.metadata_audit:
            if a.status in ("missing", "wrong"):
                diffs.append(Difference(FIXABLE, "metadata", f"{enc.graph.name} metadata {a.key}",
                                        a.expected, a.current, a.effect or "prepare writes the measured value"))
        meta_ref = ref.get("metadata", {})
        for key, spec in meta_ref.items():
            if not spec.get("required") and key not in enc.graph.metadata and key not in {a.key for a in
                                                                                           v.metadata_audit}:
                diffs.append(Difference(EXPECTED, "metadata", f"{enc.graph.name} metadata {key}", spec.get("value"),
                                        None, "descriptive only: sherpa-onnx does not read it"))
        seen = {(d.what, d.category) for d in diffs}
        for f in v.findings:
            if f.severity != "error" or f.code.startswith("metadata.") or f.code.startswith("encoder.time_fixed"):
                continue
            cat = {"prepare": FIXABLE, "none": BREAKING, "window": BREAKING}.get(f.fix or "", BREAKING)
            area = f.code.split(".")[0]
            if (f.message, cat) not in seen:
                diffs.append(Difference(cat, area if area in ("tokens", "external", "model") else "model",
                                        f.message, None, None, f"fix: {f.fix or 'none'}"))
        out[v.name] = diffs
    return out
