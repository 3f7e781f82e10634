"""Two runs at once, and runs killed mid-verification: the folder always ends decodable and complete.

Before the lock, two `prepare --in-place` runs on one scattered folder each
planned from what it saw, and 4 tries in 10 ended with every weight file
deleted. Before the journal, a run killed during verification left the old
scattered files (1.2 GB on the real model) behind for good.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import onnx
import pytest

from sherpa_fixed.decoding.sherpa_check import run_sherpa
from sherpa_fixed.reading.findings import WORKS
from sherpa_fixed.reading.inspector import inspect_folder
from sherpa_fixed.rewriting.prepare import prepare_folder
from sherpa_fixed.safety.journal import JOURNAL
from sherpa_fixed.safety.lock import folder_lock
from sherpa_fixed.testing import ModelSpec, write_big_model_folder

SPEC = ModelSpec(d_model=384, layers=8, metadata="missing")  # ~20 MB of weights, scattered below
PREPARE = ("import sys; from sherpa_fixed.cli import main; "
           "sys.argv = ['sherpa-fixed', 'prepare', sys.argv[1], '--in-place', '--verify', 'full']; main()")


def scatter(folder: Path) -> None:
    from sherpa_fixed.rewriting.weights import externalize_inline, inline_external, safe_file_name

    model = onnx.load(str(folder / "encoder.onnx"), load_external_data=False)
    inline_external(model, folder / "encoder.onnx")
    (folder / "encoder.weights").unlink()
    externalize_inline(model, folder, lambda t: safe_file_name(t.name))
    onnx.save(model, str(folder / "encoder.onnx"))


@pytest.fixture(scope="module")
def pristine(tmp_path_factory):
    folder = write_big_model_folder(tmp_path_factory.mktemp("conc") / "pristine", SPEC)
    scatter(folder)
    return folder


def referenced_files_present(folder: Path) -> None:
    """Every external location of every graph exists, and nothing else but the model is left."""
    for g in folder.glob("*.onnx"):
        m = onnx.load(str(g), load_external_data=False)
        for t in m.graph.initializer:
            for e in t.external_data:
                if e.key == "location":
                    assert (folder / e.value).is_file(), f"{g.name} points at missing {e.value}"
    assert not [p.name for p in folder.iterdir() if p.name.startswith(".sf-")]


def weight_files(folder: Path) -> set[str]:
    model = {"encoder.onnx", "decoder.onnx", "joiner.onnx", "tokens.txt"}
    return {p.name for p in folder.iterdir() if p.is_file() and p.name not in model and not p.name.startswith(".")}


def decodes(folder: Path) -> bool:
    run = run_sherpa(folder / "encoder.onnx", folder / "decoder.onnx", folder / "joiner.onnx", folder / "tokens.txt",
                     cwd=folder)
    return run.ok


def test_two_in_place_runs_at_once_leave_a_complete_folder(pristine, tmp_path):
    for i in range(4):
        work = tmp_path / f"w{i}"
        shutil.copytree(pristine, work)
        procs = [subprocess.Popen([sys.executable, "-c", PREPARE, str(work)], stdout=subprocess.PIPE,
                                  stderr=subprocess.PIPE, text=True) for _ in range(2)]
        outs = [p.communicate(timeout=300) for p in procs]
        codes = [p.returncode for p in procs]
        assert codes == [0, 0], outs
        said = [o[0] for o in outs]
        # One did the work; the other waited for the lock, then found nothing left to do.
        assert sum("nothing needs doing" in s for s in said) == 1, said
        assert any("waiting for it to finish" in o[1] for o in outs), [o[1] for o in outs]
        referenced_files_present(work)
        assert [p.name for p in work.iterdir() if p.suffix == ".weights"] == ["encoder.weights"]
        assert inspect_folder(work).verdict.code == WORKS
        assert decodes(work)


def test_a_second_run_waits_then_refuses_clearly(pristine, tmp_path):
    from sherpa_fixed.errors import BadInputError

    work = tmp_path / "w"
    shutil.copytree(pristine, work)
    with folder_lock(work):
        t = time.monotonic()
        with pytest.raises(BadInputError, match="another sherpa-fixed run"):
            prepare_folder(work, in_place=True, wait=0.5)
        assert time.monotonic() - t >= 0.5
    assert len(list(work.glob("*.weights"))) == 0  # nothing happened while the lock was held
    assert prepare_folder(work, in_place=True).exit_code == 0


def _children_of(pid: int) -> list[int]:
    try:
        with open(f"/proc/{pid}/task/{pid}/children") as f:
            return [int(x) for x in f.read().split()]
    except OSError:
        return []


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split(")")[-1].split()[0] != "Z"
    except OSError:
        return False


@pytest.mark.parametrize("moment", ["verifying", "checking"])
def test_killed_during_verification_is_undone_then_finished(pristine, tmp_path, moment):
    """kill -9 once the graphs are swapped (verification running): the next run undoes it, then does the work,
    removing the scattered files; the sherpa-onnx check child does not outlive its parent."""
    work = tmp_path / "w"
    shutil.copytree(pristine, work)
    scattered = weight_files(work)
    assert len(scattered) > 10
    original = (work / "encoder.onnx").read_bytes()
    proc = subprocess.Popen([sys.executable, "-c", PREPARE, str(work)], stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 120
    child: list[int] = []
    while time.monotonic() < deadline and proc.poll() is None:
        swapped = (work / JOURNAL).exists() and (work / "encoder.onnx").read_bytes() != original
        child = _children_of(proc.pid)
        if swapped and (moment == "verifying" or child):
            break
        time.sleep(0.005)
    assert proc.poll() is None, "the run finished before it could be killed; make the model bigger"
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    time.sleep(1.0)
    assert not [c for c in child if _alive(c)], "the sherpa-onnx check child outlived its killed parent"
    assert (work / JOURNAL).exists()
    result = prepare_folder(work, in_place=True)
    assert result.exit_code == 0, result.checks
    assert result.recovered and "undid" in result.recovered[0]
    assert scattered <= set(result.removed)
    assert not any((work / n).exists() for n in scattered)
    referenced_files_present(work)
    assert decodes(work)


def test_killed_after_commit_is_finished_by_the_next_run(pristine, tmp_path):
    """A journal in state 'committed' (the kill came after verification): the next run only cleans up."""
    from sherpa_fixed.safety import journal

    work = tmp_path / "w"
    shutil.copytree(pristine, work)
    result = prepare_folder(work, output=tmp_path / "new")
    assert result.exit_code == 0
    scattered = sorted(weight_files(work))
    # The state a run killed right after committing leaves: new graph and weights, old files still there.
    for name in ("encoder.onnx", "encoder.weights"):
        shutil.copy(tmp_path / "new" / name, work / name)
    backup = work / ".sf-bak-999999-deadbeef-encoder.onnx"
    shutil.copy(tmp_path / "new" / "encoder.onnx", backup)
    j = journal.Journal(work, journal.COMMITTED, {"encoder.onnx": backup.name}, ["encoder.weights"], scattered,
                        999999)
    for name in [backup.name, "encoder.weights", *scattered]:  # what the run recorded as it went
        j.remember(name)
    j.save()
    again = prepare_folder(work, in_place=True)
    assert again.recovered and "finished" in again.recovered[0]
    assert again.nothing_to_do
    assert not any((work / n).exists() for n in scattered)
    referenced_files_present(work)
    assert decodes(work)


def test_a_journal_cannot_name_files_outside_the_folder(tmp_path):
    from sherpa_fixed.safety import journal

    folder = tmp_path / "m"
    folder.mkdir()
    victim = tmp_path / "victim.txt"
    victim.write_text("keep me")
    (folder / JOURNAL).write_text('{"state": "committed", "backups": {"x": "../victim.txt"}, "created": '
                                  '["../victim.txt"], "superseded": ["../victim.txt", "/etc/hostname"], "pid": 1}')
    j = journal.load(folder)
    journal.finish(j, set())
    (folder / JOURNAL).write_text('{"state": "writing", "backups": {"../victim.txt": "x"}, "created": '
                                  '["../victim.txt"], "superseded": [], "pid": 1}')
    journal.roll_back(journal.load(folder))
    assert victim.read_text() == "keep me" and os.path.exists("/etc/hostname")


def test_a_planted_journal_deletes_and_restores_nothing(pristine, tmp_path):
    """A journal shipped inside a downloaded folder names real files of that folder as 'created' and
    'superseded' and a backup to restore: none of them is the file it would have recorded (identity), so
    the next run leaves every file as it was and then prepares the folder normally."""
    work = tmp_path / "w"
    shutil.copytree(pristine, work)
    (work / "notes.txt").write_text("mine")
    (work / ".sf-bak-1-cafe0000-tokens.txt").write_text("attacker's tokens")
    before = {p.name: p.read_bytes() for p in work.iterdir() if p.is_file()}
    for state in ("committed", "writing"):
        (work / JOURNAL).write_text(json.dumps({
            "state": state, "backups": {"tokens.txt": ".sf-bak-1-cafe0000-tokens.txt"},
            "created": ["notes.txt", *sorted(weight_files(work))], "superseded": ["notes.txt", "tokens.txt"],
            "pid": 1, "ids": {"notes.txt": [0, 0], ".sf-bak-1-cafe0000-tokens.txt": [1, 2]}}))
        result = prepare_folder(work, output=tmp_path / f"out-{state}")
        assert result.exit_code == 0
        assert (work / "tokens.txt").read_bytes() == before["tokens.txt"]
        assert (work / "notes.txt").read_text() == "mine"
        assert all((work / n).read_bytes() == b for n, b in before.items() if not n.startswith(".sf-"))
        assert not (work / JOURNAL).exists()
