"""prepare --window: what the in-graph Loop costs, and how it compares with the Python chunker.

    python bench/bench_window.py

1. Encoder cost per second of audio: the windowed encoder (one ONNX Loop
   over windows) against the same fixed-T encoder run on the same windows
   by hand from Python (sherpa_fixed.rewriting.windowing.run_by_hand: the same
   placement and keep rules), same onnxruntime, same threads, alternating,
   median of the runs. Two encoders: the genuine static-shape NeMo export
   in tests/data (tiny), and a NeMo-shaped static encoder with full
   attention (12 blocks, d_model 512, 8 heads, 8 s window).
2. Whole decodes, same audio: stock sherpa-onnx on the windowed folder
   against sherpa_fixed.OfflineRecognizer (Python chunker) on the
   unwindowed folder: real-time factor, and how many tokens the two agree
   on (random weights, so this measures how much the two paths differ, not
   which is right; on the oracle model both are exact, see the tests).
"""

from __future__ import annotations

import difflib
import shutil
import statistics
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).parent))

from common import OUT, timed_decode

HEAVY = dict(d_model=512, layers=12, attention_heads=8, conv_channels=16, vocab_size=1024, pred_hidden=64,
             joint_hidden=64, blank_bias=3.0, time="baked", batch="baked", frames=800, external="single")


def folders() -> dict[str, tuple[Path, Path]]:
    """name -> (unwindowed folder with fixed metadata, windowed folder)."""
    from sherpa_fixed.rewriting.prepare import prepare_folder
    from sherpa_fixed.testing import ModelSpec, write_model_folder

    out = {}
    nemo = Path(__file__).parent.parent / "tests" / "data" / "nemo" / "tdt-80-static800"
    for name, make in (("genuine NeMo static export (tiny)", lambda d: shutil.copytree(nemo, d)),
                       ("static attention encoder (12 x 512, 8 heads)",
                        lambda d: write_model_folder(d, ModelSpec(**HEAVY)))):
        key = "nemo" if "NeMo" in name else "heavy"
        base, win = OUT / f"win-{key}-base", OUT / f"win-{key}-windowed"
        if not (win / ".complete").exists():
            for d in (base, win):
                shutil.rmtree(d, ignore_errors=True)
            make(base)
            (base / "truth.json").unlink(missing_ok=True)
            prepare_folder(base, in_place=True)  # metadata; exit 1: time stays baked
            shutil.copytree(base, win)
            assert prepare_folder(win, in_place=True, window=True).exit_code == 0
            (win / ".complete").write_text("ok")
        out[name] = (base, win)
    return out


def encoder_cost(base: Path, win: Path, seconds: int = 60, runs: int = 5) -> dict:
    import json

    import onnx
    import onnxruntime as ort

    from sherpa_fixed.reading.metadata import WINDOW_MARKER
    from sherpa_fixed.rewriting.windowing import WindowParams, run_by_hand

    so = ort.SessionOptions()
    so.intra_op_num_threads = 2
    fixed = ort.InferenceSession(str(base / "encoder.onnx"), so, providers=["CPUExecutionProvider"])
    looped = ort.InferenceSession(str(win / "encoder.onnx"), so, providers=["CPUExecutionProvider"])
    meta = {p.key: p.value for p in onnx.load(str(win / "encoder.onnx"), load_external_data=False).metadata_props}
    w = json.loads(meta[WINDOW_MARKER])
    params = WindowParams(w["window_frames"], w["hop_frames"], w["context_frames"], w["subsampling_factor"])
    feat = fixed.get_inputs()[0].shape[1]
    n = seconds * 100
    x = np.random.default_rng(0).standard_normal((1, feat, n)).astype(np.float32)
    t_hand, t_loop = [], []
    for _ in range(runs):
        t = time.perf_counter()
        want = run_by_hand(fixed, x, n, params)
        t_hand.append(time.perf_counter() - t)
        t = time.perf_counter()
        got = looped.run(None, {"audio_signal": x, "length": np.array([n])})[0]
        t_loop.append(time.perf_counter() - t)
    diff = float(np.max(np.abs(got - want)))
    windows = 1 + -(-(n - params.window) // params.hop)
    return {"hand": statistics.median(t_hand) / seconds, "loop": statistics.median(t_loop) / seconds,
            "windows": windows, "max_abs_diff": diff}


def whole_decode(base: Path, win: Path, seconds: int = 120) -> dict:
    import sherpa_onnx

    from sherpa_fixed import OfflineRecognizer

    kw = lambda d: dict(encoder=str(d / "encoder.onnx"), decoder=str(d / "decoder.onnx"),  # noqa: E731
                        joiner=str(d / "joiner.onnx"), tokens=str(d / "tokens.txt"), model_type="nemo_transducer",
                        num_threads=2)
    plain = sherpa_onnx.OfflineRecognizer.from_transducer(**kw(win))
    chunker = OfflineRecognizer.from_transducer(**kw(base))
    audio = (np.random.default_rng(1).standard_normal(16000 * seconds) * 0.1).astype(np.float32)
    results, times = {}, {"graph": [], "chunker": []}
    for _ in range(3):
        for name, rec in (("graph", plain), ("chunker", chunker)):
            seconds_taken, result = timed_decode(rec, audio)
            times[name].append(seconds_taken)
            results[name] = list(result.tokens)
    sm = difflib.SequenceMatcher(a=results["graph"], b=results["chunker"], autojunk=False)
    same = sum(b.size for b in sm.get_matching_blocks())
    return {"graph_rtf": statistics.median(times["graph"]) / seconds,
            "chunker_rtf": statistics.median(times["chunker"]) / seconds,
            "tokens": (len(results["graph"]), len(results["chunker"])),
            "agreement": same / max(len(results["graph"]), len(results["chunker"]), 1)}


def main() -> None:
    fs = folders()
    print("Encoder cost per second of audio (60 s input):")
    print("| encoder | windows | by hand (s per s of audio) | in-graph Loop (s per s) | Loop / by hand | "
          "max abs difference |")
    print("|---|---|---|---|---|---|")
    for name, (base, win) in fs.items():
        r = encoder_cost(base, win)
        print(f"| {name} | {r['windows']} | {r['hand']:.4f} | {r['loop']:.4f} | {r['loop'] / r['hand']:.3f} | "
              f"{r['max_abs_diff']:.1e} |")
    print()
    print("Whole decode of 120 s of audio:")
    print("| encoder | stock sherpa-onnx, windowed graph (RTF) | Python chunker (RTF) | chunker / graph | "
          "tokens (graph, chunker) | tokens in common |")
    print("|---|---|---|---|---|---|")
    for name, (base, win) in fs.items():
        r = whole_decode(base, win)
        print(f"| {name} | {r['graph_rtf']:.4f} | {r['chunker_rtf']:.4f} | {r['chunker_rtf'] / r['graph_rtf']:.2f} | "
              f"{r['tokens'][0]}, {r['tokens'][1]} | {100 * r['agreement']:.1f} % |")


if __name__ == "__main__":
    main()
