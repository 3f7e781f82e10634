"""Peak RSS and decode time of the drop-in recognizer by max_batch, on the 1.1B architecture.

    python bench/realscale/batch_memory.py [--folder DIR] [--int8] [--seconds 300] [--batches 1,2,8]

Each setting in a fresh child under /usr/bin/time (peak RSS is that child's own), the same samples
(measure.py's tiled set A speech). Why: sherpa-onnx runs a decode_streams batch through the encoder
at once, and the pre-encoder's first convolution (256 channels at half the frame rate) holds
batch x window of activations, so memory grows with the audio per batch, not with the audio.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from measure import ROOT, audio_file, model_files, timed

CHILD = r"""
import json, sys, time
import numpy as np
a = json.loads(sys.argv[1])
audio = np.array(np.load(a["audio"], mmap_mode="r")[: a["samples"]], dtype=np.float32)
from sherpa_fixed import OfflineRecognizer
r = OfflineRecognizer.from_transducer(encoder=a["encoder"], decoder=a["decoder"], joiner=a["joiner"],
                                      tokens=a["tokens"], model_type="nemo_transducer", num_threads=2,
                                      max_batch=a["batch"])
s = r.create_stream()
t = time.perf_counter()
s.accept_waveform(16000, audio)
r.decode_stream(s)
print("@@" + json.dumps({"decode_s": time.perf_counter() - t, "windows": s.result.windows}))
"""


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--folder", type=Path, default=ROOT / "int8")
    ap.add_argument("--int8", action="store_true")
    ap.add_argument("--seconds", type=int, default=300)
    ap.add_argument("--batches", default="1,2,8")
    a = ap.parse_args()
    audio = audio_file(ROOT, a.seconds)
    files = model_files(a.folder, "int8" if a.int8 else "fp32")
    print("| max_batch | windows | decode s | RTF | peak RSS MB |\n|---|---|---|---|---|")
    for b in [int(x) for x in a.batches.split(",")]:
        args = {"audio": str(audio), "samples": a.seconds * 16000, "batch": b, **files}
        r = timed([sys.executable, "-c", CHILD, json.dumps(args)])
        line = next((ln for ln in r["stdout"].splitlines() if ln.startswith("@@")), None)
        if line is None:
            print(f"| {b} | failed: {r['stderr'][-300:]} |")
            continue
        d = json.loads(line[2:])
        print(f"| {b} | {d['windows']} | {d['decode_s']:.1f} | {d['decode_s'] / a.seconds:.3f} | "
              f"{r['peak_rss_mb']:.0f} |", flush=True)


if __name__ == "__main__":
    main()
