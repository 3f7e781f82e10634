"""sherpa-onnx releases side by side, and the four ways a folder is loaded: C API, Python, C++ binary, Node.

Each release is installed once from the package registries into ROOT/VERSION/ (a `pip install --no-deps
--target` of whichever of sherpa-onnx-core, sherpa-onnx and sherpa-onnx-bin exist for it, plus
`npm install sherpa-onnx-node@VERSION` under node/ where npm has it), then docs/c-api/decode.c is compiled
against that release's own c-api.h and library. Every load runs in a child process (sherpa-onnx ends the
process on folders it rejects) and comes back as an Outcome: the tokens, or how it failed.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import textwrap
from dataclasses import asdict, dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
ROOT = Path(os.environ.get("SHERPA_RELEASES", "/work/scratch/sherpa-releases"))
DECODE_C = REPO / "docs" / "c-api" / "decode.c"
PIP_PACKAGES = ("sherpa-onnx-core", "sherpa-onnx", "sherpa-onnx-bin")
NODE_PACKAGE = "sherpa-onnx-node"
# sherpa-onnx-node's native libraries come from this package, required as "^VERSION": a fresh
# `npm install sherpa-onnx-node@V` gets the NEWEST 1.x libraries, not V's. The matrix pins both to V.
NODE_NATIVE = "sherpa-onnx-linux-x64"
TIMEOUT = 300


def vkey(version: str) -> tuple[int, ...]:
    return tuple(int(x) for x in version.split("."))


def _pip_versions(package: str) -> list[str]:
    out = subprocess.run([sys.executable, "-m", "pip", "index", "versions", package],
                         capture_output=True, text=True).stdout
    m = re.search(r"Available versions: (.*)", out)
    return sorted(m.group(1).split(", "), key=vkey) if m else []


def _npm_versions(package: str) -> list[str]:
    if not shutil.which("npm"):
        return []
    r = subprocess.run(["npm", "view", package, "versions", "--json"], capture_output=True, text=True)
    return sorted(json.loads(r.stdout), key=vkey) if r.returncode == 0 else []


def registry_index(refresh: bool = False) -> dict[str, list[str]]:
    """Which versions each package has on the registries: one look-up per package, cached in ROOT/index.json."""
    cache = ROOT / "index.json"
    if cache.exists() and not refresh:
        return json.loads(cache.read_text())
    index = {p: _pip_versions(p) for p in PIP_PACKAGES}
    index[NODE_PACKAGE] = _npm_versions(NODE_PACKAGE)
    index[NODE_NATIVE] = _npm_versions(NODE_NATIVE)
    ROOT.mkdir(parents=True, exist_ok=True)
    tmp = cache.with_suffix(".tmp")
    tmp.write_text(json.dumps(index, indent=1))
    tmp.replace(cache)
    return index


@dataclass
class Release:
    version: str
    dir: Path
    onnxruntime: str | None = None
    packages: list[str] = field(default_factory=list)
    c_api: bool = False  # decode.c compiled against this release's header
    c_api_error: str | None = None
    c_flags: list[str] = field(default_factory=list)
    python: bool = False
    binary: bool = False
    node: bool = False
    node_onnxruntime: str | None = None  # the npm package bundles its own libraries

    @property
    def lib(self) -> Path:
        return self.dir / "sherpa_onnx" / "lib"

    @property
    def include(self) -> Path:
        return self.dir / "sherpa_onnx" / "include"

    @property
    def decode(self) -> Path:
        return self.dir / "decode"

    def to_json(self) -> dict:
        d = asdict(self)
        d["dir"] = str(self.dir)
        return d


def onnxruntime_version(lib: Path) -> str | None:
    """The bundled onnxruntime's own answer (OrtGetApiBase()->GetVersionString()), read in a child process."""
    code = textwrap.dedent("""
        import ctypes, sys
        class Base(ctypes.Structure):
            _fields_ = [("GetApi", ctypes.c_void_p), ("GetVersionString", ctypes.CFUNCTYPE(ctypes.c_char_p))]
        so = ctypes.CDLL(sys.argv[1])
        so.OrtGetApiBase.restype = ctypes.POINTER(Base)
        print(so.OrtGetApiBase().contents.GetVersionString().decode())
    """)
    so = lib / "libonnxruntime.so"
    if not so.exists():
        return None
    r = subprocess.run([sys.executable, "-c", code, str(so)], capture_output=True, text=True)
    return r.stdout.strip() or None


def compile_decode(include: Path, lib: Path, out: Path, source: Path = DECODE_C) -> tuple[str | None, list[str]]:
    """gcc the C example against one release's header and library.

    Returns (None, flags) when built, else (gcc's first error, flags). Releases before 1.10.19 named the
    C functions without the SherpaOnnx prefix: the source maps them under -DSHERPA_ONNX_UNPREFIXED_API,
    tried when the prefixed names are undeclared.
    """
    cc = os.environ.get("CC", "gcc")
    error = "gcc failed"
    for flags in ([], ["-DSHERPA_ONNX_UNPREFIXED_API"]):
        cmd = [cc, "-O1", "-Wall", "-Werror=implicit-function-declaration", *flags, "-o", str(out), str(source),
               f"-I{include}", f"-L{lib}", "-lsherpa-onnx-c-api", f"-Wl,-rpath,{lib}"]
        r = subprocess.run(cmd, capture_output=True, text=True)
        if r.returncode == 0:
            return None, flags
        errors = [ln for ln in r.stderr.splitlines() if "error" in ln]
        error = (errors or r.stderr.splitlines() or [error])[0].replace(str(source.parent) + "/", "")
        if "implicit declaration" not in r.stderr:
            break
    return error, []


def node_available(version: str, index: dict[str, list[str]]) -> bool:
    return version in index.get(NODE_PACKAGE, []) and version in index.get(NODE_NATIVE, [])


def install(version: str, index: dict[str, list[str]] | None = None, node: bool = True) -> Release:
    """Install one release (cached), compile the C example against it, and say what it offers."""
    index = index or registry_index()
    d = ROOT / version
    done = d / "release.json"
    if done.exists():
        rel = Release(**{**json.loads(done.read_text()), "dir": d})
        if node and not rel.node and node_available(version, index):
            rel.node, rel.node_onnxruntime = _install_node(version, d)
            _save(rel)
        return rel
    packages = [p for p in PIP_PACKAGES if version in index.get(p, [])]
    if not packages and not (node and node_available(version, index)):
        raise SystemExit(f"sherpa-onnx {version}: no package on the registries has it")
    tmp = ROOT / f".{version}.tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    if packages:  # some releases exist only as npm packages
        r = subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--target", str(tmp),
                            *[f"{p}=={version}" for p in packages]], capture_output=True, text=True)
        if r.returncode != 0:
            raise SystemExit(f"pip could not install sherpa-onnx {version}:\n{r.stderr[-2000:]}")
    shutil.rmtree(d, ignore_errors=True)
    tmp.rename(d)
    rel = Release(version, d, packages=packages)
    rel.onnxruntime = onnxruntime_version(rel.lib)
    if (rel.include / "sherpa-onnx" / "c-api" / "c-api.h").exists() and (rel.lib / "libsherpa-onnx-c-api.so").exists():
        rel.c_api_error, rel.c_flags = compile_decode(rel.include, rel.lib, rel.decode)
        rel.c_api = rel.c_api_error is None
    # the extension sits beside the package (old wheels) or in sherpa_onnx/lib (>= 1.12.26)
    rel.python = "sherpa-onnx" in packages and any(rel.dir.glob("**/_sherpa_onnx*.so"))
    rel.binary = (rel.dir / "bin" / "sherpa-onnx-offline").exists()
    if node and node_available(version, index):
        rel.node, rel.node_onnxruntime = _install_node(version, d)
    _save(rel)
    return rel


def _install_node(version: str, d: Path) -> tuple[bool, str | None]:
    prefix = d / "node"
    shutil.rmtree(prefix, ignore_errors=True)
    r = subprocess.run(["npm", "install", "--no-audit", "--no-fund", "--no-save", "--prefix", str(prefix),
                        f"{NODE_PACKAGE}@{version}", f"{NODE_NATIVE}@{version}"], capture_output=True, text=True)
    ok = r.returncode == 0 and (prefix / "node_modules" / NODE_PACKAGE).is_dir()
    native = prefix / "node_modules" / NODE_NATIVE
    ok = ok and json.loads((native / "package.json").read_text()).get("version") == version
    return ok, onnxruntime_version(native) if ok else None


def _save(rel: Release) -> None:
    tmp = rel.dir / "release.json.tmp"
    tmp.write_text(json.dumps(rel.to_json(), indent=1))
    tmp.replace(rel.dir / "release.json")


# ---------------------------------------------------------------------------------------------- loaders

PYTHON_DRIVER = textwrap.dedent("""
    import sys, wave
    import numpy as np
    release, model, wav, int8 = sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4] == "int8"
    sys.path.insert(0, release)
    import sherpa_onnx
    s = ".int8.onnx" if int8 else ".onnx"
    rec = sherpa_onnx.OfflineRecognizer.from_transducer(
        encoder=f"{model}/encoder{s}", decoder=f"{model}/decoder{s}", joiner=f"{model}/joiner{s}",
        tokens=f"{model}/tokens.txt", num_threads=1, sample_rate=16000, feature_dim=80,
        decoding_method="greedy_search", model_type="nemo_transducer", provider="cpu")
    with wave.open(wav) as w:
        x = np.frombuffer(w.readframes(w.getnframes()), dtype="<i2").astype(np.float32) / 32768
        rate = w.getframerate()
    st = rec.create_stream()
    st.accept_waveform(rate, x)
    rec.decode_stream(st)
    r = st.result
    print(f"count={len(r.tokens)}")
    for t in r.tokens:
        print(f"token={t}")
    print(f"text={r.text}", flush=True)
""")

NODE_DRIVER = textwrap.dedent("""
    const [prefix, model, wav, kind] = process.argv.slice(2);
    const sherpa = require(prefix + '/node_modules/sherpa-onnx-node');
    const s = kind === 'int8' ? '.int8.onnx' : '.onnx';
    const rec = new sherpa.OfflineRecognizer({
      featConfig: {sampleRate: 16000, featureDim: 80},
      modelConfig: {
        transducer: {encoder: model + '/encoder' + s, decoder: model + '/decoder' + s, joiner: model + '/joiner' + s},
        tokens: model + '/tokens.txt', numThreads: 1, provider: 'cpu', debug: 0, modelType: 'nemo_transducer'},
      decodingMethod: 'greedy_search'});
    const w = sherpa.readWave(wav);
    const st = rec.createStream();
    st.acceptWaveform({samples: w.samples, sampleRate: w.sampleRate});
    rec.decode(st);
    const r = rec.getResult(st);
    const lines = ['count=' + r.tokens.length, ...r.tokens.map((t) => 'token=' + t), 'text=' + r.text];
    process.stdout.write(lines.join('\\n') + '\\n');
""")

LOADERS = ("c", "python", "binary", "node")


@dataclass
class Outcome:
    rc: int  # the child's exit status; -N: killed by signal N (-6: abort), 255: exit(-1)
    tokens: list[str] | None  # None: no result came back
    error: str | None = None  # the first line that says why

    @property
    def ok(self) -> bool:
        return self.rc == 0 and self.tokens is not None


def _driver(name: str, text: str) -> Path:
    ROOT.mkdir(parents=True, exist_ok=True)
    p = ROOT / name
    if not p.exists() or p.read_text() != text:
        tmp = p.with_suffix(".tmp")
        tmp.write_text(text)
        tmp.replace(p)
    return p


def command(rel: Release, loader: str, model: Path, wav: Path, int8: bool) -> tuple[list[str], dict[str, str]]:
    """The argv and extra environment that load `model` with `loader` of `rel`."""
    env: dict[str, str] = {}
    kind = "int8" if int8 else "fp32"
    if loader == "c":
        argv = [str(rel.decode), str(model), str(wav), *(["--int8"] if int8 else [])]
    elif loader == "python":
        argv = [sys.executable, str(_driver("driver.py", PYTHON_DRIVER)), str(rel.dir), str(model), str(wav), kind]
    elif loader == "binary":
        s = ".int8.onnx" if int8 else ".onnx"
        argv = [str(rel.dir / "bin" / "sherpa-onnx-offline"), f"--encoder={model}/encoder{s}",
                f"--decoder={model}/decoder{s}", f"--joiner={model}/joiner{s}", f"--tokens={model}/tokens.txt",
                "--model-type=nemo_transducer", "--num-threads=1", "--decoding-method=greedy_search", str(wav)]
        env["LD_LIBRARY_PATH"] = str(rel.lib)
    elif loader == "node":
        argv = ["node", str(_driver("driver.js", NODE_DRIVER)), str(rel.dir / "node"), str(model), str(wav), kind]
        # older addons find the native libraries only through LD_LIBRARY_PATH (their own error says so)
        env["LD_LIBRARY_PATH"] = str(rel.dir / "node" / "node_modules" / NODE_NATIVE)
    else:
        raise ValueError(f"loader must be one of {LOADERS}")
    return argv, env


ANSI = re.compile(r"\x1b\[[0-9;]*m")
ORT_PREFIX = re.compile(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\.\d+ \[[EW]:onnxruntime:[^\]]*\] ")
DESERIALIZE = re.compile(r"Deserialize tensor \S+ failed")  # which tensor fails first varies run to run
TIMESTAMP = re.compile(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d(\.\d+)?")
# The line that says why, best first: a C++ exception's what(), onnxruntime's session error, then anything
# that reads like an error; sherpa-onnx's config dump and the binary's progress lines are never it.
PREFERRED = (re.compile(r"what\(\):\s*(.*)"), re.compile(r"^((?:[A-Za-z]*Error): .*)"),
             re.compile(r"Exception during initialization: (.*)"),
             re.compile(r"(.*(?:Failed|failed|error|Error|ERROR|does not exist|not exist|Invalid|invalid|cannot|"
                        r"Traceback|Errors in config|Please|unsupported|Unsupported|Check failed).*)"))
PY_EXCEPTION = re.compile(r"^[A-Za-z_.]*(Error|Exception|Exit)\b")
NOISE = re.compile(r"^(OfflineRecognizerConfig\(|Creating recognizer|Started|Done|----|num threads|decoding method|"
                   r"Elapsed|Real time factor|\s*$|/.*\.wav$|recognizer created|terminate called)")


def first_error(text: str, replace: dict[str, str]) -> str | None:
    """The first line of `text` that says why a load failed, without colours, timestamps or local paths."""
    lines = [ORT_PREFIX.sub("", ANSI.sub("", ln)).strip() for ln in text.splitlines()]
    lines = [ln for ln in lines if not NOISE.match(ln)]
    hit = None
    if any(ln.startswith("Traceback") for ln in lines):  # Python: the exception, not the traceback's head
        hit = next((ln for ln in reversed(lines) if PY_EXCEPTION.match(ln)), None)
    for pattern in () if hit else PREFERRED:
        hit = next((m.group(1) for m in map(pattern.search, lines) if m), None)
        if hit:
            break
    hit = hit or (lines[-1] if lines else None)
    if hit is None:
        return None
    for old, new in replace.items():
        hit = hit.replace(old, new)
    hit = DESERIALIZE.sub("Deserialize tensor <name> failed", TIMESTAMP.sub("<time>", hit))
    return hit[:400]


def parse_tokens(loader: str, stdout: str, stderr: str) -> list[str] | None:
    if loader == "binary":  # the result is one JSON object on stdout (or stderr in old releases)
        for line in (stdout + "\n" + stderr).splitlines():
            line = line.strip()
            if line.startswith("{") and '"tokens"' in line:
                try:
                    return list(json.loads(line)["tokens"])
                except (ValueError, KeyError):
                    continue
        return None
    lines = stdout.splitlines()
    if not lines or not lines[0].startswith("count="):
        return None
    tokens = [ln[len("token="):] for ln in lines if ln.startswith("token=")]
    return tokens if len(tokens) == int(lines[0][len("count="):]) else None


def load(rel: Release, loader: str, model: Path, wav: Path, *, int8: bool = False, cwd: Path | str = "/",
         timeout: int = TIMEOUT) -> Outcome:
    """Load `model` with one loader of one release in a child process run from `cwd`; decode `wav`."""
    argv, extra = command(rel, loader, model, wav, int8)
    env = {**os.environ, **extra}
    try:
        r = subprocess.run(argv, cwd=cwd, env=env, capture_output=True, text=True, errors="replace",
                           timeout=timeout)
    except subprocess.TimeoutExpired:
        return Outcome(rc=-int(signal.SIGKILL), tokens=None, error=f"timed out after {timeout} s")
    tokens = parse_tokens(loader, r.stdout, r.stderr) if r.returncode == 0 else None
    error = None
    if tokens is None:
        error = first_error(r.stderr + "\n" + r.stdout, {str(model): "<model>", str(rel.dir): "<release>"})
    return Outcome(rc=r.returncode, tokens=tokens, error=error)
