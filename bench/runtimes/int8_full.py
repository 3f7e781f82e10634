"""Full-size int8 sets through older releases' C API, as matrix.py's full-size cells (issue 22).

    python bench/runtimes/int8_full.py /work/scratch/int8/r42/fast /work/scratch/int8/r42/sherpa-onnx

For each folder (an int8 set: encoder/decoder/joiner.int8.onnx + tokens.txt): the reference tokens of
2.0.1's C API from the model folder, then every release in --releases from the model folder and from
`/`: exit status, token count, equal to the reference or not, seconds per load+decode of a 10 s WAV.
Releases come from the same cache as matrix.py. Takes /tmp/sherpa-heavy.lock (a 1.1 GB load per cell).
Results go to bench/out/runtimes/int8_full.json.
"""

from __future__ import annotations

import argparse
import fcntl
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))

import layouts
import releases

OUT = Path(__file__).resolve().parents[1] / "out" / "runtimes"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("folders", nargs="+", type=Path)
    ap.add_argument("--releases", default="1.9.30,1.12.14,1.12.35,2.0.0,2.0.1")
    ap.add_argument("--work", type=Path, default=Path("/work/scratch/rt"))
    args = ap.parse_args()
    index = releases.registry_index()
    rels = {v: releases.install(v, index, node=False) for v in args.releases.split(",")}
    ref_rel = rels.get("2.0.1") or releases.install("2.0.1", index, node=False)
    args.work.mkdir(parents=True, exist_ok=True)
    wav = layouts.write_wav(args.work / "test10.wav")
    rows = []
    with open("/tmp/sherpa-heavy.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        for folder in args.folders:
            folder = folder.resolve()
            ref = releases.load(ref_rel, "c", folder, wav, int8=True, cwd=folder, timeout=900).tokens
            for v, r in rels.items():
                for cwd in (folder, Path("/")):
                    t = time.perf_counter()
                    o = releases.load(r, "c", folder, wav, int8=True, cwd=cwd, timeout=900)
                    row = {"folder": str(folder), "release": v, "cwd": "model" if cwd == folder else "/", "rc": o.rc,
                           "tokens": None if o.tokens is None else len(o.tokens),
                           "equal": None if o.tokens is None or ref is None else o.tokens == ref,
                           "error": o.error, "seconds": round(time.perf_counter() - t, 1)}
                    print(json.dumps(row), flush=True)
                    rows.append(row)
    OUT.mkdir(parents=True, exist_ok=True)
    (OUT / "int8_full.json").write_text(json.dumps(rows, indent=1) + "\n")


if __name__ == "__main__":
    main()
