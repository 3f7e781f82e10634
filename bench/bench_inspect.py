"""inspect on a >2 GiB external-data encoder costs what parsing its graph costs.

    python bench/bench_inspect.py

Baselines, run side by side in fresh processes: `onnx.load(encoder.onnx,
load_external_data=False)` (parse only), and reading the whole weights
file once (what a naive tool that loads the weights would at least pay).
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))

from common import big_folder, gib, measure_python


def main() -> None:
    # 140 layers of 2 x (1024 x 2048) fp32 = 2.35 GB of weights; the 41 MB positional-encoding
    # constant makes the graph file as big as a real 1.1B encoder.onnx (42 MB).
    folder = big_folder("big-2gib", layers=140)
    enc = folder / "encoder.onnx"
    weights = folder / "encoder.weights"
    print(f"encoder.onnx {enc.stat().st_size / 1e6:.1f} MB, encoder.weights {gib(weights.stat().st_size)}")

    parse = measure_python(f"import onnx; onnx.load({str(enc)!r}, load_external_data=False)")
    inspect = measure_python(
        "from sherpa_fixed.reading.inspector import inspect_folder\n"
        f"r = inspect_folder({str(folder)!r})\nassert r.verdict.code == 'works', r.verdict"
    )
    read_all = measure_python(
        f"f = open({str(weights)!r}, 'rb')\nwhile f.read(1 << 24): pass", repeat=1
    )
    rows = [("parse graph only (baseline)", parse), ("sherpa-fixed inspect", inspect),
            ("read weights once (for scale)", read_all)]
    print("| run | wall (s) | peak RSS (MB) | wall vs parse |")
    print("|---|---|---|---|")
    for name, r in rows:
        print(f"| {name} | {r['wall_s']:.2f} | {r['peak_rss_mb']:.0f} | {r['wall_s'] / parse['wall_s']:.2f}x |")


if __name__ == "__main__":
    main()
