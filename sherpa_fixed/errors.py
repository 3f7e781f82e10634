"""Errors that carry their own exit code and a fix.

The CLI turns these into a single line on stderr; anything else escaping is
a bug in sherpa-fixed, and is reported as such rather than dressed up.
"""

from __future__ import annotations

from pathlib import Path

EXIT_OK = 0
EXIT_NEEDS_FIX = 1
EXIT_BAD_INPUT = 2


class SherpaFixedError(Exception):
    """Base class: a message naming the file, and what to do about it."""

    exit_code = EXIT_BAD_INPUT

    def __init__(self, message: str, *, path: str | Path | None = None, fix: str | None = None):
        self.path = str(path) if path is not None else None
        self.fix = fix
        self.message = message
        super().__init__(self.one_line())

    def one_line(self) -> str:
        text = f"{self.path}: {self.message}" if self.path else self.message
        if self.fix:
            text += f" ({self.fix})"
        return text.replace("\n", " ")


class BadInputError(SherpaFixedError, ValueError):
    """The input cannot be used at all: missing, corrupt, or not a NeMo transducer.

    A ValueError too, so Python callers can catch bad arguments the way they catch numpy's or
    sherpa-onnx's; the message names the argument or file."""

    exit_code = EXIT_BAD_INPUT


class NeedsFixError(SherpaFixedError):
    """The input is understood, but could not be fully fixed."""

    exit_code = EXIT_NEEDS_FIX
