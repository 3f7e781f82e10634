"""transcribe_corpus: a manifest or folder of audio to an output manifest, resumably, locally or on Ray.

The order of a run: check the model folder (signatures only, no weights), read and check the whole
input (a bad manifest line refuses the run before anything changes), open OUT (lock, check, drop a
torn last line: output.py), then decode what OUT does not hold yet, longest file first (so the last
file to finish is a short one), and append each result as it arrives. Decoding is done by local
worker processes (local.py) or Ray actors (ray_runner.py); this process is the only writer.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable
from pathlib import Path

from ..errors import BadInputError
from .decode import ModelConfig, Result
from .inputs import Corpus, Item, read_corpus
from .local import run_local
from .output import Output
from .progress import ProgressState
from .ray_runner import estimate_seconds, run_ray
from .summary import CorpusSummary, Losses, RunStats

Progress = Callable[[ProgressState], None]
Notice = Callable[[str], None]


def available_cpus() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def transcribe_corpus(model_dir: str | os.PathLike, source: str | os.PathLike, output: str | os.PathLike, *,
                      workers: int | None = None, num_threads: int | None = None, ray: str | None = None,
                      timestamps: bool = False, retry_failed: bool = False, int8: bool | None = None,
                      provider: str = "cpu", window_seconds: float | None = None,
                      overlap_seconds: float | None = None, wait: float = 0.0, progress: Progress | None = None,
                      notice: Notice | None = None) -> CorpusSummary:
    """Transcribe every input of `source` (a NeMo manifest or a folder of audio) into `output` (JSON lines).

    workers: local worker processes (default 1), or Ray actors (default: the cluster's CPUs divided by
      num_threads). num_threads: onnxruntime threads per worker (default: this machine's CPUs divided
      among the local workers; 1 per Ray actor). ray: a Ray address ("auto", "HOST:PORT", "ray://...",
      "local" for a throwaway single-machine cluster); None decodes on this machine.
    timestamps: also write pred_tokens, pred_timestamps (and pred_durations). retry_failed: drop the error
      lines of an earlier run from `output` and decode those inputs again. wait: seconds to wait for
      another run holding `output` before refusing (default: refuse at once).
    progress(state) is called after each file. Returns the summary; its exit_code is 0 when every input
    has a transcript in `output`, 1 when some failed (their lines carry an "error" field).
    Raises BadInputError (exit 2) for an unusable model folder, input or output, before writing anything.
    """
    for name, value in (("workers", workers), ("num_threads", num_threads)):
        if value is not None and (not isinstance(value, int) or value < 1):
            raise BadInputError(f"{name}={value!r} must be a whole number, 1 or more")
    model_dir = os.path.abspath(model_dir)
    _check_model(model_dir, int8, provider)
    corpus = read_corpus(source)
    out_path = Path(output)
    _refuse_same_file(corpus, out_path)
    if ray is None:
        workers = workers or 1
        threads = num_threads or max(1, available_cpus() // workers)
    else:
        threads = num_threads or 1
    config = ModelConfig(model_dir, threads, int8, provider, window_seconds, overlap_seconds, timestamps)
    keys = {i.key for i in corpus.items}
    with Output(out_path, keys, wait=wait, notice=notice) as out:
        failed_dropped = out.drop_failed() if retry_failed else 0
        already = len(out.done)
        todo = sorted((i for i in corpus.items if i.key not in out.done), key=estimate_seconds, reverse=True)
        run = RunStats()
        losses = Losses(workers_died=0 if ray is None else None)
        pool = {"workers": workers or 0}
        if not todo:
            results = iter(())
        elif ray is None:
            results = run_local(todo, config, workers, losses)
        else:
            results = run_ray(ray, todo, config, workers, on_start=lambda n: pool.update(workers=n), losses=losses)
        state = _state(todo)
        sizes = {i.key: i.size or 0 for i in todo}
        t0 = time.monotonic()
        problem_checked = False
        try:
            for r in results:
                if r.decode_failed and not problem_checked:
                    problem_checked = True
                    _raise_model_problem(model_dir, r)
                written = out.append(r.key, r.line)
                if written:
                    run.decoded += 1
                    run.failed += 0 if r.ok else 1
                    run.audio_seconds += r.audio_seconds
                    out.tally.add(json.loads(r.line))
                    _advance(state, r, sizes.get(r.key, 0))
                state.elapsed = time.monotonic() - t0
                if progress is not None:
                    progress(state)
        finally:
            close = getattr(results, "close", None)
            if close is not None:
                close()
            out.sync()
        run.wall_seconds = time.monotonic() - t0
        missing = sum(1 for k in keys if k not in out.done)
        return CorpusSummary(model_dir, str(corpus.source), str(out_path), "local" if ray is None else "ray",
                             pool["workers"], threads, len(corpus.items), already, out.tally, run,
                             out.torn_bytes, failed_dropped, out.duplicates, losses, missing)


def _check_model(model_dir: str, int8: bool | None, provider: str) -> None:
    """What sherpa-onnx would refuse, refused here from the graphs' skeletons, before any worker loads weights."""
    from ..decoding.preflight import preflight
    from ..decoding.recognizer import model_files

    if not os.path.isdir(model_dir):
        raise BadInputError("model folder not found", path=model_dir)
    ms, layout = model_files(model_dir, int8=int8, provider=provider)
    preflight(str(ms.encoder), str(ms.decoder), str(ms.joiner), str(layout.tokens))


def _refuse_same_file(corpus: Corpus, out: Path) -> None:
    if corpus.kind == "manifest" and out.exists():
        try:
            same = os.path.samefile(corpus.source, out)
        except OSError:
            same = False
        if same:
            raise BadInputError("--output is the input manifest itself", path=out,
                                fix="write the transcripts to a new file")


def _raise_model_problem(model_dir: str, r: Result) -> None:
    """sherpa-onnx failed on a file: when inspect says the folder itself is at fault, stop (exit 2)."""
    from ..decoding.transcribe import FileResult, model_problem

    problem = model_problem(model_dir, FileResult(r.path, False, r.error, decode_failed=True))
    if problem is not None:
        raise problem


def _state(todo: list[Item]) -> ProgressState:
    known = all(i.seconds is not None for i in todo)
    return ProgressState(0, len(todo), 0, 0.0, sum(i.seconds for i in todo) if known and todo else None, 0,
                         sum(i.size or 0 for i in todo), 0.0)


def _advance(state: ProgressState, r: Result, size: int) -> None:
    state.files_done += 1
    state.failed += 0 if r.ok else 1
    state.audio_done += r.audio_seconds
    state.bytes_done += size
