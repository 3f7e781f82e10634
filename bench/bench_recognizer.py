"""sherpa_fixed.OfflineRecognizer against plain sherpa_onnx.OfflineRecognizer, side by side.

    python bench/bench_recognizer.py            # speed (about 3 minutes)
    python bench/bench_recognizer.py --memory   # peak RSS up to 30 min of audio (about 10 minutes)

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


if __name__ == "__main__":
    memory() if "--memory" in sys.argv else speed()
