"""What sherpa-onnx reads from a NeMo encoder's metadata, and what it should read.

The rules mirror sherpa-onnx/csrc/offline-transducer-nemo-model.cc
(InitEncoder, InitJoiner) and offline-recognizer-transducer-nemo-impl.h
(PostInit): `vocab_size`, `subsampling_factor`, `pred_rnn_layers` and
`pred_hidden` are read with atoi and must be present; `normalize_type` and
`url` may be empty; `feat_dim` falls back to the caller's `feature_dim`;
TDT is switched on only by `url` containing "tdt".

`expected_metadata` is the single place where the value each key ought to
have is decided; the inspector audits against it and prepare writes it.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from .measure import Measurements
from .recipes import NEMO_DEFAULTS, Recipe
from .tokens import Tokens

REQUIRED_INT = ("vocab_size", "subsampling_factor", "pred_rnn_layers", "pred_hidden")
AUDITED = (*REQUIRED_INT, "feat_dim", "normalize_type", "url")
SUPPORTED_NORMALIZE = ("per_feature", "", "NA")
DEFAULT_SUBSAMPLING = 8  # every FastConformer (Parakeet) model
PREPARED_BY_KEY = "sherpa_fixed_prepared"
WINDOW_MARKER = "sherpa_fixed_window"  # set by prepare --window: the encoder windows itself (its parameters)


def duplicated_keys(model) -> dict[str, list[str]]:
    """Metadata keys written more than once, with every value in file order (onnxruntime keeps the last)."""
    values: dict[str, list[str]] = {}
    for p in model.metadata_props:
        values.setdefault(p.key, []).append(p.value)
    return {k: v for k, v in values.items() if len(v) > 1}


def atoi(text: str | None) -> int | None:
    """C's atoi, as sherpa-onnx applies it: leading digits, else 0; None when the key is empty/absent."""
    if text is None or text == "":
        return None
    m = re.match(r"\s*([+-]?\d+)", text)
    return int(m.group(1)) if m else 0


@dataclass
class Expected:
    value: str
    source: str
    measured: bool  # True when read off the graphs/tokens, False when from a recipe or a default


@dataclass
class KeyAudit:
    key: str
    current: str | None
    expected: str | None
    source: str
    status: str  # ok | missing | wrong | unverified | unknown
    effect: str
    fatal: bool

    def to_json(self) -> dict:
        return {
            "key": self.key,
            "current": self.current,
            "expected": self.expected,
            "source": self.source,
            "status": self.status,
            "effect": self.effect,
            "fatal": self.fatal,
        }


def _tdt_url(current: str | None, recipe: Recipe | None, tdt: bool) -> Expected:
    if recipe and recipe.metadata.get("url"):
        want = recipe.metadata["url"]
        if ("tdt" in want) == tdt:
            return Expected(want, f"recipe {recipe.family}", False)
    if current is not None and ("tdt" in current) == tdt:
        return Expected(current, "existing value already right", False)
    if tdt:
        value = f"{current}#tdt" if current else "nemo-tdt"
        return Expected(value, "TDT needs 'tdt' in url (sherpa-onnx's only TDT switch)", False)
    value = current.replace("tdt", "rnnt") if current else "nemo-rnnt"
    return Expected(value, "plain RNNT must not have 'tdt' in url", False)


def expected_metadata(
    measured: Measurements, recipe: Recipe | None, current: dict[str, str]
) -> dict[str, Expected]:
    """Value and provenance of every key sherpa-onnx reads, measured wherever possible."""
    out: dict[str, Expected] = {}
    for key in ("vocab_size", "pred_rnn_layers", "pred_hidden", "feat_dim"):
        m = measured.values.get(key)
        if m is not None:
            out[key] = Expected(str(m.value), m.source, True)
    sf = measured.values.get("subsampling_factor")
    if sf is not None:
        out["subsampling_factor"] = Expected(str(sf.value), sf.source, True)
    elif atoi(current.get("subsampling_factor")):
        out["subsampling_factor"] = Expected(current["subsampling_factor"], "existing value (not measurable)",
                                             False)
    else:
        out["subsampling_factor"] = Expected(str(DEFAULT_SUBSAMPLING), "FastConformer default (not measurable "
                                             "from this graph; --probe measures it)", False)

    cur_norm = current.get("normalize_type")
    if recipe and "normalize_type" in recipe.metadata:
        out["normalize_type"] = Expected(recipe.metadata["normalize_type"], f"recipe {recipe.family}", False)
    elif cur_norm in ("per_feature", "NA", ""):
        out["normalize_type"] = Expected(cur_norm, "existing value (no graph can tell)", False)
    else:
        out["normalize_type"] = Expected(NEMO_DEFAULTS["normalize_type"], "NeMo default (no graph can tell; "
                                         "no known family matched)", False)

    tdt = measured.get("tdt")
    if tdt is not None:
        out["url"] = _tdt_url(current.get("url"), recipe, bool(tdt))
    if recipe:
        for key, value in recipe.metadata.items():
            if key not in out and key not in current:
                out[key] = Expected(str(value), f"recipe {recipe.family}", False)
    return out


def audit_metadata(
    current: dict[str, str], expected: dict[str, Expected], measured: Measurements
) -> list[KeyAudit]:
    audits: list[KeyAudit] = []
    for key in AUDITED:
        cur = current.get(key)
        exp = expected.get(key)
        want = exp.value if exp else None
        source = exp.source if exp else "cannot be measured here"
        if key in REQUIRED_INT:
            got = atoi(cur)
            if got is None:
                audits.append(KeyAudit(key, cur, want, source, "missing",
                                       f"'{key}' does not exist in the metadata", True))
            elif want is None:
                audits.append(KeyAudit(key, cur, None, source, "unknown", f"sherpa-onnx reads {got}", False))
            elif str(got) != want:
                audits.append(KeyAudit(key, cur, want, source, "wrong", _int_effect(key, got, int(want)),
                                       key != "subsampling_factor"))
            else:
                audits.append(KeyAudit(key, cur, want, source, "ok", "", False))
        elif key == "feat_dim":
            got = atoi(cur)
            if want is None:
                audits.append(KeyAudit(key, cur, None, source, "unknown",
                                       "the encoder's mel axis is dynamic; nothing to check", False))
            elif got is None:
                fatal = want != "80"
                effect = ("not set: sherpa-onnx uses from_transducer(feature_dim=...), default 80, so callers "
                          "must pass feature_dim=" + want) if fatal else (
                          "not set: works only while callers keep the default feature_dim=80")
                audits.append(KeyAudit(key, cur, want, source, "missing", effect, fatal))
            elif str(got) != want:
                audits.append(KeyAudit(key, cur, want, source, "wrong",
                                       f"Got invalid dimensions for input: audio_signal for the following "
                                       f"indices index: 1 Got: {got} Expected: {want}", True))
            else:
                audits.append(KeyAudit(key, cur, want, source, "ok", "", False))
        elif key == "normalize_type":
            if cur is None:
                audits.append(KeyAudit(key, cur, want, source, "missing",
                                       "not set: sherpa-onnx silently skips per-feature normalisation; "
                                       "transcripts of a model trained with it degrade badly", want != ""))
            elif cur not in SUPPORTED_NORMALIZE:
                audits.append(KeyAudit(key, cur, want, source, "wrong",
                                       f"Only normalize_type=per_feature is implemented. Given: {cur}", True))
            elif want is not None and _norm(cur) != _norm(want):
                audits.append(KeyAudit(key, cur, want, source, "wrong",
                                       f"features normalised as {_norm(cur) or 'none'} but the model family "
                                       f"uses {_norm(want) or 'none'} (silent accuracy loss)", True))
            else:
                status = "ok" if exp and not exp.source.startswith("existing") else "unverified"
                audits.append(KeyAudit(key, cur, want, source, status, "", False))
        elif key == "url":
            tdt = measured.get("tdt")
            says_tdt = cur is not None and "tdt" in cur
            if tdt is None:
                audits.append(KeyAudit(key, cur, want, "TDT could not be measured", "unknown", "", False))
            elif bool(tdt) != says_tdt:
                vocab = measured.get("vocab_size")
                out_size = measured.get("joiner_output_size")
                effect = (f"vocab_size: {vocab + 1} != output_size: {out_size}" if tdt and vocab is not None
                          else "It is not a TDT model!")
                audits.append(KeyAudit(key, cur, want, source, "missing" if cur is None else "wrong", effect, True))
            else:
                audits.append(KeyAudit(key, cur, want, source, "ok", "", False))
    return audits


def _norm(v: str) -> str:
    return "" if v in ("", "NA") else v


def _int_effect(key: str, got: int, want: int) -> str:
    if key == "subsampling_factor":
        return f"timestamps come out scaled by {got}/{want} (silent; text unaffected)"
    if key in ("pred_rnn_layers", "pred_hidden"):
        index = 0 if key == "pred_rnn_layers" else 2
        return (f"decoding fails: Got invalid dimensions for input: states.1 for the following indices "
                f"index: {index} Got: {got} Expected: {want}")
    return f"sherpa-onnx reads {got}, the files measure {want}"  # want may come from tokens.txt


def sherpa_first_error(
    current: dict[str, str], measured: Measurements, tokens: Tokens | None
) -> str | None:
    """The first fatal message sherpa-onnx would print loading this model as is, in its own order."""
    for key in ("vocab_size", "subsampling_factor", "pred_rnn_layers", "pred_hidden"):
        if atoi(current.get(key)) is None:
            return f"'{key}' does not exist in the metadata"
        if atoi(current[key]) < 0:
            return f"Invalid value {atoi(current[key])} for '{key}'"
    vocab = atoi(current["vocab_size"]) + 1
    is_tdt = "tdt" in (current.get("url") or "")
    out_size = measured.get("joiner_output_size")
    if out_size is not None:
        if is_tdt and vocab == out_size:
            return "It is not a TDT model!"
        if not is_tdt and vocab != out_size:
            return f"vocab_size: {vocab} != output_size: {out_size}"
    if tokens is not None:
        if tokens.blank_id is None:
            return "tokens.txt does not include the blank token <blk>"
        if tokens.blank_id != vocab - 1:
            return "<blk> is not the last token!"
        if tokens.count != vocab:
            return f"number of lines in tokens.txt {tokens.count} != {vocab} (vocab_size)"
    feat = measured.get("feat_dim")
    meta_feat = atoi(current.get("feat_dim"))
    if feat is not None and meta_feat is not None and meta_feat != feat:
        return (f"Got invalid dimensions for input: audio_signal for the following indices index: 1 "
                f"Got: {meta_feat} Expected: {feat}")
    norm = current.get("normalize_type")
    if norm is not None and norm not in SUPPORTED_NORMALIZE:
        return f"Only normalize_type=per_feature is implemented. Given: {norm}"
    for key, index in (("pred_rnn_layers", 0), ("pred_hidden", 2)):
        want = measured.get(key)
        if want is not None and atoi(current.get(key)) != want:
            return (f"Got invalid dimensions for input: states.1 for the following indices index: {index} "
                    f"Got: {atoi(current.get(key))} Expected: {want}")
    return None
