"""The shared safety mechanism itself (sherpa_fixed/safety): bounded reads, locks on files, output rules, the
atomic exchange of an output folder, and the sweep that puts back what a killed run set aside.

Every writing command goes through these; the command-level suites (test_adversarial*, test_concurrency,
test_kill_points) check that each one does.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from sherpa_fixed.errors import BadInputError
from sherpa_fixed.safety.atomic import exchange, sweep_stale, temp_path
from sherpa_fixed.safety.bounded import open_regular, read_bounded
from sherpa_fixed.safety.lock import folder_lock
from sherpa_fixed.safety.output import MARKER, check_output, foreign_entries, staged_output

from .conftest import REPO


def test_a_fifo_is_refused_at_once_never_waited_on(tmp_path):
    fifo = tmp_path / "x.wav"
    os.mkfifo(fifo)
    t = time.perf_counter()
    with pytest.raises(BadInputError, match="is a FIFO, not a regular file"):
        open_regular(fifo, what="audio file")
    assert time.perf_counter() - t < 1.0  # a plain open() would block here until a writer appears


def test_devices_and_folders_are_refused_and_sizes_bounded(tmp_path):
    with pytest.raises(BadInputError, match="is a device"):
        read_bounded("/dev/zero", 1 << 20)
    with pytest.raises(BadInputError, match="is a folder"):
        read_bounded(tmp_path, 1 << 20)
    big = tmp_path / "big"
    big.write_bytes(b"x" * 5000)
    with pytest.raises(BadInputError, match="5,000 bytes, more than the 4,096"):
        read_bounded(big, 4096, what="config")
    assert read_bounded(big, 5000) == b"x" * 5000


def test_a_regular_file_can_be_locked_and_a_second_writer_is_refused(tmp_path):
    out = tmp_path / "out.jsonl"
    out.write_text("")
    code = ("import sys; from sherpa_fixed.safety.lock import folder_lock\n"
            "try:\n    folder_lock(sys.argv[1], wait=0.3).__enter__()\nexcept Exception as e:\n    print(e)")
    with folder_lock(out):
        p = subprocess.run([sys.executable, "-c", code, str(out)], capture_output=True, text=True,
                           env=dict(os.environ, PYTHONPATH=str(REPO)))
    assert "still writing here after 0.3 s" in p.stdout, p.stdout + p.stderr
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    with pytest.raises(BadInputError, match="neither a folder nor a regular file"), folder_lock(fifo):
        pass


def ours(folder: Path, files: dict[str, str]) -> Path:
    """A folder as sherpa-fixed writes it: the files and the marker listing them."""
    folder.mkdir()
    for name, text in files.items():
        (folder / name).write_text(text)
    (folder / MARKER).write_text(json.dumps({"files": sorted(files)}))
    return folder


def test_output_rules(tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    (src / "a.onnx").write_text("x")
    for out, says in ((src, "is the source folder"), (tmp_path, "contains the source folder"),
                      (src / "sub", "is inside the source folder"), (tmp_path / "no" / "such", "does not exist")):
        with pytest.raises(BadInputError, match=says):
            check_output(src, out, force=True)
    nemo = tmp_path / "m.nemo"
    nemo.write_text("x")
    with pytest.raises(BadInputError, match="contains the source file"):
        check_output(nemo, tmp_path, force=True)
    notes = tmp_path / "notes"
    notes.mkdir()
    (notes / "diary.txt").write_text("mine")
    with pytest.raises(BadInputError, match="is not empty"):
        check_output(src, notes, force=False)
    with pytest.raises(BadInputError, match=r"sherpa-fixed wrote .*\(no \.sherpa-fixed\.json\), diary\.txt"):
        check_output(src, notes, force=True)
    mine = ours(tmp_path / "mine", {"encoder.onnx": "1", "tokens.txt": "2"})
    check_output(src, mine, force=True)  # ours, unchanged: may be replaced
    (mine / "added.md").write_text("user's")
    with pytest.raises(BadInputError, match=r"added\.md"):
        check_output(src, mine, force=True)
    os.symlink(mine, tmp_path / "link")
    with pytest.raises(BadInputError, match="is a symlink"):
        check_output(src, tmp_path / "link", force=True)


def test_commit_exchanges_atomically_and_refuses_a_folder_changed_meanwhile(tmp_path):
    out = ours(tmp_path / "out", {"encoder.onnx": "old"})
    with staged_output(out, source=None, force=True, command="test") as staged:
        (staged.staging / "encoder.onnx").write_text("new")
        staged.commit()
    assert (out / "encoder.onnx").read_text() == "new"
    assert json.loads((out / MARKER).read_text())["files"] == ["encoder.onnx"] and not foreign_entries(out)
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".sf-")]
    # A file appears in the output after the run began (another program, no lock): the commit refuses, and
    # the output, with that file, is exactly as it was.
    with staged_output(out, source=None, force=True, command="test") as staged:
        (staged.staging / "encoder.onnx").write_text("newer")
        (out / "late.txt").write_text("written meanwhile")
        with pytest.raises(BadInputError, match=r"late\.txt"):
            staged.commit()
    assert (out / "late.txt").read_text() == "written meanwhile" and (out / "encoder.onnx").read_text() == "new"
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".sf-")]


def test_exchange_swaps_two_folders_in_one_step(tmp_path):
    a, b = tmp_path / "a", tmp_path / "b"
    a.mkdir()
    b.mkdir()
    (a / "x").write_text("a")
    assert exchange(a, b)
    assert (b / "x").read_text() == "a" and not list(a.iterdir())


def test_sweep_puts_back_an_output_set_aside_by_a_dead_run(tmp_path):
    """Where no atomic exchange exists, a run killed between its two renames has moved the old output
    aside and not yet put the new one in place: the next run restores the old one instead of deleting it."""
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True,
                          text=True).stdout.strip()
    old = tmp_path / f".sf-old-{dead}-0badc0de-out"
    old.mkdir()
    (old / "encoder.onnx").write_text("kept")
    stale = tmp_path / f".sf-tmp-{dead}-0badc0de-out"
    stale.mkdir()
    sweep_stale(tmp_path)
    assert (tmp_path / "out" / "encoder.onnx").read_text() == "kept"
    assert not stale.exists()
    assert temp_path(tmp_path / "out", "old").name.startswith(f".sf-old-{os.getpid()}-")
