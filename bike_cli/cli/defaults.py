"""Default values of a stage's settings dataclass, read from its source file without importing it.

`bike COMMAND --help` shows the defaults of the command's config dataclass (`ExtractConfig`,
`TrainVideoConfig`, ...). Importing those modules would import torch (the stages need it), which
costs seconds and ~1 GB before any help is printed, so the class body is read with `ast` instead:
each field's default expression (and `field(default_factory=...)`) is evaluated against the
module's own simple constants and those it imports from other bike_cli modules. A default that is
not such an expression is left out (no default shown), never guessed. A test compares every value
with the imported dataclass.
"""

from __future__ import annotations

import ast
import importlib.util
from functools import cache
from pathlib import Path
from typing import Any


def _field(*, default: Any = None, default_factory: Any = None, **_: Any) -> Any:
    return default_factory() if default_factory is not None else default


_BUILTINS = {"Path": Path, "field": _field, "dataclasses": type("dc", (), {"field": staticmethod(_field)})}


def config_defaults(ref: str) -> dict[str, Any]:
    """`{field: default}` of the dataclass `ref` ("package.module:ClassName")."""
    module, _, name = ref.partition(":")
    tree, namespace = _module(module)
    for node in tree.body:
        if isinstance(node, ast.ClassDef) and node.name == name:
            return _fields(node, namespace)
    raise LookupError(f"no class {name} in {module}")


@cache
def _module(module: str) -> tuple[ast.Module, dict[str, Any]]:
    """The parsed module and the values of its simple top-level constants."""
    spec = importlib.util.find_spec(module)
    if spec is None or spec.origin is None:
        raise LookupError(f"module {module} not found")
    tree = ast.parse(Path(spec.origin).read_text(encoding="utf-8"))
    namespace: dict[str, Any] = dict(_BUILTINS)
    for node in tree.body:
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("bike_cli"):
            for alias in node.names:
                value = _constant_of(node.module, alias.name)
                if value is not _MISSING:
                    namespace[alias.asname or alias.name] = value
        elif isinstance(node, (ast.Assign, ast.AnnAssign)) and node.value is not None:
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            if len(targets) == 1 and isinstance(targets[0], ast.Name):
                value = _evaluate(node.value, namespace)
                if value is not _MISSING:
                    namespace[targets[0].id] = value
    return tree, namespace


_MISSING = object()


def _constant_of(module: str, name: str) -> Any:
    try:
        return _module(module)[1].get(name, _MISSING)
    except (LookupError, SyntaxError, OSError, ImportError):
        return _MISSING


def _evaluate(expr: ast.expr, namespace: dict[str, Any]) -> Any:
    """The value of a constant expression over `namespace`; `_MISSING` for anything else."""
    for node in ast.walk(expr):
        if isinstance(node, ast.Name) and node.id not in namespace:
            return _MISSING
        if isinstance(node, ast.Call) and not (isinstance(node.func, (ast.Name, ast.Attribute))):
            return _MISSING
    try:
        code = compile(ast.Expression(expr), "<default>", "eval")
        return eval(code, {**namespace, "__builtins__": {}})  # noqa: S307 - bike's own source
    except Exception:
        return _MISSING


def _fields(cls: ast.ClassDef, namespace: dict[str, Any]) -> dict[str, Any]:
    defaults: dict[str, Any] = {}
    for node in cls.body:
        if isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name) and node.value is not None:
            value = _evaluate(node.value, namespace)
            if value is not _MISSING:
                defaults[node.target.id] = value
    return defaults
