"""Find the encoder, decoder, joiner and tokens of a model folder.

The 0.6B release layout is `encoder.onnx` (+ `encoder.weights`),
`decoder.onnx`, `joiner.onnx`, their `.int8.onnx` twins, `tokens.txt` and
optionally `bpe.vocab`. Users also hand us loose files with other names, so
a file whose name says nothing is classified by its graph's signature, the
way sherpa-onnx will use it (inputs are positional there).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

from ..errors import BadInputError
from ..safety.confine import inside
from .onnx_graph import GraphFile, load_graph

ROLES = ("encoder", "decoder", "joiner")
WEIGHT_SUFFIXES = (".weights", ".data", ".bin", ".onnx_data", ".onnx.data")

_NAME_ROLE = re.compile(r"^(encoder|decoder|joiner|joint)(?![a-z_])", re.IGNORECASE)


def variant_of(filename: str) -> str:
    """'int8' for encoder.int8.onnx, 'fp16' for .fp16.onnx, else 'fp32'."""
    low = filename.lower()
    for tag in ("int8", "fp16", "uint8", "q8"):
        if f".{tag}." in low or low.endswith(f".{tag}.onnx") or f"-{tag}." in low or f"_{tag}." in low:
            return "int8" if tag in ("int8", "uint8", "q8") else tag
    return "fp32"


def role_from_name(filename: str) -> str | None:
    m = _NAME_ROLE.match(filename)
    if not m:
        return None
    role = m.group(1).lower()
    return "joiner" if role == "joint" else role


def classify_graph(g: GraphFile) -> str:
    """Role of a graph from its signature: encoder, decoder, joiner, or why it is none.

    Returns one of ROLES, or a string starting with 'not:' that explains what
    the graph is instead (fused decoder+joint, CTC model, ...).
    """
    floats3 = [t for t in g.inputs if t.dtype.startswith("float") and t.rank == 3]
    ints2 = [t for t in g.inputs if t.dtype.startswith("int") and t.rank == 2]
    ints1 = [t for t in g.inputs if t.dtype.startswith("int") and t.rank == 1]
    names = {t.name for t in g.inputs}
    if ints2 and "encoder_outputs" in names:
        return (
            "not:a fused decoder+joint graph (NeMo's model.export() layout); sherpa-onnx needs separate "
            "decoder and joiner files: export them with asr_model.decoder.export() and asr_model.joint.export()"
        )
    if len(g.inputs) == 2 and len(floats3) == 2 and len(g.outputs) == 1 and g.outputs[0].rank == 4:
        return "joiner"
    if ints2 and floats3:
        return "decoder"
    if len(floats3) == 1 and ints1 and len(g.inputs) == 2:
        out_names = [o.name for o in g.outputs]
        if len(g.outputs) == 1 or "logprobs" in out_names:
            return (
                "not:a CTC model (encoder with log-probability output); use "
                "sherpa_onnx.OfflineRecognizer.from_nemo_ctc, not a transducer"
            )
        return "encoder"
    if ints2 and not floats3:
        return (
            "not:a stateless decoder (icefall/k2 style, no LSTM state inputs); this is not a NeMo transducer, "
            "use sherpa-onnx's model_type='transducer'"
        )
    sig = ", ".join(f"{t.name}{list(t.dims)}" for t in g.inputs)
    return f"not:no NeMo transducer graph has inputs like these ({sig})"


@dataclass
class ModelSet:
    """The three graphs sherpa-onnx loads together, e.g. the int8 set."""

    variant: str
    encoder: Path
    decoder: Path
    joiner: Path

    def paths(self) -> dict[str, Path]:
        return {"encoder": self.encoder, "decoder": self.decoder, "joiner": self.joiner}


@dataclass
class FolderLayout:
    """What a folder (or a list of loose files) holds, by role and variant."""

    root: Path
    variants: dict[str, ModelSet]
    tokens: Path | None
    bpe_vocab: Path | None
    graphs: dict[Path, GraphFile] = field(default_factory=dict, repr=False)
    other_files: list[Path] = field(default_factory=list)

    def graph(self, path: Path) -> GraphFile:
        if path not in self.graphs:
            self.graphs[path] = load_graph(path)
        return self.graphs[path]

    def all_onnx(self) -> list[Path]:
        seen: list[Path] = []
        for ms in self.variants.values():
            for p in ms.paths().values():
                if p not in seen:
                    seen.append(p)
        return seen


def _pick(candidates: list[Path], role: str, variant: str) -> Path:
    if len(candidates) == 1:
        return candidates[0]
    exact = [p for p in candidates if p.name.lower() in (f"{role}.onnx", f"{role}.{variant}.onnx")]
    if len(exact) == 1:
        return exact[0]
    names = ", ".join(sorted(p.name for p in candidates))
    raise BadInputError(
        f"several {variant} {role} files ({names})",
        path=candidates[0].parent,
        fix=f"pass the one to use explicitly, e.g. --{role} FILE",
    )


def _assemble(
    root: Path,
    found: dict[tuple[str, str], list[Path]],
    graphs: dict[Path, GraphFile],
    tokens: Path | None,
    bpe_vocab: Path | None,
    other: list[Path],
) -> FolderLayout:
    variants_with_encoder = sorted({v for (r, v) in found if r == "encoder"}, key=lambda v: v != "fp32")
    for role in ROLES:
        if not any(r == role for (r, _v) in found):
            raise BadInputError(
                f"no {role} model found",
                path=root,
                fix=f"the folder needs {role}.onnx (sherpa-onnx's NeMo transducer takes encoder, decoder and "
                "joiner files)",
            )
    variants: dict[str, ModelSet] = {}
    for v in variants_with_encoder:
        chosen = {}
        for role in ROLES:
            cands = found.get((role, v)) or found.get((role, "fp32"))
            if not cands:  # e.g. only int8 decoder beside an fp32 encoder
                cands = next(c for (r, _vv), c in found.items() if r == role)
            chosen[role] = _pick(cands, role, v)
        variants[v] = ModelSet(v, chosen["encoder"], chosen["decoder"], chosen["joiner"])
    return FolderLayout(root, variants, tokens, bpe_vocab, graphs, other)


def find_layout(
    paths: list[str | Path] | str | Path,
    *,
    encoder: str | Path | None = None,
    decoder: str | Path | None = None,
    joiner: str | Path | None = None,
    tokens: str | Path | None = None,
) -> FolderLayout:
    """Locate model files from a folder, loose files, or explicit per-role paths."""
    if isinstance(paths, (str, Path)):
        paths = [paths]
    paths = [Path(p) for p in paths]
    for p in paths:
        if not p.exists():
            raise BadInputError("not found", path=p, fix="check the path")

    graphs: dict[Path, GraphFile] = {}
    found: dict[tuple[str, str], list[Path]] = {}
    other: list[Path] = []
    tok: Path | None = Path(tokens) if tokens else None
    bpe: Path | None = None

    def add(role: str, p: Path) -> None:
        found.setdefault((role, variant_of(p.name)), []).append(p)

    def classify_file(p: Path, from_folder: bool) -> None:
        nonlocal tok, bpe
        low = p.name.lower()
        if low.endswith((".onnx", ".txt", ".vocab")):
            inside(p.parent, p, what="model file")  # refused before a byte of it is read (confine.py)
        if low.endswith(".onnx"):
            role = role_from_name(p.name)
            if role is None:
                g = graphs.setdefault(p, load_graph(p))
                role = classify_graph(g)
                if role.startswith("not:"):
                    if from_folder:
                        other.append(p)
                        return
                    raise BadInputError(role[4:], path=p)
            add(role, p)
        elif low.endswith(".txt") and "token" in low:
            tok = tok or p
        elif low == "bpe.vocab" or low.endswith(".vocab"):
            bpe = bpe or p
        else:
            other.append(p)

    root = paths[0] if paths[0].is_dir() else paths[0].parent
    for p in paths:
        if p.is_dir():
            for child in sorted(p.iterdir()):
                if child.is_file() and not child.name.startswith("."):  # hidden: ours (.sf-*) or not models
                    classify_file(child, from_folder=True)
        else:
            classify_file(p, from_folder=False)

    for role, explicit in (("encoder", encoder), ("decoder", decoder), ("joiner", joiner)):
        if explicit:
            ep = Path(explicit)
            if not ep.exists():
                raise BadInputError("not found", path=ep, fix=f"check the --{role} path")
            for key in [k for k in found if k[0] == role]:
                del found[key]
            found[(role, variant_of(ep.name))] = [ep]

    if tok is not None and not tok.exists():
        raise BadInputError("not found", path=tok, fix="check the --tokens path")
    for explicit in (encoder, decoder, joiner, tokens):
        if explicit:
            inside(Path(explicit).parent, explicit, what="model file")
    return _assemble(root, found, graphs, tok, bpe, other)
