"""Make the int8 set from a raw export exactly as sherpa-onnx's parakeet export script does.

upstream (k2-fsa/sherpa-onnx scripts/nemo/parakeet-tdt-0.6b-v2/export_onnx.py) calls
onnxruntime.quantization.quantize_dynamic per model, per-tensor, QUInt8 for the encoder and
QInt8 for the decoder and joiner. The output encoder is one self-contained protobuf (~1.1 GB at
1.1B parameters). Run it in a fresh process: quantize_dynamic alone peaks near 13 GB here.

    python bench/realscale/make_int8.py RAW_DIR INT8_DIR
"""

from __future__ import annotations

import shutil
import sys
import time
from pathlib import Path

from onnxruntime.quantization import QuantType, quantize_dynamic


def make_int8(raw: Path, out: Path) -> dict[str, float]:
    out.mkdir(parents=True, exist_ok=True)
    seconds = {}
    for role, qtype in (("encoder", QuantType.QUInt8), ("decoder", QuantType.QInt8), ("joiner", QuantType.QInt8)):
        t = time.perf_counter()
        quantize_dynamic(model_input=str(raw / f"{role}.onnx"), model_output=str(out / f"{role}.int8.onnx"),
                         weight_type=qtype)
        seconds[role] = time.perf_counter() - t
        print(f"{role}: {seconds[role]:.1f} s", flush=True)
    shutil.copy(raw / "tokens.txt", out / "tokens.txt")
    return seconds


if __name__ == "__main__":
    make_int8(Path(sys.argv[1]), Path(sys.argv[2]))
