"""sherpa-onnx's C API on prepared folders, across the releases users pin (issue 21).

docs/c-api/decode.c is compiled with the system C compiler against (a) the installed sherpa-onnx wheel's own
c-api.h and library and (b) releases that bracket each loading change recorded in
sherpa_fixed/reading/sherpa_releases.json, each installed once with `pip install --no-deps --target` into
the pytest cache (sherpa-onnx-core, about 20 MB each). Every load runs from `/` and from the model folder
in a child process (sherpa-onnx aborts on folders it rejects), and must do what the data file says:
decode with Python's tokens, or fail the documented way. So the data file the code reads is checked
against the real releases, not only against the doc.

With no C compiler on PATH (and no $CC) the test installs one from PyPI (ziglang, `python -m ziglang cc`)
rather than skipping.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import os
import shutil
import signal
import subprocess
import sys
import wave
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import onnx
import pytest
from click.testing import CliRunner
from onnx.external_data_helper import set_external_data

from sherpa_fixed.cli import main
from sherpa_fixed.testing import torch_layout

from .conftest import NEMO_DIR, REPO

DECODE_C = REPO / "docs" / "c-api" / "decode.c"
DATA = REPO / "sherpa_fixed" / "reading" / "sherpa_releases.json"
RELEASES = json.loads(DATA.read_text())

# Each pair brackets one change in the data file: last-before / first-after.
BRACKETS = {
    "1.12.13": "TDT duration 0 read as 1",
    "1.12.14": "TDT exact; sherpa-rs' generation (onnxruntime 1.17: optimizer reads of external data fail)",
    "1.12.20": "last onnxruntime 1.17.1",
    "1.12.21": "onnxruntime 1.23.2: optimizer reads and absolute locations load (from the model folder)",
    "1.12.35": "last session from bytes: relative weights resolve against the working directory",
    "1.12.36": "session from the model path",
    "1.12.37": "last that accepts absolute locations",
    "1.12.38": "onnxruntime 1.24.4 refuses absolute locations",
    "1.13.8": "last whose C API aborts when a session cannot be created (2.0.x returns NULL)",
}


def vkey(v: str) -> tuple[int, ...]:
    return tuple(int(x) for x in v.split("."))


def epoch(version: str) -> dict:
    """The data file's epoch for a release (the newest for releases past newest_measured)."""
    for e in RELEASES["epochs"]:
        if vkey(e["first"]) <= vkey(version) <= vkey(e["last"]):
            return e
    assert vkey(version) > vkey(RELEASES["newest_measured"]), f"{version} is in no epoch"
    return RELEASES["epochs"][-1]


# ------------------------------------------------------------------------------------------- the folders

LAYOUTS = ("fp32-inline", "fp32-ext", "conv4d-ext", "absolute", "win-ext", "int8")


def _conv4d_external(src: Path, dst: Path) -> None:
    """fp32-ext with the pre-encoder's 4-D Conv weights in encoder.weights too, as at real size."""
    shutil.copytree(src, dst)
    (dst / "encoder.weights").unlink()
    m = onnx.load(str(src / "encoder.onnx"))
    skeleton = onnx.load(str(src / "encoder.onnx"), load_external_data=False)
    move = {t.name for t in skeleton.graph.initializer if t.data_location == onnx.TensorProto.EXTERNAL}
    inits = {t.name: t for t in m.graph.initializer}
    move |= {n.input[1] for n in m.graph.node if n.op_type == "Conv" and len(inits[n.input[1]].dims) == 4}
    constants = {n.name for n in skeleton.graph.node for a in n.attribute
                 if a.type == onnx.AttributeProto.TENSOR and a.t.data_location == onnx.TensorProto.EXTERNAL}
    for t in m.graph.initializer:
        if t.name in move:
            set_external_data(t, "encoder.weights")
    for n in m.graph.node:
        for a in n.attribute:
            if n.name in constants and a.type == onnx.AttributeProto.TENSOR:
                set_external_data(a.t, "encoder.weights")
    onnx.save(m, str(dst / "encoder.onnx"))


def _absolute(src: Path, dst: Path) -> None:
    shutil.copytree(src, dst)
    m = onnx.load(str(dst / "encoder.onnx"), load_external_data=False)
    tensors = list(m.graph.initializer) + [a.t for n in m.graph.node for a in n.attribute
                                           if a.type == onnx.AttributeProto.TENSOR]
    for t in tensors:
        for e in t.external_data:
            if e.key == "location":
                e.value = str((dst / "encoder.weights").resolve())
    onnx.save(m, str(dst / "encoder.onnx"))


def _cli(*args: str) -> None:
    r = CliRunner().invoke(main, list(args))
    assert r.exit_code == 0, r.output


@pytest.fixture(scope="module")
def folders(tmp_path_factory) -> dict[str, Path]:
    """Every layout from the genuine tiny TDT export, stored first as torch stores a model over 2 GiB."""
    base = tmp_path_factory.mktemp("c-api")
    src = base / "src"
    shutil.copytree(NEMO_DIR / "tdt-80", src, ignore=shutil.ignore_patterns("truth.json"))
    m = onnx.load(str(src / "encoder.onnx"))
    assert torch_layout(m, src), "the torch layout must put weights in external files"
    onnx.save(m, str(src / "encoder.onnx"))
    out = {name: base / name for name in LAYOUTS}
    _cli("prepare", str(src), "-o", str(out["fp32-ext"]), "--verify", "fast")
    _cli("prepare", str(src), "--inline", "-o", str(out["fp32-inline"]), "--verify", "fast")
    _cli("prepare", str(src), "--window", "-o", str(out["win-ext"]), "--verify", "fast")
    _cli("quantize", str(out["fp32-inline"]), "-o", str(out["int8"]))
    _conv4d_external(out["fp32-ext"], out["conv4d-ext"])
    _absolute(out["fp32-ext"], out["absolute"])
    for name in ("fp32-ext", "win-ext"):
        assert (out[name] / "encoder.weights").exists(), f"{name} must keep external weights"
    assert not (out["fp32-inline"] / "encoder.weights").exists()
    return out


@pytest.fixture(scope="module")
def wav(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("wav") / "test.wav"
    rng = np.random.default_rng(0)
    t = np.arange(48000) / 16000
    x = 0.3 * np.sin(2 * np.pi * 220 * t * (1 + 0.1 * t)) + 0.05 * rng.standard_normal(t.size)
    with wave.open(str(path), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(16000)
        w.writeframes((np.clip(x, -1, 1) * 32767).astype("<i2").tobytes())
    return path


def python_tokens(folder: Path, wav_path: Path, int8: bool) -> list[str]:
    """The installed Python sherpa-onnx's tokens, created with the model folder as working directory."""
    import sherpa_onnx

    from sherpa_fixed.decoding.session_dir import session_model_dir

    s = ".int8.onnx" if int8 else ".onnx"
    with session_model_dir(folder):
        rec = sherpa_onnx.OfflineRecognizer.from_transducer(
            encoder=str(folder / f"encoder{s}"), decoder=str(folder / f"decoder{s}"),
            joiner=str(folder / f"joiner{s}"), tokens=str(folder / "tokens.txt"), num_threads=1,
            sample_rate=16000, feature_dim=80, decoding_method="greedy_search", model_type="nemo_transducer")
    with wave.open(str(wav_path)) as w:
        x = np.frombuffer(w.readframes(w.getnframes()), dtype="<i2").astype(np.float32) / 32768
    st = rec.create_stream()
    st.accept_waveform(16000, x)
    rec.decode_stream(st)
    return list(st.result.tokens)


@pytest.fixture(scope="module")
def reference(folders, wav) -> dict[str, list[str]]:
    ref = {name: python_tokens(f, wav, name == "int8") for name, f in folders.items() if name != "absolute"}
    ref["absolute"] = ref["fp32-ext"]  # same bytes; newer releases refuse the absolute location itself
    assert all(len(t) > 10 for t in ref.values()), "random weights must emit tokens on the chirp"
    return ref


# ------------------------------------------------------------------------------------ compiler, releases

Compiler = tuple[list[str], dict[str, str]]  # argv prefix, extra environment


def _compiler(cache: Path) -> Compiler:
    """$CC, else cc/gcc/clang on PATH, else zig's clang from PyPI (installed once into the cache)."""
    if os.environ.get("CC"):
        return [os.environ["CC"]], {}
    for name in ("cc", "gcc", "clang"):
        if shutil.which(name):
            return [name], {}
    zig = cache / "ziglang"
    if not (zig / ".complete").exists():
        subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--target", str(zig), "ziglang"],
                       check=True)
        (zig / ".complete").write_text("ok")
    return [sys.executable, "-m", "ziglang", "cc"], {"PYTHONPATH": str(zig)}


def compile_decode(cc: Compiler, sherpa_dir: Path, out: Path) -> Path:
    """decode.c against one release's own header and library."""
    inc, lib = sherpa_dir / "include", sherpa_dir / "lib"
    assert (inc / "sherpa-onnx" / "c-api" / "c-api.h").exists(), f"no c-api.h under {inc}"
    argv, env = cc
    r = subprocess.run([*argv, "-O1", "-Werror=implicit-function-declaration", "-o", str(out), str(DECODE_C),
                        f"-I{inc}", f"-L{lib}", "-lsherpa-onnx-c-api", f"-Wl,-rpath,{lib}"],
                       capture_output=True, text=True, env={**os.environ, **env})
    assert r.returncode == 0, f"decode.c does not compile against {inc}:\n{r.stderr[-3000:]}"
    return out


@pytest.fixture(scope="session")
def cache(request, tmp_path_factory) -> Path:
    """$SHERPA_FIXED_RELEASES_CACHE, else the pytest cache (kept between runs), else this session's tmp."""
    given = os.environ.get("SHERPA_FIXED_RELEASES_CACHE")
    if given:
        return Path(given)
    if getattr(request.config, "cache", None) is not None:
        return Path(request.config.cache.mkdir("sherpa-releases"))
    return tmp_path_factory.mktemp("sherpa-releases")


@pytest.fixture(scope="session")
def cc(cache) -> Compiler:
    return _compiler(cache)


def installed_sherpa() -> tuple[str, Path]:
    import sherpa_onnx

    return sherpa_onnx.__version__, Path(sherpa_onnx.__file__).parent


def release_decode(version: str, cache: Path, cc: Compiler) -> Path:
    """The C example built against sherpa-onnx-core==version (installed once into the cache)."""
    d = cache / version
    if not (d / ".complete").exists():
        tmp = cache / f".{version}.tmp"
        shutil.rmtree(tmp, ignore_errors=True)
        subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--target", str(tmp),
                        f"sherpa-onnx-core=={version}"], check=True)
        shutil.rmtree(d, ignore_errors=True)
        tmp.rename(d)
        (d / ".complete").write_text("ok")
    digest = hashlib.sha256(DECODE_C.read_bytes()).hexdigest()[:12]
    exe = d / f"decode-{digest}"
    return exe if exe.exists() else compile_decode(cc, d / "sherpa_onnx", exe)


# ------------------------------------------------------------------------------------------ running

def run(exe: Path, folder: Path, wav_path: Path, cwd: Path | str, int8: bool = False) -> tuple[int, list[str], str]:
    r = subprocess.run([str(exe), str(folder), str(wav_path), *(["--int8"] if int8 else [])], cwd=cwd,
                       capture_output=True, text=True, errors="replace", timeout=120)
    tokens = [ln[len("token="):] for ln in r.stdout.splitlines() if ln.startswith("token=")]
    return r.returncode, tokens, r.stderr


def expectation(e: dict, layout: str, cwd: str) -> str | None:
    """None: loads; else a substring of the error. The rule sherpa_releases.json encodes, per layout."""
    missing = ("encoder.weights" if e["relative_external_data"] == "cwd" else None)
    if layout in ("fp32-inline", "int8"):
        return None
    if layout == "conv4d-ext" and e["optimizer_read_external"] == "fails":
        return "model_path must not be empty"
    if layout == "absolute":
        if e["absolute_locations"] == "refused":
            return "Absolute path"
        if e["absolute_locations"] == "cwd_prefixed":  # onnxruntime 1.17 joins "./" and the absolute path
            return None if cwd == "/" else "encoder.weights"
        return None
    return missing if cwd == "/" else None  # relative locations, in the main graph or a Loop body


def check_release(version: str, exe: Path, folders: dict[str, Path], wav_path: Path,
                  reference: dict[str, list[str]], compare_int8: bool) -> list[str]:
    """Every layout from both working directories; returns what disagrees with the data file."""
    e = epoch(version)
    jobs = [(name, cwd) for name in LAYOUTS for cwd in ("model", "/")]

    def one(job):
        name, cwd = job
        return job, run(exe, folders[name], wav_path, folders[name] if cwd == "model" else "/", name == "int8")

    problems = []
    with ThreadPoolExecutor(2) as pool:
        for (name, cwd), (rc, tokens, err) in pool.map(one, jobs):
            want = expectation(e, name, cwd)
            where = f"{version} {name} from {cwd}"
            if want is None:
                if rc != 0:
                    problems.append(f"{where}: expected to load, exit {rc}: {err.strip()[-300:]}")
                elif name == "int8" and not compare_int8:
                    if not tokens:  # int8 numerics differ between releases (docs/runtimes.md)
                        problems.append(f"{where}: no tokens")
                elif e["tdt"] == "exact" and tokens != reference[name]:
                    problems.append(f"{where}: {len(tokens)} tokens, not Python's {len(reference[name])}")
                elif e["tdt"] != "exact" and tokens == reference[name]:
                    problems.append(f"{where}: tdt={e['tdt']} yet the tokens equal the exact decoder's")
                continue
            expected_rc = (1,) if e["c_api_session_error"] == "null" else (-signal.SIGABRT,)
            if rc not in expected_rc or want not in err:
                problems.append(f"{where}: expected exit {expected_rc} and {want!r}, got exit {rc}: "
                                f"{err.strip()[-300:]}")
    return problems


# ------------------------------------------------------------------------------------------- the tests

def test_data_file_is_complete_and_contiguous():
    fields = {"first", "last", "measured", "onnxruntime", "session_from", "relative_external_data",
              "optimizer_read_external", "absolute_locations", "parent_locations", "loop_body_external_data",
              "rnnt", "tdt", "c_api_prefixed", "c_api_session_error", "notes"}
    allowed = {"session_from": {"bytes", "path"}, "relative_external_data": {"cwd", "model_dir"},
               "optimizer_read_external": {"fails", "loads"},
               "absolute_locations": {"cwd_prefixed", "loads", "refused"},
               "tdt": {"no_durations", "duration0_as_1", "exact"}, "rnnt": {"one_symbol_per_frame", "exact"},
               "c_api_session_error": {"abort", "null"}}
    epochs = RELEASES["epochs"]
    assert epochs[0]["first"] == RELEASES["oldest_nemo_transducer"]
    assert epochs[-1]["last"] == RELEASES["newest_measured"]
    for e in epochs:
        assert set(e) == fields, e["first"]
        for k, values in allowed.items():
            assert e[k] in values, (e["first"], k)
        assert vkey(e["first"]) <= vkey(e["last"])
        assert all(vkey(e["first"]) <= vkey(v) <= vkey(e["last"]) for v in e["measured"]), e["first"]
    for a, b in itertools.pairwise(epochs):
        assert vkey(a["last"]) < vkey(b["first"]), (a["last"], b["first"])
        assert {k: v for k, v in a.items() if k not in ("first", "last", "measured", "notes")} != \
            {k: v for k, v in b.items() if k not in ("first", "last", "measured", "notes")}, \
            f"epochs {a['first']} and {b['first']} say the same: merge them"
    assert epoch("1.12.14")["tdt"] == "exact" and epoch("1.12.13")["tdt"] != "exact"


def test_c_example_on_the_installed_wheel(folders, wav, reference, cache, cc, tmp_path):
    """(a): decode.c against the installed wheel's own c-api.h: what the data file says, Python's tokens."""
    version, sherpa_dir = installed_sherpa()
    exe = compile_decode(cc, sherpa_dir, tmp_path / "decode")
    assert check_release(version, exe, folders, wav, reference, compare_int8=True) == []


@pytest.mark.parametrize("version", list(BRACKETS))
def test_c_api_of_release(version, folders, wav, reference, cache, cc):
    """(b): each bracketing release does what sherpa_releases.json says with each layout, from `/` and the folder."""
    exe = release_decode(version, cache, cc)
    assert check_release(version, exe, folders, wav, reference, compare_int8=False) == []


def test_rejected_folders_end_the_process(folders, wav, cache, cc, tmp_path):
    """docs/c-api.md: a folder sherpa-onnx rejects does not come back as NULL from every release."""
    _, sherpa_dir = installed_sherpa()
    exe = compile_decode(cc, sherpa_dir, tmp_path / "decode")
    old = release_decode("1.12.14", cache, cc)
    raw = tmp_path / "raw"  # no sherpa-onnx metadata: exit(-1)
    shutil.copytree(NEMO_DIR / "tdt-80", raw, ignore=shutil.ignore_patterns("truth.json"))
    wrong = tmp_path / "wrong-feat-dim"  # feat_dim 128 on an 80-mel encoder: C++ exception at decode time
    shutil.copytree(folders["fp32-inline"], wrong)
    m = onnx.load(str(wrong / "encoder.onnx"))
    next(p for p in m.metadata_props if p.key == "feat_dim").value = "128"
    onnx.save(m, str(wrong / "encoder.onnx"))
    for e in (exe, old):
        rc, _, err = run(e, raw, wav, "/")
        assert rc == 255 and "does not exist in the metadata" in err, (e, rc, err[-300:])
        rc, _, err = run(e, wrong, wav, "/")
        assert rc == -signal.SIGABRT and "Got invalid dimensions for input: audio_signal" in err, (e, rc, err[-300:])
        rc, tokens, err = run(e, tmp_path / "no-such-folder", wav, "/")
        assert rc == 1 and not tokens, (e, rc, err[-300:])  # config validation fails: NULL, decode.c exits 1
