"""int8 schemes side by side: fp32, sherpa-onnx's release int8, and quantize's fast scheme (issue 22).

    python bench/bench_int8.py build   --fp32 DIR --out DIR          # both int8 sets of a prepared fp32 folder
    python bench/bench_int8.py encoder --root DIR [--lengths 10,60] [--rounds 3] [--threads 1]
    python bench/bench_int8.py decode  --root DIR [--lengths 10,60] [--rounds 3] [--threads 2]
    python bench/bench_int8.py profile --root DIR [--seconds 60]
    python bench/bench_int8.py error   --root DIR [--seconds 60]
    python bench/bench_int8.py wer     [--model DIR] [--set DIR]       # the speech model, stock sherpa-onnx
    python bench/bench_int8.py quantize --fp32 DIR [--repeat 1]       # our quantizer at 1.1B: time, peak RSS
    python bench/bench_int8.py report [--tags l42 l6]                 # markdown of the results in bench/out

A ROOT folder holds `fp32/` (a prepared fp32 folder or a link to one), `sherpa-onnx/` and `fast/`
(made by `build`: `sherpa-fixed quantize --scheme sherpa-onnx` is onnxruntime's release file byte for
byte plus our metadata entry, and `--scheme fast`). Every timing command takes
/tmp/sherpa-heavy.lock (the machine is shared) unless --no-lock.

- encoder: the encoder alone in onnxruntime, all three sessions in one process, interleaved round
  by round (the order rotates), input of 10 and 60 s (random features: cost does not depend on
  values). CPU time (time.process_time, the whole process) and wall time per run; medians and the
  median of the per-round ratios. With --threads 1 CPU time is the pure compute of the run.
- decode: stock sherpa-onnx (OfflineRecognizer.from_transducer, greedy, --threads) in a fresh child
  process per variant per round, interleaved: load time, decode wall and CPU time of 10 and 60 s of
  set A speech (the long recording, cut), and the child's peak RSS (VmHWM).
- profile: onnxruntime's per-node profiler on each encoder, 1 thread, summed by operator type and
  by what the node does (feed-forward, attention projections, attention core, pointwise/depthwise
  convolution, subsampling, ...).
- error: the encoders' relative RMS difference from fp32 on set A speech features.
Results go to bench/out/int8-*.json; docs/quantize.md quotes them.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).parent))

from common import OUT, heavy_lock, measure_python

SPEECH = Path("/work/shared/speech")
VARIANTS = ("fp32", "sherpa-onnx", "fast")
ROLES = ("encoder", "decoder", "joiner")



def files(root: Path, variant: str) -> dict[str, Path]:
    d = root / variant
    suffix = "" if variant == "fp32" else ".int8"
    return {**{r: d / f"{r}{suffix}.onnx" for r in ROLES}, "tokens": d / "tokens.txt"}


def ratios(a: list[float], b: list[float]) -> float:
    """Median over rounds of b/a (how many times faster a is than b)."""
    return statistics.median(y / x for x, y in zip(a, b, strict=True))


def ratio_range(a: list[float], b: list[float]) -> str:
    """Lowest-highest of the per-round ratios b/a, for the report."""
    r = [y / x for x, y in zip(a, b, strict=True)]
    return f"{min(r):.2f}-{max(r):.2f}"


# ----------------------------------------------------------------------------- build


def build(args) -> dict:
    from sherpa_fixed.quantizing import quantize_folder

    fp32, out = Path(args.fp32).resolve(), Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    link = out / "fp32"
    if not link.exists():
        link.symlink_to(fp32)
    res = {}
    for scheme in ("sherpa-onnx", "fast"):
        t = time.perf_counter()
        r = quantize_folder(fp32, output=out / scheme, scheme=scheme, force=True)
        res[scheme] = {"seconds": time.perf_counter() - t, "bytes": {f["role"]: f["bytes"] for f in r.files}}
        print(scheme, json.dumps(res[scheme]), flush=True)
    return res


# ----------------------------------------------------------------------------- encoder alone


def encoder(args) -> dict:
    import onnxruntime as ort

    root = Path(args.root)
    so = ort.SessionOptions()
    so.intra_op_num_threads = args.threads
    so.inter_op_num_threads = 1
    names = [v for v in VARIANTS if (root / v).is_dir()]
    t = time.perf_counter()
    sess = {v: ort.InferenceSession(str(files(root, v)["encoder"]), so, providers=["CPUExecutionProvider"])
            for v in names}
    load = time.perf_counter() - t
    feeds = {s: {"audio_signal": np.random.default_rng(s).standard_normal((1, 80, s * 100)).astype(np.float32),
                 "length": np.array([s * 100], np.int64)} for s in args.lengths}
    for s in args.lengths:  # warm-up: first runs allocate and pack
        for v in names:
            sess[v].run(None, feeds[s])
    runs = {v: {s: {"cpu": [], "wall": []} for s in args.lengths} for v in names}
    for r in range(args.rounds):
        order = names[r % len(names):] + names[:r % len(names)]
        for s in args.lengths:
            for v in order:
                c, w = time.process_time(), time.perf_counter()
                sess[v].run(None, feeds[s])
                runs[v][s]["cpu"].append(time.process_time() - c)
                runs[v][s]["wall"].append(time.perf_counter() - w)
    table = []
    for s in args.lengths:
        for v in names:
            x = runs[v][s]
            row = {"variant": v, "seconds": s, "cpu_s": statistics.median(x["cpu"]),
                   "wall_s": statistics.median(x["wall"]), "cpu_all": [round(c, 3) for c in x["cpu"]],
                   "wall_all": [round(c, 3) for c in x["wall"]]}
            for base in ("fp32", "sherpa-onnx"):
                if base in runs:
                    row[f"cpu_x_vs_{base}"] = ratios(x["cpu"], runs[base][s]["cpu"])
                    row[f"wall_x_vs_{base}"] = ratios(x["wall"], runs[base][s]["wall"])
            table.append(row)
            print(json.dumps({k: v for k, v in row.items() if not k.endswith("_all")}), flush=True)
    return {"root": str(root), "threads": args.threads, "rounds": args.rounds, "load_all_s": load,
            "onnxruntime": ort.__version__, "rows": table}


# ----------------------------------------------------------------------------- full decodes (stock sherpa-onnx)

DECODE_CHILD = r"""
import json, sys, time
import numpy as np, sherpa_onnx
from sherpa_fixed.checking.accuracy import load_set
a = json.loads(sys.argv[1])
t = time.perf_counter()
rec = sherpa_onnx.OfflineRecognizer.from_transducer(encoder=a["encoder"], decoder=a["decoder"], joiner=a["joiner"],
    tokens=a["tokens"], num_threads=a["threads"], model_type="nemo_transducer", decoding_method="greedy_search")
load = time.perf_counter() - t
long = load_set(a["set"], "long")[0].samples
out = {"load_s": load, "runs": {}}
for s in a["lengths"]:
    x = long[: 16000 * s].astype(np.float32)
    st = rec.create_stream(); st.accept_waveform(16000, x)
    c, w = time.process_time(), time.perf_counter()
    rec.decode_stream(st)
    out["runs"][str(s)] = {"wall_s": time.perf_counter() - w, "cpu_s": time.process_time() - c,
                           "tokens": len(st.result.tokens)}
out["peak_rss_mb"] = next(int(l.split()[1]) for l in open("/proc/self/status") if l.startswith("VmHWM:")) / 1024
print("@@" + json.dumps(out))
"""


def decode(args) -> dict:
    import sherpa_onnx

    root = Path(args.root)
    names = [v for v in VARIANTS if (root / v).is_dir()]
    runs: dict = {v: [] for v in names}
    for r in range(args.rounds):
        order = names[r % len(names):] + names[:r % len(names)]
        for v in order:
            f = files(root, v)
            arg = {**{k: str(p) for k, p in f.items()}, "threads": args.threads, "lengths": args.lengths,
                   "set": str(args.set)}
            p = subprocess.run([sys.executable, "-c", DECODE_CHILD, json.dumps(arg)], capture_output=True, text=True,
                               cwd=str(root / v))
            if p.returncode != 0:
                raise RuntimeError(f"{v}: {p.stderr[-2000:]}")
            res = json.loads(next(ln for ln in p.stdout.splitlines() if ln.startswith("@@"))[2:])
            runs[v].append(res)
            print(v, json.dumps(res), flush=True)
    table = []
    for v in names:
        row: dict = {"variant": v, "load_s": statistics.median(x["load_s"] for x in runs[v]),
                     "peak_rss_mb": max(x["peak_rss_mb"] for x in runs[v])}
        for s in args.lengths:
            wall = [x["runs"][str(s)]["wall_s"] for x in runs[v]]
            cpu = [x["runs"][str(s)]["cpu_s"] for x in runs[v]]
            row[f"{s}s"] = {"wall_s": statistics.median(wall), "cpu_s": statistics.median(cpu),
                            "rtf": statistics.median(wall) / s, "tokens": runs[v][0]["runs"][str(s)]["tokens"]}
            for base in ("fp32", "sherpa-onnx"):
                if base in runs:
                    bw = [x["runs"][str(s)]["wall_s"] for x in runs[base]]
                    bc = [x["runs"][str(s)]["cpu_s"] for x in runs[base]]
                    row[f"{s}s"][f"wall_x_vs_{base}"] = ratios(wall, bw)
                    row[f"{s}s"][f"cpu_x_vs_{base}"] = ratios(cpu, bc)
        table.append(row)
    return {"root": str(root), "threads": args.threads, "rounds": args.rounds, "sherpa_onnx": sherpa_onnx.__version__,
            "rows": table, "raw": runs}


# ----------------------------------------------------------------------------- profile


def group_of(name: str, op: str) -> str:
    """What a node does, from its name (NeMo's export names every node after its module)."""
    if op == "DynamicQuantizeLinear":
        return "quantize activations"
    if "pre_encode" in name:
        return "subsampling (pre_encode)"
    if "feed_forward" in name:
        return "feed-forward linears" if re.search(r"linear\d/(MatMul|Add)", name) else "feed-forward other"
    if "linear_pos" in name:
        return "attention linear_pos"
    if re.search(r"linear_(q|k|v|out)/", name):
        return "attention q/k/v/out projections"
    if "self_attn" in name and op in ("MatMul", "MatMulInteger", "MatMulIntegerToFloat", "FusedMatMul"):
        return "attention scores and context (activation x activation)"
    if "self_attn" in name:
        return "attention other (softmax, rel-shift, masks)"
    if "pointwise_conv" in name:
        return "conv pointwise"
    if "depthwise_conv" in name:
        return "conv depthwise"
    if "/conv/" in name:
        return "conv other (GLU, transposes, mask)"
    if op in ("LayerNormalization", "SkipLayerNormalization"):
        return "layer norm"
    if op.startswith(("Reorder",)):
        return "layout reorders (NCHWc)"
    return "other"


def profile_one(path: Path, seconds: int) -> dict:
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.intra_op_num_threads = 1
    so.enable_profiling = True
    so.profile_file_prefix = tempfile.mkdtemp() + "/p"
    sess = ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])
    t = seconds * 100
    feed = {"audio_signal": np.random.default_rng(0).standard_normal((1, 80, t)).astype(np.float32),
            "length": np.array([t], np.int64)}
    sess.run(None, feed)
    c = time.process_time()
    sess.run(None, feed)
    cpu = time.process_time() - c
    f = sess.end_profiling()
    events = json.loads(Path(f).read_text())
    os.unlink(f)
    starts = [e["ts"] for e in events if e.get("name") == "model_run"]
    by_op, by_group = Counter(), Counter()
    for e in events:
        if e.get("cat") != "Node" or not e["name"].endswith("_kernel_time") or e["ts"] < starts[-1]:
            continue
        op = e["args"].get("op_name", "?")
        by_op[op] += e["dur"] / 1e3
        by_group[group_of(e["name"][: -len("_kernel_time")], op)] += e["dur"] / 1e3
    return {"cpu_ms": cpu * 1e3, "kernels_ms": sum(by_op.values()), "by_op": dict(by_op.most_common()),
            "by_group": dict(by_group.most_common())}


def profile(args) -> dict:
    root = Path(args.root)
    res = {}
    for v in (v for v in VARIANTS if (root / v).is_dir()):
        res[v] = profile_one(files(root, v)["encoder"], args.seconds)
        print(v, json.dumps({k: res[v][k] for k in ("cpu_ms", "kernels_ms")}), flush=True)
    return {"root": str(root), "seconds": args.seconds, "threads": 1, "profiles": res}


# ----------------------------------------------------------------------------- error, WER


def error(args) -> dict:
    import onnxruntime as ort

    sys.path.insert(0, str(Path(__file__).parent))
    from int8_portability import speech_feeds

    root = Path(args.root)
    feeds = speech_feeds(files(root, "fp32")["encoder"], args.seconds)
    so = ort.SessionOptions()
    so.intra_op_num_threads = 2

    def run(p: Path) -> list:
        s = ort.InferenceSession(str(p), so, providers=["CPUExecutionProvider"])
        return [s.run(None, f)[0].astype(np.float64) for f in feeds]

    ref = run(files(root, "fp32")["encoder"])
    den = sum(float(np.sum(r ** 2)) for r in ref)
    out = {}
    for v in ("sherpa-onnx", "fast"):
        num = sum(float(np.sum((a - b) ** 2)) for a, b in zip(run(files(root, v)["encoder"]), ref, strict=True))
        out[v] = (num / den) ** 0.5
        print(v, out[v], flush=True)
    return {"root": str(root), "audio_s": args.seconds, "rel_rms_error_vs_fp32": out}


def wer(args) -> dict:
    import sherpa_onnx

    from sherpa_fixed.checking.accuracy import delta, load_set, recognizer_decoder, run_path, transducer_files
    from sherpa_fixed.quantizing import quantize_folder

    model = Path(args.model)
    work = Path(tempfile.mkdtemp(prefix="bench-int8-wer-"))
    sets = {k: load_set(args.set, k) for k in ("long", "short")}
    rows = [("fp32", model, "")]
    for scheme in ("sherpa-onnx", "fast"):
        quantize_folder(model, output=work / scheme, scheme=scheme)
        rows.append((scheme, work / scheme, ".int8"))
    results: dict = {}
    table = []
    for name, folder, variant in rows:
        rec = sherpa_onnx.OfflineRecognizer.from_transducer(num_threads=1, **transducer_files(folder, variant))
        entry = {"row": name, "bytes": sum((folder / f"{r}{variant}.onnx").stat().st_size for r in ROLES)}
        for kind, utts in sets.items():
            r = run_path(name, recognizer_decoder(rec), utts)
            results.setdefault(name, {})[kind] = r
            entry[f"wer_{kind}"] = 100 * r.wer
            entry[f"se_{kind}"] = None if r.standard_error is None else 100 * r.standard_error
        table.append(entry)
    for entry in table:
        for kind in sets:
            for base in ("fp32", "sherpa-onnx"):
                d, se = delta(results[entry["row"]][kind], results[base][kind])
                entry[f"delta_vs_{base}_{kind}"], entry[f"paired_se_vs_{base}_{kind}"] = d, se
        print(json.dumps(entry), flush=True)
    return {"model": str(model), "set": str(args.set), "sherpa_onnx": sherpa_onnx.__version__, "rows": table,
            "words": {k: sum(len(u.text.split()) for u in v) for k, v in sets.items()},
            "audio_s": {k: sum(u.seconds for u in v) for k, v in sets.items()}}


# ----------------------------------------------------------------------------- our quantizer at full size

QUANTIZE_CODE = """
from sherpa_fixed.quantizing import quantize_folder
quantize_folder("{src}", output="{dst}", scheme="{scheme}", force=True)
"""


def quantize(args) -> dict:
    out = {}
    for scheme in ("sherpa-onnx", "fast"):
        dst = Path(tempfile.mkdtemp(prefix="bench-int8-q-", dir=args.work))
        r = measure_python(QUANTIZE_CODE.format(src=args.fp32, dst=dst / "q", scheme=scheme), repeat=args.repeat)
        out[scheme] = {**r, "bytes": {p.name: p.stat().st_size for p in (dst / "q").iterdir()}}
        print(scheme, json.dumps(out[scheme]), flush=True)
        subprocess.run(["rm", "-rf", str(dst)], check=True)
    return {"fp32": args.fp32, "schemes": out}


# ----------------------------------------------------------------------------- markdown for docs/quantize.md


def report(args) -> dict:
    """Markdown tables of whatever results are in bench/out (int8-*.json)."""
    def load(name: str) -> dict | None:
        p = OUT / f"int8-{name}.json"
        return json.loads(p.read_text()) if p.exists() else None

    out = []
    for tag in args.tags:
        for threads in (1, 2):
            r = load(f"encoder-{tag}-t{threads}")
            if not r:
                continue
            out += [f"encoder alone, {tag}, {threads} thread(s), onnxruntime {r['onnxruntime']}, {r['rounds']} rounds "
                    "(median of the per-round ratios, lowest-highest in brackets):",
                    "", "| encoder | input | CPU s | wall s | CPU x fp32 | wall x fp32 | CPU x release | "
                    "wall x release |", "|---|---|---|---|---|---|---|---|"]
            base = {(x["variant"], x["seconds"]): x for x in r["rows"]}
            for x in r["rows"]:
                cells = []
                for b in ("fp32", "sherpa-onnx"):
                    y = base[(b, x["seconds"])]
                    for k in ("cpu", "wall"):
                        cells.append(f"{x[f'{k}_x_vs_{b}']:.2f}" + ("" if b == x["variant"] else
                                     f" ({ratio_range(x[f'{k}_all'], y[f'{k}_all'])})"))
                out.append(f"| {x['variant']} | {x['seconds']} s | {x['cpu_s']:.3f} | {x['wall_s']:.3f} | "
                           + " | ".join(cells) + " |")
            out.append("")
        r = load(f"decode-{tag}")
        if r:
            out += [f"stock sherpa-onnx {r['sherpa_onnx']}, {tag}, {r['threads']} threads, {r['rounds']} rounds "
                    "(fresh process per run):", "",
                    "| set | load s | peak RSS MB | input | decode wall s | RTF | wall x fp32 | CPU x fp32 | "
                    "wall x release | CPU x release |", "|---|---|---|---|---|---|---|---|---|---|"]
            raw = r["raw"]
            for x in r["rows"]:
                for s in ("10s", "60s"):
                    y = x[s]
                    cells = []
                    for b in ("fp32", "sherpa-onnx"):
                        for k in ("wall", "cpu"):
                            mine, theirs = ([z["runs"][s[:-1]][f"{k}_s"] for z in raw[v]] for v in (x["variant"], b))
                            cells.append(f"{y[f'{k}_x_vs_{b}']:.2f}" + ("" if b == x["variant"] else
                                         f" ({ratio_range(mine, theirs)})"))
                    out.append(f"| {x['variant']} | {x['load_s']:.1f} | {x['peak_rss_mb']:.0f} | {s} | "
                               f"{y['wall_s']:.2f} | {y['rtf']:.3f} | " + " | ".join(cells) + " |")
            out.append("")
        for secs in (60, 10):
            r = load(f"profile-{tag}-{secs}s")
            if not r:
                continue
            prof = r["profiles"]
            groups = list(dict.fromkeys(g for p in prof.values() for g in p["by_group"]))
            out += [f"profile, {tag}, {secs} s input, 1 thread (ms of kernel time per run):", "",
                    "| what | " + " | ".join(prof) + " |", "|---" * (len(prof) + 1) + "|"]
            for g in groups:
                out.append(f"| {g} | " + " | ".join(f"{p['by_group'].get(g, 0):.0f}" for p in prof.values()) + " |")
            out.append("| **total** | " + " | ".join(f"**{p['kernels_ms']:.0f}**" for p in prof.values()) + " |")
            out.append("")
            out += ["by operator type (ms): " + "; ".join(
                f"{v}: " + ", ".join(f"{k} {ms:.0f}" for k, ms in list(p["by_op"].items())[:8])
                for v, p in prof.items()), ""]
        r = load(f"error-{tag}")
        if r:
            e = r["rel_rms_error_vs_fp32"]
            out += [f"encoder output error, {tag}, {r['audio_s']} s of set A speech: relative RMS difference from "
                    "fp32: " + ", ".join(f"{v} {100 * x:.2f} %" for v, x in e.items()), ""]
        r = load(f"quantize-{tag}")
        if r:
            out += [f"our quantizer, {tag} (whole folder, fresh process): " + "; ".join(
                f"--scheme {v}: {x['wall_s']:.1f} s, peak RSS {x['peak_rss_mb']:.0f} MB"
                for v, x in r["schemes"].items()), ""]
    r = load("wer-speech")
    if r:
        out += [f"speech model, stock sherpa-onnx {r['sherpa_onnx']} (WER %, delta vs fp32 +- paired SE):", "",
                "| set | long | delta long | short | delta short |", "|---|---|---|---|---|"]
        for x in r["rows"]:
            out.append(f"| {x['row']} | {x['wer_long']:.2f} | {x['delta_vs_fp32_long']:+.2f} +- "
                       f"{x['paired_se_vs_fp32_long']:.2f} | {x['wer_short']:.2f} | {x['delta_vs_fp32_short']:+.2f} +- "
                       f"{x['paired_se_vs_fp32_short']:.2f} |")
        out.append("")
    text = "\n".join(out)
    print(text)
    return {"markdown": text}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="what", required=True)
    b = sub.add_parser("build")
    b.add_argument("--fp32", required=True)
    b.add_argument("--out", required=True)
    for name in ("encoder", "decode", "profile", "error"):
        p = sub.add_parser(name)
        p.add_argument("--root", required=True)
        p.add_argument("--lengths", type=lambda s: [int(x) for x in s.split(",")], default=[10, 60])
        p.add_argument("--rounds", type=int, default=3)
        p.add_argument("--threads", type=int, default=1 if name == "encoder" else 2)
        p.add_argument("--seconds", type=int, default=60)
        p.add_argument("--set", default=str(SPEECH / "setA"))
    w = sub.add_parser("wer")
    w.add_argument("--model", default=str(SPEECH / "model" / "dynamic"))
    w.add_argument("--set", default=str(SPEECH / "setA"))
    q = sub.add_parser("quantize")
    q.add_argument("--fp32", required=True)
    q.add_argument("--repeat", type=int, default=1)
    q.add_argument("--work", default="/work/scratch")
    rep = sub.add_parser("report")
    rep.add_argument("--tags", nargs="*", default=["l42", "l6"])
    for p in sub.choices.values():
        p.add_argument("--no-lock", action="store_true", help="do not take the heavy-job lock")
        p.add_argument("--name", default=None, help="results file suffix")
    args = ap.parse_args()
    fn = {"build": build, "encoder": encoder, "decode": decode, "profile": profile, "error": error, "wer": wer,
          "quantize": quantize, "report": report}[args.what]
    with heavy_lock(not args.no_lock and args.what != "report"):
        res = fn(args)
    OUT.mkdir(parents=True, exist_ok=True)
    if args.what == "report":
        return
    tag = args.name or Path(getattr(args, "root", None) or getattr(args, "fp32", None) or args.model).name
    (OUT / f"int8-{args.what}-{tag}.json").write_text(json.dumps(res, indent=1) + "\n")


if __name__ == "__main__":
    main()
