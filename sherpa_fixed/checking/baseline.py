"""An independent Python decoder for NeMo transducers: onnxruntime plus our own greedy search.

It shares nothing with sherpa-onnx's C++ but the rules it follows: features
from kaldi-native-fbank with sherpa-onnx's NeMo options (features.py), the
encoder run on (batch, mel, time), and greedy search as sherpa-onnx does it
(offline-transducer-greedy-search-nemo-decoder.cc):

- RNNT: at each output frame, up to 10 symbols: emit the joiner's argmax and
  feed it to the decoder until it says blank;
- TDT: at frame t, the token is the argmax of the first vocab+1 logits and
  the skip is the argmax index of the duration logits; a token is emitted
  and fed back; a skip of 0 keeps the frame (at most 5 tokens per frame);
  a blank with skip 0 advances one frame.

The decoder starts from blank with zero states of (pred_rnn_layers, 1,
pred_hidden), from the metadata, as sherpa-onnx does. Audio longer than one
window, or any audio for a fixed-window encoder, is cut with the same plan
as sherpa_fixed.OfflineRecognizer (chunker.py), so windowed decodes compare
window for window.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..decoding.chunker import Stitcher, merge, plan_windows, window_samples, window_tokens
from ..decoding.features import nemo_features
from ..decoding.recognizer import chunking_for, positional_frames
from ..ort import providers_for, session_from_path
from ..reading.metadata import atoi
from ..reading.onnx_graph import load_graph, read_signature
from ..reading.tokens import read_tokens

MAX_SYMBOLS_PER_FRAME = 10  # RNNT, as sherpa-onnx
MAX_TOKENS_PER_FRAME = 5  # TDT, as sherpa-onnx
# Logit margin under which two decoders' choices are a numerical tie, not a disagreement: the
# largest margin seen between sherpa-onnx 2.0 and this baseline on the test models was 0.0058
# (different builds of onnxruntime, Eigen versus numpy reductions).
TIE_TOLERANCE = 0.02
# How far from its timestamp another decoder may have taken a token (check_decisions): sherpa-onnx
# 2.x's TDT search was seen up to 2 frames away, next to frames that hit the per-frame token cap.
FRAME_SLACK = 2
# int8 models: onnxruntime's integer kernels (dynamic activation quantisation) round differently
# between builds, and sherpa-onnx bundles its own build: 0.068 was the largest margin seen between
# sherpa-onnx 2.0.1 (onnxruntime 1.28) and this baseline (onnxruntime 1.32) on the int8 test models.
INT8_TIE_TOLERANCE = 0.1


@dataclass
class WindowResult:
    """Looks like sherpa-onnx's result where chunker.window_tokens reads it."""

    tokens: list[str] = field(default_factory=list)
    timestamps: list[float] = field(default_factory=list)
    durations: list[float] = field(default_factory=list)
    ids: list[int] = field(default_factory=list)
    ties: list[dict] = field(default_factory=list)  # near-ties resolved the guide's way
    shifted: list[dict] = field(default_factory=list)  # tokens found within FRAME_SLACK of their stamp
    divergence: dict | None = None  # where we and the guide truly disagree


class _Guide:
    """Walks another decoder's decisions alongside ours (see Baseline.greedy)."""

    def __init__(self, guide: dict, base: Baseline, frame_s: np.float32):
        inv = {v: k for k, v in base.table.items()}
        self.ids = [inv.get(t, -1) for t in guide["tokens"]]
        self.frames = [round(ts / float(frame_s)) for ts in guide["timestamps"]]
        durs = guide.get("durations") or []
        self.skips = [round(d / float(frame_s)) for d in durs] if base.tdt else []
        self.base = base
        self.k = 0
        self.diverged = False

    def _tie(self, kind: str, t: int, ours: int, theirs: int, scores: np.ndarray, r: WindowResult) -> bool:
        margin = float(scores[ours] - scores[theirs])
        info = {"kind": kind, "index": len(r.tokens), "frame": t, "ours": ours, "theirs": theirs,
                "margin": round(margin, 6)}
        if margin <= self.base.tie:
            r.ties.append(info)
            return True
        self.diverged = True
        r.divergence = info
        return False

    def decide(self, t: int, tok: np.ndarray, dur: np.ndarray | None, y: int, skip: int, r: WindowResult):
        blank = self.base.blank
        if self.k < len(self.ids) and self.frames[self.k] == t:
            want = self.ids[self.k]
            want_skip = self.skips[self.k] if self.k < len(self.skips) else skip
        else:
            want, want_skip = blank, skip
        if want != y and not self._tie("token", t, y, want if want >= 0 else y, tok, r):
            return y, skip
        if want != blank:
            self.k += 1
            if dur is not None and want_skip != skip and not self._tie("duration", t, skip, want_skip, dur, r):
                return want, skip
            return want, want_skip
        if dur is not None and self.k < len(self.frames):  # a blank's skip must not jump the next token
            limit = self.frames[self.k] - t
            if max(skip, 1) > limit:
                allowed = [s for s in range(len(dur)) if 0 < s <= limit]
                best = max(allowed, key=lambda s: dur[s]) if allowed else 1
                if not self._tie("duration", t, skip, best, dur, r):
                    return blank, skip
                skip = best
        return blank, skip

    def finish(self, r: WindowResult) -> None:
        if not self.diverged and self.k < len(self.ids):
            self.diverged = True
            r.divergence = {"kind": "length", "index": len(r.tokens), "frame": self.frames[self.k],
                            "ours": None, "theirs": self.ids[self.k], "margin": None}


def symbol(sym: str) -> str:
    """sherpa-onnx's SymbolTable::operator[]: a leading '▁' becomes a space (BPE models)."""
    return " " + sym[1:] if sym.startswith("▁") and len(sym.encode()) >= 3 else sym


class Baseline:
    def __init__(self, encoder: str | Path, decoder: str | Path, joiner: str | Path, tokens: str | Path,
                 *, provider: str = "cpu", threads: int = 1, tie: float = TIE_TOLERANCE):
        providers = providers_for(provider)
        self.tie = tie
        self.provider = provider
        self.encoder = session_from_path(encoder, providers=providers, threads=threads)
        self.decoder = session_from_path(decoder, providers=providers, threads=threads)
        self.joiner = session_from_path(joiner, providers=providers, threads=threads)
        meta = read_signature(encoder).metadata
        self.vocab = (atoi(meta.get("vocab_size")) or 0) + 1  # with blank, as sherpa-onnx counts it
        self.blank = self.vocab - 1
        self.tdt = "tdt" in meta.get("url", "")
        self.normalize = meta.get("normalize_type", "")
        self.normalize = "" if self.normalize == "NA" else self.normalize
        self.layers = atoi(meta.get("pred_rnn_layers")) or 1
        self.hidden = atoi(meta.get("pred_hidden")) or 1
        self.subsampling = atoi(meta.get("subsampling_factor")) or 8
        audio = self.encoder.get_inputs()[0]
        self.feat_dim = atoi(meta.get("feat_dim")) or (audio.shape[1] if isinstance(audio.shape[1], int) else 80)
        self.table = {i: symbol(s) for i, s in read_tokens(tokens).symbols.items()}
        self.chunking = chunking_for(encoder, positional_frames=positional_frames(load_graph(encoder)))
        self._dec_in = [i.name for i in self.decoder.get_inputs()]
        self._dec_types = [np.int32 if "int32" in i.type else np.int64 for i in self.decoder.get_inputs()[:2]]
        self._enc_in = [i.name for i in self.encoder.get_inputs()]
        self._len_type = np.int64 if "int64" in self.encoder.get_inputs()[1].type else np.int32
        self._joi_in = [i.name for i in self.joiner.get_inputs()]

    # -- one window
    def encode(self, samples: np.ndarray) -> np.ndarray:
        feats = nemo_features(samples, self.feat_dim, self.normalize)  # (T, F)
        out, lengths = self.encoder.run(None, {self._enc_in[0]: feats.T[None].astype(np.float32),
                                               self._enc_in[1]: np.array([len(feats)], self._len_type)})[:2]
        return out[0, :, : int(np.asarray(lengths).reshape(-1)[0])].T  # (T', D)

    def _decoder(self, token: int, states: list[np.ndarray]) -> tuple[np.ndarray, list[np.ndarray]]:
        feeds = {self._dec_in[0]: np.array([[token]], self._dec_types[0]),
                 self._dec_in[1]: np.array([1], self._dec_types[1])}
        feeds.update(zip(self._dec_in[2:], states, strict=True))
        outs = self.decoder.run(None, feeds)
        return outs[0], list(outs[2:2 + len(states)])

    def greedy(self, frames: np.ndarray, guide: dict | None = None) -> WindowResult:
        """Greedy search over encoder frames (T', D).

        With a guide (another decoder's result for the same frames: tokens, timestamps and, for
        TDT, durations), every decision the guide made that differs from ours is checked: if the
        guide's choice scores within self.tie of our best (a numerical near-tie), we follow the guide
        and count it; otherwise decoding stops there and the divergence is reported.
        """
        r = WindowResult()
        states = [np.zeros((self.layers, 1, self.hidden), np.float32) for _ in self._dec_in[2:]]
        dec_out, states = self._decoder(self.blank, states)
        frame_s = np.float32(0.01 * self.subsampling)
        g = _Guide(guide, self, frame_s) if guide is not None else None
        t = 0
        tokens_this_frame = 0
        while t < len(frames):
            enc = frames[t].reshape(1, -1, 1).astype(np.float32)
            emitted = 0
            while True:
                logits = self.joiner.run(None, {self._joi_in[0]: enc, self._joi_in[1]: dec_out})[0].reshape(-1)
                tok_logits = logits[: self.vocab]
                y = int(np.argmax(tok_logits))
                skip = int(np.argmax(logits[self.vocab:])) if self.tdt else 1
                if g is not None:
                    y, skip = g.decide(t, tok_logits, logits[self.vocab:] if self.tdt else None, y, skip, r)
                    if g.diverged:
                        return r
                if y != self.blank:
                    r.ids.append(y)
                    r.tokens.append(self.table.get(y, f"<{y}>"))
                    r.timestamps.append(float(frame_s * np.float32(t)))
                    if self.tdt:
                        r.durations.append(float(skip * frame_s))
                    dec_out, states = self._decoder(y, states)
                if not self.tdt:
                    emitted += 1
                    if y == self.blank or emitted >= MAX_SYMBOLS_PER_FRAME:
                        t += 1
                        break
                    continue
                if y != self.blank:
                    tokens_this_frame += 1
                if skip > 0:
                    tokens_this_frame = 0
                if tokens_this_frame >= MAX_TOKENS_PER_FRAME:
                    tokens_this_frame, skip = 0, 1
                if y == self.blank and skip == 0:
                    tokens_this_frame, skip = 0, 1
                t += skip
                break
        if g is not None:
            g.finish(r)
        return r

    def check_decisions(self, frames: np.ndarray, guide: dict, slack: int = FRAME_SLACK) -> WindowResult:
        """Replay another decoder's emissions: each token it emitted must be our best choice (within
        self.tie), given the same history, at its reported frame or at most `slack` frames from it.

        This checks the numerical pipeline (features, encoder, decoder, joiner) without assuming
        which frames the other search visits or how it stamps them: sherpa-onnx 2.x's TDT search
        stamps some tokens a frame or two away from where our joiner, and 1.12/1.13, place them
        (always right after a frame that hit the 5-tokens-per-frame cap)."""
        r = WindowResult()
        g = _Guide(guide, self, np.float32(0.01 * self.subsampling))
        states = [np.zeros((self.layers, 1, self.hidden), np.float32) for _ in self._dec_in[2:]]
        dec_out, states = self._decoder(self.blank, states)
        for k, (want, t) in enumerate(zip(g.ids, g.frames, strict=True)):
            if not 0 <= t < len(frames) or want < 0:
                r.divergence = {"kind": "frame" if want >= 0 else "token", "index": k, "frame": t, "ours": None,
                                "theirs": want, "margin": None}
                return r
            tried = []
            for dt in sorted(range(-slack, slack + 1), key=abs):
                if not 0 <= t + dt < len(frames):
                    continue
                enc = frames[t + dt].reshape(1, -1, 1).astype(np.float32)
                tok = self.joiner.run(None, {self._joi_in[0]: enc, self._joi_in[1]: dec_out})[0].reshape(-1)
                tok = tok[: self.vocab]
                best = int(np.argmax(tok))
                margin = float(tok[best] - tok[want])
                tried.append((dt, best, margin))
                if margin <= self.tie:
                    break
            dt, best, margin = tried[-1] if tried[-1][2] <= self.tie else tried[0]
            info = {"kind": "token", "index": k, "frame": t, "ours": best, "theirs": want, "margin": round(margin, 6)}
            if margin > self.tie:
                r.divergence = info
                return r
            if dt:
                r.shifted.append(dict(info, shift=dt))
            elif best != want:
                r.ties.append(info)
            r.ids.append(want)
            r.tokens.append(self.table.get(want, f"<{want}>"))
            r.timestamps.append(guide["timestamps"][k])
            if k < len(guide.get("durations") or []):
                r.durations.append(guide["durations"][k])
            dec_out, states = self._decoder(want, states)
        return r

    def compare(self, frames: np.ndarray, guide: dict) -> tuple[WindowResult, str]:
        """Our greedy search alongside the guide; if the searches part ways, the decision check.

        Returns the result and how it agreed: "exact" (sherpa-onnx's greedy rules, which 1.12 and
        1.13 follow, reproduce every token), or "decisions" (every token the guide emitted is our
        best at its frame, but its search visited other frames, as sherpa-onnx 2.x's TDT search
        does at the 5-tokens-per-frame cap), or "diverged".
        """
        exact = self.greedy(frames, guide)
        if exact.divergence is None:
            return exact, "exact"
        decided = self.check_decisions(frames, guide)
        return decided, "diverged" if decided.divergence else "decisions"

    # -- a whole stream, windowed like the recognizer
    def decode(self, samples: np.ndarray, guide: dict | None = None) -> dict:
        """Tokens and timestamps for 16 kHz samples, windowed exactly where the recognizer would.

        guide: the recognizer's result for the same samples, with "tokens", "timestamps",
        "durations" and, when windowed, "window_results" (one raw sherpa-onnx result per window):
        every window is then decoded alongside it (see greedy)."""
        c = self.chunking
        n = len(samples)
        ties, shifted, divergence = [], [], None
        if not c.fixed and n <= c.whole:
            r, how = self.compare(self.encode(samples), guide) if guide else (self.greedy(self.encode(samples)),
                                                                               "baseline")
            return {"tokens": r.tokens, "timestamps": r.timestamps, "windows": 1, "ties": r.ties,
                    "shifted": r.shifted, "divergence": r.divergence, "agreement": [how]}
        plan = plan_windows(n, c.spec)
        raw = (guide or {}).get("window_results")
        stitcher, agreement = Stitcher(c.spec), []
        for w in plan:
            feed = window_samples(samples[w.start:w.end], w, rng_seed=w.index)
            wguide = raw[w.index] if raw and w.index < len(raw) else None
            if wguide is not None:
                wr, how = self.compare(self.encode(feed), wguide)
                agreement.append(how)
            else:
                wr = self.greedy(self.encode(feed))
            ties += [dict(t, window=w.index) for t in wr.ties]
            shifted += [dict(t, window=w.index) for t in wr.shifted]
            if wr.divergence and divergence is None:
                divergence = dict(wr.divergence, window=w.index, window_start_s=w.start / c.sample_rate)
            stitcher.add(w, window_tokens(wr, w, c.spec, c.sample_rate, n))
        m = merge(stitcher.finish(), len(plan))
        return {"tokens": m.tokens, "timestamps": m.timestamps, "windows": m.windows, "ties": ties,
                "shifted": shifted,
                "divergence": divergence, "agreement": agreement}
