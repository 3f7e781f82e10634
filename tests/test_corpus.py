"""`sherpa-fixed corpus` on one machine: inputs, audio formats, the resumable output, workers, summary.

The oracle model (sherpa_fixed.oracle) reads known text from tone audio, so every transcript here
has a right answer; the kill tests use the speech model on longer audio, so a run lasts long enough
to be killed in the middle.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time

import numpy as np
import pytest
import soundfile as sf
from click.testing import CliRunner

from sherpa_fixed.cli import main
from sherpa_fixed.corpus import read_corpus, transcribe_corpus
from sherpa_fixed.corpus.decode import ModelConfig, decode_item, load_recognizer
from sherpa_fixed.corpus.inputs import MAX_LINE
from sherpa_fixed.errors import BadInputError
from sherpa_fixed.oracle import write_oracle_folder
from sherpa_fixed.safety.lock import FileLock

from .corpus_helpers import (
    SPEECH_MODEL,
    alive,
    assert_exactly_once,
    by_key,
    children,
    cli,
    cmdline,
    make_long_corpus,
    oracle_clip,
    read_out,
    wait_for_lines,
    worker_pids,
    write_manifest,
)

# (file name, soundfile format, subtype, sample rate, channels): every reader path and odd rates/channels
FORMATS = [
    ("a.wav", "WAV", "PCM_16", 44100, 2),
    ("b.wav", "WAV", "FLOAT", 96000, 1),  # (the oracle's tones reach 7 kHz: no rate under 16 kHz)
    ("c.flac", "FLAC", "PCM_24", 22050, 3),
    ("d.ogg", "OGG", "VORBIS", 32000, 2),
    ("e.opus", "OGG", "OPUS", 48000, 1),
    ("f.mp3", "MP3", "MPEG_LAYER_III", 24000, 2),
]


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    """A manifest of six oracle clips in six formats (relative paths, one in a subfolder), with their texts."""
    root = tmp_path_factory.mktemp("corpus")
    model = write_oracle_folder(root / "model")
    (root / "audio" / "sub").mkdir(parents=True)
    entries = []
    for i, (name, fmt, sub, rate, ch) in enumerate(FORMATS):
        audio, text = oracle_clip(100 + i, rate=rate, channels=ch)
        rel = f"audio/sub/{name}" if i % 2 else f"audio/{name}"
        sf.write(root / rel, audio, rate, format=fmt, subtype=sub)
        entries.append({"audio_filepath": rel, "duration": round(len(audio) / rate, 3), "text": text, "speaker": i})
    manifest = write_manifest(root / "train.json", entries)
    return model, manifest, entries


def run(*args):
    r = CliRunner().invoke(main, list(map(str, args)))
    return r.exit_code, r.stdout, r.stderr


# ----------------------------------------------------------------------------- transcripts


def test_every_format_rate_and_channel_count_transcribes_exactly(corpus, tmp_path):
    model, manifest, entries = corpus
    out = tmp_path / "out.json"
    code, stdout, _ = run("corpus", model, manifest, "-o", out, "--workers", 2, "--json", "--timestamps")
    summary = json.loads(stdout)
    assert code == 0, stdout
    lines = assert_exactly_once(out, len(entries))
    for line in lines:
        n = int(line["sherpa_fixed"]["key"].split(":")[0])
        entry = entries[n - 1]
        assert line["pred_text"] == entry["text"], (entry["audio_filepath"], line["pred_text"])
        # the input's own fields come through untouched, ours are added
        assert {k: line[k] for k in entry} == entry
        assert line["pred_timestamps"] == sorted(line["pred_timestamps"])
        assert len(line["pred_tokens"]) == len(line["pred_timestamps"]) > 0
        assert abs(line["sherpa_fixed"]["audio_seconds"] - entry["duration"]) < 0.1
    assert summary["files"] == {"inputs": 6, "in_output": 6, "transcribed": 6, "failed": 0, "missing": 0,
                                "already_done": 0, "decoded_this_run": 6, "failed_this_run": 0}
    assert summary["wer"]["wer"] == 0 and summary["wer"]["files_scored"] == 6
    assert summary["workers"] == 2 and summary["exit_code"] == 0


def test_long_file_is_fed_in_blocks_and_matches_one_whole_decode(tmp_path):
    """100 s at 48 kHz stereo: past the one-pass limit (90 s), so the stream windows it block by block."""
    from sherpa_fixed import OfflineRecognizer
    from sherpa_fixed.corpus.inputs import read_manifest

    model = write_oracle_folder(tmp_path / "model")
    audio, text = oracle_clip(7, tokens=150, rate=48000, channels=2)
    assert len(audio) / 48000 > 95
    sf.write(tmp_path / "long.flac", audio, 48000, subtype="PCM_16")
    item = read_manifest(write_manifest(tmp_path / "m.json", [{"audio_filepath": "long.flac"}]))[0]
    r = decode_item(load_recognizer(ModelConfig(str(model))), item)
    whole = OfflineRecognizer.from_model_dir(model)
    s = whole.create_stream()
    data, rate = sf.read(tmp_path / "long.flac", dtype="float32")
    s.accept_waveform(rate, data.mean(axis=1))
    whole.decode_stream(s)
    assert r.ok and json.loads(r.line)["pred_text"] == s.result.text == text


# ----------------------------------------------------------------------------- inputs


def test_manifest_paths_resolve_like_nemo(tmp_path, monkeypatch):
    (tmp_path / "m").mkdir()
    (tmp_path / "m" / "here.wav").write_bytes(b"x")
    (tmp_path / "cwd").mkdir()
    (tmp_path / "cwd" / "there.wav").write_bytes(b"x")
    monkeypatch.chdir(tmp_path / "cwd")
    items = read_corpus(write_manifest(tmp_path / "m" / "list.json", [
        {"audio_filepath": "here.wav"}, {"audio_filepath": "there.wav"}, {"audio_filepath": "nowhere.wav"},
        {"audio_filepath": str(tmp_path / "m" / "here.wav")}, {"audio_filepath": "here.wav"}])).items
    assert [i.path for i in items] == [str(tmp_path / "m" / "here.wav"), str(tmp_path / "cwd" / "there.wav"),
                                       str(tmp_path / "m" / "nowhere.wav"), str(tmp_path / "m" / "here.wav"),
                                       str(tmp_path / "m" / "here.wav")]
    # the same file twice is two inputs: keys carry the line number
    assert [i.key for i in items] == ["1:here.wav", "2:there.wav", "3:nowhere.wav",
                                      f"4:{tmp_path / 'm' / 'here.wav'}", "5:here.wav"]


@pytest.mark.parametrize("line, message", [
    ('{"audio_filepath": "a.wav"', "line 2 is not JSON"),
    ('["a.wav"]', "line 2 is a JSON list, not an object"),
    ('{"duration": 3}', "line 2 has no audio_filepath"),
    ('{"audio_filepath": ""}', "line 2 has no audio_filepath"),
    ('{"audio_filepath": "a.wav", "duration": -1}', "line 2: duration -1"),
    ('{"audio_filepath": "a.wav", "duration": NaN}', "line 2 is not JSON (NaN is not valid JSON)"),
    ('{"audio_filepath": "a.wav", "text": null}', "line 2: text is NoneType"),
    ("[" * 100000, "line 2 is not JSON"),
    ('{"audio_filepath": "' + "x" * MAX_LINE + '"}', "line 2 is longer than 1 MiB"),
])
def test_bad_manifest_line_is_refused_with_its_number(tmp_path, corpus, line, message):
    model, _, _ = corpus
    m = tmp_path / "m.json"
    m.write_text('{"audio_filepath": "ok.wav"}\n' + line + "\n")
    with pytest.raises(BadInputError, match=message.replace("(", r"\(").replace(")", r"\)")):
        read_corpus(m)
    code, _, err = run("corpus", model, m, "-o", tmp_path / "out.json")
    assert code == 2 and message in err and not (tmp_path / "out.json").exists()


def test_manifest_not_utf8_and_fifo_refused(tmp_path):
    m = tmp_path / "m.json"
    m.write_bytes(b'{"audio_filepath": "\xff.wav"}\n')
    with pytest.raises(BadInputError, match="line 1 is not UTF-8"):
        read_corpus(m)
    os.mkfifo(tmp_path / "fifo.json")
    with pytest.raises(BadInputError, match="is a FIFO"):  # opened without blocking: refused at once
        read_corpus(tmp_path / "fifo.json")


def test_folder_input_recursive(tmp_path, corpus):
    model, manifest, entries = corpus
    folder = manifest.parent / "audio"
    (folder / ".hidden").mkdir(exist_ok=True)
    (folder / ".hidden" / "x.wav").write_bytes(b"junk")
    (folder / "notes.txt").write_text("not audio")
    items = read_corpus(folder).items
    assert sorted(i.key for i in items) == sorted(e["audio_filepath"].removeprefix("audio/") for e in entries)
    out = tmp_path / "out.json"
    s = transcribe_corpus(model, folder, out)
    lines = assert_exactly_once(out, len(entries))
    texts = {e["audio_filepath"].removeprefix("audio/"): e["text"] for e in entries}
    assert all(line["pred_text"] == texts[line["sherpa_fixed"]["key"]] for line in lines)
    assert all(os.path.isabs(line["audio_filepath"]) and line["duration"] > 0 for line in lines)
    assert s.exit_code == 0 and s.tally.wer_json() is None


def test_empty_inputs_are_refused(tmp_path, corpus):
    model, _, _ = corpus
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "readme.txt").write_text("no audio here")
    (tmp_path / "blank.json").write_text("\n\n")
    for source, why in ((tmp_path / "empty", "no audio to transcribe"), (tmp_path / "blank.json", "no manifest lines"),
                        (tmp_path / "nothing", "input not found")):
        code, _, err = run("corpus", model, source, "-o", tmp_path / "out.json")
        assert code == 2 and why in err
    assert not (tmp_path / "out.json").exists()


def test_progress_line():
    import io

    from sherpa_fixed.corpus.progress import ProgressState, TerminalBar

    buf = io.StringIO()
    bar = TerminalBar(buf)
    bar(ProgressState(files_done=3, files_todo=12, failed=1, audio_done=1800.0, audio_todo=7200.0, bytes_done=0,
                      bytes_todo=0, elapsed=60.0), final=True)
    assert buf.getvalue() == "\rcorpus: 3/12 files, 1 failed, 0.50/2.00 h audio, RTF 0.0333, ETA 0:03:00\n"


# ----------------------------------------------------------------------------- failures


def test_undecodable_files_get_error_lines_and_the_run_goes_on(tmp_path, corpus):
    model, _manifest, _entries = corpus
    d = tmp_path
    (d / "garbage.flac").write_bytes(b"not audio at all" * 100)
    (d / "empty.wav").write_bytes(b"")
    os.mkfifo(d / "fifo.wav")  # a reader would block forever
    (d / "folder.wav").mkdir()
    sf.write(d / "short.wav", np.zeros(10, np.float32), 16000)
    audio, _ = oracle_clip(3)
    sf.write(d / "cut.flac", audio, 16000)
    (d / "cut.flac").write_bytes((d / "cut.flac").read_bytes()[:6000])
    sf.write(d / "nan.wav", np.full(16000, np.nan, np.float32), 16000, subtype="FLOAT")
    good, text = oracle_clip(5)
    sf.write(d / "good.wav", good, 16000)
    names = ["garbage.flac", "empty.wav", "fifo.wav", "folder.wav", "short.wav", "cut.flac", "nan.wav",
             "missing.wav", "good.wav"]
    m = write_manifest(d / "m.json", [{"audio_filepath": n} for n in names])
    out = d / "out.json"
    code, stdout, _ = run("corpus", model, m, "-o", out, "--json")
    lines = assert_exactly_once(out, len(names))
    errors = {line["audio_filepath"]: line.get("error") for line in lines}
    assert errors.pop("good.wav") is None
    expected = {"garbage.flac": "not audio that libsndfile can read", "empty.wav": "empty (0 bytes)",
                "fifo.wav": "is a FIFO, not a regular file", "folder.wav": "is a folder",
                "short.wav": "too short to decode", "cut.flac": "damaged or truncated",
                "nan.wav": "NaN or infinite", "missing.wav": "audio file not found"}
    for name, why in expected.items():
        assert why in errors[name] and str(d / name) in errors[name], (name, errors[name])
    assert all("pred_text" not in line for line in lines if "error" in line)
    assert [line["pred_text"] for line in lines if "error" not in line] == [text]
    summary = json.loads(stdout)
    assert code == 1 and summary["files"]["failed"] == 8 and summary["exit_code"] == 1
    code, stdout, _ = run("corpus", model, m, "-o", out)
    assert code == 1 and "8 of 9 files failed" in stdout and "this run: 0 files" in stdout


def test_retry_failed_decodes_only_the_failed_again(tmp_path, corpus):
    model, _, _ = corpus
    a, text_a = oracle_clip(11)
    sf.write(tmp_path / "a.wav", a, 16000)
    m = write_manifest(tmp_path / "m.json", [{"audio_filepath": "a.wav"}, {"audio_filepath": "b.wav"}])
    out = tmp_path / "out.json"
    assert transcribe_corpus(model, m, out).exit_code == 1
    first_a = read_out(out)[0] if read_out(out)[0]["audio_filepath"] == "a.wav" else read_out(out)[1]
    b, text_b = oracle_clip(12)
    sf.write(tmp_path / "b.wav", b, 16000)
    s = transcribe_corpus(model, m, out, retry_failed=True)
    lines = assert_exactly_once(out, 2)
    assert s.exit_code == 0 and s.failed_dropped == 1 and s.run.decoded == 1
    assert by_key(lines) == {"1:a.wav": text_a, "2:b.wav": text_b}
    assert first_a in lines  # the good line was kept as it was, not decoded again


# ----------------------------------------------------------------------------- the resumable output


def test_a_killed_rewrites_temp_file_is_swept_and_nothing_else(tmp_path, corpus):
    """A retry_failed rewrite killed before its rename leaves `.sf-tmp-PID-...-OUT`: the next run removes
    it (its pid is gone), and leaves alone a live run's temp file and a dead run's for another output."""
    model, manifest, entries = corpus
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    mine = tmp_path / f".sf-tmp-{dead.pid}-0123abcd-out.json"
    other_output = tmp_path / f".sf-tmp-{dead.pid}-0123abcd-other.json"
    live = tmp_path / f".sf-tmp-{os.getpid()}-0123abcd-out.json"
    for p in (mine, other_output, live):
        p.write_text("half a rewrite\n")
    s = transcribe_corpus(model, manifest, tmp_path / "out.json")
    assert s.exit_code == 0
    assert_exactly_once(tmp_path / "out.json", len(entries))
    assert not mine.exists() and other_output.exists() and live.exists()


def test_torn_last_line_is_dropped_and_redone(tmp_path, corpus):
    model, manifest, entries = corpus
    out = tmp_path / "out.json"
    transcribe_corpus(model, manifest, out)
    full = out.read_bytes()
    kept = full[:full.index(b"\n", len(full) // 3) + 1]
    torn = full[len(kept):len(kept) + 40]  # a process killed inside its write
    out.write_bytes(kept + torn)
    s = transcribe_corpus(model, manifest, out)
    lines = assert_exactly_once(out, len(entries))
    assert s.torn_bytes_dropped == len(torn) and s.run.decoded == len(entries) - kept.count(b"\n")
    assert all(line["pred_text"] == entries[int(line["sherpa_fixed"]["key"].split(":")[0]) - 1]["text"]
               for line in lines)
    assert out.read_bytes().startswith(kept)  # lines already written are never rewritten


def test_zeros_after_a_crash_count_as_torn(tmp_path, corpus):
    model, manifest, entries = corpus
    out = tmp_path / "out.json"
    transcribe_corpus(model, manifest, out)
    out.write_bytes(out.read_bytes() + b"\0" * 512)  # unsynced blocks after a power cut read as zeros
    s = transcribe_corpus(model, manifest, out)
    assert s.torn_bytes_dropped == 512 and s.run.decoded == 0
    assert_exactly_once(out, len(entries))


@pytest.mark.parametrize("content, message", [
    (b'{"audio_filepath": "a.wav", "pred_text": "x"}\n', "line 1 is not a line sherpa-fixed corpus wrote"),
    (b"hello world", "ends with bytes that are not an output line"),
    (b'{"sherpa_fixed": {"key": "99:other.wav"}}\n', "1 lines are for inputs that are not in this input"),
    (b'{"sherpa_fixed": {"key": "1:audio/a.wav"}}\n' * 2, "line 2 repeats the input"),
])
def test_an_output_that_is_not_ours_is_never_changed(tmp_path, corpus, content, message):
    model, manifest, _ = corpus
    out = tmp_path / "out.json"
    out.write_bytes(content)
    code, _, err = run("corpus", model, manifest, "-o", out)
    assert code == 2 and message in err and out.read_bytes() == content


def test_output_may_not_be_the_input(corpus):
    model, manifest, _ = corpus
    before = manifest.read_bytes()
    code, _, err = run("corpus", model, manifest, "-o", manifest)
    assert code == 2 and "is the input manifest itself" in err and manifest.read_bytes() == before


def test_second_run_on_one_output_refuses_or_waits(tmp_path, corpus):
    model, manifest, entries = corpus
    out = tmp_path / "out.json"
    out.touch()
    holder = FileLock(out, wait=5)  # another run holds OUT
    code, _, err = run("corpus", model, manifest, "-o", out)
    assert code == 2 and "another sherpa-fixed run is still writing here" in err and out.read_bytes() == b""
    notices = []
    timer = threading.Timer(1.0, holder.release)
    timer.start()
    t = time.monotonic()
    s = transcribe_corpus(model, manifest, out, wait=60, notice=notices.append)
    assert time.monotonic() - t >= 0.9 and s.exit_code == 0 and len(notices) == 1
    assert "waiting for it to finish" in notices[0]
    assert_exactly_once(out, len(entries))


def test_wer_counts_substitutions_deletions_insertions(tmp_path, corpus):
    model, _, _ = corpus
    clips = [oracle_clip(40 + i, tokens=8) for i in range(3)]
    for i, (audio, _) in enumerate(clips):
        sf.write(tmp_path / f"{i}.wav", audio, 16000)
    words = [t.split() for _, t in clips]
    refs = [" ".join(words[0]),  # exact
            " ".join(["zzz", *words[1][1:]]),  # one substitution
            " ".join([*words[2][1:], "extra", "more"])]  # one insertion (first word), two deletions
    m = write_manifest(tmp_path / "m.json", [{"audio_filepath": f"{i}.wav", "text": r} for i, r in enumerate(refs)])
    s = transcribe_corpus(model, m, tmp_path / "out.json")
    w = s.to_json()["wer"]
    n = sum(len(r.split()) for r in refs)
    assert (w["substitutions"], w["deletions"], w["insertions"], w["reference_words"]) == (1, 2, 1, n)
    assert w["wer"] == pytest.approx(4 / n, abs=1e-6) and w["files_scored"] == 3


# ----------------------------------------------------------------------------- killing things


N_LONG = 32


@pytest.fixture(scope="module")
def long_corpus(tmp_path_factory):
    """One 40 s FLAC listed 32 times (duplicate paths are distinct inputs), for runs long enough to kill."""
    return make_long_corpus(tmp_path_factory.mktemp("long"), N_LONG, tokens=60)


def test_worker_killed_then_cli_killed_9_then_resumed_exactly_once(tmp_path, long_corpus):
    """Mid-run, one worker is killed (it is replaced and its file handed out again), then the whole command is
    killed with -9 (its workers die with it); the same command finishes the rest, each input once."""
    manifest, text = long_corpus
    out = tmp_path / "out.json"
    p = cli("corpus", SPEECH_MODEL, manifest, "-o", out, "--workers", 2, "--num-threads", 1)
    wait_for_lines(out, 2, p, timeout=120)
    first = [c for c in children(p.pid) if "spawn_main" in cmdline(c)]
    assert len(first) == 2
    os.kill(first[0], signal.SIGKILL)
    deadline = time.monotonic() + 120  # until the replacement has written a line
    while not (worker_pids(read_out(out)) - set(first)) and p.poll() is None:
        assert time.monotonic() < deadline
        time.sleep(0.02)
    everything = children(p.pid)
    at_kill = len(read_out(out))
    os.kill(p.pid, signal.SIGKILL)
    p.wait(timeout=30)
    assert at_kill < N_LONG and p.returncode == -signal.SIGKILL
    deadline = time.monotonic() + 10
    while any(alive(w) for w in everything) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not any(alive(w) for w in everything)  # PR_SET_PDEATHSIG: no orphan decodes for nobody
    s = transcribe_corpus(SPEECH_MODEL, manifest, out, workers=2, num_threads=1)
    lines = assert_exactly_once(out, N_LONG)
    assert s.exit_code == 0 and s.already_done >= at_kill and s.already_done + s.run.decoded == N_LONG
    assert {line["pred_text"] for line in lines} == {text}
