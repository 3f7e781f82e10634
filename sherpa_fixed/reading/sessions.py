"""Run an in-memory (possibly edited) copy of a graph whose weights stay in the user's folder.

Probing and verification run a modified copy of a graph. The copy is handed
to onnxruntime as bytes, with its external weights' folder named
(ort.session_from_bytes), so nothing is written next to the user's model
and no weights are copied. Locations that onnxruntime >= 1.28 refuses
(absolute, `..`) are rewritten in the copy to bare names in their real
folder, and a location outside the model folder is refused as everywhere
else (safety/confine.py): the copy is no way around confinement.
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import TYPE_CHECKING

from ..errors import BadInputError
from ..ort import session_from_bytes
from ..safety.confine import outside_reason
from .external_data import resolve_location
from .onnx_graph import external_info, graph_tensors, uses_external_data
from .protos import ModelProto

if TYPE_CHECKING:
    import onnxruntime


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
    relocated, folder = relocatable_copy(model, model_path)
    return session_from_bytes(relocated.SerializeToString(), folder, providers=providers, threads=threads,
                              optimize=optimize)
