"""The same work on a Ray cluster: Ray Data, a pool of actors that each load the model once, one writer.

The driver (the process running `sherpa-fixed corpus --ray ADDRESS`) turns the inputs still to do
into a Ray Dataset of bundles (a few files, at most BUNDLE_SECONDS of audio, longest first, so a
half-hour recording is a bundle of its own and short clips share one task's overhead; smaller towards
the end, so the run does not end waiting on one big bundle), and maps
them with `map_batches` over a fixed-size pool of actors (ActorPoolStrategy). Each actor loads the
recognizer once (decode.load_recognizer, as a local worker does) and returns one output line per
file of its bundle (decode.decode_item, the same function local workers call, so the lines are the
same). The lines stream back to the driver, which is the only writer of OUT (output.py).

Failures: an actor that dies is restarted by Ray (max_restarts=-1), but the bundle it held is not
queued for it again (max_task_retries=0: its node may be gone for good, and a task waiting for an
actor that never comes back would hang the run); Ray Data drops that block and goes on
(max_errored_blocks=-1), and the files no actor returned are decoded in a second pass by fresh
actors, then in a last pass one file per task. A result the driver already wrote is dropped by its
key, so every input is in OUT exactly once. Killed with -9, the driver takes its actors with it (Ray
ends a job's actors when its driver dies); run it again to finish.

Every node must see the model folder and the audio at the same absolute paths as the driver (a shared
filesystem, or the same copy at the same path on each node), and have sherpa-fixed installed.
"""

from __future__ import annotations

import contextlib
import gc
import json
import logging
import os
import sys
import warnings
from collections.abc import Iterator, Sequence

from ..errors import BadInputError
from .decode import ModelConfig, Result, decode_item, failure, load_recognizer
from .inputs import Item
from .summary import Losses

BUNDLE_SECONDS = 60.0  # audio per Ray task: long enough to hide per-task overhead, short enough to balance
BUNDLE_FILES = 64
BUNDLES_PER_WORKER = 4
BYTES_PER_SECOND = 32000  # size-based guess when a file's duration is unknown (16 kHz 16-bit PCM)
ACTOR_INIT_DEATHS = 3  # consecutive actor deaths while loading the model before the run gives up
PASSES = 3  # passes over the files no actor returned (the last one file per task)


def estimate_seconds(item: Item) -> float:
    if item.seconds is not None:
        return item.seconds
    return (item.size or 0) / BYTES_PER_SECOND


def bundles(todo: Sequence[Item], workers: int = 1, seconds: float = BUNDLE_SECONDS,
            files: int = BUNDLE_FILES) -> list[list[Item]]:
    """Consecutive runs of `todo` (already longest first): guided self-scheduling, each bundle at most
    1/(BUNDLES_PER_WORKER x workers) of the audio not yet bundled, `seconds` of audio and `files` files. Early
    bundles are large (per-task overhead amortised); the last ones, which decide when the run ends, hold a
    file or two, so no actor is left decoding a big bundle alone at the end."""
    share = max(1, BUNDLES_PER_WORKER * workers)
    left = sum(estimate_seconds(i) for i in todo)
    out: list[list[Item]] = []
    cur: list[Item] = []
    cur_s = 0.0
    for item in todo:
        s = estimate_seconds(item)
        if cur and (cur_s + s > min(seconds, left / share) or len(cur) >= files):
            out.append(cur)
            left -= cur_s
            cur, cur_s = [], 0.0
        cur.append(item)
        cur_s += s
    if cur:
        out.append(cur)
    return out


class _RayDataNotices(logging.Filter):
    """Ray Data's console lines, fitted to this command: no notice that its progress bars are off (the
    corpus command draws its own), and a bundle dropped because its actor died is one line, not a
    traceback (its files go to the next pass)."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = str(record.getMessage())
        if message.startswith("Progress bars disabled"):
            return False
        if message.startswith("An exception was raised from a task") and record.exc_info:
            why = " ".join(str(record.exc_info[1]).split())[:300]
            record.msg, record.args, record.exc_info = (f"a Ray task failed; its files go to the next pass: "
                                                        f"{why}"), (), None
        return True


def _import_ray():
    try:
        import ray
        import ray.data
    except ImportError as exc:
        raise BadInputError("--ray needs Ray (with Ray Data), which is not installed",
                            fix='pip install "sherpa-fixed[ray]"') from exc
    return ray


class Transcriber:
    """The Ray actor's callable: loads the recognizer once; each call decodes one bundle of files."""

    def __init__(self, config: dict):
        self.config = ModelConfig(**config)
        if not os.path.isdir(self.config.model_dir):
            raise BadInputError(f"the model folder is not on this node ({os.uname().nodename})",
                                path=self.config.model_dir,
                                fix="every Ray node must see the model folder at the same path as the driver")
        self.recognizer = load_recognizer(self.config)

    def __call__(self, batch: dict) -> dict:
        results = []
        for bundle in batch["bundle"]:
            for d in json.loads(bundle):
                item = Item.from_json(d)
                try:
                    r = decode_item(self.recognizer, item, self.config.timestamps)
                except Exception as exc:  # never lose a bundle to one file
                    r = failure(item, f"{item.path}: internal error, please report it: {type(exc).__name__}: {exc}")
                results.append(json.dumps(r.to_json(), ensure_ascii=False))
        return {"result": results}


def cluster_workers(ray, threads: int) -> int:
    """Actors the cluster's CPUs hold at `threads` CPUs each (at least one)."""
    return max(1, int(ray.cluster_resources().get("CPU", 1) // threads))


def run_ray(address: str, todo: Sequence[Item], config: ModelConfig, workers: int | None,
            on_start=None, losses: Losses | None = None) -> Iterator[Result]:
    """Decode `todo` on the Ray cluster at `address` ("auto", "HOST:PORT", "ray://HOST:PORT", "local").

    on_start(workers) is called once the pool size is known. Yields Results in completion order.

    A bundle whose actor dies is not retried on that actor (it may never come back: its node is gone
    and no other node has room for it); Ray Data drops the failed block and goes on, and the files
    that came back from no actor are run again in a second pass, and in a last pass one file per
    task, so a file that kills every worker that decodes it takes only itself down and gets an error
    line. A pass that decodes nothing at all stops the run (exit 2) instead: the cluster is broken."""
    ray = _import_ray()
    connected_here = not ray.is_initialized()
    if connected_here:
        try:
            ray.init(address=address, logging_level=logging.WARNING, log_to_driver=False)
        except (ConnectionError, ValueError, RuntimeError) as exc:
            raise BadInputError(f"cannot connect to the Ray cluster at {address!r}: {exc}",
                                fix="start one with `ray start --head`, or give --ray the address it printed "
                                    "(or auto on a cluster node)") from exc
    # Ray prints the errors its cluster reports (a worker died, ...) on stdout; stdout is the command's
    # output (--json), so they go to stderr for the run.
    with contextlib.redirect_stdout(sys.stderr):
        yield from _passes(ray, todo, config, workers, on_start, connected_here,
                           losses if losses is not None else Losses(workers_died=None))


def _passes(ray, todo, config, workers, on_start, connected_here, losses: Losses) -> Iterator[Result]:
    try:
        n = workers or cluster_workers(ray, config.num_threads)
        if on_start is not None:
            on_start(n)
        _quiet_ray_data(ray)
        remaining = list(todo)
        for attempt in range(PASSES):
            if not remaining:
                return
            done: set[str] = set()
            last = attempt == PASSES - 1 and attempt > 0
            for r in _one_pass(ray, remaining, config, n, one_file_per_task=last):
                done.add(r.key)
                yield r
            if not done:
                raise BadInputError(f"the Ray cluster decoded none of the {len(remaining)} files in a pass (its "
                                    "workers died)", path=config.model_dir,
                                    fix="check the cluster (ray status) and run the same command again; lines "
                                        "written so far are kept")
            remaining = [i for i in remaining if i.key not in done]
            losses.files_retried += len(remaining) if attempt < PASSES - 1 else 0
        for item in remaining:
            yield failure(item, f"{item.path}: the Ray worker decoding this file died, in each of {PASSES} attempts")
    finally:
        if connected_here:
            ray.shutdown()


def _quiet_ray_data(ray) -> None:
    ctx = ray.data.DataContext.get_current()
    ctx.enable_progress_bars = False  # the corpus command draws its own
    ctx.print_on_execution_start = False
    ctx.max_consecutive_actor_init_deaths = ACTOR_INIT_DEATHS
    ctx.max_errored_blocks = -1  # a bundle whose actor died is dropped; the next pass decodes its files
    data_log = logging.getLogger("ray.data")
    data_log.setLevel(logging.WARNING)  # no per-run INFO lines between our progress bar and summary
    for h in data_log.handlers:
        if not any(isinstance(f, _RayDataNotices) for f in h.filters):
            h.addFilter(_RayDataNotices())


def _one_pass(ray, items: Sequence[Item], config: ModelConfig, n: int, one_file_per_task: bool) -> Iterator[Result]:
    groups = [[i] for i in items] if one_file_per_task else bundles(items, n)
    rows = [{"bundle": json.dumps([i.to_json() for i in g], ensure_ascii=False)} for g in groups]
    ds = ray.data.from_items(rows, override_num_blocks=len(rows))
    # Two bundles in flight per actor: the next one is there when the last ends (with one, each bundle waited
    # for a round trip through the driver: the speech model ran at 0.65-0.78 of local workers). The bundles
    # shrink towards the end (bundles()), so the one queued behind a busy actor at the end is small.
    kwargs = {"fn_constructor_kwargs": {"config": config.to_json()}, "batch_size": 1, "num_cpus": config.num_threads,
              "compute": ray.data.ActorPoolStrategy(size=min(n, len(rows)), max_tasks_in_flight_per_actor=2)}
    # max_task_retries=0: a task is never queued for an actor that may never restart (see run_ray). Ray 2.60
    # deprecates passing it here (for removal in 2.64, with no named replacement yet); where it is refused,
    # Ray Data's default (retry on the restarted actor) is what runs.
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*ray_remote_args.*deprecated")
        try:
            ds = ds.map_batches(Transcriber, max_restarts=-1, max_task_retries=0, **kwargs)
        except TypeError:
            ds = ds.map_batches(Transcriber, **kwargs)
    rows_iter = ds.iter_rows()
    try:
        for row in rows_iter:
            yield Result(**json.loads(row["result"]))
    except ray.exceptions.RayError as exc:
        raise BadInputError(f"the Ray run failed: {_cause(exc)}", path=config.model_dir,
                            fix="lines written so far are kept; fix the cause and run the same command "
                                "again") from exc
    finally:
        # The pass's actors hold their CPUs until its executor is collected: a next pass started before
        # that waited 19 s for resources (measured, 2 CPUs, one actor killed).
        del rows_iter, ds
        gc.collect()


def _cause(exc: BaseException) -> str:
    """The innermost message of a Ray error (an actor's BadInputError arrives wrapped twice)."""
    seen = exc
    while getattr(seen, "cause", None) is not None and seen.cause is not seen:
        seen = seen.cause
    text = " ".join(str(seen).split())
    return text[-600:]
