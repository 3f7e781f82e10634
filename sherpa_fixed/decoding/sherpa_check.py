"""Ask real sherpa-onnx whether it loads and decodes a folder, in a child process.

sherpa-onnx reports a bad model by printing a line and calling exit(-1)
(SHERPA_ONNX_EXIT in csrc/macros.h), which would take our process down
with it. So the check runs in a child Python, which may also be another
environment's interpreter (e.g. one with sherpa-onnx 1.12.35, whose
sessions resolve relative weight paths against the working directory).
The child needs only sherpa_onnx and numpy.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

CHILD = r"""
import json, sys
import numpy as np
import sherpa_onnx
a = json.loads(sys.argv[1])
kw = dict(encoder=a["encoder"], decoder=a["decoder"], joiner=a["joiner"], tokens=a["tokens"],
          model_type="nemo_transducer", num_threads=1, provider=a.get("provider", "cpu"))
if a.get("feature_dim"):
    kw["feature_dim"] = a["feature_dim"]
r = sherpa_onnx.OfflineRecognizer.from_transducer(**kw)
rng = np.random.default_rng(a.get("seed", 0))
streams = []
for n in a["samples"]:
    s = r.create_stream()
    s.accept_waveform(16000, (rng.standard_normal(n) * 0.1).astype(np.float32))
    streams.append(s)
if len(streams) == 1:
    r.decode_stream(streams[0])
else:
    r.decode_streams(streams)
try:
    from importlib.metadata import version
    v = version("sherpa-onnx")
except Exception:
    v = getattr(sherpa_onnx, "__version__", "?")
print("@@RESULT@@" + json.dumps({"version": v, "results": [
    {"text": s.result.text, "tokens": list(s.result.tokens), "timestamps": list(s.result.timestamps)}
    for s in streams]}))
"""

_PREFIX = re.compile(r"^\S*sherpa-onnx/csrc/\S+:\w+:\d+\s+")


@dataclass
class SherpaRun:
    ok: bool
    returncode: int
    version: str | None = None
    results: list[dict] = field(default_factory=list)
    error: str | None = None  # the line sherpa-onnx / onnxruntime printed
    stderr: str = ""

    @property
    def text(self) -> str | None:
        return self.results[0]["text"] if self.results else None



def die_with_parent() -> None:
    """In the child, before exec: ask Linux to SIGKILL it when its parent dies.

    A prepare killed with -9 during verification used to leave its sherpa-onnx check running on
    (holding gigabytes and the folder's files open). Elsewhere this is a no-op.
    """
    if not sys.platform.startswith("linux"):
        return
    try:
        import ctypes
        import signal

        parent = os.getppid()
        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL)  # 1 = PR_SET_PDEATHSIG
        if os.getppid() != parent:  # the parent died before prctl took effect
            os._exit(1)
    except (OSError, AttributeError):
        pass

def error_line(stderr: str) -> str | None:
    """The meaningful line of a sherpa-onnx failure, without the source-location prefix."""
    lines = [ln.strip() for ln in stderr.splitlines() if ln.strip()]
    for ln in reversed(lines):
        if "sherpa-onnx/csrc/" in ln:
            return _PREFIX.sub("", ln)
    for ln in reversed(lines):
        if ln.startswith(("RuntimeError:", "onnxruntime", "Error")) or "Error:" in ln:
            return ln.split(":", 1)[1].strip() if ln.startswith("RuntimeError:") else ln
    return lines[-1] if lines else None


def run_sherpa(
    encoder: str | Path,
    decoder: str | Path,
    joiner: str | Path,
    tokens: str | Path,
    *,
    samples: list[int] | None = None,
    cwd: str | Path | None = None,
    python: str | None = None,
    feature_dim: int | None = None,
    provider: str = "cpu",
    timeout: float = 600,
) -> SherpaRun:
    """Load the files in stock sherpa-onnx (child process) and decode random audio."""
    args = {
        "encoder": str(encoder),
        "decoder": str(decoder),
        "joiner": str(joiner),
        "tokens": str(tokens),
        "samples": samples or [16000],
        "feature_dim": feature_dim,
        "provider": provider,
    }
    env = dict(os.environ)
    env.setdefault("OMP_NUM_THREADS", "1")
    proc = subprocess.run(
        [python or sys.executable, "-c", CHILD, json.dumps(args)],
        cwd=str(cwd) if cwd else None,
        capture_output=True,
        text=True,
        timeout=timeout,
        env=env,
        preexec_fn=die_with_parent,
    )
    marker = next((ln for ln in proc.stdout.splitlines() if ln.startswith("@@RESULT@@")), None)
    if proc.returncode == 0 and marker:
        data = json.loads(marker[len("@@RESULT@@"):])
        return SherpaRun(True, 0, data["version"], data["results"], None, proc.stderr)
    return SherpaRun(False, proc.returncode, None, [], error_line(proc.stderr) or f"exit code {proc.returncode}",
                     proc.stderr)


RECOGNIZER_CHILD = r"""
import json, sys
import numpy as np
from sherpa_fixed import OfflineRecognizer
a = json.loads(sys.argv[1])
rec = OfflineRecognizer.from_transducer(a["encoder"], a["decoder"], a["joiner"], a["tokens"],
                                        model_type="nemo_transducer", num_threads=a["threads"])
s = rec.create_stream()
s.accept_waveform(16000, np.load(a["audio"]))
rec.decode_stream(s)
r = s.result
from importlib.metadata import version
print("@@RESULT@@" + json.dumps({"version": version("sherpa-onnx"), "tokens": list(r.tokens),
      "timestamps": list(r.timestamps), "durations": list(getattr(r, "durations", []) or []),
      "windows": getattr(r, "windows", 1), "window_results": getattr(r, "window_results", None), "text": r.text}))
"""


def run_recognizer(encoder, decoder, joiner, tokens, audio_npy, *, threads: int = 1, python: str | None = None,
                   timeout: float = 3600) -> tuple[dict | None, str | None]:
    """Decode 16 kHz samples saved in audio_npy with sherpa_fixed.OfflineRecognizer in a child process.

    Returns (result, None) or (None, the error line): sherpa-onnx may exit(-1) on a model it rejects.
    """
    args = {"encoder": str(encoder), "decoder": str(decoder), "joiner": str(joiner), "tokens": str(tokens),
            "audio": str(audio_npy), "threads": threads}
    proc = subprocess.run([python or sys.executable, "-c", RECOGNIZER_CHILD, json.dumps(args)], capture_output=True,
                          text=True, timeout=timeout, preexec_fn=die_with_parent)
    marker = next((ln for ln in proc.stdout.splitlines() if ln.startswith("@@RESULT@@")), None)
    if proc.returncode == 0 and marker:
        return json.loads(marker[len("@@RESULT@@"):]), None
    tail = [ln for ln in proc.stderr.splitlines() if ln.strip()]
    own = next((ln for ln in reversed(tail) if ln.startswith("sherpa_fixed.errors.")), None)
    if own:
        return None, own.split(": ", 1)[1] if ": " in own else own
    return None, error_line(proc.stderr) or f"exit code {proc.returncode}"
