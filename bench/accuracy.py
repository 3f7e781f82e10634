"""Word error rate of every decode path on the same synthetic speech (issue 13).

    python bench/accuracy.py                       # judged set (seed 3003), about 3 minutes
    python bench/accuracy.py --set path/to/setA    # also any other set folder (long.json / short.json)
    python bench/accuracy.py --quick               # the CI guard's paths only
    python bench/accuracy.py --noise 20            # the CI guard's margin: its differences over 20 seeds
    python bench/accuracy.py --noise-seeds 4242,200-218 --json noise.json   # the same over chosen seeds

The model is tests/data/speech/ (tiny FastConformer-TDT trained on espeak-ng
speech, see its PROVENANCE.md). The judged set is made by
sherpa_fixed.checking.speechgen with seed 3003 and held-out voice variants
nobody has tuned on (m4, klatt3, max, steph2, travis), half the sentences by
voices seen in training: about 30 minutes of long-form recordings (60-390 s,
3700 words) and 300 short clips. Every row decodes exactly the same samples;
"Δ vs whole" is the row's WER minus stock sherpa-onnx's whole-utterance WER
on the dynamic export, with the paired standard error over files (wer.py).

Rows: stock sherpa-onnx whole utterance (Python and the sherpa-onnx-offline
binary); the drop-in recognizer at its defaults and at other window /
overlap settings; the static-800 encoder through the drop-in chunker and
after `sherpa-fixed prepare --window` through stock sherpa-onnx (Python and
the binary); int8 (onnxruntime quantize_dynamic with the settings of
sherpa-onnx's own NeMo export scripts: QUInt8 encoder, QInt8 decoder and
joiner) against fp32; and the validation baseline (checking/baseline.py:
onnxruntime plus our own greedy search). Results: docs/accuracy.md.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))

from common import OUT

from sherpa_fixed.checking.accuracy import (
    PathResult,
    Utterance,
    delta,
    load_set,
    markdown_table,
    recognizer_decoder,
    run_path,
    scored,
    transducer_files,
    windowed_model,
)

MODEL = Path(__file__).resolve().parent.parent / "tests" / "data" / "speech"
JUDGED_SEED = 3003
WINDOWS = [(10, 2), (10, 4), (20, 4), (8, 2)]  # (window s, overlap s) for the dynamic export
BINARY_BATCH_SECONDS = 120.0  # the binary decodes its files in one batch, padded to the longest


def int8_model(src: Path, out: Path) -> Path:
    """encoder/decoder/joiner.int8.onnx as sherpa-onnx's NeMo export scripts make them
    (scripts/nemo/parakeet-tdt-0.6b-v2/export_onnx.py in k2-fsa/sherpa-onnx)."""
    from onnxruntime.quantization import QuantType, quantize_dynamic

    out.mkdir(parents=True, exist_ok=True)
    shutil.copy(src / "tokens.txt", out / "tokens.txt")
    for m in ("encoder", "decoder", "joiner"):
        quantize_dynamic(model_input=str(src / f"{m}.onnx"), model_output=str(out / f"{m}.int8.onnx"),
                         weight_type=QuantType.QUInt8 if m == "encoder" else QuantType.QInt8)
    return out


def binary_path(name: str, folder: Path, utts: list[Utterance], set_dir: Path, files: list[str],
                threads: int) -> PathResult:
    """Decode with the sherpa-onnx-offline program (sherpa-onnx-bin), files grouped so a batch stays short."""
    exe = shutil.which("sherpa-onnx-offline")
    if exe is None:
        raise SystemExit("sherpa-onnx-offline not found: pip install sherpa-onnx-bin")
    f = transducer_files(folder)
    args = [exe, *(f"--{k}={f[k]}" for k in ("encoder", "decoder", "joiner", "tokens")),
            "--model-type=nemo_transducer", "--decoding-method=greedy_search", f"--num-threads={threads}"]
    hyps: list[str] = []
    t = time.perf_counter()
    group: list[str] = []
    secs = 0.0

    def flush():
        nonlocal group, secs
        if group:
            out = subprocess.run(args + group, check=True, capture_output=True, text=True).stdout
            texts = [json.loads(line)["text"] for line in out.splitlines() if line.startswith("{")]
            if len(texts) != len(group):
                raise RuntimeError(f"sherpa-onnx-offline returned {len(texts)} results for {len(group)} files")
            hyps.extend(texts)
        group, secs = [], 0.0

    for u, f in zip(utts, files, strict=True):
        if group and secs + u.seconds > BINARY_BATCH_SECONDS:
            flush()
        group.append(str(set_dir / f))
        secs += u.seconds
    flush()
    return scored(name, hyps, utts, time.perf_counter() - t)


def baseline_decoder(folder: Path, threads: int):
    from sherpa_fixed.checking.baseline import Baseline

    f = transducer_files(folder)
    b = Baseline(f["encoder"], f["decoder"], f["joiner"], f["tokens"], threads=threads)
    return lambda samples: "".join(b.decode(samples)["tokens"])


def paths(quick: bool, threads: int, work: Path) -> list[tuple[str, object]]:
    """(row name, factory of a decode function or ("binary", folder)) in table order."""
    import sherpa_onnx

    from sherpa_fixed import OfflineRecognizer

    dyn, st = MODEL / "dynamic", MODEL / "static800"
    win = windowed_model(st, work / "static800_window")
    kw = dict(num_threads=threads)
    stock = lambda folder, v="": recognizer_decoder(  # noqa: E731
        sherpa_onnx.OfflineRecognizer.from_transducer(**transducer_files(folder, v), **kw))
    ours = lambda folder, v="", **w: recognizer_decoder(  # noqa: E731
        OfflineRecognizer.from_transducer(**transducer_files(folder, v), **w, **kw))
    rows: list[tuple[str, object]] = [
        ("whole utterance · stock sherpa-onnx (dynamic)", lambda: stock(dyn)),
        ("drop-in defaults (dynamic)", lambda: ours(dyn)),
        ("static800 · drop-in chunker", lambda: ours(st)),
        ("static800 · prepare --window · stock sherpa-onnx", lambda: stock(win)),
    ]
    if quick:
        return rows
    rows[2:2] = [(f"drop-in {w} s / {o} s (dynamic)", lambda w=w, o=o: ours(dyn, window_seconds=w,
                                                                              overlap_seconds=o))
                 for w, o in WINDOWS]
    q = int8_model(dyn, work / "dynamic_int8")
    rows += [
        ("static800 · prepare --window · sherpa-onnx-offline", ("binary", win)),
        ("whole utterance · sherpa-onnx-offline (dynamic)", ("binary", dyn)),
        ("int8 · whole utterance · stock sherpa-onnx", lambda: stock(q, ".int8")),
        ("int8 · drop-in defaults", lambda: ours(q, ".int8")),
        ("validation baseline (Python, dynamic)", lambda: baseline_decoder(dyn, threads)),
        ("validation baseline (Python, static800)", lambda: baseline_decoder(st, threads)),
    ]
    return rows


def evaluate(set_dir: Path, kinds: list[str], rows, threads: int) -> dict:
    doc = {}
    for kind in kinds:
        utts = load_set(set_dir, kind)
        files = [json.loads((set_dir / f"{kind}.json").read_text())[i]["file"] for i in range(len(utts))]
        audio_s = sum(u.seconds for u in utts)
        results: list[PathResult] = []
        for name, make in rows:
            if isinstance(make, tuple):
                r = binary_path(name, make[1], utts, set_dir, files, threads)
            else:
                r = run_path(name, make(), utts)
            results.append(r)
            d, se = delta(r, results[0])
            print(f"  {set_dir.name}/{kind}: {name}: WER {100 * r.wer:.2f} % (Δ {d:+.2f} ± {se or 0:.2f}) "
                  f"in {r.decode_seconds:.1f} s", file=sys.stderr, flush=True)
        table = markdown_table(results, results[0], audio_s)
        print(f"\n### {set_dir.name}: {kind}\n\n{table}\n", flush=True)
        doc[kind] = {"table": table, "audio_seconds": round(audio_s, 1), "rows": [
            {"path": r.name, **r.total.to_json(), "standard_error": r.standard_error,
             "delta_points": round(delta(r, results[0])[0], 3), "paired_se_points": delta(r, results[0])[1],
             "decode_seconds": round(r.decode_seconds, 2),
             "per_file": [{"file": f, **e.to_json(), "hypothesis": h}
                          for f, e, h in zip(files, r.errors, r.hypotheses, strict=True)]}
            for r in results]}
    return doc


GUARD = dict(long_minutes=6.0, n_short=150, long_seconds=(40.0, 80.0))  # as tests/test_accuracy.py makes its set


def parse_seeds(spec: str) -> list[int]:
    """'4242,200-218' -> [4242, 200, ..., 218] (order kept, no repeats)."""
    out: list[int] = []
    for part in filter(None, (p.strip() for p in spec.split(","))):
        lo, _, hi = part.partition("-")
        out += [s for s in range(int(lo), int(hi or lo) + 1) if s not in out]
    if not out:
        raise SystemExit(f"--noise-seeds: no seeds in {spec!r} (e.g. 4242,200-218)")
    return out


def _slug(text: str) -> str:
    return "_".join("".join(c if c.isalnum() or c in ".-" else " " for c in text).split())


def guard_set(work: Path, seed: int) -> Path:
    """The CI guard's set for `seed`, made with the espeak-ng in use (cached per espeak-ng build, so sets
    made with Debian's 1.51 program and with the wheel's 1.52 library never mix)."""
    from sherpa_fixed.checking.speechgen import espeak_version, make_set

    version = espeak_version()
    folder = work / "noise" / _slug(version) / f"seed{seed}"
    made = folder / "set.json"
    if not made.is_file() or json.loads(made.read_text()).get("espeak_ng") != version:
        make_set(folder, seed, **GUARD)
    return folder


def _stats(v: list[float]) -> dict:
    import statistics

    sd = statistics.stdev(v) if len(v) > 1 else 0.0
    return {"mean": statistics.mean(v), "sd": sd, "se_mean": sd / len(v) ** 0.5, "min": min(v), "max": max(v)}


def noise(seeds: list[int], threads: int, work: Path, json_out: str | None = None,
          windows: list[tuple[float, float]] = ()) -> None:
    """The spread of the CI guard's differences over seeds: sets made as tests/test_accuracy.py makes
    its own (6 min of 40-80 s recordings, 150 clips), the guarded paths, the drop-in at any extra
    `windows` (window s, overlap s) and a broken setting (4 s windows without overlap,
    test_the_guard_has_teeth's)."""
    from sherpa_fixed import OfflineRecognizer
    from sherpa_fixed.checking.speechgen import espeak_version

    def dropin(w: float, o: float):
        return lambda: recognizer_decoder(OfflineRecognizer.from_transducer(
            **transducer_files(MODEL / "dynamic"), window_seconds=w, overlap_seconds=o, num_threads=threads))

    rows = paths(True, threads, work / "models")
    rows += [(f"drop-in {w:g} s / {o:g} s (dynamic)", dropin(w, o)) for w, o in windows]
    rows.append(("drop-in 4 s / 0 s (broken on purpose)", dropin(4, 0)))
    decoders = [(name, make()) for name, make in rows]
    names = [name for name, _ in decoders[1:]]
    deltas: dict[tuple[str, str], list[float]] = {}
    per_seed: list[dict] = []
    print(f"espeak-ng: {espeak_version()}; seeds {seeds}", file=sys.stderr, flush=True)
    for seed in seeds:
        folder = guard_set(work, seed)
        desc = json.loads((folder / "set.json").read_text())
        record: dict = {"seed": seed, "set": desc}
        for kind in ("long", "short"):
            utts = load_set(folder, kind)
            files = [it["file"] for it in json.loads((folder / f"{kind}.json").read_text())]
            results = [run_path(name, dec, utts) for name, dec in decoders]
            whole = results[0]
            record[kind] = {"whole_wer": 100 * whole.wer, "words": whole.total.words, "paths": {}}
            for r in results:
                d, se = delta(r, whole)
                if r is not whole:
                    deltas.setdefault((r.name, kind), []).append(d)
                record[kind]["paths"][r.name] = {
                    "wer": 100 * r.wer, "delta": d, "paired_se": se,
                    "per_file": [{"file": f, **e.to_json(), "reference": u.text, "hypothesis": h}
                                 for f, u, e, h in zip(files, utts, r.errors, r.hypotheses, strict=True)]}
        per_seed.append(record)
        cells = " ".join(f"{k}: whole {record[k]['whole_wer']:.2f} % " + " ".join(
            f"{record[k]['paths'][n]['delta']:+.2f}" for n in names) for k in ("long", "short"))
        print(f"  seed {seed}: {cells}", file=sys.stderr, flush=True)

    n = len(seeds)
    print(f"\nespeak-ng: {espeak_version()}; {n} seeds: {', '.join(map(str, seeds))}\n")
    print("Per seed (Δ in points against whole-utterance WER; words: long / short)\n")
    labels = {"drop-in defaults (dynamic)": "drop-in", "static800 · drop-in chunker": "chunker",
              "static800 · prepare --window · stock sherpa-onnx": "window",
              "drop-in 4 s / 0 s (broken on purpose)": "4 s / 0 s"}
    head = " | ".join(f"{k}: {labels.get(nm, nm.removesuffix(' (dynamic)'))}" for k in ("long", "short")
                      for nm in names)
    print(f"| seed | words | whole long % | whole short % | {head} |")
    print("|---" * (4 + 2 * len(names)) + "|")
    for rec in per_seed:
        ds = " | ".join(f"{rec[k]['paths'][nm]['delta']:+.2f}" for k in ("long", "short") for nm in names)
        print(f"| {rec['seed']} | {rec['long']['words']} / {rec['short']['words']} | {rec['long']['whole_wer']:.2f} | "
              f"{rec['short']['whole_wer']:.2f} | {ds} |")
    print(f"\n| path | long: mean Δ | ± SE of mean | sd | min | max | short: mean Δ | ± SE of mean | sd | min | max |"
          f"  ({n} seeds)")
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    summary = {}
    for name in names:
        cells = []
        for kind in ("long", "short"):
            st = summary.setdefault(name, {})[kind] = _stats(deltas[name, kind])
            cells += [f"{st['mean']:+.2f}", f"{st['se_mean']:.2f}", f"{st['sd']:.2f}", f"{st['min']:+.2f}",
                      f"{st['max']:+.2f}"]
        print(f"| {name} | " + " | ".join(cells) + " |")
    wl = [r["long"]["whole_wer"] for r in per_seed]
    ws = [r["short"]["whole_wer"] for r in per_seed]
    nl = [r["long"]["words"] for r in per_seed]
    ns = [r["short"]["words"] for r in per_seed]
    print(f"\nwhole-utterance WER {min(wl):.2f}-{max(wl):.2f} % long-form ({min(nl)}-{max(nl)} words), "
          f"{min(ws):.2f}-{max(ws):.2f} % short ({min(ns)}-{max(ns)} words)")
    if json_out:
        Path(json_out).write_text(json.dumps({"espeak_ng": espeak_version(), "seeds": seeds, "summary": summary,
                                              "per_seed": per_seed}, indent=1) + "\n")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--set", dest="sets", action="append", default=[],
                    help="an extra set folder (long.json / short.json), e.g. a WAV copy of set A")
    ap.add_argument("--seed", type=int, default=JUDGED_SEED, help="seed of the generated judged set")
    ap.add_argument("--long-minutes", type=float, default=30.0)
    ap.add_argument("--short", type=int, default=300)
    ap.add_argument("--quick", action="store_true", help="only the paths the CI guard checks")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--json", help="write every row and every file's hypothesis here")
    ap.add_argument("--noise", type=int, metavar="N",
                    help="instead: the CI guard's differences over N seeds (200, 201, ...), for its margin")
    ap.add_argument("--noise-seeds", metavar="LIST",
                    help="instead: the CI guard's differences over these seeds, e.g. 4242,200-218")
    ap.add_argument("--noise-windows", metavar="W/O,...", default="",
                    help="with --noise*: also the drop-in at these window/overlap seconds, e.g. 30/2")
    a = ap.parse_args()
    if a.noise or a.noise_seeds:
        seeds = parse_seeds(a.noise_seeds) if a.noise_seeds else list(range(200, 200 + a.noise))
        windows = [tuple(map(float, x.split("/"))) for x in filter(None, a.noise_windows.split(","))]
        noise(seeds, a.threads, OUT / "accuracy", a.json, windows)
        return

    from sherpa_fixed.checking.speechgen import espeak_version, make_set

    work = OUT / "accuracy"
    judged = work / _slug(espeak_version()) / f"set-seed{a.seed}"  # one per espeak-ng build: never mixed
    if not (judged / "set.json").is_file():
        print(f"making the judged set in {judged} ...", file=sys.stderr, flush=True)
        make_set(judged, a.seed, long_minutes=a.long_minutes, n_short=a.short)
    desc = json.loads((judged / "set.json").read_text())
    print(f"judged set: seed {desc['seed']}, {desc['espeak_ng']}, held-out variants {desc['unseen_variants']}: "
          f"{desc['long']['files']} long recordings ({desc['long']['minutes']} min, {desc['long']['words']} words), "
          f"{desc['short']['files']} short clips ({desc['short']['minutes']} min, {desc['short']['words']} words)")
    rows = paths(a.quick, a.threads, work / "models")
    doc = {"judged": desc, "sets": {}}
    for s in [judged, *map(Path, a.sets)]:
        doc["sets"][s.name] = evaluate(s, ["long", "short"], rows, a.threads)
    if a.json:
        Path(a.json).write_text(json.dumps(doc, indent=1) + "\n")


if __name__ == "__main__":
    main()
