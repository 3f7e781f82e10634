"""Check `prepare --max-seconds` against NeMo itself (needs the NeMo venv; never a dependency of the package).

    flock /tmp/sherpa-heavy.lock /work/nemo-venv/bin/python bench/posenc_vs_nemo.py

1. Tables: NeMo's own `RelPositionalEncoding.extend_pe(L')` on this machine against the table
   `prepare --max-seconds` wrote, for the genuine tiny export tests/data/nemo/tdt-80 and the speech
   model (L' = 3 x pos_emb_max_len): largest difference, share of bit-identical values.
2. Outputs past the old limit: the speech model's NeMo checkpoint (tests/data/speech/model.nemo) runs
   its encoder in torch on features longer than 400 s (NeMo grows its table in forward()), and the
   prepared ONNX encoder runs the same features in onnxruntime; largest difference of the outputs,
   against the same comparison at a length inside the old limit (export/runtime noise floor).
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
MAIN_PY = ROOT / ".venv" / "bin" / "python"  # the package's own venv runs prepare


def prepare(src: Path, out: Path, seconds: float) -> None:
    code = ("import sys; from sherpa_fixed.rewriting.prepare import prepare_folder as p; "
            f"r = p({str(src)!r}, output={str(out)!r}, max_seconds={seconds}, verify='fast', force=True); "
            "sys.exit(r.exit_code)")
    subprocess.run([str(MAIN_PY), "-c", code], check=True, cwd=ROOT)


def table(path: Path) -> np.ndarray:
    import onnx
    from onnx import numpy_helper

    m = onnx.load(str(path))
    for n in m.graph.node:
        if n.op_type == "Constant":
            t = n.attribute[0].t
            if len(t.dims) == 3 and t.dims[0] == 1 and t.dims[1] % 2 == 1 and t.dims[1] > 100:
                return numpy_helper.to_array(t)
    raise SystemExit(f"no table in {path}")


def main() -> None:
    import onnxruntime as ort
    import torch
    from nemo.collections.asr.models import ASRModel
    from nemo.collections.asr.parts.submodules.multi_head_attention import RelPositionalEncoding

    out: dict = {"torch": torch.__version__}
    tmp = Path(tempfile.mkdtemp(prefix="posenc-nemo-"))
    for name, src, L, d in (("tdt-80", ROOT / "tests/data/nemo/tdt-80", 1000, 64),
                            ("speech", ROOT / "tests/data/speech/dynamic", 5000, 96)):
        target = tmp / name
        prepare(src, target, 3 * L * 0.08)
        ours = table(target / "encoder.onnx")
        pe = RelPositionalEncoding(d_model=d, dropout_rate=0.0, max_len=L)
        pe.extend_pe(3 * L, torch.device("cpu"), torch.float32)
        nemo = pe.pe.numpy()
        stored = table(src / "encoder.onnx")
        out[name] = {"rows": list(ours.shape), "max_abs_diff_vs_nemo_extend_pe": float(np.abs(ours - nemo).max()),
                     "bit_identical_share": float(np.mean(ours == nemo)),
                     # the stored rows sit at [2L, 4L-1) of the 3L table; the new ones around them
                     "stored_vs_nemo_max_abs_diff": float(np.abs(stored - nemo[:, 2 * L:4 * L - 1]).max()),
                     "new_rows_max_abs_diff": float(max(np.abs(ours[:, :2 * L] - nemo[:, :2 * L]).max(),
                                                        np.abs(ours[:, 4 * L - 1:] - nemo[:, 4 * L - 1:]).max()))}
        print(json.dumps({name: out[name]}), file=sys.stderr)

    # 2. outputs past the limit, speech model
    torch.set_num_threads(2)
    model = ASRModel.restore_from(str(ROOT / "tests/data/speech/model.nemo"), map_location="cpu")
    model.eval()
    so = ort.SessionOptions()
    so.intra_op_num_threads = 2
    sess = ort.InferenceSession(str(tmp / "speech" / "encoder.onnx"), so, providers=["CPUExecutionProvider"])
    rng = np.random.default_rng(0)
    for frames in (24000, 44000):  # 240 s (inside the old 400 s limit) and 440 s (past it)
        x = rng.standard_normal((1, 80, frames)).astype(np.float32)
        with torch.no_grad():
            want, wlen = model.encoder(audio_signal=torch.from_numpy(x), length=torch.tensor([frames]))
        got, glen = sess.run(None, {"audio_signal": x, "length": np.array([frames], np.int64)})
        want = want.numpy()
        out[f"encoder_{frames}_frames"] = {"shape": list(got.shape), "torch_shape": list(want.shape),
                                           "max_abs_diff": float(np.abs(got - want).max()),
                                           "max_abs_output": float(np.abs(want).max()),
                                           "lengths": [int(glen[0]), int(wlen[0])]}
        print(json.dumps({frames: out[f"encoder_{frames}_frames"]}), file=sys.stderr)
    print(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
