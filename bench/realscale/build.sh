#!/bin/sh
# Build the parakeet-tdt-1.1b architecture (random weights) and the folders measure.py reads.
#
#   NEMO_PY=/path/to/nemo-venv/bin/python flock /tmp/sherpa-heavy.lock sh bench/realscale/build.sh [OUT]
#
# OUT (default /work/scratch/realscale) gets:
#   raw/        the NeMo export exactly as sherpa-onnx's export script makes it (torch's per-tensor layout)
#   int8.raw/   onnxruntime quantize_dynamic of raw/ as upstream does it (QUInt8 encoder, QInt8 decoder/joiner)
#   int8/       int8.raw/ plus its encoder metadata (sherpa-fixed prepare --in-place): the int8 release layout
#   prepared/   sherpa-fixed prepare raw --output prepared: the fp32 release layout
# About 4 minutes, 13 GB peak RAM (quantize_dynamic), 11 GB of disk.
set -eu
HERE=$(cd "$(dirname "$0")" && pwd)
OUT=${1:-/work/scratch/realscale}
NEMO_PY=${NEMO_PY:-/work/nemo-venv/bin/python}
PY=${PY:-python}
mkdir -p "$OUT"
if [ ! -f "$OUT/raw/encoder.onnx" ]; then
    /usr/bin/time -v "$NEMO_PY" "$HERE/build_export.py" "$OUT/raw" 2>&1 | tee "$OUT/build.log"
fi
if [ ! -f "$OUT/int8.raw/encoder.int8.onnx" ]; then
    /usr/bin/time -v "$PY" "$HERE/make_int8.py" "$OUT/raw" "$OUT/int8.raw" > "$OUT/int8.log" 2>&1
    grep -E "^(encoder|decoder|joiner):|Elapsed|Maximum resident" "$OUT/int8.log"
fi
if [ ! -f "$OUT/int8/encoder.int8.onnx" ]; then
    rm -rf "$OUT/int8.tmp" && cp -r "$OUT/int8.raw" "$OUT/int8.tmp"
    "$PY" -m sherpa_fixed.cli prepare --in-place "$OUT/int8.tmp"
    mv "$OUT/int8.tmp" "$OUT/int8"
fi
if [ ! -f "$OUT/prepared/encoder.onnx" ]; then
    "$PY" -m sherpa_fixed.cli prepare "$OUT/raw" --output "$OUT/prepared"
fi
ls -la "$OUT"
