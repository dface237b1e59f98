"""The `bike` Typer app: registers the subcommands and is the one place that turns errors into
messages and exit codes."""

from __future__ import annotations

import logging
import os
import sys
from typing import Optional

import typer
from rich.console import Console
from rich.logging import RichHandler
from rich.markup import escape

from bike_cli import __version__
from bike_cli.errors import BikeError

app = typer.Typer(
    name="bike",
    help="BIKE video recognition with CLIP: staged commands that hand HDF5 feature caches and CSV "
    "files to each other. Run `bike COMMAND --help` for each stage.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)

# Messages and logs go to stderr so that stdout stays clean for machine-readable output.
console = Console(stderr=True)


def _version_callback(value: bool) -> None:
    if value:
        typer.echo(f"bike {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    verbose: bool = typer.Option(False, "--verbose", "-v", help="Log debug messages."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="Log warnings and errors only."),
    version: Optional[bool] = typer.Option(
        None, "--version", callback=_version_callback, is_eager=True, help="Print the version."
    ),
) -> None:
    level = logging.DEBUG if verbose else logging.WARNING if quiet else logging.INFO
    if int(os.environ.get("RANK", "0")) > 0:  # the other processes of `accelerate launch`: rank 0 talks
        level = max(level, logging.WARNING)
    setup_logging(level)


def setup_logging(level: int = logging.INFO) -> None:
    """Route `logging` through Rich on stderr (idempotent)."""
    root = logging.getLogger()
    for handler in list(root.handlers):
        if getattr(handler, "_bike", False):
            root.removeHandler(handler)
    handler = RichHandler(console=console, show_path=False, show_time=False, rich_tracebacks=False)
    handler._bike = True  # type: ignore[attr-defined]
    root.addHandler(handler)
    root.setLevel(logging.WARNING)
    logging.getLogger("bike_cli").setLevel(level)


def run_guarded(func, *args, **kwargs):
    """Call a library function; a BikeError becomes a red message and exit code 2."""
    try:
        return func(*args, **kwargs)
    except BikeError as err:
        console.print(f"[bold red]error:[/] {escape(str(err))}", highlight=False)  # "[hf]" is no markup
        raise typer.Exit(code=2) from None
    except KeyboardInterrupt:
        console.print("[yellow]interrupted[/]: finished work is kept; run the same command to resume")
        raise typer.Exit(code=130) from None


def _register() -> None:
    # Imported here so that each command module can import `app`-level helpers without cycles.
    from bike_cli.cli import demo, evaluate, extract, fuse, gen_attributes, predict, train_attrs, train_video  # noqa: F401


_register()


def main(argv: list[str] | None = None) -> None:
    """Console-script entry point."""
    app(args=argv if argv is not None else sys.argv[1:], prog_name="bike")
