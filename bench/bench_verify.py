"""What each `prepare --verify` mode costs, against `cp -r SRC DST && sync` of the same folder.

    flock /tmp/sherpa-heavy.lock python bench/bench_verify.py [--rounds 3] [--only LABEL ...] \
        [--modes auto fast full off] [--with-sync] [--work /work/scratch/verify] [--json FILE]

Cases (LABEL=FOLDER, `--case` adds or replaces one; a trailing `:raw` takes the folder as it is):
- int8-600MB, int8-1.0GB: the parakeet-tdt-1.1b architecture cut to 24 and 38 layers
  (bench/realscale/build_export.py with N_LAYERS changed), `sherpa-fixed prepare raw -o prepared`,
  `sherpa-fixed quantize prepared -o int8`: one self-contained int8 encoder of 0.6 and 1.0 GB;
- int8-1.1GB: the full 42-layer int8 folder bench/realscale makes;
- raw-4.3GB: the 42-layer raw NeMo export (637 weight files, 4.28 GB), whose prepare consolidates
  the weights, so it is not metadata-only; its costs are measured all the same.

A metadata-only case is copied once (bench_selfcontained.broken_copy) with its encoder's
`feat_dim` set wrong, so `prepare` has exactly one key to fix; the dry run is checked to plan
metadata changes only. Each round runs `cp -r SRC DST && sync` and `prepare SRC --output DST
--verify MODE` for MODE in auto, fast, full, off, each in a fresh child process, in an order
rotated every round, with DST removed and a full `sync` before every run (bench/common.py). Per
run: wall and CPU seconds (wait4, children included) and peak RSS read from /proc process by
process (the child's own VmHWM, the largest VmHWM of anything it started, and the largest sum of
VmRSS over its tree). Ratios are the median of per-round ratios to `cp -r && sync` of that round.
`prepare --output` does not fsync what it writes (like `cp`, it leaves writeback to the kernel and
publishes the folder by one rename); `--with-sync` adds rows `verify MODE && sync` (run under `sh`,
so prepare's own peak is in the "largest child" column) to compare durable with durable.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))

from bench_selfcontained import broken_copy
from common import fs_type, measure_tree

CLI = str(Path(sys.executable).parent / "sherpa-fixed")
MODES = ("auto", "fast", "full", "off")
DEFAULT_CASES = {
    "int8-600MB": "/work/scratch/verify/L24/int8",
    "int8-1.0GB": "/work/scratch/verify/L38/int8",
    "int8-1.1GB": "/work/scratch/realscale/int8",
    "raw-4.3GB": "/work/scratch/realscale/raw:raw",
}


def folder_bytes(folder: Path) -> int:
    return sum(p.stat().st_size for p in folder.iterdir() if p.is_file())


def planned_changes(src: Path) -> list[dict]:
    out = subprocess.run([CLI, "prepare", str(src), "--dry-run", "--json"], capture_output=True, text=True)
    return json.loads(out.stdout)["changes"]


def run_case(label: str, source: Path, raw: bool, work: Path, rounds: int, modes=MODES, with_sync=False) -> dict:
    case_dir = work / label
    case_dir.mkdir(parents=True, exist_ok=True)
    src = source if raw else broken_copy(source, case_dir / "src")
    changes = planned_changes(src)
    kinds = sorted({c["kind"] for c in changes})
    if not raw and kinds != ["metadata"]:
        raise SystemExit(f"{label}: expected a metadata-only plan, got {kinds}")
    dst = case_dir / "dst"
    largest = max((p for p in src.iterdir() if p.is_file()), key=lambda p: p.stat().st_size)
    print(f"\n## {label}: {src} ({folder_bytes(src) / 1e9:.3f} GB in {len(list(src.iterdir()))} files, largest "
          f"{largest.name} {largest.stat().st_size / 1e9:.3f} GB); planned changes: "
          f"{len(changes)} ({', '.join(kinds)})", flush=True)
    commands = {"cp -r && sync": ["sh", "-c", 'cp -r "$1" "$2" && sync', "sh", str(src), str(dst)]}
    for mode in modes:
        commands[f"verify {mode}"] = [CLI, "prepare", str(src), "--output", str(dst), "--verify", mode, "--json"]
        if with_sync:  # prepare --output leaves writeback to the kernel, as cp does; this row makes it durable
            commands[f"verify {mode} && sync"] = ["sh", "-c", '"$@" && sync', "sh", *commands[f"verify {mode}"]]
    runs: dict[str, list[dict]] = {k: [] for k in commands}
    reports: dict[str, dict] = {}
    names = list(commands)
    for r in range(rounds):
        for name in names[r % len(names):] + names[:r % len(names)]:
            shutil.rmtree(dst, ignore_errors=True)
            os.sync()
            report = case_dir / "last.json"
            with open(report, "w") as f:
                m = measure_tree(commands[name], stdout=f)
            if name.startswith("verify"):
                reports[name] = json.loads(report.read_text())
            runs[name].append(m)
            print(f"  round {r + 1} {name}: {m['wall_s']:.2f} s wall, {m['cpu_s']:.2f} s CPU, "
                  f"{m['peak_rss_mb']:.0f} MB own peak, {m['descendant_peak_mb']:.0f} MB largest child, "
                  f"{m['sum_peak_mb']:.0f} MB tree", flush=True)
    shutil.rmtree(dst, ignore_errors=True)
    base = [m["wall_s"] for m in runs["cp -r && sync"]]
    rows = {}
    for name, ms in runs.items():
        walls = [m["wall_s"] for m in ms]
        rep = reports.get(name, {})
        rows[name] = {
            "wall_s": statistics.median(walls), "all_wall_s": [round(w, 2) for w in walls],
            "ratio_to_cp": statistics.median(w / b for w, b in zip(walls, base, strict=True)),
            "all_ratios": [round(w / b, 2) for w, b in zip(walls, base, strict=True)],
            "cpu_s": statistics.median(m["cpu_s"] for m in ms),
            "peak_rss_mb": max(m["peak_rss_mb"] for m in ms),
            "descendant_peak_mb": max(m["descendant_peak_mb"] for m in ms),
            "sum_peak_mb": max(m["sum_peak_mb"] for m in ms),
            "ru_maxrss_mb": max(m["ru_maxrss_mb"] for m in ms),
            "checks": [{"kind": c["kind"], "file": c["file"], "ok": c["ok"], "detail": c["detail"]}
                       for c in rep.get("checks", [])],
            "seconds": rep.get("seconds"),
        }
    return {"source": str(source), "src": str(src), "bytes": folder_bytes(src), "files": len(list(src.iterdir())),
            "largest": [largest.name, largest.stat().st_size], "changes": changes, "rows": rows}


def table(results: dict) -> str:
    lines = ["| case | run | wall median (s) | per round (s) | vs cp -r && sync (median; per round) | CPU (s) | "
             "peak RSS own (MB) | largest child (MB) | tree (MB) | checks |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for label, res in results.items():
        for name, r in res["rows"].items():
            checks = ", ".join(c["kind"] for c in r["checks"]) or "-"
            lines.append(f"| {label} | {name} | {r['wall_s']:.2f} | {' '.join(map(str, r['all_wall_s']))} | "
                         f"{r['ratio_to_cp']:.2f}x; {' '.join(map(str, r['all_ratios']))} | {r['cpu_s']:.1f} | "
                         f"{r['peak_rss_mb']:.0f} | {r['descendant_peak_mb']:.0f} | {r['sum_peak_mb']:.0f} | "
                         f"{checks} |")
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--work", type=Path, default=Path("/work/scratch/verify"))
    ap.add_argument("--case", action="append", default=[], metavar="LABEL=FOLDER[:raw]")
    ap.add_argument("--only", nargs="*", metavar="LABEL")
    ap.add_argument("--json", type=Path)
    ap.add_argument("--modes", nargs="*", choices=MODES, default=list(MODES))
    ap.add_argument("--with-sync", action="store_true", help="also time each mode followed by sync")
    args = ap.parse_args()
    cases = dict(DEFAULT_CASES)
    cases.update(dict(c.split("=", 1) for c in args.case))
    if args.only:
        cases = {k: v for k, v in cases.items() if k in args.only}
    args.work.mkdir(parents=True, exist_ok=True)
    print(f"disk: {fs_type(args.work)}; {os.cpu_count()} CPUs; python {sys.version.split()[0]}")
    results = {}
    for label, spec in cases.items():
        folder, _, flag = spec.partition(":")
        if not Path(folder).is_dir():
            print(f"{label}: {folder} is not there; skipped (see the docstring for how it is made)")
            continue
        results[label] = run_case(label, Path(folder), flag == "raw", args.work, args.rounds,
                                  args.modes, args.with_sync)
        if args.json:
            args.json.write_text(json.dumps(results, indent=1))
    print()
    print(table(results))


if __name__ == "__main__":
    main()
