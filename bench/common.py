"""Helpers for benchmarks: run a command in a child process and report wall time and peak RSS.

Every benchmark compares our command with a baseline run side by side, in
separate child processes (so peak RSS is each one's own), several times,
reporting the median.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

OUT = Path(os.environ.get("SHERPA_FIXED_BENCH_DIR", Path(__file__).parent / "out"))
LOCK = "/tmp/sherpa-heavy.lock"  # the machine is shared: one timing run at a time


@contextlib.contextmanager
def heavy_lock(enabled: bool = True):
    """Hold LOCK (exclusive flock) for the body, so two timing runs never share the CPUs."""
    if not enabled:
        yield
        return
    with open(LOCK, "w") as f:
        print(f"waiting for {LOCK} ...", file=sys.stderr, flush=True)
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)

# Runs `code` in a child Python, then prints that child's own peak RSS in KiB. VmHWM is per
# address space, so unlike ru_maxrss it does not inherit the parent's peak across fork+exec.
_WRAP = r"""
import sys, json
code = sys.argv[1]
exec(compile(code, "<bench>", "exec"), {"__name__": "__bench__"})
hwm = next(int(l.split()[1]) for l in open("/proc/self/status") if l.startswith("VmHWM:"))
print("@@RSS@@" + json.dumps(hwm), file=sys.stderr)
"""


def measure_python(code: str, repeat: int = 3, cwd: str | None = None) -> dict:
    """Median wall seconds and max peak RSS (MB) of a Python snippet run in fresh processes."""
    walls, rss = [], []
    for _ in range(repeat):
        t = time.perf_counter()
        p = subprocess.run([sys.executable, "-c", _WRAP, code], capture_output=True, text=True, cwd=cwd)
        walls.append(time.perf_counter() - t)
        if p.returncode != 0:
            raise RuntimeError(f"benchmark child failed ({p.returncode}): {p.stderr[-2000:]}")
        line = next(ln for ln in p.stderr.splitlines() if ln.startswith("@@RSS@@"))
        rss.append(json.loads(line[7:]) / 1024)
    return {"wall_s": statistics.median(walls), "peak_rss_mb": max(rss), "runs": repeat}


def measure_command(argv: list[str], repeat: int = 3, setup=None) -> dict:
    """Median wall seconds and peak RSS (MB) of an external command (polling its VmHWM)."""
    walls, rss = [], []
    for _ in range(repeat):
        if setup:
            setup()
        t = time.perf_counter()
        p = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        peak = 0
        while p.poll() is None:
            try:
                with open(f"/proc/{p.pid}/status") as f:
                    for line in f:
                        if line.startswith("VmHWM:"):
                            peak = max(peak, int(line.split()[1]))
            except OSError:
                pass
            time.sleep(0.005)
        walls.append(time.perf_counter() - t)
        if p.returncode != 0:
            raise RuntimeError(f"{argv} failed: {p.stderr.read()[-2000:]}")
        rss.append(peak / 1024)
    return {"wall_s": statistics.median(walls), "peak_rss_mb": max(rss), "runs": repeat}


def drop_caches() -> bool:
    """Empty the page cache (root only) so a run reads from disk, as right after a download."""
    try:
        with open("/proc/sys/vm/drop_caches", "w") as f:
            f.write("3\n")
        return True
    except OSError:
        return False


def measure_interleaved(commands: dict[str, list[str]], *, setup=None, repeat: int = 5,
                        cold: bool = False) -> dict[str, dict]:
    """Run several commands in turn, `repeat` rounds, with `setup()` and a full `sync` before each run.

    Writing gigabytes leaves dirty pages whose writeback slows whatever runs next; syncing first
    and alternating the commands gives each the same conditions. Medians are reported.
    """
    walls: dict[str, list[float]] = {k: [] for k in commands}
    rss: dict[str, list[float]] = {k: [] for k in commands}
    for _ in range(repeat):
        for name, argv in commands.items():
            if setup:
                setup()
            os.sync()
            if cold and not drop_caches():
                raise RuntimeError("cold-cache runs need root (writing /proc/sys/vm/drop_caches)")
            r = measure_command(argv, repeat=1)
            walls[name].append(r["wall_s"])
            rss[name].append(r["peak_rss_mb"])
    return {k: {"wall_s": statistics.median(walls[k]), "min_wall_s": min(walls[k]), "peak_rss_mb": max(rss[k]),
                "runs": repeat, "all_wall_s": [round(w, 2) for w in walls[k]]} for k in commands}


def _cmdline(pid: int) -> bytes | None:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            return f.read()
    except OSError:
        return None


def _tree(pid: int) -> list[int]:
    """`pid` and every process below it (Linux /proc/PID/task/TID/children) that has exec'd its own program.

    A child forked but not yet exec'd (subprocess with preexec_fn runs Python code in between) is
    the parent's image: its VmHWM/VmRSS would count the parent's pages a second time. It is left
    out until its command line differs from its parent's; exec starts a fresh address space, whose
    VmHWM is the child's own.
    """
    out, todo = [], [(pid, None)]
    while todo:
        p, parent_cmd = todo.pop()
        cmd = _cmdline(p)
        if cmd is None or cmd == parent_cmd:
            continue
        out.append(p)
        try:
            for tid in os.listdir(f"/proc/{p}/task"):
                with open(f"/proc/{p}/task/{tid}/children") as f:
                    todo += [(int(c), cmd) for c in f.read().split()]
        except OSError:
            pass
    return out


def _status_kb(pid: int) -> tuple[int, int]:
    """(VmHWM, VmRSS) of one process in KiB; (0, 0) once it is gone."""
    hwm = rss = 0
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    hwm = int(line.split()[1])
                elif line.startswith("VmRSS:"):
                    rss = int(line.split()[1])
    except OSError:
        pass
    return hwm, rss


def measure_tree(argv: list[str], *, stdout=subprocess.DEVNULL, poll: float = 0.01) -> dict:
    """One run of `argv` in a fresh child: wall and CPU seconds, and its peak RSS from /proc, process by process.

    `peak_rss_mb` is the child's own VmHWM (per address space, unlike the ru_maxrss of a forked
    child, which counts the parent's pages); `descendant_peak_mb` the largest VmHWM of any process
    it started (sherpa-onnx's check runs in one); `sum_peak_mb` the largest sampled sum of VmRSS
    over the tree, the memory the command held at once. CPU time comes from wait4, so it includes
    every descendant the child waited for.
    """
    with tempfile.TemporaryFile() as err_file:  # a pipe left unread would block a chatty child
        t = time.perf_counter()
        p = subprocess.Popen(argv, stdout=stdout, stderr=err_file)
        hwm: dict[int, int] = {}
        sum_peak = 0
        while True:
            pid, status, ru = os.wait4(p.pid, os.WNOHANG)
            if pid == p.pid:
                break
            total = 0
            for q in _tree(p.pid):
                h, r = _status_kb(q)
                hwm[q] = max(hwm.get(q, 0), h)
                total += r
            sum_peak = max(sum_peak, total)
            time.sleep(poll)
        wall = time.perf_counter() - t
        p.returncode = os.waitstatus_to_exitcode(status)
        if p.returncode != 0:
            err_file.seek(0)
            raise RuntimeError(f"{argv} failed ({p.returncode}): {err_file.read().decode(errors='replace')[-2000:]}")
    others = [v for k, v in hwm.items() if k != p.pid]
    return {"wall_s": wall, "cpu_s": ru.ru_utime + ru.ru_stime, "peak_rss_mb": hwm.get(p.pid, 0) / 1024,
            "descendant_peak_mb": max(others, default=0) / 1024, "sum_peak_mb": sum_peak / 1024,
            "ru_maxrss_mb": ru.ru_maxrss / 1024}


def fs_type(path: Path) -> str:
    """Filesystem type and mount options of the folder, for the record (e.g. ext4 with discard)."""
    best = ("?", "", "")
    real = os.path.realpath(path)
    with open("/proc/mounts") as f:
        for line in f:
            _dev, mnt, typ, opts, *_ = line.split()
            if real.startswith(mnt.rstrip("/") + "/") and len(mnt) >= len(best[1]):
                best = (typ, mnt, opts)
    return f"{best[0]} at {best[1]}, {best[2]}"


def big_folder(name: str, *, layers: int, d_model: int = 1024, pos_emb_max_len: int | None = 5000,
               **spec) -> Path:
    """A NeMo-shaped folder whose encoder.weights is large; reused across runs (bench/out/)."""
    from sherpa_fixed.testing import ModelSpec, write_big_model_folder

    folder = OUT / name
    marker = folder / ".complete"
    if marker.exists():
        return folder
    write_big_model_folder(folder, ModelSpec(d_model=d_model, layers=layers, pos_emb_max_len=pos_emb_max_len,
                                             **spec))
    marker.write_text("ok")
    return folder


def gib(n: int) -> str:
    return f"{n / (1 << 30):.2f} GiB"


def timed_decode(recognizer, audio, sample_rate: int = 16000):
    """One decode of a whole array through a sherpa-onnx-style recognizer: (seconds, result)."""
    import time

    t = time.perf_counter()
    s = recognizer.create_stream()
    s.accept_waveform(sample_rate, audio)
    recognizer.decode_stream(s)
    return time.perf_counter() - t, s.result
