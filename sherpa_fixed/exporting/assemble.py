"""Turn NeMo's raw export into the release layout, streaming the weights once.

torch writes a >2 GiB encoder as one external file per tensor (637 for the
1.1B) and a smaller one with every tensor inline; both become `encoder.onnx`
plus ONE `encoder.weights` (the layout of upstream's export_onnx.py, which
saves the encoder with `location="encoder.weights"`), with the tensors
onnxruntime 1.17's optimisers read kept inline (under 1 KiB, as onnx.save does,
and the float 4-D Conv weights: sherpa-onnx <= 1.12.20 fails on those external
from any folder; reading/runtimes.py). Bytes are moved by `rewriting.weights`
(`write_weights_file`: kernel copies, bounded buffers), so a 4 GB encoder
never sits in memory. The decoder and joiner are small and self-contained;
they are moved as NeMo wrote them.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

import onnx

from ..errors import BadInputError
from ..reading.onnx_graph import graph_tensors, uses_external_data
from ..reading.runtimes import optimizer_reads
from ..rewriting.weights import ONNX_THRESHOLD, WeightMove, plan_moves, set_inline, write_weights_file

WEIGHTS_NAME = "encoder.weights"

Progress = Callable[[str, int, int], None]


def _read_small(moves: list[WeightMove]) -> None:
    for mv in moves:
        with open(mv.source, "rb") as f:
            f.seek(mv.offset)
            data = f.read(mv.length)
        if len(data) != mv.length:
            raise BadInputError(f"torch's export of tensor {mv.tensor.name!r} is cut short", path=mv.source,
                                fix="the disk may be full; free space and run again")
        set_inline(mv.tensor, data)


def write_encoder(raw: Path, out_dir: Path, metadata: dict[str, str], progress: Progress | None = None) -> dict:
    """raw encoder.onnx (+ torch's external files) -> out_dir/encoder.onnx + out_dir/encoder.weights."""
    model = onnx.load(str(raw), load_external_data=False)
    del model.metadata_props[:]
    for key, value in metadata.items():
        p = model.metadata_props.add()
        p.key, p.value = key, str(value)
    external = plan_moves(model, raw)
    reads = optimizer_reads(model)  # small tensors and 4-D Conv weights stay inline (reading/runtimes.py)
    small = [mv for mv in external if reads(mv.tensor, mv.length)]
    _read_small(small)
    moves = [mv for mv in external if not reads(mv.tensor, mv.length)]
    # Inline tensors torch left in the graph (all of them below 2 GiB) join the weights file too, except
    # Constant-node values: onnx.save keeps those inline (convert_attribute=False) and so do we.
    external_ids = {id(mv.tensor) for mv in external}
    for t in model.graph.initializer:
        if id(t) not in external_ids and not uses_external_data(t) and t.HasField("raw_data") \
                and len(t.raw_data) >= ONNX_THRESHOLD and not reads(t, len(t.raw_data)):
            moves.append(WeightMove(t, None, 0, len(t.raw_data)))
    total = sum(mv.length for mv in moves)
    done = [0]

    def tick(n: int) -> None:
        done[0] += n
        if progress:
            progress("writing encoder.weights", done[0], total)

    size = write_weights_file(moves, out_dir / WEIGHTS_NAME, WEIGHTS_NAME, tick, durable=False)
    data = model.SerializeToString()
    (out_dir / "encoder.onnx").write_bytes(data)
    inline = sum(1 for t in graph_tensors(model.graph) if not uses_external_data(t))
    return {"encoder_onnx_bytes": len(data), "encoder_weights_bytes": size, "external_tensors": len(moves),
            "inline_tensors": inline, "torch_external_files": len({mv.source for mv in external})}


def move_small(raw: Path, out_dir: Path, name: str) -> int:
    """Decoder/joiner: self-contained graphs NeMo wrote; moved unchanged (refused if torch made them external)."""
    model = onnx.load(str(raw / name), load_external_data=False)
    if any(uses_external_data(t) for t in graph_tensors(model.graph)):
        raise BadInputError(f"NeMo exported {name} with external data", path=raw / name,
                            fix="a prediction network or joint over 2 GiB is not supported")
    os.replace(raw / name, out_dir / name)
    return (out_dir / name).stat().st_size


def write_tokens(vocabulary: list[str], out_dir: Path) -> int:
    """tokens.txt as upstream's export scripts write it: `piece id`, blank `<blk>` last (FACTS section 6)."""
    lines = [f"{s} {i}" for i, s in enumerate(vocabulary)]
    lines.append(f"<blk> {len(vocabulary)}")
    bad = [s for s in vocabulary if not s or any(c.isspace() for c in s)]
    if bad:
        raise BadInputError(f"vocabulary entries {bad[:3]!r} are empty or contain white space; sherpa-onnx's "
                            "tokens.txt cannot hold them", fix="only BPE/SentencePiece vocabularies are supported")
    (out_dir / "tokens.txt").write_text("\n".join(lines) + "\n", encoding="utf-8")
    return len(lines)


def write_bpe_vocab(sp, out_dir: Path) -> int:
    """bpe.vocab for sherpa-onnx hotwords: `piece score` per line, in SentencePiece id order.

    Read by ssentencepiece's LoadVocab (one token and one float per line,
    white-space separated), which sherpa-onnx builds from `bpe_vocab` for
    modified_beam_search (offline-recognizer-transducer-nemo-impl.h); the
    same content as sherpa-onnx's scripts/nemo/generate_bpe_vocab.py.
    """
    lines = [f"{sp.id_to_piece(i)}\t{sp.get_score(i)}" for i in range(sp.get_piece_size())]
    (out_dir / "bpe.vocab").write_text("\n".join(lines) + "\n", encoding="utf-8")
    return len(lines)
