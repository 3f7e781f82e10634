"""How much per-window feature normalisation differs from whole-utterance normalisation.

    python bench/bench_normalization.py     # needs espeak-ng (apt-get install espeak-ng)

sherpa-onnx normalises each stream's features per mel bin over the whole
stream. A windowed decode normalises each window on its own. This measures,
on several minutes of synthetic speech (espeak-ng, varied voices and
speeds, with pauses), how far the normalised features of every kept frame
move, in units of the whole-utterance standard deviation: for fixed 8 s
windows (a static 800-frame encoder) and 30 s windows (the default for
dynamic encoders), both with 2 s overlap.
"""

from __future__ import annotations

import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).parent))

SENTENCES = [
    "The morning train left the station a few minutes after seven.",
    "Nobody expected the meeting to run so long, least of all the chair.",
    "Please put the blue folders on the second shelf near the window.",
    "A quiet river runs behind the old mill at the edge of town.",
    "We measured the temperature every hour for three days in a row.",
    "Her brother repaired the bicycle with nothing but a borrowed wrench.",
    "If the numbers hold, the bridge will open before the end of spring.",
    "They painted the fence white and planted tomatoes along the path.",
    "The lecture covered sampling, filtering, and a little information theory.",
    "Turn left at the bakery, then walk straight until you see the library.",
    "Six small boats drifted past the harbour lights after midnight.",
    "Recording equipment should be checked before every interview.",
]
VOICES = ["en", "en-us", "en-gb", "en+f3", "en+m3"]


def speech(minutes: float, seed: int = 0) -> np.ndarray:
    from sherpa_fixed.decoding.audio import read_wav, resample

    rng = np.random.default_rng(seed)
    parts, total = [], 0
    with tempfile.TemporaryDirectory() as tmp:
        i = 0
        while total < minutes * 60 * 16000:
            text = " ".join(rng.choice(SENTENCES, size=3, replace=False))
            wav = Path(tmp) / f"{i}.wav"
            subprocess.run(["espeak-ng", "-v", VOICES[i % len(VOICES)], "-s", str(int(rng.integers(140, 190))),
                            "-w", str(wav), text], check=True)
            a = read_wav(wav)
            x = resample(a.samples, a.sample_rate, 16000)
            pause = (rng.standard_normal(int(rng.uniform(0.2, 1.2) * 16000)) * 3e-3).astype(np.float32)
            parts += [x + (rng.standard_normal(len(x)) * 3e-3).astype(np.float32), pause]
            total += len(x) + len(pause)
            i += 1
    return np.concatenate(parts)


def compare(audio: np.ndarray, window_s: float, fixed: bool, feat_dim: int = 80) -> dict:
    from sherpa_fixed.decoding.chunker import WindowSpec, plan_windows, window_samples
    from sherpa_fixed.decoding.features import log_mel, normalize_per_feature

    whole = normalize_per_feature(log_mel(audio, feat_dim))
    spec = WindowSpec(int(window_s * 16000), 2 * 16000, 1280, fixed)
    diffs, mean_shift = [], []
    for w in plan_windows(len(audio), spec):
        feed = window_samples(audio[w.start:w.end], w)
        local = normalize_per_feature(log_mel(feed, feat_dim))
        a, b = w.keep_from // 160, min(w.keep_to // 160, len(whole))  # global frames this window keeps
        la, lb = a - w.start // 160, b - w.start // 160
        d = local[la:lb] - whole[a:b]
        diffs.append(d)
        mean_shift.append(np.abs(d.mean(axis=0)))
    d = np.concatenate(diffs)
    return {"windows": len(diffs), "rms": float(np.sqrt(np.mean(d ** 2))),
            "p99": float(np.percentile(np.abs(d), 99)), "mean_shift": float(np.mean(np.concatenate(mean_shift)))}


def main() -> None:
    audio = speech(6.0)
    print(f"speech: {len(audio) / 16000 / 60:.1f} min (espeak-ng, 5 voices, 140-190 wpm, pauses 0.2-1.2 s)")
    print("| windows | count | RMS change (std units) | 99th percentile | mean per-bin offset |")
    print("|---|---|---|---|---|")
    for window_s, fixed, label in ((8.0, True, "fixed 8 s (800 frames), 2 s overlap"),
                                   (30.0, False, "dynamic 30 s, 2 s overlap")):
        r = compare(audio, window_s, fixed)
        print(f"| {label} | {r['windows']} | {r['rms']:.3f} | {r['p99']:.3f} | {r['mean_shift']:.3f} |")


if __name__ == "__main__":
    main()
