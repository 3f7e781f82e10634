"""sherpa_fixed.OfflineRecognizer against plain sherpa_onnx.OfflineRecognizer, side by side.

    python bench/bench_recognizer.py            # speed, toy model (about 3 minutes)
    python bench/bench_recognizer.py --memory   # peak RSS up to 30 min of audio (about 10 minutes)
    flock /tmp/sherpa-heavy.lock python bench/bench_recognizer.py --real FOLDER [--int8]
        [--lengths 10,60,120] [--runs 3] [--long 600]   # a real-size model folder (see realscale())
    flock /tmp/sherpa-heavy.lock python bench/bench_recognizer.py --real FOLDER [--int8] --load
    python bench/bench_recognizer.py --padding SET_DIR   # WER of padding rules, static-800 speech model

Speed: one dynamic NeMo-shaped model with full self-attention (12 blocks,
d_model 512, 8 heads, ~25 M parameters), the same audio for both, decode
(create_stream + accept_waveform + decode_stream) timed in the same process,
alternating ours and plain, median of the runs. 20 s of audio needs no
windowing (ours delegates); 120 s is windowed by ours (30 s windows, 2 s
overlap) and decoded whole by plain.

Memory: a lighter attention model (2 blocks, d_model 128, 1 head) so plain
sherpa-onnx can still finish 30 minutes (its attention matrix alone is
T'^2 x 4 bytes: 2 GB at 30 min); each run in a fresh process, peak RSS
(VmHWM) reported for 1, 5, 10 and 30 minutes.
"""

from __future__ import annotations

import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))

from common import OUT, measure_python, timed_decode

SPEED_SPEC = dict(d_model=512, layers=12, attention_heads=8, conv_channels=16, vocab_size=1024, pred_hidden=64,
                  joint_hidden=64, blank_bias=3.0, external="single")
MEMORY_SPEC = dict(d_model=128, layers=2, attention_heads=1, vocab_size=256, blank_bias=3.0, external="single")


def model(name: str, spec: dict) -> Path:
    from sherpa_fixed.testing import ModelSpec, write_model_folder

    folder = OUT / name
    if not (folder / ".complete").exists():
        write_model_folder(folder, ModelSpec(**spec))
        (folder / ".complete").write_text("ok")
    return folder


def kwargs(folder: Path) -> dict:
    return dict(encoder=str(folder / "encoder.onnx"), decoder=str(folder / "decoder.onnx"),
                joiner=str(folder / "joiner.onnx"), tokens=str(folder / "tokens.txt"),
                model_type="nemo_transducer", num_threads=2)


def speed() -> None:
    import numpy as np
    import sherpa_onnx

    from sherpa_fixed import OfflineRecognizer

    folder = model("rtf-model", SPEED_SPEC)
    ours = OfflineRecognizer.from_transducer(**kwargs(folder))
    plain = sherpa_onnx.OfflineRecognizer.from_transducer(**kwargs(folder))
    print("| audio | runs | plain RTF (median) | ours RTF (median) | ours / plain (medians) | ours / plain (minima) "
          "| windows | note |")
    print("|---|---|---|---|---|---|---|---|")
    for seconds, runs in ((20, 21), (120, 7)):
        audio = (np.random.default_rng(seconds).standard_normal(16000 * seconds) * 0.1).astype(np.float32)
        times = {"ours": [], "plain": []}
        windows, decoded = 1, seconds
        for _ in range(runs):
            for name, rec in (("plain", plain), ("ours", ours)):
                seconds_taken, result = timed_decode(rec, audio)
                times[name].append(seconds_taken)
                if name == "ours":
                    windows = getattr(result, "windows", 1)
                    decoded = getattr(result, "decoded_seconds", seconds)
        p, o = statistics.median(times["plain"]), statistics.median(times["ours"])
        note = ("delegated: plain sherpa-onnx's own result" if windows == 1 else
                f"windowed: the encoder sees {decoded:g} s for {seconds} s of audio "
                f"(+{100 * (decoded / seconds - 1):.0f}% for the overlaps)")
        ratio_min = min(times["ours"]) / min(times["plain"])
        print(f"| {seconds} s | {runs} | {p / seconds:.4f} | {o / seconds:.4f} | {o / p:.3f} | {ratio_min:.3f} | "
              f"{windows} | {note} |")


MEM_CODE = r"""
import numpy as np, sys
sys.path.insert(0, {bench!r})
from bench_recognizer import kwargs
from pathlib import Path
folder = Path({folder!r}); minutes = {minutes}; mode = {mode!r}
n = int(16000 * 60 * minutes)
if mode == "plain":
    import sherpa_onnx
    rec = sherpa_onnx.OfflineRecognizer.from_transducer(**kwargs(folder))
else:
    from sherpa_fixed import OfflineRecognizer
    rec = OfflineRecognizer.from_transducer(**kwargs(folder))
s = rec.create_stream()
rng = np.random.default_rng(0)
if mode == "ours-streaming":  # audio arrives in 10 s pieces, as from a microphone or a file reader
    for i in range(0, n, 160000):
        s.accept_waveform(16000, rng.standard_normal(min(160000, n - i), dtype=np.float32) * 0.1)
else:  # the caller holds the whole recording in one float32 array (115 MB at 30 min)
    audio = rng.standard_normal(n, dtype=np.float32)
    audio *= 0.1
    s.accept_waveform(16000, audio)
rec.decode_stream(s)
assert len(s.result.tokens) > 0
"""


def memory() -> None:
    folder = model("mem-model", MEMORY_SPEC)
    bench = str(Path(__file__).parent)
    print("| audio | plain sherpa-onnx peak RSS (MB) | ours, one array (MB) | ours, streamed in 10 s pieces (MB) | "
          "plain wall (s) | ours wall (s) |")
    print("|---|---|---|---|---|---|")
    for minutes in (1, 5, 10, 30, 60):
        row = {}
        for mode in ("plain", "ours", "ours-streaming"):
            if minutes > 30 and mode == "plain":  # ~18 GB for the attention matrices alone
                row[mode] = {"peak_rss_mb": float("nan"), "wall_s": float("nan")}
                continue
            row[mode] = measure_python(MEM_CODE.format(bench=bench, folder=str(folder), minutes=minutes, mode=mode),
                                       repeat=1)
        print(f"| {minutes} min | {row['plain']['peak_rss_mb']:.0f} | {row['ours']['peak_rss_mb']:.0f} | "
              f"{row['ours-streaming']['peak_rss_mb']:.0f} | {row['plain']['wall_s']:.1f} | "
              f"{row['ours']['wall_s']:.1f} |", flush=True)


SPEECH = Path(__file__).resolve().parents[2] / "shared" / "speech" / "setA" / "long.json"


def speech_audio(seconds: float):
    """`seconds` of real (synthetic) speech: set A's long recordings joined, repeated if need be.
    Speech rather than noise, so a trained or random joiner emits tokens at a realistic rate."""
    import json

    import numpy as np
    import soundfile

    n = int(16000 * seconds)
    parts, have = [], 0
    items = json.loads(SPEECH.read_text()) if SPEECH.exists() else []
    while have < n and items:
        for it in items:
            a, rate = soundfile.read(SPEECH.parent / it["file"], dtype="float32")
            assert rate == 16000
            parts.append(a)
            have += len(a)
            if have >= n:
                break
    if not parts:  # no speech set here: noise at speech level
        return (np.random.default_rng(0).standard_normal(n) * 0.05).astype(np.float32)
    return np.concatenate(parts)[:n]


LOAD_CODE = r"""
import sys, time
sys.path.insert(0, {bench!r})
from bench_recognizer import real_files
kw = real_files({folder!r}, {int8!r})
t = time.perf_counter()
if {mode!r} == "stock":
    import sherpa_onnx
    rec = sherpa_onnx.OfflineRecognizer.from_transducer(**kw)
else:
    from sherpa_fixed import OfflineRecognizer
    rec = OfflineRecognizer.from_transducer(**kw)
print("@@LOAD@@", time.perf_counter() - t, file=sys.stderr)
"""


def real_files(folder: str, int8: bool) -> dict:
    suffix = ".int8" if int8 else ""
    f = Path(folder)
    return dict(encoder=str(f / f"encoder{suffix}.onnx"), decoder=str(f / f"decoder{suffix}.onnx"),
                joiner=str(f / f"joiner{suffix}.onnx"), tokens=str(f / "tokens.txt"),
                model_type="nemo_transducer", num_threads=2)


def real_load(folder: str, int8: bool, repeat: int) -> None:
    """Load time and peak RSS after load, stock against ours, each in fresh processes, alternating."""
    import re

    from common import _WRAP

    bench = str(Path(__file__).parent)
    rows = {"stock": [], "ours": []}
    for _ in range(repeat):
        for mode in ("stock", "ours"):
            import subprocess

            p = subprocess.run([sys.executable, "-c", _WRAP, LOAD_CODE.format(bench=bench, folder=folder, int8=int8,
                                                                              mode=mode)],
                               capture_output=True, text=True)
            if p.returncode != 0:
                raise RuntimeError(p.stderr[-2000:])
            load = float(re.search(r"@@LOAD@@ (\S+)", p.stderr).group(1))
            rss = float(re.search(r"@@RSS@@(\S+)", p.stderr).group(1)) / 1024
            rows[mode].append((load, rss))
    print("| load | runs | stock load s (median) | ours load s (median) | ours / stock | stock peak RSS MB "
          "| ours peak RSS MB | ours - stock MB |")
    print("|---|---|---|---|---|---|---|---|")
    sl, ol = (statistics.median(x[0] for x in rows[m]) for m in ("stock", "ours"))
    sr, orr = (max(x[1] for x in rows[m]) for m in ("stock", "ours"))
    print(f"| {'int8' if int8 else 'fp32'} | {repeat} | {sl:.2f} | {ol:.2f} | {ol / sl:.3f} | {sr:.0f} | {orr:.0f} | "
          f"{orr - sr:+.0f} |", flush=True)


def realscale(folder: str, int8: bool, lengths: list[float], runs: int, long_s: float | None) -> None:
    """Ours against stock on one loaded model, in one process, on the same audio.

    Stock is the very same sherpa-onnx recognizer object called through the base class
    (sherpa_onnx.OfflineRecognizer.create_stream/decode_stream), so both sides use one set of
    onnxruntime sessions: a 1.1B fp32 model loaded twice would need 9 GB, and any difference in
    the numbers comes from what is fed to sherpa-onnx, nothing else. Runs alternate stock, ours
    (defaults), ours with max_batch=1, each run in a rotated order; each row reports medians and minima.
    """
    import dataclasses

    import sherpa_onnx

    from sherpa_fixed import OfflineRecognizer

    rec = OfflineRecognizer.from_transducer(**real_files(folder, int8))
    default = rec._chunking
    sequential = dataclasses.replace(default, batch=1)

    def stock(audio):
        t = time.perf_counter()
        s = sherpa_onnx.OfflineRecognizer.create_stream(rec)
        s.accept_waveform(16000, audio)
        sherpa_onnx.OfflineRecognizer.decode_stream(rec, s)
        return time.perf_counter() - t, s.result

    def ours(chunking):
        def run(audio):
            rec._chunking = chunking
            try:
                return timed_decode(rec, audio)
            finally:
                rec._chunking = default
        return run

    stock(speech_audio(3.0))  # warm-up: onnxruntime's first run allocates and plans
    print(f"model: {folder} ({'int8' if int8 else 'fp32'}), window {default.spec.window / 16000:g} s, "
          f"overlap {default.spec.overlap / 16000:g} s, max_batch {default.batch}")
    print("| audio | runs | stock RTF | ours RTF | ours / stock (medians) | ours / stock (minima) | ours / stock, "
          "paired by round: median (range) | ours max_batch=1 / stock | windows | encoder audio (ours) | same text "
          "as stock |")
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    for seconds in lengths + ([long_s] if long_s else []):
        audio = speech_audio(seconds)
        n_runs = 1 if seconds == long_s else runs
        times = {"stock": [], "ours": [], "seq": []}
        stock_text = ours_text = None
        windows, decoded = 1, seconds
        sides = [("stock", stock), ("ours", ours(default)), ("seq", ours(sequential))]
        for i in range(n_runs):
            # Rotate the order each run: identical calls measured up to 14 % apart by their position in a
            # fixed order (the first of three ran fastest), so each side takes each position in turn.
            for name, fn in sides[i % 3:] + sides[:i % 3]:
                if name != "ours" and seconds == long_s:
                    continue  # stock: past the export's positional table (400 s), it cannot decode it
                took, result = fn(audio)
                times[name].append(took)
                if name == "stock":
                    stock_text = result.text
                elif name == "ours":
                    ours_text = result.text
                    windows = getattr(result, "windows", 1)
                    decoded = getattr(result, "decoded_seconds", seconds)
        o = statistics.median(times["ours"])
        q = statistics.median(times["seq"]) if times["seq"] else float("nan")
        if times["stock"]:
            p = statistics.median(times["stock"])
            lo = min(times["ours"]) / min(times["stock"])
            # Each round's two decodes ran a few seconds apart: their ratio cancels the machine's slow drift.
            paired = sorted(a / b for a, b in zip(times["ours"], times["stock"], strict=True))
            pair = f"{statistics.median(paired):.3f} ({paired[0]:.3f}-{paired[-1]:.3f})"
            cells = f"{p / seconds:.3f} | {o / seconds:.3f} | {o / p:.3f} | {lo:.3f} | {pair} | {q / p:.3f}"
            same = "yes" if stock_text == ours_text else "no"
        else:
            cells = f"n/a | {o / seconds:.3f} | n/a | n/a | n/a | n/a"
            same = "n/a"
        print(f"| {seconds:g} s | {n_runs} | {cells} | {windows} | {decoded:g} s | {same} |", flush=True)


def padding(set_dir: str) -> None:
    """How audio shorter than a fixed window is padded, judged by word error rate.

    The static 800-frame export of the speech model (tests/data/speech) through the drop-in
    recognizer, each rule swapped in for chunker.window_samples, on the short clips of a set
    folder (short.json: file, text); against plain sherpa-onnx on the dynamic export, whole
    utterance. "same text" counts clips whose transcript equals the whole-utterance one.
    """
    import json

    import numpy as np
    import sherpa_onnx
    import soundfile

    from sherpa_fixed import OfflineRecognizer
    from sherpa_fixed.checking.wer import total, word_errors
    from sherpa_fixed.decoding import chunker, recognizer

    root = Path(set_dir)
    items = json.loads((root / "short.json").read_text())
    clips = [(soundfile.read(root / it["file"], dtype="float32")[0], it["text"]) for it in items]
    model = Path(__file__).resolve().parent.parent / "tests" / "data" / "speech"

    def files(d):
        return dict(encoder=str(d / "encoder.onnx"), decoder=str(d / "decoder.onnx"), joiner=str(d / "joiner.onnx"),
                    tokens=str(d / "tokens.txt"), model_type="nemo_transducer", num_threads=2)

    def room_tone(x):  # the former rule: 10th percentile of 25 ms frame RMS
        n = len(x) // 400
        rms = np.sqrt(np.mean(x[: n * 400].astype(np.float64).reshape(n, 400) ** 2, axis=1)) if n else [1e-5]
        return max(float(np.percentile(rms, 10)), 1e-5)

    def short_only(rule):
        def feed(real, win, rng_seed=0):
            if win.pad <= 0 or win.start > 0:
                return chunker.window_samples(real, win)
            return np.concatenate([real, rule(real, win)]).astype(np.float32)
        return feed

    rules = {
        "noise at the clip's room tone (before)": lambda x, w: np.random.default_rng(0).standard_normal(w.pad)
        * room_tone(x),
        "digital zeros": lambda x, w: np.zeros(w.pad),
        "the clip repeated": lambda x, w: np.tile(x, -(-w.pad // len(x)) + 1)[:w.pad],
        "the clip reflected (x, reversed x, ...; now)": None,
    }

    def transcribe(rec):
        out = []
        for audio, _ in clips:
            st = rec.create_stream()
            st.accept_waveform(16000, audio)
            rec.decode_stream(st)
            out.append(st.result.text)
        return out

    whole = transcribe(sherpa_onnx.OfflineRecognizer.from_transducer(**files(model / "dynamic")))
    refs = [t for _, t in clips]

    def wer(hyps):
        return 100 * total([word_errors(r, h) for r, h in zip(refs, hyps, strict=True)]).wer

    print(f"{len(clips)} clips of {root}, {sum(len(a) for a, _ in clips) / 16000 / 60:.1f} min")
    print("| path | WER % | same text as whole utterance |")
    print("|---|---|---|")
    print(f"| dynamic export, whole utterance (stock sherpa-onnx) | {wer(whole):.2f} | {len(clips)}/{len(clips)} |")
    original = recognizer.window_samples
    try:
        for name, rule in rules.items():
            recognizer.window_samples = original if rule is None else short_only(rule)
            hyps = transcribe(OfflineRecognizer.from_transducer(**files(model / "static800")))
            same = sum(a == b for a, b in zip(hyps, whole, strict=True))
            print(f"| static800 via drop-in, padding: {name} | {wer(hyps):.2f} | {same}/{len(clips)} |", flush=True)
    finally:
        recognizer.window_samples = original


def _arg(name: str, default=None):
    return sys.argv[sys.argv.index(name) + 1] if name in sys.argv else default


if __name__ == "__main__":
    if "--real" in sys.argv:
        folder, int8 = _arg("--real"), "--int8" in sys.argv
        if "--load" in sys.argv:
            real_load(folder, int8, int(_arg("--runs", 3)))
        else:
            realscale(folder, int8, [float(x) for x in _arg("--lengths", "10,60,120").split(",")],
                      int(_arg("--runs", 3)), float(_arg("--long")) if _arg("--long") else None)
    elif "--padding" in sys.argv:
        padding(_arg("--padding"))
    elif "--memory" in sys.argv:
        memory()
    else:
        speed()
