"""Per-family recipes: the metadata no graph can tell, kept as data in `patches/`.

A recipe is chosen only when exactly one matches what the graphs measure;
an ambiguous or unknown model falls back to NeMo's defaults, loudly.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

from ..errors import BadInputError
from ..safety.bounded import read_text_bounded

RECIPE_LIMIT = 1 << 20  # a recipe is a few lines of JSON

MATCH_KEYS = (
    "feat_dim",
    "vocab_size",
    "num_durations",
    "encoder_dim",
    "encoder_layers",
    "pred_hidden",
    "pred_rnn_layers",
)

# What NeMo itself uses when a model's config is silent; only used when no recipe matches.
NEMO_DEFAULTS = {"normalize_type": "per_feature"}


@dataclass(frozen=True)
class Recipe:
    family: str
    description: str
    match: dict
    metadata: dict
    path: Path

    def matches(self, measured: dict) -> bool:
        compared = 0
        for key, want in self.match.items():
            have = measured.get(key)
            if have is None:
                continue
            if have != want:
                return False
            compared += 1
        return compared >= 3  # feat_dim, vocab and durations at least


RECIPES_ENV = "SHERPA_FIXED_RECIPES"


def recipe_dirs() -> list[Path]:
    """Folders searched for recipes: $SHERPA_FIXED_RECIPES (os.pathsep-separated) first, then ours."""
    here = Path(__file__).resolve().parent.parent
    extra = [Path(p) for p in os.environ.get(RECIPES_ENV, "").split(os.pathsep) if p]
    return [p for p in (*extra, here / "_data" / "patches", here.parent / "patches") if p.is_dir()]


def load_recipes() -> tuple[Recipe, ...]:
    return _load(tuple(recipe_dirs()))


@lru_cache(maxsize=8)
def _load(folders: tuple[Path, ...]) -> tuple[Recipe, ...]:
    recipes: dict[str, Recipe] = {}
    for folder in folders:
        for path in sorted(folder.glob("*.json")):
            try:
                data = json.loads(read_text_bounded(path, RECIPE_LIMIT, what="recipe"))
                unknown = set(data.get("match", {})) - set(MATCH_KEYS)
                if unknown:
                    raise ValueError(f"unknown match keys {sorted(unknown)}")
                recipe = Recipe(data["family"], data.get("description", ""), dict(data["match"]),
                                dict(data.get("metadata", {})), path)
            except BadInputError:
                raise
            except (ValueError, KeyError, TypeError) as exc:
                raise BadInputError(f"broken recipe ({exc})", path=path, fix="fix or remove the file") from exc
            recipes.setdefault(recipe.family, recipe)
    return tuple(recipes.values())


def find_recipe(measured: dict, metadata_url: str | None = None) -> tuple[Recipe | None, str]:
    """The one recipe matching the measurements, and a sentence saying how it was chosen."""
    recipes = load_recipes()
    if metadata_url:
        by_url = [r for r in recipes if r.metadata.get("url") and r.metadata["url"].rstrip("/") ==
                  metadata_url.rstrip("/")]
        if len(by_url) == 1 and by_url[0].matches(measured):
            return by_url[0], f"url metadata names {by_url[0].family}"
    hits = [r for r in recipes if r.matches(measured)]
    if len(hits) == 1:
        keys = [k for k in hits[0].match if measured.get(k) is not None]
        return hits[0], "measured " + ", ".join(f"{k}={measured[k]}" for k in keys)
    if len(hits) > 1:
        return None, "several families match (" + ", ".join(r.family for r in hits) + ")"
    return None, "no known family matches"
