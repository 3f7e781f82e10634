"""Rewrite an exported folder so stock sherpa-onnx accepts it, safely and at disk speed.

`prepare_folder` is the orchestration: it opens the run through the shared
safety mechanism (safety/session.py: locks, recovery of an interrupted run),
plans every change from the inspector's analysis (plan.py), applies the plan
in place or into a new folder (apply.py) and proves the result (proofs.py);
a failed proof leaves everything as it was.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from .. import __version__
from ..errors import EXIT_NEEDS_FIX, EXIT_OK, BadInputError
from ..reading.external_data import referenced_in
from ..reading.inspector import FolderReport, inspect_folder
from ..reading.runtimes import version_key
from ..safety.journal import JOURNAL
from ..safety.lock import DEFAULT_WAIT
from ..safety.output import check_output, staged_output
from ..safety.session import writing
from .apply import apply_in_place, apply_to_output
from .plan import Plan, plan_prepare
from .proofs import VERIFY_MODES
from .verify import Check

Progress = Callable[[str, int, int], None]  # (phase, done, total)


@dataclass
class PrepareResult:
    source: Path
    target: Path
    mode: str  # output | in-place | dry-run
    plan: Plan
    written: list[str] = field(default_factory=list)
    linked: list[str] = field(default_factory=list)
    removed: list[str] = field(default_factory=list)
    checks: list[Check] = field(default_factory=list)
    seconds: dict[str, float] = field(default_factory=dict)
    recovered: list[str] = field(default_factory=list)  # what was done about an interrupted earlier run

    @property
    def nothing_to_do(self) -> bool:
        return not self.plan.changes

    @property
    def exit_code(self) -> int:
        if any(not c.ok for c in self.checks):
            return EXIT_NEEDS_FIX
        return EXIT_NEEDS_FIX if self.plan.blockers else EXIT_OK

    def to_json(self) -> dict:
        return {
            "schema": "sherpa-fixed/prepare",
            "schema_version": 1,
            "sherpa_fixed_version": __version__,
            "source": str(self.source),
            "target": str(self.target),
            "mode": self.mode,
            "nothing_to_do": self.nothing_to_do,
            "exit_code": self.exit_code,
            "changes": [c.to_json() for c in self.plan.changes],
            "warnings": self.plan.warnings,
            "blockers": self.plan.blockers,
            "written": self.written,
            "linked": self.linked,
            "removed": self.removed,
            "recovered": self.recovered,
            "checks": [c.to_json() for c in self.checks],
            "seconds": {k: round(v, 3) for k, v in self.seconds.items()},
        }




def prepare_folder(
    source: str | os.PathLike,
    *,
    output: str | os.PathLike | None = None,
    in_place: bool = False,
    dry_run: bool = False,
    inline: bool = False,
    force: bool = False,
    verify: str = "auto",
    progress: Progress | None = None,
    report: FolderReport | None = None,
    window: bool = False,
    hop: float | None = None,
    context: float | None = None,
    wait: float = DEFAULT_WAIT,
    window_seconds: float | None = None,
    max_seconds: float | None = None,
    sherpa_onnx: str | None = None,
) -> PrepareResult:
    """Plan and apply the rewrite; see the module docstring. Raises SherpaFixedError on bad input.

    The source folder (and the output's parent) are locked before anything is planned, and an
    in-place run interrupted earlier is finished or undone first (safety/session.py). `report` is used
    for dry runs only: a run that writes plans from what it sees under the lock. `sherpa_onnx`: a release
    the result must load in from any working directory (its layout chosen for it, or refused before
    anything is written: docs/runtimes.md).
    """
    if verify not in VERIFY_MODES:
        raise BadInputError(f"--verify must be one of {', '.join(VERIFY_MODES)}")
    source = Path(source)
    if not source.is_dir():
        raise BadInputError("not a folder" if source.exists() else "folder not found", path=source,
                            fix="prepare takes the model folder")
    if not dry_run and not in_place and output is None:
        raise BadInputError("say where to write: --output DIR, or --in-place", path=source)
    if in_place and output is not None:
        raise BadInputError("--in-place and --output exclude each other")
    if not window and (hop is not None or context is not None or window_seconds is not None):
        raise BadInputError("--hop, --context and --window-seconds go with --window")
    if sherpa_onnx is not None:
        version_key(sherpa_onnx)  # refused before anything is read
    if window and max_seconds is not None:
        raise BadInputError("--window and --max-seconds are two answers to long audio; choose one",
                            fix="--window: bounded memory at any length; --max-seconds: one pass up to N s")
    out_path = Path(output) if output is not None else None
    if out_path is not None:
        check_output(source, out_path, force)  # before anything is read; again under the lock, and at commit
    with writing(source, output=out_path, in_place=in_place, dry_run=dry_run, wait=wait,
                 referenced=lambda: referenced_in(source)) as recovered:
        t0 = time.perf_counter()
        report = report if (dry_run and report is not None) else inspect_folder(source)
        plan = plan_prepare(report, inline=inline, max_seconds=max_seconds, sherpa_onnx=sherpa_onnx,
                            window={"hop": hop, "context": context, "seconds": window_seconds} if window else None)
        seconds = {"plan": time.perf_counter() - t0}
        target = out_path if out_path is not None else source
        mode = "dry-run" if dry_run else ("in-place" if in_place else "output")
        result = PrepareResult(source, target, mode, plan, seconds=seconds, recovered=recovered)
        if dry_run:
            if os.path.lexists(source / JOURNAL):
                plan.warnings.append("an interrupted in-place run left a journal here; the next run that writes "
                                     "finishes or undoes it first")
        elif in_place:
            if plan.changes:
                apply_in_place(plan, result, verify, progress)
        else:
            with staged_output(out_path, source=source, force=force, command="prepare") as out:
                apply_to_output(plan, result, out, verify, progress)
        return result
