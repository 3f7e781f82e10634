"""The `sherpa-fixed` command: a thin layer over the library's functions.

Each command parses options, calls one library function, and renders its
result as text or `--json`. Errors the library knows about become one line
on stderr (and an `error` object under --json) with the exit code they carry.
"""

from __future__ import annotations

import contextlib
import functools
import json
import math
import os
import sys
import traceback
from pathlib import Path

import click

from . import __version__
from .errors import EXIT_BAD_INPUT, SherpaFixedError

EXIT_INTERNAL = 3


def emit_json(obj) -> None:
    click.echo(json.dumps(obj, indent=2, ensure_ascii=False))


def handle_errors(fn):
    """Turn library errors into one line + exit code; keep tracebacks for real bugs."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        as_json = kwargs.get("as_json", False)
        try:
            return fn(*args, **kwargs)
        except SherpaFixedError as exc:
            if as_json:
                emit_json({"error": {"message": exc.message, "path": exc.path, "fix": exc.fix,
                                     "exit_code": exc.exit_code}})
            click.echo(f"sherpa-fixed: error: {exc.one_line()}", err=True)
            sys.exit(exc.exit_code)
        except KeyboardInterrupt:
            click.echo("sherpa-fixed: interrupted", err=True)
            sys.exit(130)
        except (click.exceptions.Exit, click.ClickException, SystemExit):
            raise
        except Exception as exc:  # a bug in sherpa-fixed, not bad input
            if os.environ.get("SHERPA_FIXED_DEBUG"):
                traceback.print_exc()
            click.echo(f"sherpa-fixed: internal error: {type(exc).__name__}: {exc} "
                       "(set SHERPA_FIXED_DEBUG=1 for a traceback; please report it)", err=True)
            sys.exit(EXIT_INTERNAL)

    return wrapper


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.version_option(__version__, prog_name="sherpa-fixed")
def main() -> None:
    """Make NVIDIA NeMo transducer exports (Parakeet TDT/RNNT) run in sherpa-onnx.

    \b
    Typical use:
      sherpa-fixed demo                         # build a tiny model and watch it get fixed
      sherpa-fixed inspect MODEL_DIR            # what will sherpa-onnx do with this folder?
      sherpa-fixed prepare MODEL_DIR -o OUT     # rewrite it so sherpa-onnx accepts it

    Exit codes: 0 fine, 1 something needs fixing, 2 unusable input, 3 internal error.
    """


class Seconds(click.ParamType):
    """A finite number of seconds, above 0 (or from 0 with zero_ok): refused before any work starts."""

    name = "SECONDS"

    def __init__(self, zero_ok: bool = False):
        self.zero_ok = zero_ok

    def convert(self, value, param, ctx):
        try:
            x = float(value)
        except (TypeError, ValueError):
            self.fail(f"{value!r} is not a number of seconds", param, ctx)
        if not math.isfinite(x) or x < 0 or (x == 0 and not self.zero_ok):
            self.fail(f"{value} must be a finite number of seconds, " + ("0 or more" if self.zero_ok else "above 0"),
                      param, ctx)
        return x


THREADS = click.IntRange(min=1)


def model_file_options(fn):
    for opt in reversed([
        click.option("--encoder", type=click.Path(dir_okay=False), help="Use this encoder file."),
        click.option("--decoder", type=click.Path(dir_okay=False), help="Use this decoder file."),
        click.option("--joiner", type=click.Path(dir_okay=False), help="Use this joiner file."),
        click.option("--tokens", type=click.Path(dir_okay=False), help="Use this tokens.txt."),
    ]):
        fn = opt(fn)
    return fn


@main.command("inspect")
@click.argument("paths", nargs=-1, required=True, type=click.Path())
@model_file_options
@click.option("--variant", "variants", multiple=True, help="Only these model sets (fp32, int8). Repeatable.")
@click.option("--probe", is_flag=True,
              help="Also run the encoder in onnxruntime (loads its weights) to prove whether a fixed time "
                   "or batch size is baked into the graph, and to measure the subsampling factor.")
@click.option("--sherpa-onnx", "sherpa_onnx", metavar="VERSION",
              help="Say how this sherpa-onnx release (the one your binding pins, e.g. 1.12.14) loads each model "
                   "set: from any working directory, only from the model folder, or not at all, and why "
                   "(docs/runtimes.md). Exit 1 unless it loads from any working directory.")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object (schema: docs/inspect-json.md).")
@click.option("-v", "--verbose", is_flag=True, help="Show outputs, every measurement and info findings.")
@handle_errors
def inspect_cmd(paths, encoder, decoder, joiner, tokens, variants, probe, sherpa_onnx, as_json, verbose):
    """Report what sherpa-onnx will do with a NeMo export, without loading its weights.

    PATHS is a model folder (the 0.6B layout: encoder/decoder/joiner .onnx and
    .int8.onnx, tokens.txt, weight files) or loose .onnx files and a tokens
    file, classified by their graphs. For every input of every model each axis
    is reported fixed or dynamic with its role (batch, mel bins, time, decoder
    state); the encoder metadata is audited against what the graphs measure;
    and a verdict says whether the folder works as is, needs `prepare`, needs
    the windowed recognizer, or cannot work.

    Without --sherpa-onnx, each model set's report names the oldest sherpa-onnx
    release that loads it from any working directory.

    Exit code: 0 works as is, 1 needs fixing (or --sherpa-onnx's release will not
    load it from any working directory), 2 unusable input.
    """
    from .reading.inspector import inspect_folder
    from .render import render_report

    report = inspect_folder(list(paths), probe=probe, encoder=encoder, decoder=decoder, joiner=joiner,
                            tokens=tokens, variants=list(variants) or None, sherpa_onnx=sherpa_onnx)
    if as_json:
        emit_json(report.to_json())
    else:
        click.echo(render_report(report, verbose=verbose))
    sys.exit(report.exit_code)


class _Bar:
    """A progress bar on stderr for long rewrites; silent when stderr is not a terminal."""

    def __init__(self, enabled: bool):
        self.enabled = enabled and sys.stderr.isatty()
        self.phase = None
        self.bar = None

    def __call__(self, phase: str, done: int, total: int) -> None:
        if not self.enabled or total <= 1:
            return
        if phase != self.phase:
            self.close()
            self.phase = phase
            self.bar = click.progressbar(length=total, label=phase, file=sys.stderr, show_eta=True)
            self.bar.__enter__()
            self.last = 0
        self.bar.update(done - self.last)
        self.last = done

    def close(self) -> None:
        if self.bar is not None:
            self.bar.__exit__(None, None, None)
            self.bar = None


@main.command("prepare")
@click.argument("model_dir", type=click.Path())
@click.option("-o", "--output", type=click.Path(file_okay=False), help="Write the prepared folder here (new).")
@click.option("--in-place", is_flag=True, help="Rewrite the folder itself, atomically file by file.")
@click.option("--dry-run", is_flag=True, help="Print the plan (old -> new, and why); change nothing.")
@click.option("--inline", is_flag=True,
              help="Put external weights inside the .onnx files (for loading from memory, e.g. app assets); "
                   "refused when a file would exceed protobuf's 2 GiB limit.")
@click.option("--force", is_flag=True, help="Replace an existing, non-empty --output folder.")
@click.option("--verify", type=click.Choice(["auto", "full", "fast", "off"]), default="auto", show_default=True,
              help="auto: a change of metadata alone is proven byte for byte at any size (and sets up to 100 MB "
                   "are loaded by sherpa-onnx); other changes run onnxruntime old against new and a sherpa-onnx "
                   "decode for models up to 1 GiB, byte comparison above; sherpa-onnx's metadata rules are "
                   "checked on every set it does not load. full: always run and load; fast: bytes only; off: "
                   "trust the rewrite (docs/benchmarks.md has what each costs).")
@click.option("--window", is_flag=True,
              help="Make a fixed-window (static-shape) encoder take any length inside the ONNX graph: it runs "
                   "once per window in an ONNX Loop, so every sherpa-onnx binding (C++, Rust, Go, mobile) can "
                   "decode audio of any length with it. On a dynamic encoder the same Loop bounds attention to "
                   "one window, so an hour decodes in memory that does not grow with attention.")
@click.option("--window-seconds", type=Seconds(),
              help="With --window on a dynamic encoder: window length (default 20; docs/long-audio.md).")
@click.option("--max-seconds", type=Seconds(),
              help="Dynamic encoders: extend the relative positional table (400 s in NeMo exports) so one "
                   "pass decodes up to this many seconds; rows from NeMo's own formula, stored rows kept.")
@click.option("--hop", type=Seconds(),
              help="With --window: seconds between window starts (window = hop + 2 x context).")
@click.option("--context", type=Seconds(zero_ok=True),
              help="With --window: seconds of audio each kept stretch has on each side (default 1).")
@click.option("--sherpa-onnx", "sherpa_onnx", metavar="VERSION",
              help="Write the layout this sherpa-onnx release (the one your binding pins) loads from any working "
                   "directory: self-contained files for releases that resolve external weights against the "
                   "working directory (<= 1.12.35); refused, naming what works, where no layout does "
                   "(docs/runtimes.md).")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object instead of text.")
@handle_errors
def prepare_cmd(model_dir, output, in_place, dry_run, inline, force, verify, window, window_seconds, max_seconds,
                hop, context, sherpa_onnx, as_json):
    """Rewrite MODEL_DIR so stock sherpa-onnx accepts it.

    Fixes the encoder metadata (fp32 and int8) from what the graphs measure,
    frees fixed sizes that are only declared, consolidates scattered weights
    into one <stem>.weights per model with bare relative locations, and
    keeps small tensors inline so old sherpa-onnx builds load it too. Large
    weight files that need no change are never rewritten. Every written
    file goes through a temp file and an atomic rename; after writing, the
    result is verified and a failed check restores the original.

    Exit code: 0 done or nothing to do, 1 could not fully fix (reason given), 2 bad input.
    """
    from .render import render_prepare
    from .rewriting.prepare import prepare_folder

    bar = _Bar(enabled=not as_json)
    try:
        result = prepare_folder(model_dir, output=output, in_place=in_place, dry_run=dry_run, inline=inline,
                                force=force, verify=verify, progress=bar, window=window, hop=hop, context=context,
                                window_seconds=window_seconds, max_seconds=max_seconds, sherpa_onnx=sherpa_onnx)
    finally:
        bar.close()
    if as_json:
        emit_json(result.to_json())
    else:
        click.echo(render_prepare(result))
    sys.exit(result.exit_code)


@main.command("transcribe")
@click.argument("model_dir", type=click.Path())
@click.argument("audio", nargs=-1, required=True, type=click.Path())
@click.option("--json", "as_json", is_flag=True, help="One JSON object: per file text, tokens, timestamps.")
@click.option("--srt", is_flag=True, help="SubRip subtitles instead of plain text.")
@click.option("-o", "--output-dir", type=click.Path(file_okay=False),
              help="Write one .txt/.json/.srt per audio file here instead of printing.")
@click.option("--num-threads", type=THREADS, default=2, show_default=True, help="onnxruntime threads.")
@click.option("--provider", type=click.Choice(["cpu", "cuda"]), default="cpu", show_default=True)
@click.option("--int8/--fp32", "int8", default=None,
              help="Which model set to use (default: int8 on cpu when the folder has one).")
@click.option("--window-seconds", type=Seconds(), help="Dynamic encoders: window longer audio (default 30).")
@click.option("--overlap-seconds", type=Seconds(zero_ok=True), help="Audio shared by consecutive windows (default 2).")
@click.option("--reference-text", "reference_texts", multiple=True, metavar="TEXT_OR_FILE",
              help="What was said (the text, or a UTF-8 text file), once per audio file in order: print the "
                   "word error rate with substitutions, deletions, insertions (also under --json). Needs jiwer.")
@handle_errors
def transcribe_cmd(model_dir, audio, as_json, srt, output_dir, num_threads, provider, int8, window_seconds,
                   overlap_seconds, reference_texts):
    """Transcribe WAV files (PCM or float, any rate and channel count) with MODEL_DIR.

    Works for fixed-window (static-shape) encoders too: audio of any length is cut
    into exact windows and merged by timestamp. A file that cannot be read or is
    too short to decode (under 5 ms) is reported and the others go on; silence is
    transcribed as an empty text.

    Exit code: 0 all files transcribed, 1 some failed, 2 the model cannot be used.
    """
    from .decoding.transcribe import open_recognizer, output_folder

    if as_json and srt:
        raise click.UsageError("choose one of --json and --srt")
    if output_dir:  # one file per input, named by its stem: two different inputs must not share one
        by_stem: dict[str, set[Path]] = {}
        for p in audio:
            by_stem.setdefault(Path(p).stem, set()).add(Path(p).resolve())
        clash = next((s for s, ps in by_stem.items() if len(ps) > 1), None)
        if clash is not None:
            raise click.UsageError(f"several inputs are named {clash}.*; with --output-dir each would write "
                                   f"{clash}{'.json' if as_json else '.srt' if srt else '.txt'}: transcribe them in "
                                   "separate runs or to separate folders")
    from .checking import wer

    refs = wer.references_for_files(reference_texts, len(audio)) if reference_texts else None
    with contextlib.ExitStack() as stack:  # a bad --output-dir fails before the model loads
        write = stack.enter_context(output_folder(output_dir)) if output_dir else None
        recognizer = open_recognizer(model_dir, int8=int8, provider=provider, num_threads=num_threads,
                                     window_seconds=window_seconds, overlap_seconds=overlap_seconds)
        _transcribe_all(model_dir, audio, recognizer, write, as_json, srt, refs)


def _transcribe_all(model_dir, audio, recognizer, write, as_json, srt, refs) -> None:
    from .checking import wer
    from .decoding.transcribe import model_problem, to_srt, transcribe_file, transcript_document

    results = []
    for path in audio:
        bar = _AudioBar(path)
        try:
            r = transcribe_file(recognizer, path, bar)
        finally:
            bar.close()
        results.append(r)
        if not r.ok and r.decode_failed and (problem := model_problem(model_dir, r)) is not None:
            raise problem  # the folder needs fixing: no later file would decode either (exit 2)
        if not r.ok:
            click.echo(f"sherpa-fixed: error: {r.error}", err=True)
            continue
        if as_json:
            continue
        body = to_srt(r) if srt else r.text + "\n"
        if write:
            write(Path(path).stem + (".srt" if srt else ".txt"), body)
        elif srt:
            if len(audio) > 1:
                click.echo(f"==> {path} <==")
            click.echo(body)
        else:
            click.echo(f"{path}: {r.text}" if len(audio) > 1 else r.text)
    if as_json:
        if write:
            for r in results:
                write(Path(r.path).stem + ".json", json.dumps(r.to_json(), indent=2) + "\n")
        else:
            emit_json(wer.transcribe_document_wer(transcript_document(model_dir, results), refs))
    out_dir = write is not None
    if refs and not (as_json and not out_dir):  # stdout carries no document: the scores go there
        click.echo(wer.transcribe_lines([r.path for r in results], [r.text if r.ok else None for r in results],
                                        refs), err=bool(srt and not out_dir))
    sys.exit(0 if all(r.ok for r in results) else 1)


class _AudioBar:
    """Progress over a long file's samples on stderr, shown only on a terminal."""

    def __init__(self, label: str):
        self.label = label
        self.bar = None
        self.enabled = sys.stderr.isatty()

    def __call__(self, done: int, total: int) -> None:
        if not self.enabled:
            return
        if self.bar is None:
            self.bar = click.progressbar(length=max(total, 1), label=Path(self.label).name, file=sys.stderr)
            self.bar.__enter__()
            self.last = 0
        self.bar.length = max(total, done, 1)
        self.bar.update(done - self.last)
        self.last = done

    def close(self) -> None:
        if self.bar is not None:
            self.bar.__exit__(None, None, None)


@main.command("corpus")
@click.argument("model_dir", type=click.Path())
@click.argument("input_path", metavar="INPUT", type=click.Path())
@click.option("-o", "--output", required=True, type=click.Path(dir_okay=False),
              help="The output manifest (JSON lines). Run the same command again to finish an interrupted run.")
@click.option("--workers", type=click.IntRange(min=1),
              help="Decoding processes on this machine (default 1), or Ray actors with --ray (default: the "
                   "cluster's CPUs / --num-threads). Each loads the model once.")
@click.option("--num-threads", type=THREADS,
              help="onnxruntime threads per worker (default: this machine's CPUs divided among the workers; "
                   "1 per Ray actor).")
@click.option("--ray", "ray_address", metavar="ADDRESS",
              help="Run on a Ray cluster: auto, HOST:PORT or ray://HOST:PORT (needs the [ray] extra). The model "
                   "folder and the audio must be at the same paths on every node.")
@click.option("--timestamps", is_flag=True, help="Also write pred_tokens and pred_timestamps (s) per line.")
@click.option("--retry-failed", is_flag=True,
              help="Remove the error lines of earlier runs from OUTPUT and decode those files again.")
@click.option("--wait", type=Seconds(zero_ok=True), default=0, show_default=True,
              help="Seconds to wait for another run writing OUTPUT before refusing.")
@click.option("--int8/--fp32", "int8", default=None,
              help="Which model set to use (default: int8 on cpu when the folder has one).")
@click.option("--provider", type=click.Choice(["cpu", "cuda"]), default="cpu", show_default=True)
@click.option("--window-seconds", type=Seconds(), help="Dynamic encoders: window longer audio (default 30).")
@click.option("--overlap-seconds", type=Seconds(zero_ok=True), help="Audio shared by consecutive windows (default 2).")
@click.option("--json", "as_json", is_flag=True, help="Print the summary as one JSON object.")
@handle_errors
def corpus_cmd(model_dir, input_path, output, workers, num_threads, ray_address, timestamps, retry_failed, wait,
               int8, provider, window_seconds, overlap_seconds, as_json):
    """Transcribe a corpus: a NeMo manifest or a folder of audio, to a NeMo manifest with pred_text.

    INPUT is a manifest (JSON lines with audio_filepath, optional duration and text;
    relative paths are under the manifest's folder) or a folder searched for .wav,
    .flac, .ogg, .opus and .mp3 files. OUTPUT gets one line per input, in any order:
    the input's fields plus pred_text, or an "error" field when the file could not
    be decoded. Killed at any moment (even kill -9), the same command finishes the
    rest: every input ends up in OUTPUT exactly once. The summary gives files,
    hours, real-time factor, failures and, when the manifest has text, the WER.
    docs/corpus.md has the details.

    Exit code: 0 every input transcribed, 1 some files failed (their count is printed),
    2 unusable model, input or output (nothing decoded).
    """
    from .corpus import transcribe_corpus
    from .corpus.progress import TerminalBar

    bar = TerminalBar() if sys.stderr.isatty() else None
    last = {}

    def progress(state):
        last["state"] = state
        bar(state)

    summary = transcribe_corpus(model_dir, input_path, output, workers=workers, num_threads=num_threads,
                                ray=ray_address, timestamps=timestamps, retry_failed=retry_failed, int8=int8,
                                provider=provider, window_seconds=window_seconds, overlap_seconds=overlap_seconds,
                                wait=wait, progress=progress if bar else None,
                                notice=lambda m: click.echo(m, err=True))
    if bar and "state" in last:
        bar(last["state"], final=True)
    if as_json:
        emit_json(summary.to_json())
    else:
        click.echo("\n".join(summary.lines()))
    sys.exit(summary.exit_code)


@main.command("validate")
@click.argument("model_dir", type=click.Path())
@click.option("--reference", default="parakeet-tdt-0.6b", show_default=True,
              help="Reference layout (a name from models/reference, or a JSON file).")
@click.option("--audio", type=click.Path(dir_okay=False),
              help="WAV to decode both ways (default: about 19 s of generated tone segments).")
@click.option("--provider", type=click.Choice(["cpu", "cuda"]), default="cpu", show_default=True,
              help="Where the Python baseline runs (cuda needs the gpu extra: onnxruntime-gpu).")
@click.option("--variant", "variants", multiple=True, help="Only these model sets (fp32, int8).")
@click.option("--num-threads", type=THREADS, default=1, show_default=True)
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object.")
@click.option("-v", "--verbose", is_flag=True, help="Also list the expected differences.")
@click.option("--reference-text", metavar="TEXT_OR_FILE",
              help="What is said in --audio (the text, or a UTF-8 text file): print each model set's word error "
                   "rate (also under --json). Needs jiwer. (--reference names the reference layout.)")
@handle_errors
def validate_cmd(model_dir, reference, audio, provider, variants, num_threads, as_json, verbose, reference_text):
    """Check MODEL_DIR against the parakeet-tdt-0.6b release layouts and decode audio two ways.

    The layout is fp32+int8 (the export script's) or int8-only (sherpa-onnx's int8
    archives), whichever the folder has. Every difference from the reference is reported
    as expected (80 vs 128 mel, model width, vocabulary), fixable by `sherpa-fixed
    prepare` (gone after it runs), or breaking (prepare cannot fix it). Then the same
    audio is decoded by sherpa-onnx (through sherpa_fixed.OfflineRecognizer) and by an
    independent Python baseline (onnxruntime, kaldi-native-fbank features, our own greedy
    TDT/RNNT search); the token sequences must match, or the first divergence is shown.

    Exit code: 0 valid and both decodes agree, 1 otherwise, 2 unusable input (a folder that
    cannot work, an unreadable --audio or --reference).
    """
    from .checking import wer
    from .checking.validate import render_validation, validate_folder

    transcript = wer.reference_for_audio(reference_text, audio) if reference_text else None
    report = validate_folder(model_dir, reference=reference, audio=audio, provider=provider,
                             variants=list(variants) or None, threads=num_threads)
    if as_json:
        emit_json(wer.validate_document_wer(report.to_json(), transcript))
    else:
        click.echo(render_validation(report, verbose=verbose))
        if transcript is not None:
            click.echo(wer.validate_lines([d.variant for d in report.decodes], [d.text for d in report.decodes],
                                          transcript))
    sys.exit(report.exit_code)


@main.command("demo")
@click.argument("folder", required=False, type=click.Path(file_okay=False))
@click.option("--json", "as_json", is_flag=True, help="Print the inspect report as JSON.")
@handle_errors
def demo_cmd(folder, as_json):
    """Build a tiny NeMo-shaped model (as a raw export: no metadata) and inspect it.

    Nothing is downloaded: the model is written with onnx.helper and has the
    exact structure of a real Parakeet-TDT export, with random weights.
    """
    from .demo import run_demo

    code = run_demo(Path(folder) if folder else None, as_json=as_json, echo=click.echo)
    sys.exit(code)


@main.command("export")
@click.argument("model", type=click.Path())
@click.argument("out_dir", type=click.Path())
@click.option("--int8", is_flag=True, help="Also write the int8 set (encoder/decoder/joiner.int8.onnx) with "
                                          "sherpa-fixed's streamed quantizer.")
@click.option("--static-frames", type=click.IntRange(1, 60_000), metavar="T",
              help="Export the encoder with a static 1 x feat x T input (NPU/TensorRT targets); decode it with "
                   "sherpa_fixed.OfflineRecognizer or make it any-length with `prepare --window`.")
@click.option("--force", is_flag=True, help="Replace an existing, non-empty OUT_DIR.")
@click.option("--audio", type=click.Path(dir_okay=False),
              help="WAV file for the agreement check (default: 8 s of generated tone segments).")
@click.option("--no-check", is_flag=True, help="Skip the checks (inspect, encoder vs torch, sherpa-onnx vs NeMo).")
@click.option("--num-threads", type=THREADS, default=1, show_default=True, help="Threads for the check decodes.")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object instead of text.")
@handle_errors
def export_cmd(model, out_dir, int8, static_frames, force, audio, no_check, num_threads, as_json):
    """Export a NeMo transducer checkpoint (MODEL.nemo) to a sherpa-onnx folder in one pass.

    \b
    Needs the optional extra (torch and NeMo; not needed by any other command):
      pip install torch --index-url https://download.pytorch.org/whl/cpu
      pip install "sherpa-fixed[export]"

    Loads the model on CPU, exports encoder, decoder and joint with NeMo's own
    .export() (for a hybrid TDT/RNNT-CTC model, the transducer branch), and
    writes the release layout: encoder.onnx + ONE encoder.weights, decoder.onnx,
    joiner.onnx, tokens.txt (<blk> last), bpe.vocab for hotwords when the
    tokenizer is SentencePiece, and encoder metadata read from the model's own
    config (feat_dim, vocab_size, normalize_type, subsampling_factor, the
    prediction network, 'tdt' in url for TDT). Then it checks the folder: it
    inspects it, compares the encoder with torch, and decodes audio with stock
    sherpa-onnx, which must give exactly NeMo's own greedy tokens. Everything
    is written in a hidden folder beside OUT_DIR and renamed into place at the
    end; a failure leaves nothing behind.

    Exit code: 0 written and checked, 1 a check failed (nothing written), 2 bad input.
    """
    from .exporting import export_nemo, render_export

    bar = _Bar(enabled=not as_json)
    notice = None if as_json else (lambda m: click.echo(m, err=True))
    try:
        result = export_nemo(model, out_dir, int8=int8, static_frames=static_frames, force=force,
                             check=not no_check, audio=audio, threads=num_threads, progress=bar, notice=notice)
    finally:
        bar.close()
    if as_json:
        emit_json(result.to_json())
    else:
        click.echo(render_export(result))
    sys.exit(result.exit_code)


@main.command("quantize")
@click.argument("model_dir", type=click.Path())
@click.option("-o", "--output", type=click.Path(file_okay=False),
              help="Write a new folder in the layout of sherpa-onnx's int8 releases (int8 set + tokens.txt).")
@click.option("--in-place", is_flag=True, help="Add the int8 files beside the fp32 set in MODEL_DIR.")
@click.option("--scheme", type=click.Choice(["fast", "sherpa-onnx"]), default="fast", show_default=True,
              help="fast: int8 MatMuls with pair-safe signed weights, the encoder's pointwise convolutions as "
                   "MatMuls (2-3.5x fp32 on the 1.1B encoder, exact on every CPU); sherpa-onnx: its release "
                   "setting, byte for byte onnxruntime's quantize_dynamic.")
@click.option("--per-channel", is_flag=True,
              help="sherpa-onnx scheme: one scale per output channel for MatMul weights (onnxruntime's "
                   "per_channel; the fast scheme always has it); docs/quantize.md has what each option measured.")
@click.option("--exclude", "exclude", multiple=True, metavar="[ROLE:]GLOB",
              help="Keep nodes whose name matches GLOB in fp32, in ROLE (encoder, decoder, joiner) or in all three; "
                   "e.g. 'encoder:/pre_encode/*' or 'joiner:*'. Repeatable.")
@click.option("--force", is_flag=True, help="Replace existing int8 files (--in-place) or a non-empty --output.")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object instead of text.")
@handle_errors
def quantize_cmd(model_dir, output, in_place, per_channel, exclude, force, as_json, scheme):
    """Write encoder/decoder/joiner.int8.onnx from MODEL_DIR's fp32 set, in bounded memory.

    The default scheme, fast, quantizes the encoder's MatMuls (its pointwise
    convolutions become MatMuls first, exactly) to signed int8 weights, one
    scale per output column, chosen so that no CPU's int8 kernel can saturate
    (the attention's value and output projections stay unsigned); decoder and
    joiner get the same signed, saturation-safe weights. --scheme sherpa-onnx is sherpa-onnx's
    release setting (onnxruntime's quantize_dynamic, QUInt8 encoder, QInt8
    decoder and joiner), equal to what onnxruntime writes. Either way weights
    are read, quantized and written one tensor at a time, so the 1.1B encoder
    needs a fraction of the memory. The encoder metadata is carried over; a
    model that fits in 2 GiB is written as one self-contained file. Every file
    is written under a temp name and renamed into place.

    Exit code: 0 written, 2 bad input (nothing written).
    """
    from .quantizing import quantize_folder, render_quantize

    bar = _Bar(enabled=not as_json)
    try:
        result = quantize_folder(model_dir, output=output, in_place=in_place, per_channel=per_channel,
                                 exclude=list(exclude), force=force, progress=bar, scheme=scheme)
    finally:
        bar.close()
    if as_json:
        emit_json(result.to_json())
    else:
        click.echo(render_quantize(result))
    sys.exit(result.exit_code)


if __name__ == "__main__":  # pragma: no cover
    main()


__all__ = ["EXIT_BAD_INPUT", "main"]
