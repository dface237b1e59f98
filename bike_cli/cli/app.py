"""The `bike` command: registers every stage command, in stage order, on the app of `cli.core`.

Importing this module is cheap: command modules import their stage (and with it torch) inside the
command body, so `bike --help`, `bike --version`, `bike COMMAND --help` and argument errors load
neither torch nor open_clip.
"""

from __future__ import annotations

import sys

from bike_cli.cli import demo, evaluate, extract, fuse, gen_attributes, predict, search, train_attrs, train_video
from bike_cli.cli.core import BikeCommand, app

COMMANDS = (  # the order of `bike --help`: the order the stages run in
    ("extract-features", extract.extract_features),
    ("gen-attributes", gen_attributes.gen_attributes),
    ("train-video", train_video.train_video),
    ("train-attrs", train_attrs.train_attrs),
    ("eval", evaluate.evaluate),
    ("fuse", fuse.fuse),
    ("predict", predict.predict),
    ("search", search.search),
    ("demo", demo.demo),
)

for _name, _command in COMMANDS:
    app.command(_name, cls=BikeCommand)(_command)

__all__ = ["COMMANDS", "app", "main"]


def main(argv: list[str] | None = None) -> None:
    """Console-script entry point."""
    app(args=argv if argv is not None else sys.argv[1:], prog_name="bike")
