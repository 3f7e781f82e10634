"""N worker processes on this machine, each with its own recognizer; results come back to the one writer.

Workers are started with multiprocessing's `spawn` (a fresh interpreter: no inherited onnxruntime
threads or locks, no copy of the parent's OUT descriptor or its lock), load the model once, then
take one file at a time over their own pipe, so the parent always knows which file each worker
holds. A worker that dies (killed, out of memory, a crash inside onnxruntime) is replaced and its
file handed out again; a file that takes a worker down MAX_ATTEMPTS times gets an error line
instead, so one poisonous file cannot stop a corpus. Workers are SIGKILLed by the kernel when the
parent dies (PR_SET_PDEATHSIG), so a parent killed with -9 leaves no orphans decoding for nobody;
they ignore Ctrl-C, which the parent handles by stopping them.
"""

from __future__ import annotations

import contextlib
import multiprocessing as mp
import os
import signal
from collections import Counter, deque
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from multiprocessing.connection import Connection, wait

from ..errors import BadInputError, SherpaFixedError
from .decode import ModelConfig, Result, decode_item, failure, load_recognizer
from .inputs import Item
from .summary import Losses

MAX_ATTEMPTS = 2  # times a file may be in a worker that dies before it gets an error line


@dataclass
class _Worker:
    proc: mp.process.BaseProcess
    conn: Connection
    current: Item | None = None
    ready: bool = False
    stopping: bool = False


def run_local(todo: Sequence[Item], config: ModelConfig, workers: int, losses: Losses | None = None
              ) -> Iterator[Result]:
    """Decode `todo` in `workers` processes, yielding each Result as it arrives (in completion order)."""
    losses = losses if losses is not None else Losses()
    ctx = mp.get_context("spawn")
    queue = deque(todo)
    attempts: Counter[str] = Counter()
    pool: list[_Worker] = []
    budget = 2 * workers + 2  # replacements allowed for workers that die before loading the model

    def start() -> None:
        parent, child = ctx.Pipe(duplex=True)
        proc = ctx.Process(target=_worker_main, args=(child, config.to_json(), os.getpid()), daemon=True,
                           name="sherpa-fixed-corpus-worker")
        proc.start()
        child.close()
        pool.append(_Worker(proc, parent))

    def give(w: _Worker) -> None:
        if queue:
            w.current = queue.popleft()
            payload = w.current.to_json()
        else:
            w.current, payload, w.stopping = None, None, True
        with contextlib.suppress(OSError):  # it died: its sentinel says so, and its file goes back to the queue
            w.conn.send(payload)

    try:
        for _ in range(min(workers, len(queue))):
            start()
        while pool:
            ready = set(wait([w.conn for w in pool] + [w.proc.sentinel for w in pool]))
            for w in list(pool):
                if w.conn in ready or w.proc.sentinel in ready:
                    for kind, payload in _drain(w.conn):
                        if kind == "load_failed":
                            raise BadInputError(payload)
                        if kind == "ready":
                            w.ready = True
                        elif kind == "result":
                            w.current = None
                            yield Result(**payload)
                        give(w)
                if w.proc.sentinel not in ready:
                    continue
                w.proc.join()
                pool.remove(w)
                w.conn.close()
                if w.stopping and w.current is None:
                    continue
                why = _death(w.proc.exitcode)
                losses.workers_died += 1
                if w.current is not None:
                    attempts[w.current.key] += 1
                    if attempts[w.current.key] >= MAX_ATTEMPTS:
                        yield failure(w.current, f"{w.current.path}: the worker process died while decoding this "
                                                 f"file, {MAX_ATTEMPTS} times ({why})")
                    else:
                        queue.appendleft(w.current)
                        losses.files_retried += 1
                if not w.ready:
                    budget -= 1
                    if budget < 0:
                        raise BadInputError(f"worker processes keep dying while loading the model ({why})",
                                            path=config.model_dir, fix="fewer --workers may fit in memory")
                if queue:
                    start()
    finally:
        for w in pool:
            if w.proc.is_alive():
                w.proc.kill()
        for w in pool:
            w.proc.join(timeout=10)
            w.conn.close()


def _drain(conn: Connection) -> Iterator[tuple[str, object]]:
    try:
        while conn.poll():
            yield conn.recv()
    except (EOFError, OSError):
        return


def _death(exitcode: int | None) -> str:
    if exitcode is not None and exitcode < 0:
        try:
            return f"killed by {signal.Signals(-exitcode).name}"
        except ValueError:
            return f"killed by signal {-exitcode}"
    return f"exit code {exitcode}"


def _worker_main(conn: Connection, config: dict, parent_pid: int) -> None:
    """A worker: load the recognizer, then decode one Item per message until told to stop (None)."""
    from ..decoding.sherpa_check import die_with_parent

    die_with_parent()
    if os.getppid() != parent_pid:  # the parent died before the request took effect
        os._exit(1)
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    cfg = ModelConfig(**config)
    try:
        recognizer = load_recognizer(cfg)
    except SherpaFixedError as exc:
        conn.send(("load_failed", exc.one_line()))
        return
    except Exception as exc:
        conn.send(("load_failed", f"{cfg.model_dir}: the model could not be loaded: {type(exc).__name__}: {exc}"))
        return
    conn.send(("ready", None))
    while True:
        try:
            msg = conn.recv()
        except (EOFError, OSError):
            return
        if msg is None:
            return
        result = decode_item(recognizer, Item.from_json(msg), cfg.timestamps)
        try:
            conn.send(("result", result.to_json()))
        except OSError:
            return
