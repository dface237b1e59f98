"""One progress protocol: every long loop of bike_cli reports to `bike_cli.progress.Progress`."""

from __future__ import annotations

import ast
from pathlib import Path

from bike_cli.cli.progress import RichProgress
from bike_cli.progress import Progress

PACKAGE = Path(__file__).resolve().parents[1] / "bike_cli"
PROTOCOL = {"start", "advance", "stop"}


def test_no_module_defines_a_progress_of_its_own():
    """A class with any of start/advance/stop and the name of a progress is `Progress` or derives from it."""
    offenders = []
    for path in PACKAGE.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if not isinstance(node, ast.ClassDef) or path == PACKAGE / "progress.py":
                continue
            methods = {n.name for n in node.body if isinstance(n, ast.FunctionDef)}
            bases = {b.id for b in node.bases if isinstance(b, ast.Name)}
            if methods & PROTOCOL == {"advance"} or methods >= PROTOCOL and "Progress" not in bases:
                offenders.append(f"{path.relative_to(PACKAGE)}: {node.name}")
    assert offenders == []


def test_the_clis_bar_is_a_progress_and_the_silent_default_reports_nothing():
    assert isinstance(RichProgress(), Progress)
    silent = Progress()
    silent.start(3, "videos")
    silent.advance(3)
    silent.stop()
