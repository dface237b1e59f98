"""The `bike` command: registers every stage command, in stage order, on the app of `cli.core`.

Importing this module is cheap: command modules import their stage (and with it torch) inside the
command body, so `bike --help`, `bike --version`, `bike COMMAND --help` and argument errors load
neither torch nor open_clip. Before a command runs (after its options are parsed, so never for
`--help`), `cli.torch_pair` checks from package metadata that torch and torchvision belong together.
"""

from __future__ import annotations

import sys
from typing import Any

import typer

from bike_cli.cli import (
    demo,
    evaluate,
    extract,
    fuse,
    gen_attributes,
    merge,
    predict,
    search,
    train_attrs,
    train_video,
)
from bike_cli.cli.core import BikeCommand, app, fail
from bike_cli.cli.torch_pair import installed_mismatch

COMMANDS = (  # the order of `bike --help`: the order the stages run in
    ("extract-features", extract.extract_features),
    ("gen-attributes", gen_attributes.gen_attributes),
    ("train-video", train_video.train_video),
    ("train-attrs", train_attrs.train_attrs),
    ("merge", merge.merge),
    ("eval", evaluate.evaluate),
    ("fuse", fuse.fuse),
    ("predict", predict.predict),
    ("search", search.search),
    ("demo", demo.demo),
)


class CheckedCommand(BikeCommand):
    """A stage command that first checks the installed torch and torchvision belong together: a
    mismatched pair is one line with the fix and exit 1, before torch is imported."""

    def invoke(self, ctx: typer.Context) -> Any:
        problem = installed_mismatch()
        if problem:
            fail(problem)
        return super().invoke(ctx)


for _name, _command in COMMANDS:
    app.command(_name, cls=CheckedCommand)(_command)

__all__ = ["COMMANDS", "app", "main"]


def main(argv: list[str] | None = None) -> None:
    """Console-script entry point."""
    app(args=argv if argv is not None else sys.argv[1:], prog_name="bike")
