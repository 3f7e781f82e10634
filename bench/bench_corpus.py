"""`sherpa-fixed corpus` throughput: 1 and 2 local workers and Ray on the same 2 CPUs (issue 24).

    flock /tmp/sherpa-heavy.lock python bench/bench_corpus.py speech --rounds 5 --repeat 4
    flock /tmp/sherpa-heavy.lock python bench/bench_corpus.py int8 --rounds 3 --seconds 450
    python bench/bench_corpus.py writer            # the driver's per-line cost (no model)
    python bench/bench_corpus.py memory            # one worker's peak RSS: 1 min vs 30 min of FLAC
    flock /tmp/sherpa-heavy.lock python bench/bench_corpus.py wer   # set A once: corpus vs whole decoding

Each run is the CLI a user runs, in a fresh process, on a NeMo manifest made from the shared set A
(/work/shared/speech/setA: 10 long-form recordings of 60-240 s and 200 short clips, FLAC 16 kHz),
the set listed `--repeat` times (a listed file is one more input; the page cache holds the audio).
Configurations, all on 2 CPUs, interleaved round by round (the order rotates every round):

- local-1x2: 1 worker process, 2 onnxruntime threads
- local-2x1: 2 worker processes, 1 thread each
- ray-2x1:   2 Ray actors, 1 thread each, on a local Ray head started here with --num-cpus 2

Reported per configuration (medians over rounds): audio seconds per wall second end to end (the
command's whole life: imports, model loads, Ray connection), the steady rate between the first and
the last line written (all the audio over that time: it overstates runs of few long files, and favours
Ray, whose first line waits for a whole bundle), the in-worker rate (audio over the workers' summed
per-file decode seconds / workers: decoding only, no startup, idle time or tail), startup (until the
first line), CPU seconds of every process involved (the
CLI, its workers or the actors, and for Ray the raylet/GCS/agents' CPU during the run), and the
peak RSS (VmHWM) of the parent/driver and of each worker or actor. Ray's overhead is the ratio of
ray-2x1 to local-2x1 within each round (same CPUs, same threads per worker, same files).

`speech` uses the tiny speech model (tests/data/speech/dynamic) and also reports WER against set A's
transcripts (each run's summary); `int8` uses the 1.1B architecture's int8 set
(/work/scratch/realscale/int8, random weights: throughput only) on the first `--seconds` of audio
(short clips and long-form recordings in set A's proportion). `wer` runs set A once (210 distinct files:
the standard error of a run on the repeated set counts each file 4 times and is too small by about 2x)
through `corpus` with 2 local workers and compares every line with the same file decoded whole, in one
accept_waveform, by the drop-in recognizer and by stock sherpa-onnx (whole utterance, no windows).
Results: docs/corpus.md.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))

from common import OUT

REPO = Path(__file__).resolve().parent.parent
SET_A = Path("/work/shared/speech/setA")
MODELS = {"speech": REPO / "tests" / "data" / "speech" / "dynamic", "int8": Path("/work/scratch/realscale/int8")}
CLK = os.sysconf("SC_CLK_TCK")
CONFIGS = {"local-1x2": (None, 1, 2), "local-2x1": (None, 2, 1), "ray-2x1": ("ray", 2, 1)}


# ----------------------------------------------------------------------------- the corpus


def set_a_entries() -> list[dict]:
    out = []
    for part in ("long", "short"):
        for e in json.loads((SET_A / f"{part}.json").read_text()):
            out.append({"audio_filepath": str(SET_A / e["file"]), "duration": e["seconds"], "text": e["text"]})
    return out


def write_manifest(path: Path, repeat: int, seconds: float | None) -> tuple[Path, float]:
    entries = set_a_entries()
    if seconds is not None:  # long and short in set A's proportion, up to `seconds` of audio
        longs = [e for e in entries if e["duration"] > 30]
        shorts = [e for e in entries if e["duration"] <= 30]
        total_long = sum(e["duration"] for e in longs)
        share = total_long / (total_long + sum(e["duration"] for e in shorts))
        picked, t = [], 0.0
        for e in sorted(longs, key=lambda e: e["duration"]):
            if t + e["duration"] <= seconds * share:
                picked.append(e)
                t += e["duration"]
        for e in shorts:
            if t + e["duration"] <= seconds:
                picked.append(e)
                t += e["duration"]
        entries = picked
    entries = entries * repeat
    path.write_text("".join(json.dumps(e) + "\n" for e in entries))
    return path, sum(e["duration"] for e in entries)


# ----------------------------------------------------------------------------- a local Ray head


def _free_ports(n: int) -> list[int]:
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


class RayHead:
    """`ray start --head --num-cpus 2 --block` on 127.0.0.1 in its own process group, its own ports and temp dir."""

    def __init__(self, cpus: int = 2):
        self.temp = tempfile.mkdtemp(prefix="sfbench", dir="/tmp")
        opts = ("--port", "--node-manager-port", "--object-manager-port", "--dashboard-agent-listen-port",
                "--dashboard-agent-grpc-port", "--runtime-env-agent-port", "--metrics-export-port",
                "--ray-client-server-port")
        chosen = _free_ports(len(opts))
        self.address = f"127.0.0.1:{chosen[0]}"
        ports = [x for o, p in zip(opts, chosen, strict=True) for x in (o, str(p))]
        cmd = [str(Path(sys.executable).parent / "ray"), "start", "--head", "--block", "--node-ip-address",
               "127.0.0.1", "--num-cpus", str(cpus), "--include-dashboard=false", "--disable-usage-stats",
               "--object-store-memory", str(300 << 20), "--temp-dir", self.temp, *ports]
        self.log = open(Path(self.temp) / "head.log", "wb")  # noqa: SIM115 (closed in stop)
        self.proc = subprocess.Popen(cmd, stdout=self.log, stderr=subprocess.STDOUT, start_new_session=True)
        code = ("import ray,sys,time\nray.init(address=sys.argv[1], logging_level='ERROR')\nt=time.time()\n"
                "while ray.cluster_resources().get('CPU',0)<1 and time.time()-t<60: time.sleep(0.2)\n")
        for _ in range(60):
            if subprocess.run([sys.executable, "-c", code, self.address], capture_output=True).returncode == 0:
                return
            time.sleep(1)
        raise RuntimeError("the Ray head did not start")

    def pids(self) -> list[int]:
        """The cluster's own processes (their command lines name its temp dir) and the actors they started."""
        own = [p for p in _all_pids() if self.temp in _cmdline(p)]
        return own + [p for p in _all_pids() if _ppid(p) in own]

    def stop(self) -> None:
        self.proc.terminate()
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.proc.wait(timeout=10)
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.proc.pid, signal.SIGKILL)
        self.proc.wait(timeout=30)
        self.log.close()
        shutil.rmtree(self.temp, ignore_errors=True)


# ----------------------------------------------------------------------------- watching processes


def _all_pids() -> list[int]:
    return [int(p) for p in os.listdir("/proc") if p.isdigit()]


def _cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return ""


def _ppid(pid: int) -> int:
    try:
        return int(Path(f"/proc/{pid}/stat").read_text().rsplit(") ", 1)[1].split()[1])
    except (OSError, ValueError, IndexError):
        return -1


def _cpu_s(pid: int) -> float | None:
    try:
        f = Path(f"/proc/{pid}/stat").read_text().rsplit(") ", 1)[1].split()
        return (int(f[11]) + int(f[12])) / CLK
    except (OSError, ValueError, IndexError):
        return None


def _hwm_mb(pid: int) -> float | None:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        return None
    return None


def _descendants(pid: int) -> list[int]:
    out, todo = [], [pid]
    kids: dict[int, list[int]] = {}
    for p in _all_pids():
        kids.setdefault(_ppid(p), []).append(p)
    while todo:
        for k in kids.get(todo.pop(), []):
            out.append(k)
            todo.append(k)
    return out


def run_once(config: str, model: Path, manifest: Path, out_dir: Path, head: RayHead | None) -> dict:
    runner, workers, threads = CONFIGS[config]
    out = out_dir / f"{config}.json"
    out.unlink(missing_ok=True)
    argv = [sys.executable, "-m", "sherpa_fixed.cli", "corpus", str(model), str(manifest), "-o", str(out),
            "--workers", str(workers), "--num-threads", str(threads), "--json"]
    if runner == "ray":
        argv += ["--ray", head.address]
    base_cpu = {p: _cpu_s(p) or 0.0 for p in head.pids()} if head else {}
    cpu: dict[int, float] = {}
    hwm: dict[int, float] = {}
    role: dict[int, str] = {}
    first = None
    watched: list[int] = []
    refreshed = 0.0
    before = os.times()
    t0 = time.perf_counter()
    p = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=REPO)
    while p.poll() is None:
        now = time.perf_counter()
        if now - refreshed >= 1.0:  # scanning /proc costs CPU: the process list once a second, samples 4x
            watched = [p.pid, *_descendants(p.pid)] + (head.pids() if head else [])
            refreshed = now
        for pid in watched:
            c, m = _cpu_s(pid), _hwm_mb(pid)
            if c is not None:
                cpu[pid] = c
            if m is not None:
                hwm[pid] = max(hwm.get(pid, 0.0), m)
            if role.get(pid) != "worker":  # a prestarted Ray worker becomes an actor later: look again
                cmd = _cmdline(pid)
                role[pid] = ("driver" if pid == p.pid else "worker" if "spawn_main" in cmd or "MapWorker" in cmd
                             else "ray-system" if head else "other")
        if first is None and out.exists() and out.stat().st_size:
            first = time.perf_counter() - t0
        time.sleep(0.25)
    wall = time.perf_counter() - t0
    stdout, stderr = p.communicate()
    if p.returncode not in (0, 1):
        raise RuntimeError(f"{config} failed ({p.returncode}): {stderr[-3000:]}")
    summary = json.loads(stdout)
    lines = [json.loads(x) for x in out.read_text().splitlines()]
    audio = sum(x["sherpa_fixed"]["audio_seconds"] for x in lines)
    after = os.times()
    if runner == "ray":  # actors and Ray's own processes are not our children: sampled from /proc
        cpu_used = sum(c - base_cpu.get(pid, 0.0) for pid, c in cpu.items())
    else:  # the CLI and the workers it waited for, exactly
        cpu_used = (after.children_user - before.children_user) + (after.children_system - before.children_system)
    workers_hwm = sorted((hwm[pid] for pid in hwm if role.get(pid) == "worker"), reverse=True)
    # per file, in the worker: decode_seconds = overhead + rtf * audio_seconds (least squares over the lines)
    xs = [x["sherpa_fixed"]["audio_seconds"] for x in lines]
    ys = [x["sherpa_fixed"]["decode_seconds"] for x in lines]
    mx, my = statistics.fmean(xs), statistics.fmean(ys)
    slope = sum((x - mx) * (y - my) for x, y in zip(xs, ys, strict=True)) / max(1e-12, sum((x - mx) ** 2 for x in xs))
    return {"config": config, "wall_s": wall, "per_file_overhead_s": my - slope * mx, "worker_rtf": slope,
            "startup_s": first or wall, "audio_s": audio,
            "audio_per_wall": audio / wall, "steady_audio_per_wall": audio / max(1e-9, wall - (first or 0)),
            "cpu_s": cpu_used, "driver_peak_mb": hwm.get(p.pid, 0.0), "worker_peak_mb": workers_hwm[:workers],
            "files": len(lines), "failed": summary["files"]["failed"], "wer": summary["wer"],
            "decode_s": sum(x["sherpa_fixed"]["decode_seconds"] for x in lines),
            "in_worker_audio_per_s": audio / max(1e-9, sum(ys) / workers)}


# ----------------------------------------------------------------------------- the driver's per-line cost


def writer_bench(n: int = 20000) -> dict:
    """Lines per second the one writer sustains: parse a worker's result, dedupe, append, fsync in batches, tally
    (with WER: every line has a 20-word reference)."""
    from sherpa_fixed.corpus.decode import Result
    from sherpa_fixed.corpus.inputs import Item
    from sherpa_fixed.corpus.output import Output

    words = ["box", "blue", "room", "up", "light", "three", "one", "house", "big", "up", "turn", "dog", "house",
             "nine", "one", "stop", "white", "door", "yes"]
    tmp = Path(tempfile.mkdtemp(prefix="sfwriter"))
    try:
        results = []
        for i in range(n):
            item = Item(f"{i + 1}:a{i}.flac", f"/data/a{i}.flac", {"audio_filepath": f"a{i}.flac", "duration": 4.2,
                                                                  "text": " ".join(words)}, 4.2, 1000)
            line = dict(item.fields, pred_text=" ".join([*words[1:], "cat"]),
                        sherpa_fixed={"key": item.key, "audio_seconds": 4.2, "decode_seconds": 0.4, "worker": "h:1"})
            results.append(json.dumps(Result(item.key, json.dumps(line), True, 4.2, 0.4).to_json()))
        out = {}
        for with_wer in (False, True):
            path = tmp / f"out{with_wer}.json"
            t = time.perf_counter()
            with Output(path, {f"{i + 1}:a{i}.flac" for i in range(n)}) as o:
                for raw in results:
                    r = Result(**json.loads(raw))
                    if o.append(r.key, r.line):
                        obj = json.loads(r.line)
                        if not with_wer:
                            obj.pop("text")
                        o.tally.add(obj)
            out["lines_per_s_wer" if with_wer else "lines_per_s"] = n / (time.perf_counter() - t)
        return out
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


# ----------------------------------------------------------------------------- one long file's memory

_MEMORY = r"""
import sys, time
from sherpa_fixed.corpus.decode import ModelConfig, decode_item, load_recognizer
from sherpa_fixed.corpus.inputs import Item
rec = load_recognizer(ModelConfig(sys.argv[2], num_threads=1))
loaded = next(int(l.split()[1]) for l in open("/proc/self/status") if l.startswith("VmHWM:"))
t = time.time()
r = decode_item(rec, Item("k", sys.argv[1], {}, None, None))
peak = next(int(l.split()[1]) for l in open("/proc/self/status") if l.startswith("VmHWM:"))
print(json.dumps({"ok": r.ok, "audio_s": r.audio_seconds, "decode_s": time.time() - t, "loaded_mb": loaded / 1024,
                  "peak_mb": peak / 1024}))
""".replace("import sys, time", "import json, sys, time")


def memory_bench(model: Path) -> dict:
    """Peak RSS of one worker decoding 1 minute and 30 minutes of set A's long-form speech (FLAC): the file is
    read in blocks into the stream, so the half hour should cost what the minute costs."""
    import numpy as np
    import soundfile as sf

    work = Path(tempfile.mkdtemp(prefix="sfmem-", dir="/work/scratch"))
    try:
        parts = [sf.read(SET_A / e["file"], dtype="float32")[0] for e in json.loads((SET_A / "long.json").read_text())]
        x = np.concatenate(parts)
        x = np.concatenate([x] * (1 + 1800 * 16000 // len(x)))[:1800 * 16000]
        out = {}
        for name, n in (("1 min", 60 * 16000), ("30 min", len(x))):
            path = work / f"{n}.flac"
            sf.write(path, x[:n], 16000)
            r = subprocess.run([sys.executable, "-c", _MEMORY, str(path), str(model)], capture_output=True, text=True)
            out[name] = json.loads(r.stdout.strip().splitlines()[-1])
        return out
    finally:
        shutil.rmtree(work, ignore_errors=True)


# ----------------------------------------------------------------------------- WER against whole decoding


def _points(x: float | None) -> float | None:
    return None if x is None else round(100 * x, 3)


def wer_bench(model: Path) -> dict:
    """Set A once through the CLI (2 local workers), each line against one whole-file decode of the same file by the
    drop-in (which windows past 90 s, as corpus does) and by stock sherpa-onnx (whole utterance, no windows)."""
    import sherpa_onnx
    import soundfile as sf

    from sherpa_fixed import OfflineRecognizer
    from sherpa_fixed.checking.accuracy import transducer_files
    from sherpa_fixed.checking.wer import paired_standard_error, standard_error, total, word_errors

    work = Path(tempfile.mkdtemp(prefix="sfcorpus-wer-", dir="/work/scratch"))
    try:
        manifest, _ = write_manifest(work / "manifest.json", 1, None)
        out = work / "out.json"
        argv = [sys.executable, "-m", "sherpa_fixed.cli", "corpus", str(model), str(manifest), "-o", str(out),
                "--workers", "2", "--num-threads", "1", "--json"]
        p = subprocess.run(argv, capture_output=True, text=True, cwd=REPO)
        if p.returncode != 0:
            raise RuntimeError(f"corpus failed ({p.returncode}): {p.stderr[-3000:]}")
        lines = {x["audio_filepath"]: x for x in map(json.loads, out.read_text().splitlines())}
        stock = sherpa_onnx.OfflineRecognizer.from_transducer(num_threads=2, **transducer_files(model))
        dropin = OfflineRecognizer.from_model_dir(model, num_threads=2)
        rows = []
        for e in set_a_entries():
            x, rate = sf.read(e["audio_filepath"], dtype="float32")
            texts = {}
            for name, rec in (("dropin", dropin), ("stock", stock)):
                s = rec.create_stream()
                s.accept_waveform(rate, x if x.ndim == 1 else x.mean(axis=1))
                rec.decode_stream(s)
                texts[name] = s.result.text
            rows.append({"long": e["duration"] > 30, "over_90s": e["duration"] > 90, "text": e["text"],
                         "corpus": lines[e["audio_filepath"]]["pred_text"], **texts})
        res = {"summary_wer": json.loads(p.stdout)["wer"]}
        for part, rs in (("all", rows), ("long", [r for r in rows if r["long"]]),
                         ("short", [r for r in rows if not r["long"]])):
            errs = {k: [word_errors(r["text"], r[k]) for r in rs] for k in ("corpus", "dropin", "stock")}
            d = {k: {**total(v).to_json(), "wer_percent": round(100 * total(v).wer, 3),
                     "se_points": _points(standard_error(v))} for k, v in errs.items()}
            d["files"] = len(rs)
            d["same_text_as_dropin_whole"] = sum(r["corpus"] == r["dropin"] for r in rs)
            d["same_text_as_stock_whole"] = sum(r["corpus"] == r["stock"] for r in rs)
            d["files_over_90s"] = sum(r["over_90s"] for r in rs)
            d["same_text_as_stock_whole_up_to_90s"] = sum(r["corpus"] == r["stock"] for r in rs if not r["over_90s"])
            d["corpus_minus_stock_points"] = round(d["corpus"]["wer_percent"] - d["stock"]["wer_percent"], 3)
            d["paired_se_points"] = _points(paired_standard_error(errs["corpus"], errs["stock"]))
            res[part] = d
        return res
    finally:
        shutil.rmtree(work, ignore_errors=True)


# ----------------------------------------------------------------------------- main


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("model", choices=[*MODELS, "writer", "memory", "wer"])
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--repeat", type=int, default=1, help="list set A this many times")
    ap.add_argument("--seconds", type=float, help="only this much audio of set A (int8 runs)")
    ap.add_argument("--configs", default=",".join(CONFIGS))
    args = ap.parse_args()
    OUT.mkdir(parents=True, exist_ok=True)
    if args.model in ("writer", "memory", "wer"):
        res = {"writer": writer_bench, "memory": lambda: memory_bench(MODELS["speech"]),
               "wer": lambda: wer_bench(MODELS["speech"])}[args.model]()
        print(json.dumps(res, indent=1))
        (OUT / f"corpus_{args.model}.json").write_text(json.dumps(res, indent=1))
        return
    work = Path(tempfile.mkdtemp(prefix=f"sfcorpus-{args.model}-", dir="/work/scratch"))
    manifest, total = write_manifest(work / "manifest.json", args.repeat, args.seconds)
    configs = args.configs.split(",")
    print(f"{args.model}: {total / 3600:.3f} h of audio per run, configs {configs}, {args.rounds} rounds", flush=True)
    head = RayHead(2) if any(c.startswith("ray") for c in configs) else None
    rows: list[dict] = []
    try:
        for r in range(args.rounds):
            order = configs[r % len(configs):] + configs[:r % len(configs)]
            for c in order:
                res = run_once(c, MODELS[args.model], manifest, work, head)
                res["round"] = r
                rows.append(res)
                print(json.dumps({k: (round(v, 3) if isinstance(v, float) else v) for k, v in res.items()
                                  if k != "wer"}), flush=True)
    finally:
        if head:
            head.stop()
        shutil.rmtree(work, ignore_errors=True)
    report = summarize(rows, configs)
    (OUT / f"corpus_{args.model}.json").write_text(json.dumps({"rows": rows, "summary": report}, indent=1))
    print(json.dumps(report, indent=1))


def summarize(rows: list[dict], configs: list[str]) -> dict:
    out = {}
    for c in configs:
        rs = [r for r in rows if r["config"] == c]
        out[c] = {k: round(statistics.median(r[k] for r in rs), 3) for k in
                  ("wall_s", "startup_s", "audio_per_wall", "steady_audio_per_wall", "in_worker_audio_per_s", "cpu_s",
                   "driver_peak_mb", "per_file_overhead_s", "worker_rtf")}
        out[c]["worker_peak_mb"] = max((max(r["worker_peak_mb"]) for r in rs if r["worker_peak_mb"]), default=None)
        out[c]["wer"] = rs[0]["wer"]
        out[c]["files"] = rs[0]["files"]
    if "ray-2x1" in configs and "local-2x1" in configs:
        per_round = []
        for r in sorted({r["round"] for r in rows}):
            a = next(x for x in rows if x["round"] == r and x["config"] == "ray-2x1")
            b = next(x for x in rows if x["round"] == r and x["config"] == "local-2x1")
            per_round.append({"end_to_end": round(a["audio_per_wall"] / b["audio_per_wall"], 3),
                              "steady": round(a["steady_audio_per_wall"] / b["steady_audio_per_wall"], 3),
                              "in_worker": round(a["in_worker_audio_per_s"] / b["in_worker_audio_per_s"], 3)})
        out["ray_vs_local_2x1_per_round"] = per_round
    return out


if __name__ == "__main__":
    main()
