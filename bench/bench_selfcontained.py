"""inspect and a metadata-only prepare of a ~1.1 GB self-contained encoder, against cp of that file.

    flock /tmp/sherpa-heavy.lock python bench/bench_selfcontained.py [FOLDER] [--rounds N]

FOLDER holds a self-contained `encoder.int8.onnx` (or `encoder.onnx`), e.g. the real
parakeet-tdt-1.1b int8 folder bench/realscale makes (default:
/work/scratch/realscale/int8 when it is there). Without one, a NeMo-shaped fp32
encoder of about 1.1 GB is built with the factory, weights inline (needs ~3 GB of RAM
once; kept under the bench folder).

The folder is copied once and its encoder's `feat_dim` set wrong, so `prepare` has
exactly one key to fix (plus its own `sherpa_fixed_prepared` record). Every run is a
fresh child process; runs are interleaved over several rounds with `sync` before
each (bench/common.py), and peak RSS is each child's own VmHWM.

"before" rows run the same code with the skeleton reader and the streamed rewrite
switched off (onnx_graph.SKELETON_AT huge, stream_rewrite.applies False): the full
`onnx.load` + `SerializeToString` path every version before issue 12 took.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))

from common import OUT, fs_type, measure_interleaved

from sherpa_fixed.reading.onnx_graph import load_graph
from sherpa_fixed.rewriting.stream_rewrite import rewrite_streamed

REAL = Path("/work/scratch/realscale/int8")
CLI = str(Path(sys.executable).parent / "sherpa-fixed")
# The CLI in this process; exit code 1 ("needs prepare", inspect's verdict on the broken copy) counts as success.
_NEW = ("import sys\nfrom sherpa_fixed.cli import main\nsys.argv = ['sherpa-fixed', *sys.argv[1:]]\n"
        "try:\n    main()\nexcept SystemExit as e:\n    sys.exit(0 if e.code in (None, 0, 1) else e.code)\n")
_OLD = ("import sherpa_fixed.reading.onnx_graph as g; g.SKELETON_AT = 1 << 62\n"
        "import sherpa_fixed.rewriting.stream_rewrite as s; s.applies = lambda fp: False\n" + _NEW)

# What OfflineRecognizer reads before creating sessions (decoding/recognizer.py): the three signatures,
# the confinement audit of each graph, and the weights folder for relative external data.
_RECOGNIZER_READS = """
import sys
from pathlib import Path
from sherpa_fixed.decoding.session_dir import weights_folder
from sherpa_fixed.reading.external_data import audit_external_data
from sherpa_fixed.reading.onnx_graph import load_graph, read_signature
folder = Path(sys.argv[1])
paths = [next(folder.glob(f"{role}*.onnx")) for role in ("encoder", "decoder", "joiner")]
for p in paths:
    read_signature(p)
    audit_external_data(load_graph(p))
weights_folder(*paths)
"""


def synthetic(folder: Path) -> Path:
    """A NeMo-shaped encoder of ~1.1 GB with every weight inline (as quantize_dynamic writes one file)."""
    from sherpa_fixed.testing import ModelSpec, write_model_folder

    marker = folder / ".complete"
    if not marker.exists():
        shutil.rmtree(folder, ignore_errors=True)
        write_model_folder(folder, ModelSpec(d_model=1024, layers=40, pos_emb_max_len=5000))
        marker.write_text("ok")
    return folder


def encoder_of(folder: Path) -> Path:
    for name in ("encoder.int8.onnx", "encoder.onnx"):
        if (folder / name).exists():
            return folder / name
    raise SystemExit(f"{folder}: no encoder.int8.onnx or encoder.onnx")


def broken_copy(src: Path, dst: Path) -> Path:
    """A copy of the folder whose encoder says feat_dim=128: one key for prepare to fix."""
    if (dst / ".complete").exists():
        return dst
    shutil.rmtree(dst, ignore_errors=True)
    shutil.copytree(src, dst, ignore=shutil.ignore_patterns(".*"))
    enc = encoder_of(dst)
    tmp = rewrite_streamed(load_graph(enc), enc, {"feat_dim": "128"}, durable=False)
    tmp.replace(enc)
    (dst / ".complete").write_text("ok")
    return dst


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("folder", nargs="?", type=Path)
    ap.add_argument("--rounds", type=int, default=3)
    args = ap.parse_args()
    work = OUT / "selfcontained"
    work.mkdir(parents=True, exist_ok=True)
    source = args.folder or (REAL if (REAL / "encoder.int8.onnx").exists() else synthetic(work / "synthetic"))
    src = broken_copy(source, work / "src")
    enc = encoder_of(src)
    dst = work / "dst"
    print(f"encoder: {enc.name} from {source}, {enc.stat().st_size / 1e9:.3f} GB, self-contained; "
          f"disk: {fs_type(work)}")

    def clean() -> None:
        if dst.is_dir():
            shutil.rmtree(dst)
        else:
            dst.unlink(missing_ok=True)

    rows = measure_interleaved({
        "cp encoder (baseline)": ["cp", str(enc), str(dst)],
        "cp -r folder": ["cp", "-r", str(src), str(dst)],
        "inspect (after)": [sys.executable, "-c", _NEW, "inspect", str(src), "--json"],
        "inspect (before: full parse)": [sys.executable, "-c", _OLD, "inspect", str(src), "--json"],
        "prepare --output (after, default verify)": [CLI, "prepare", str(src), "--output", str(dst)],
        "prepare --output --verify off (after)": [CLI, "prepare", str(src), "--output", str(dst), "--verify", "off"],
        "prepare --output (before: parse + serialize)": [sys.executable, "-c", _OLD, "prepare", str(src), "--output",
                                                         str(dst)],
        "read_signature of the encoder (after)": [sys.executable, "-c", "import sys; from sherpa_fixed.reading."
                                                  "onnx_graph import read_signature; read_signature(sys.argv[1])",
                                                  str(enc)],
        "recognizer's reads before its sessions (after)": [sys.executable, "-c", _RECOGNIZER_READS, str(src)],
    }, setup=clean, repeat=args.rounds)
    clean()
    base = rows["cp encoder (baseline)"]["wall_s"]
    print("| run | wall median (s) | all runs (s) | peak RSS (MB) | vs cp of the file |")
    print("|---|---|---|---|---|")
    for name, r in rows.items():
        print(f"| {name} | {r['wall_s']:.2f} | {' '.join(map(str, r['all_wall_s']))} | {r['peak_rss_mb']:.0f} | "
              f"{r['wall_s'] / base:.2f}x |")
    (work / "results.json").write_text(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
