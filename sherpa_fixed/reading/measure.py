"""Measure, from the graphs and tokens.txt, what the encoder metadata should say.

Every value sherpa-onnx reads from metadata that the graphs can answer is
measured here, with a note of where it came from, so a wrong `feat_dim`
copied from the 0.6B script is caught by the encoder's own input shape
rather than guessed from a model name.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from .axes import positional_encoding_limit, pre_encoder_strides
from .onnx_graph import GraphFile, all_nodes
from .tokens import Tokens


@dataclass
class Measured:
    value: int | str | bool | None
    source: str

    def to_json(self) -> dict:
        return {"value": self.value, "source": self.source}


@dataclass
class Measurements:
    """What the graphs say about the model, each value with its source."""

    values: dict[str, Measured] = field(default_factory=dict)
    conflicts: list[str] = field(default_factory=list)

    def get(self, key: str):
        m = self.values.get(key)
        return None if m is None else m.value

    def set(self, key: str, value, source: str) -> None:
        if value is not None:
            self.values[key] = Measured(value, source)

    def to_json(self) -> dict:
        return {k: v.to_json() for k, v in self.values.items()}


def _initializers(g: GraphFile) -> dict[str, list[int]]:
    return {t.name: list(t.dims) for t in g.model.graph.initializer}


def embedding_rows(decoder: GraphFile) -> tuple[int, str] | None:
    """Rows of the prediction network's embedding table: vocabulary + blank in NeMo (blank_as_pad)."""
    inits = _initializers(decoder)
    producers = {o: n for n in all_nodes(decoder.model.graph) for o in n.output}
    for node in all_nodes(decoder.model.graph):
        if node.op_type != "Gather" or not node.input:
            continue
        data = node.input[0]
        if data not in inits and data in producers and producers[data].op_type == "DequantizeLinear":
            data = producers[data].input[0]
        dims = inits.get(data)
        if dims and len(dims) == 2:
            return dims[0], f"decoder embedding {data} has {dims[0]} rows"
    return None


def count_lstm_layers(decoder: GraphFile) -> int:
    return sum(1 for n in all_nodes(decoder.model.graph) if n.op_type in ("LSTM", "GRU", "DynamicQuantizeLSTM"))


def count_encoder_layers(encoder: GraphFile) -> int | None:
    """Conformer blocks, from NeMo's node names (`/layers.N/...`)."""
    seen = set()
    pat = re.compile(r"(?:^|/)layers\.(\d+)[/.]")
    for node in all_nodes(encoder.model.graph):
        m = pat.search(node.name)
        if m:
            seen.add(int(m.group(1)))
    return (max(seen) + 1) if seen else None


def measure(
    encoder: GraphFile,
    decoder: GraphFile,
    joiner: GraphFile,
    tokens: Tokens | None,
    metadata_vocab: int | None,
) -> Measurements:
    m = Measurements()
    audio = encoder.inputs[0] if encoder.inputs else None
    if audio is not None and audio.rank == 3:
        m.set("feat_dim", audio.fixed(1), f"encoder input {audio.name} axis 1 (mel bins)")
        m.set("fixed_time", audio.fixed(2), f"encoder input {audio.name} axis 2 (time)")
        m.set("fixed_batch", audio.fixed(0), f"encoder input {audio.name} axis 0 (batch)")
    enc_out = encoder.outputs[0] if encoder.outputs else None
    if enc_out is not None and enc_out.rank == 3:
        m.set("encoder_dim", enc_out.fixed(1), f"encoder output {enc_out.name} axis 1")
    layers = count_encoder_layers(encoder)
    m.set("encoder_layers", layers, "encoder node names /layers.N/")

    strides = pre_encoder_strides(encoder)
    if strides:
        m.set("subsampling_factor", strides[0], "product of time strides: " + ", ".join(strides[1]))
    pe = positional_encoding_limit(encoder)
    if pe:
        m.set("max_output_frames", pe[0], pe[1])

    states = [t for t in decoder.inputs if t.dtype.startswith("float") and t.rank == 3]
    if states:
        s = states[0]
        m.set("pred_rnn_layers", s.fixed(0), f"decoder state input {s.name} axis 0")
        m.set("pred_hidden", s.fixed(2), f"decoder state input {s.name} axis 2")
        if any(t.fixed(1) == 1 for t in states):
            fixed = next(t for t in states if t.fixed(1) == 1)
            m.set("decoder_state_batch_fixed", True, f"decoder state input {fixed.name} has batch fixed to 1")
    lstm = count_lstm_layers(decoder)
    if lstm and m.get("pred_rnn_layers") not in (None, lstm):
        m.conflicts.append(f"decoder state says {m.get('pred_rnn_layers')} layers but the graph has {lstm} LSTMs")

    j_enc = joiner.inputs[0] if joiner.inputs else None
    j_dec = joiner.inputs[1] if len(joiner.inputs) > 1 else None
    if j_enc is not None and j_enc.rank == 3:
        m.set("joiner_encoder_dim", j_enc.fixed(1), f"joiner input {j_enc.name} axis 1")
    if j_dec is not None and j_dec.rank == 3:
        m.set("joiner_decoder_dim", j_dec.fixed(1), f"joiner input {j_dec.name} axis 1")
    j_out = joiner.outputs[0] if joiner.outputs else None
    out_size = j_out.fixed(j_out.rank - 1) if j_out is not None and j_out.rank else None
    m.set("joiner_output_size", out_size, f"joiner output {j_out.name if j_out else '?'} last axis")

    # vocab_size (NeMo count, no blank): tokens.txt first, then the decoder's embedding table,
    # then whatever metadata claims; all that disagree are reported.
    emb = embedding_rows(decoder)
    candidates: list[tuple[int, str]] = []
    if tokens is not None and tokens.blank_id is not None:
        candidates.append((tokens.vocab_size_without_blank, f"{tokens.path.name}: {tokens.count} lines minus <blk>"))
    if emb is not None:
        candidates.append((emb[0] - 1, emb[1] + " (vocabulary + blank)"))
    if metadata_vocab is not None and not candidates:
        candidates.append((metadata_vocab, "existing metadata vocab_size (nothing else to measure it by)"))
    if candidates:
        vocab, src = candidates[0]
        m.set("vocab_size", vocab, src)
        for other, osrc in candidates[1:]:
            if other != vocab:
                m.conflicts.append(f"vocab_size {vocab} from {src} disagrees with {other} from {osrc}")
        if out_size is not None:
            durations = out_size - (vocab + 1)
            if durations >= 0:
                m.set("num_durations", durations, f"joiner output {out_size} = vocab {vocab} + blank + {durations}")
                m.set("tdt", durations > 0, "joiner output wider than vocab + blank" if durations > 0
                      else "joiner output equals vocab + blank")
            else:
                m.conflicts.append(
                    f"joiner emits {out_size} classes, fewer than vocab {vocab} + blank: the joiner and "
                    f"{'tokens.txt' if tokens else 'the decoder'} come from different models"
                )
    return m



def measure_signatures(encoder, decoder, joiner) -> Measurements:
    """The measurements that need only the graphs' signatures (onnx_graph.Signature or GraphFile):
    enough to predict what sherpa-onnx will refuse, at the cost of reading a few hundred bytes."""
    m = Measurements()
    audio = encoder.inputs[0] if encoder.inputs else None
    if audio is not None and audio.rank == 3:
        m.set("feat_dim", audio.fixed(1), f"encoder input {audio.name} axis 1 (mel bins)")
    states = [t for t in decoder.inputs if t.dtype.startswith("float") and t.rank == 3]
    if states:
        m.set("pred_rnn_layers", states[0].fixed(0), f"decoder state input {states[0].name} axis 0")
        m.set("pred_hidden", states[0].fixed(2), f"decoder state input {states[0].name} axis 2")
    out = joiner.outputs[0] if joiner.outputs else None
    if out is not None and out.rank:
        m.set("joiner_output_size", out.fixed(out.rank - 1), f"joiner output {out.name} last axis")
    return m
