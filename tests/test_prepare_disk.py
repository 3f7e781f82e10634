"""A full disk during prepare: one clear line, exit 2, and the folder exactly as it was.

Uses a real small tmpfs, mounted in a private mount namespace (unshare), so
nothing on the host changes and no mock stands in for the filesystem.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

from .conftest import REPO

CHILD = r"""
import hashlib, json, os, shutil, subprocess, sys
src, mnt, opts = sys.argv[1], sys.argv[2], sys.argv[3]
subprocess.run(["mount", "-t", "tmpfs", "-o", opts, "tmpfs", mnt], check=True)
dst = os.path.join(mnt, "model")
shutil.copytree(src, dst)
def snap():
    return {n: hashlib.sha256(open(os.path.join(dst, n), "rb").read()).hexdigest() for n in sorted(os.listdir(dst))}
before = snap()
p = subprocess.run([sys.executable, "-m", "sherpa_fixed.cli", "prepare", dst, "--in-place"], capture_output=True,
                   text=True)
print(json.dumps({"rc": p.returncode, "stderr": p.stderr, "same": snap() == before, "after": sorted(snap())}))
"""


def unshare_prefix() -> list[str]:
    return ["unshare", "-m"] if os.geteuid() == 0 else ["unshare", "-rm"]


def run_on_tmpfs(folder, tmp_path, opts):
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    env = dict(os.environ, PYTHONPATH=str(REPO))
    proc = subprocess.run([*unshare_prefix(), sys.executable, "-c", CHILD, str(folder), str(mnt), opts],
                          capture_output=True, text=True, env=env)
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout.strip().splitlines()[-1])


def test_out_of_inodes_mid_write_is_one_line_and_changes_nothing(make_folder, tmp_path):
    folder = make_folder(external="scattered", metadata="missing")
    files = len(list(folder.iterdir()))
    # Room for the copied folder and one more file: the consolidated weights get written, then the
    # new graph cannot be created. A genuine ENOSPC in the middle of the rewrite.
    out = run_on_tmpfs(folder, tmp_path, f"size=64m,nr_inodes={files + 3}")
    assert out["rc"] == 2, out
    assert "disk full" in out["stderr"] and out["stderr"].count("\n") == 1
    assert out["same"]
    assert not [n for n in out["after"] if n.startswith(".sf-")]


def test_not_enough_space_is_refused_before_writing(make_folder, tmp_path):
    folder = make_folder(external="scattered", metadata="missing", d_model=256, layers=2)
    size = sum(p.stat().st_size for p in folder.iterdir())
    out = run_on_tmpfs(folder, tmp_path, f"size={size + 200 * 1024}")
    assert out["rc"] == 2, out
    assert "free" in out["stderr"] and "nothing was changed" in out["stderr"]
    assert out["same"]
