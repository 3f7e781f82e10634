"""What a corpus run reports: files, audio hours, wall time, real-time factor, failures, and WER.

Totals describe the whole output file (lines from earlier, interrupted runs included), so a resumed
run ends with the same summary an uninterrupted one would have; the speed figures describe this run.
WER (checking/wer.py: jiwer's alignment, both sides normalised) is scored on every transcribed line
whose input has a `text` field; failed files are counted apart, never scored as empty transcripts.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from ..checking.wer import JiwerMissingError, WordErrors, standard_error, total, word_errors
from .decode import BOOKKEEPING, ERROR, PRED_TEXT

MAX_LISTED_FAILURES = 20

EXIT_ALL_OK, EXIT_SOME_FAILED = 0, 1


@dataclass
class Tally:
    """Counts over output lines (dicts as written to OUT)."""

    ok: int = 0
    failed: int = 0
    audio_seconds: float = 0.0
    decode_seconds: float = 0.0
    word_errors: list[WordErrors] = field(default_factory=list)
    failures: list[tuple[str, str]] = field(default_factory=list)  # (audio_filepath, error), the first few
    wer_unavailable: str | None = None  # why no WER could be scored (jiwer missing)

    @property
    def files(self) -> int:
        return self.ok + self.failed

    def add(self, line: dict) -> None:
        book = line.get(BOOKKEEPING) or {}
        self.audio_seconds += float(book.get("audio_seconds") or 0.0)
        self.decode_seconds += float(book.get("decode_seconds") or 0.0)
        if ERROR in line:
            self.failed += 1
            if len(self.failures) < MAX_LISTED_FAILURES:
                self.failures.append((str(line.get("audio_filepath")), str(line[ERROR])))
            return
        self.ok += 1
        ref = line.get("text")
        if isinstance(ref, str) and self.wer_unavailable is None:
            try:
                self.word_errors.append(word_errors(ref, str(line.get(PRED_TEXT) or "")))
            except JiwerMissingError as exc:
                self.wer_unavailable = exc.one_line()
                self.word_errors.clear()

    def remove_failures(self) -> None:
        self.failed = 0
        self.failures.clear()

    def wer_json(self) -> dict | None:
        if not self.word_errors:
            return None
        t = total(self.word_errors)
        se = standard_error(self.word_errors)
        return dict(t.to_json(), files_scored=len(self.word_errors),
                    standard_error=None if se is None else round(se, 6))


@dataclass
class Losses:
    """Workers lost during a run and the files handed out again because of them (both runners count)."""

    workers_died: int | None = 0  # local worker processes that died (None on Ray: Ray replaces its own)
    files_retried: int = 0


@dataclass
class RunStats:
    """This run's own work (what the speed figures describe)."""

    decoded: int = 0
    failed: int = 0
    audio_seconds: float = 0.0
    wall_seconds: float = 0.0

    @property
    def real_time_factor(self) -> float | None:
        return self.wall_seconds / self.audio_seconds if self.audio_seconds else None

    @property
    def audio_per_wall(self) -> float | None:
        return self.audio_seconds / self.wall_seconds if self.wall_seconds else None


@dataclass
class CorpusSummary:
    model: str
    input: str
    output: str
    runner: str  # "local" or "ray"
    workers: int
    threads_per_worker: int
    inputs: int  # lines of the manifest / files of the folder
    already_done: int  # lines found in OUT at the start (after a torn last line was dropped)
    tally: Tally  # the whole OUT
    run: RunStats
    torn_bytes_dropped: int = 0
    failed_dropped: int = 0  # error lines removed by retry_failed, to be decoded again
    duplicates_dropped: int = 0  # results for inputs already in OUT (a retried Ray task); never written twice
    losses: Losses = field(default_factory=Losses)
    missing: int = 0  # inputs with no line in OUT (only when the run was stopped early)

    @property
    def exit_code(self) -> int:
        return EXIT_ALL_OK if self.tally.failed == 0 and self.missing == 0 else EXIT_SOME_FAILED

    def to_json(self) -> dict:
        t, r = self.tally, self.run
        return {
            "schema": "sherpa-fixed/corpus", "schema_version": 1,
            "model": self.model, "input": self.input, "output": self.output,
            "runner": self.runner, "workers": self.workers, "threads_per_worker": self.threads_per_worker,
            "files": {"inputs": self.inputs, "in_output": t.files, "transcribed": t.ok, "failed": t.failed,
                      "missing": self.missing, "already_done": self.already_done, "decoded_this_run": r.decoded,
                      "failed_this_run": r.failed},
            "audio_hours": round(t.audio_seconds / 3600, 4),
            "this_run": {"audio_hours": round(r.audio_seconds / 3600, 4), "wall_seconds": round(r.wall_seconds, 3),
                         "real_time_factor": _round(r.real_time_factor, 5),
                         "audio_seconds_per_second": _round(r.audio_per_wall, 3)},
            "recovery": {"torn_bytes_dropped": self.torn_bytes_dropped, "failed_dropped": self.failed_dropped,
                         "duplicates_dropped": self.duplicates_dropped, "workers_died": self.losses.workers_died,
                         "files_retried": self.losses.files_retried},
            "failures": [{"audio_filepath": p, "error": e} for p, e in t.failures],
            "wer": t.wer_json(),
            "wer_unavailable": t.wer_unavailable,
            "exit_code": self.exit_code,
        }

    def lines(self) -> list[str]:
        t, r = self.tally, self.run
        out = [f"{self.output}: {t.files} of {self.inputs} inputs ({t.ok} transcribed, {t.failed} failed), "
               f"{t.audio_seconds / 3600:.3f} h of audio"]
        where = (f"{self.workers} {'Ray actor' if self.runner == 'ray' else 'local worker'}"
                 f"{'s' if self.workers != 1 else ''} x {self.threads_per_worker} thread"
                 f"{'s' if self.threads_per_worker != 1 else ''}")
        speed = (f", RTF {r.real_time_factor:.4f} ({r.audio_per_wall:.1f} s of audio per second)"
                 if r.real_time_factor else "")
        out.append(f"this run: {r.decoded} files, {r.audio_seconds / 3600:.3f} h of audio in "
                   f"{_clock(r.wall_seconds)}{speed} on {where}"
                   + (f"; {self.already_done} were already done" if self.already_done else ""))
        if self.torn_bytes_dropped:
            out.append(f"dropped a torn last line ({self.torn_bytes_dropped} bytes) left by an interrupted run")
        if self.duplicates_dropped:
            out.append(f"{self.duplicates_dropped} results for inputs already written were dropped (retried work)")
        if self.losses.workers_died or self.losses.files_retried:
            died = f"{self.losses.workers_died} workers died; " if self.losses.workers_died else ""
            out.append(f"{died}{self.losses.files_retried} files were handed out again after their worker died")
        wer = t.wer_json()
        if wer is not None:
            e = total(t.word_errors)
            out.append(f"{e.line()} over {wer['files_scored']} files" + (
                f", standard error {100 * wer['standard_error']:.2f} points" if wer["standard_error"] else ""))
        elif t.wer_unavailable:
            out.append(f"no WER: {t.wer_unavailable}")
        if t.failed:
            out.append(f"{t.failed} of {t.files} files failed (their lines in the output have an \"error\" field):")
            out += [f"  {e}" for _p, e in t.failures]
            if t.failed > len(t.failures):
                out.append(f"  ... and {t.failed - len(t.failures)} more")
        if self.missing:
            out.append(f"{self.missing} inputs have no line yet: run the same command again to finish them")
        return out


def _round(x: float | None, n: int) -> float | None:
    return None if x is None else round(x, n)


def _clock(seconds: float) -> str:
    s = round(seconds)
    return f"{s // 3600}:{s % 3600 // 60:02d}:{s % 60:02d}"
