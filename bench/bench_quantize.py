"""sherpa-fixed quantize against onnxruntime's quantize_dynamic (issue 14).

    python bench/bench_quantize.py scale [--model DIR] [--prepared DIR] [--repeat N]
        peak RSS and wall time of both, side by side, each in fresh child processes (both
        quantize the whole folder: encoder, decoder, joiner), one at a time under
        /tmp/sherpa-heavy.lock; then byte identity of every int8 file with onnxruntime's, and
        stock sherpa-onnx loading and decoding our int8 set. Default model: the 1.1B
        architecture at /work/scratch/realscale/raw (bench/realscale/ builds it).
    python bench/bench_quantize.py wer [--set DIR] [--model DIR]
        word error rate of fp32, onnxruntime int8, ours (equal to it) and ours with each
        accuracy option on the speech model, with each set's size and decode time.

Byte identity: our file is onnxruntime's file followed by one more metadata entry
(sherpa_fixed_quantized), because ModelProto's metadata field comes after the graph and
we append our key last. So the check is: the first len(theirs) bytes are equal
(sha256, streamed), and the rest parses as exactly that one entry.
Results go to bench/out/quantize-*.json; docs/quantize.md quotes them.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import json
import os
import shutil
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))

from common import OUT, heavy_lock, measure_python

REALSCALE = Path("/work/scratch/realscale")
SPEECH = Path("/work/shared/speech")
ROLES = ("encoder", "decoder", "joiner")

ORT_CODE = """
from onnxruntime.quantization import QuantType, quantize_dynamic
for role in ("encoder", "decoder", "joiner"):
    quantize_dynamic(model_input="{src}/" + role + ".onnx", model_output="{dst}/" + role + ".int8.onnx",
                     weight_type=QuantType.QUInt8 if role == "encoder" else QuantType.QInt8)
"""

OURS_CODE = """
from sherpa_fixed.quantizing import quantize_folder
quantize_folder("{src}", output="{dst}", force=True)
"""



def prefix_identity(ours: Path, theirs: Path) -> dict:
    """Our file = onnxruntime's bytes + one metadata entry: check both halves, streaming."""
    import onnx

    n = theirs.stat().st_size
    ha, hb = hashlib.sha256(), hashlib.sha256()
    with open(ours, "rb") as a, open(theirs, "rb") as b:
        left = n
        while left:
            k = min(left, 16 << 20)
            ha.update(a.read(k))
            hb.update(b.read(k))
            left -= k
        rest = a.read()
    tail = onnx.ModelProto.FromString(rest)
    extra_fields = [f.name for f, _ in tail.ListFields()]
    keys = [p.key for p in tail.metadata_props]
    return {"file": ours.name, "onnxruntime_bytes": n, "sha256_onnxruntime": hb.hexdigest(),
            "prefix_equal": ha.digest() == hb.digest(), "extra_bytes": len(rest), "extra_fields": extra_fields,
            "extra_keys": keys,
            "identical": ha.digest() == hb.digest() and extra_fields == ["metadata_props"]
            and keys == ["sherpa_fixed_quantized"]}


def sherpa_decode(folder: Path, seconds: float = 4.0) -> dict:
    from sherpa_fixed.decoding.sherpa_check import run_sherpa

    folder = folder.resolve()
    t = time.perf_counter()
    run = run_sherpa(folder / "encoder.int8.onnx", folder / "decoder.int8.onnx", folder / "joiner.int8.onnx",
                     folder / "tokens.txt", samples=[int(16000 * seconds)], cwd=folder)
    return {"ok": run.ok, "error": run.error, "sherpa_onnx": run.version, "audio_s": seconds,
            "tokens": len(run.results[0]["tokens"]) if run.ok else None, "seconds": time.perf_counter() - t}


def scale(args) -> dict:
    model = Path(args.model)
    work = Path(args.work)
    ort_out, ours_out = work / "onnxruntime", work / "ours"
    for d in (ort_out, ours_out):
        shutil.rmtree(d, ignore_errors=True)
    ort_out.mkdir(parents=True)
    fp32 = sum(p.stat().st_size for p in model.iterdir() if p.is_file())
    res: dict = {"model": str(model), "fp32_bytes": fp32, "cpus": os.cpu_count()}
    with heavy_lock():
        # Alternate the two so that both see the same machine state; the first run of each warms the page cache.
        runs = {"onnxruntime": [], "ours": []}
        for _ in range(args.repeat):
            os.sync()
            runs["onnxruntime"].append(measure_python(ORT_CODE.format(src=model, dst=ort_out), repeat=1))
            os.sync()
            runs["ours"].append(measure_python(OURS_CODE.format(src=model, dst=ours_out), repeat=1))
        for k, rs in runs.items():
            res[k] = {"wall_s": sorted(r["wall_s"] for r in rs)[len(rs) // 2], "peak_rss_mb": max(r["peak_rss_mb"]
                      for r in rs), "all_wall_s": [round(r["wall_s"], 1) for r in rs]}
        res["rss_ratio"] = res["ours"]["peak_rss_mb"] / res["onnxruntime"]["peak_rss_mb"]
        res["time_ratio"] = res["ours"]["wall_s"] / res["onnxruntime"]["wall_s"]
        res["identity"] = [prefix_identity(ours_out / f"{r}.int8.onnx", ort_out / f"{r}.int8.onnx") for r in ROLES]
        res["int8_bytes"] = {r: (ours_out / f"{r}.int8.onnx").stat().st_size for r in ROLES}
        if args.prepared:
            # sherpa-onnx needs the encoder metadata a raw export lacks: quantize the prepared folder too.
            dec = work / "ours-prepared"
            quantize = measure_python(OURS_CODE.format(src=args.prepared, dst=dec), repeat=1)
            res["prepared"] = {"model": args.prepared, **quantize, "sherpa": sherpa_decode(dec)}
            shutil.rmtree(dec, ignore_errors=True)
    shutil.rmtree(ort_out, ignore_errors=True)
    shutil.rmtree(ours_out, ignore_errors=True)
    return res


# ----------------------------------------------------------------------------- accuracy

# (row name, quantize_folder options); "onnxruntime" rows are made by quantize_dynamic itself.
OPTIONS: list[tuple[str, dict]] = [
    ("ours default (= onnxruntime)", {}),
    ("ours --per-channel", {"per_channel": True}),
    ("ours --exclude 'encoder:/pre_encode/*'", {"exclude": ["encoder:/pre_encode/*"]}),
    ("ours --exclude 'encoder:*depthwise_conv*'", {"exclude": ["encoder:*depthwise_conv*"]}),
    ("ours --exclude 'encoder:*/conv/*'", {"exclude": ["encoder:*/conv/*"]}),
    ("ours --exclude 'encoder:*linear_pos*'", {"exclude": ["encoder:*linear_pos*"]}),
    ("ours --exclude 'joiner:*'", {"exclude": ["joiner:*"]}),
    ("ours --exclude 'decoder:*'", {"exclude": ["decoder:*"]}),
    ("ours --per-channel --exclude 'encoder:*/conv/*' 'encoder:/pre_encode/*'",
     {"per_channel": True, "exclude": ["encoder:*/conv/*", "encoder:/pre_encode/*"]}),
]


def encoder_probe(model: Path, utts) -> callable:
    """Relative RMS difference of an encoder's outputs from the fp32 encoder's, on real speech features.

    A finer measure than WER on a model this small: it sees every frame, not only the decisions that flip.
    """
    import numpy as np
    import onnxruntime as ort

    from sherpa_fixed.decoding.features import nemo_features

    meta = {p.key: p.value for p in __import__("onnx").load(str(model / "encoder.onnx")).metadata_props}
    feat_dim = int(meta.get("feat_dim", 80))
    feeds = []
    for u in utts:
        f = nemo_features(u.samples, feat_dim, meta.get("normalize_type", "per_feature"))
        feeds.append({"audio_signal": f.T[None].astype(np.float32), "length": np.array([len(f)], np.int64)})

    def run(path: Path) -> list:
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = 1
        sess = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
        return [sess.run(None, feed)[0] for feed in feeds]

    ref = run(model / "encoder.onnx")

    def probe(path: Path) -> float:
        out = run(path)
        num = sum(float(np.sum((a - b) ** 2)) for a, b in zip(out, ref, strict=True))
        den = sum(float(np.sum(b ** 2)) for b in ref)
        return (num / den) ** 0.5

    return probe


def wer(args) -> dict:
    import sherpa_onnx
    from onnxruntime.quantization import QuantType, quantize_dynamic

    from sherpa_fixed.checking.accuracy import delta, load_set, recognizer_decoder, run_path, transducer_files
    from sherpa_fixed.quantizing import quantize_folder

    model = Path(args.model)
    work = Path(args.work) / "wer"
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    sets = {kind: load_set(args.set, kind) for kind in ("long", "short")}
    rows: list[tuple[str, Path, str]] = [("fp32", model, "")]
    ort_dir = work / "onnxruntime"
    ort_dir.mkdir()
    shutil.copy(model / "tokens.txt", ort_dir / "tokens.txt")
    for role in ROLES:
        quantize_dynamic(str(model / f"{role}.onnx"), str(ort_dir / f"{role}.int8.onnx"),
                         weight_type=QuantType.QUInt8 if role == "encoder" else QuantType.QInt8)
    rows.append(("onnxruntime quantize_dynamic (sherpa-onnx's settings)", ort_dir, ".int8"))
    # Exploratory, made by onnxruntime itself: QInt8 (symmetric) weights for the encoder too.
    sym = work / "onnxruntime-qint8"
    shutil.copytree(ort_dir, sym)
    quantize_dynamic(str(model / "encoder.onnx"), str(sym / "encoder.int8.onnx"), weight_type=QuantType.QInt8)
    rows.append(("onnxruntime, encoder QInt8 too (exploratory)", sym, ".int8"))
    for i, (name, opts) in enumerate(OPTIONS):
        out = work / f"ours{i}"
        quantize_folder(model, output=out, **opts)
        rows.append((name, out, ".int8"))
    table = []
    hyps: dict[str, dict] = {}
    results: dict[str, dict] = {}
    probe = encoder_probe(model, sets["short"][:60] + sets["long"][:2])
    for name, folder, variant in rows:
        files = transducer_files(folder, variant)
        rec = sherpa_onnx.OfflineRecognizer.from_transducer(num_threads=1, **files)
        entry = {"row": name, "bytes": sum((folder / f"{r}{variant}.onnx").stat().st_size for r in ROLES)}
        hyps[name] = {}
        for kind, utts in sets.items():
            r = run_path(name, recognizer_decoder(rec), utts)
            entry[f"wer_{kind}"] = 100 * r.wer
            entry[f"se_{kind}"] = None if r.standard_error is None else 100 * r.standard_error
            entry[f"decode_s_{kind}"] = r.decode_seconds
            hyps[name][kind] = r.hypotheses
            results.setdefault(name, {})[kind] = r
        entry["encoder_rel_error"] = probe(folder / f"encoder{variant}.onnx")
        table.append(entry)
        print(json.dumps(entry), file=sys.stderr, flush=True)
    ours_default = OPTIONS[0][0]
    ort_row = rows[1][0]
    for entry in table:  # difference from onnxruntime's int8, with the paired standard error over files
        for kind in sets:
            d, se = delta(results[entry["row"]][kind], results[ort_row][kind])
            entry[f"delta_vs_onnxruntime_{kind}"], entry[f"paired_se_{kind}"] = d, se
    same = {kind: hyps[ours_default][kind] == hyps[ort_row][kind] for kind in sets}
    audio = {kind: sum(u.seconds for u in utts) for kind, utts in sets.items()}
    words = {kind: sum(len(u.text.split()) for u in utts) for kind, utts in sets.items()}
    shutil.rmtree(work, ignore_errors=True)
    return {"model": str(model), "set": str(args.set), "audio_s": audio, "words": words, "rows": table,
            "ours_default_hypotheses_equal_onnxruntime": same, "threads": 1}


def markdown(res: dict) -> str:
    lines = ["| model set | WER long % | Δ vs ORT ± paired SE | WER short % | Δ vs ORT ± paired SE | encoder rel. "
             "error vs fp32 | size MB | decode s long | decode s short |",
             "|---|---|---|---|---|---|---|---|---|"]

    def d(r, kind):
        se = r[f"paired_se_{kind}"]
        return f"{r[f'delta_vs_onnxruntime_{kind}']:+.2f}" + ("" if se is None else f" ± {se:.2f}")

    for r in res["rows"]:
        lines.append(f"| {r['row']} | {r['wer_long']:.2f} | {d(r, 'long')} | {r['wer_short']:.2f} | {d(r, 'short')} | "
                     f"{r['encoder_rel_error']:.4f} | {r['bytes'] / 1e6:.2f} | {r['decode_s_long']:.1f} | "
                     f"{r['decode_s_short']:.1f} |")
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="what", required=True)
    s = sub.add_parser("scale")
    s.add_argument("--model", default=str(REALSCALE / "raw"))
    s.add_argument("--prepared", default=str(REALSCALE / "prepared") if (REALSCALE / "prepared").is_dir() else None)
    s.add_argument("--repeat", type=int, default=1)
    s.add_argument("--work", default="/work/scratch/h5/bench")
    w = sub.add_parser("wer")
    w.add_argument("--set", default=str(SPEECH / "setA"))
    w.add_argument("--model", default=str(SPEECH / "model" / "dynamic"))
    w.add_argument("--work", default="/work/scratch/h5/bench")
    w.add_argument("--no-lock", action="store_true",
                   help="do not wait for the heavy-job lock (the model is tiny; decode times are then indicative)")
    args = ap.parse_args()
    OUT.mkdir(parents=True, exist_ok=True)
    with contextlib.nullcontext() if args.what == "scale" or args.no_lock else heavy_lock():
        res = scale(args) if args.what == "scale" else wer(args)
    name = f"quantize-{args.what}-{Path(args.model).name}.json"
    (OUT / name).write_text(json.dumps(res, indent=2) + "\n")
    print(json.dumps(res, indent=2))
    if args.what == "wer":
        print(markdown(res))


if __name__ == "__main__":
    main()
