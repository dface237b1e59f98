"""The one progress protocol every long loop reports to, below every layer like `errors.py`: `start`,
`advance` as items finish, `stop` in a `finally`. The CLI passes `bike_cli.cli.progress.RichProgress`."""

from __future__ import annotations


class Progress:
    """What a long loop reports to; this one shows nothing."""

    def start(self, total: int, description: str) -> None:
        """A new bar of `total` items, named `description`."""

    def advance(self, n: int) -> None:
        """`n` more items done."""

    def stop(self) -> None:
        """The bar is finished (called once after `start`, also when the loop fails)."""
