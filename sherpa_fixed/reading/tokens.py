"""Read tokens.txt the way sherpa-onnx does, and say what it will reject.

sherpa-onnx (symbol-table.cc, ReadTokens) takes `symbol id` per line; a
line holding one field is the id of the space symbol; a third field is a
fatal error. The NeMo recognizer then demands `<blk>` to be the last id and
the count of symbols to equal vocab_size + 1
(offline-recognizer-transducer-nemo-impl.h, PostInit).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from ..errors import BadInputError
from ..safety.bounded import read_text_bounded

BLANK = "<blk>"


@dataclass
class Tokens:
    path: Path
    symbols: dict[int, str]  # id -> symbol, first occurrence wins (as in sherpa-onnx)
    problems: list[tuple[str, str]] = field(default_factory=list)  # (code, message)

    @property
    def count(self) -> int:
        return len(self.symbols)

    @property
    def blank_id(self) -> int | None:
        return next((i for i, s in self.symbols.items() if s == BLANK), None)

    @property
    def vocab_size_without_blank(self) -> int:
        return self.count - 1 if self.blank_id is not None else self.count

    def to_json(self) -> dict:
        return {
            "path": str(self.path),
            "count": self.count,
            "blank_id": self.blank_id,
            "vocab_size_without_blank": self.vocab_size_without_blank,
            "problems": [{"code": c, "message": m} for c, m in self.problems],
        }


TOKENS_LIMIT = 64 << 20  # bytes: a million-piece vocabulary is about 20 MB; NeMo's are 1-2 thousand pieces


def read_tokens(path: str | Path) -> Tokens:
    """Parse tokens.txt; structural problems are recorded, unreadable files raise.

    Bounded by what the file can legitimately hold: at most TOKENS_LIMIT bytes, and ids at most the
    number of lines (a `x 60000000` line is a problem to report, never a range to build)."""
    path = Path(path)
    text = read_text_bounded(path, TOKENS_LIMIT, what="tokens file", why="a vocabulary file can need",
                             fix="copy tokens.txt from the export")
    if "\x00" in text:
        raise BadInputError("tokens file holds binary data", path=path, fix="re-create tokens.txt")

    symbols: dict[int, str] = {}
    by_symbol: dict[str, int] = {}
    problems: list[tuple[str, str]] = []
    for lineno, line in enumerate(text.splitlines(), 1):
        fields = line.strip().split()
        if not fields:
            continue
        if len(fields) == 1:
            sym, id_text = " ", fields[0]
        elif len(fields) == 2:
            sym, id_text = fields
        else:
            problems.append(("tokens.bad_line", f"line {lineno} has {len(fields)} fields; sherpa-onnx exits "
                             f"with 'Error: {line.strip()}'"))
            continue
        try:
            tid = int(id_text)
        except ValueError:
            problems.append(("tokens.bad_id", f"line {lineno}: id {id_text!r} is not an integer"))
            continue
        if tid in symbols:
            problems.append(("tokens.duplicate_id", f"line {lineno}: id {tid} already used by {symbols[tid]!r}"))
            continue
        if sym in by_symbol:
            problems.append(("tokens.duplicate_symbol", f"line {lineno}: symbol {sym!r} repeats id "
                             f"{by_symbol[sym]}; sherpa-onnx keeps the first"))
        else:
            by_symbol[sym] = tid
        symbols[tid] = sym

    if not symbols:
        raise BadInputError("tokens file has no tokens", path=path, fix="copy tokens.txt from the export")
    ids = sorted(symbols)
    if ids[0] < 0 or ids[-1] >= len(ids):
        missing = []
        for expected, have in zip(range(len(ids)), ids, strict=False):  # bounded by the lines, not the ids
            if have != expected:
                missing.append(expected)
                if len(missing) == 5:
                    break
        beyond = [i for i in ids if i < 0 or i >= len(ids)]
        problems.append(("tokens.gaps", f"ids are not consecutive from 0 (missing e.g. {missing}; "
                         f"{len(beyond)} id(s) outside 0..{len(ids) - 1}, e.g. {beyond[:3]})"))
    blank = by_symbol.get(BLANK)
    if blank is None:
        problems.append(("tokens.no_blank", "no <blk> token; sherpa-onnx exits with "
                         "'tokens.txt does not include the blank token <blk>'"))
    elif blank != ids[-1]:
        problems.append(("tokens.blank_not_last", f"<blk> has id {blank}, not the last id {ids[-1]}; "
                         "sherpa-onnx exits with '<blk> is not the last token!'"))
    return Tokens(path, symbols, problems)
