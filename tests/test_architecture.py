"""The layering rule of docs/architecture.md: imports only go downward, and every module declares its surface."""

from __future__ import annotations

import ast
import importlib
from pathlib import Path

import pytest

import facematch

PACKAGE = Path(facematch.__file__).parent

#: Rank of each top-level part of the package: a module may import its own part, or a part of lower rank.
LAYERS = {
    "errors": 0, "types": 0,
    "settings": 1,
    "faces": 2, "store": 2, "validation": 2,
    "ingest": 3, "search": 3,
    "evaluation": 4,
    "api": 5,
    "cli": 6, "service": 6,
    "__main__": 7,
}


def _modules() -> list[tuple[str, Path]]:
    out = []
    for path in sorted(PACKAGE.rglob("*.py")):
        rel = path.relative_to(PACKAGE.parent).with_suffix("")
        parts = list(rel.parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        out.append((".".join(parts), path))
    return out


def _part(module: str) -> str | None:
    """"facematch.faces.detection" -> "faces"; the root package itself -> None."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else None


def _imports(path: Path) -> list[tuple[int, str]]:
    """Every facematch module an absolute import in ``path`` names (top level and inside functions)."""
    found = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.ImportFrom):
            assert node.level == 0, f"{path}:{node.lineno}: relative import (one style: absolute imports)"
            if node.module and node.module.split(".")[0] == "facematch":
                found.append((node.lineno, node.module))
        elif isinstance(node, ast.Import):
            found += [(node.lineno, a.name) for a in node.names if a.name.split(".")[0] == "facematch"]
    return found


def test_every_part_has_a_layer():
    parts = {_part(m) for m, _ in _modules()} - {None}
    assert parts <= set(LAYERS), f"parts without a layer in LAYERS: {parts - set(LAYERS)}"


def _violations(module: str, path: Path) -> list[str]:
    importer = _part(module)
    if importer is None:  # the package's facade re-exports the public surface
        return []
    out = []
    for line, target in _imports(path):
        imported = _part(target)
        if imported is None:
            out.append(f"{module}:{line} imports the facade `facematch` (import the module itself)")
        elif imported != importer and LAYERS[imported] >= LAYERS[importer]:
            out.append(f"{module}:{line} imports {target} ({imported} is not below {importer})")
    return out


def test_imports_only_go_downward():
    violations = [v for module, path in _modules() for v in _violations(module, path)]
    assert not violations, "\n".join(violations)


def test_storage_does_not_depend_on_the_face_models():
    for module, path in _modules():
        if _part(module) == "store":
            assert not [t for _, t in _imports(path) if _part(t) == "faces"], module


def test_layer_rule_catches_upward_and_sideways_imports(tmp_path):
    bad = tmp_path / "bad.py"
    bad.write_text("from facematch.errors import NotFound\n"
                   "def f():\n    from facematch.api import Facematch\n    from facematch.faces import models\n")
    assert _violations("facematch.store.catalogue", bad) == [
        "facematch.store.catalogue:3 imports facematch.api (api is not below store)",
        "facematch.store.catalogue:4 imports facematch.faces (faces is not below store)"]
    assert _violations("facematch.cli.commands", bad) == []


@pytest.mark.parametrize("module", [m for m, p in _modules() if p.name not in ("__init__.py", "__main__.py")])
def test_every_module_declares_its_public_names(module):
    mod = importlib.import_module(module)
    assert hasattr(mod, "__all__"), f"{module} has no __all__"
    missing = [name for name in mod.__all__ if not hasattr(mod, name)]
    assert not missing, f"{module}.__all__ names what it does not define: {missing}"


def test_every_named_error_is_exported():
    from facematch import errors

    named = {n for n in dir(errors) if isinstance(getattr(errors, n), type)
             and issubclass(getattr(errors, n), errors.FacematchError)}
    assert named <= set(facematch.__all__), f"not exported from facematch: {named - set(facematch.__all__)}"
