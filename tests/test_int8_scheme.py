"""quantize's fast int8 scheme (issue 22): an exact graph rewrite, weights no CPU can saturate, stock sherpa-onnx.

The speed itself is measured at full size (bench/bench_int8.py, docs/quantize.md); here: the pointwise
convolutions as MatMuls give onnxruntime the same outputs, every int8 weight is pair-safe (an emulation of
the vpmaddubsw kernel shows plain int8 would saturate and these do not), the files have the scheme's
structure and record, they are more accurate than sherpa-onnx's setting, and stock sherpa-onnx (the
installed release and 1.12.35) decodes them.
"""

from __future__ import annotations

import json
import re
from collections import Counter
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from click.testing import CliRunner
from onnx import TensorProto, helper, numpy_helper

from sherpa_fixed.cli import main
from sherpa_fixed.quantizing import quantize_folder
from sherpa_fixed.quantizing.pairsafe import PAIR_LIMIT, max_pair_sum, quantize_pairsafe
from sherpa_fixed.quantizing.pointwise import in_memory_io, is_pointwise, rewrite_pointwise
from sherpa_fixed.reading.quantization import describe

SPEECH = Path(__file__).parent / "data" / "speech" / "dynamic"


def run(model: onnx.ModelProto | Path, feed: dict) -> list[np.ndarray]:
    data = model.SerializeToString() if isinstance(model, onnx.ModelProto) else str(model)
    return ort.InferenceSession(data, providers=["CPUExecutionProvider"]).run(None, feed)


def feed_for(frames: int, seed: int = 0) -> dict:
    x = np.random.default_rng(seed).standard_normal((1, 80, frames)).astype(np.float32)
    return {"audio_signal": x, "length": np.array([frames], np.int64)}


def rel_error(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.sqrt(np.sum((a.astype(np.float64) - b) ** 2) / np.sum(b.astype(np.float64) ** 2)))


# ----------------------------------------------------------------------------- the rewrite


def test_pointwise_convs_become_matmuls_with_the_same_outputs(nemo_copy):
    """A genuine NeMo export: both pointwise convs of every layer, their Transposes cancelled, GLU's moved."""
    src, _ = nemo_copy("tdt-80")
    m = onnx.load(str(src / "encoder.onnx"))
    inits = {t.name: t for t in m.graph.initializer}
    before = Counter(n.op_type for n in m.graph.node)
    pointwise = [n.name for n in m.graph.node if is_pointwise(n, inits)]
    layers = len({n.split("/")[1] for n in pointwise})
    assert len(pointwise) == 2 * layers and layers >= 2

    report = rewrite_pointwise(m.graph, in_memory_io())
    after = Counter(n.op_type for n in m.graph.node)
    assert report.convs == len(pointwise) and report.glu_moved == layers
    assert after["Conv"] == before["Conv"] - len(pointwise)  # depthwise and subsampling convs stay
    assert after["MatMul"] == before["MatMul"] + len(pointwise)
    assert after["Transpose"] == before["Transpose"]  # two removed and two added per module
    assert not any(is_pointwise(n, {t.name: t for t in m.graph.initializer}) for n in m.graph.node)
    onnx.checker.check_model(m)
    for frames in (333, 1000):
        a = run(src / "encoder.onnx", feed_for(frames))
        b = run(m, feed_for(frames))
        np.testing.assert_array_equal(a[1], b[1])
        np.testing.assert_allclose(b[0], a[0], rtol=1e-4, atol=1e-5 * float(np.abs(a[0]).max()))


def test_rewrite_of_a_lone_pointwise_conv_adds_its_own_transposes():
    """No Transposes to cancel, no bias, a shared input: the general form; a k=3 conv is left alone."""
    rng = np.random.default_rng(1)
    w1 = numpy_helper.from_array(rng.standard_normal((6, 4, 1)).astype(np.float32), "w1")
    b1 = numpy_helper.from_array(rng.standard_normal(6).astype(np.float32), "b1")
    w2 = numpy_helper.from_array(rng.standard_normal((5, 6, 1)).astype(np.float32), "w2")
    w3 = numpy_helper.from_array(rng.standard_normal((6, 4, 3)).astype(np.float32), "w3")
    nodes = [helper.make_node("Conv", ["x", "w1", "b1"], ["h"], name="/a/Conv", kernel_shape=[1]),
             helper.make_node("Relu", ["h"], ["r"], name="/relu"),
             helper.make_node("Conv", ["r", "w2"], ["y"], name="/b/Conv"),
             helper.make_node("Conv", ["x", "w3"], ["z"], name="/c/Conv", pads=[1, 1])]
    g = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 4, "T"])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, None),
                           helper.make_tensor_value_info("z", TensorProto.FLOAT, None)], [w1, b1, w2, w3])
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])
    x = {"x": rng.standard_normal((2, 4, 7)).astype(np.float32)}
    want = run(m, x)
    report = rewrite_pointwise(m.graph, in_memory_io())
    assert (report.convs, report.transposes_added, report.transposes_removed) == (2, 4, 0)
    assert [n.name for n in m.graph.node if n.op_type == "Conv"] == ["/c/Conv"]
    got = run(m, x)
    for a, b in zip(want, got, strict=True):
        np.testing.assert_allclose(b, a, rtol=1e-5, atol=1e-5)


# ----------------------------------------------------------------------------- pair-safe weights


def vpmaddubsw_matmul(a: np.ndarray, q: np.ndarray) -> np.ndarray:
    """u8 x s8 as AVX2/AVX-512BW without VNNI computes it: pairs along K summed into saturating int16."""
    a, q = a.astype(np.int64), q.astype(np.int64)
    pairs = a[:, 0::2, None] * q[None, 0::2, :] + a[:, 1::2, None] * q[None, 1::2, :]
    return np.clip(pairs, -32768, 32767).sum(axis=1)


@pytest.mark.parametrize("kind", ["uniform", "heavy-tailed"])
def test_pairsafe_weights_cannot_saturate_where_plain_int8_does(kind):
    rng = np.random.default_rng(7)
    k, n = 64, 48
    w = (rng.uniform(-1, 1, (k, n)) if kind == "uniform" else rng.standard_t(3, (k, n))).astype(np.float32)
    w[10, 3], w[11, 3] = 2 * np.abs(w).max(), 2 * np.abs(w).max()  # a same-sign pair at the column's maximum
    plain = np.clip(np.rint(w / (np.abs(w).max(axis=0) / 127)), -127, 127).astype(np.int8)
    q, scale = quantize_pairsafe(w)
    assert max_pair_sum(plain) > PAIR_LIMIT  # the risk is real for these weights
    assert max_pair_sum(q) <= PAIR_LIMIT and np.abs(q.astype(int)).max() <= 127
    assert q.dtype == np.int8 and scale.shape == (n,) and np.all(scale >= np.abs(w).max(axis=0) / 127 * (1 - 1e-6))
    assert np.all(np.abs(q * scale - w) <= 1.0001 * scale)  # rounding, or one repair step at the limit
    a = np.full((3, k), 255, np.uint8)
    a[1] = rng.integers(0, 256, k)
    exact = a.astype(np.int64) @ q.astype(np.int64)
    np.testing.assert_array_equal(vpmaddubsw_matmul(a, q), exact)
    assert not np.array_equal(vpmaddubsw_matmul(a, plain), a.astype(np.int64) @ plain.astype(np.int64))


# ----------------------------------------------------------------------------- the files


def int8_weights(model: onnx.ModelProto) -> dict[str, np.ndarray]:
    """Every quantized weight as the kernel sees it: [K, N] (LSTM weights are stored [dir, K, N])."""
    inits = {t.name: t for t in model.graph.initializer}
    out = {}
    for node in model.graph.node:
        if node.op_type == "MatMulInteger" and node.input[1] in inits:
            out[node.input[1]] = numpy_helper.to_array(inits[node.input[1]])
        if node.op_type == "DynamicQuantizeLSTM":
            for name in node.input[1:3]:
                for d, m in enumerate(numpy_helper.to_array(inits[name])):
                    out[f"{name}[{d}]"] = m
    return out


def test_fast_scheme_structure_and_record(nemo_copy, tmp_path):
    src, _ = nemo_copy("tdt-80")
    fp32 = onnx.load(str(src / "encoder.onnx"))
    inits = {t.name: t for t in fp32.graph.initializer}
    pointwise = sum(is_pointwise(n, inits) for n in fp32.graph.node)
    matmuls = sum(n.op_type == "MatMul" and n.input[1] in inits for n in fp32.graph.node)
    result = quantize_folder(src, output=tmp_path / "q")  # the default scheme
    assert result.scheme["name"] == "fast"
    models = {r: onnx.load(str(tmp_path / "q" / f"{r}.int8.onnx")) for r in ("encoder", "decoder", "joiner")}
    enc = models["encoder"]
    ops = Counter(n.op_type for n in enc.graph.node)
    assert ops["MatMulInteger"] == matmuls + pointwise and "ConvInteger" not in ops
    assert ops["Conv"] == sum(n.op_type == "Conv" for n in fp32.graph.node) - pointwise
    assert "DynamicQuantizeLSTM" in Counter(n.op_type for n in models["decoder"].graph.node)
    layers = len({n.name.split("/")[1] for n in fp32.graph.node if n.name.startswith("/layers.")})
    for role, m in models.items():
        weights = int8_weights(m)
        assert weights, role
        q_inits = {t.name: t for t in m.graph.initializer}
        users = {n.input[1]: n.name for n in m.graph.node if n.op_type == "MatMulInteger"}
        unsigned = [name for name, q in weights.items() if q.dtype == np.uint8]
        # The attention's value and output projections keep 8-bit weights as uint8 (u8u8: exact everywhere).
        assert all(re.search(r"/self_attn/linear_(v|out)/", users[name]) for name in unsigned)
        assert len(unsigned) == (2 * layers if role == "encoder" else 0)
        for name, q in weights.items():
            assert q.dtype == np.int8 or name in unsigned, name
            assert q.dtype == np.uint8 or max_pair_sum(q) <= PAIR_LIMIT, name
        for node in m.graph.node:
            if node.op_type == "MatMulInteger" and node.input[1] in q_inits:
                zp = numpy_helper.to_array(q_inits[node.input[3]])
                assert zp.shape == (q_inits[node.input[1]].dims[1],)  # per column
                assert node.input[1] in unsigned or not zp.any()  # signed ones symmetric
        d = describe(m)
        assert d["int8_scheme"] == "fast" and d["exact_on_every_cpu"] is True, (role, d)
        assert d["by"]["scheme"] == "fast" and d["by"]["pair_safe"] and d["by"]["max_pair_sum"] <= PAIR_LIMIT
    assert describe(enc)["by"]["convs_as_matmul"] == pointwise
    assert describe(enc)["by"]["uint8_weights"] == 2 * layers


def test_fast_scheme_beats_sherpa_onnx_accuracy_and_stock_sherpa_onnx_decodes_it(tmp_path, old_sherpa_python):
    """The trained speech model: encoder error against fp32 below the release setting's; 2.0.x and 1.12.35 decode."""
    from sherpa_fixed.decoding.sherpa_check import run_sherpa

    for scheme in ("fast", "sherpa-onnx"):
        quantize_folder(SPEECH, output=tmp_path / scheme, scheme=scheme)
    feeds = [feed_for(400, 1), feed_for(1200, 2)]
    ref = [run(SPEECH / "encoder.onnx", f)[0] for f in feeds]
    err = {s: rel_error(np.concatenate([run(tmp_path / s / "encoder.int8.onnx", f)[0].ravel() for f in feeds]),
                        np.concatenate([r.ravel() for r in ref])) for s in ("fast", "sherpa-onnx")}
    assert err["fast"] < 0.6 * err["sherpa-onnx"] and err["fast"] < 0.03, err
    q = (tmp_path / "fast").resolve()
    files = [q / f"{r}.int8.onnx" for r in ("encoder", "decoder", "joiner")]
    for python in (None, old_sherpa_python):
        r = run_sherpa(*files, q / "tokens.txt", samples=[16000 * 4], cwd=q, python=python)
        assert r.ok, (python, r.error)


def test_inspect_names_the_scheme_of_each_file(nemo_copy, tmp_path):
    """Ours by their record; onnxruntime's own quantize_dynamic (sherpa-onnx's releases) by their operators."""
    from onnxruntime.quantization import QuantType, quantize_dynamic

    from sherpa_fixed.reading.inspector import inspect_folder

    src, _ = nemo_copy("rnnt-80")
    quantize_folder(src, in_place=True)
    report = inspect_folder(src)
    doc = report.to_json()
    int8 = next(v for v in doc["variants"] if v["name"] == "int8")
    assert {r: m["quantization"]["int8_scheme"] for r, m in int8["models"].items()} == dict.fromkeys(
        ("encoder", "decoder", "joiner"), "fast")
    res = CliRunner().invoke(main, ["inspect", str(src)])
    assert "int8 scheme: encoder fast (exact on every CPU), decoder fast (exact on every CPU)" in res.output
    for role, qtype in (("encoder", QuantType.QUInt8), ("decoder", QuantType.QInt8)):
        out = tmp_path / f"{role}.onnx"
        quantize_dynamic(str(src / f"{role}.onnx"), str(out), weight_type=qtype)
        d = describe(onnx.load(str(out)))
        assert d["int8_scheme"] == "sherpa-onnx" and "operators" in d["int8_scheme_from"]
        assert d["exact_on_every_cpu"] is (role == "encoder")  # uint8 weights: u8u8, exact everywhere
        assert ("portability" in d) is (role == "decoder")


def test_cli_scheme_option(nemo_copy, tmp_path):
    src, _ = nemo_copy("tdt-80")
    runner = CliRunner()
    res = runner.invoke(main, ["quantize", str(src), "-o", str(tmp_path / "q"), "--scheme", "sherpa-onnx", "--json"])
    assert res.exit_code == 0, res.output
    doc = json.loads(res.output)
    assert doc["scheme"]["name"] == "sherpa-onnx" and doc["scheme"]["weight_type"]["encoder"] == "QUInt8"
    assert describe(onnx.load(str(tmp_path / "q" / "encoder.int8.onnx")))["int8_scheme"] == "sherpa-onnx"
    res = runner.invoke(main, ["quantize", str(src), "-o", str(tmp_path / "r"), "--scheme", "fastest"])
    assert res.exit_code == 2 and "fastest" in res.output and not (tmp_path / "r").exists()
