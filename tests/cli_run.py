"""`bike` run as users run it, in a real subprocess, and its stderr read as one line (for the tests)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

BIKE = [sys.executable, "-m", "bike_cli"]


def bike(*args: object, cwd: Path | None = None, timeout: int = 600, columns: int | None = None
         ) -> subprocess.CompletedProcess:
    """`python -m bike_cli ARGS` (each turned into text); `columns`: the terminal width Rich sees."""
    env = {**os.environ, "COLUMNS": str(columns)} if columns else None
    return subprocess.run([*BIKE, *map(str, args)], capture_output=True, text=True, cwd=cwd, env=env,
                          timeout=timeout)


def one_line(done: subprocess.CompletedProcess) -> str:
    """stderr with its folds undone (a message is one line however wide the terminal), never a traceback."""
    assert "Traceback" not in done.stderr, done.stderr[-3000:]
    return " ".join(done.stderr.split())
