"""kill -9 at each rename of quantize --in-place and at each step of export's commit: never a mixed set.

The child process is the real command; a hook in it sends itself SIGKILL just before its K-th rename
(os.replace, or the atomic exchange of an output folder), for K = 1, 2, ... until a run completes. After
each kill the folder is whole file by file, the next run of any writing command (here: the shared
session's recovery) leaves the int8 set either entirely old or entirely new, and a rerun finishes the job.
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
from pathlib import Path

import pytest

from sherpa_fixed.reading.external_data import referenced_in
from sherpa_fixed.reading.findings import WORKS
from sherpa_fixed.reading.inspector import inspect_folder
from sherpa_fixed.safety.atomic import sweep_stale
from sherpa_fixed.safety.journal import JOURNAL
from sherpa_fixed.safety.session import writing
from sherpa_fixed.testing import ModelSpec, write_model_folder

from .conftest import REPO
from .test_adversarial_export import build, bypass_payload, tree

HOOK = r"""
import os, signal, sys
import sherpa_fixed.safety.atomic as atomic
k, n, after = int(os.environ["KILL_AT"]), [0], os.environ.get("KILL_AFTER") == "1"
on = os.environ.get("KILL_ON", "rename")  # rename: os.replace and exchange; exchange: the exchange only
def counted(fn):
    def wrapper(*a, **kw):
        n[0] += 1
        if n[0] == k and not after:
            os.kill(os.getpid(), signal.SIGKILL)
        out = fn(*a, **kw)
        if n[0] == k and after:
            os.kill(os.getpid(), signal.SIGKILL)
        return out
    return wrapper
if on == "rename":
    os.replace = counted(os.replace)
atomic.exchange = counted(atomic.exchange)
import sherpa_fixed.safety.output as output
output.exchange = atomic.exchange
from sherpa_fixed.cli import main
sys.argv = ["sherpa-fixed", *sys.argv[1:]]
main()
"""


def run_killed(k: int, *args, after: bool = False, on: str = "rename") -> int:
    env = dict(os.environ, PYTHONPATH=str(REPO), KILL_AT=str(k), KILL_AFTER="1" if after else "0", KILL_ON=on)
    return subprocess.run([sys.executable, "-c", HOOK, *map(str, args)], env=env, capture_output=True).returncode


def digest(folder: Path, names) -> dict[str, str | None]:
    return {n: hashlib.sha256((folder / n).read_bytes()).hexdigest() if (folder / n).exists() else None
            for n in names}


INT8 = ["encoder.int8.onnx", "decoder.int8.onnx", "joiner.int8.onnx"]


def test_quantize_in_place_killed_at_every_rename(tmp_path):
    spec = ModelSpec(d_model=48, layers=2, external="single")
    src = write_model_folder(tmp_path / "src", spec)
    # The old int8 set: made with other options, so old and new bytes differ file by file.
    assert run_killed(10**9, "quantize", src, "--in-place", "--scheme", "sherpa-onnx") == 0
    old = digest(src, INT8)
    ref = tmp_path / "ref"
    subprocess.run(["cp", "-r", str(src), str(ref)], check=True)
    assert run_killed(10**9, "quantize", ref, "--in-place", "--force") == 0
    new = digest(ref, INT8)
    assert all(old[n] != new[n] for n in INT8)
    seen = set()
    for k in range(1, 60):
        work = tmp_path / f"k{k}"
        subprocess.run(["cp", "-r", str(src), str(work)], check=True)
        rc = run_killed(k, "quantize", work, "--in-place", "--force")
        now = digest(work, INT8)
        assert all(now[n] in (old[n], new[n]) for n in INT8), f"kill {k}: a file is neither old nor new"
        if os.path.exists(work / JOURNAL):  # a loader is warned off the half-changed folder
            assert any(f.code == "folder.interrupted" for f in inspect_folder(work).variants[0].findings)
        with writing(work, in_place=True, referenced=lambda w=work: referenced_in(w)):
            pass  # what the next writing command does first
        after = digest(work, INT8)
        assert after in (old, new), f"kill {k}: recovery left a mixed int8 set {after}"
        assert not [p.name for p in work.iterdir() if p.name.startswith(".sf-")], f"kill {k}: leftovers"
        seen.add("new" if after == new else "old")
        if rc == 0:
            break
    else:
        pytest.fail("the run never completed")
    assert seen == {"old", "new"}  # kills before and after the commit point were both exercised
    assert inspect_folder(work).verdict.code == WORKS


@pytest.mark.export
def test_export_force_of_a_hostile_archive_killed_at_its_commit(tmp_path):
    """--force over an earlier export, from a genuine checkpoint carrying the CVE-2025-4517 payload shape:
    killed just before and just after the exchange of the two folders, OUT_DIR is always one whole export
    (the old, then the new), the payload is never extracted, and nothing outside OUT_DIR changes."""
    victim = tmp_path / "victim" / "secret.txt"
    victim.parent.mkdir()
    victim.write_text("mine")
    nemo = build(tmp_path / "hostile.nemo", extra=bypass_payload(victim))
    out = tmp_path / "out"
    # The earlier export has a static 8 s encoder: the same file names, other bytes.
    assert run_killed(10**9, "export", nemo, out, "--no-check", "--static-frames", "800") == 0
    names = sorted(p.name for p in out.iterdir())
    old = digest(out, names)
    before = tree(tmp_path, skip=out)
    assert run_killed(1, "export", nemo, out, "--no-check", "--force", on="exchange") != 0
    assert digest(out, names) == old  # killed before the exchange: the old export, whole
    assert run_killed(1, "export", nemo, out, "--no-check", "--force", on="exchange", after=True) != 0
    now = digest(out, names)  # killed after it: the new export, whole
    assert sorted(p.name for p in out.iterdir()) == names and now["encoder.onnx"] != old["encoder.onnx"]
    assert inspect_folder(out).verdict.code == WORKS
    sweep_stale(tmp_path)  # what the next run does first: the dead runs' staging folders go
    assert not [n for n in os.listdir(tmp_path) if n.startswith(".sf-")]
    assert tree(tmp_path, skip=out) == before and victim.read_text() == "mine"
    assert not any(p.is_symlink() for p in out.iterdir())
