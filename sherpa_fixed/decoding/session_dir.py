"""Create sherpa-onnx sessions so relative weight paths resolve in every build.

sherpa-onnx >= 1.12.36 desktop builds create sessions from the model path,
so a relative external-data location resolves against the model's folder.
Older builds, and every build loading from Android/HarmonyOS assets, read
the file into memory first; onnxruntime then resolves relative locations
against the process's working directory (FACTS.md section 3). Setting the
working directory to the model folder while the recognizer is created
makes both work. The working directory is process-wide, so the switch is
serialised by a lock; other threads doing relative-path file I/O during
session creation would see the model folder as their working directory.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from ..errors import BadInputError

_LOCK = threading.RLock()


@contextmanager
def session_model_dir(folder: str | os.PathLike | None) -> Iterator[None]:
    """Run the body with the working directory set to `folder` (no-op for None), under a lock."""
    if folder is None:
        yield
        return
    folder = Path(folder)
    if not folder.is_dir():
        raise BadInputError("model folder not found", path=folder)
    with _LOCK:
        old = os.getcwd()
        os.chdir(folder)
        try:
            yield
        finally:
            os.chdir(old)


def weights_folder(*models) -> Path | None:
    """The one folder whose relative weight paths must resolve, or None when no model has external data.

    models: paths, or GraphFiles the caller has loaded already (the recognizer loads each graph
    once per load). Paths must be absolute before the working directory changes; callers pass
    absolute paths to sherpa-onnx inside the context.
    """
    from ..reading.external_data import external_refs
    from ..reading.onnx_graph import GraphFile, load_graph

    folders = set()
    for m in models:
        g = m if isinstance(m, GraphFile) else load_graph(Path(os.path.abspath(m)))
        p = Path(os.path.abspath(g.path))  # not resolve(): relative weights resolve beside the link
        refs, _ = external_refs(g)
        if any(not os.path.isabs(r.location) for r in refs):
            folders.add(p.parent)
    if len(folders) > 1:
        raise BadInputError("models with relative external weights sit in different folders: "
                            + ", ".join(sorted(map(str, folders))),
                            fix="put encoder, decoder and joiner with their weight files in one folder")
    return folders.pop() if folders else None
