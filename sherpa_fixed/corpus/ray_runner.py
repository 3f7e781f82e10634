"""The same work on a Ray cluster: Ray Data, a pool of actors that each load the model once, one writer.

The driver (the process running `sherpa-fixed corpus --ray ADDRESS`) turns the inputs still to do
into a Ray Dataset of bundles (a few files, about BUNDLE_SECONDS of audio, longest first, so a
half-hour recording is a bundle of its own and short clips share one task's overhead), and maps
them with `map_batches` over a fixed-size pool of actors (ActorPoolStrategy). Each actor loads the
recognizer once (decode.load_recognizer, as a local worker does) and returns one output line per
file of its bundle (decode.decode_item, the same function local workers call, so the lines are the
same). The lines stream back to the driver, which is the only writer of OUT (output.py).

Failures: Ray Data restarts a dead actor (max_restarts=-1) and retries its task (max_task_retries=-1),
on another node when its node is gone; a bundle in flight when its actor died is decoded again,
and a result the driver already wrote is dropped by its key, so every input is in OUT exactly once.
Killed with -9, the driver takes its actors with it (Ray ends a job's actors when its driver dies);
run it again to finish.

Every node must see the model folder and the audio at the same absolute paths as the driver (a shared
filesystem, or the same copy at the same path on each node), and have sherpa-fixed installed.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Iterator, Sequence

from ..errors import BadInputError
from .decode import ModelConfig, Result, decode_item, failure, load_recognizer
from .inputs import Item

BUNDLE_SECONDS = 60.0  # audio per Ray task: long enough to hide per-task overhead, short enough to balance
BUNDLE_FILES = 64
BYTES_PER_SECOND = 32000  # size-based guess when a file's duration is unknown (16 kHz 16-bit PCM)
ACTOR_INIT_DEATHS = 3  # consecutive actor deaths while loading the model before the run gives up


def estimate_seconds(item: Item) -> float:
    if item.seconds is not None:
        return item.seconds
    return (item.size or 0) / BYTES_PER_SECOND


def bundles(todo: Sequence[Item], seconds: float = BUNDLE_SECONDS, files: int = BUNDLE_FILES) -> list[list[Item]]:
    """Consecutive runs of `todo` (already longest first) of at most `seconds` of audio or `files` files."""
    out: list[list[Item]] = []
    cur: list[Item] = []
    cur_s = 0.0
    for item in todo:
        s = estimate_seconds(item)
        if cur and (cur_s + s > seconds or len(cur) >= files):
            out.append(cur)
            cur, cur_s = [], 0.0
        cur.append(item)
        cur_s += s
    if cur:
        out.append(cur)
    return out


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
            on_start=None) -> Iterator[Result]:
    """Decode `todo` on the Ray cluster at `address` ("auto", "HOST:PORT", "ray://HOST:PORT", "local").

    on_start(workers) is called once the pool size is known. Yields Results in completion order."""
    ray = _import_ray()
    connected_here = not ray.is_initialized()
    if connected_here:
        try:
            ray.init(address=address, logging_level=logging.WARNING, log_to_driver=True,
                     configure_logging=True)
        except (ConnectionError, ValueError, RuntimeError) as exc:
            raise BadInputError(f"cannot connect to the Ray cluster at {address!r}: {exc}",
                                fix="start one with `ray start --head`, or give --ray the address it printed "
                                    "(or auto on a cluster node)") from exc
    try:
        n = workers or cluster_workers(ray, config.num_threads)
        if on_start is not None:
            on_start(n)
        ctx = ray.data.DataContext.get_current()
        ctx.enable_progress_bars = False  # the corpus command draws its own
        ctx.print_on_execution_start = False
        ctx.max_consecutive_actor_init_deaths = ACTOR_INIT_DEATHS
        groups = bundles(todo)
        if not groups:
            return
        rows = [{"bundle": json.dumps([i.to_json() for i in g], ensure_ascii=False)} for g in groups]
        ds = ray.data.from_items(rows, override_num_blocks=len(rows))
        ds = ds.map_batches(Transcriber, fn_constructor_kwargs={"config": config.to_json()}, batch_size=1,
                            compute=ray.data.ActorPoolStrategy(size=n, max_tasks_in_flight_per_actor=2),
                            num_cpus=config.num_threads)
        try:
            for row in ds.iter_rows():
                yield Result(**json.loads(row["result"]))
        except ray.exceptions.RayError as exc:
            raise BadInputError(f"the Ray run failed: {_cause(exc)}", path=config.model_dir,
                                fix="lines written so far are kept; fix the cause and run the same command "
                                    "again") from exc
    finally:
        if connected_here:
            ray.shutdown()


def _cause(exc: BaseException) -> str:
    """The innermost message of a Ray error (an actor's BadInputError arrives wrapped twice)."""
    seen = exc
    while getattr(seen, "cause", None) is not None and seen.cause is not seen:
        seen = seen.cause
    text = " ".join(str(seen).split())
    return text[-600:]
