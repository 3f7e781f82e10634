"""What sherpa-onnx would refuse, found before it can refuse it.

sherpa-onnx reports a bad model by exit(-1) (csrc/macros.h, SHERPA_ONNX_EXIT), which would end the
whole Python process, and onnxruntime reads external weights wherever their location and offset
point. The drop-in recognizer runs these checks on the three graphs' skeletons (never a weight) and
raises one BadInputError carrying inspect's own advice instead.
"""

from __future__ import annotations

import os
from pathlib import Path

from ..errors import BadInputError
from ..reading.onnx_graph import Signature, read_signature


def preflight(encoder: str, decoder: str, joiner: str, tokens: str, graphs: list | None = None) -> Signature:
    """Raise what sherpa-onnx would refuse, before it can: it reports a bad model by exit(-1),
    which would end the whole Python process (csrc/macros.h, SHERPA_ONNX_EXIT).

    Reads the three signatures and graph skeletons only (never a weight: onnx_graph.load_graph leaves
    large inline tensors in the file); returns the encoder's signature for chunking_for.
    graphs: the three models' GraphFiles when the caller has loaded them already."""
    from ..reading.measure import measure_signatures
    from ..reading.metadata import sherpa_first_error
    from ..reading.tokens import read_tokens
    from ..safety.journal import JOURNAL

    problem = broken_weights(*(graphs or (encoder, decoder, joiner)))
    if os.path.lexists(Path(encoder).parent / JOURNAL):
        problem = (Path(encoder).parent, f"an interrupted sherpa-fixed run left this folder half-changed ({JOURNAL})")
    enc = read_signature(encoder)
    if problem is None:
        dec, joi = read_signature(decoder), read_signature(joiner)
        error = sherpa_first_error(enc.metadata, measure_signatures(enc, dec, joi), read_tokens(tokens))
        problem = (Path(encoder), f"sherpa-onnx would refuse this model: {error}") if error else None
    if problem is not None:
        from ..reading.findings import advice_for  # the advice inspect and prepare give (issue 11)

        steps = advice_for([encoder, decoder, joiner], encoder=encoder, decoder=decoder, joiner=joiner, tokens=tokens)
        raise BadInputError(problem[1], path=problem[0], fix="; ".join(steps) or None)
    return enc


def broken_weights(*models) -> tuple[Path, str] | None:
    """(model, why) for external data that resolves outside a model's folder, or that no loader can read
    (missing, cut short, at a forged offset): never handed to onnxruntime (safety/confine.py,
    external_data.BROKEN). None when every model's weights are fine.

    models: paths or already loaded GraphFiles."""
    from ..reading.external_data import audit_external_data
    from ..reading.onnx_graph import GraphFile, load_graph

    for m in models:
        g = m if isinstance(m, GraphFile) else load_graph(m)
        audit = audit_external_data(g)
        for ref, f in audit.outside:
            return g.path, f"tensor {ref.tensor!r} has external location {ref.location!r}, which {f.outside}"
        if audit.broken:  # onnxruntime would read past an end or at a forged offset (or abort)
            return g.path, audit.broken[0]
    return None
