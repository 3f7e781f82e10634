"""prepare of a >2 GiB external-data encoder, against `cp` of the same bytes.

    python bench/bench_prepare.py

Cases, each run side by side with its baseline in fresh processes (median of 3):

1. scattered: a raw export whose 2.2 GiB of weights are in one file per
   tensor (torch.onnx's layout over 2 GiB) and whose metadata is missing.
   prepare --output consolidates them into one encoder.weights: every byte
   is rewritten, so the baseline is `cp -r` of the folder.
2. metadata-only: the same model with its weights already in one
   encoder.weights; only encoder.onnx (41 MB) needs rewriting.
"""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))

from common import OUT, big_folder, fs_type, gib, measure_interleaved

SF = [sys.executable, "-m", "sherpa_fixed.cli"]
REPEAT = 6  # an even number of interleaved rounds: this disk alternates fast and slow writes


def make_scattered(single: Path) -> Path:
    """The same model with one weights file per tensor (no bytes held in memory)."""
    import onnx

    from sherpa_fixed.rewriting.weights import copy_range, safe_file_name, set_external

    folder = OUT / "big-2gib-scattered"
    if (folder / ".complete").exists():
        return folder
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    model = onnx.load(str(single / "encoder.onnx"), load_external_data=False)
    with open(single / "encoder.weights", "rb") as src:
        for t in model.graph.initializer:
            info = {e.key: e.value for e in t.external_data}
            if not info:
                continue
            name = safe_file_name(t.name)
            with open(folder / name, "wb") as dst:
                copy_range(src, dst, int(info["offset"]), int(info["length"]))
            set_external(t, name, 0, int(info["length"]))
    onnx.save(model, str(folder / "encoder.onnx"))
    for name in ("decoder.onnx", "joiner.onnx", "tokens.txt"):
        shutil.copy(single / name, folder / name)
    (folder / ".complete").write_text("ok")
    return folder


def rm(path: Path):
    return lambda: shutil.rmtree(path, ignore_errors=True)


def main() -> None:
    single = big_folder("big-2gib-nometa", layers=140, metadata="missing")
    scattered = make_scattered(single)
    size = sum(p.stat().st_size for p in scattered.iterdir() if p.is_file())
    files = sum(1 for p in scattered.iterdir() if p.is_file())
    print(f"scattered folder: {files} files, {gib(size)}")
    out = OUT / "prepared"
    rows = []
    for cache in ("warm", "cold"):
        r1 = measure_interleaved({
            "cp": ["cp", "-r", str(scattered), str(out)],
            "off": [*SF, "prepare", str(scattered), "--output", str(out), "--verify", "off"],
            "auto": [*SF, "prepare", str(scattered), "--output", str(out)],
        }, setup=rm(out), repeat=REPEAT, cold=cache == "cold")
        rows += [(f"1. {cache} cache: cp -r (baseline, same bytes)", r1["cp"], r1["cp"]),
                 (f"1. {cache} cache: prepare --output --verify off (the rewrite alone)", r1["off"], r1["cp"]),
                 (f"1. {cache} cache: prepare --output (default: + streamed byte proof)", r1["auto"], r1["cp"])]

    graph = single / "encoder.onnx"
    pristine = OUT / "encoder.onnx.pristine"
    if not pristine.exists():
        shutil.copy(graph, pristine)

    def restore():
        shutil.copy(pristine, graph)
        rm(out)()

    r2 = measure_interleaved({
        "cp": ["cp", str(pristine), str(OUT / "graph-copy.onnx")],
        "in-place": [*SF, "prepare", str(single), "--in-place"],
        "output": [*SF, "prepare", str(single), "--output", str(out)],
    }, setup=restore, repeat=REPEAT)
    rows += [("2. cp encoder.onnx (baseline: the bytes that change)", r2["cp"], r2["cp"]),
             ("2. metadata-only prepare --in-place", r2["in-place"], r2["cp"]),
             ("2. metadata-only prepare --output (weights hard-linked)", r2["output"], r2["cp"])]
    restore()

    print(f"bench dir: {OUT} ({fs_type(OUT)})")
    print("| run | wall median (s) | wall min (s) | all runs (s) | peak RSS (MB) | median vs baseline | "
          "min vs baseline |")
    print("|---|---|---|---|---|---|---|")
    for label, r, base in rows:
        print(f"| {label} | {r['wall_s']:.2f} | {r['min_wall_s']:.2f} | {' '.join(map(str, r['all_wall_s']))} | "
              f"{r['peak_rss_mb']:.0f} | {r['wall_s'] / base['wall_s']:.2f}x | "
              f"{r['min_wall_s'] / base['min_wall_s']:.2f}x |")


if __name__ == "__main__":
    main()
