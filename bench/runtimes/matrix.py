"""The runtime matrix: sherpa-onnx releases x loaders x folder layouts x working directory, measured.

    python bench/runtimes/matrix.py               # the whole table; rewrites its part of docs/runtimes.md
    python bench/runtimes/matrix.py --full-size   # + the 1.1B cells (4.3 GB folder, about 9 GB of RAM)

--full-size takes /tmp/sherpa-heavy.lock itself for the 1.1B cells (do not wrap the command in flock:
it would wait for itself).

Every release in RELEASES is installed once from the registries (bench/runtimes/releases.py, cached under
$SHERPA_RELEASES, default /work/scratch/sherpa-releases/VERSION/); every layout is made afresh from the
tiny genuine NeMo export by the sherpa-fixed CLI (bench/runtimes/layouts.py) under --work. Each cell is
one child process: load the folder, decode a 10 s WAV, compare the tokens with Python sherpa-onnx 2.0.1's
on the same folder; or record how it failed (exit status and the first line that says why).
Raw results go to bench/out/runtimes/matrix.json; the tables between the `matrix:begin` / `matrix:end`
markers of docs/runtimes.md are regenerated from them.
"""

from __future__ import annotations

import argparse
import datetime
import fcntl
import json
import shlex
import shutil
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))

import layouts
import releases
from releases import LOADERS, Outcome, Release

REPO = Path(__file__).resolve().parents[2]
DOC = REPO / "docs" / "runtimes.md"
OUT = REPO / "bench" / "out" / "runtimes"
REFERENCE = "2.0.1"
# Each release is here for a reason: the last one before and the first one after each change, the oldest
# and the newest. See docs/runtimes.md for what changes where.
RELEASES = {
    "1.8.11": "oldest C API on PyPI (sherpa-onnx wheel); no NeMo transducer yet",
    "1.9.30": "oldest on PyPI with nemo_transducer (added in 1.9.24); C functions unprefixed",
    "1.10.46": "last sherpa-onnx Python wheel before 1.12.26; sherpa-rs 0.6.6 pins 1.10.45",
    "1.11.5": "npm only: reads TDT metadata (upstream #2181) but decodes without durations; sherpa-rs 0.6.7's pin",
    "1.12.9": "oldest sherpa-onnx-core / -bin; TDT decoding (upstream #2495); sherpa-rs 0.6.8's tag",
    "1.12.13": "last that reads a predicted TDT duration 0 as 1",
    "1.12.14": "TDT decoding fixed (upstream #2606)",
    "1.12.15": "sherpa-rs master's pin; Node package (pinned)",
    "1.12.20": "last with onnxruntime 1.17.1",
    "1.12.21": "onnxruntime 1.23.2",
    "1.12.28": "Node package (native libraries pinned to it), onnxruntime 1.23.2",
    "1.12.35": "last that creates sessions from bytes",
    "1.12.36": "sessions from the model path (upstream #3482)",
    "1.12.37": "last that accepts absolute locations; Node package (pinned)",
    "1.12.38": "onnxruntime 1.24.4: absolute locations refused",
    "1.13.0": "onnxruntime 1.24.4",
    "1.13.4": "onnxruntime 1.27.0",
    "1.13.5": "onnxruntime 1.27.1",
    "1.13.8": "onnxruntime 1.28.2; newest before 2.0; newest Node package (what any ^1.x Node install gets)",
    "2.0.0": "C API returns NULL when a session cannot be created",
    "2.0.1": "newest",
}
BAD_RELEASES = ("1.9.30", "1.12.14", "1.12.35", "1.12.36", "1.13.8", "2.0.0", "2.0.1")
FULL_SIZE = Path("/work/scratch/realscale")
SPEECH_SET = Path("/work/shared/speech/setA")  # the speech model's held-out clips (FLAC + short.json)
SPEECH_CLIPS = 50
FULL_RELEASES = ("1.9.30", "1.12.14", "1.12.35", "2.0.1")
CWDS = ("model", "/")


def cell_dict(rel: Release, loader: str, layout: str, cwd: str, o: Outcome, ref: list[str] | None,
              seconds: float) -> dict:
    return {"release": rel.version, "loader": loader, "layout": layout, "cwd": cwd, "rc": o.rc,
            "tokens": len(o.tokens) if o.tokens is not None else None,
            "equal": o.tokens == ref if o.tokens is not None and ref is not None else None,
            "error": o.error, "seconds": round(seconds, 2)}


def run_cell(rel: Release, loader: str, name: str, folder: Path, wav: Path, int8: bool, cwd: str,
             ref: list[str] | None) -> dict:
    t0 = time.perf_counter()
    o = releases.load(rel, loader, folder, wav, int8=int8, cwd=folder if cwd == "model" else "/")
    return cell_dict(rel, loader, name, cwd, o, ref, time.perf_counter() - t0)


def available(rel: Release, loader: str) -> bool:
    return {"c": rel.c_api, "python": rel.python, "binary": rel.binary, "node": rel.node}[loader]


def conv_inline_full(prepared: Path, dst: Path) -> Path:
    """The 1.1B fp32 folder with its five 4-D Conv weights (542 KB) moved inline; the 4.3 GB weights file is
    copied once (reflinked where the filesystem can) and reused while its size matches."""
    import onnx

    dst.mkdir(parents=True, exist_ok=True)
    src_w, dst_w = prepared / "encoder.weights", dst / "encoder.weights"
    if not dst_w.exists() or dst_w.stat().st_size != src_w.stat().st_size:
        subprocess.run(["cp", "--reflink=auto", str(src_w), str(dst_w) + ".tmp"], check=True)
        Path(str(dst_w) + ".tmp").replace(dst_w)
    for f in ("decoder.onnx", "joiner.onnx", "tokens.txt"):
        shutil.copyfile(prepared / f, dst / f)
    m = onnx.load(str(prepared / "encoder.onnx"), load_external_data=False)
    names = layouts.conv4d_weights(m)
    with open(src_w, "rb") as w:
        for t in m.graph.initializer:
            if t.name in names and t.data_location == onnx.TensorProto.EXTERNAL:
                info = {e.key: e.value for e in t.external_data}
                w.seek(int(info.get("offset", 0)))
                data = w.read(int(info["length"]))
                del t.external_data[:]
                t.data_location = onnx.TensorProto.DEFAULT
                t.raw_data = data
    onnx.save(m, str(dst / "encoder.onnx"))
    return dst


def full_size(rels: dict[str, Release], work: Path, wav: Path) -> list[dict]:
    """The 1.1B architecture (random weights) through the C API, one cell at a time, under the heavy lock."""
    folders = {"1.1b-fp32-ext": (FULL_SIZE / "prepared", False),
               "1.1b-fp32-conv-inline": (conv_inline_full(FULL_SIZE / "prepared", work / "full" / "conv-inline"),
                                         False),
               "1.1b-int8": (FULL_SIZE / "int8", True)}
    cells = []
    with open("/tmp/sherpa-heavy.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        refs = {}
        for name, (folder, int8) in folders.items():  # the reference: 2.0.1's C API from the model folder
            refs[name] = releases.load(rels[REFERENCE], "c", folder, wav, int8=int8, cwd=folder, timeout=900).tokens
        for v in FULL_RELEASES:
            for name, (folder, int8) in folders.items():
                for cwd in CWDS:
                    c = run_cell(rels[v], "c", name, folder, wav, int8, cwd, refs[name])
                    print(f"  full-size {v} {name} {cwd}: {c['rc']} {c['tokens']} {c['equal']} {c['seconds']} s "
                          f"{c['error'] or ''}", flush=True)
                    cells.append(c)
    return cells


def speech(rels: dict[str, Release], work: Path, jobs: int) -> list[dict]:
    """TDT decoding quality per release: WER of the speech model (tests/data/speech) on held-out clips.

    Random weights show only that tokens differ; this trained TDT says whether a release decodes TDT right.
    Through the C API, or Node where a release has nothing else.
    """
    import jiwer
    import numpy as np
    import soundfile

    folder = work / "layouts" / "speech"
    shutil.rmtree(folder, ignore_errors=True)
    layouts.cli("prepare", str(layouts.REPO / "tests" / "data" / "speech" / "dynamic"), "-o", str(folder))
    items = json.loads((SPEECH_SET / "short.json").read_text())[:SPEECH_CLIPS]
    wavs = work / "speech-wav"
    wavs.mkdir(parents=True, exist_ok=True)
    for it in items:
        out = wavs / (Path(it["file"]).stem + ".wav")
        if not out.exists():
            x, rate = soundfile.read(str(SPEECH_SET / it["file"]), dtype="float32")
            soundfile.write(str(out), np.asarray(x), rate, subtype="PCM_16")
    truth = [it["text"] for it in items]
    rows = []
    for v, rel in rels.items():
        loader = "c" if rel.c_api else "node" if rel.node else None
        if loader is None:
            continue
        with ThreadPoolExecutor(jobs) as pool:
            outs = list(pool.map(lambda it, rel=rel, loader=loader: releases.load(
                rel, loader, folder, wavs / (Path(it["file"]).stem + ".wav"), cwd=folder), items))
        hyp = ["".join(o.tokens or []).replace("▁", " ").strip().lower() for o in outs]
        rows.append({"release": v, "loader": loader, "clips": len(items), "failed": sum(not o.ok for o in outs),
                     "wer": round(jiwer.wer(truth, hyp), 4), "hyp": hyp})
    ref = next((r["hyp"] for r in rows if r["release"] == REFERENCE), None)
    for r in rows:
        r["same_as_reference"] = sum(a == b for a, b in zip(r["hyp"], ref, strict=True)) if ref else None
    return rows


# ---------------------------------------------------------------------------------------------- rendering

def symbol(c: dict, codes: dict) -> str:
    if c["rc"] == 0 and c["tokens"] is not None:
        return "✓" if c["equal"] else "≠"
    key = (c["rc"], c["error"])
    if key not in codes:
        codes[key] = f"E{len(codes) + 1}"
    return codes[key]


def render(data: dict) -> str:
    codes: dict = {}
    cells = {(c["release"], c["loader"], c["layout"], c["cwd"]): c for c in data["cells"]}
    names = data["layouts"]
    lines = [f"Measured {data['date']} with `{data['command']}` (sherpa-fixed {data['sherpa_fixed']}, "
             f"{data['seconds']:.0f} s). Each cell: from the model folder / from `/`. "
             "✓ decoded, tokens equal to Python sherpa-onnx 2.0.1's on the same folder; "
             "≠ decoded, tokens differ; E*n* failed (legend below); blank: that loader does not exist for the "
             "release.", "",
             "### Releases", "",
             "| release | onnxruntime | C API (decode.c) | Python | binary | Node (its onnxruntime) | why it is here |",
             "|---|---|---|---|---|---|---|"]
    for v, r in data["releases"].items():
        capi = "yes" + (" (-DSHERPA_ONNX_UNPREFIXED_API)" if r["c_flags"] else "") if r["c_api"] else \
            f"no: `{r['c_api_error']}`" if r["c_api_error"] else "no"
        node = f"yes ({r['node_onnxruntime']})" if r["node"] else ""
        lines.append(f"| {v} | {r['onnxruntime'] or '-'} | {capi} | {'yes' if r['python'] else ''} | "
                     f"{'yes' if r['binary'] else ''} | {node} | {RELEASES.get(v, '')} |")
    lines += ["", "### Layouts", "", "| layout | made by | weights |", "|---|---|---|"]
    for n in names:
        lay = layouts.BY_NAME[n]
        lines.append(f"| {n} | `{lay.how}` | {lay.external}{' (Loop body)' if lay.loop else ''}"
                     f"{', int8' if lay.int8 else ''} |")
    lines += ["", "### Matrix", "", "| release | loader | " + " | ".join(names) + " |",
              "|---|---|" + "---|" * len(names)]
    for v in data["releases"]:
        for loader in LOADERS:
            row = [cells.get((v, loader, n, cwd)) for n in names for cwd in CWDS]
            if not any(row):
                continue
            out = []
            for n in names:
                a, b = cells.get((v, loader, n, "model")), cells.get((v, loader, n, "/"))
                out.append(f"{symbol(a, codes) if a else ''} / {symbol(b, codes) if b else ''}")
            lines.append(f"| {v} | {loader} | " + " | ".join(out) + " |")
    if data.get("bad"):
        bad_names = list(layouts.BAD)
        lines += ["", "### Folders sherpa-onnx rejects (C API, from the model folder)", "",
                  "| release | " + " | ".join(bad_names) + " |", "|---|" + "---|" * len(bad_names)]
        bad = {(c["release"], c["layout"]): c for c in data["bad"]}
        for v in dict.fromkeys(c["release"] for c in data["bad"]):
            lines.append(f"| {v} | " + " | ".join(symbol(bad[(v, n)], codes) if (v, n) in bad else ""
                                                   for n in bad_names) + " |")
        lines += [""] + [f"- {n}: {why}" for n, why in layouts.BAD.items()]
    if data.get("speech"):
        lines += ["", f"### TDT decoding: the speech model (tests/data/speech, `prepare -o`), {SPEECH_CLIPS} held-out "
                  "clips of /work/shared/speech/setA, from the model folder", "",
                  "| release | loader | WER | clips with the same text as 2.0.1 | failed |", "|---|---|---|---|---|"]
        for r in data["speech"]:
            lines.append(f"| {r['release']} | {r['loader']} | {r['wer']:.3f} | {r['same_as_reference']} of "
                         f"{r['clips']} | {r['failed']} |")
    if data.get("full"):
        full_names = list(dict.fromkeys(c["layout"] for c in data["full"]))
        lines += ["", "### Full size: the parakeet-tdt-1.1b architecture (C API; seconds per load+decode)", "",
                  "| release | " + " | ".join(full_names) + " |", "|---|" + "---|" * len(full_names)]
        full = {(c["release"], c["layout"], c["cwd"]): c for c in data["full"]}
        for v in dict.fromkeys(c["release"] for c in data["full"]):
            out = []
            for n in full_names:
                a, b = full.get((v, n, "model")), full.get((v, n, "/"))
                out.append(" / ".join(f"{symbol(x, codes)} {x['seconds']:.0f} s" if x else "" for x in (a, b)))
            lines.append(f"| {v} | " + " | ".join(out) + " |")
        lines += ["", "1.1b-fp32-ext: /work/scratch/realscale/prepared (encoder.onnx + 4.3 GB encoder.weights, "
                  "as `prepare` writes it); 1.1b-fp32-conv-inline: the same with the pre-encoder's five 4-D Conv "
                  "weights (542 KB) inline; 1.1b-int8: the self-contained 1.1 GB int8 set. ✓ here: tokens equal "
                  "to 2.0.1's C API on the same folder."]
    lines += ["", "### Legend", "", "| code | exit status | first line that says why | releases |", "|---|---|---|---|"]
    where: dict = {}
    for c in data["cells"] + data.get("bad", []) + data.get("full", []):
        if not (c["rc"] == 0 and c["tokens"] is not None):
            where.setdefault((c["rc"], c["error"]), set()).add(c["release"])
    for (rc, err), code in codes.items():
        status = f"signal {-rc} (abort)" if rc == -6 else f"signal {-rc}" if rc < 0 else \
            "255 (exit(-1))" if rc == 255 else str(rc)
        text = (err or "").replace("|", "\\|")
        rels = sorted(where.get((rc, err), ()), key=releases.vkey)
        lines.append(f"| {code} | {status} | `{text}` | {', '.join(rels)} |")
    return "\n".join(lines) + "\n"


def write_doc(text: str) -> None:
    begin, end = "<!-- matrix:begin -->\n", "<!-- matrix:end -->\n"
    doc = DOC.read_text() if DOC.exists() else f"# sherpa-onnx runtimes\n\n{begin}{end}"
    if begin not in doc or end not in doc:
        raise SystemExit(f"{DOC} has no {begin.strip()} ... {end.strip()} markers")
    head, rest = doc.split(begin, 1)
    _, tail = rest.split(end, 1)
    tmp = DOC.with_suffix(".md.tmp")
    tmp.write_text(head + begin + text + end + tail)
    tmp.replace(DOC)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--releases", default=",".join(RELEASES), help="comma-separated (default: the bracketing set)")
    ap.add_argument("--loaders", default=",".join(LOADERS))
    ap.add_argument("--layouts", default=",".join(lay.name for lay in layouts.LAYOUTS))
    ap.add_argument("--work", type=Path, default=Path("/work/scratch/rt"), help="where layouts are written")
    ap.add_argument("--jobs", type=int, default=2)
    ap.add_argument("--full-size", action="store_true", help="also the 1.1B cells (4.3 GB; takes the heavy lock)")
    ap.add_argument("--no-bad", action="store_true", help="skip the rejected-folder cells")
    ap.add_argument("--no-speech", action="store_true", help="skip the speech model's WER per release")
    ap.add_argument("--refresh", action="store_true", help="ask the registries again which versions exist")
    ap.add_argument("--no-doc", action="store_true", help="do not rewrite docs/runtimes.md")
    args = ap.parse_args()
    t0 = time.perf_counter()
    versions = sorted(set(args.releases.split(",")) | {REFERENCE}, key=releases.vkey)
    loaders = args.loaders.split(",")
    names = args.layouts.split(",")

    index = releases.registry_index(refresh=args.refresh)
    rels = {}
    for v in versions:
        rels[v] = releases.install(v, index, node="node" in loaders)
        r = rels[v]
        print(f"{v}: onnxruntime {r.onnxruntime}, c {r.c_api}, python {r.python}, binary {r.binary}, "
              f"node {r.node} ({r.node_onnxruntime})", flush=True)
    folders = layouts.build(args.work, names)
    wav = layouts.write_wav(args.work / "test10.wav")

    # the reference: Python sherpa-onnx 2.0.1 from the model folder; layouts with the same weights that it
    # refuses (absolute locations) take the tokens of the folder they were made from
    refs = {}
    for n in names:
        lay = layouts.BY_NAME[n]
        refs[n] = releases.load(rels[REFERENCE], "python", folders[n], wav, int8=lay.int8, cwd=folders[n]).tokens
    for n, src in (("absolute", "fp32-ext"), ("all-ext", "fp32-ext"), ("conv4d-ext", "fp32-ext")):
        if n in refs and refs[n] is None and src in refs:
            refs[n] = refs[src]

    jobs = [(rels[v], loader, n, cwd) for v in versions for loader in loaders if available(rels[v], loader)
            for n in names for cwd in CWDS]
    with ThreadPoolExecutor(args.jobs) as pool:
        cells = list(pool.map(lambda j: run_cell(j[0], j[1], j[2], folders[j[2]], wav,
                                                 layouts.BY_NAME[j[2]].int8, j[3], refs[j[2]]), jobs))
    print(f"{len(cells)} cells", flush=True)

    bad = []
    if not args.no_bad and {"fp32-ext", "fp32-inline"} <= set(folders):
        bad_folders = layouts.build_bad(args.work, folders)
        bad_jobs = [(rels[v], n) for v in BAD_RELEASES if v in rels and rels[v].c_api for n in bad_folders]
        with ThreadPoolExecutor(args.jobs) as pool:
            bad = list(pool.map(lambda j: run_cell(j[0], "c", j[1], bad_folders[j[1]], wav, False, "model"
                                                   if bad_folders[j[1]].exists() else "/", None), bad_jobs))

    speech_rows = speech(rels, args.work, args.jobs) if not args.no_speech and SPEECH_SET.exists() else []
    full = full_size(rels, args.work, wav) if args.full_size else []

    version = subprocess.run([sys.executable, "-c", "import importlib.metadata as m; print(m.version('sherpa-fixed'))"],
                             capture_output=True, text=True).stdout.strip()
    data = {"date": datetime.date.today().isoformat(), "command": "python bench/runtimes/" + " ".join(
                [Path(sys.argv[0]).name, *map(shlex.quote, sys.argv[1:])]),
            "sherpa_fixed": version, "seconds": time.perf_counter() - t0, "reference": REFERENCE,
            "releases": {v: {k: val for k, val in r.to_json().items() if k != "dir"} for v, r in rels.items()},
            "layouts": names, "reference_tokens": {n: len(t) if t else None for n, t in refs.items()},
            "cells": cells, "bad": bad, "speech": [{k: v for k, v in r.items() if k != "hyp"} for r in speech_rows],
            "full": full}
    OUT.mkdir(parents=True, exist_ok=True)
    (OUT / "matrix.json").write_text(json.dumps(data, indent=1))
    text = render(data)
    print(text)
    if not args.no_doc:
        write_doc(text)


if __name__ == "__main__":
    main()
