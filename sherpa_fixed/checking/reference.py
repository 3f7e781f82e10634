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
from ..reading.findings import advice
from ..reading.inspector import FolderReport, VariantReport
from ..safety.bounded import read_text_bounded

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
        if self.reference is not None:
            vals = f" (reference {self.reference}, found {self.found})"
        elif self.found is not None:
            vals = f" (found {self.found})"
        return f"{self.what}{vals}: {self.why}"


def reference_dirs() -> list[Path]:
    here = Path(__file__).resolve().parent.parent
    return [p for p in (here / "_data" / "reference", here.parent / "models" / "reference") if p.is_dir()]


def available_references() -> list[str]:
    return sorted({p.stem for d in reference_dirs() for p in d.glob("*.json")})


@lru_cache(maxsize=8)
def load_reference(name: str = DEFAULT_REFERENCE) -> dict:
    """A reference by name (models/reference/NAME.json) or path; BadInputError for anything else."""
    for d in reference_dirs():
        p = d / f"{name}.json"
        if p.is_file():
            return _read_reference(p)
    path = Path(name)
    if path.is_file():
        return _read_reference(path)
    raise BadInputError(f"no reference layout named {name!r}", fix=_choose())


def _choose() -> str:
    return (f"give one of: {', '.join(available_references()) or 'none installed'}, or a JSON file shaped like "
            f"models/reference/{DEFAULT_REFERENCE}.json")


def _read_reference(path: Path) -> dict:
    """Parse and shape-check a reference, so a wrong file is one line (exit 2), never a crash later on."""
    try:
        data = json.loads(read_text_bounded(path, 4 << 20, what="reference layout", fix=_choose()))
    except BadInputError:
        raise
    except ValueError as exc:
        raise BadInputError("not a reference layout: not JSON", path=path, fix=_choose()) from exc
    problem = _shape_problem(data)
    if problem:
        raise BadInputError(f"not a reference layout: {problem}", path=path, fix=_choose())
    return data


def _shape_problem(data) -> str | None:
    if not isinstance(data, dict):
        return f"a JSON {type(data).__name__}, not an object"
    for key, kind in (("name", str), ("files", list), ("models", dict)):
        if not isinstance(data.get(key), kind):
            return f"no {key!r} ({kind.__name__})"
    for f in data["files"]:
        if not isinstance(f, dict) or not isinstance(f.get("name"), str) or not isinstance(f.get("role"), str):
            return "every entry of 'files' needs a 'name' and a 'role'"
    for role in ("encoder", "decoder", "joiner"):
        m = data["models"].get(role)
        if not isinstance(m, dict) or not all(isinstance(m.get(k), list) for k in ("inputs", "outputs")):
            return f"models.{role} needs 'inputs' and 'outputs' lists"
        for port in m["inputs"] + m["outputs"]:
            if not isinstance(port, dict) or not {"name", "dtype", "dims"} <= set(port):
                return f"every port of models.{role} needs 'name', 'dtype' and 'dims'"
    layouts = data.get("layouts", [])
    if not isinstance(layouts, list) or not all(isinstance(x, dict) and isinstance(x.get("name"), str)
                                                and isinstance(x.get("variants"), dict) for x in layouts):
        return "'layouts' must be a list of objects with a 'name' and 'variants'"
    return None


def layouts_of(ref: dict) -> list[dict]:
    """The release layouts a reference allows, best first; one derived from 'files' when it lists none."""
    if ref.get("layouts"):
        return ref["layouts"]
    variants: dict[str, bool] = {}
    for f in ref["files"]:
        if f.get("variant"):
            variants[f["variant"]] = variants.get(f["variant"], False) or bool(f.get("required"))
    return [{"name": "+".join(variants) or "files", "variants": variants, "description": "the files listed"}]


def choose_layout(report: FolderReport, ref: dict) -> dict:
    """The first layout whose required model sets the folder has (fp32+int8 before int8-only)."""
    have = {v.name for v in report.variants}
    layouts = layouts_of(ref)
    for lay in layouts:
        if {v for v, required in lay["variants"].items() if required} <= have:
            return lay
    return layouts[0]


def _dims_text(dims) -> str:
    return "[" + ", ".join(str(d) for d in dims) + "]"


def compare_variant(v: VariantReport, ref: dict) -> list[Difference]:
    out: list[Difference] = []
    batch_baked = _batch_baked(v)
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
                    out += _axis_difference(label, axis, wd, expected, batch_baked if role == "encoder" else None)
    return out


def _batch_baked(v: VariantReport) -> bool | None:
    """Whether the encoder's fixed batch is baked, as prepare decides it: only a probe run can say."""
    if v.probe is not None and v.probe.batch_baked is not None:
        return v.probe.batch_baked
    audio = v.encoder.inputs[0].axis("batch") if v.encoder.inputs else None
    return True if audio is not None and audio.baked else None


def _axis_difference(label: str, axis, want, expected: dict, batch_baked: bool | None = None) -> list[Difference]:
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
            baked = batch_baked if axis.role == "batch" else axis.baked
            if baked is False:  # a run at batch 2 worked: prepare frees it (its own rule, plan._plan_dims)
                return [Difference(FIXABLE, "shape", what, "dynamic", str(found), "decode_streams() with several "
                                   "streams fails; only declared: prepare frees it")]
            return [Difference(BREAKING, "shape", what, "dynamic", str(found),
                               "decode_streams() with several streams fails; decode_stream() and "
                               "sherpa_fixed.OfflineRecognizer work; " + (
                                   "baked into the graph: prepare keeps it" if baked else
                                   "not probed, so prepare keeps it (sherpa-fixed inspect --probe tells)"))]
        return [Difference(BREAKING, "shape", what, "dynamic", str(found), "sherpa-onnx varies this size")]
    if found == "dynamic":
        return [Difference(EXPECTED, "shape", what, str(want), "dynamic", "dynamic where the reference is fixed: "
                           "any size the reference takes still works")]
    reason = ROLE_REASON.get(axis.role)
    if axis.role == "hidden" and "decoder" in label:  # decoder output, joiner's decoder input
        reason = "decoder hidden"
    why = expected.get(reason, "a different model size") if reason else "a different model size"
    return [Difference(EXPECTED, "shape", what, str(want), str(found), why)]


def compare_folder(report: FolderReport, ref: dict, layout: dict | None = None) -> dict[str, list[Difference]]:
    """Differences per model set (fp32, int8), plus folder-level ones under the key 'folder'.

    Files are judged against one release layout (choose_layout): a model set the layout does not
    have is not missing (sherpa-onnx's int8 releases ship no fp32 files), one it requires is.
    """
    out: dict[str, list[Difference]] = {"folder": []}
    layout = layout or choose_layout(report, ref)
    wanted = layout["variants"]
    names = {p.name for p in report.layout.root.iterdir() if p.is_file()} if report.layout.root.is_dir() else set()
    for f in ref["files"]:
        role, variant = f["role"], f.get("variant")
        if variant is not None and variant not in wanted:
            continue  # not part of this layout
        required = wanted[variant] if variant is not None else bool(f.get("required"))
        used = next((v.models[role].graph.path.name for v in report.variants
                     if v.name == variant and role in v.models), None)
        if role in ("encoder", "decoder", "joiner"):
            present = used == f["name"] or f["name"] in names
        else:
            present = f["name"] in names or (role == "tokens" and report.tokens is not None) or \
                (role == "bpe_vocab" and report.layout.bpe_vocab is not None)
        if present:
            continue
        if used is not None:  # the set is complete with another file in this role
            out["folder"].append(Difference(EXPECTED, "files", f["name"], "present", "missing",
                                            f"the {variant} set uses {used} instead"))
        elif required:
            out["folder"].append(Difference(BREAKING, "files", f["name"], "present", "missing",
                                            f"sherpa-onnx needs it (the {layout['name']} layout)"))
        else:
            out["folder"].append(Difference(EXPECTED, "files", f["name"], "present", "missing",
                                            f.get("why", "optional in the release layout")))
    for v in report.variants:
        diffs = compare_variant(v, ref)
        enc = v.models["encoder"]
        want_ext = next((f for f in ref["files"] if f["role"] == "encoder" and f.get("variant") == v.name
                         and f.get("external_weights")), None)
        if want_ext and not enc.external.uses_external:
            diffs.append(Difference(EXPECTED, "weights", f"{enc.graph.name} weights", "external", "inside the graph",
                                    "a model this size fits in one protobuf"))
        for a in v.metadata_audit:  # judged against what the graphs measure, not the reference's values
            if a.status in ("missing", "wrong") and a.expected is not None:
                diffs.append(Difference(FIXABLE, "metadata", f"{enc.graph.name} metadata {a.key}", None,
                                        repr(a.current) if a.current is not None else "missing",
                                        f"prepare writes {a.expected!r} ({a.source})"
                                        + (f"; as is: {a.effect}" if a.effect else "")))
            elif a.status in ("missing", "wrong"):
                diffs.append(Difference(BREAKING, "metadata", f"{enc.graph.name} metadata {a.key}", None,
                                        repr(a.current) if a.current is not None else "missing",
                                        "no graph tells the right value, so prepare leaves it: set it from the "
                                        "model's NeMo config" + (f"; as is: {a.effect}"
                                                                 if a.effect else "")))
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
                                        f.message, None, None,
                                        "fix: " + (advice(f, str(report.layout.root)) or "none")))
        out[v.name] = diffs
    return out
