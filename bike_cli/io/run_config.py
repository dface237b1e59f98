"""A run's resolved config (`RUN/config.yaml`): every setting of the stage, usable as a recipe.

The text is the config layer's (`bike_cli.config.recipe.resolved_yaml`); the file is written by the
atomic writer like every other (`bike_cli.io.atomic`), so a kill leaves the old one or the new one
and a full disk or a read-only folder is one line.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from bike_cli.config.recipe import resolved_yaml
from bike_cli.io.atomic import write_text


def save_resolved(config: Any, path: str | Path, *, stage: str | None = None) -> Path:
    """Write every setting of `config` to `path` as a recipe that `build_config` reads back equal."""
    return write_text(path, resolved_yaml(config, stage=stage))
