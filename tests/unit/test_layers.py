"""The dependency rule (docs/architecture.md): domain <- projections <- consumers <- infra.
Each layer imports only itself and the layers before it, function-local imports included."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
LAYERS = ("domain", "projections", "consumers", "infra")


def imported_layers(path: Path) -> set[str]:
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text("utf-8"))):
        if isinstance(node, ast.Import):
            found.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module.split(".")[0])
    return found & set(LAYERS)


@pytest.mark.parametrize("layer", LAYERS)
def test_a_layer_imports_only_itself_and_the_layers_before_it(layer: str) -> None:
    allowed = set(LAYERS[:LAYERS.index(layer) + 1])
    against = {str(path.relative_to(ROOT)): sorted(imported_layers(path) - allowed)
               for path in sorted((ROOT / layer).rglob("*.py"))}
    assert {path: bad for path, bad in against.items() if bad} == {}
