"""The import structure of bike_cli, read with `ast` (docs/architecture.md draws it).

Layers, from the top: cli -> stages -> {engine, models, data, eval, report} -> io -> config -> errors
(and progress, the Progress protocol: both below every layer).
A module imports only from its own package or from a lower layer; the middle layer's packages import
one another without a circle; no stage imports another (demo, which runs the others, aside).
"""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "bike_cli"
LAYERS = {"errors": 0, "progress": 0, "config": 1, "io": 2, "engine": 3, "models": 3, "data": 3, "eval": 3, "report": 3,
          "stages": 4, "cli": 5, "__main__": 6, "__init__": 6}
PROFILE_HOMES = ("config/profile.py", "cli/")  # where the profile may be chosen by its name
PROFILE_NAMES = {"bike", "authors"}


def _modules() -> dict[str, Path]:
    return {".".join(p.relative_to(PACKAGE.parent).with_suffix("").parts): p for p in PACKAGE.rglob("*.py")}


def _imports(path: Path) -> set[str]:
    """Every bike_cli module that `path` imports, at any depth of its code (lazy imports too)."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("bike_cli"):
            found.add(node.module)
            found.update(f"{node.module}.{a.name}" for a in node.names)  # `from bike_cli.io import x`
        elif isinstance(node, ast.Import):
            found.update(a.name for a in node.names if a.name.startswith("bike_cli"))
    return found


def _graph() -> dict[str, set[str]]:
    modules = _modules()
    return {name: {m for m in _imports(path) if m in modules and m != name} for name, path in modules.items()}


def _package(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "__init__"


def test_no_module_import_circle():
    graph, state, circles = _graph(), {}, []

    def visit(node: str, trail: list[str]) -> None:
        state[node] = "open"
        for nxt in sorted(graph[node]):
            if state.get(nxt) == "open":
                circles.append(trail[trail.index(nxt):] + [nxt] if nxt in trail else [node, nxt])
            elif nxt not in state:
                visit(nxt, [*trail, nxt])
        state[node] = "done"

    for start in sorted(graph):
        if start not in state:
            visit(start, [start])
    assert circles == []


def test_no_package_import_circle_in_the_middle_layer():
    edges = {(_package(a), _package(b)) for a, targets in _graph().items() for b in targets}
    middle = {p for p, rank in LAYERS.items() if rank == 3}
    both_ways = sorted((a, b) for a, b in edges if a in middle and b in middle and a < b and (b, a) in edges)
    assert both_ways == []


def test_no_stage_imports_another_stage():
    offenders = sorted(f"{a} -> {b}" for a, targets in _graph().items() for b in targets
                       if _package(a) == _package(b) == "stages" and not a.endswith(".demo"))
    assert offenders == []


def test_imports_run_down_the_layers():
    offenders = sorted(f"{a} -> {b}" for a, targets in _graph().items() for b in targets
                       if _package(a) != _package(b) and LAYERS[_package(b)] >= LAYERS[_package(a)]
                       and not (LAYERS[_package(a)] == LAYERS[_package(b)] == 3))
    assert offenders == []


def _names_a_profile(node: ast.AST) -> bool:
    if isinstance(node, ast.Constant):
        return node.value in PROFILE_NAMES
    if isinstance(node, (ast.Tuple, ast.List, ast.Set)):
        return any(_names_a_profile(e) for e in node.elts)
    name = node.id if isinstance(node, ast.Name) else node.attr if isinstance(node, ast.Attribute) else None
    return name in {"AUTHORS", "BIKE"}


def test_the_profile_is_never_tested_by_name_outside_its_home():
    offenders = []
    for path in PACKAGE.rglob("*.py"):
        relative = path.relative_to(PACKAGE).as_posix()
        if relative.startswith(PROFILE_HOMES):
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Compare) and any(_names_a_profile(n) for n in [node.left, *node.comparators]):
                offenders.append(f"{relative}:{node.lineno}")
    assert sorted(offenders) == []


def _library_files_calling(name: str) -> list[str]:
    """The library files (relative to bike_cli/) that call `name(...)` (a function or a method)."""
    found = []
    for path in PACKAGE.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            func = node.func if isinstance(node, ast.Call) else None
            called = func.id if isinstance(func, ast.Name) else func.attr if isinstance(func, ast.Attribute) else None
            if called == name:
                found.append(path.relative_to(PACKAGE).as_posix())
                break
    return sorted(found)


def test_weights_are_loaded_into_modules_in_at_most_three_files():
    """One factory converts every weight source, then loads it strictly (open_clip's load_checkpoint)."""
    assert len(_library_files_calling("load_state_dict")) <= 3, _library_files_calling("load_state_dict")


def test_only_the_config_the_stages_and_the_cli_look_a_profile_up():
    """The stage resolves the Profile once from --compat and passes it (or the rules it chose) down."""
    callers = [f for f in _library_files_calling("get_profile") if not f.startswith(("config/", "stages/", "cli/"))]
    assert callers == []


def test_models_import_nothing_from_the_profile():
    """The math knows nothing of --compat: rules reach it as functions and values."""
    graph = _graph()
    offenders = sorted(m for m, imported in graph.items() if _package(m) == "models"
                       and any(i.startswith("bike_cli.config.profile") for i in imported))
    assert offenders == []


# The modules of models/ that read what users name or give (model names, weight files, checkpoints, a
# cache's recorded weights): they may raise bike's errors. Every other module of models/ computes.
MODEL_LOADERS = {"factory", "registry",
                 "clip",  # weight files, the hub, a checkpoint's image tower against the cache's
                 "text_towers"}  # which text side a user's open_clip model has (refuses a model it cannot read)


def test_the_models_that_compute_know_nothing_of_the_command_line():
    """models/ raises ValueError/TypeError for a broken contract; the stage or the loader that took the
    value from the user turns it into a BikeError (`errors.as_user_error`)."""
    graph = _graph()
    computing = {m for m in graph if _package(m) == "models" and m.split(".")[-1] not in MODEL_LOADERS | {"__init__"}}
    assert {"bike_cli.models.text", "bike_cli.models.heads", "bike_cli.models.build"} <= computing
    assert MODEL_LOADERS <= {m.split(".")[-1] for m in graph if _package(m) == "models"}  # no stale name
    offenders = sorted(m for m in computing if any(i == "bike_cli.errors" or i.startswith("bike_cli.errors.")
                                                    for i in graph[m]))
    assert offenders == []


PROFILE_FIELDS = {"test_indices", "train_indices", "test_transform", "video_scores", "fused_video_scores",
                  "attrs_scores", "zero_shot", "loss", "optimizer_groups", "lr_cadence", "auto_precision"}


def test_no_code_compares_a_profile_field():
    """A rule is looked up in a table keyed by the field's value, never chosen by `==` with a
    fall-through that a third profile would silently take."""
    offenders = []
    for path in PACKAGE.rglob("*.py"):
        relative = path.relative_to(PACKAGE).as_posix()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Compare) and any(isinstance(n, ast.Attribute) and n.attr in PROFILE_FIELDS
                                                     for n in [node.left, *node.comparators]):
                offenders.append(f"{relative}:{node.lineno}")
    assert offenders == []


def _defines(path: Path, symbol: str) -> bool:
    """Whether `path` defines `symbol` (a function, class or assigned name; `Class.method` inside a class)."""
    scope = ast.parse(path.read_text()).body
    for part in symbol.split("."):
        found = None
        for node in scope:
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)) and node.name == part:
                found = node
            elif isinstance(node, (ast.Assign, ast.AnnAssign)):
                targets = node.targets if isinstance(node, ast.Assign) else [node.target]
                if any(isinstance(t, ast.Name) and t.id == part for t in targets):
                    found = node
            if found is not None:
                break
        if found is None:
            return False
        scope = getattr(found, "body", [])
    return True


def test_every_file_and_symbol_the_architecture_doc_names_exists():
    """docs/architecture.md walks each stage through `file.py: symbol` references: each must be real."""
    import re

    text = (PACKAGE.parent / "docs" / "architecture.md").read_text(encoding="utf-8")
    refs = re.findall(r"`([a-z_/]+\.py):\s+([A-Za-z_][\w.]*)`", text)
    assert len(refs) >= 20  # the walkthroughs of extract, train-video and eval
    missing = [f"{file}: {symbol}" for file, symbol in refs
               if not (PACKAGE / file).is_file() or not _defines(PACKAGE / file, symbol)]
    assert missing == []
