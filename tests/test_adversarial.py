"""Folders built by an attacker or a careless tool: nothing outside the folder is read, nothing is lost.

Each case plants a secret outside the model folder and checks that no
command copies a byte of it, that the refusal is one line with exit 2, and
that the source and the would-be output are left exactly as they were.
"""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import pytest
from click.testing import CliRunner
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from sherpa_fixed.cli import main
from sherpa_fixed.decoding.recognizer import OfflineRecognizer
from sherpa_fixed.errors import BadInputError
from sherpa_fixed.reading.findings import CANNOT_WORK, WORKS
from sherpa_fixed.reading.inspector import inspect_folder
from sherpa_fixed.rewriting.prepare import prepare_folder
from sherpa_fixed.safety.confine import model_root, outside_reason
from sherpa_fixed.safety.output import MARKER
from sherpa_fixed.testing import ModelSpec, make_hf_snapshot, write_model_folder

SECRET = b"PRIVATE-KEY-" * 4096  # bigger than any tensor, so any tensor pointed at it reads only secret bytes


def snapshot(folder: Path) -> dict[str, tuple[bytes, int]]:
    """Every entry below folder: content (or link target) and mode, so any change is seen."""
    out = {}
    for p in sorted(folder.rglob("*")):
        if p.is_symlink():
            out[str(p.relative_to(folder))] = (os.readlink(p).encode(), 0)
        elif p.is_file():
            out[str(p.relative_to(folder))] = (p.read_bytes(), stat.S_IMODE(p.stat().st_mode))
    return out


def point_tensor_at(folder: Path, location: str, offset: int = 0, length: int | None = None) -> str:
    """Make the encoder's biggest external tensor read from `location`; return the tensor's name."""
    path = folder / "encoder.onnx"
    m = onnx.load(str(path), load_external_data=False)
    t = max((t for t in m.graph.initializer if t.data_location == onnx.TensorProto.EXTERNAL),
            key=lambda t: int({e.key: e.value for e in t.external_data}["length"]))
    for e in t.external_data:
        if e.key == "location":
            e.value = location
        elif e.key == "offset":
            e.value = str(offset)
        elif e.key == "length" and length is not None:
            e.value = str(length)
    onnx.save(m, str(path))
    return t.name


@pytest.fixture
def planted(tmp_path):
    """(model folder, secret file outside it)."""
    secret = tmp_path / "secret.bin"
    secret.write_bytes(SECRET)
    folder = write_model_folder(tmp_path / "model", ModelSpec(external="single", metadata="wrong_feat_dim"))
    return folder, secret


def leaked(root: Path) -> bool:
    return any(b"PRIVATE-KEY-" in p.read_bytes() for p in root.rglob("*") if p.is_file() and not p.is_symlink())


def run_cli(*args) -> tuple[int, str]:
    r = CliRunner().invoke(main, [str(a) for a in args])
    return r.exit_code, r.output


ATTACKS = {
    "absolute": lambda folder, secret: point_tensor_at(folder, str(secret)),
    "climbing": lambda folder, secret: point_tensor_at(folder, "../secret.bin"),
    "deep-climbing": lambda folder, secret: point_tensor_at(folder, "sub/../../secret.bin"),
    "symlink-out": lambda folder, secret: (os.symlink(secret, folder / "evil.weights"),
                                           point_tensor_at(folder, "evil.weights"))[1],
    "symlinked-weights-file": lambda folder, secret: ((folder / "encoder.weights").unlink(),
                                                      os.symlink(secret, folder / "encoder.weights"))[0],
    "symlinked-dir": lambda folder, secret: (os.symlink(secret.parent, folder / "up"),
                                             point_tensor_at(folder, "up/secret.bin"))[1],
}


@pytest.mark.parametrize("attack", sorted(ATTACKS))
def test_outside_weights_are_refused_before_a_byte_is_read(planted, tmp_path, attack):
    folder, secret = planted
    ATTACKS[attack](folder, secret)
    before = snapshot(folder)
    report = inspect_folder(folder)
    assert report.verdict.code == CANNOT_WORK
    assert any(c == "external.outside" for m in report.variants[0].models.values() for c, _ in m.external.problems)
    code, out = run_cli("inspect", folder)
    assert code == 2 and "prepare" not in out.split("next:")[-1]  # no advice to run what would refuse
    for args in (["--output", tmp_path / "out"], ["--in-place"], ["--output", tmp_path / "out2", "--inline"]):
        code, out = run_cli("prepare", folder, *args)
        assert code == 2, out
        lines = [ln for ln in out.splitlines() if ln.strip()]
        assert len(lines) == 1 and "outside the model folder" in lines[0], out
    assert snapshot(folder) == before
    assert not (tmp_path / "out").exists() and not (tmp_path / "out2").exists()
    assert not leaked(tmp_path / "model")
    with pytest.raises(BadInputError, match="outside the model folder"):
        OfflineRecognizer.from_model_dir(folder)


def test_model_file_symlinked_out_of_the_folder_is_refused(planted, tmp_path):
    folder, _ = planted
    elsewhere = tmp_path / "elsewhere.onnx"
    os.replace(folder / "joiner.onnx", elsewhere)
    os.symlink(elsewhere, folder / "joiner.onnx")
    code, out = run_cli("inspect", folder)
    assert code == 2 and "outside the model folder" in out
    code, out = run_cli("prepare", folder, "--output", tmp_path / "out")
    assert code == 2 and not (tmp_path / "out").exists()


def test_other_files_symlinked_out_are_not_copied_into_the_output(tmp_path):
    secret = tmp_path / "id_rsa"
    secret.write_bytes(SECRET)
    folder = write_model_folder(tmp_path / "model", ModelSpec(metadata="wrong_feat_dim"))
    os.symlink(secret, folder / "README.md")
    code, out = run_cli("prepare", folder, "--output", tmp_path / "out")
    assert code == 2 and "outside the model folder" in out
    assert not (tmp_path / "out").exists() and not leaked(tmp_path / "model")


@pytest.mark.parametrize("kind", ["fifo", "loop", "dir", "dangling"])
def test_weights_that_are_not_files_fail_cleanly(planted, tmp_path, kind):
    folder, _ = planted
    w = folder / "encoder.weights"
    w.unlink()
    if kind == "fifo":
        os.mkfifo(w)  # reading it would block forever
    elif kind == "loop":
        os.symlink("encoder.weights", w)
    elif kind == "dir":
        w.mkdir()
    else:
        os.symlink("nowhere.bin", w)
    report = inspect_folder(folder)
    assert report.verdict.code == CANNOT_WORK
    code, out = run_cli("prepare", folder, "--output", tmp_path / "out")
    assert code == 2 and len(out.strip().splitlines()) == 1, out
    assert not (tmp_path / "out").exists()


def test_sparse_huge_weights_file_is_judged_by_stat_alone(planted, tmp_path):
    """A 1 TiB sparse file: inspect must not read it (it would take hours) and must still find the tensor."""
    folder, _ = planted
    w = folder / "encoder.weights"
    with open(w, "r+b") as f:
        f.truncate(1 << 40)
    report = inspect_folder(folder)
    assert report.verdict.code != CANNOT_WORK  # offsets fit, nothing is missing: the size alone says so


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(location=st.one_of(
    st.text(alphabet="ab./\\~:", min_size=1, max_size=24),
    st.sampled_from(["/", "..", ".", "../", "/etc/passwd", "~/x", "C:\\x", "\\\\server\\x", "a/../../x",
                     "./././../x", "encoder.weights/..", "%2e%2e/x", "a\0b"])),
    offset=st.integers(min_value=-(1 << 40), max_value=1 << 62),
    length=st.one_of(st.none(), st.integers(min_value=-10, max_value=1 << 62)))
def test_any_location_and_offset_reads_nothing_outside_and_never_crashes(tmp_path_factory, location, offset,
                                                                         length):
    base = tmp_path_factory.mktemp("h")
    secret = base / "secret.bin"
    secret.write_bytes(SECRET)
    folder = write_model_folder(base / "model", ModelSpec(external="single", metadata="wrong_feat_dim"))
    try:
        point_tensor_at(folder, location, offset, length)
    except (ValueError, onnx.checker.ValidationError):
        return  # onnx itself cannot write this location (e.g. NUL)
    before = snapshot(folder)
    code, out = run_cli("prepare", folder, "--output", base / "out")
    assert code in (0, 1, 2), out  # never an internal error (3)
    assert snapshot(folder) == before
    if (base / "out").exists():
        assert not leaked(base / "out")
        assert code in (0, 1)
    else:
        assert len([ln for ln in out.splitlines() if ln.strip()]) == 1, out


# ----------------------------------------------------------------------------- Hugging Face snapshots


@pytest.fixture
def hf(tmp_path):
    src = write_model_folder(tmp_path / "m", ModelSpec(external="single", metadata="wrong_feat_dim"))
    return make_hf_snapshot(src, tmp_path / "hub")


def _blobs(snap: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in (snap.parent.parent / "blobs").iterdir()}


def test_hf_snapshot_counts_its_blobs_as_inside(hf):
    assert model_root(hf) == (hf.parent.parent).resolve()
    assert outside_reason(hf, hf / "encoder.weights") is None
    assert outside_reason(hf, hf.parent.parent.parent) is not None  # the rest of the cache is outside


def test_hf_snapshot_prepare_output_writes_real_files_and_decodes(hf, tmp_path):
    blobs = _blobs(hf)
    out = tmp_path / "prepared"
    result = prepare_folder(hf, output=out)
    assert result.exit_code == 0, result.checks
    assert not any(p.is_symlink() for p in out.iterdir())
    rec = OfflineRecognizer.from_model_dir(out)
    s = rec.create_stream()
    s.accept_waveform(16000, np.random.default_rng(0).standard_normal(16000).astype(np.float32) * 0.1)
    rec.decode_stream(s)
    assert isinstance(s.result.text, str)
    assert _blobs(hf) == blobs


def test_hf_snapshot_in_place_replaces_links_never_blobs(hf):
    blobs = _blobs(hf)
    result = prepare_folder(hf, in_place=True)
    assert result.exit_code == 0, result.checks
    assert not (hf / "encoder.onnx").is_symlink()  # the link was replaced by the new graph
    assert _blobs(hf) == blobs  # every blob byte-identical, shared revisions untouched
    assert inspect_folder(hf).verdict.code == WORKS
    code, out = run_cli("prepare", hf, "--in-place")
    assert code == 0 and "nothing needs doing" in out


def test_hf_snapshot_that_stock_loads_is_used_as_is(tmp_path):
    src = write_model_folder(tmp_path / "m", ModelSpec(external="single"))
    snap = make_hf_snapshot(src, tmp_path / "hub")
    assert inspect_folder(snap).verdict.code == WORKS
    code, out = run_cli("prepare", snap, "--dry-run")
    assert code == 0 and "nothing needs doing" in out
    rec = OfflineRecognizer.from_model_dir(snap)  # used to raise a raw RuntimeError (blobs/encoder.weights)
    s = rec.create_stream()
    s.accept_waveform(16000, np.zeros(16000, dtype=np.float32))
    rec.decode_stream(s)
    wav = tmp_path / "a.wav"
    import wave
    with wave.open(str(wav), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(16000)
        w.writeframes((np.sin(np.arange(16000) * 0.05) * 3000).astype("<i2").tobytes())
    code, out = run_cli("transcribe", snap, wav)
    assert code == 0, out


# ----------------------------------------------------------------------------- --output and --force


def test_force_onto_an_ancestor_of_the_source_is_refused(tmp_path):
    parent = tmp_path / "models"
    src = write_model_folder(parent / "raw", ModelSpec(metadata="wrong_feat_dim"))
    (parent / "notes.txt").write_text("mine")
    before = snapshot(parent)
    for target in (parent, tmp_path, src / "out", src):
        code, out = run_cli("prepare", src, "--output", target, "--force")
        assert code == 2, (target, out)
    assert snapshot(parent) == before


def test_force_replaces_only_a_model_folder(tmp_path):
    src = write_model_folder(tmp_path / "raw", ModelSpec(metadata="wrong_feat_dim"))
    home = tmp_path / "home"
    (home / "photos").mkdir(parents=True)
    (home / "diary.txt").write_text("x")
    code, out = run_cli("prepare", src, "--output", home, "--force")
    assert code == 2 and "only a folder sherpa-fixed wrote" in out and "diary.txt" in out and "photos/" in out
    assert (home / "diary.txt").exists() and (home / "photos").is_dir()
    # A model folder sherpa-fixed did not write (no marker listing its files) is not ours to delete either.
    other = write_model_folder(tmp_path / "other", ModelSpec())
    before = snapshot(other)
    code, out = run_cli("prepare", src, "--output", other, "--force")
    assert code == 2 and f"(no {MARKER})" in out and snapshot(other) == before
    code, _ = run_cli("prepare", src, "--output", tmp_path / "out")
    assert code == 0 and json.loads((tmp_path / "out" / MARKER).read_text())["command"] == "prepare"
    code, out = run_cli("prepare", src, "--output", tmp_path / "out", "--force")
    assert code == 0, out
    # Ours, but the user has put a file of their own in it since: refused, the file kept.
    (tmp_path / "out" / "my-notes.md").write_text("notes")
    code, out = run_cli("prepare", src, "--output", tmp_path / "out", "--force")
    assert code == 2 and "my-notes.md" in out and (tmp_path / "out" / "my-notes.md").read_text() == "notes"


def test_failed_run_creates_no_output_folder(tmp_path):
    src = write_model_folder(tmp_path / "raw", ModelSpec(external="truncated"))
    code, _ = run_cli("prepare", src, "--output", tmp_path / "out")
    assert code == 2 and not (tmp_path / "out").exists()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".sf-")]


def test_rewritten_files_keep_their_mode(tmp_path):
    src = write_model_folder(tmp_path / "raw", ModelSpec(external="scattered", metadata="wrong_feat_dim"))
    for p in src.iterdir():
        p.chmod(0o440)
    src.chmod(0o755)
    out = tmp_path / "out"
    assert prepare_folder(src, output=out).exit_code == 0
    for p in out.iterdir():
        if p.name != MARKER:  # the list of what sherpa-fixed wrote is its own file
            assert stat.S_IMODE(p.stat().st_mode) == 0o440, p.name
    assert prepare_folder(src, in_place=True).exit_code == 0
    for name in ("encoder.onnx", "encoder.weights"):
        assert stat.S_IMODE((src / name).stat().st_mode) == 0o440


def test_json_reports_refusal_as_one_line_too(planted, tmp_path):
    folder, secret = planted
    point_tensor_at(folder, str(secret))
    proc = subprocess.run([sys.executable, "-m", "sherpa_fixed.cli", "prepare", str(folder), "--output",
                           str(tmp_path / "o"), "--json"], capture_output=True, text=True)
    assert proc.returncode == 2
    assert len(proc.stderr.strip().splitlines()) == 1 and "outside" in proc.stderr
    if proc.stdout.strip():
        json.loads(proc.stdout)


def test_probe_never_reads_outside_weights(planted, tmp_path):
    """inspect --probe runs the graph in onnxruntime: the in-memory copy must not be a way around confinement."""
    folder, secret = planted
    os.symlink(secret, folder / "evil.weights")
    point_tensor_at(folder, "evil.weights")
    report = inspect_folder(folder, probe=True)
    assert report.verdict.code == CANNOT_WORK
    probe = report.variants[0].probe
    assert probe is None or probe.time_baked is None  # it could not run, and says why instead of reading
