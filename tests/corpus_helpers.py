"""Shared by the corpus tests: audio with a known transcript (the oracle model), manifests, OUT checks."""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import numpy as np

from sherpa_fixed.decoding.audio import resample
from sherpa_fixed.oracle import expected_text, oracle_audio, random_tokens

REPO = Path(__file__).resolve().parent.parent
SPEECH_MODEL = REPO / "tests" / "data" / "speech" / "dynamic"


def oracle_clip(seed: int, tokens: int = 6, rate: int = 16000, channels: int = 1) -> tuple[np.ndarray, str]:
    """(frames x channels float32 at `rate`, the text the oracle model reads from it)."""
    toks = random_tokens(tokens, seed)
    audio, _ = oracle_audio(toks, seed=seed)
    if rate == 48000 and len(audio) > 60 * 16000:  # long: 3x by interpolation (the sinc resampler takes seconds)
        audio = np.interp(np.arange(len(audio) * 3) / 3, np.arange(len(audio)), audio).astype(np.float32)
    elif rate != 16000:
        audio = resample(audio, 16000, rate)
    return np.repeat(audio[:, None], channels, axis=1).astype(np.float32), expected_text(toks)


def make_long_corpus(root: Path, n: int, tokens: int) -> tuple[Path, str]:
    """A manifest listing one oracle-tone FLAC (22.05 kHz) n times, and the text the speech model reads from it
    (decoded once here, in this process)."""
    import soundfile as sf

    from sherpa_fixed.corpus import read_corpus
    from sherpa_fixed.corpus.decode import ModelConfig, decode_item, load_recognizer

    audio, _ = oracle_clip(9, tokens=tokens, rate=22050)
    sf.write(root / "talk.flac", audio, 22050)
    m = write_manifest(root / "m.json", [{"audio_filepath": "talk.flac", "n": i} for i in range(n)])
    r = decode_item(load_recognizer(ModelConfig(str(SPEECH_MODEL), num_threads=1)), read_corpus(m).items[0])
    text = json.loads(r.line)["pred_text"]
    assert r.ok and len(text.split()) > 10
    return m, text


def worker_pids(lines: list[dict]) -> set[int]:
    return {int(line["sherpa_fixed"]["worker"].rsplit(":", 1)[1]) for line in lines}


def write_manifest(path: Path, entries: list[dict]) -> Path:
    path.write_text("".join(json.dumps(e) + "\n" for e in entries), encoding="utf-8")
    return path


def read_out(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


def keys_of(lines: list[dict]) -> Counter:
    return Counter(line["sherpa_fixed"]["key"] for line in lines)


def assert_exactly_once(out: Path, n_inputs: int) -> list[dict]:
    """Every input's key once, every line complete, nothing else; returns the lines."""
    raw = out.read_bytes()
    assert raw.endswith(b"\n")
    lines = read_out(out)
    keys = keys_of(lines)
    assert len(keys) == n_inputs and set(keys.values()) == {1}, keys.most_common(3)
    return lines


def by_key(lines: list[dict], field: str = "pred_text") -> dict:
    return {line["sherpa_fixed"]["key"]: line.get(field) for line in lines}


def cli(*args: str, **kw) -> subprocess.Popen:
    """`sherpa-fixed ARGS` in a new process group (so a test can kill it and everything it started)."""
    return subprocess.Popen([sys.executable, "-m", "sherpa_fixed.cli", *map(str, args)], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, start_new_session=True, **kw)


def lines_in(path: Path) -> int:
    try:
        return path.read_bytes().count(b"\n")
    except FileNotFoundError:
        return 0


def wait_for_lines(path: Path, n: int, proc: subprocess.Popen, timeout: float) -> int:
    """Poll until OUT has at least n lines (or the process ended); the count."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        k = lines_in(path)
        if k >= n or proc.poll() is not None:
            return k
        time.sleep(0.02)
    raise AssertionError(f"{path} did not reach {n} lines in {timeout} s (has {lines_in(path)})")


def children(pid: int) -> list[int]:
    """Direct children of pid (Linux /proc)."""
    out = []
    for task in Path(f"/proc/{pid}/task").iterdir():
        with contextlib.suppress(OSError):
            out += [int(x) for x in (task / "children").read_text().split()]
    return out


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:  # a zombie is dead for our purposes
        return Path(f"/proc/{pid}/stat").read_text().split(") ")[-1][0] != "Z"
    except OSError:
        return False


def cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return ""


def processes_named(fragment: str) -> list[int]:
    """PIDs whose command line (process title) contains `fragment`."""
    found = []
    for p in Path("/proc").iterdir():
        if not p.name.isdigit():
            continue
        try:
            cmd = (p / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if fragment in cmd:
            found.append(int(p.name))
    return found
