"""`sherpa_fixed.OfflineRecognizer`: sherpa-onnx's OfflineRecognizer, made safe for fixed windows.

A drop-in: same factory methods, same `create_stream` / `accept_waveform` /
`decode_stream(s)` / `stream.result` calls. It subclasses
`sherpa_onnx.OfflineRecognizer`, so every factory this package does not
need to touch (from_whisper, from_paraformer, ...) is inherited untouched.

For NeMo transducers it reads the encoder's signature (not its weights):

- time axis fixed at T frames (static-shape exports): every stream is cut
  into exact T-frame windows, decoded through sherpa-onnx, and merged by
  timestamp (see chunker.py);
- time axis dynamic: audio up to `whole_seconds` (default 90 s, never past
  the encoder's positional limit) is handed to sherpa-onnx as is, so results
  are identical to plain sherpa-onnx; longer audio is cut into windows of
  `window_seconds` (30 s), so memory does not grow with its length (full
  attention over an hour does not fit, and the positional-encoding table of
  a NeMo export caps the input anyway: 400 s for Parakeet). Why 90 s: at the
  1.1B size one pass costs what 30 s windows plus their overlaps cost at
  about 60 s of audio, and less below (docs/benchmarks.md, "Real scale").

Windows are decoded as soon as enough audio has arrived, so a long stream
holds at most about one window of samples; when the encoder's batch axis
is dynamic, ready windows are decoded together in one `decode_streams`
call. Sessions are created inside `session_model_dir`, so external weights
load with old and new sherpa-onnx alike.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import sherpa_onnx

from ..errors import BadInputError
from ..reading.layout import find_layout
from ..reading.metadata import WINDOW_MARKER, atoi
from ..reading.onnx_graph import GraphFile, Signature, read_signature
from ..reading.positional import find_tables
from .audio import Resampler, check_rate, mono_samples
from .chunker import (
    MergedResult,
    Stitcher,
    Window,
    WindowSpec,
    merge,
    plan_windows,
    regular_keep_to,
    window_samples,
    window_tokens,
)
from .preflight import preflight
from .session_dir import session_model_dir, weights_folder

DEFAULT_WINDOW_S = 30.0  # dynamic models: the window length for audio too long for one pass
DEFAULT_WHOLE_S = 90.0  # dynamic models: audio up to this long is one pass (when window_seconds is not given)
DEFAULT_OVERLAP_S = 2.0
MAX_WINDOW_S = 600.0  # dynamic models: the longest window_seconds accepted
DEFAULT_BATCH = 8  # the most windows in one decode_streams call
DEFAULT_BATCH_SECONDS = 30.0  # ... and by default no more audio than this in one call (see chunking_for)

Progress = Callable[[int, int], None]  # (samples decoded, samples accepted)


@dataclass(frozen=True)
class Chunking:
    """What the encoder's signature says about windowing, and the chosen window parameters."""

    spec: WindowSpec
    fixed_frames: int | None  # the encoder's fixed time length, None when dynamic
    batch: int  # windows per decode_streams call (1 when the encoder's batch is fixed)
    sample_rate: int
    frame_shift: int  # samples per feature frame
    whole: int  # streams up to this many model-rate samples are one pass (0 for fixed-window encoders)

    @property
    def fixed(self) -> bool:
        return self.fixed_frames is not None


def chunking_for(encoder: str | os.PathLike, *, sample_rate: int = 16000, frame_shift_ms: float = 10.0,
                 window_seconds: float | None = None, overlap_seconds: float | None = None,
                 max_batch: int | None = None, signature: Signature | None = None,
                 whole_seconds: float | None = None, positional_frames: int | None = None) -> Chunking:
    """Window parameters for an encoder, from its signature and metadata (no weights read).

    signature: the encoder's, when the caller has read it already (one read per load).
    whole_seconds: dynamic encoders: the longest audio decoded in one pass (default: window_seconds
    when that is given, else DEFAULT_WHOLE_S). positional_frames: the encoder's positional limit in
    output frames, when known; one pass never goes past it."""
    for name, value, zero_ok in (("window_seconds", window_seconds, False), ("overlap_seconds", overlap_seconds, True),
                                 ("whole_seconds", whole_seconds, True)):
        if value is not None and not (np.isfinite(value) and (value >= 0 if zero_ok else value > 0)):
            raise BadInputError(f"{name}={value} must be a finite number of seconds "
                                + ("(0 or more)" if zero_ok else "above 0"))
    sig = signature or read_signature(encoder)
    if not sig.inputs or len(sig.inputs[0].dims) != 3:
        raise BadInputError("the encoder's first input is not (batch, mel, time)", path=encoder,
                            fix="this recognizer windows NeMo transducer encoders only")
    audio = sig.inputs[0]
    time_dim = audio.dims[2]
    batch_dim = audio.dims[0]
    hop = round(sample_rate * frame_shift_ms / 1000)
    sub = atoi(sig.metadata.get("subsampling_factor")) or 8
    grid = sub * hop
    windowed = WINDOW_MARKER in sig.metadata  # made dynamic by prepare --window: it windows itself
    fixed = time_dim if isinstance(time_dim, int) and not windowed else None
    if windowed:  # one window of any length: sherpa-onnx gets every stream whole
        return Chunking(WindowSpec(1 << 62, 0, grid, False), None, DEFAULT_BATCH, sample_rate, hop, 1 << 62)
    if fixed is not None:
        window = fixed * hop
        if window_seconds is not None and abs(window_seconds * sample_rate - window) > hop:
            raise BadInputError(f"window_seconds={window_seconds} but the encoder takes exactly {fixed} frames "
                                f"({window / sample_rate:g} s)", path=encoder,
                                fix="leave window_seconds unset for fixed-window encoders")
    else:
        if window_seconds is not None and window_seconds > MAX_WINDOW_S:
            raise BadInputError(f"window_seconds={window_seconds:g} is over {MAX_WINDOW_S:g} s; attention over a "
                                "window costs its square in memory", fix="the default, 30 s, is measured best")
        window = int((window_seconds or DEFAULT_WINDOW_S) * sample_rate) // grid * grid
        if window < grid:
            raise BadInputError(f"window_seconds={window_seconds} is shorter than one output frame "
                                f"({grid / sample_rate:g} s)")
    if overlap_seconds is not None and overlap_seconds * sample_rate > window:  # before any rounding of 1e308
        raise BadInputError(f"overlap_seconds={overlap_seconds:g} must be between 0 and the window "
                            f"({window / sample_rate:g} s) minus one output frame")
    if overlap_seconds is None:  # a short fixed window (2 s) gets a quarter of itself, not 2 s it cannot hold
        overlap_s = min(DEFAULT_OVERLAP_S, window // 4 // grid * grid / sample_rate)
    else:
        overlap_s = overlap_seconds
    overlap = round(overlap_s * sample_rate / grid) * grid
    if overlap < 0 or overlap > window - grid:
        raise BadInputError(f"overlap_seconds={overlap_s} must be between 0 and the window "
                            f"({window / sample_rate:g} s) minus one output frame")
    fixed_batch = batch_dim if isinstance(batch_dim, int) else None
    # sherpa-onnx runs a decode_streams batch through the encoder at once, so activations grow with the
    # audio in the batch (at 1.1B mostly the first pre-encoder convolution, 256 channels at half the frame
    # rate): 8 windows of 30 s peaked at 3.2 GB against 2.0 GB one by one, for the same speed (3 %, within
    # noise; bench/realscale/batch_memory.py). By default a batch holds at most 30 s of audio.
    by_audio = max(1, int(DEFAULT_BATCH_SECONDS * sample_rate) // window)
    batch = 1 if fixed_batch == 1 else min(max_batch or min(DEFAULT_BATCH, by_audio), fixed_batch or DEFAULT_BATCH)
    whole = 0
    if fixed is None:
        if whole_seconds is None:
            whole_seconds = window_seconds if window_seconds is not None else DEFAULT_WHOLE_S
        whole = max(int(whole_seconds * sample_rate), window)  # within one window it is one pass either way
        if positional_frames:  # one output frame short of the table: at its edge a NeMo export runs wrong
            whole = min(whole, (positional_frames - 1) * grid)
    return Chunking(WindowSpec(window, overlap, grid, fixed is not None), fixed, batch, sample_rate, hop, whole)


def positional_frames(encoder: GraphFile) -> int | None:
    """The encoder's positional limit in output frames (its rel-pos table), None when it has none."""
    tables = find_tables(encoder.model.graph)
    return min(t.max_frames for t in tables) if tables else None


def model_files(model_dir: str | os.PathLike, *, int8: bool | None = None, provider: str = "cpu"):
    """The model set from_model_dir loads (int8 preferred on CPU) and the folder's layout; reads no weights."""
    layout = find_layout(model_dir)
    if layout.tokens is None:
        raise BadInputError("no tokens.txt", path=model_dir, fix="copy tokens.txt from the export")
    want = ("int8" if (int8 or (int8 is None and provider == "cpu")) else "fp32")
    if int8 is True and "int8" not in layout.variants:
        raise BadInputError("no int8 model set (encoder.int8.onnx)", path=model_dir)
    if int8 is False and "fp32" not in layout.variants:  # was: the int8 set, silently
        raise BadInputError("no fp32 model set (encoder.onnx); the folder has " + ", ".join(layout.variants),
                            path=model_dir)
    ms = layout.variants.get(want) or layout.variants.get("fp32") or next(iter(layout.variants.values()))
    return ms, layout


def _absolute(path):
    return os.path.abspath(path) if path else path  # not resolve(): a Hugging Face snapshot link must stay a link


class OfflineRecognizer(sherpa_onnx.OfflineRecognizer):
    """Drop-in for sherpa_onnx.OfflineRecognizer; see the module docstring."""

    _chunking: Chunking | None = None

    @classmethod
    def from_transducer(cls, encoder: str, decoder: str, joiner: str, tokens: str, *args,
                        window_seconds: float | None = None, overlap_seconds: float | None = None,
                        max_batch: int | None = None, whole_seconds: float | None = None, **kwargs):
        """sherpa_onnx.OfflineRecognizer.from_transducer, plus windowing for NeMo encoders.

        Extra keyword arguments (all optional):
          window_seconds: dynamic encoders only: audio too long for one pass is cut into windows
            of this length (default 30 s). Longer windows give each token more context and cost
            memory quadratically (attention); fixed-window encoders use their own length.
          whole_seconds: dynamic encoders only: audio up to this long is decoded in one pass,
            exactly as plain sherpa-onnx does (default 90 s, or window_seconds when that is
            given; never past the encoder's positional limit).
          overlap_seconds: audio shared by consecutive windows (default 2 s). Each token is
            kept from the window where it has at least overlap/2 of context on both sides;
            more overlap costs overlap/(window - overlap) extra encoder work.
          max_batch: windows decoded per decode_streams call when the encoder's batch axis is
            dynamic (default: as many as fit in 30 s of audio, at most 8; one 30 s window).
        """
        for name in ("encoder", "decoder", "joiner", "tokens"):
            if not Path(locals()[name]).is_file():
                raise BadInputError(f"{name} file not found", path=locals()[name])
        encoder, decoder, joiner, tokens = map(_absolute, (encoder, decoder, joiner, tokens))
        for key in ("bpe_vocab", "hotwords_file", "lm", "lodr_fst"):
            if kwargs.get(key):
                kwargs[key] = _absolute(kwargs[key])
        model_type = kwargs.get("model_type", "transducer")
        # Each graph is read once per load, as a skeleton (structure only; a 1.1 GB int8 encoder costs
        # about 0.2 s and 17 MB): the confinement check, sherpa-onnx's own refusals and the weights
        # folder all answer from it.
        from ..reading.onnx_graph import load_graph

        graphs = [load_graph(p) for p in (encoder, decoder, joiner)]
        signature = preflight(encoder, decoder, joiner, tokens, graphs) if model_type == "nemo_transducer" else None
        positional = positional_frames(graphs[0])
        folder = weights_folder(*graphs)
        del graphs  # their descriptors close before onnxruntime maps the files
        with session_model_dir(folder):
            self = super().from_transducer(encoder, decoder, joiner, tokens, *args, **kwargs)
        if model_type in ("nemo_transducer", "") or model_type is None:
            feat = self.config.feat_config
            self._chunking = chunking_for(encoder, sample_rate=feat.sampling_rate,
                                          frame_shift_ms=getattr(feat, "frame_shift_ms", 10.0),
                                          window_seconds=window_seconds,
                                          overlap_seconds=overlap_seconds, max_batch=max_batch,
                                          signature=signature, whole_seconds=whole_seconds,
                                          positional_frames=positional)
        return self

    @classmethod
    def from_model_dir(cls, model_dir: str | os.PathLike, *, int8: bool | None = None, provider: str = "cpu",
                       **kwargs):
        """Find the files of the 0.6B layout in model_dir (int8 preferred on CPU) and load them.

        int8=None picks int8 when it exists and provider is cpu; True/False force it.
        Other keyword arguments go to from_transducer.
        """
        ms, layout = model_files(model_dir, int8=int8, provider=provider)
        if layout.bpe_vocab and "bpe_vocab" not in kwargs:
            kwargs["bpe_vocab"] = str(layout.bpe_vocab)
        kwargs.setdefault("model_type", "nemo_transducer")
        return cls.from_transducer(str(ms.encoder), str(ms.decoder), str(ms.joiner), str(layout.tokens),
                                   provider=provider, **kwargs)

    # --------------------------------------------------------------------- streams

    def create_stream(self, hotwords: str | None = None):
        if self._chunking is None:
            return super().create_stream(hotwords)
        return OfflineStream(self, hotwords)

    def _raw_stream(self, hotwords: str | None):
        return super().create_stream(hotwords)

    def decode_stream(self, s) -> None:
        self.decode_streams([s])

    def decode_streams(self, ss) -> None:
        if self._chunking is None or not all(isinstance(s, OfflineStream) for s in ss):
            if any(isinstance(s, OfflineStream) for s in ss):
                raise TypeError("mix of sherpa_fixed and sherpa_onnx streams in one decode_streams call")
            return super().decode_streams(ss)
        for i, s in enumerate(ss):  # refused before any decoding: nothing half-done
            if not s._accepted:
                raise BadInputError(f"stream {i} of the {len(ss)} given to decode_streams has no audio",
                                    fix="call accept_waveform on it first, or leave it out")
        delegated = [s for s in ss if s._delegates()]
        for s in delegated:
            if s._too_short():  # no feature frame: sherpa-onnx would raise; there is nothing to hear
                s._finished, s._original, s._result = True, [], MergedResult()
        delegated = [s for s in delegated if s._result is None]
        if delegated:
            raws = [s._raw_for_delegation() for s in delegated]
            if self._chunking.batch > 1:
                super().decode_streams(raws)
            else:
                for r in raws:
                    super().decode_stream(r)
            for s, r in zip(delegated, raws, strict=True):
                s._result = r.result
        chunked = [s for s in ss if not s._delegates()]
        for s in chunked:
            s._finish()
        self._decode_pending(chunked)
        for s in chunked:
            s._result = merge(s._stitcher.finish(), s._windows_done, s._decoded / self._chunking.sample_rate,
                              s._window_results)

    def _decode_pending(self, streams: list[OfflineStream]) -> None:
        """Decode every planned window of these streams, up to `batch` windows of ONE length per call.

        sherpa-onnx pads every stream of a decode_streams batch with zero frames to the longest
        one and runs the encoder over the padding (offline-recognizer-transducer-nemo-impl.h,
        DecodeStreams: PadSequence), so a 4 s window batched with 30 s ones costs 30 s of encoder
        time. Windows are grouped by their exact sample count (equal samples, equal frames), and
        results are absorbed in each stream's window order afterwards.
        """
        batch = self._chunking.batch
        queue = [(s, w) for s in streams for w in s._take_ready()]
        by_length: dict[int, list[int]] = {}
        for i, (_s, (_win, samples)) in enumerate(queue):
            by_length.setdefault(len(samples), []).append(i)
        results: dict[int, object] = {}
        for members in by_length.values():
            for j in range(0, len(members), batch):
                group = members[j:j + batch]
                raws = []
                for i in group:
                    s, (_win, samples) = queue[i]
                    s._decoded += len(samples)
                    raw = self._raw_stream(s._hotwords)
                    raw.accept_waveform(self._chunking.sample_rate, samples)
                    raws.append(raw)
                if len(raws) > 1:
                    super().decode_streams(raws)
                else:
                    super().decode_stream(raws[0])
                for i, raw in zip(group, raws, strict=True):
                    results[i] = raw.result
        for i, (s, (win, _samples)) in enumerate(queue):
            s._absorb(win, results.pop(i))


class OfflineStream:
    """What create_stream returns for NeMo transducers: buffers audio, windows it, merges results."""

    def __init__(self, recognizer: OfflineRecognizer, hotwords: str | None):
        self._rec = recognizer
        self._hotwords = hotwords
        self._c = recognizer._chunking
        self._in_rate: int | None = None
        self._resampler: Resampler | None = None
        self._original: list[np.ndarray] = []  # kept only while delegation is possible
        self._n_original = 0
        self._accepted = 0  # samples given to accept_waveform, at their own rate
        self._buf = np.zeros(0, np.float32)  # model-rate samples from _buf_start on
        self._buf_start = 0
        self._n = 0  # model-rate samples accepted
        self._finished = False
        self._chunked = False
        self._next_start = 0  # start of the next window to decode
        self._next_index = 0
        self._keep_from = 0
        self._stitcher = Stitcher(self._c.spec)
        self._windows_done = 0
        self._decoded = 0
        self._window_results: list[dict] = []
        self._result = None
        self._options: dict[str, str] = {}
        self.on_progress: Progress | None = None

    # -- the sherpa_onnx.OfflineStream API
    def accept_waveform(self, sample_rate: int, waveform) -> None:
        if self._finished:
            raise RuntimeError("accept_waveform after decoding; create a new stream")
        sample_rate = check_rate(sample_rate, "sample_rate")
        samples = mono_samples(waveform, "waveform")
        self._accepted += len(samples)
        if self._in_rate is None:
            self._in_rate = int(sample_rate)
            if self._in_rate != self._c.sample_rate:
                self._resampler = Resampler(self._in_rate, self._c.sample_rate)
        elif int(sample_rate) != self._in_rate:
            raise BadInputError(f"sample rate changed within one stream ({self._in_rate} then {sample_rate})")
        if self._delegates():
            # A dynamic encoder gets the whole stream in one piece, at its own rate, while it fits in
            # one window: keep the original samples only, and count them at the model's rate.
            self._n_original += len(samples)
            if self._n_original * self._c.sample_rate <= self._c.whole * self._in_rate:
                self._original.append(samples.copy())
                return
            self._chunked = True  # too long: window it, without ever copying this call's samples whole
            pending, self._original = self._original, []
            for piece in pending:
                self._feed(piece)
        self._feed(samples)

    def _feed(self, samples: np.ndarray) -> None:
        # In pieces of about one window, so a long array never gets a second full-length copy here.
        step = self._c.spec.window * max(1, self._in_rate // self._c.sample_rate)
        for i in range(0, len(samples), step):
            piece = samples[i:i + step]
            self._append(self._resampler.process(piece) if self._resampler else piece)

    @property
    def result(self):
        if self._result is None:
            return MergedResult()
        return self._result

    def set_option(self, key: str, value: str) -> None:
        self._options[key] = value

    def get_option(self, key: str) -> str:
        return self._options.get(key, "")

    def has_option(self, key: str) -> bool:
        return key in self._options

    # -- windowing
    def _append(self, samples: np.ndarray) -> None:
        self._buf = np.concatenate([self._buf, samples])
        self._n += len(samples)
        if len(self._cuttable()) >= self._c.batch:
            self._rec._decode_pending([self])

    def _delegates(self) -> bool:
        return not self._c.fixed and not self._chunked

    def _too_short(self) -> bool:
        """Under half a feature frame at the model's rate (80 samples at 16 kHz): kaldi-native-fbank makes
        (n + shift/2) // shift frames, so sherpa-onnx would hand the encoder none and onnxruntime raises.
        sherpa-onnx resamples to ceil(n * model_rate / in_rate) samples (LinearResample, flushed)."""
        if not self._in_rate or not self._n_original:
            return False
        n = -(-self._n_original * self._c.sample_rate // self._in_rate)
        return n < self._c.frame_shift - self._c.frame_shift // 2

    def _raw_for_delegation(self):
        self._finished = True
        raw = self._rec._raw_stream(self._hotwords)
        for key, value in self._options.items():
            raw.set_option(key, value)
        original = np.concatenate(self._original) if self._original else np.zeros(0, np.float32)
        if original.size == 0:
            raise BadInputError("no audio was accepted into this stream", fix="call accept_waveform first")
        raw.accept_waveform(self._in_rate, original)
        self._original = []
        return raw

    def _finish(self) -> None:
        if self._finished:
            return
        if self._resampler is not None:
            tail = self._resampler.flush()
            self._buf = np.concatenate([self._buf, tail])
            self._n += len(tail)
        self._finished = True
        if self._n == 0:
            raise BadInputError("no audio was accepted into this stream", fix="call accept_waveform first")

    def _cuttable(self) -> list[Window]:
        """Full windows that every plan for any final length >= what has arrived contains unchanged.

        A full window at s keeps up to the middle of its overlap with the window at s + hop; it is
        a full window of the final plan once more than s + hop + W samples have arrived (otherwise
        [s, end) is the final stretch: one slid-back window for fixed encoders, two equal ones for
        dynamic ones; chunker.plan_windows).
        """
        spec = self._c.spec
        out, s, index = [], self._next_start, self._next_index
        while s + spec.hop + spec.window < self._n:
            out.append(Window(index, s, spec.window, 0, self._keep_from, regular_keep_to(s, spec)))
            s += spec.hop
            index += 1
        return out

    def _take_ready(self) -> list[tuple[Window, np.ndarray]]:
        if self._finished:
            windows = [w for w in plan_windows(self._n, self._c.spec) if w.index >= self._next_index]
            if windows and windows[0].start < self._buf_start:
                raise AssertionError("window planning kept too little audio")  # a bug, not bad input
        else:
            windows = self._cuttable()
        out = []
        for w in windows:
            w = Window(w.index, w.start, w.length, w.pad, self._keep_from, w.keep_to)
            real = self._buf[w.start - self._buf_start: w.end - self._buf_start]
            out.append((w, window_samples(real, w, rng_seed=w.index)))
            self._keep_from = w.keep_to
            self._next_index = w.index + 1
            self._next_start = w.start + self._c.spec.hop
        if out and not self._finished:
            # The final window of a fixed encoder may slide back to just after the last cut one;
            # keep from there on, drop the rest.
            keep_from = out[-1][0].start + self._c.spec.grid
            drop = keep_from - self._buf_start
            if drop > 0:
                self._buf = self._buf[drop:]
                self._buf_start = keep_from
        return out

    def _absorb(self, win: Window, raw_result) -> None:
        """Take one decoded window (in order); settle the seam with the window before it."""
        c = self._c
        self._window_results.append({"start": win.start, "tokens": list(raw_result.tokens),
                                     "timestamps": list(raw_result.timestamps),
                                     "durations": list(getattr(raw_result, "durations", []) or [])})
        self._stitcher.add(win, window_tokens(raw_result, win, c.spec, c.sample_rate,
                                              self._n if self._finished else None))
        self._windows_done += 1
        if self.on_progress:
            self.on_progress(min(win.keep_to, self._n), self._n)

