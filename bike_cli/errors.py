"""The error types library code raises (it never prints or exits), each with a message naming the bad
value and its file (and line); `bike_cli.cli.core.run_guarded` turns them into messages and exit codes."""

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
    """Re-raise an exception of `kinds` from inside as `error` with the same message (after `prefix`): for
    the caller that handed a user's value to code (models/) that raises ValueError/TypeError."""
    try:
        yield
    except kinds as err:
        raise error(f"{prefix}{err}") from None


def location(path: object, line: int | None = None) -> str:
    """`path:line` (or just `path`) for error messages."""
    return f"{path}:{line}" if line is not None else f"{path}"
