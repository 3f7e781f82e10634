"""The static-800 chunker on short clips with and without its last-frame rule (decoding/chunker.py).

    flock /tmp/sherpa-heavy.lock env SHERPA_FIXED_BENCH_DIR=DIR python bench/accuracy_last_frame.py \
        [--seeds 4242,200-218]

On the CI guard's short-clip sets (made by bench/accuracy.py --noise-seeds, reused from its cache in
SHERPA_FIXED_BENCH_DIR) and on the shared set A: WER of the static-800 encoder through the drop-in
chunker against whole-utterance decoding with the dynamic export, once with a word-initial token in the
last output frame of a padded clip kept (as before) and once dropped (as shipped). Mean, SD and largest
difference over seeds; set A's difference with its paired standard error.
"""

from __future__ import annotations

import argparse
import statistics
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))

from accuracy import MODEL, guard_set, parse_seeds
from accuracy_clip_ends import SETA
from common import OUT

from sherpa_fixed.checking.accuracy import delta, load_set, recognizer_decoder, run_path, transducer_files


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--seeds", default="4242,200-218")
    ap.add_argument("--threads", type=int, default=2)
    a = ap.parse_args()
    import sherpa_onnx

    from sherpa_fixed import OfflineRecognizer
    from sherpa_fixed.decoding import chunker

    sets = {s: load_set(guard_set(OUT / "accuracy", s), "short") for s in parse_seeds(a.seeds)}
    kw = dict(num_threads=a.threads)
    whole = recognizer_decoder(sherpa_onnx.OfflineRecognizer.from_transducer(**transducer_files(MODEL / "dynamic"),
                                                                             **kw))
    base = {s: run_path("whole", whole, u) for s, u in sets.items()}
    seta = load_set(SETA, "short") if SETA.is_dir() else []
    seta_whole = run_path("whole", whole, seta) if seta else None
    static = recognizer_decoder(OfflineRecognizer.from_transducer(**transducer_files(MODEL / "static800"), **kw))
    print(f"| last-frame rule | mean Δ short | sd | max | set A short Δ ± paired SE |  ({len(sets)} seeds)")
    print("|---|---|---|---|---|")
    for rule in (False, True):
        chunker.DROP_WORDS_BEGUN_IN_PADDING = rule
        ds = [delta(run_path("chunker", static, u), base[s])[0] for s, u in sets.items()]
        d, se = delta(run_path("chunker", static, seta), seta_whole) if seta else (float("nan"), 0.0)
        print(f"| {'dropped (shipped)' if rule else 'kept (before)'} | {statistics.mean(ds):+.2f} | "
              f"{statistics.stdev(ds):.2f} | {max(ds):+.2f} | {d:+.2f} ± {se or 0:.2f} |", flush=True)


if __name__ == "__main__":
    main()
