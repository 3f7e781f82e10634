"""The folder layouts of the runtime matrix, all made from one tiny genuine NeMo export.

The sources are tests/data/nemo/tdt-80 (dynamic) and tdt-80-static800 (static-shape), with their
encoders first stored the way torch.onnx stores a model over 2 GiB (one file per large tensor, the
positional table's Constant external: sherpa_fixed.testing.torch_layout), because that is what the
real 0.6B/1.1B fp32 exports look like. Every prepared layout is then made by the sherpa-fixed CLI,
exactly as a user would make it. Two layouts are not sherpa-fixed output but what other tools write
(onnx's own external-data saver with size_threshold=0, and an absolute location), so the matrix can
say what each release does with them too.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import wave
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx
from onnx.external_data_helper import set_external_data

from sherpa_fixed.testing import make_hf_snapshot, torch_layout

REPO = Path(__file__).resolve().parents[2]
NEMO = REPO / "tests" / "data" / "nemo"
CLI = str(Path(sys.executable).parent / "sherpa-fixed")


@dataclass(frozen=True)
class Layout:
    name: str
    how: str  # the command or tool that made it
    # "none"; "relative": prepare's (tensors >= 1 KiB and not 4-D Conv weights external); "conv4d": also 4-D
    # Conv weights (as torch stores a real 0.6B/1.1B pre-encoder); "small": every tensor; "absolute" locations
    external: str
    loop: bool = False  # encoder weights live inside an ONNX Loop body (prepare --window)
    int8: bool = False


LAYOUTS = (
    Layout("fp32-ext", "prepare -o", "relative"),
    Layout("fp32-inline", "prepare --inline -o", "none"),
    Layout("int8", "quantize -o", "none", int8=True),
    Layout("conv4d-ext", "fp32-ext with the pre-encoder's 4-D Conv weights external too", "conv4d"),
    Layout("all-ext", "onnx.save(size_threshold=0) of fp32-ext", "small"),
    Layout("absolute", "fp32-ext with absolute locations", "absolute"),
    Layout("escaping", "fp32-ext with locations '../<folder>/encoder.weights'", "escaping"),
    Layout("hf-cache", "fp32-ext in a Hugging Face cache (files are relative symlinks to ../../blobs/)", "relative"),
    Layout("win-static-ext", "prepare --window -o (static 800)", "relative", loop=True),
    Layout("win-static-inline", "prepare --window --inline -o (static 800)", "none", loop=True),
    Layout("win-dyn-ext", "prepare --window -o (dynamic)", "relative", loop=True),
    Layout("win-dyn-inline", "prepare --window --inline -o (dynamic)", "none", loop=True),
    Layout("max600-ext", "prepare --max-seconds 600 -o", "relative"),
    Layout("max600-inline", "prepare --max-seconds 600 --inline -o", "none"),
    Layout("rnnt-inline", "prepare --inline -o (the RNNT export, rnnt-80)", "none"),
)
BY_NAME = {lay.name: lay for lay in LAYOUTS}


def write_wav(path: Path, seconds: float = 10.0, seed: int = 0) -> Path:
    """A deterministic 16 kHz 16-bit mono WAV (a chirp plus noise): random weights emit tokens on it."""
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * 16000)) / 16000
    x = 0.3 * np.sin(2 * np.pi * 220 * t * (1 + 0.1 * t)) + 0.05 * rng.standard_normal(t.size)
    tmp = path.with_suffix(".tmp")
    with wave.open(str(tmp), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(16000)
        w.writeframes((np.clip(x, -1, 1) * 32767).astype("<i2").tobytes())
    tmp.replace(path)
    return path


def torch_source(src: Path, dst: Path) -> Path:
    """Copy a genuine export and store its encoder as torch.onnx does over 2 GiB."""
    shutil.copytree(src, dst, ignore=shutil.ignore_patterns("truth.json"))
    m = onnx.load(str(dst / "encoder.onnx"))
    torch_layout(m, dst)
    onnx.save(m, str(dst / "encoder.onnx"))
    return dst


def cli(*args: str) -> None:
    r = subprocess.run([CLI, *args], capture_output=True, text=True)
    if r.returncode != 0:
        raise RuntimeError(f"sherpa-fixed {' '.join(args)} failed ({r.returncode}):\n{r.stdout}\n{r.stderr}")


def _tensors_with_data(g: onnx.GraphProto):
    yield from g.initializer
    for node in g.node:
        for a in node.attribute:
            if a.type == onnx.AttributeProto.TENSOR:
                yield a.t
            elif a.type == onnx.AttributeProto.GRAPH:
                yield from _tensors_with_data(a.g)


def all_external(src: Path, dst: Path) -> None:
    """fp32-ext re-saved by onnx with every initializer external (size_threshold=0), as onnx tools do."""
    shutil.copytree(src, dst)
    (dst / "encoder.weights").unlink()
    m = onnx.load(str(src / "encoder.onnx"))  # with its external data
    onnx.save(m, str(dst / "encoder.onnx"), save_as_external_data=True, all_tensors_to_one_file=True,
              location="encoder.weights", size_threshold=0)


def conv4d_weights(m: onnx.ModelProto) -> set[str]:
    """Names of the 4-D Conv weight initializers: the pre-encoder's 2-D convolutions in a NeMo FastConformer."""
    inits = {t.name: t for t in m.graph.initializer}
    return {n.input[1] for n in m.graph.node
            if n.op_type == "Conv" and n.input[1] in inits and len(inits[n.input[1]].dims) == 4}


def conv4d_external(src: Path, dst: Path) -> None:
    """fp32-ext with the 4-D Conv weights moved into encoder.weights as well.

    At real size (256 channels) torch stores these weights externally and prepare keeps them there; in the
    tiny export they are under torch's 1024-element cut and stay inline. onnxruntime 1.17's NCHWc
    transformer reads them while optimising, which fails for a model created from bytes.
    """
    shutil.copytree(src, dst)
    (dst / "encoder.weights").unlink()
    m = onnx.load(str(src / "encoder.onnx"))  # with its external data
    skeleton = onnx.load(str(src / "encoder.onnx"), load_external_data=False)
    external = {t.name for t in skeleton.graph.initializer if t.data_location == onnx.TensorProto.EXTERNAL}
    move = external | conv4d_weights(m)
    for t in m.graph.initializer:
        if t.name in move:
            set_external_data(t, "encoder.weights")
    constants = {n.name for n in skeleton.graph.node for a in n.attribute
                 if a.type == onnx.AttributeProto.TENSOR and a.t.data_location == onnx.TensorProto.EXTERNAL}
    for node in m.graph.node:  # the positional table's Constant stays external, as in fp32-ext
        for a in node.attribute:
            if node.name in constants and a.type == onnx.AttributeProto.TENSOR:
                set_external_data(a.t, "encoder.weights")
    onnx.save(m, str(dst / "encoder.onnx"))  # writes every tensor marked external to encoder.weights


def relocate(src: Path, dst: Path, location: Callable[[Path], str]) -> None:
    """fp32-ext with every external location rewritten (absolute: what some converters write; '../x/': what
    tools that store paths relative to a parent write)."""
    shutil.copytree(src, dst)
    m = onnx.load(str(dst / "encoder.onnx"), load_external_data=False)
    target = location(dst)
    for t in _tensors_with_data(m.graph):
        for e in t.external_data:
            if e.key == "location":
                e.value = target
    onnx.save(m, str(dst / "encoder.onnx"))


def hf_cache(src: Path, dst: Path) -> None:
    """fp32-ext as a Hugging Face cache holds it: dst is a link to the snapshot folder, whose files are relative
    symlinks to ../../blobs/SHA (FACTS.md section 11)."""
    tmp = dst.parent / f"{dst.name}.folder"
    shutil.copytree(src, tmp)
    snapshot = make_hf_snapshot(tmp, dst.parent / f"{dst.name}.cache")
    dst.symlink_to(snapshot.relative_to(dst.parent))


def build(work: Path, names: list[str] | None = None) -> dict[str, Path]:
    """Write every layout under work/layouts/ (fresh each time) and return name -> folder."""
    base = work / "layouts"
    shutil.rmtree(base, ignore_errors=True)
    base.mkdir(parents=True)
    dyn = torch_source(NEMO / "tdt-80", base / "src-dynamic")
    static = torch_source(NEMO / "tdt-80-static800", base / "src-static")
    rnnt = torch_source(NEMO / "rnnt-80", base / "src-rnnt")
    want = set(names or BY_NAME)
    need = set(want)
    if want & {"int8", "all-ext", "absolute", "conv4d-ext", "escaping", "hf-cache"}:
        need.add("fp32-ext")
    steps = {
        "fp32-ext": lambda o: cli("prepare", str(dyn), "-o", str(o)),
        "fp32-inline": lambda o: cli("prepare", str(dyn), "--inline", "-o", str(o)),
        "int8": lambda o: cli("quantize", str(base / "fp32-ext"), "-o", str(o)),
        "conv4d-ext": lambda o: conv4d_external(base / "fp32-ext", o),
        "all-ext": lambda o: all_external(base / "fp32-ext", o),
        "absolute": lambda o: relocate(base / "fp32-ext", o, lambda d: str((d / "encoder.weights").resolve())),
        "escaping": lambda o: relocate(base / "fp32-ext", o, lambda d: f"../{d.name}/encoder.weights"),
        "hf-cache": lambda o: hf_cache(base / "fp32-ext", o),
        "win-static-ext": lambda o: cli("prepare", str(static), "--window", "-o", str(o)),
        "win-static-inline": lambda o: cli("prepare", str(static), "--window", "--inline", "-o", str(o)),
        "win-dyn-ext": lambda o: cli("prepare", str(dyn), "--window", "-o", str(o)),
        "win-dyn-inline": lambda o: cli("prepare", str(dyn), "--window", "--inline", "-o", str(o)),
        "max600-ext": lambda o: cli("prepare", str(dyn), "--max-seconds", "600", "-o", str(o)),
        "max600-inline": lambda o: cli("prepare", str(dyn), "--max-seconds", "600", "--inline", "-o", str(o)),
        "rnnt-inline": lambda o: cli("prepare", str(rnnt), "--inline", "-o", str(o)),
    }
    out = {}
    for lay in LAYOUTS:  # in order: fp32-ext before what is made from it
        if lay.name in need:
            steps[lay.name](base / lay.name)
            (base / lay.name / "truth.json").unlink(missing_ok=True)  # not part of a real folder
            if lay.name in want:  # hf-cache: the snapshot folder itself, as huggingface_hub returns it
                out[lay.name] = (base / lay.name).resolve() if lay.name == "hf-cache" else base / lay.name
    return out


# Folders sherpa-onnx rejects, to record HOW each release rejects them through the C API.
BAD = {
    "no-metadata": "the raw NeMo export (no sherpa-onnx metadata in the encoder)",
    "wrong-feat-dim": "fp32-inline with feat_dim metadata 128 on an 80-mel encoder",
    "missing-weights": "fp32-ext without its encoder.weights",
    "no-folder": "a folder that does not exist",
}


def set_metadata(path: Path, key: str, value: str) -> None:
    m = onnx.load(str(path), load_external_data=False)
    entry = next((p for p in m.metadata_props if p.key == key), None) or m.metadata_props.add()
    entry.key, entry.value = key, value
    onnx.save(m, str(path))


def build_bad(work: Path, good: dict[str, Path]) -> dict[str, Path]:
    """Write the rejected folders under work/layouts/bad/ from the good layouts (fp32-ext, fp32-inline)."""
    base = work / "layouts" / "bad"
    shutil.rmtree(base, ignore_errors=True)
    base.mkdir(parents=True)
    shutil.copytree(NEMO / "tdt-80", base / "no-metadata", ignore=shutil.ignore_patterns("truth.json"))
    shutil.copytree(good["fp32-inline"], base / "wrong-feat-dim")
    set_metadata(base / "wrong-feat-dim" / "encoder.onnx", "feat_dim", "128")
    shutil.copytree(good["fp32-ext"], base / "missing-weights")
    (base / "missing-weights" / "encoder.weights").unlink()
    return {name: base / name for name in BAD}  # no-folder is never made
