"""The parakeet-tdt-1.1b architecture at full size, measured side by side in one run.

    flock /tmp/sherpa-heavy.lock python bench/realscale/measure.py [--root DIR] [--lengths 10,60,120]
        [--long 600] [--variants fp32,int8] [--only layout,inspect,prepare,recognizer] [--json FILE]

DIR (default /work/scratch/realscale) is what build.sh made: raw/ (the NeMo export, torch's
per-tensor layout), int8.raw/ (quantize_dynamic's output, no metadata) and int8/ (the same with its
metadata, the int8 release layout). Sections, each against its baseline in the same run:

- layout: file count and sizes of each folder, Constant nodes stored externally;
- inspect: `sherpa-fixed inspect --json` on raw/ and int8/ (wall, peak RSS);
- prepare: `sherpa-fixed prepare` (default verification) against `cp -r` of the same folder,
  interleaved rounds, each after a full sync (raw/ -> one encoder.weights; int8.raw/ -> metadata);
- recognizer: sherpa_fixed.OfflineRecognizer against stock sherpa_onnx.OfflineRecognizer on the
  same samples (setA speech of ../shared/speech tiled to length), fp32 (the prepared folder) and
  int8: load time, decode RTF, peak RSS of the whole process.

Every measured command runs in a fresh child under `/usr/bin/time -f %e %M`, so peak RSS is that
child's own (time's fork carries only its own few MB). The weights are read once before timing
(page cache warm for both sides alike). Not a CI job: it needs the 4.3 GB export and ~30 minutes.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path("/work/scratch/realscale")
SPEECH = Path(os.environ.get("SHERPA_FIXED_SPEECH", "/work/shared/speech/setA/long"))
REPO = Path(__file__).resolve().parents[2]
SF = [sys.executable, "-m", "sherpa_fixed.cli"]
RATE = 16000

# One decode session in a child: load (timed), then `repeat` decodes of the same samples.
CHILD = r"""
import json, sys, time
a = json.loads(sys.argv[1])
import numpy as np
audio = np.array(np.load(a["audio"], mmap_mode="r")[: a["samples"]], dtype=np.float32)
t = time.perf_counter()
if a["side"] == "ours":
    from sherpa_fixed import OfflineRecognizer as R
else:
    from sherpa_onnx import OfflineRecognizer as R
imported = time.perf_counter() - t
t = time.perf_counter()
r = R.from_transducer(encoder=a["encoder"], decoder=a["decoder"], joiner=a["joiner"], tokens=a["tokens"],
                      model_type="nemo_transducer", num_threads=a["threads"])
load = time.perf_counter() - t
w = r.create_stream()  # one untimed second first: onnxruntime's first run plans its kernels
w.accept_waveform(16000, audio[:16000])
r.decode_stream(w)
decodes, text, extra = [], "", {}
for _ in range(a["repeat"]):
    t = time.perf_counter()
    s = r.create_stream()
    s.accept_waveform(16000, audio)
    r.decode_stream(s)
    decodes.append(time.perf_counter() - t)
    res = s.result
    text = res.text
    for k in ("windows", "decoded_seconds"):
        if hasattr(res, k):
            extra[k] = getattr(res, k)
print("@@" + json.dumps({"import_s": imported, "load_s": load, "decode_s": decodes, "tokens": len(res.tokens),
                         "chars": len(text), **extra}))
"""


def timed(argv: list[str], *, cwd: str | None = None) -> dict:
    """Run argv in a fresh child under /usr/bin/time: wall seconds, peak RSS (MB), stdout."""
    with tempfile.NamedTemporaryFile("r", suffix=".time") as tf:
        t = time.perf_counter()
        p = subprocess.run(["/usr/bin/time", "-f", "%e %M", "-o", tf.name, *argv], capture_output=True, text=True,
                           cwd=cwd)
        wall = time.perf_counter() - t
        line = [ln for ln in Path(tf.name).read_text().splitlines() if ln.strip()][-1]
    _e, kb = line.split()[-2:]
    return {"wall_s": wall, "peak_rss_mb": int(kb) / 1024, "rc": p.returncode, "stdout": p.stdout,
            "stderr": p.stderr[-3000:]}


def warm(folder: Path) -> None:
    """Read every file once so both sides of a comparison find the same page cache."""
    for p in folder.iterdir():
        if p.is_file():
            with open(p, "rb") as f:
                while f.read(64 << 20):
                    pass


def du(folder: Path) -> tuple[int, int]:
    files = [p for p in folder.iterdir() if p.is_file()]
    return len(files), sum(p.stat().st_size for p in files)


def gb(n: float) -> str:
    return f"{n / 1e9:.2f} GB"


# ----------------------------------------------------------------------------- sections


def layout(root: Path) -> dict:
    import onnx

    out = {}
    for name in ("raw", "int8.raw", "int8"):
        folder = root / name
        if not folder.is_dir():
            continue
        n, size = du(folder)
        largest = sorted(((p.stat().st_size, p.name) for p in folder.iterdir() if p.is_file()), reverse=True)[:3]
        row = {"files": n, "bytes": size, "largest": [{"name": f, "bytes": s} for s, f in largest]}
        enc = folder / "encoder.onnx"
        if enc.exists():
            m = onnx.load(str(enc), load_external_data=False)
            g = m.graph
            ext_init = sum(1 for t in g.initializer if t.data_location == onnx.TensorProto.EXTERNAL)
            consts = [n.name for n in g.node if n.op_type == "Constant"
                      for a in n.attribute if a.HasField("t") and a.t.data_location == onnx.TensorProto.EXTERNAL]
            row.update(initializers=len(g.initializer), external_initializers=ext_init,
                       external_constant_nodes=consts, nodes=len(g.node), encoder_onnx_bytes=enc.stat().st_size)
        out[name] = row
    return out


def inspect(root: Path, runs: int) -> dict:
    out = {}
    for name in ("raw", "int8"):
        folder = root / name
        if not folder.is_dir():
            continue
        warm(folder)
        rs = [timed([*SF, "inspect", str(folder), "--json"]) for _ in range(runs)]
        verdict = None
        with contextlib.suppress(json.JSONDecodeError, AttributeError):
            verdict = json.loads(rs[-1]["stdout"]).get("verdict", {}).get("code")
        out[name] = {"wall_s": statistics.median(r["wall_s"] for r in rs), "peak_rss_mb": max(r["peak_rss_mb"]
                     for r in rs), "rc": rs[-1]["rc"], "verdict": verdict, "runs": runs}
    return out


def prepare(root: Path, rounds: int) -> dict:
    """prepare --output against cp -r of the same folder, interleaved, a full sync before each run.

    Two baselines: `cp -r` alone (its writeback is left to the kernel, after the timer stops) and
    `cp -r && sync` (the copy made durable, as prepare makes its files with fsync before renaming
    them into place: a file renamed in before its bytes reach the disk can be empty after a crash)."""
    out = {}
    for name in ("raw", "int8.raw"):
        src = root / name
        if not src.is_dir():
            continue
        dst_cp, dst_prep = root / f"bench-cp-{name}", root / f"bench-prepared-{name}"
        warm(src)
        runs: dict[str, list[dict]] = {"cp": [], "cp+sync": [], "prepare": []}
        for i in range(rounds):
            order = ("cp", "cp+sync", "prepare") if i % 2 == 0 else ("prepare", "cp+sync", "cp")
            for side in order:
                for d in (dst_cp, dst_prep):
                    shutil.rmtree(d, ignore_errors=True)
                os.sync()
                argv = {"cp": ["cp", "-r", str(src), str(dst_cp)],
                        "cp+sync": ["sh", "-c", f"cp -r '{src}' '{dst_cp}' && sync"],
                        "prepare": [*SF, "prepare", str(src), "--output", str(dst_prep), "--json"]}[side]
                r = timed(argv)
                if side == "prepare":
                    try:
                        doc = json.loads(r["stdout"])
                        r["seconds"] = doc.get("seconds")
                        r["checks"] = [(c["kind"], c["ok"], c["detail"]) for c in doc.get("checks", [])]
                        r["exit_code"] = doc.get("exit_code")
                    except json.JSONDecodeError:
                        r["checks"] = []
                r.pop("stdout")
                runs[side].append(r)
                os.sync()  # the writeback of this run is not charged to the next one
        shutil.rmtree(dst_cp, ignore_errors=True)  # the last prepared folder stays: the recognizer uses it
        cp = statistics.median(r["wall_s"] for r in runs["cp"])
        cps = statistics.median(r["wall_s"] for r in runs["cp+sync"])
        pr = statistics.median(r["wall_s"] for r in runs["prepare"])
        last = runs["prepare"][-1]
        out[name] = {"cp_s": cp, "prepare_s": pr, "ratio": pr / cp, "cp_sync_s": cps, "ratio_sync": pr / cps,
                     "cp_all_s": [round(r["wall_s"], 2) for r in runs["cp"]],
                     "cp_sync_all_s": [round(r["wall_s"], 2) for r in runs["cp+sync"]],
                     "prepare_all_s": [round(r["wall_s"], 2) for r in runs["prepare"]],
                     "cp_peak_rss_mb": max(r["peak_rss_mb"] for r in runs["cp"]),
                     "prepare_peak_rss_mb": max(r["peak_rss_mb"] for r in runs["prepare"]),
                     "prepare_rc": last["rc"], "prepare_seconds": last.get("seconds"),
                     "checks": last.get("checks"), "stderr": last["stderr"] if last["rc"] else ""}
    return out


def audio_file(root: Path, seconds: int) -> Path:
    """setA's long files concatenated (tiled if needed) to `seconds`; the same samples for both sides."""
    import numpy as np
    import soundfile as sf

    path = root / f"bench-audio-{seconds}s.npy"
    if path.exists():
        return path
    parts, total = [], 0
    files = sorted(SPEECH.glob("*.flac")) or sorted(SPEECH.glob("*.wav"))
    if not files:
        raise SystemExit(f"no speech under {SPEECH}: set SHERPA_FIXED_SPEECH to a folder of 16 kHz flac/wav")
    while total < seconds * RATE:
        for f in files:
            x, rate = sf.read(str(f), dtype="float32")
            if rate != RATE:
                raise SystemExit(f"{f}: {rate} Hz, need {RATE}")
            parts.append(x if x.ndim == 1 else x.mean(axis=1))
            total += len(parts[-1])
            if total >= seconds * RATE:
                break
    np.save(path, np.concatenate(parts)[: seconds * RATE])
    return path


def model_files(folder: Path, variant: str) -> dict:
    sfx = ".int8.onnx" if variant == "int8" else ".onnx"
    return {role: str(folder / f"{role}{sfx}") for role in ("encoder", "decoder", "joiner")} | {
        "tokens": str(folder / "tokens.txt")}


def recognizer(root: Path, lengths: list[int], long: int | None, variants: list[str], threads: int,
               fp32_folder: Path) -> dict:
    audio = audio_file(root, max([*lengths, long or 0]))
    out = {}
    for variant in variants:
        folder = fp32_folder if variant == "fp32" else root / "int8"
        files = model_files(folder, variant)
        warm(folder)
        rows = []
        todo = [(n, 3 if n <= 10 else 2 if n <= 60 else 1) for n in lengths] + ([(long, 1)] if long else [])
        for i, (seconds, repeat) in enumerate(todo):
            row = {"seconds": seconds, "decodes": repeat}
            for side in (("stock", "ours") if i % 2 == 0 else ("ours", "stock")):
                args = {"side": side, "audio": str(audio), "samples": seconds * RATE, "repeat": repeat,
                        "threads": threads, **files}
                r = timed([sys.executable, "-c", CHILD, json.dumps(args)], cwd=str(folder))
                line = next((ln for ln in r["stdout"].splitlines() if ln.startswith("@@")), None)
                if r["rc"] != 0 or line is None:
                    row[side] = {"error": r["stderr"][-600:], "rc": r["rc"]}
                    continue
                d = json.loads(line[2:])
                dec = statistics.median(d["decode_s"])
                row[side] = {"load_s": d["load_s"], "import_s": d["import_s"], "decode_s": dec,
                             "all_decode_s": [round(x, 2) for x in d["decode_s"]], "rtf": dec / seconds,
                             "peak_rss_mb": r["peak_rss_mb"], "tokens": d["tokens"],
                             **{k: d[k] for k in ("windows", "decoded_seconds") if k in d}}
                print(f"  {variant} {seconds:>4} s {side:5}: load {d['load_s']:.1f} s, decode {dec:.1f} s "
                      f"(RTF {dec / seconds:.3f}), peak {r['peak_rss_mb']:.0f} MB", flush=True)
            if "decode_s" in row.get("ours", {}) and "decode_s" in row.get("stock", {}):
                row["decode_ratio"] = row["ours"]["decode_s"] / row["stock"]["decode_s"]
                row["load_ratio"] = row["ours"]["load_s"] / row["stock"]["load_s"]
                row["rss_ratio"] = row["ours"]["peak_rss_mb"] / row["stock"]["peak_rss_mb"]
            rows.append(row)
        out[variant] = {"folder": str(folder), "rows": rows}
    return out


# ----------------------------------------------------------------------------- report


def environment() -> dict:
    import onnxruntime

    def git(*a):
        return subprocess.run(["git", *a], cwd=REPO, capture_output=True, text=True).stdout.strip()

    from importlib.metadata import version
    return {"date_utc": time.strftime("%Y-%m-%d %H:%M", time.gmtime()), "cpus": os.cpu_count(),
            "machine": platform.machine(), "python": platform.python_version(),
            "sherpa_onnx": version("sherpa-onnx"), "onnxruntime": onnxruntime.__version__,
            "commit": git("rev-parse", "--short", "HEAD"),
            "dirty_files": len([ln for ln in git("status", "--porcelain", "--untracked-files=no").splitlines()
                                if ln.strip()])}


def last_line(error: str) -> str:
    """The line of a child's stderr that says what failed (onnxruntime's message), without escapes."""
    import re

    text = re.sub(r"\x1b\[[0-9;]*m", "", error)
    lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
    hit = next((ln for ln in reversed(lines) if "Error" in ln or "error" in ln or "failed" in ln), lines[-1] if lines
               else "")
    return hit.replace("|", "/")[:160]


def markdown(doc: dict) -> str:
    lines = [f"Run {doc['env']['date_utc']} UTC, commit {doc['env']['commit']} ({doc['env']['dirty_files']} files "
             f"modified in the working tree), {doc['env']['cpus']} CPUs, sherpa-onnx {doc['env']['sherpa_onnx']}, "
             f"onnxruntime {doc['env']['onnxruntime']}.", ""]
    if "layout" in doc:
        lines += ["| folder | files | size | largest files | external Constant nodes |", "|---|---|---|---|---|"]
        for name, r in doc["layout"].items():
            big = ", ".join(f"{x['name']} {gb(x['bytes'])}" for x in r["largest"])
            consts = ", ".join(r.get("external_constant_nodes", [])) or "-"
            lines.append(f"| {name}/ | {r['files']} | {gb(r['bytes'])} | {big} | {consts} |")
        lines.append("")
    if "inspect" in doc:
        lines += ["| inspect | wall (s) | peak RSS (MB) | verdict |", "|---|---|---|---|"]
        for name, r in doc["inspect"].items():
            lines.append(f"| {name}/ | {r['wall_s']:.2f} | {r['peak_rss_mb']:.0f} | {r['verdict']} (exit {r['rc']}) |")
        lines.append("")
    if "prepare" in doc:
        lines += ["| prepare --output vs cp -r | cp (s) | cp && sync (s) | prepare (s) | vs cp | vs cp && sync | "
                  "prepare peak RSS (MB) | prepare's own split | proofs |", "|---|---|---|---|---|---|---|---|---|"]
        for name, r in doc["prepare"].items():
            split = ", ".join(f"{k} {v:.1f}" for k, v in (r["prepare_seconds"] or {}).items())
            proofs = "; ".join(f"{k} {'ok' if ok else 'FAILED'}" for k, ok, _ in (r["checks"] or [])) or \
                f"exit {r['prepare_rc']}"
            sync = (f"{r['cp_sync_s']:.2f} ({' '.join(map(str, r['cp_sync_all_s']))})", f"{r['ratio_sync']:.2f}x") \
                if "cp_sync_s" in r else ("", "")
            lines.append(f"| {name}/ | {r['cp_s']:.2f} ({' '.join(map(str, r['cp_all_s']))}) | {sync[0]} | "
                         f"{r['prepare_s']:.2f} ({' '.join(map(str, r['prepare_all_s']))}) | {r['ratio']:.2f}x | "
                         f"{sync[1]} | "
                         f"{r['prepare_peak_rss_mb']:.0f} | {split} | {proofs} |")
        lines.append("")
    if "recognizer" in doc:
        lines += ["| model | audio | stock RTF | ours RTF | ours / stock decode | stock load (s) | ours load (s) | "
                  "stock peak RSS (MB) | ours peak RSS (MB) | ours windows |", "|---" * 10 + "|"]
        for variant, v in doc["recognizer"].items():
            for row in v["rows"]:
                s, o = row.get("stock", {}), row.get("ours", {})
                if "error" in o:
                    lines.append(f"| {variant} | {row['seconds']} s | | fails: {last_line(o['error'])} | | | | | | |")
                    continue
                if "error" in s:  # stock cannot decode it (past the positional table): ours alone
                    lines.append(f"| {variant} | {row['seconds']} s | fails: {last_line(s['error'])} | "
                                 f"{o['rtf']:.3f} | | | {o['load_s']:.1f} | | {o['peak_rss_mb']:.0f} | "
                                 f"{o.get('windows', '-')} |")
                    continue
                lines.append(f"| {variant} | {row['seconds']} s | {s['rtf']:.3f} | {o['rtf']:.3f} | "
                             f"{row['decode_ratio']:.2f}x | {s['load_s']:.1f} | {o['load_s']:.1f} | "
                             f"{s['peak_rss_mb']:.0f} | {o['peak_rss_mb']:.0f} | {o.get('windows', '-')} |")
        lines.append("")
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--root", type=Path, default=ROOT)
    ap.add_argument("--lengths", default="10,60,120", help="seconds of audio, comma-separated")
    ap.add_argument("--long", type=int, default=600, help="one more length, decoded once per side (0: skip)")
    ap.add_argument("--variants", default="fp32,int8")
    ap.add_argument("--only", default="layout,inspect,prepare,recognizer")
    ap.add_argument("--rounds", type=int, default=3, help="prepare/cp rounds")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--json", type=Path, help="write the full results here")
    a = ap.parse_args()
    only = set(a.only.split(","))
    doc: dict = {"env": environment(), "root": str(a.root)}
    t0 = time.perf_counter()
    if "layout" in only:
        doc["layout"] = layout(a.root)
    if "inspect" in only:
        doc["inspect"] = inspect(a.root, 3)
        print(markdown({"env": doc["env"], "inspect": doc["inspect"]}), flush=True)
    fp32 = a.root / "prepared"
    if "prepare" in only:
        doc["prepare"] = prepare(a.root, a.rounds)
        print(markdown({"env": doc["env"], "prepare": doc["prepare"]}), flush=True)
        if doc["prepare"].get("raw", {}).get("prepare_rc") == 0:
            fp32 = a.root / "bench-prepared-raw"
    if "recognizer" in only:
        doc["recognizer"] = recognizer(a.root, [int(x) for x in a.lengths.split(",") if x], a.long or None,
                                       a.variants.split(","), a.threads, fp32)
    doc["total_s"] = time.perf_counter() - t0
    text = markdown(doc)
    print(text)
    if a.json:
        a.json.write_text(json.dumps(doc, indent=1))
        a.json.with_suffix(".md").write_text(text + "\n")


if __name__ == "__main__":
    main()
