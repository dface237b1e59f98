"""`search --sheet` without `--root`, where the cache's video paths are relative to the list they came from,
says so once, naming --root, instead of labelling every tile "unreadable" without a word of why."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

BIKE = [sys.executable, "-m", "bike_cli"]
PNG = b"\x89PNG\r\n\x1a\n"


def search(tmp_path, cache, *extra: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "COLUMNS": "400"}
    return subprocess.run([*BIKE, "search", "a square", "a circle", "--features", str(cache), "--top", "3",
                           "--sheet", "hits.png", *extra], capture_output=True, text=True, env=env, timeout=300,
                          cwd=tmp_path)  # a folder the list's relative paths do not start from


@pytest.mark.slow
def test_a_sheet_without_root_says_once_that_the_videos_need_it(tmp_path, tiny_cache):
    done = search(tmp_path, tiny_cache)
    assert done.returncode == 0, done.stderr[-3000:]
    text = " ".join(done.stderr.split())
    assert text.count("--sheet:") == 1 and "pass that folder as --root (drawn blank)" in text
    assert f"are not found from {tmp_path} (e.g. 'videos/" in text
    assert "cannot be read" not in text  # one line for the cause, not one per tile
    assert (tmp_path / "hits.png").read_bytes()[:8] == PNG


@pytest.mark.slow
def test_a_sheet_with_root_draws_the_frames_without_a_word(tmp_path, tiny_cache, sample_data):
    done = search(tmp_path, tiny_cache, "--root", str(sample_data.root))
    assert done.returncode == 0, done.stderr[-3000:]
    assert "--root" not in done.stderr and "drawn blank" not in done.stderr
    assert (tmp_path / "hits.png").read_bytes()[:8] == PNG
