"""Why the static-800 chunker loses words on short clips of the espeak-ng 1.52 test speech (docs/accuracy.md).

    python bench/accuracy_clip_ends.py --seeds 4242,200-218 [--gaps 0.3,0.6]

The chunker pads a clip shorter than its fixed window with the clip itself, reflected (x, reversed x,
x, ...; decoding/chunker.py). Reversed speech starts twice the clip's trailing pause after its end,
and the encoder (attention over the whole window) can start a word in the clip's last output frames
from it: a word decoded from padding but timed before the real end, which the chunker keeps. This
script measures, on the CI guard's sets (made by bench/accuracy.py --noise-seeds, reused from its
cache):

1. the trailing pause of the clips (last frame 15 dB above the clip's noise floor to its end),
   espeak-ng 1.51 program (the shared set A, when present) against the 1.52 library;
2. the chunker's WER difference from whole-utterance decoding as it is, and with a candidate padding
   that puts `gap` seconds of noise at the clip's own quietest level between each copy
   (x, gap, reversed x, gap, x, ...), swapped in for decoding/chunker.window_samples in this process
   only. Per gap: mean, SD and largest over seeds, and how the errors split (insertions, deletions,
   substitutions) against whole-utterance decoding; and the same on the short clips of set A (1.51
   audio with long trailing pauses), where a padding change must not cost anything either.
"""

from __future__ import annotations

import argparse
import glob
import statistics
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).parent))

from accuracy import MODEL, guard_set, parse_seeds
from common import OUT

from sherpa_fixed.checking.accuracy import delta, load_set, recognizer_decoder, run_path, transducer_files

SETA = Path("/work/shared/speech/setA")  # made with Debian's espeak-ng 1.51 program (FLAC; needs soundfile)


def trailing_pause(x: np.ndarray, sr: int = 16000) -> float:
    """Seconds from the last 10 ms frame 15 dB above the clip's noise floor (5th percentile) to the end."""
    fr = sr // 100
    n = len(x) // fr
    e = 10 * np.log10(np.mean(x[: n * fr].reshape(n, fr).astype(np.float64) ** 2, axis=1) + 1e-14)
    speech = np.nonzero(e > np.percentile(e, 5) + 15)[0]
    return (n - 1 - speech[-1]) * fr / sr if len(speech) else 0.0


def pause_line(name: str, pauses: list[float]) -> str:
    p = np.array(pauses)
    return (f"| {name} | {len(p)} | {np.median(p):.2f} | {np.percentile(p, 10):.2f} | {p.min():.2f} | "
            f"{100 * np.mean(p < 0.1):.0f} % |")


def gapped_padding(gap_s: float):
    """window_samples with `gap_s` of noise at the clip's quietest level between each reflected copy."""
    from sherpa_fixed.decoding import chunker

    def window_samples(real, win, rng_seed=0):
        real = np.ascontiguousarray(real, dtype=np.float32)
        if win.pad < 1280 or len(real) == 0:  # a slid-back final window (< 80 ms): as before
            return chunker.window_samples(real, win, rng_seed)
        fr = 160
        n = len(real) // fr
        frames = real[: n * fr].reshape(n, fr)
        quiet = np.sqrt(np.percentile(np.mean(frames.astype(np.float64) ** 2, axis=1), 10))
        rng = np.random.default_rng(len(real))
        gap = (rng.normal(0, 1, int(gap_s * 16000)) * quiet).astype(np.float32)
        cycle = np.concatenate([real, gap, real[::-1], gap])
        total = len(real) + win.pad
        return np.tile(cycle, -(-total // len(cycle)))[:total]

    return window_samples


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--seeds", default="4242,200-218")
    ap.add_argument("--gaps", default="0.3,0.6", help="candidate gaps in seconds (comma separated)")
    ap.add_argument("--threads", type=int, default=2)
    a = ap.parse_args()
    import sherpa_onnx

    from sherpa_fixed import OfflineRecognizer
    from sherpa_fixed.decoding import recognizer as rec_mod

    seeds = parse_seeds(a.seeds)
    folders = {s: guard_set(OUT / "accuracy", s) for s in seeds}
    sets = {s: load_set(f, "short") for s, f in folders.items()}

    print("| clips | n | median trailing pause s | 10th percentile | min | under 0.1 s |\n|---|---|---|---|---|---|")
    if SETA.is_dir():
        import soundfile

        print(pause_line("set A (espeak-ng 1.51 program)", [trailing_pause(soundfile.read(f, dtype="float32")[0])
                                                             for f in sorted(glob.glob(str(SETA / "short/*.flac")))]))
    print(pause_line("guard sets (espeak-ng 1.52 library)", [trailing_pause(u.samples)
                                                              for utts in sets.values() for u in utts]))

    kw = dict(num_threads=a.threads)
    whole = recognizer_decoder(sherpa_onnx.OfflineRecognizer.from_transducer(
        **transducer_files(MODEL / "dynamic"), **kw))
    base = {s: run_path("whole", whole, utts) for s, utts in sets.items()}
    seta = load_set(SETA, "short") if SETA.is_dir() else []
    seta_whole = run_path("whole", whole, seta) if seta else None
    original = rec_mod.window_samples
    variants = [("reflection (as shipped)", original)] + [
        (f"reflection with {g} s gaps", gapped_padding(g)) for g in map(float, a.gaps.split(","))]
    print(f"\n| chunker padding | mean Δ short | sd | min | max | net ins | net del | net sub | "
          f"set A short Δ ± paired SE |  ({len(seeds)} seeds)")
    print("|---|---|---|---|---|---|---|---|---|")
    for name, fn in variants:
        rec_mod.window_samples = fn
        try:
            chunker = recognizer_decoder(OfflineRecognizer.from_transducer(
                **transducer_files(MODEL / "static800"), **kw))
            ds, ins, dels, subs = [], 0, 0, 0
            for s, utts in sets.items():
                r = run_path(name, chunker, utts)
                ds.append(delta(r, base[s])[0])
                t, b = r.total, base[s].total
                ins, dels, subs = ins + t.insertions - b.insertions, dels + t.deletions - b.deletions, \
                    subs + t.substitutions - b.substitutions
                print(f"  {name}: seed {s}: {ds[-1]:+.2f}", file=sys.stderr, flush=True)
            seta_cell = ""
            if seta_whole is not None:
                d, se = delta(run_path(name, chunker, seta), seta_whole)
                seta_cell = f"{d:+.2f} ± {se or 0:.2f}"
        finally:
            rec_mod.window_samples = original
        print(f"| {name} | {statistics.mean(ds):+.2f} | {statistics.stdev(ds):.2f} | {min(ds):+.2f} | "
              f"{max(ds):+.2f} | {ins:+d} | {dels:+d} | {subs:+d} | {seta_cell} |", flush=True)


if __name__ == "__main__":
    main()
