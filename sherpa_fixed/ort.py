"""onnxruntime sessions and messages: the one place sherpa-fixed creates a session.

Below everything that runs a graph (the probe and the verifier, the
validation baseline, the positional-table proof): sessions from a file,
from bytes whose external weights live in a named folder, and onnxruntime's
long error texts cut to the node and the reason. onnxruntime is imported
only when a session is made: `inspect` and metadata-only `prepare` never
pay for it.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import TYPE_CHECKING

from .errors import BadInputError

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


def session_from_bytes(data: bytes, weights_folder: Path, *, providers: list[str] | None = None, threads: int = 1,
                       optimize: bool = True) -> onnxruntime.InferenceSession:
    """A session for a serialized graph whose external weights (bare relative names) live in weights_folder."""
    import onnxruntime as ort

    so = session_options(threads, optimize=optimize)
    so.add_session_config_entry(EXTERNAL_FOLDER_KEY, str(weights_folder))
    return ort.InferenceSession(data, so, providers=providers or ["CPUExecutionProvider"])


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
