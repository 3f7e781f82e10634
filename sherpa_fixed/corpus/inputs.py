"""What to transcribe: a NeMo manifest (JSON lines) or a folder searched recursively for audio.

A manifest is untrusted input: every line is bounded (MAX_LINE bytes), must be one JSON object with a
non-empty string `audio_filepath`, an optional finite `duration` >= 0 and an optional string `text`;
the first line that is not is refused with its number, before anything is decoded. The manifest itself
must be a regular file (a FIFO or a device would block the reader or never end).

Each input gets a key that is stable from run to run and unique within the input, which is what the
resumable output records and dedupes on: `LINE:audio_filepath` for a manifest (the line number, so a
file listed twice is two inputs, plus the path as written, so a manifest edited under an existing
output does not silently match other lines) and the path relative to the folder for a folder.

Relative paths resolve as NeMo resolves them (nemo.collections.common.parts.preprocessing.manifest.
get_full_path): against the manifest's folder when the file is there, else against the working
directory; the driver makes them absolute, so workers on other machines see the same path.
"""

from __future__ import annotations

import json
import math
import os
import stat
from dataclasses import dataclass, field
from pathlib import Path

from ..errors import BadInputError
from ..safety.bounded import open_regular

MAX_LINE = 1 << 20  # bytes per manifest line: a half-hour transcript is about 30 kB
AUDIO_SUFFIXES = frozenset({".wav", ".flac", ".ogg", ".oga", ".opus", ".mp3"})


@dataclass
class Item:
    """One input file: its key in the output, where to read it, and the fields its output line starts from."""

    key: str
    path: str  # absolute
    fields: dict = field(default_factory=dict)  # the manifest line as given (a folder: audio_filepath)
    seconds: float | None = None  # declared duration, for scheduling and the ETA; None when unknown
    size: int | None = None  # bytes on disk, for scheduling when the duration is unknown

    def to_json(self) -> dict:
        return {"key": self.key, "path": self.path, "fields": self.fields, "seconds": self.seconds,
                "size": self.size}

    @classmethod
    def from_json(cls, d: dict) -> Item:
        return cls(d["key"], d["path"], d["fields"], d["seconds"], d["size"])


@dataclass
class Corpus:
    source: Path
    kind: str  # "manifest" or "folder"
    items: list[Item]

    @property
    def has_text(self) -> bool:
        return any(isinstance(i.fields.get("text"), str) for i in self.items)


def read_corpus(source: str | os.PathLike) -> Corpus:
    """A manifest file or a folder of audio; BadInputError naming the file (and line) otherwise."""
    path = Path(source)
    try:
        st = os.stat(path)
    except FileNotFoundError as exc:
        raise BadInputError("input not found", path=path,
                            fix="give a NeMo manifest (JSON lines) or a folder of audio files") from exc
    except OSError as exc:
        raise BadInputError(f"cannot open input ({exc.strerror})", path=path) from exc
    if stat.S_ISDIR(st.st_mode):
        items = scan_folder(path)
        kind = "folder"
    else:
        items = read_manifest(path)
        kind = "manifest"
    if not items:
        raise BadInputError("no audio to transcribe" + (" (no .wav, .flac, .ogg, .opus or .mp3 file below it)"
                                                        if kind == "folder" else " (no manifest lines)"), path=path)
    return Corpus(path, kind, items)


def _reject_constant(name: str):
    raise ValueError(f"{name} is not valid JSON")


def read_manifest(path: str | os.PathLike) -> list[Item]:
    """Every line of a NeMo manifest as an Item, in order; the first bad line is refused with its number."""
    path = Path(path)
    folder = Path(os.path.abspath(path)).parent
    items: list[Item] = []
    with open_regular(path, what="manifest") as f:
        number = 0
        while True:
            raw = f.readline(MAX_LINE + 1)
            if not raw:
                break
            number += 1
            where = f"line {number}"
            if len(raw) > MAX_LINE:
                raise BadInputError(f"{where} is longer than {MAX_LINE >> 20} MiB", path=path,
                                    fix="a manifest holds one short JSON object per line")
            try:
                text = raw.decode("utf-8")
            except UnicodeDecodeError as exc:
                raise BadInputError(f"{where} is not UTF-8 (byte {exc.start + 1})", path=path) from exc
            if not text.strip():
                continue  # blank lines (a trailing newline too many) mean nothing
            items.append(_manifest_item(text, number, path, folder))
    return items


def _manifest_item(text: str, number: int, path: Path, folder: Path) -> Item:
    where = f"line {number}"
    fix = 'each line must be one JSON object such as {"audio_filepath": "a.flac", "duration": 3.2, "text": "..."}'
    try:
        obj = json.loads(text, parse_constant=_reject_constant)
    except json.JSONDecodeError as exc:
        raise BadInputError(f"{where} is not JSON ({exc.msg} at column {exc.colno})", path=path, fix=fix) from exc
    except (ValueError, RecursionError) as exc:
        raise BadInputError(f"{where} is not JSON ({exc})", path=path, fix=fix) from exc
    if not isinstance(obj, dict):
        raise BadInputError(f"{where} is a JSON {type(obj).__name__}, not an object", path=path, fix=fix)
    audio = obj.get("audio_filepath")
    if not isinstance(audio, str) or not audio.strip():
        raise BadInputError(f"{where} has no audio_filepath (a non-empty string)", path=path, fix=fix)
    if "\0" in audio:
        raise BadInputError(f"{where}: audio_filepath contains a NUL byte", path=path)
    seconds = obj.get("duration")
    if seconds is not None:
        if isinstance(seconds, bool) or not isinstance(seconds, (int, float)) or not math.isfinite(seconds) \
                or seconds < 0:
            raise BadInputError(f"{where}: duration {seconds!r} is not a number of seconds (0 or more)", path=path)
        seconds = float(seconds)
    if "text" in obj and not isinstance(obj["text"], str):
        raise BadInputError(f"{where}: text is {type(obj['text']).__name__}, not a string", path=path, fix=fix)
    resolved = resolve_audio_path(audio, folder)
    return Item(f"{number}:{audio}", resolved, obj, seconds, _size(resolved))


def resolve_audio_path(audio_filepath: str, manifest_folder: Path) -> str:
    """NeMo's rule: a relative path is under the manifest's folder when the file is there, else as given."""
    given = os.path.expanduser(audio_filepath)
    if os.path.isabs(given):
        return os.path.abspath(given)
    candidate = manifest_folder / given
    if os.path.lexists(candidate) or not os.path.lexists(given):
        return os.path.abspath(candidate)  # a missing file is reported where NeMo looks for it first
    return os.path.abspath(given)


def scan_folder(root: str | os.PathLike) -> list[Item]:
    """Audio files below `root` (by suffix, case-insensitive), sorted; hidden files and folders skipped.

    Symlinked folders are not followed (no loops, nothing outside unless a file link points there)."""
    root = Path(os.path.abspath(root))
    items = []
    for folder, dirs, files in os.walk(root, followlinks=False):
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        for name in sorted(files):
            if name.startswith(".") or os.path.splitext(name)[1].lower() not in AUDIO_SUFFIXES:
                continue
            full = os.path.join(folder, name)
            rel = os.path.relpath(full, root).replace(os.sep, "/")
            items.append(Item(rel, full, {"audio_filepath": full}, None, _size(full)))
    return items


def _size(path: str) -> int | None:
    try:
        return os.stat(path).st_size
    except OSError:
        return None
