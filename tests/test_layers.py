"""Arrows point down: no module imports from a layer above its own (lazy imports inside functions included).

    errors < safety < ort < reading < decoding < rewriting < {checking, quantizing, exporting, corpus,
    testing, oracle} < {render, demo} < cli

safety/ (the one mechanism every writer uses) knows nothing but errors; reading/ knows nothing of
rewriting/ or decoding/; the onnxruntime helpers (ort.py) sit below both. The package root may be
imported from anywhere for `__version__` and its lazy names.
"""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parent.parent / "sherpa_fixed"
LEVEL = {"errors": 0, "safety": 1, "ort": 2, "reading": 3, "decoding": 4, "rewriting": 5, "checking": 6,
         "quantizing": 6, "exporting": 6, "corpus": 6, "testing": 6, "oracle": 6, "render": 7, "demo": 7, "cli": 8}


def part_of(module: str) -> str | None:
    """'sherpa_fixed.reading.inspector' -> 'reading'; the root package itself -> None."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else None


def imports(path: Path, root: Path = PACKAGE) -> list[tuple[int, str]]:
    """(line, absolute module) of every sherpa_fixed import in a file of the package at `root`."""
    here = ["sherpa_fixed", *path.relative_to(root).with_suffix("").parts]
    if here[-1] == "__init__":
        here = here[:-1]
    package = here if path.name == "__init__.py" else here[:-1]
    out = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = package[: len(package) - node.level + 1]
                mod = ".".join(base + ([node.module] if node.module else []))
                if not node.module:  # from . import x, y
                    out += [(node.lineno, f"{mod}.{a.name}") for a in node.names]
                    continue
            else:
                mod = node.module or ""
            out.append((node.lineno, mod))
        elif isinstance(node, ast.Import):
            out += [(node.lineno, a.name) for a in node.names]
    return [(line, m) for line, m in out if m == "sherpa_fixed" or m.startswith("sherpa_fixed.")]


def test_every_package_and_module_has_a_layer():
    tops = {p.stem if p.is_file() else p.name for p in PACKAGE.iterdir()
            if (p.suffix == ".py" and p.name != "__init__.py") or (p.is_dir() and (p / "__init__.py").exists())}
    assert tops <= set(LEVEL) | {"_data"}, sorted(tops - set(LEVEL))


def upward_imports(root: Path = PACKAGE) -> list[str]:
    out = []
    for path in sorted(root.rglob("*.py")):
        me = part_of(".".join(["sherpa_fixed", *path.relative_to(root).with_suffix("").parts]))
        if me is None or me == "__init__":
            continue
        for line, mod in imports(path, root):
            other = part_of(mod)
            if other is None or other == "__version__" or other == me:
                continue
            if LEVEL.get(other, 99) > LEVEL[me]:
                out.append(f"{path.relative_to(root.parent)}:{line} imports {mod} ({me} is below {other})")
    return out


def test_no_module_imports_from_above_its_layer():
    upward = upward_imports()
    assert not upward, "\n".join(upward)


def test_the_rule_sees_an_upward_import(tmp_path):
    """The checker itself, on a package where reading/ imports rewriting/ (as it did before issue 20), lazily."""
    root = tmp_path / "sherpa_fixed"
    (root / "reading").mkdir(parents=True)
    (root / "reading" / "inspector.py").write_text("def f():\n    from ..rewriting import posenc\n")
    (root / "safety").mkdir()
    (root / "safety" / "lock.py").write_text("from ..errors import BadInputError\nfrom .. import __version__\n")
    assert upward_imports(root) == ["sherpa_fixed/reading/inspector.py:2 imports sherpa_fixed.rewriting "
                                    "(reading is below rewriting)"]
