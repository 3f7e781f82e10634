"""Read a .nemo archive without trusting it: headers first, then only the members a checkpoint needs.

A .nemo file is a tar (uncompressed since NeMo 1.7, gzip before) holding
`model_config.yaml`, `model_weights.ckpt` and the tokenizer's files, which
the config names as `nemo:<member>`. Reading only the tar headers and the
small config tells us, in milliseconds, whether the file is a .nemo at all,
whether it is a transducer we can export (or a CTC-only or non-ASR model we
must refuse), and how many bytes the export will write, so the disk-space
check happens before any work.

Nothing is extracted on trust, whatever the interpreter's tarfile filter does
(Python 3.11.7 has the filter bypass CVE-2025-4517): `extract_members` never
calls tarfile's extraction. It copies the bytes of exactly the members the
checkpoint needs (the config, the weights, the files the config names),
each a regular file at the archive's top level, into files whose names it
chooses itself and creates with O_EXCL | O_NOFOLLOW in a fresh folder; each
member's size is bounded before a byte is read (the config and tokenizer
files by what such files can be, the total by the free disk). Links, devices,
folders and anything else are never written. The config is parsed only
after its event stream proved it small, shallow and free of alias bombs.
"""

from __future__ import annotations

import gzip
import os
import re
import tarfile
import zlib
from dataclasses import dataclass, field
from pathlib import Path

from ..errors import BadInputError
from ..safety.atomic import check_free_space, disk_error
from ..safety.bounded import MIB, open_regular

CONFIG = "model_config.yaml"
WEIGHTS = "model_weights.ckpt"

TRANSDUCER = "transducer"
HYBRID = "hybrid"  # transducer + auxiliary CTC head: the transducer branch is exported
CTC = "ctc"
OTHER = "other"

CONFIG_LIMIT = 4 * MIB  # NeMo ASR configs are 5-100 KB
ARTIFACT_LIMIT = 256 * MIB  # tokenizer model/vocab files: a few MB at most
MAX_READ = 16 * MIB  # no header tarfile reads in one call may be larger (a GNU long name or pax header bomb)
MAX_MEMBERS = 100_000  # a .nemo holds a handful; a header bomb is refused before it is walked further
YAML_MAX_NODES = 200_000  # expanded (aliases counted at their full size); NeMo configs have about 1-3 thousand
YAML_MAX_DEPTH = 64
SAFE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._+-]{0,199}$")
REREAD = "re-download or re-save the checkpoint"


@dataclass
class Member:
    name: str  # as stored, without a leading "./"
    kind: str  # "file", or what it is instead ("symlink", "hard link", "folder", "device", ...)
    size: int
    info: tarfile.TarInfo = field(repr=False)


@dataclass
class NemoArchive:
    path: Path
    compressed: bool
    config_text: str
    weights_bytes: int
    members: list[str]
    needed: list[Member] = field(default_factory=list)  # what extract_members copies, config and weights included

    @property
    def needed_bytes(self) -> int:
        return sum(m.size for m in self.needed)


def _bare(name: str) -> str:
    return name[2:] if name.startswith("./") else name


def _kind(m: tarfile.TarInfo) -> str:
    if m.issparse():
        return "sparse file"  # claims a size its bytes do not back: NeMo's save_to never writes one
    if m.isreg():
        return "file"
    if m.issym():
        return "symlink"
    if m.islnk():
        return "hard link"
    if m.isdir():
        return "folder"
    if m.ischr() or m.isblk():
        return "device"
    if m.isfifo():
        return "FIFO"
    return "special member"


class _HeaderBomb(tarfile.TarError):
    pass


class _BoundedReads:
    """The archive's file object, refusing any single read over MAX_READ: tarfile reads a pax or GNU
    long-name header whole, whatever size it declares (a gzip of zeros makes that gigabytes)."""

    def __init__(self, f, raw):
        self._f = f
        self._raw = raw  # the file under a gzip reader (the same object for a plain tar)

    def close_all(self) -> None:
        self._f.close()
        self._raw.close()

    def read(self, n: int = -1) -> bytes:
        if n is None or n < 0 or n > MAX_READ:
            raise _HeaderBomb(f"a header declares {n} bytes (more than {MAX_READ})")
        return self._f.read(n)

    def __getattr__(self, name: str):
        return getattr(self._f, name)


def _open(path: Path) -> tuple[tarfile.TarFile, bool]:
    """The tar (plain or gzip) opened from a regular file we hold; never blocks on a FIFO."""
    f = open_regular(path, what=".nemo checkpoint",
                     fix="give the path of a .nemo checkpoint (the tar archive NeMo's save_to() writes)")
    try:
        compressed = f.read(2) == b"\x1f\x8b"  # NeMo < 1.7 wrote gzipped archives
        f.seek(0)
        inner = gzip.GzipFile(fileobj=f, mode="rb") if compressed else f
        return tarfile.open(fileobj=_BoundedReads(inner, f), mode="r:"), compressed
    except (tarfile.TarError, EOFError, OSError, zlib.error) as exc:
        f.close()
        if isinstance(exc, _HeaderBomb):
            raise BadInputError(f"corrupt .nemo archive ({exc})", path=path,
                                fix="this is not a checkpoint NeMo's save_to() wrote; " + REREAD) from exc
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else "not a tar archive"
        raise BadInputError(f"not a .nemo checkpoint ({reason})", path=path,
                            fix="a .nemo file is the tar archive NeMo's save_to() writes; check the path, or "
                                "re-download it if it is truncated") from exc


def _closing(tar: tarfile.TarFile) -> None:
    guard = tar.fileobj
    tar.close()  # a tar opened on a file object leaves it open
    if isinstance(guard, _BoundedReads):
        guard.close_all()


def read_archive(path: str | Path) -> NemoArchive:
    """List the tar, read and check model_config.yaml; one-line BadInputError for anything else."""
    path = Path(path)
    if path.is_dir():
        raise BadInputError("is a folder, expected a .nemo file", path=path,
                            fix="export takes a NeMo checkpoint (MODEL.nemo); use `sherpa-fixed prepare` for "
                                "a folder that is already exported")
    tar, compressed = _open(path)
    members: dict[str, Member] = {}
    names: list[str] = []
    config_text = None
    try:
        for info in tar:
            if len(names) >= MAX_MEMBERS:
                raise BadInputError(f"the archive has more than {MAX_MEMBERS} members; a .nemo holds a handful",
                                    path=path, fix=REREAD)
            name = _bare(info.name)
            names.append(name)
            member = Member(name, _kind(info), int(info.size), info)
            members.setdefault(name, member)
            if name == CONFIG:
                config_text = _read_config(tar, member, path)
    except (tarfile.TarError, EOFError, OSError, zlib.error) as exc:
        weights = members.get(WEIGHTS)
        if weights is not None and not compressed:
            _refuse_cut_short(path, weights)
        raise BadInputError(f"corrupt .nemo archive ({type(exc).__name__}: {exc})", path=path,
                            fix="the file is truncated or damaged; " + REREAD) from exc
    finally:
        _closing(tar)
    if config_text is None:
        raise BadInputError(f"not a .nemo checkpoint: the archive has no {CONFIG}", path=path,
                            fix="export takes a checkpoint written by NeMo's save_to()")
    weights = members.get(WEIGHTS)
    if weights is None:
        raise BadInputError(f"the .nemo archive has no {WEIGHTS}", path=path,
                            fix="the checkpoint is incomplete; " + REREAD)
    _refuse_unsafe(path, weights)
    if not compressed:
        _refuse_cut_short(path, weights)
    return NemoArchive(path, compressed, config_text, weights.size, names, [members[CONFIG], weights])


def _refuse_unsafe(path: Path, m: Member) -> None:
    if m.kind != "file":
        raise BadInputError(f"archive member {m.name!r} is a {m.kind}, not a regular file; sherpa-fixed takes "
                            "only regular files from an archive, under names it chooses", path=path,
                            fix="this is not a checkpoint NeMo's save_to() wrote; " + REREAD)
    if not SAFE_NAME.match(m.name):
        raise BadInputError(f"archive member {m.name!r} is not a plain file name at the archive's top level",
                            path=path, fix="this is not a checkpoint NeMo's save_to() wrote; " + REREAD)


def _read_config(tar: tarfile.TarFile, m: Member, path: Path) -> str:
    _refuse_unsafe(path, m)
    if m.size > CONFIG_LIMIT:
        raise BadInputError(f"{CONFIG} is {m.size:,} bytes; a NeMo config is at most a few hundred KB (limit "
                            f"{CONFIG_LIMIT:,})", path=path, fix="this is not a genuine checkpoint; " + REREAD)
    f = tar.extractfile(m.info)
    data = f.read(CONFIG_LIMIT + 1) if f is not None else b""
    if len(data) != m.size:
        raise BadInputError(f"corrupt .nemo archive: {CONFIG} is cut short", path=path,
                            fix="the file is truncated or damaged; " + REREAD)
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise BadInputError(f"{CONFIG} is not UTF-8 text", path=path, fix=REREAD) from exc


def _refuse_cut_short(path: Path, weights: Member) -> None:
    have = path.stat().st_size - weights.info.offset_data
    if have < weights.size:
        raise BadInputError(f"corrupt .nemo archive: {WEIGHTS} is cut short ({max(have, 0)} of {weights.size} "
                            "bytes)", path=path, fix="the file is truncated; " + REREAD)


# ----------------------------------------------------------------------------- the config


def check_yaml(text: str, path: Path) -> None:
    """Refuse a config whose parse could run away: too deep, or too many nodes once aliases are expanded.

    Walks PyYAML's event stream (no recursion, no objects built): every anchor's expanded size is
    recorded when its node ends, and every alias adds that size again, so a "billion laughs" is seen
    at its full size after a few hundred events. NeMo's restore parses the same file with OmegaConf,
    which copies every alias: bounding the expansion here bounds that too."""
    import yaml

    sizes: dict[str, int] = {}
    stack: list[list] = [[None, 0]]  # [anchor, size so far] per open collection
    total = 0
    try:
        for ev in yaml.parse(text, Loader=yaml.SafeLoader):
            if isinstance(ev, (yaml.MappingStartEvent, yaml.SequenceStartEvent)):
                stack.append([ev.anchor, 1])
                if len(stack) > YAML_MAX_DEPTH:
                    raise BadInputError(f"{CONFIG} nests deeper than {YAML_MAX_DEPTH} levels", path=path,
                                        fix="this is not a genuine NeMo config; " + REREAD)
            elif isinstance(ev, (yaml.MappingEndEvent, yaml.SequenceEndEvent)):
                anchor, size = stack.pop()
                if anchor is not None:
                    sizes[anchor] = size
                stack[-1][1] += size
            elif isinstance(ev, yaml.ScalarEvent):
                if ev.anchor is not None:
                    sizes[ev.anchor] = 1
                stack[-1][1] += 1
            elif isinstance(ev, yaml.AliasEvent):
                stack[-1][1] += sizes.get(ev.anchor, 1)
            total = sum(s for _, s in stack)
            if total > YAML_MAX_NODES:
                raise BadInputError(f"{CONFIG} expands to more than {YAML_MAX_NODES:,} values (YAML aliases); "
                                    "a NeMo config has a few thousand", path=path,
                                    fix="this is not a genuine NeMo config (an alias bomb?); " + REREAD)
    except yaml.YAMLError as exc:
        raise BadInputError(f"corrupt .nemo archive: {CONFIG} is not YAML ({exc.__class__.__name__})", path=path,
                            fix=REREAD) from exc


def parse_config(archive: NemoArchive) -> dict:
    """The config as a dict, after check_yaml; also settles which members the checkpoint needs."""
    import yaml

    check_yaml(archive.config_text, archive.path)
    try:
        config = yaml.safe_load(archive.config_text) or {}
    except (yaml.YAMLError, RecursionError) as exc:
        raise BadInputError(f"corrupt .nemo archive: {CONFIG} is not YAML ({exc.__class__.__name__})",
                            path=archive.path, fix=REREAD) from exc
    if not isinstance(config, dict):
        raise BadInputError("not a .nemo checkpoint: model_config.yaml is not a mapping", path=archive.path)
    archive.needed = _needed(archive, config)
    return config


def _strings(node) -> set[str]:
    out, todo = set(), [node]
    while todo:
        x = todo.pop()
        if isinstance(x, str):
            out.add(x)
        elif isinstance(x, dict):
            todo += list(x.values())
        elif isinstance(x, list):
            todo += x
    return out


def _needed(archive: NemoArchive, config: dict) -> list[Member]:
    """Config, weights, and every member the config names (`nemo:NAME`, as NeMo's register_artifact writes)."""
    named = {s[len("nemo:"):] for s in _strings(config) if s.startswith("nemo:")}
    tar, _ = _open(archive.path)
    try:
        members = {}
        for info in tar:
            name = _bare(info.name)
            members.setdefault(name, Member(name, _kind(info), int(info.size), info))
    except (tarfile.TarError, EOFError, OSError, zlib.error) as exc:
        raise BadInputError(f"corrupt .nemo archive ({type(exc).__name__}: {exc})", path=archive.path,
                            fix="the file is truncated or damaged; " + REREAD) from exc
    finally:
        _closing(tar)
    needed = [members[CONFIG], members[WEIGHTS]]
    for name in sorted(named):
        m = members.get(name)
        if m is None:
            raise BadInputError(f"the config names {('nemo:' + name)!r}, which the archive does not hold",
                                path=archive.path, fix="the checkpoint is incomplete; " + REREAD)
        _refuse_unsafe(archive.path, m)
        if m.size > ARTIFACT_LIMIT:
            raise BadInputError(f"archive member {name!r} is {m.size:,} bytes; a tokenizer file is a few MB "
                                f"(limit {ARTIFACT_LIMIT:,})", path=archive.path,
                                fix="this is not a genuine checkpoint; " + REREAD)
        needed.append(m)
    return needed


def extract_members(archive: NemoArchive, folder: Path) -> None:
    """Copy the needed members (parse_config settled them) into the new, empty `folder`, nothing else."""
    check_free_space(folder, archive.needed_bytes + (16 << 20))
    wanted = {m.name: m for m in archive.needed}
    tar, _ = _open(archive.path)
    done: set[str] = set()
    try:
        for info in tar:
            name = _bare(info.name)
            m = wanted.get(name)
            if m is None or name in done:
                continue  # never extracted: not part of what the checkpoint needs (or a later duplicate)
            _refuse_unsafe(archive.path, Member(name, _kind(info), int(info.size), info))
            if info.size != m.size:
                raise BadInputError(f"archive member {name!r} changed while being read", path=archive.path, fix=REREAD)
            _copy_member(tar, info, folder / name, archive.path)
            done.add(name)
    except (tarfile.TarError, EOFError, zlib.error) as exc:
        raise BadInputError(f"corrupt .nemo archive ({type(exc).__name__}: {exc})", path=archive.path,
                            fix="the file is truncated or damaged; " + REREAD) from exc
    finally:
        _closing(tar)
    missing = sorted(set(wanted) - done)
    if missing:
        raise BadInputError(f"archive member {missing[0]!r} could not be read", path=archive.path, fix=REREAD)


def _copy_member(tar: tarfile.TarFile, info: tarfile.TarInfo, dst: Path, path: Path) -> None:
    src = tar.extractfile(info)
    if src is None:
        raise BadInputError(f"archive member {info.name!r} has no data", path=path, fix=REREAD)
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_CLOEXEC", 0)
    try:
        fd = os.open(dst, flags, 0o600)
    except OSError as exc:
        raise disk_error(exc, dst) from exc
    left = info.size
    try:
        with os.fdopen(fd, "wb") as out:
            while left:
                chunk = src.read(min(left, 8 * MIB))
                if not chunk:
                    raise BadInputError(f"corrupt .nemo archive: {_bare(info.name)} is cut short", path=path,
                                        fix="the file is truncated; " + REREAD)
                out.write(chunk)
                left -= len(chunk)
    except OSError as exc:
        raise disk_error(exc, dst) from exc


def classify(config: dict) -> tuple[str, str]:
    """(kind, class name) from the model config: TRANSDUCER, HYBRID, CTC or OTHER."""
    if "model" in config and isinstance(config["model"], dict) and "encoder" not in config:
        config = config["model"]
    target = str(config.get("target") or "")
    cls = target.rsplit(".", 1)[-1] if target else "?"
    decoder = config.get("decoder") or {}
    dec_target = str(decoder.get("_target_") or "") if isinstance(decoder, dict) else ""
    has_joint = isinstance(config.get("joint"), dict)
    asr = target.startswith("nemo.collections.asr.") or "preprocessor" in config
    if not asr or "encoder" not in config:
        return OTHER, cls
    if has_joint and ("RNNTDecoder" in dec_target or "StatelessTransducerDecoder" in dec_target or not dec_target):
        return (HYBRID if "aux_ctc" in config or "Hybrid" in cls else TRANSDUCER), cls
    if "ConvASRDecoder" in dec_target or "CTC" in cls:
        return CTC, cls
    return OTHER, cls


def refuse_unsupported(kind: str, cls: str, path: Path) -> None:
    if kind == CTC:
        raise BadInputError(f"is a CTC-only model ({cls}); export writes transducer (TDT/RNNT) folders", path=path,
                            fix="sherpa-onnx runs NeMo CTC models as nemo_ctc: use sherpa-onnx's "
                                "scripts/nemo export for CTC; hybrid TDT/RNNT-CTC models export fine here")
    if kind == OTHER:
        raise BadInputError(f"is not a NeMo speech-recognition transducer ({cls})", path=path,
                            fix="export takes an ASR transducer checkpoint (Parakeet TDT/RNNT, or a hybrid "
                                "TDT/RNNT-CTC model)")


