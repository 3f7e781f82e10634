"""Cut audio into encoder windows and merge their tokens back by time.

All positions are in samples at the model's rate. Windows start on the
encoder's output grid (subsampling x frame shift: 8 x 160 = 1280 samples,
80 ms), so every window's output frame j is a global output frame and
tokens from different windows line up exactly.

A fixed-window encoder takes exactly T frames; sherpa-onnx's NeMo front end
makes (N + hop/2) // hop frames from N samples (FACTS.md section 5), so a
window of T * hop samples gives exactly T frames. Consecutive windows
overlap; each stretch of audio is transcribed by the window where it sits
furthest from an edge: the split between two windows is the middle of their
overlap, so every kept token had at least overlap/2 of audio on each side
(except at the audio's own ends).

The final stretch (what is left after the last full window, between one
window and one window plus one hop) is cut so that no encoder work is wasted:

- fixed-window encoders: the final window slides back over real audio (it
  starts at the last grid point that still lets it reach the end) instead of
  being padded; as the grid is 80 ms, it may reach up to 79 ms past the end,
  and those samples mirror the last real ones, which is what the front end
  itself does at an utterance's edge (kaldi's snip_edges=false reflection);
- dynamic encoders: the stretch becomes two windows of exactly the same
  length (three when two would exceed the window by a grid step).
  sherpa-onnx pads every stream of a `decode_streams` batch to the longest
  (offline-recognizer-transducer-nemo-impl.h, DecodeStreams: PadSequence),
  so a short tail batched with full windows would cost a full window of
  encoder time; the recognizer batches only windows of one length, and no
  window is shorter than half a window, so every window has context.

Audio shorter than one fixed window is padded with itself, reflected back
and forth (x, reversed x, x, ...). sherpa-onnx normalises each mel bin over
all frames it is given, padding included, and tells the encoder every frame
is real (`length` = T), so the padding must leave the per-bin statistics
and the audio's edge as they are: a time-reversed frame has the same
magnitude spectrum, so reflected audio has the clip's own mel statistics,
and the frames right after the end continue the clip's own trailing pause.
Measured with the speech model (../shared/speech, static 800-frame export,
200 clips of set A): noise at the room-tone level 15.3 % WER, zeros 30.1 %,
reflection 6.6 % against 7.0 % for whole-utterance decoding with the dynamic
export (docs/windowing.md). Nothing decoded at or after the real end is kept,
and neither is a word that starts in the clip's last output frame: the real
audio holds at most 80 ms of it, so it was begun from the mirrored copy
(clips cut right after their last word gained one: over 20 seeds of
espeak-ng 1.52 clips the chunker was +0.57 points WER against
whole-utterance decoding, with this rule +0.17, set A unchanged at -0.37;
docs/accuracy.md).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np


@dataclass(frozen=True)
class Window:
    index: int
    start: int  # first sample of the window
    length: int  # samples of real audio in the window
    pad: int  # samples appended after the real audio (fixed windows only)
    keep_from: int  # keep tokens whose output frame centre lies in [keep_from, keep_to)
    keep_to: int

    @property
    def end(self) -> int:
        return self.start + self.length


@dataclass(frozen=True)
class WindowSpec:
    """How windows are cut for one model."""

    window: int  # samples per window (fixed: exactly T frames' worth; dynamic: the maximum)
    overlap: int  # samples shared by consecutive windows
    grid: int  # samples per encoder output frame (subsampling x frame shift)
    fixed: bool  # True: every window must be exactly `window` samples

    @property
    def hop(self) -> int:
        return max(self.grid, (self.window - self.overlap) // self.grid * self.grid)


def regular_keep_to(start: int, spec: WindowSpec) -> int:
    """End of what a full window at `start` keeps when the next window starts one hop later."""
    return split_point(start + spec.hop, start + spec.window, spec.grid)


def split_point(next_start: int, end: int, grid: int) -> int:
    """The middle of the overlap [next_start, end), on the output grid."""
    mid = round((next_start + end) / 2 / grid) * grid
    return min(max(mid, next_start), end)


def plan_windows(n: int, spec: WindowSpec) -> list[Window]:
    """Windows covering n samples; a single window when the audio fits in one.

    Full windows start every hop while more than a window plus a hop of audio remains from
    their start (the rule the recognizer applies while audio is still arriving, so windows cut
    early are exactly these); what remains is the final stretch (see the module docstring).
    """
    if n <= 0:
        return []
    w, g = spec.window, spec.grid
    if n <= w:
        pad = w - n if spec.fixed else 0
        return [Window(0, 0, n, pad, 0, n)]
    spans = []  # (start, samples of real audio)
    s = 0
    while s + spec.hop + w < n:
        spans.append((s, w))
        s += spec.hop
    if spec.fixed:
        spans.append((s, w))
        last = max(s + g, -(-(n - w) // g) * g)  # slide back onto the grid, reaching the end
        spans.append((last, n - last))
    else:
        spans += final_windows(s, n, spec)
    out: list[Window] = []
    keep_from = 0
    for i, (s, length) in enumerate(spans):
        pad = (w - length) if spec.fixed else 0
        keep_to = split_point(spans[i + 1][0], s + length, g) if i + 1 < len(spans) else n
        out.append(Window(i, s, length, pad, keep_from, keep_to))
        keep_from = keep_to
    return out


def final_windows(start: int, n: int, spec: WindowSpec) -> list[tuple[int, int]]:
    """k >= 2 windows of exactly equal length covering [start, n) of a dynamic encoder's audio.

    Window i starts i * m grid steps after `start`, so each is n - start - (k - 1) * m * grid
    samples long and consecutive ones overlap by n - start - k * m * grid: m is the largest
    step that keeps at least the configured overlap. k is 2 unless two windows that long would
    exceed the window length (possible only within a grid step of it).
    """
    rest, g = n - start, spec.grid
    if rest <= spec.window:
        return [(start, rest)]
    for k in range(2, rest // g + 2):
        m = (rest - spec.overlap) // (k * g)
        length = rest - (k - 1) * m * g
        if m >= 1 and length <= spec.window:
            return [(start + i * m * g, length) for i in range(k)]
    # unreachable for overlap <= window - grid (chunking_for's bound); plain hops as a fallback
    spans, s = [], start
    while s + spec.window < n:
        spans.append((s, spec.window))
        s += spec.hop
    return [*spans, (s, n - s)]


def window_samples(real: np.ndarray, win: Window, rng_seed: int = 0) -> np.ndarray:
    """The samples to feed for a window, given its real audio: as is, or padded to the fixed window
    by reflection (a slid-back final window reaching past the end by under one output frame, or
    audio shorter than one window: x, reversed x, x, ...; see the module docstring).

    rng_seed is accepted for callers of the former noise padding and ignored: padding is
    deterministic."""
    del rng_seed
    real = np.ascontiguousarray(real, dtype=np.float32)
    if win.pad <= 0:
        return real
    if len(real) == 0:
        return np.zeros(win.pad, np.float32)
    cycle = np.concatenate([real, real[::-1]])
    total = len(real) + win.pad
    return np.tile(cycle, -(-total // len(cycle)))[:total]


@dataclass
class Token:
    text: str
    sample: int  # global start sample of the output frame that emitted it
    time: float  # the same in seconds from the start of the whole stream
    duration: float | None = None
    log_prob: float | None = None


@dataclass
class MergedResult:
    """What a sherpa-onnx OfflineRecognitionResult shows, for tokens merged across windows."""

    tokens: list[str] = field(default_factory=list)
    timestamps: list[float] = field(default_factory=list)
    durations: list[float] = field(default_factory=list)
    ys_log_probs: list[float] = field(default_factory=list)
    lang: str = ""
    emotion: str = ""
    event: str = ""
    words: list = field(default_factory=list)
    windows: int = 0  # how many encoder windows were decoded
    decoded_seconds: float = 0.0  # audio fed to the encoder, overlaps counted twice
    window_results: list[dict] = field(default_factory=list)  # each window's own result, for validation

    @property
    def text(self) -> str:
        # sherpa-onnx's Convert(): symbols (leading "▁" already a space) concatenated, then the
        # leading space of BPE output removed.
        text = "".join(self.tokens)
        return text[1:] if text.startswith(" ") else text

    def as_dict(self) -> dict:
        return {"lang": self.lang, "emotion": self.emotion, "event": self.event, "text": self.text,
                "timestamps": self.timestamps, "durations": self.durations, "tokens": self.tokens,
                "ys_log_probs": self.ys_log_probs, "words": self.words}

    def __str__(self) -> str:
        import json

        return json.dumps(self.as_dict(), ensure_ascii=False)


DROP_WORDS_BEGUN_IN_PADDING = True  # bench/accuracy_last_frame.py measures with and without


def window_tokens(result, win: Window, spec: WindowSpec, sample_rate: int, n_total: int | None) -> list[Token]:
    """Every token of one window's sherpa-onnx result, placed on the stream's timeline.

    Tokens at or after the real end of the audio (decoded from padding) are dropped here, and so is a
    word-initial token (sherpa-onnx renders "▁" as a leading space) in the last output frame of audio
    shorter than the window: it was begun from the reflected padding (module docstring).
    """
    last_frame = (n_total - 1) // spec.grid * spec.grid \
        if DROP_WORDS_BEGUN_IN_PADDING and n_total and win.pad >= spec.grid else None
    out = []
    frame_s = spec.grid / sample_rate
    # sherpa-onnx computes a timestamp as float(frame_shift_s) * frame in float32 (Convert() in
    # offline-recognizer-transducer-impl.h); doing the same with the global frame gives the very
    # value plain sherpa-onnx reports for that frame of the whole audio.
    frame_s32 = np.float32(frame_s)
    durations = list(getattr(result, "durations", []) or [])
    log_probs = list(getattr(result, "ys_log_probs", []) or [])
    for i, (tok, ts) in enumerate(zip(result.tokens, result.timestamps, strict=False)):
        start = win.start + round(ts / frame_s) * spec.grid
        if n_total is not None and start >= n_total:
            continue
        if last_frame is not None and start >= last_frame and tok.startswith(" "):
            continue
        time = float(frame_s32 * np.float32(start // spec.grid)) if start % spec.grid == 0 else start / sample_rate
        out.append(Token(tok, start, time, durations[i] if i < len(durations) else None,
                         log_probs[i] if i < len(log_probs) else None))
    return out


def seam(a: list[Token], b: list[Token], split: int, b_start: int, a_end: int, grid: int,
         reach: int) -> tuple[int, int]:
    """Where to cut between consecutive windows: (tokens of `a` to keep, first token of `b` to keep).

    The split sits mid-overlap. A token's onset can land one output frame apart in the two
    windows (each normalises its own features), which a bare time cut would turn into a
    duplicate or a loss. So the cut is made at an anchor: a token both windows emitted, with the
    same text, within one frame of each other, as close to the split as possible and at most
    `reach` samples from it. Without an anchor (silence around the split) the time cut is exact.
    """
    a_ov = [i for i, t in enumerate(a) if t.sample + grid // 2 >= b_start and abs(t.sample - split) <= reach]
    b_ov = [j for j, t in enumerate(b) if t.sample + grid // 2 < a_end and abs(t.sample - split) <= reach]
    best = None
    for i in a_ov:
        for j in b_ov:
            if a[i].text == b[j].text and abs(a[i].sample - b[j].sample) <= grid:
                cost = abs(a[i].sample - split) + abs(b[j].sample - split)
                if best is None or cost < best[0]:
                    best = (cost, i, j)
    if best is not None:
        return best[1] + 1, best[2] + 1
    keep_a = sum(1 for t in a if t.sample + grid // 2 < split)
    first_b = next((j for j, t in enumerate(b) if t.sample + grid // 2 >= split), len(b))
    return keep_a, first_b


class Stitcher:
    """Joins windows' tokens as the windows arrive in order, settling each seam once the window
    after it is known; the recognizer and the validation baseline stitch through this one rule."""

    def __init__(self, spec: WindowSpec):
        self.spec = spec
        self.pieces: list[list[Token]] = []
        self._pending: list[Token] | None = None  # the last window's tokens, right seam unsettled
        self._pending_from = 0
        self._pending_win: Window | None = None

    def add(self, win: Window, tokens: list[Token]) -> None:
        first = 0
        if self._pending is not None:
            grid = self.spec.grid
            keep, first = seam(self._pending, tokens, win.keep_from, win.start, self._pending_win.end, grid,
                               max(grid, self.spec.overlap // 4))
            self.pieces.append(self._pending[self._pending_from:max(keep, self._pending_from)])
        self._pending, self._pending_from, self._pending_win = tokens, first, win

    def finish(self) -> list[list[Token]]:
        """After the last window: its tokens from its seam on are final."""
        if self._pending is not None:
            self.pieces.append(self._pending[self._pending_from:])
            self._pending = None
        return self.pieces


def merge(pieces: list[list[Token]], windows: int, decoded_seconds: float = 0.0,
          window_results: list[dict] | None = None) -> MergedResult:
    r = MergedResult(windows=windows, decoded_seconds=decoded_seconds, window_results=window_results or [])
    for toks in pieces:
        for t in toks:
            r.tokens.append(t.text)
            r.timestamps.append(t.time)
            if t.duration is not None:
                r.durations.append(t.duration)
            if t.log_prob is not None:
                r.ys_log_probs.append(t.log_prob)
    return r
