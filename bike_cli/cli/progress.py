"""The CLI's progress (the library reports through `bike_cli.progress.Progress`): a live bar on a
terminal; where stderr is a file or a pipe (a log, `nohup`, a job scheduler), a plain log line every
`PIPE_INTERVAL` seconds (done/total, %, rate, ETA) and one when a loop that logged ends."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

from rich import progress as bar

from bike_cli.cli.core import console
from bike_cli.progress import Progress

log = logging.getLogger(__name__)

PIPE_INTERVAL = 5.0  # seconds between two progress lines when stderr is not a terminal


class RichProgress(Progress):
    """The CLI's `Progress`: on a terminal a bar with items done, items/s and ETA; elsewhere log lines.

    `terminal` None: whether the console is a terminal (asked at each `start`); `clock`: seconds (tests
    pass their own); `interval` None: `PIPE_INTERVAL`."""

    def __init__(self, unit: str = "videos", *, terminal: bool | None = None,
                 clock: Callable[[], float] = time.monotonic, interval: float | None = None) -> None:
        self.unit, self.terminal, self.clock, self.interval = unit, terminal, clock, interval
        self._bar: bar.Progress | None = None
        self._task = None
        self._lines = False  # log lines instead of the bar: the loop's state below

    def start(self, total: int, description: str) -> None:
        if not (console.is_terminal if self.terminal is None else self.terminal):
            self._lines, self.total, self.description, self.done, self.logged = True, total, description, 0, False
            self.every = PIPE_INTERVAL if self.interval is None else self.interval
            self.started = self.last = self.clock()
            return
        self._bar = bar.Progress(
            bar.TextColumn("[bold]{task.description}"), bar.BarColumn(), bar.MofNCompleteColumn(),
            bar.TaskProgressColumn(), bar.TextColumn("{task.fields[rate]}"), bar.TimeElapsedColumn(),
            bar.TextColumn("ETA"), bar.TimeRemainingColumn(), console=console, transient=False)
        self._bar.start()
        self._task = self._bar.add_task(description, total=total, rate="")

    def advance(self, n: int) -> None:
        if self._lines:
            self._log_line(n)
        if self._bar is None:
            return
        self._bar.advance(self._task, n)
        speed = self._bar.tasks[0].speed
        self._bar.update(self._task, rate=f"{speed:.1f} {self.unit}/s" if speed else "")

    def _log_line(self, n: int) -> None:
        """Count `n` more items; a line once `every` seconds have passed since the last one."""
        self.done += n
        now = self.clock()
        if now - self.last >= self.every and self.done < self.total:  # the end has its own line
            self.last, self.logged = now, True
            elapsed = now - self.started
            rate = self.done / elapsed if elapsed > 0 else 0.0
            eta = f", ETA {_clock_time((self.total - self.done) / rate)}" if rate > 0 else ""
            log.info("%s: %d/%d %s (%d%%), %s%s", self.description, self.done, self.total, self.unit,
                     100 * self.done // max(1, self.total), _rate(rate, self.unit), eta)

    def stop(self) -> None:
        if self._lines and self.logged:
            log.info("%s: %d/%d %s in %s", self.description, self.done, self.total, self.unit,
                     _clock_time(self.clock() - self.started))
        self._lines = False
        if self._bar is not None:
            self._bar.stop()
            self._bar = None


def _rate(rate: float, unit: str) -> str:
    """2.5 videos/s, or for slow work 20.0 s/video."""
    if rate >= 1 or rate <= 0:
        return f"{rate:.1f} {unit}/s"
    return f"{1 / rate:.1f} s/{unit.removesuffix('s')}"


def _clock_time(seconds: float) -> str:
    """1:02:03 / 2:03 (hours only when there are some)."""
    minutes, secs = divmod(int(round(seconds)), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}" if hours else f"{minutes}:{secs:02d}"
