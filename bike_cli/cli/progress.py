"""Rich progress bars for long stages (the library reports through `bike_cli.progress.Progress`)."""

from __future__ import annotations

from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    TaskProgressColumn,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)
from rich.progress import Progress as Bar

from bike_cli.cli.core import console
from bike_cli.progress import Progress


class RichProgress(Progress):
    """The CLI's `Progress`: a bar with items done, items/s and ETA."""

    def __init__(self, unit: str = "videos") -> None:
        self.unit = unit
        self._bar: Bar | None = None
        self._task = None

    def start(self, total: int, description: str) -> None:
        self._bar = Bar(
            TextColumn("[bold]{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TaskProgressColumn(),
            TextColumn("{task.fields[rate]}"),
            TimeElapsedColumn(),
            TextColumn("ETA"),
            TimeRemainingColumn(),
            console=console,
            transient=False,
        )
        self._bar.start()
        self._task = self._bar.add_task(description, total=total, rate="")

    def advance(self, n: int) -> None:
        if self._bar is None:
            return
        self._bar.advance(self._task, n)
        speed = self._bar.tasks[0].speed
        self._bar.update(self._task, rate=f"{speed:.1f} {self.unit}/s" if speed else "")

    def stop(self) -> None:
        if self._bar is not None:
            self._bar.stop()
            self._bar = None
