"""The error types library code raises; `bike_cli.cli.app` turns them into messages and exit codes.

Library code never prints or exits: it raises one of these with a message that names the bad value
and, where there is one, the file (and line) it came from.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

_WORKER_TRACEBACK = "\nOriginal Traceback (most recent call last):\n"


class BikeError(Exception):
    """Base class: a problem the user can fix, reported without a traceback."""

    def __init__(self, *args: object) -> None:
        text = args[0] if len(args) == 1 else None
        if isinstance(text, str) and text.startswith("Caught ") and _WORKER_TRACEBACK in text:
            # torch's DataLoader re-raises a worker's error as `type(err)(text)`, `text` being the worker's
            # traceback, whose last line is `module.Class: message`: keep the message, one line as raised
            last = text.rstrip("\n").rsplit("\n", 1)[-1]
            args = (last.split(": ", 1)[1] if ": " in last else last,)
        super().__init__(*args)


class InputError(BikeError):
    """Bad user input: a malformed list line, an unknown class name, a bad option value."""


class ModelLoadError(BikeError):
    """A model name, pretrained tag or checkpoint file that cannot be loaded."""


class CacheMismatchError(BikeError):
    """An existing output was made with different settings than the current command."""


class DecodeError(BikeError):
    """A video that cannot be decoded (missing, corrupt, audio-only, zero frames)."""


@contextmanager
def as_user_error(*kinds: type[Exception], error: type[BikeError] = InputError, prefix: str = "") -> Iterator[None]:
    """Re-raise an exception of `kinds` from inside as `error` with the same message (after `prefix`).

    For the stage or loader that handed a user's value (an option, a file) to code whose contract it
    broke: models/ raises ValueError/TypeError and knows nothing of the command line; the caller knows
    the value was the user's, and the CLI reports a BikeError in one line."""
    try:
        yield
    except kinds as err:
        raise error(f"{prefix}{err}") from None


def location(path: object, line: int | None = None) -> str:
    """`path:line` (or just `path`) for error messages."""
    return f"{path}:{line}" if line is not None else f"{path}"
