"""onnxruntime sessions for graphs we have edited in memory.

Probing and verification run a modified copy of a graph whose weights stay
in the user's folder. The copy is handed to onnxruntime as bytes, with
`session.model_external_initializers_file_folder_path` pointing at the
weights' folder, so nothing is written next to the user's model and no
weights are copied. Locations that onnxruntime >= 1.28 refuses (absolute,
`..`) are rewritten in the copy to bare names in their real folder.
"""

from __future__ import annotations

import copy
import os
import re
from pathlib import Path
from typing import TYPE_CHECKING

from ..errors import BadInputError
from ..reading.confine import outside_reason
from ..reading.external_data import resolve_location
from ..reading.onnx_graph import external_info, graph_tensors, uses_external_data
from ..reading.protos import ModelProto

if TYPE_CHECKING:
    import onnxruntime

EXTERNAL_FOLDER_KEY = "session.model_external_initializers_file_folder_path"


def session_options(threads: int = 1, quiet: bool = True, optimize: bool = True):
    import onnxruntime as ort  # imported when a session is needed: inspect and prepare rarely need one

    so = ort.SessionOptions()
    if not optimize:
        # Exact arithmetic comparisons: the optimiser fuses, and weight prepacking picks other GEMM
        # kernels, differently inside Loop bodies (measured: 4e-6 apart with prepacking, 0 without).
        so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
        so.add_session_config_entry("session.disable_prepacking", "1")
    so.intra_op_num_threads = threads
    so.inter_op_num_threads = 1
    if quiet:
        so.log_severity_level = 4
    return so


def providers_for(provider: str) -> list[str]:
    import onnxruntime as ort

    if provider == "cuda":
        if "CUDAExecutionProvider" not in ort.get_available_providers():
            raise BadInputError(
                "provider 'cuda' asked for, but this onnxruntime has no CUDAExecutionProvider",
                fix="pip install 'sherpa-fixed[gpu]' (onnxruntime-gpu) on a machine with CUDA, or use cpu",
            )
        return ["CUDAExecutionProvider", "CPUExecutionProvider"]
    return ["CPUExecutionProvider"]


def relocatable_copy(model: ModelProto, model_path: Path) -> tuple[ModelProto, Path]:
    """A copy whose external locations are bare names inside one folder, and that folder."""
    model = copy.deepcopy(model)
    folder: Path | None = None
    for t in graph_tensors(model.graph):
        if not uses_external_data(t):
            continue
        loc = external_info(t).get("location", "")
        outside = outside_reason(model_path.parent, resolve_location(model_path, loc))
        if outside is not None:  # the copy must never be a way to read what the original may not (confine.py)
            raise BadInputError(f"tensor {t.name!r} has external location {loc!r}, which {outside}",
                                path=model_path, fix="sherpa-fixed reads only files inside the model folder")
        real = resolve_location(model_path, loc).resolve()
        if folder is None:
            folder = real.parent
        if real.parent != folder:
            # Several folders: keep relative paths against the model folder where possible.
            folder = model_path.parent.resolve()
            continue
        for e in t.external_data:
            if e.key == "location":
                e.value = real.name
    return model, (folder or model_path.parent.resolve())


def session_from_model(
    model: ModelProto,
    model_path: Path,
    *,
    providers: list[str] | None = None,
    threads: int = 1,
    optimize: bool = True,
) -> onnxruntime.InferenceSession:
    """Create a session for an in-memory (possibly edited) graph whose weights live beside model_path."""
    import onnxruntime as ort

    relocated, folder = relocatable_copy(model, model_path)
    so = session_options(threads, optimize=optimize)
    so.add_session_config_entry(EXTERNAL_FOLDER_KEY, str(folder))
    return ort.InferenceSession(relocated.SerializeToString(), so, providers=providers or ["CPUExecutionProvider"])


def session_from_path(path: str | os.PathLike, *, providers: list[str] | None = None, threads: int = 1,
                      optimize: bool = True):
    import onnxruntime as ort

    return ort.InferenceSession(str(path), session_options(threads, optimize=optimize),
                                providers=providers or ["CPUExecutionProvider"])


def first_line(exc: BaseException) -> str:
    """onnxruntime errors are long; the node and the reason are what a user needs.

    '[ONNXRuntimeError] : 1 : FAIL : Non-zero status code returned while running
    Mul node. Name:'/pre_encode/conv/Mul_3' Status Message: /onnxruntime_src/...h:583
    void ...(...) axis == 1 || axis == largest was false. Attempting to broadcast ...'
    becomes "node /pre_encode/conv/Mul_3: Attempting to broadcast ...".
    """
    text = " ".join(str(exc).split())
    node = re.search(r"Name:'([^']*)'", text)
    if "Status Message:" in text:
        msg = text.split("Status Message:", 1)[1]
        msg = re.sub(r"\S+\.(?:h|cc|cpp):\d+\s+", "", msg)
        if " was false. " in msg:
            msg = msg.split(" was false. ", 1)[1]
        msg = re.sub(r"^\S+\s+\S+::\S+\([^)]*\)\s*", "", msg.strip())
        text = (f"node {node.group(1)}: " if node else "") + msg.strip()
    else:
        text = re.sub(r"^\[ONNXRuntimeError\] : \d+ : \w+ : ", "", text)
    return (text or type(exc).__name__)[:300]
