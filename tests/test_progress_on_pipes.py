"""Long work shows progress where stderr is a file or a pipe too: a plain log line every few seconds
(done/total, %, rate, ETA) and one when such a loop ends, not only a live bar on a terminal."""

from __future__ import annotations

import logging
import os
import re
import subprocess
import sys

from bike_cli.cli.progress import PIPE_INTERVAL, RichProgress


class Clock:
    """Seconds that pass only when the test says."""

    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def lines(caplog) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == "bike_cli.cli.progress"]


def test_away_from_a_terminal_a_line_every_interval_with_done_total_rate_and_eta(caplog):
    caplog.set_level(logging.INFO, logger="bike_cli.cli.progress")
    clock = Clock()
    progress = RichProgress("videos", terminal=False, clock=clock)
    progress.start(40, "extracting")
    for _ in range(40):
        clock.now += 0.5  # 2 videos/s: a line each 10 videos
        progress.advance(1)
    progress.stop()
    assert PIPE_INTERVAL == 5.0
    assert lines(caplog) == [
        "extracting: 10/40 videos (25%), 2.0 videos/s, ETA 0:15",
        "extracting: 20/40 videos (50%), 2.0 videos/s, ETA 0:10",
        "extracting: 30/40 videos (75%), 2.0 videos/s, ETA 0:05",
        "extracting: 40/40 videos in 0:20",
    ]


def test_a_loop_shorter_than_the_interval_adds_no_line_and_each_start_counts_afresh(caplog):
    caplog.set_level(logging.INFO, logger="bike_cli.cli.progress")
    clock = Clock()
    progress = RichProgress("steps", terminal=False, clock=clock)
    progress.start(3, "epoch 1")
    for _ in range(3):
        clock.now += 1.0
        progress.advance(1)
    progress.stop()
    assert lines(caplog) == []
    progress.start(2, "epoch 2")
    clock.now += 6.0
    progress.advance(1)
    clock.now += 3600.0
    progress.advance(1)
    progress.stop()
    assert lines(caplog) == ["epoch 2: 1/2 steps (50%), 6.0 s/step, ETA 0:06",
                             "epoch 2: 2/2 steps in 1:00:06"]


def test_a_terminal_gets_the_bar_and_no_lines(caplog):
    caplog.set_level(logging.INFO, logger="bike_cli.cli.progress")
    clock = Clock()
    progress = RichProgress("videos", terminal=True, clock=clock)
    progress.start(2, "scoring")
    clock.now += 10.0
    progress.advance(2)
    progress.stop()
    assert lines(caplog) == []


def test_training_whose_stderr_is_a_pipe_logs_its_progress(tmp_path, motion_caches):
    _, train, _ = motion_caches
    prelude = "import bike_cli.cli.progress as progress\nprogress.PIPE_INTERVAL = 0.0  # a line at every step"
    code = f"import sys\n{prelude}\nfrom bike_cli.cli.app import main\nmain(sys.argv[1:])"
    done = subprocess.run(
        [sys.executable, "-c", code, "train-video", "--features", str(train), "--out", str(tmp_path / "run"),
         "--epochs", "1", "--batch-size", "8", "--workers", "0", "--template", "{}", "--temporal-layers", "1"],
        capture_output=True, text=True, env={**os.environ, "COLUMNS": "200"}, timeout=300)
    assert done.returncode == 0, done.stderr
    said = [" ".join(line.split()) for line in done.stderr.splitlines()]
    assert any(re.search(r"epoch 1: 1/4 steps \(25%\), [\d.]+ (steps/s|s/step), ETA \d+:\d\d$", line)
               for line in said), said
    assert any(re.search(r"epoch 1: 4/4 steps in \d+:\d\d$", line) for line in said), said
    assert "━" not in done.stderr  # no bar drawn into the pipe
