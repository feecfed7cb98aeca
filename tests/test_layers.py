"""Dependencies point one way: config -> data -> models -> training -> tracking/serving ->
tuning/registry -> the main job -> cli. Every import of an aeservice module is read from the
source, at module level or inside a function alike, and may only reach its own layer or one
below; a new module has to be placed in a layer here."""
from __future__ import annotations

import ast
from pathlib import Path

import aeservice

PACKAGE = Path(aeservice.__file__).parent
LAYERS = (  # lowest first
    ("aeservice", "aeservice.errors", "aeservice.backend", "aeservice.timing", "aeservice.progress", "aeservice.signals"),
    ("aeservice.config",),
    ("aeservice.data", "aeservice.sizes"),
    ("aeservice.models",),
    ("aeservice.training", "aeservice.leaderboard", "aeservice.figures"),
    ("aeservice.tracking", "aeservice.serving"),
    ("aeservice.tuning", "aeservice.registry", "aeservice.comparison"),
    ("aeservice.pipeline",),
    ("aeservice.cli", "aeservice.__main__"),
)


def _layer(module: str) -> int:
    """The layer of the longest prefix of `module` in LAYERS."""
    matches = [(len(prefix), i) for i, layer in enumerate(LAYERS) for prefix in layer
               if module == prefix or (prefix != "aeservice" and module.startswith(prefix + "."))]
    assert matches, f"{module} is in no layer of tests/test_layers.py"
    return max(matches)[1]


def _modules() -> dict[str, Path]:
    return {".".join(("aeservice", *path.relative_to(PACKAGE).with_suffix("").parts)).removesuffix(".__init__"): path
            for path in sorted(PACKAGE.rglob("*.py"))}


def _imported(tree: ast.AST) -> list[tuple[str, int]]:
    """(aeservice module, line) of every import in the file; `from X import name` counts as X
    unless name is a module of the package."""
    modules, found = _modules(), []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [(a.name, node.lineno) for a in node.names if a.name.split(".")[0] == "aeservice"]
        elif isinstance(node, ast.ImportFrom) and node.module and node.module.split(".")[0] == "aeservice":
            for alias in node.names:
                sub = f"{node.module}.{alias.name}"
                found.append((sub if sub in modules else node.module, node.lineno))
    return found


def test_every_import_reaches_the_same_layer_or_a_lower_one():
    upward = []
    for module, path in _modules().items():
        for target, line in _imported(ast.parse(path.read_text())):
            if _layer(target) > _layer(module):
                upward.append(f"{path.relative_to(PACKAGE.parent)}:{line} {module} imports {target}")
    assert not upward, "\n".join(upward)


def test_nothing_but_the_entry_point_imports_the_cli():
    for module, path in _modules().items():
        if not module.startswith("aeservice.cli") and module != "aeservice.__main__":
            assert not [t for t, _ in _imported(ast.parse(path.read_text())) if t.startswith("aeservice.cli")], module
