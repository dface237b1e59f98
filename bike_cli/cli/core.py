"""The shell every command shares: the Typer app, the consoles, logging, and the one place that turns
errors into messages and exit codes. It never imports a command (`bike_cli.cli.app` holds them)
and nothing heavy: `bike --help` must not load torch.

Exit codes: 0 success; 1 a failure bike reports (bad input, unreadable data, `--strict` with
skipped videos); 2 a usage error (unknown option, missing value: Click's); 130 interrupted.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import signal
import threading
from collections.abc import Callable, Collection
from typing import Any, TypeVar

import typer
from rich.console import Console
from rich.logging import RichHandler
from rich.text import Text
from typer.core import TyperCommand, TyperGroup, TyperOption

from bike_cli import __version__
from bike_cli.errors import BikeError

EXIT_FAILURE = 1  # a problem bike found and reported (BikeError)
EXIT_USAGE = 2  # Click's code for a bad command line
EXIT_INTERRUPTED = 130

# User text (queries, class names, paths, messages quoting them) is printed as text, never read as Rich
# markup (`[link=file:///etc/passwd]x[/link]`) or obeyed as terminal controls (`\x1b[2J`): every console is
# a `LiteralConsole` (styles come from `Text` objects bike builds), log records pass `LiteralRichHandler`.
# C0 controls (ESC included), DEL and the C1 controls (U+0080-U+009F: CSI and OSC among them)
_CONTROLS = {code: f"\\x{code:02x}" for code in (*range(0x20), 0x7F, *range(0x80, 0xA0))}


def visible(text: str) -> str:
    """`text` with every control character (C0, DEL, C1; ESC, tab and line breaks included) written as
    its `\\xNN` escape, so that a terminal shows it instead of obeying it."""
    return text.translate(_CONTROLS)


class LiteralConsole(Console):
    """A Rich console on which every string is literal: markup and emoji codes off, controls made visible."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("markup", False)
        kwargs.setdefault("emoji", False)
        super().__init__(*args, **kwargs)

    def render_str(self, text: str, **kwargs: Any) -> Text:
        """Every string printed, and every string cell and title of a table, goes through here."""
        return super().render_str(visible(text), **kwargs)


class LiteralRichHandler(RichHandler):
    """Rich's log handler, with the controls of every message made visible (markup is off by default)."""

    def render_message(self, record: Any, message: str) -> Any:
        return super().render_message(record, visible(message))


# Messages and logs go to stderr, so that stdout stays clean for machine-readable output.
console = LiteralConsole(stderr=True)
stdout = LiteralConsole()
ERROR = Text("error:", style="bold red")
F = TypeVar("F", bound=Callable[..., Any])
C = TypeVar("C")

# Help panels of the options, in the order `--help` shows them.
INPUT = "Input"
MODEL = "Model"
SAMPLING = "Sampling"
TRAINING = "Training"
OUTPUT = "Output"
PERFORMANCE = "Performance"
PANELS = (INPUT, MODEL, SAMPLING, TRAINING, OUTPUT, PERFORMANCE)


def _log_level(verbose: bool, quiet: bool) -> int:
    level = logging.DEBUG if verbose else logging.WARNING if quiet else logging.INFO
    if int(os.environ.get("RANK", "0")) > 0:  # the other processes of `accelerate launch`: rank 0 talks
        level = max(level, logging.WARNING)
    return level


def setup_logging(level: int = logging.INFO) -> None:
    """Route `logging` through Rich on stderr (idempotent)."""
    root = logging.getLogger()
    for handler in list(root.handlers):
        if getattr(handler, "_bike", False):
            root.removeHandler(handler)
    handler = LiteralRichHandler(console=console, show_path=False, show_time=False, rich_tracebacks=False)
    handler._bike = True  # type: ignore[attr-defined]
    root.addHandler(handler)
    root.setLevel(logging.WARNING)
    logging.getLogger("bike_cli").setLevel(level)


def _set_level(param: typer.CallbackParam, value: bool) -> None:
    if value:  # `-v` or `-q` given
        setup_logging(_log_level(param.name == "verbose", param.name == "quiet"))


def _verbosity_params() -> list:
    """`-v/-q` for a subcommand (after its name): they override the level the group set."""
    holder = typer.Typer(add_completion=False)

    @holder.command()
    def _options(
        verbose: bool = typer.Option(False, "--verbose", "-v", expose_value=False, callback=_set_level,
                                     help="Log debug messages."),
        quiet: bool = typer.Option(False, "--quiet", "-q", expose_value=False, callback=_set_level,
                                   help="Log warnings and errors only."),
    ) -> None:
        pass

    return list(typer.main.get_command(holder).params)


def _hide_flag_types(params: list) -> None:
    """A flag takes no value: show no `<bool>` after it."""
    for param in params:
        if isinstance(param, TyperOption) and param.is_flag:
            param.metavar = ""


class BikeGroup(TyperGroup):
    """The `bike` group: its help shows flags without a value label."""

    def format_help(self, ctx: typer.Context, formatter: Any) -> None:
        _hide_flag_types(self.get_params(ctx))
        super().format_help(ctx, formatter)


class BikeCommand(TyperCommand):
    """A stage command: `-q/-v` after the subcommand, and help that shows the defaults of the settings
    dataclass its function names (`settings`) for the options whose Typer default is None ("not given")."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.params.extend(_verbosity_params())
        # Panels in PANELS order whatever the signature's order; arguments and unpanelled options first.
        self.params.sort(key=lambda p: PANELS.index(p.rich_help_panel) + 1 if getattr(p, "rich_help_panel", None)
                         in PANELS else 0)

    def parse_args(self, ctx: Any, args: list[str]) -> list[str]:
        return super().parse_args(ctx, spread_variadic(args, self.callback.bike_variadic))

    def format_help(self, ctx: typer.Context, formatter: Any) -> None:
        params = self.get_params(ctx)
        _hide_flag_types(params)
        defaults = {f.name: f.default if f.default is not dataclasses.MISSING else f.default_factory()
                    for f in dataclasses.fields(self.callback.bike_config)  # every command has `settings`
                    if f.default is not dataclasses.MISSING or f.default_factory is not dataclasses.MISSING}
        meanings: dict[str, str | None] = self.callback.bike_none_means
        for param in params:
            name = param.name
            if param.default is not None or not isinstance(param, TyperOption):
                continue
            if name in meanings:
                if meanings[name]:
                    param.help = f"{param.help or ''} \\[default: {meanings[name]}]".strip()
                continue
            value = defaults.get(name)
            plain_flag_off = param.is_flag and value is False and not param.secondary_opts  # shows no default
            if value is not None and value != [] and not plain_flag_off:
                param.default = value
        super().format_help(ctx, formatter)


def settings(config: type, variadic: tuple[str, ...] = (), **none_means: str | None) -> Callable[[F], F]:
    """Link a command function to its settings dataclass (in `bike_cli.config.stages`) for the defaults in
    its help. `none_means[field]`: what leaving the option out means, shown instead (None: no default).
    `variadic`: list options that take several values after one flag (`--split-lists A B C`) as well as
    the flag repeated (`spread_variadic`)."""

    def mark(func: F) -> F:
        func.bike_config = config  # type: ignore[attr-defined]
        func.bike_none_means = none_means  # type: ignore[attr-defined]
        func.bike_variadic = variadic  # type: ignore[attr-defined]
        return func

    return mark


def spread_variadic(args: list[str], flags: tuple[str, ...]) -> list[str]:
    """`args` with the values following a variadic flag each given its own flag: `--f A B -x` ->
    `--f A --f B -x`. The values run to the next token that starts with '-' (or to `--`)."""
    out: list[str] = []
    current = None  # the variadic flag whose values are being read
    for token in args:
        if token.startswith("-"):
            current = token if token in flags else None
            out.append(token)
        elif current is not None and out[-1] != current:  # a further value of the variadic flag
            out += [current, token]
        else:
            out.append(token)
    return out


def make_config(config: type[C], options: dict[str, Any], recipe: Any = None, stage: str | None = None,
                names: Collection[str] = ()) -> C:
    """A command's settings from its options (over `recipe`'s, if any) by `config.recipe.build_config`, before
    the command imports its stage: a bad value is one line (exit 1) before torch loads. `names`: the
    command's parameter names, for a recipe's value to name the option that overrides it."""
    from bike_cli.config.recipe import build_config

    return run_guarded(build_config, config, recipe, options, stage=stage, options=names)


def given(options: dict[str, Any], *drop: str) -> dict[str, Any]:
    """The options the user gave (not None), without those in `drop`: parameter names are field names."""
    return {k: v for k, v in options.items() if v is not None and k not in drop}


app = typer.Typer(
    name="bike",
    cls=BikeGroup,
    help="BIKE video recognition with CLIP: staged commands that hand HDF5 feature caches and CSV "
    "files to each other. Run `bike COMMAND --help` for each stage.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


def _version_callback(value: bool) -> None:
    if value:
        typer.echo(f"bike {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    verbose: bool = typer.Option(False, "--verbose", "-v", help="Log debug messages (also after the command)."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="Log warnings and errors only (also after the command)."),
    version: bool | None = typer.Option(
        None, "--version", callback=_version_callback, is_eager=True, help="Print the version."
    ),
) -> None:
    setup_logging(_log_level(verbose, quiet))


# What to do after an interruption, for the stages that resume; the others simply run again.
_RESUME_ADVICE = {
    "run_extraction": "run the same command to resume",
    "run_train_video": "run the same command with --resume to continue",
    "run_train_attrs": "run the same command with --resume to continue",
}


class _Terminated(KeyboardInterrupt):
    """SIGTERM, stopped the same clean way as Ctrl-C."""


def _stop_cleanly_on_sigterm() -> None:
    """Make SIGTERM raise like Ctrl-C (unwinding: locks released, temporary files removed)."""
    if threading.current_thread() is not threading.main_thread():
        return
    if signal.getsignal(signal.SIGTERM) is signal.SIG_DFL:
        def _raise(signum: int, frame: object) -> None:
            raise _Terminated()
        signal.signal(signal.SIGTERM, _raise)


def run_guarded(func: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
    """Call a library function; a BikeError becomes one red line and exit code 1, SIGTERM and Ctrl-C
    a clean stop (exit 143 and 130)."""
    _stop_cleanly_on_sigterm()
    try:
        return func(*args, **kwargs)
    except BikeError as err:
        console.print(ERROR, str(err), highlight=False, soft_wrap=True)  # one line: the terminal folds it
        raise typer.Exit(code=EXIT_FAILURE) from None
    except KeyboardInterrupt as err:
        advice = _RESUME_ADVICE.get(getattr(func, "__name__", ""), "nothing finished was overwritten; run it again")
        terminated = isinstance(err, _Terminated)
        console.print(Text(f"{'terminated' if terminated else 'interrupted'}:", style="yellow"),
                      f"finished work is kept; {advice}", soft_wrap=True)
        raise typer.Exit(code=128 + signal.SIGTERM if terminated else EXIT_INTERRUPTED) from None


def fail(message: str, code: int = EXIT_FAILURE) -> None:
    """Stop with one red line and exit code `code` (a problem the shell itself found)."""
    console.print(ERROR, message, highlight=False, soft_wrap=True)
    raise typer.Exit(code=code)
