"""`sherpa-fixed corpus --ray` on a real local Ray cluster (127.0.0.1), started here; no mocks.

One head node (2 CPUs) for the session; the multi-node test adds a second node process on the same
machine and kills it mid-run. Runs are the same CLI a user runs, in a subprocess (the driver), and
every check is on the output file: every input exactly once, the same text as local workers.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest
import soundfile as sf

from sherpa_fixed.corpus import transcribe_corpus

from .corpus_helpers import (
    SPEECH_MODEL,
    alive,
    assert_exactly_once,
    cli,
    cmdline,
    lines_in,
    make_long_corpus,
    oracle_clip,
    processes_named,
    wait_for_lines,
    worker_pids,
    write_manifest,
)

RAY = str(Path(sys.executable).parent / "ray")
N_FILES = 24
START_TIMEOUT = 120  # seconds for a node to come up on a loaded 2-core machine


def free_ports(n: int) -> list[int]:
    """n distinct free ports (all held open until chosen, so none is handed out twice)."""
    socks = []
    try:
        for _ in range(n):
            s = socket.socket()
            s.bind(("127.0.0.1", 0))
            socks.append(s)
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


def node_ports() -> list[str]:
    """The ports a node opens by default at fixed numbers, chosen free, so this cluster never collides with
    another one on the machine (worker ports come from Ray's own range, checked free by Ray)."""
    opts = ["--node-manager-port", "--object-manager-port", "--dashboard-agent-listen-port",
            "--dashboard-agent-grpc-port", "--runtime-env-agent-port", "--metrics-export-port"]
    out = []
    for o, port in zip(opts, free_ports(len(opts)), strict=True):
        out += [o, str(port)]
    return out


def start_node(args: list[str], log: Path) -> subprocess.Popen:
    """`ray start ... --block` in its own process group: killing the group kills the whole node.

    (Ray advertises the machine's own address for 127.0.0.1, services.resolve_ip_for_localhost; the
    cluster is on this machine either way, and the tests address it as 127.0.0.1.)"""
    cmd = [RAY, "start", "--node-ip-address", "127.0.0.1", "--disable-usage-stats", "--block", *node_ports(), *args]
    with open(log, "wb") as f:
        return subprocess.Popen(cmd, stdout=f, stderr=subprocess.STDOUT, start_new_session=True)


def wait_started(node: subprocess.Popen, log: Path) -> None:
    """Until `ray start` says the node is up (its raylet registered with the GCS)."""
    deadline = time.monotonic() + START_TIMEOUT
    while b"Ray runtime started" not in (log.read_bytes() if log.exists() else b""):
        assert node.poll() is None, f"the Ray node exited while starting: {_tail(log)}"
        assert time.monotonic() < deadline, f"the Ray node did not start: {_tail(log)}"
        time.sleep(0.1)


def wait_for_cpus(address: str, cpus: int, node: subprocess.Popen, log: Path) -> None:
    """Until a driver sees `cpus` CPUs in the cluster (a new node's resources reach the GCS after it starts)."""
    wait_started(node, log)
    code = ("import ray,sys,time\nray.init(address=sys.argv[1], logging_level='ERROR')\n"
            "t=time.time()\nwhile ray.cluster_resources().get('CPU',0)!=float(sys.argv[2]) and time.time()-t<60:\n"
            "    time.sleep(0.2)\nprint(ray.cluster_resources().get('CPU',0))")
    r = subprocess.run([sys.executable, "-c", code, address, str(cpus)], capture_output=True, text=True,
                       timeout=START_TIMEOUT)
    assert r.returncode == 0 and float(r.stdout.split()[-1]) == cpus, (r.stdout, r.stderr[-2000:], _tail(log))


def _tail(log: Path) -> str:
    try:
        return log.read_text(errors="replace")[-3000:]
    except OSError:
        return "(no log)"


def stop_node(node: subprocess.Popen) -> None:
    """SIGTERM to `ray start --block` (it stops what it started), then SIGKILL to what is left after 3 s (a node
    that lost a peer may drain for 30 s; its actors, in their own process groups, exit with their raylet)."""
    if node.poll() is None:
        node.terminate()
        with contextlib.suppress(subprocess.TimeoutExpired):
            node.wait(timeout=3)
    with contextlib.suppress(ProcessLookupError):
        os.killpg(node.pid, signal.SIGKILL)
    node.wait(timeout=30)


@pytest.fixture(scope="session")
def ray_cluster():
    """(address, temp dir) of a head node with 2 CPUs on 127.0.0.1, for the whole session."""
    temp = tempfile.mkdtemp(prefix="sfray", dir="/tmp")  # short: Ray's socket paths must fit 107 bytes
    port, client_port = free_ports(2)
    log = Path(temp) / "head.log"
    head = start_node(["--head", "--port", str(port), "--num-cpus", "2", "--include-dashboard=false",
                       "--ray-client-server-port", str(client_port), "--object-store-memory", str(150 << 20),
                       "--temp-dir", temp], log)
    address = f"127.0.0.1:{port}"
    try:
        wait_started(head, log)
        yield address, temp
    finally:
        stop_node(head)
        shutil.rmtree(temp, ignore_errors=True)


@pytest.fixture(scope="module")
def long_corpus(tmp_path_factory):
    """N_FILES inputs (one 40 s FLAC listed N_FILES times) and the text its whole decode gives."""
    return make_long_corpus(tmp_path_factory.mktemp("raylong"), N_FILES, tokens=60)


def map_workers(temp: str) -> dict[int, int]:
    """{pid: parent pid} of the Ray Data actor processes of this test's cluster (parent: its raylet)."""
    out = {}
    for pid in processes_named("MapWorker(MapBatches(Transcriber))"):
        try:
            ppid = int(Path(f"/proc/{pid}/stat").read_text().rsplit(") ", 1)[1].split()[1])
        except (OSError, ValueError, IndexError):
            continue
        if temp in cmdline(ppid):
            out[pid] = ppid
    return out


def wait_for_actors(temp: str, n: int, proc: subprocess.Popen, timeout: float = START_TIMEOUT) -> dict[int, int]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = map_workers(temp)
        if len(found) >= n or proc.poll() is not None:
            return found
        time.sleep(0.05)
    raise AssertionError(f"{n} actors did not start in {timeout} s")


def wait_for_busy(actors: list[int], proc: subprocess.Popen) -> int:
    """The first of `actors` seen decoding a bundle (Ray titles an actor running a task `...submit`)."""
    deadline = time.monotonic() + START_TIMEOUT
    while proc.poll() is None:
        busy = [a for a in actors if ".submit" in cmdline(a)]
        if busy:
            return busy[0]
        assert time.monotonic() < deadline, "no actor started decoding"
        time.sleep(0.005)
    raise AssertionError("the run ended before an actor was seen decoding")


def test_ray_same_lines_as_local_workers_and_an_actor_killed_mid_run(ray_cluster, long_corpus, tmp_path):
    """Five formats at odd rates, a missing file and N_FILES longer inputs, with timestamps: an actor is
    killed with -9 mid-run; OUT has every input once, and file for file the lines local workers write."""
    address, temp = ray_cluster
    long_manifest, text = long_corpus
    model = SPEECH_MODEL
    entries = [json.loads(x) for x in long_manifest.read_text().splitlines()]
    for e in entries:
        e["audio_filepath"] = str(long_manifest.parent / e["audio_filepath"])
    for i, (name, rate, ch, sub) in enumerate([("a.flac", 16000, 1, None), ("b.wav", 44100, 2, None),
                                               ("c.ogg", 22050, 1, None), ("d.mp3", 24000, 2, None),
                                               ("e.opus", 48000, 1, "OPUS")]):
        audio, _ = oracle_clip(60 + i, rate=rate, channels=ch)
        sf.write(tmp_path / name, audio, rate, format="OGG" if sub else None, subtype=sub)
        entries.append({"audio_filepath": name, "text": "go six west stop"})
    entries.append({"audio_filepath": "missing.flac", "text": "x"})
    m = write_manifest(tmp_path / "m.json", entries)
    p = cli("corpus", model, m, "-o", tmp_path / "ray.json", "--ray", address, "--workers", 2, "--timestamps",
            "--json")
    actors = wait_for_actors(temp, 2, p)
    assert len(actors) == 2
    victim = wait_for_busy(list(actors), p)
    assert p.poll() is None and lines_in(tmp_path / "ray.json") < len(entries)
    os.kill(victim, signal.SIGKILL)
    stdout, stderr = p.communicate(timeout=300)
    assert p.returncode == 1, stderr  # one file is missing
    summary = json.loads(stdout)  # stdout carries the summary only: Ray's own messages went to stderr
    ray_lines = assert_exactly_once(tmp_path / "ray.json", len(entries))
    assert not alive(victim) and worker_pids(ray_lines) - set(actors)  # fresh actors decoded the lost bundle
    assert summary["recovery"]["files_retried"] >= 1 and summary["runner"] == "ray"
    assert sum(1 for line in ray_lines if line.get("pred_text") == text) == N_FILES

    local = transcribe_corpus(model, m, tmp_path / "local.json", workers=2, num_threads=1, timestamps=True)
    local_lines = assert_exactly_once(tmp_path / "local.json", len(entries))

    def comparable(lines):
        return {line["sherpa_fixed"]["key"]: {k: v for k, v in line.items() if k != "sherpa_fixed"} for line in lines}

    assert comparable(ray_lines) == comparable(local_lines)
    assert summary["wer"] == local.to_json()["wer"] and summary["files"]["failed"] == 1


def test_second_node_dies_mid_run_exactly_once(ray_cluster, long_corpus, tmp_path):
    """A second node joins (1 CPU; the head has 2), so of 3 actors one runs there; while it decodes, the whole
    node (its raylet and actor) is killed with -9. Its bundles are decoded on the head: each input once."""
    address, temp = ray_cluster
    manifest, text = long_corpus
    entries = [json.loads(x) for x in manifest.read_text().splitlines()] * 2  # 48 inputs: work outlasts startup
    for e in entries:
        e["audio_filepath"] = str(manifest.parent / e["audio_filepath"])
    m = write_manifest(tmp_path / "m.json", entries)
    node = start_node(["--address", address, "--num-cpus", "1"], tmp_path / "node2.log")
    try:
        wait_for_cpus(address, 3, node, tmp_path / "node2.log")
        out = tmp_path / "out.json"
        p = cli("corpus", SPEECH_MODEL, m, "-o", out, "--ray", address, "--workers", 3, "--json")
        actors = wait_for_actors(temp, 3, p)
        node_pids = set(_descendants(node.pid))
        on_node2 = [a for a in actors if a in node_pids]
        assert len(actors) == 3 and len(on_node2) == 1, (actors, node_pids)
        wait_for_busy(on_node2, p)
        assert p.poll() is None and lines_in(out) < len(entries)
        os.killpg(node.pid, signal.SIGKILL)
        node.wait(timeout=30)
        stdout, stderr = p.communicate(timeout=300)
        assert p.returncode == 0, stderr
        lines = assert_exactly_once(out, len(entries))
        assert {line["pred_text"] for line in lines} == {text}
        assert not alive(on_node2[0]) and json.loads(stdout)["recovery"]["files_retried"] >= 1
    finally:
        stop_node(node)


def test_driver_killed_9_then_resumed_through_ray_exactly_once(ray_cluster, long_corpus, tmp_path):
    """The driver (the command) is killed with -9 mid-run; Ray ends its actors with it, and the same
    command run again finishes the rest: each input once, nothing already written decoded again."""
    address, temp = ray_cluster
    manifest, text = long_corpus
    out = tmp_path / "out.json"
    args = ("corpus", SPEECH_MODEL, manifest, "-o", out, "--ray", address, "--workers", 2, "--json")
    p = cli(*args)
    actors = wait_for_actors(temp, 2, p)
    wait_for_lines(out, 2, p, timeout=START_TIMEOUT)
    p.kill()
    p.wait(timeout=30)
    at_kill = lines_in(out)
    assert p.returncode == -signal.SIGKILL and 2 <= at_kill < N_FILES
    deadline = time.monotonic() + 60  # Ray ends a dead driver's actors
    while any(alive(a) for a in actors) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not any(alive(a) for a in actors)
    again = cli(*args)
    stdout, stderr = again.communicate(timeout=300)
    assert again.returncode == 0, stderr
    summary = json.loads(stdout)
    lines = assert_exactly_once(out, N_FILES)
    assert {line["pred_text"] for line in lines} == {text}
    files = summary["files"]
    assert files["already_done"] >= at_kill and files["already_done"] + files["decoded_this_run"] == N_FILES


def _descendants(pid: int) -> list[int]:
    from .corpus_helpers import children

    out, todo = [], [pid]
    while todo:
        p = todo.pop()
        try:
            kids = children(p)
        except OSError:
            continue
        out += kids
        todo += kids
    return out
