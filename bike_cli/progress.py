"""The one progress protocol: what every long loop of the library reports to.

A loop calls `start(total, description)`, `advance(n)` as items finish, and `stop()` (in a `finally`).
This class reports nothing: it is the protocol and the default of a caller that shows no progress;
the CLI passes `bike_cli.cli.progress.RichProgress`, a subclass that draws a bar. Like `errors.py`, it
sits below every layer, so that engine/, models/ and data/ report through the same one.
"""

from __future__ import annotations


class Progress:
    """What a long loop reports to; this one shows nothing."""

    def start(self, total: int, description: str) -> None:
        """A new bar of `total` items, named `description`."""

    def advance(self, n: int) -> None:
        """`n` more items done."""

    def stop(self) -> None:
        """The bar is finished (called once after `start`, also when the loop fails)."""
