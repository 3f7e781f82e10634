"""Signed int8 weights that onnxruntime multiplies exactly on every CPU, VNNI or not.

onnxruntime's int8 GEMM multiplies uint8 activations (DynamicQuantizeLinear's bytes, 0..255,
zero point included) by int8 weights. Where the CPU has AVX512-VNNI or AVX-VNNI (vpdpbusd), and on
ARM64 (udot, ummla, or smull + sadalp), every product is summed exactly in 32 bits. On x86 with
AVX2 only, or AVX-512 without VNNI (Skylake-SP, Zen 1-3, Intel client cores before Alder Lake),
MLAS uses `vpmaddubsw`, which adds each pair of products a[2j]*w[2j] + a[2j+1]*w[2j+1] along K
into a SIGNED 16-BIT lane with saturation before widening (onnxruntime/core/mlas/lib/x86_64/
QgemmU8S8KernelAvx2.S, QgemmU8S8KernelAvx512Core.S, QgemvU8S8KernelAvx2.S; the packing puts rows
k..k+3 of B together, so the pairs are rows (0,1), (2,3), ...). With weights in onnxruntime's
symmetric range [-127, 127] a pair can reach 255 * 254 = 64770, twice the lane: measured on the
1.1B architecture (bench/int8_portability.py) this changes the encoder's output by 13 %, ten
times the whole int8 error; on the trained speech model, one MatMul's output by 6 %.

The cure is in the weights, so the file is safe wherever it is shipped: per output column, the
scale is chosen so that every same-sign pair has |q0| + |q1| <= 128 (255 * 128 = 32640 fits), and
single weights stay within [-127, 127]. Pairs of opposite signs cannot saturate (255 * 127 fits).
Where a column's largest pair is less than twice its largest weight (most columns of a trained
model) this keeps more resolution than onnxruntime's `reduce_range` (7-bit weights for all), which
onnxruntime documents for these CPUs; measured on the speech model: encoder error 1.08 % against
1.23 % for per-channel reduce_range and 1.06 % for per-channel without protection.
"""

from __future__ import annotations

import numpy as np

PAIR_LIMIT = 128  # 255 * 128 = 32640 <= 32767, the int16 lane of vpmaddubsw
QMAX = 127  # onnxruntime's symmetric int8 range


def _pairs(m: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Rows (0,1), (2,3), ... of a [K, N] matrix, as the kernels pair them (an odd K gets a zero row)."""
    if m.shape[0] % 2:
        m = np.concatenate([m, np.zeros((1, *m.shape[1:]), m.dtype)])
    return m[0::2], m[1::2]


def same_sign_pair_sums(q: np.ndarray) -> np.ndarray:
    """|q0| + |q1| for every kernel pair whose weights have the same sign, 0 for the others: [ceil(K/2), N]."""
    q0, q1 = _pairs(np.asarray(q, np.int32))
    return np.where(q0 * q1 > 0, np.abs(q0) + np.abs(q1), 0)


def max_pair_sum(q: np.ndarray) -> int:
    """The largest same-sign pair sum of an int8 [K, N] weight; <= PAIR_LIMIT means it cannot saturate."""
    return int(same_sign_pair_sums(q).max(initial=0))


def quantize_pairsafe(w: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Symmetric per-column int8 of a float [K, N] MatMul weight, no pair above PAIR_LIMIT: (q, scale[N]).

    w ~= q * scale[None, :]; the zero point is 0.
    """
    w = np.asarray(w, np.float32)
    if w.ndim != 2:
        raise ValueError(f"a MatMul weight is [K, N], got shape {w.shape}")
    w0, w1 = _pairs(w)
    pairs = np.where(w0 * w1 > 0, np.abs(w0) + np.abs(w1), 0).max(axis=0, initial=0)
    scale = np.maximum(np.abs(w).max(axis=0, initial=0) / QMAX, pairs / PAIR_LIMIT).astype(np.float32)
    scale[scale == 0] = 1.0
    q = np.clip(np.rint(w / scale), -QMAX, QMAX).astype(np.int32)
    # Rounding can lift a pair that was exactly at the limit by one: take one step back toward zero
    # on its larger weight (the one that rounded up by more, in all but ties).
    for _ in range(2):
        q0, q1 = _pairs(q)
        j, n = np.nonzero((q0 * q1 > 0) & (np.abs(q0) + np.abs(q1) > PAIR_LIMIT))
        if not j.size:
            break
        rows = np.where(np.abs(q0[j, n]) >= np.abs(q1[j, n]), 2 * j, 2 * j + 1)
        q[rows, n] -= np.sign(q[rows, n])
    return q.astype(np.int8), scale


__all__ = ["PAIR_LIMIT", "QMAX", "max_pair_sum", "quantize_pairsafe", "same_sign_pair_sums"]
