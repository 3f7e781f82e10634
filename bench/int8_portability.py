"""What an int8 encoder would compute on x86 CPUs without VNNI (issue 22, portability).

    python bench/int8_portability.py INT8_ENCODER --fp32 FP32_ENCODER [--seconds 20] [--end-to-end]
    python bench/int8_portability.py INT8_MODEL --weights-only     # worst-case pair sums of any int8 file

onnxruntime multiplies uint8 activations by int8 weights (the u8s8 GEMM that QInt8 weights
reach) with `vpmaddubsw` on AVX2 and on AVX-512 without VNNI (MLAS: QgemmU8S8KernelAvx2.S,
QgemmU8S8KernelAvx512Core.S): each pair of products a[2j]*w[2j] + a[2j+1]*w[2j+1] along K is
summed into a SIGNED 16-BIT lane with saturation before it is widened (vpmaddwd by ones). With
AVX512-VNNI / AVX-VNNI (vpdpbusd) and on ARM64 (udot/ummla/smull+sadalp) the sums are exact.
The activation bytes are the raw uint8 values of DynamicQuantizeLinear (0..255, zero point
included: the zero point is subtracted afterwards through row/column sums), so a pair can
saturate only when both weights have the same sign and |w0| + |w1| > 128 (255 * 129 > 32767).

This script measures, on the real weights and real activations (speech features from the
shared set A run through the int8 encoder itself):
- per MatMulInteger: the largest same-sign |w0|+|w1| over the kernel's pairs, the share of pairs
  that could saturate at all, the share of products that do saturate on these activations, and
  the relative error saturation adds to that MatMul's int32 result (and, beside it, the error int8
  itself makes against the fp32 MatMul, for scale);
- with --end-to-end: the whole encoder's output with every MatMulInteger emulated in numpy, exact
  and saturating, each one fed the activations the previous emulated ones produce (one onnxruntime
  run per MatMul): relative RMS difference from fp32 and between the two.

The emulated exact result must equal onnxruntime's own (this machine has VNNI, where the kernel is
exact); the script checks that first. Results go to bench/out/int8-portability-*.json.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).parent))

from common import OUT

SET = Path("/work/shared/speech/setA")
SAT_MAX, SAT_MIN = 32767, -32768


def speech_feeds(model_path: Path, seconds: float, feat_dim: int | None = None) -> list[dict]:
    """Real speech features (set A), `seconds` of them, as the encoder's feeds (one per utterance)."""
    import onnx

    from sherpa_fixed.checking.accuracy import load_set
    from sherpa_fixed.decoding.features import nemo_features

    meta = {p.key: p.value for p in onnx.load(str(model_path), load_external_data=False).metadata_props}
    fd = feat_dim or int(meta.get("feat_dim", 80))
    nt = meta.get("normalize_type", "per_feature")
    feeds, total = [], 0.0
    long = load_set(SET, "long")[0]
    for u in [long, *load_set(SET, "short")]:
        samples = u.samples[: int(16000 * min(u.seconds, seconds - total))]
        f = nemo_features(samples, fd, nt)
        feeds.append({"audio_signal": f.T[None].astype(np.float32), "length": np.array([len(f)], np.int64)})
        total += len(samples) / 16000
        if total >= seconds - 0.5:
            break
    return feeds


def pair_view(wq: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The kernel's pairs along K: rows (0,1), (2,3), ... (K padded with a zero row if odd)."""
    if wq.shape[0] % 2:
        wq = np.vstack([wq, np.zeros((1, wq.shape[1]), wq.dtype)])
    return wq[0::2].astype(np.int32), wq[1::2].astype(np.int32)


def weight_pairs(wq: np.ndarray) -> dict:
    w0, w1 = pair_view(wq)
    same = np.sign(w0) * np.sign(w1) > 0
    s = np.where(same, np.abs(w0) + np.abs(w1), np.maximum(np.abs(w0), np.abs(w1)))
    risky = same & (np.abs(w0) + np.abs(w1) > 128)
    return {"max_same_sign_pair_sum": int(s.max()), "worst_pair_product_sum": int(255 * s.max()),
            "pairs": int(s.size), "pairs_that_can_saturate": int(risky.sum()),
            "share_pairs_that_can_saturate": float(risky.mean())}


def exact_and_saturating(a: np.ndarray, zp: int, wq: np.ndarray) -> tuple[np.ndarray, np.ndarray, int]:
    """int32 results of (a - zp) @ wq, exact and as vpmaddubsw computes it; and how many pair sums saturated."""
    a2 = a.reshape(-1, a.shape[-1])
    w = wq.astype(np.float64)
    exact = a2.astype(np.float64) @ w - float(zp) * w.sum(axis=0)
    w0, w1 = pair_view(wq)
    if a2.shape[1] % 2:
        a2 = np.hstack([a2, np.zeros((a2.shape[0], 1), a2.dtype)])
    j, n = np.nonzero((np.sign(w0) * np.sign(w1) > 0) & (np.abs(w0) + np.abs(w1) > 128))
    diff = np.zeros_like(exact)
    saturated = 0
    if j.size:
        order = np.argsort(n, kind="stable")
        j, n = j[order], n[order]
        c0, c1 = w0[j, n], w1[j, n]
        cols, starts = np.unique(n, return_index=True)
        for r0 in range(0, a2.shape[0], 64):
            a_even = a2[r0:r0 + 64, 0::2].astype(np.int32)
            a_odd = a2[r0:r0 + 64, 1::2].astype(np.int32)
            p = a_even[:, j] * c0 + a_odd[:, j] * c1
            d = np.clip(p, SAT_MIN, SAT_MAX) - p
            saturated += int(np.count_nonzero(d))
            diff[r0:r0 + 64, cols] += np.add.reduceat(d, starts, axis=1)
    shape = (*a.shape[:-1], wq.shape[1])
    return exact.reshape(shape), (exact + diff).reshape(shape), saturated


def rel(a: np.ndarray, b: np.ndarray) -> float:
    d = float(np.sum((a.astype(np.float64) - b) ** 2))
    n = float(np.sum(b.astype(np.float64) ** 2))
    return (d / n) ** 0.5 if n else 0.0


def matmuls(model) -> list:
    """(node, activation tensor, weight initializer, weight scale initializer) of every MatMulInteger on constants."""
    inits = {t.name: t for t in model.graph.initializer}
    out = []
    for node in model.graph.node:
        if node.op_type == "MatMulInteger" and node.input[1] in inits:
            out.append(node)
    return out


def with_outputs(model, names: list[str]):
    import onnx

    have = {o.name for o in model.graph.output}
    for name in names:
        if name not in have:
            model.graph.output.append(onnx.helper.make_empty_tensor_value_info(name))
    return model


def session(model):
    """Unoptimised (every MatMulInteger output stays a tensor), 2 threads, quiet."""
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    so.intra_op_num_threads = 2
    so.log_severity_level = 3
    data = model if isinstance(model, str) else model.SerializeToString()
    return ort.InferenceSession(data, so, providers=["CPUExecutionProvider"])


def per_matmul(int8_path: Path, fp32_path: Path | None, feeds: list[dict]) -> list[dict]:
    import onnx
    from onnx import numpy_helper

    m = onnx.load(str(int8_path))
    inits = {t.name: t for t in m.graph.initializer}
    producers = {o: n for n in m.graph.node for o in n.output}
    nodes = matmuls(m)
    # DynamicQuantizeLinear's outputs (bytes, scale, zero point) for each MatMulInteger, and its int32 result.
    dq = {n.output[0]: producers[n.input[0]] for n in nodes}
    floats = sorted({o for q in dq.values() for o in (q.input[0], *q.output)})
    fetch = floats + [n.output[0] for n in nodes]
    sess = session(with_outputs(m, fetch))
    fp32_w = {}
    if fp32_path is not None:
        f = onnx.load(str(fp32_path))
        fp32_w = {t.name: t for t in f.graph.initializer}
    rows = []
    runs = [dict(zip(fetch, sess.run(fetch, feed), strict=True)) for feed in feeds]
    for node in nodes:
        wq = numpy_helper.to_array(inits[node.input[1]])
        if wq.dtype != np.int8:
            continue
        q = dq[node.output[0]]
        x_name = q.input[0]
        entry = {"node": node.name, "K": int(wq.shape[0]), "N": int(wq.shape[1]), **weight_pairs(wq)}
        num_sat = den = 0.0
        saturated = products = 0
        exact_ok = True
        q_num = q_den = 0.0
        w_name = node.input[1].removesuffix("_quantized")
        scale = numpy_helper.to_array(inits[w_name + "_scale"]) if w_name + "_scale" in inits else None
        for r in runs:
            x = r[x_name]
            a, a_scale, zp = r[q.output[0]], float(r[q.output[1]]), int(r[q.output[2]])
            exact, sat, n_sat = exact_and_saturating(a, zp, wq)
            exact_ok &= bool(np.array_equal(exact.astype(np.int64), r[node.output[0]].astype(np.int64)))
            num_sat += float(np.sum((sat - exact) ** 2))
            den += float(np.sum(exact ** 2))
            saturated += n_sat
            products += int(np.prod(x.shape[:-1])) * ((wq.shape[0] + 1) // 2) * wq.shape[1]
            if w_name in fp32_w and scale is not None:
                y32 = x.astype(np.float64) @ numpy_helper.to_array(fp32_w[w_name]).astype(np.float64)
                q_num += float(np.sum((exact * a_scale * scale - y32) ** 2))
                q_den += float(np.sum(y32 ** 2))
        entry.update({"emulation_equals_onnxruntime": exact_ok, "saturated_pair_sums": saturated,
                      "share_saturated": saturated / max(products, 1),
                      "saturation_rel_error": (num_sat / den) ** 0.5 if den else 0.0,
                      "int8_rel_error_vs_fp32": (q_num / q_den) ** 0.5 if q_den else None})
        rows.append(entry)
        print(json.dumps(entry), flush=True)
    return rows


def end_to_end(int8_path: Path, fp32_path: Path, feeds: list[dict]) -> dict:
    """The encoder with every MatMulInteger emulated (exact, then saturating), in graph order."""
    import onnx
    from onnx import numpy_helper

    m = onnx.load(str(int8_path))
    inits = {t.name: t for t in m.graph.initializer}
    nodes = matmuls(m)
    wqs = {n.output[0]: numpy_helper.to_array(inits[n.input[1]]) for n in nodes}
    out_name = m.graph.output[0].name
    ref = session(str(fp32_path))
    real = session(with_outputs(onnx.load(str(int8_path)), [n.output[0] for n in nodes]))
    cut = onnx.ModelProto()
    cut.CopyFrom(m)
    keep = [n for n in cut.graph.node if n.output[0] not in wqs]
    del cut.graph.node[:]
    cut.graph.node.extend(keep)
    for n in nodes:
        cut.graph.input.append(onnx.helper.make_tensor_value_info(n.output[0], onnx.TensorProto.INT32, None))
        for name in (n.input[0], n.input[2]):
            cut.graph.output.append(onnx.helper.make_empty_tensor_value_info(name))
    sess = session(cut)
    result: dict = {"matmuls": len(nodes)}
    outs = {"fp32": [], "onnxruntime": [], "exact": [], "saturating": []}
    t0 = time.perf_counter()
    for feed in feeds:
        outs["fp32"].append(ref.run(None, feed)[0])
        got = real.run([out_name] + [n.output[0] for n in nodes], feed)
        outs["onnxruntime"].append(got[0])
        first = got[1:]
        for mode in ("exact", "saturating"):
            ys = {n.output[0]: y for n, y in zip(nodes, first, strict=True)}
            for n in nodes:
                a, zp = sess.run([n.input[0], n.input[2]], {**feed, **ys})
                exact, sat, _ = exact_and_saturating(a, int(zp), wqs[n.output[0]])
                ys[n.output[0]] = (exact if mode == "exact" else sat).astype(np.int32)
            outs[mode].append(sess.run([out_name], {**feed, **ys})[0])
    cat = {k: np.concatenate([o.reshape(-1) for o in v]) for k, v in outs.items()}
    result.update({"exact_equals_onnxruntime_max_abs": float(np.abs(cat["exact"] - cat["onnxruntime"]).max()),
                   "rel_error_exact_vs_fp32": rel(cat["exact"], cat["fp32"]),
                   "rel_error_saturating_vs_fp32": rel(cat["saturating"], cat["fp32"]),
                   "rel_difference_saturating_vs_exact": rel(cat["saturating"], cat["exact"]),
                   "seconds": time.perf_counter() - t0})
    print(json.dumps(result), flush=True)
    return result


def weights_only(path: Path) -> list[dict]:
    """Worst-case pair sums of every signed int8 weight the u8s8 kernels multiply (MatMulInteger, LSTMs)."""
    import onnx
    from onnx import numpy_helper

    m = onnx.load(str(path))
    inits = {t.name: t for t in m.graph.initializer}
    rows = []
    for node in m.graph.node:
        names = []
        if node.op_type in ("MatMulInteger", "ConvInteger") and node.input[1] in inits:
            names = [node.input[1]]
        elif node.op_type == "DynamicQuantizeLSTM":
            names = [n for n in node.input[1:3] if n in inits]
        for name in names:
            w = numpy_helper.to_array(inits[name])
            if w.dtype != np.int8:
                continue
            mats = [w] if w.ndim == 2 else list(w.reshape(-1, *w.shape[-2:]))  # LSTM: [dir, K, N]
            if node.op_type == "ConvInteger":
                mats = [w.reshape(w.shape[0], -1).T]
            for q in mats:
                rows.append({"node": node.name, "weight": name, "K": int(q.shape[0]), "N": int(q.shape[1]),
                             **weight_pairs(q)})
    return rows


def summary(rows: list[dict]) -> dict:
    """Over the MatMulIntegers with signed int8 weights (none, e.g. a QUInt8 encoder: u8u8 is exact everywhere)."""
    worst = max(rows, key=lambda r: r["saturation_rel_error"]) if rows else {}
    return {"matmuls": len(rows),
            "max_same_sign_pair_sum": max((r["max_same_sign_pair_sum"] for r in rows), default=0),
            "matmuls_that_can_saturate": sum(r["pairs_that_can_saturate"] > 0 for r in rows),
            "matmuls_that_did_saturate": sum(r["saturated_pair_sums"] > 0 for r in rows),
            "share_saturated_max": max((r["share_saturated"] for r in rows), default=0.0),
            "saturation_rel_error_max": worst.get("saturation_rel_error"), "worst_node": worst.get("node"),
            "emulation_equals_onnxruntime": all(r["emulation_equals_onnxruntime"] for r in rows)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("int8", type=Path)
    ap.add_argument("--fp32", type=Path, help="the fp32 encoder (same graph before quantization) for the int8 error")
    ap.add_argument("--seconds", type=float, default=20.0, help="seconds of set A speech to run")
    ap.add_argument("--end-to-end", action="store_true")
    ap.add_argument("--name", default=None)
    ap.add_argument("--weights-only", action="store_true", help="worst-case pair sums of the weights, no activations")
    a = ap.parse_args()
    if a.weights_only:
        rows = weights_only(a.int8)
        res = {"int8": str(a.int8), "rows": rows,
               "max_same_sign_pair_sum": max((r["max_same_sign_pair_sum"] for r in rows), default=0),
               "weights_that_can_saturate": sum(r["pairs_that_can_saturate"] > 0 for r in rows),
               "weights": len(rows),
               "share_pairs_that_can_saturate": (sum(r["pairs_that_can_saturate"] for r in rows)
                                                 / max(1, sum(r["pairs"] for r in rows)))}
        OUT.mkdir(parents=True, exist_ok=True)
        (OUT / f"int8-pairs-{a.name or a.int8.stem}.json").write_text(json.dumps(res, indent=1) + "\n")
        print(json.dumps({k: v for k, v in res.items() if k != "rows"}))
        return
    feeds = speech_feeds(a.fp32 or a.int8, a.seconds)
    rows = per_matmul(a.int8, a.fp32, feeds)
    res = {"int8": str(a.int8), "fp32": str(a.fp32), "seconds": a.seconds, "summary": summary(rows), "rows": rows}
    if a.end_to_end:
        res["end_to_end"] = end_to_end(a.int8, a.fp32, feeds)
    OUT.mkdir(parents=True, exist_ok=True)
    name = a.name or a.int8.stem
    (OUT / f"int8-portability-{name}.json").write_text(json.dumps(res, indent=1) + "\n")
    print(json.dumps(res["summary"], indent=1))
    if "end_to_end" in res:
        print(json.dumps(res["end_to_end"], indent=1))


if __name__ == "__main__":
    main()
