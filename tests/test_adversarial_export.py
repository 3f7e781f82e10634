"""`export` on .nemo archives built by an attacker: nothing written outside OUT_DIR, nothing extracted on trust,
memory bounded on bombs, `--force` never deleting what is not ours, one true line for every refusal.

The archives are built here with tarfile around the members of a genuine NeMo checkpoint (the vendored
speech model's). Most refusals happen before NeMo is imported, so these run without torch; one real export
of an archive carrying a filter-bypass payload (the shape of CVE-2025-4517's proof of concept, which this
interpreter's tarfile filter does not stop) runs through NeMo.
"""

from __future__ import annotations

import io
import os
import subprocess
import sys
import tarfile
import time
from pathlib import Path

import pytest
from click.testing import CliRunner

from sherpa_fixed.cli import main
from sherpa_fixed.errors import BadInputError
from sherpa_fixed.exporting.archive import extract_members, parse_config, read_archive
from sherpa_fixed.exporting.export import export_nemo
from sherpa_fixed.safety.lock import folder_lock

from .conftest import REPO

NEMO = REPO / "tests" / "data" / "speech" / "model.nemo"


def genuine_members() -> list[tuple[tarfile.TarInfo, bytes]]:
    with tarfile.open(NEMO) as tar:
        return [(m, tar.extractfile(m).read()) for m in tar.getmembers() if m.isfile()]


def tokenizer_member() -> str:
    return next(m.name for m, _ in genuine_members() if m.name.endswith("_tokenizer.model"))


def build(path: Path, *, replace: dict | None = None, extra: list | None = None, config: bytes | None = None,
          gz: bool = False, fmt: int = tarfile.GNU_FORMAT) -> Path:
    """A .nemo with the genuine members, some replaced (name -> TarInfo-making function), plus extra members."""
    replace = replace or {}
    opts = {"compresslevel": 1} if gz else {}
    with tarfile.open(path, "w:gz" if gz else "w:", format=fmt, **opts) as tar:
        for info, data in genuine_members():
            if info.name == "model_config.yaml" and config is not None:
                data = config
            if info.name in replace:
                replace[info.name](tar)
                continue
            info = tarfile.TarInfo(info.name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
        for add in extra or []:
            add(tar)
    return path


def member(name: str, kind: bytes = tarfile.REGTYPE, data: bytes = b"", linkname: str = "", **pax):
    def add(tar: tarfile.TarFile) -> None:
        info = tarfile.TarInfo(name)
        info.type = kind
        info.linkname = linkname
        if pax:
            info.pax_headers = pax
        info.size = len(data) if kind == tarfile.REGTYPE else 0
        tar.addfile(info, io.BytesIO(data) if kind == tarfile.REGTYPE else None)
    return add


def bypass_payload(victim: Path) -> list:
    """The structure of CVE-2025-4517's proof of concept: a chain of symlinks through directories with
    near-PATH_MAX names, so that realpath() gives up and tarfile's "data" filter judges a path as inside
    that the kernel resolves outside; then a symlink through the chain to `victim`'s folder and a file
    written through it."""
    comp = "d" * 247
    steps = "abcdefghijklmnop"
    adds, path = [], ""
    for s in steps:
        adds.append(member(os.path.join(path, comp), tarfile.DIRTYPE))
        adds.append(member(os.path.join(path, s), tarfile.SYMTYPE, linkname=comp))
        path = os.path.join(path, comp)
    linkpath = os.path.join("/".join(steps), "l" * 254)
    adds.append(member(linkpath, tarfile.SYMTYPE, linkname="../" * len(steps)))
    depth = len(Path.cwd().parts) + 8
    adds.append(member("escape", tarfile.SYMTYPE, linkname=linkpath + "/.." * depth + str(victim.parent)))
    adds.append(member("escape/" + victim.name, data=b"OWNED"))
    adds.append(member("hl", tarfile.LNKTYPE, linkname=str(victim)))
    adds.append(member("../../outside.txt", data=b"OWNED"))
    adds.append(member("/tmp/sherpa-fixed-absolute.txt", data=b"OWNED"))
    return adds


def tree(root: Path, skip: Path | None = None) -> dict[str, bytes]:
    out = {}
    for p in sorted(root.rglob("*")):
        if skip is not None and (p == skip or skip in p.parents):
            continue
        out[str(p.relative_to(root))] = p.read_bytes() if p.is_file() and not p.is_symlink() else b"<entry>"
    return out


def test_members_are_copied_never_extracted(tmp_path):
    """Only the checkpoint's members arrive, as plain files under their own names; every link, folder and
    path of the bypass payload is ignored, and nothing outside the target folder changes."""
    victim = tmp_path / "victim" / "secret.txt"
    victim.parent.mkdir()
    victim.write_text("mine")
    nemo = build(tmp_path / "hostile.nemo", extra=bypass_payload(victim))
    folder = tmp_path / "into"
    folder.mkdir()
    before = tree(tmp_path, skip=folder)
    archive = read_archive(nemo)
    parse_config(archive)
    extract_members(archive, folder)
    wanted = sorted(m.name for m, _ in genuine_members())
    assert sorted(os.listdir(folder)) == wanted
    assert all((folder / n).is_file() and not (folder / n).is_symlink() for n in wanted)
    assert tree(tmp_path, skip=folder) == before and victim.read_text() == "mine"
    assert not Path("/tmp/sherpa-fixed-absolute.txt").exists()


@pytest.mark.parametrize("case, says", [
    ("symlink", "is a symlink, not a regular file"),
    ("hardlink", "is a hard link, not a regular file"),
    ("folder", "is a folder, not a regular file"),
    ("device", "is a device, not a regular file"),
    ("config-link", "'model_config.yaml' is a symlink"),
    ("climbing-name", "is not a plain file name"),
    ("missing", "which the archive does not hold"),
])
def test_a_member_the_checkpoint_needs_must_be_a_plain_regular_file(tmp_path, case, says):
    tok = tokenizer_member()
    config = None
    replace = {}
    if case in ("symlink", "hardlink", "folder", "device"):
        kind = {"symlink": tarfile.SYMTYPE, "hardlink": tarfile.LNKTYPE, "folder": tarfile.DIRTYPE,
                "device": tarfile.CHRTYPE}[case]
        replace[tok] = member(tok, kind, linkname="/etc/passwd")
    elif case == "config-link":
        replace["model_config.yaml"] = member("model_config.yaml", tarfile.SYMTYPE, linkname="/etc/passwd")
    else:
        text = dict(genuine_members_by_name())["model_config.yaml"].decode()
        config = text.replace(f"nemo:{tok}", "nemo:../x" if case == "climbing-name" else "nemo:absent.model").encode()
    extra = [member("../x", data=b"x")] if case == "climbing-name" else []
    nemo = build(tmp_path / "bad.nemo", replace=replace, extra=extra, config=config)
    with pytest.raises(BadInputError, match=says) as err:
        parse_config(read_archive(nemo))
    assert "truncated" not in str(err.value) and "\n" not in str(err.value)


def genuine_members_by_name() -> list[tuple[str, bytes]]:
    return [(m.name, d) for m, d in genuine_members()]


def peak_mb(code: str) -> tuple[float, str]:
    """Run code in a fresh interpreter; its own peak RSS in MB (VmHWM: ru_maxrss would count the pages of
    the forked test process) and what it printed."""
    tail = ("\nimport re; print(int(re.search(r'VmHWM:\\s+(\\d+)', open('/proc/self/status').read()).group(1))"
            " / 1024)")
    p = subprocess.run([sys.executable, "-c", code + tail], capture_output=True, text=True,
                       env=dict(os.environ, PYTHONPATH=str(REPO)))
    assert p.returncode == 0, p.stderr
    *said, peak = p.stdout.strip().splitlines()
    return float(peak), "\n".join(said)


READ = ("from sherpa_fixed.exporting.archive import read_archive, parse_config\n"
        "from sherpa_fixed.errors import BadInputError\n"
        "try:\n    parse_config(read_archive({path!r}))\nexcept BadInputError as e:\n    print(e)\n")


def test_a_huge_config_in_a_small_archive_is_refused_unread(tmp_path):
    nemo = tmp_path / "bomb.nemo"
    with tarfile.open(nemo, "w:gz", compresslevel=1) as tar:
        info = tarfile.TarInfo("model_config.yaml")
        info.size = 256 << 20
        tar.addfile(info, io.BytesIO(b"\0" * info.size))
    assert nemo.stat().st_size < 2 << 20
    peak, said = peak_mb(READ.format(path=str(nemo)))
    assert "model_config.yaml is 268,435,456 bytes" in said
    assert peak < 200, peak  # the config was never read (it used to cost twice its size)


def test_a_header_bomb_is_refused_in_bounded_memory(tmp_path):
    nemo = tmp_path / "pax.nemo"
    with tarfile.open(nemo, "w:gz", format=tarfile.PAX_FORMAT, compresslevel=1) as tar:
        member("model_config.yaml", data=b"a: 1\n", comment="x" * (64 << 20))(tar)
    peak, said = peak_mb(READ.format(path=str(nemo)))
    assert "corrupt .nemo archive" in said and "more than 16777216" in said
    assert peak < 200, peak


BILLION_LAUGHS = "a: &a [x, x, x, x, x, x, x, x, x]\n" + "".join(
    f"{chr(98 + i)}: &{chr(98 + i)} [{', '.join(['*' + chr(97 + i)] * 9)}]\n" for i in range(8))


@pytest.mark.parametrize("config, says", [
    (BILLION_LAUGHS, "expands to more than 200,000 values"),
    ("x: " + "[" * 200 + "]" * 200 + "\n", "nests deeper than 64 levels"),
    ("target: [unclosed\n", "is not YAML"),
    ("- just\n- a list\n", "is not a mapping"),
])
def test_config_bombs_and_junk_are_refused_at_once(tmp_path, config, says):
    nemo = build(tmp_path / "c.nemo", config=config.encode())
    t = time.perf_counter()
    with pytest.raises(BadInputError, match=says):
        parse_config(read_archive(nemo))
    assert time.perf_counter() - t < 2.0  # the alias bomb used to spin inside NeMo's restore for minutes


def test_a_junk_member_is_never_extracted(tmp_path):
    nemo = build(tmp_path / "junk.nemo", extra=[member("junk.bin", data=b"\0" * (64 << 20))])
    archive = read_archive(nemo)
    parse_config(archive)
    folder = tmp_path / "into"
    folder.mkdir()
    extract_members(archive, folder)
    assert "junk.bin" not in os.listdir(folder)
    assert sum(p.stat().st_size for p in folder.iterdir()) == archive.needed_bytes < 16 << 20


def run_cli(*args) -> tuple[int, str]:
    r = CliRunner().invoke(main, [str(a) for a in args])
    return r.exit_code, r.output


def test_force_never_deletes_what_is_not_ours(tmp_path):
    notes = tmp_path / "notes"
    notes.mkdir()
    (notes / "a.csv").write_text("1,2")
    code, out = run_cli("export", NEMO, notes, "--force")
    assert code == 2 and "only a folder sherpa-fixed wrote" in out and (notes / "a.csv").read_text() == "1,2"
    holder = tmp_path / "holder"
    holder.mkdir()
    nemo = holder / "model.nemo"
    nemo.write_bytes(NEMO.read_bytes())
    code, out = run_cli("export", nemo, holder, "--force")
    assert code == 2 and "contains the source file" in out and nemo.read_bytes() == NEMO.read_bytes()
    assert out.count("\n") == 1


def test_two_exports_to_one_output_never_run_at_once(tmp_path):
    with folder_lock(tmp_path), pytest.raises(BadInputError, match=r"still writing here after 0\.2 s"):
        export_nemo(NEMO, tmp_path / "out", wait=0.2)
    assert not (tmp_path / "out").exists()


def test_bad_options_are_one_line(tmp_path):
    for args, says in ((["--static-frames", "10000000"], "not in the range 1<=x<=60000"),
                       (["--num-threads", "-3"], "not in the range x>=1")):
        code, out = run_cli("export", NEMO, tmp_path / "o", *args)
        assert code == 2 and says in out, out
    assert not (tmp_path / "o").exists()


# A real export of a hostile archive, through NeMo: tests/test_kill_points.py (it also kills it at its commit).
