"""The optional `[export]` extra: torch and nemo-toolkit, imported only when `export` runs.

They weigh gigabytes and pin their own versions, so the rest of sherpa-fixed
(inspect, prepare, the recognizer) never imports them; a missing extra is a
one-line error that says how to install it.
"""

from __future__ import annotations

from ..errors import BadInputError

INSTALL = ('pip install torch --index-url https://download.pytorch.org/whl/cpu (the CPU wheel; or any torch '
           'build you already have), then pip install "sherpa-fixed[export]"')


def require_extra():
    """Import and return (torch, nemo.collections.asr, nemo version); BadInputError when missing."""
    import contextlib
    import io
    import logging

    missing = []
    logging.getLogger("nv_one_logger").setLevel(logging.ERROR)
    try:
        import torch
    except ImportError:
        missing.append("torch")
        torch = None
    try:
        # NeMo's import prints telemetry and CUDA notices on stderr; an error must stay one line.
        with contextlib.redirect_stderr(io.StringIO()):
            import nemo
            import nemo.collections.asr as nemo_asr
    except ImportError as exc:
        missing.append(f"nemo-toolkit[asr] ({exc.name or exc})" if torch is not None else "nemo-toolkit[asr]")
        nemo_asr = nemo = None
    if missing:
        raise BadInputError(f"export needs the optional extra: {', '.join(missing)} not installed", fix=INSTALL)
    return torch, nemo_asr, getattr(nemo, "__version__", "?")


def has_extra() -> bool:
    import importlib.util

    return all(importlib.util.find_spec(m) is not None for m in ("torch", "nemo"))
