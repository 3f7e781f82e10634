"""Synthetic test speech for word-error-rate checks: espeak-ng sentences with reference transcripts.

The speech model in tests/data/speech/ was trained on espeak-ng English built
from a 46-word vocabulary (tests/data/speech/recipe/gen_data.py). This module
makes new audio of the same kind, reproducibly, so that decode paths (whole
utterance, windowed, fixed-window encoders, int8) can be compared by WER on
audio the model has never heard:

- short clips: one sentence of 3-8 words, 0.05-0.3 s of silence each side,
  white noise at -75..-45 dBFS (as the training clips);
- long-form recordings of 1 to about 6.5 minutes (the dynamic export's
  positional table ends at 400 s): one main voice (20 % of sentences by a
  second voice), sentences joined with 0.1-1.5 s pauses, one background
  noise (white, pink, brown, mains hum or none) at -70..-38 dBFS, as
  recipe/gen_sets.py does.

Voices are espeak-ng accent+variant pairs. Variants seen in training and
the ten held out of it are listed below; `UNSEEN_SET_A` were used in the
shared set A, `UNSEEN_JUDGED` never were, so a set judged on them says how
decode paths behave on voices nobody tuned anything on. No sentence is a
training transcript (the training corpus's sentences are replayed from its
seed).

Everything is a function of the seed: the same seed on the same espeak-ng
build gives byte-identical WAV files (16 kHz, 16-bit mono). Recordings get
their own random streams, so they are synthesised in parallel without
changing a byte.

espeak-ng comes from the package registry: the `espeakng-loader` wheel
(pinned in the `test` extra) bundles libespeak-ng 1.52 and its voice data,
called here through ctypes, so every machine that installs the extra makes
the same audio and needs no system package. `SHERPA_FIXED_ESPEAK=program`
uses an installed `espeak-ng` program instead (Debian's 1.51, which the
model was trained with and the earlier benchmark sets in docs/accuracy.md
were made with).

    python -m sherpa_fixed.checking.speechgen OUT_DIR --seed 3003 --long-minutes 30 --short 300
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import struct
import subprocess
import sys
import threading
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path

import numpy as np

from ..decoding.audio import resample, write_wav
from ..errors import SherpaFixedError

SR = 16000
DIGITS = ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine"]
WORDS = [
    "yes", "no", "up", "down", "left", "right", "stop", "go", "on", "off", "start", "open", "close", "red", "green",
    "blue", "black", "white", "north", "south", "east", "west", "turn", "move", "call", "play", "room", "door",
    "light", "house", "car", "box", "time", "day", "night", "cat", "dog", "big", "small"
]
VOCAB = DIGITS + WORDS  # the model's whole vocabulary, in the order the training RNG drew from
ACCENTS = ["en-us", "en", "en-gb-scotland", "en-gb-x-rp", "en-gb-x-gbclan", "en-gb-x-gbcwmd", "en-029", "en-us-nyc"]
# espeak-ng 1.51's voice variants (voices/!v, names without spaces, sorted) minus the held-out ones:
# fixed here rather than listed from disk, so the random streams do not depend on the install path.
SEEN = [
    "Alex", "Andrea", "Andy", "Annie", "AnxiousAndy", "Demonic", "Denis", "Diogo", "Gene2", "Henrique", "Hugo",
    "Jacky", "Lee", "Marco", "Mario", "Michael", "Nguyen", "RicishayMax", "RicishayMax2", "RicishayMax3", "Storm",
    "Tweaky", "UniRobot", "adam", "anika", "anikaRobot", "announcer", "antonio", "aunty", "benjamin", "boris",
    "caleb", "croak", "david", "ed", "edward", "edward2", "f1", "f2", "f4", "f5", "fast", "grandma", "grandpa",
    "gustave", "iven", "iven2", "iven3", "iven4", "john", "kaukovalta", "klatt", "klatt2", "klatt4", "klatt5",
    "klatt6", "linda", "m1", "m2", "m3", "m5", "m6", "m7", "m8", "marcelo", "michel", "miguel", "norbert", "pablo",
    "paul", "pedro", "quincy", "rob", "robert", "robosoft", "robosoft2", "robosoft3", "robosoft4", "robosoft5",
    "robosoft6", "robosoft7", "robosoft8", "sandro", "shelby", "steph", "steph3", "victor", "whisper", "whisperf",
    "zac"
]
UNSEEN = ["Alicia", "Gene", "Mike", "belinda", "f3", "m4", "klatt3", "max", "steph2", "travis"]  # never trained on
UNSEEN_SET_A = UNSEEN[:5]  # used by the shared set A (../shared/speech/setA)
UNSEEN_JUDGED = UNSEEN[5:]  # used by no earlier set: the judged sets
TRAIN_SEED, TRAIN_CLIPS = 0, 5000  # recipe/gen_data.py's training corpus
MAX_LONG_SECONDS = 390.0  # the dynamic export's table holds 5000 output frames (400 s at 80 ms)
INSTALL_HINT = "pip install 'sherpa-fixed[test]' (its espeakng-loader wheel bundles espeak-ng)"
PROGRAM_HINT = "install the espeak-ng program (Debian/Ubuntu: apt-get install espeak-ng), or unset SHERPA_FIXED_ESPEAK"


class EspeakMissingError(SherpaFixedError):
    """Test speech cannot be made without espeak-ng."""


def _use_program() -> bool:
    return os.environ.get("SHERPA_FIXED_ESPEAK", "library") == "program"


class _Library:
    """libespeak-ng from the espeakng-loader wheel, in a helper process (espeak_zygote.py) that synthesises
    every sentence from a pristine state, as the espeak-ng program does: the library alone carries state
    from one sentence into the next. Requests are serialised."""

    def __init__(self) -> None:
        try:
            import espeakng_loader  # noqa: F401 - only to name the install when it is missing
        except ImportError as exc:
            raise EspeakMissingError("espeakng-loader is not installed; test speech is synthesised with the "
                                     "espeak-ng it bundles", fix=INSTALL_HINT) from exc
        self.lock = threading.Lock()
        self.proc = subprocess.Popen([sys.executable, "-m", "sherpa_fixed.checking.espeak_zygote"],
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE)
        hello = json.loads(self.proc.stdout.readline() or b"{}")
        if not hello.get("rate"):
            raise EspeakMissingError("the bundled espeak-ng failed to start", fix=INSTALL_HINT)
        self.version, self.rate = hello["version"], int(hello["rate"])

    def synth(self, text: str, voice: str, speed: int, pitch: int) -> tuple[np.ndarray, int]:
        req = json.dumps({"text": text, "voice": voice, "speed": speed, "pitch": pitch}) + "\n"
        with self.lock:
            self.proc.stdin.write(req.encode())
            self.proc.stdin.flush()
            status, n = struct.unpack("<iI", self.proc.stdout.read(8))
            data = self.proc.stdout.read(n)
        if status == 1:
            raise SherpaFixedError(f"espeak-ng has no voice {voice!r}")
        if status != 0 or len(data) != n:
            raise SherpaFixedError(f"espeak-ng could not synthesise {text!r}")
        return np.frombuffer(data, dtype="<i2").astype(np.float32) / 32768.0, self.rate


@cache
def _library() -> _Library:
    return _Library()


@cache
def espeak_version() -> str:
    """The espeak-ng version line (and where it comes from), or EspeakMissingError naming the install."""
    if not _use_program():
        return _library().version
    exe = shutil.which("espeak-ng")
    if exe is None:
        raise EspeakMissingError("espeak-ng not found on PATH (SHERPA_FIXED_ESPEAK=program)", fix=PROGRAM_HINT)
    out = subprocess.run([exe, "--version"], check=True, capture_output=True, text=True).stdout
    return out.split("  Data at")[0].strip() + " (program)"


@cache
def training_texts() -> frozenset[str]:
    """The 5000 training transcripts, replayed from recipe/gen_data.py's random stream (seed 0).

    gen_data draws, per clip: sentence length and words, accent, variant, speed, pitch, gap,
    noise level and gain, in that order; replaying the same calls gives the same sentences."""
    rnd = random.Random(TRAIN_SEED)
    texts: set[str] = set()
    for _ in range(TRAIN_CLIPS):
        texts.add(" ".join(rnd.choice(VOCAB) for _ in range(rnd.randint(3, 8))))
        rnd.choice(ACCENTS), rnd.choice(SEEN), rnd.randint(120, 220), rnd.randint(20, 80)
        rnd.choice([0, 0, 0, 1, 2, 4]), rnd.uniform(-75, -45), rnd.uniform(0.1, 0.9)
    return frozenset(texts)


def _wav_payload(wav: bytes) -> tuple[np.ndarray, int]:
    """16-bit mono samples and rate of espeak-ng's --stdout WAV (its size fields are placeholders)."""
    rate = struct.unpack_from("<I", wav, 24)[0]
    pos = 12
    while pos + 8 <= len(wav):
        cid, size = wav[pos:pos + 4], struct.unpack_from("<I", wav, pos + 4)[0]
        if cid == b"data":
            data = wav[pos + 8:]
            return np.frombuffer(data[: len(data) // 2 * 2], dtype="<i2").astype(np.float32) / 32768.0, rate
        pos += 8 + size + (size & 1)
    raise SherpaFixedError("espeak-ng wrote no audio data", fix=INSTALL_HINT)


def synthesize(text: str, voice: str, speed: int, pitch: int) -> np.ndarray:
    """One sentence at 16 kHz, peak-normalised to 1."""
    espeak_version()
    if _use_program():
        cmd = ["espeak-ng", "-v", voice, "-s", str(speed), "-p", str(pitch), "--stdout", text]
        x, rate = _wav_payload(subprocess.run(cmd, check=True, capture_output=True).stdout)
    else:
        x, rate = _library().synth(text, voice, speed, pitch)
    x = resample(x, rate, SR)
    return (x / (np.abs(x).max() + 1e-9)).astype(np.float32)


def background(rng: np.random.Generator, n: int) -> tuple[np.ndarray, str]:
    """White / pink / brown / mains hum (or none) at -70..-38 dB RMS, as in training (train_mix.py)."""
    kind = str(rng.choice(["white", "pink", "brown", "hum", "none"], p=[0.35, 0.25, 0.15, 0.15, 0.10]))
    if kind == "none":
        return np.zeros(n, np.float32), kind
    if kind == "white":
        z = rng.normal(0, 1, n)
    elif kind == "pink":
        spec = np.fft.rfft(rng.normal(0, 1, n))
        z = np.fft.irfft(spec / np.sqrt(np.arange(len(spec)) + 1.0), n)
    elif kind == "brown":
        z = np.cumsum(rng.normal(0, 1, n))
        z = z - np.convolve(z, np.ones(801) / 801, mode="same")
    else:
        t = np.arange(n) / SR
        f0 = rng.choice([50.0, 60.0])
        z = sum(rng.uniform(0.2, 1.0) / k * np.sin(2 * np.pi * f0 * k * t + rng.uniform(0, 6.3)) for k in (1, 2, 3, 5))
        z = z + 0.3 * rng.normal(0, 1, n)
    z = z / (np.sqrt(np.mean(z * z)) + 1e-9) * 10 ** (rng.uniform(-70, -38) / 20)
    return z.astype(np.float32), kind


@dataclass
class Item:
    """One file of a set and its reference transcript."""

    file: str
    seconds: float
    text: str
    voice: str
    unseen: bool  # the (main) voice's variant was held out of training
    extra: dict = field(default_factory=dict)

    def to_json(self) -> dict:
        return {"file": self.file, "seconds": self.seconds, "text": self.text, "voice": self.voice,
                "unseen_voice": self.unseen, **self.extra}


class _Sentences:
    def __init__(self, rnd: random.Random):
        self.rnd = rnd
        self.train = training_texts()

    def __call__(self) -> str:
        while True:
            t = " ".join(self.rnd.choice(VOCAB) for _ in range(self.rnd.randint(3, 8)))
            if t not in self.train:
                return t


def _voice(rnd: random.Random, unseen: Sequence[str], p_unseen: float) -> tuple[str, bool]:
    held_out = rnd.random() < p_unseen
    return rnd.choice(ACCENTS) + "+" + rnd.choice(list(unseen) if held_out else SEEN), held_out


def long_recording(seed: int, index: int, seconds: float, unseen: Sequence[str], p_unseen: float = 0.5,
                   prefix: str = "r") -> tuple[np.ndarray, Item]:
    """One long-form recording of about `seconds` (its own random stream: seed and index)."""
    rnd = random.Random(f"{seed}/long/{index}")
    rng = np.random.default_rng([seed, 1, index])
    sentence = _Sentences(rnd)
    (main_v, main_unseen), (other_v, _) = _voice(rnd, unseen, p_unseen), _voice(rnd, unseen, p_unseen)
    speed0, pitch0, gain0 = rnd.randint(130, 210), rnd.randint(25, 75), rnd.uniform(0.2, 0.8)
    parts, segs, t = [], [], 0.0
    while True:
        text = sentence()
        v = main_v if rnd.random() < 0.8 else other_v
        x = synthesize(text, v, int(speed0 * rnd.uniform(0.9, 1.1)), pitch0) * gain0 * rnd.uniform(0.8, 1.2)
        pause = np.zeros(int(rnd.uniform(0.1, 1.5) * SR), np.float32)
        if segs and t + (len(pause) + len(x)) / SR > min(seconds, MAX_LONG_SECONDS) - 0.75:
            break
        segs.append({"start": round(t + len(pause) / SR, 3), "end": round(t + (len(pause) + len(x)) / SR, 3),
                     "text": text, "voice": v})
        parts += [pause, x]
        t += (len(pause) + len(x)) / SR
    parts.append(np.zeros(int(rnd.uniform(0.1, 0.7) * SR), np.float32))
    audio = np.concatenate(parts)
    noise, kind = background(rng, len(audio))
    audio = np.clip(audio + noise, -0.99, 0.99)
    item = Item(f"long/{prefix}{index:02d}.wav", round(len(audio) / SR, 2), " ".join(s["text"] for s in segs),
                main_v, main_unseen, {"second_voice": other_v, "speed": speed0, "noise": kind, "segments": segs})
    return audio, item


def short_clip(seed: int, index: int, unseen: Sequence[str], p_unseen: float = 0.5,
               prefix: str = "s") -> tuple[np.ndarray, Item]:
    """One sentence clip (its own random stream: seed and index)."""
    rnd = random.Random(f"{seed}/short/{index}")
    rng = np.random.default_rng([seed, 2, index])
    text = _Sentences(rnd)()
    voice, held_out = _voice(rnd, unseen, p_unseen)
    x = synthesize(text, voice, rnd.randint(120, 220), rnd.randint(20, 80)) * rnd.uniform(0.1, 0.9)
    x = np.concatenate([np.zeros(int(rnd.uniform(0.05, 0.3) * SR), np.float32), x,
                        np.zeros(int(rnd.uniform(0.05, 0.3) * SR), np.float32)])
    x = np.clip(x + rng.normal(0, 10 ** (rnd.uniform(-75, -45) / 20), len(x)).astype(np.float32), -0.99, 0.99)
    return x, Item(f"short/{prefix}{index:03d}.wav", round(len(x) / SR, 2), text, voice, held_out)


def long_lengths(seed: int, minutes: float, low: float = 60.0, high: float = MAX_LONG_SECONDS) -> list[float]:
    """Target lengths of the long recordings, drawn until they add up to at least `minutes`."""
    rnd = random.Random(f"{seed}/lengths")
    out: list[float] = []
    while sum(out) < minutes * 60:
        out.append(rnd.uniform(low, high))
    return out


def make_set(out_dir: str | Path, seed: int, *, long_minutes: float = 30.0, n_short: int = 300,
             unseen: Sequence[str] = UNSEEN_JUDGED, p_unseen: float = 0.5, long_seconds: tuple[float, float] = (
                 60.0, MAX_LONG_SECONDS), workers: int = 2, name: str | None = None) -> dict:
    """Write OUT/long/*.wav, OUT/short/*.wav, a .json transcript beside each, and long.json / short.json.

    Returns the set's description (also written to OUT/set.json)."""
    out = Path(out_dir)
    (out / "long").mkdir(parents=True, exist_ok=True)
    (out / "short").mkdir(parents=True, exist_ok=True)
    version = espeak_version()
    training_texts()  # build once before the threads share it
    lengths = long_lengths(seed, long_minutes, *long_seconds) if long_minutes > 0 else []

    def write(job):
        audio, item = job()
        write_wav(out / item.file, audio, SR)
        (out / item.file).with_suffix(".json").write_text(json.dumps(item.to_json(), indent=1) + "\n")
        return item

    jobs = [lambda k=k, s=s: long_recording(seed, k, s, unseen, p_unseen) for k, s in enumerate(lengths)]
    jobs += [lambda k=k: short_clip(seed, k, unseen, p_unseen) for k in range(n_short)]
    with ThreadPoolExecutor(max(1, workers)) as pool:
        items = list(pool.map(write, jobs))
    longs, shorts = items[: len(lengths)], items[len(lengths):]
    for kind, group in (("long", longs), ("short", shorts)):
        (out / f"{kind}.json").write_text(json.dumps([i.to_json() for i in group], indent=1) + "\n")
    desc = {"name": name or out.name, "seed": seed, "espeak_ng": version, "sample_rate": SR,
            "unseen_variants": list(unseen), "p_unseen": p_unseen,
            "long": {"files": len(longs), "minutes": round(sum(i.seconds for i in longs) / 60, 2),
                     "words": sum(len(i.text.split()) for i in longs)},
            "short": {"files": len(shorts), "minutes": round(sum(i.seconds for i in shorts) / 60, 2),
                      "words": sum(len(i.text.split()) for i in shorts)}}
    (out / "set.json").write_text(json.dumps(desc, indent=1) + "\n")
    return desc


def main(argv: Sequence[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("out_dir")
    ap.add_argument("--seed", type=int, required=True)
    ap.add_argument("--long-minutes", type=float, default=30.0, help="total length of the long recordings")
    ap.add_argument("--short", type=int, default=300, help="number of short clips")
    ap.add_argument("--unseen", choices=["judged", "setA"], default="judged",
                    help="which held-out voice variants to mix in (judged: never used by an earlier set)")
    ap.add_argument("--workers", type=int, default=2)
    a = ap.parse_args(argv)
    desc = make_set(a.out_dir, a.seed, long_minutes=a.long_minutes, n_short=a.short, workers=a.workers,
                    unseen=UNSEEN_JUDGED if a.unseen == "judged" else UNSEEN_SET_A)
    print(json.dumps(desc, indent=1))


if __name__ == "__main__":  # pragma: no cover
    main()
