"""Plain-text rendering of reports for people; `--json` gives machines the same data."""

from __future__ import annotations

from .reading.axes import Port
from .reading.findings import CANNOT_WORK, WORKS, report_steps
from .reading.inspector import FolderReport, VariantReport
from .rewriting.prepare import PrepareResult

MARK = {"error": "✗", "warning": "!", "info": "·"}
# Who fixes a finding, shown beside it; the steps themselves are the report's "next:" lines.
WHO_FIXES = {"prepare": "prepare fixes this", "window": "needs windowed decoding: see next",
             "none": "prepare cannot fix this: see next", "user": "your choice"}


def human_bytes(n: int | None) -> str:
    if n is None:
        return "?"
    size = float(n)
    for unit in ("B", "KB", "MB", "GB", "TB"):
        if size < 1000 or unit == "TB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1000
    return f"{n} B"


def _port_line(p: Port) -> str:
    roles = ", ".join(a.describe() + (" (baked)" if a.baked else "") for a in p.axes)
    return f"{p.name} {p.shape_text()} {p.dtype}: {roles}"


def _int8_line(v: VariantReport) -> str | None:
    """Which int8 scheme each quantized model uses, and whether its int8 products are exact on every CPU."""
    from .reading.quantization import describe

    parts = []
    for role, m in v.models.items():
        d = describe(m.graph.model, m.graph.metadata)
        if d is not None:
            exact = {True: "exact on every CPU", False: "signed int8: may saturate on x86 without VNNI",
                     None: ""}[d.get("exact_on_every_cpu")]
            parts.append(f"{role} {d['int8_scheme']}" + (f" ({exact})" if exact else ""))
    return "  int8 scheme: " + ", ".join(parts) if parts else None


def render_variant(v: VariantReport, verbose: bool = False) -> list[str]:
    lines = [f"[{v.name}] " + ", ".join(f"{m.graph.name} ({human_bytes(m.graph.size)}"
                                        + (f" + {human_bytes(m.external.external_bytes)} external)"
                                           if m.external.uses_external else ")")
                                        for m in v.models.values())]
    for role, m in v.models.items():
        for i, p in enumerate(m.inputs):
            lines.append(f"  {role if i == 0 else '':8} in  {_port_line(p)}")
        if verbose:
            for p in m.outputs:
                lines.append(f"  {'':8} out {_port_line(p)}")
    meas = v.measured
    parts = []
    for key in ("feat_dim", "vocab_size", "pred_rnn_layers", "pred_hidden", "subsampling_factor"):
        if meas.get(key) is not None:
            parts.append(f"{key}={meas.get(key)}")
    if meas.get("tdt") is not None:
        parts.append(f"TDT with {meas.get('num_durations')} durations" if meas.get("tdt") else "plain RNNT")
    lines.append("  measured: " + ", ".join(parts))
    int8 = _int8_line(v)
    if int8:
        lines.append(int8)
    if verbose:
        for key, m in meas.values.items():
            lines.append(f"    {key} = {m.value}  ({m.source})")
    lines.append(f"  family: {v.recipe.family if v.recipe else 'unknown'} ({v.recipe_reason})")
    if v.verdict.code == CANNOT_WORK:  # prepare refuses such a folder: '->' is a measurement, not a plan
        lines.append("  metadata (sherpa-onnx reads from the encoder; '->' is what the files measure, prepare "
                     "writes nothing until the ✗ below are fixed):")
    else:
        lines.append("  metadata (sherpa-onnx reads from the encoder):")
    for a in v.metadata_audit:
        cur = "-" if a.current is None else repr(a.current)
        exp = "" if a.expected is None or a.status == "ok" else f" -> {a.expected!r}"
        lines.append(f"    {a.key:<19} {a.status:<10} {cur}{exp}" + (f"   [{a.effect}]" if a.effect else ""))
    if v.sherpa_error:
        lines.append(f"  sherpa-onnx as is would say: {v.sherpa_error}")
    shown = [f for f in v.findings if verbose or f.severity != "info" or f.code in (
        "encoder.max_length", "encoder.windowed")]
    # metadata findings are in the table above (a duplicated key is not: it has no row of its own)
    shown = [f for f in shown if not f.code.startswith("metadata.") or f.code == "metadata.duplicate"]
    if shown:
        lines.append("  findings:")
        for f in shown:
            fix = f" ({WHO_FIXES.get(f.fix, f.fix)})" if f.fix and f.severity == "error" else ""
            lines.append(f"    {MARK[f.severity]} {f.message}{fix}")
    lines.append(f"  verdict [{v.name}]: {v.verdict.text}")
    lines += render_runtimes(v)
    return lines


def render_runtimes(v: VariantReport) -> list[str]:
    """Which sherpa-onnx releases load the set (docs/runtimes.md), and how the one asked about does."""
    rt = v.runtimes or {}
    oldest = rt.get("oldest_release")
    lines = [f"  runtimes [{v.name}]: " + (f"sherpa-onnx >= {oldest} loads it from any working directory"
                                          if oldest else "no measured sherpa-onnx release loads it from any "
                                          "working directory")]
    asked = rt.get("requested")
    if asked:
        mark = "✓" if asked["loads"] == "anywhere" else "✗"
        where = {"anywhere": "loads it from any working directory", "model_folder": "loads it only when the "
                 "working directory is the model folder", "never": "does not load it"}[asked["loads"]]
        lines.append(f"  {mark} sherpa-onnx {asked['version']} {where}: {asked['why']}")
        lines += [f"    ! {w}" for w in asked["warnings"]]
    return lines


def render_report(r: FolderReport, verbose: bool = False) -> str:
    lines = [f"{r.layout.root}"]
    if r.tokens:
        t = r.tokens
        lines.append(f"tokens: {t.path.name}, {t.count} symbols, <blk> = {t.blank_id}")
    for v in r.variants:
        lines.append("")
        lines += render_variant(v, verbose)
    if r.findings:
        lines.append("")
        for f in r.findings:
            if verbose or f.severity != "info":
                lines.append(f"{MARK[f.severity]} {f.message}")
    verdict = r.verdict
    lines.append("")
    lines.append(f"verdict: {verdict.text}")
    if verdict.code != WORKS:
        lines += ["next: " + step for step in report_next_steps(r)]
    return "\n".join(lines)


def report_next_steps(r: FolderReport) -> list[str]:
    """The report's advice, from its error findings (findings.report_steps), for every model set at once."""
    return report_steps(r)


def render_prepare(r: PrepareResult) -> str:
    plan = r.plan
    head = {"dry-run": f"plan for {r.source} (dry run: nothing written)",
            "in-place": f"prepare {r.source} (in place)",
            "output": f"prepare {r.source} -> {r.target}"}[r.mode]
    lines = [head]
    if r.nothing_to_do and plan.blockers:  # e.g. a baked time axis: no rewrite of prepare's fixes it
        lines.append("  nothing prepare can change fixes this folder (see ✗ below)")
    elif r.nothing_to_do:
        lines.append("  nothing needs doing: sherpa-onnx accepts this folder as it is"
                     + (f" (its files are copied to {r.target} unchanged)" if r.mode == "output" else ""))
    else:
        lines.append("  changes:")
        lines += [f"    {c.line()}" for c in plan.changes]
    for w in plan.warnings:
        lines.append(f"  ! {w}")
    for b in plan.blockers:
        lines.append(f"  ✗ {b}")
    if r.mode != "dry-run":
        if r.written:
            lines.append("  written: " + ", ".join(r.written))
        if r.linked:
            lines.append("  hard-linked to the source (unchanged, no bytes copied; both names are one file, so "
                         "edit neither in place): " + ", ".join(r.linked))
        if r.recovered:
            lines += [f"  {line}" for line in r.recovered]
        if r.removed:
            lines.append("  removed (no longer referenced): " + ", ".join(r.removed))
        for c in r.checks:
            lines.append(f"  {'✓' if c.ok else '✗'} {c.kind} check {c.file}: {c.detail}")
        if any(not c.ok for c in r.checks):
            lines.append("  verification failed: the original files were left as they were")
        timing = ", ".join(f"{k} {v:.2f} s" for k, v in r.seconds.items())
        lines.append(f"  time: {timing}")
    if r.exit_code == 0 and not r.nothing_to_do and r.mode != "dry-run":
        lines.append(done_line(r))
    return "\n".join(lines)


def done_line(r: PrepareResult) -> str:
    """What the checks that ran proved, and no more."""
    kinds = {c.kind for c in r.checks if c.ok}
    if "sherpa" in kinds:
        return "done: stock sherpa-onnx loaded this folder with model_type='nemo_transducer' and decoded audio"
    if "run" in kinds:
        return ("done: onnxruntime gives the original's outputs; stock sherpa-onnx was not run on it "
                "(--verify full runs it)")
    if kinds:
        return ("done: the rewritten files hold the original's graph and weights byte for byte, only the listed "
                "changes differ; stock sherpa-onnx was not run on it (--verify full runs it)")
    return "done: written, not verified (--verify off)"
