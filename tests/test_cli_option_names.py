"""Every `--option` a message or a help text of bike names is an option of some bike command."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import typer

from bike_cli.cli.app import app

PACKAGE = Path(__file__).resolve().parents[1] / "bike_cli"
# `accelerate launch --num_processes N`: another tool's options, spelled with underscores (bike's use dashes)
OPTION = re.compile(r"(?<![\w-])--[a-z][a-z0-9-]*[a-z0-9](?![\w])")
# pip's options in the one command that repairs a torch / torchvision pair (cli/torch_pair.py)
PIP_OPTIONS = {"--extra-index-url", "--force-reinstall", "--no-deps", "--retries", "--timeout"}


def _options_of_the_cli() -> set[str]:
    names = {"--help"}
    commands = [typer.main.get_command(app)]
    while commands:
        command = commands.pop()
        names.update(o for p in command.params for o in (*p.opts, *p.secondary_opts) if o.startswith("--"))
        commands += list(getattr(command, "commands", {}).values())
    return names


def test_every_option_named_in_bike_s_strings_exists():
    named: dict[str, set[str]] = {}
    for path in PACKAGE.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Constant) and isinstance(node.value, str):  # f-string parts too
                for option in set(OPTION.findall(node.value)) - (PIP_OPTIONS if "pip install" in node.value
                                                                 or path.name == "torch_pair.py" else set()):
                    named.setdefault(option, set()).add(str(path.relative_to(PACKAGE)))
    unknown = {option: sorted(files) for option, files in named.items() if option not in _options_of_the_cli()}
    assert unknown == {}
