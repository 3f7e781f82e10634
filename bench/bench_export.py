"""Exporting a .nemo: `sherpa-fixed export` against NeMo's plain .export() + upstream's consolidation step.

Baseline (what sherpa-onnx's scripts/nemo/parakeet-tdt-0.6b-v2/export_onnx.py
does, minus quantization): `ASRModel.restore_from` on CPU, `encoder.export`,
`decoder.export`, `joint.export`, then its add_meta_data step, which
`onnx.load`s the whole encoder (all weights into memory, torch model still
alive) and `onnx.save`s it with one external `encoder.weights`.
Ours: `export_nemo(..., check=False)` (same NeMo calls; weights streamed into
one file after the torch model is freed) and `export_nemo(...)` with its
checks (encoder vs torch in onnxruntime, stock sherpa-onnx decode in a child).

Each runs in a fresh child process (peak RSS = that process's VmHWM; the
sherpa-onnx check child is measured separately and reported), one after the
other, under `flock /tmp/sherpa-heavy.lock` when run as documented:

    flock /tmp/sherpa-heavy.lock /work/nemo-venv/bin/python bench/bench_export.py \
        /work/scratch/realscale/model.nemo /work/scratch/h6/bench [--repeat 1]
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from common import _WRAP, OUT

PLAIN = r"""
import os, onnx, torch
import nemo.collections.asr as nemo_asr
src, out = {src!r}, {out!r}
os.makedirs(out, exist_ok=True)
os.chdir(out)
m = nemo_asr.models.ASRModel.restore_from(src, map_location=torch.device("cpu"))
m.eval()
with open("tokens.txt", "w", encoding="utf-8") as f:
    for i, s in enumerate(m.joint.vocabulary):
        f.write(f"{{s}} {{i}}\n")
    f.write(f"<blk> {{i + 1}}\n")
with torch.no_grad():
    m.encoder.export("encoder.onnx")
    m.decoder.export("decoder.onnx")
    m.joint.export("joiner.onnx")
model = onnx.load("encoder.onnx")  # upstream add_meta_data: whole encoder into memory
for k, v in {{"vocab_size": m.decoder.vocab_size, "feat_dim": m.cfg.preprocessor.features}}.items():
    p = model.metadata_props.add(); p.key, p.value = k, str(v)
onnx.save(model, "encoder.onnx", save_as_external_data=True, all_tensors_to_one_file=True,
          location="encoder.weights")
"""

OURS = r"""
import json, resource
from sherpa_fixed.exporting import export_nemo
r = export_nemo({src!r}, {out!r}, check={check!r}, force=True)
assert r.written, r.to_json()
print("@@RESULT@@" + json.dumps({{"seconds": r.seconds, "files": r.files, "layout": r.layout,
      "checks": [c.to_json() for c in r.checks],
      "children_peak_mb": resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024}}))
"""


def run_case(code: str) -> dict:
    """Wall seconds, the child's own peak RSS (VmHWM, MB) and what it printed as @@RESULT@@."""
    import subprocess
    import time

    t = time.perf_counter()
    p = subprocess.run([sys.executable, "-c", _WRAP, code], capture_output=True, text=True)
    wall = time.perf_counter() - t
    if p.returncode != 0:
        raise RuntimeError(f"benchmark child failed ({p.returncode}): {p.stderr[-3000:]}")
    rss = next(ln for ln in p.stderr.splitlines() if ln.startswith("@@RSS@@"))
    out = {"wall_s": round(wall, 1), "peak_rss_mb": round(json.loads(rss[7:]) / 1024)}
    res = next((ln for ln in p.stdout.splitlines() if ln.startswith("@@RESULT@@")), None)
    if res:
        out["detail"] = json.loads(res[len("@@RESULT@@"):])
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("nemo")
    ap.add_argument("workdir")
    ap.add_argument("--repeat", type=int, default=1)
    a = ap.parse_args()
    work = Path(a.workdir)
    work.mkdir(parents=True, exist_ok=True)
    results = {"nemo": a.nemo, "nemo_bytes": Path(a.nemo).stat().st_size, "repeat": a.repeat}
    cases = [
        ("nemo_plain_export+consolidate", PLAIN.format(src=a.nemo, out=str(work / "plain"))),
        ("sherpa_fixed_export_no_check", OURS.format(src=a.nemo, out=str(work / "ours"), check=False)),
        ("sherpa_fixed_export_checked", OURS.format(src=a.nemo, out=str(work / "ours"), check=True)),
    ]
    for name, code in cases:
        for d in ("plain", "ours"):
            shutil.rmtree(work / d, ignore_errors=True)
        print(f"running {name} ...", flush=True)
        runs = [run_case(code) for _ in range(a.repeat)]
        r = sorted(runs, key=lambda x: x["wall_s"])[len(runs) // 2]
        r["peak_rss_mb"] = max(x["peak_rss_mb"] for x in runs)
        r["runs"] = len(runs)
        folder = work / ("plain" if "plain" in name else "ours")
        r["files"] = len(list(folder.iterdir())) if folder.exists() else 0
        r["bytes"] = sum(p.stat().st_size for p in folder.iterdir()) if folder.exists() else 0
        results[name] = r
        print(name, json.dumps(r), flush=True)
    for d in ("plain", "ours"):
        shutil.rmtree(work / d, ignore_errors=True)
    OUT.mkdir(parents=True, exist_ok=True)
    (OUT / "bench_export.json").write_text(json.dumps(results, indent=2) + "\n")
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
