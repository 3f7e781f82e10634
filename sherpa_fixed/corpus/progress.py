"""Progress of a corpus run: files, audio hours, real-time factor and ETA, as data and as a terminal line."""

from __future__ import annotations

import sys
import time
from dataclasses import dataclass
from typing import TextIO


@dataclass
class ProgressState:
    files_done: int  # this run
    files_todo: int  # this run, in all
    failed: int
    audio_done: float  # seconds decoded this run
    audio_todo: float | None  # seconds to decode this run, when every file's duration is declared
    bytes_done: int
    bytes_todo: int
    elapsed: float  # wall seconds since decoding started

    @property
    def real_time_factor(self) -> float | None:
        return self.elapsed / self.audio_done if self.audio_done else None

    @property
    def eta(self) -> float | None:
        """Seconds left, by declared audio when known, else by bytes, else by files."""
        for done, todo in ((self.audio_done, self.audio_todo), (self.bytes_done, self.bytes_todo),
                           (self.files_done, self.files_todo)):
            if todo and done:
                return self.elapsed * max(0.0, todo - done) / done
        return None


class TerminalBar:
    """One line on a terminal (stderr), redrawn at most every `interval` seconds."""

    def __init__(self, stream: TextIO = sys.stderr, interval: float = 0.5):
        self.stream = stream
        self.interval = interval
        self._last = 0.0
        self._width = 0

    def __call__(self, s: ProgressState, final: bool = False) -> None:
        now = time.monotonic()
        if not final and now - self._last < self.interval:
            return
        self._last = now
        hours = f"{s.audio_done / 3600:.2f}" + (f"/{s.audio_todo / 3600:.2f}" if s.audio_todo else "") + " h"
        rtf = f"RTF {s.real_time_factor:.4f}" if s.real_time_factor else "RTF -"
        eta = _clock(s.eta) if s.eta is not None else "-"
        failed = f", {s.failed} failed" if s.failed else ""
        text = f"corpus: {s.files_done}/{s.files_todo} files{failed}, {hours} audio, {rtf}, ETA {eta}"
        pad = max(0, self._width - len(text))
        self._width = len(text)
        self.stream.write("\r" + text + " " * pad + ("\n" if final else ""))
        self.stream.flush()


def _clock(seconds: float) -> str:
    s = round(seconds)
    return f"{s // 3600}:{s % 3600 // 60:02d}:{s % 60:02d}"
