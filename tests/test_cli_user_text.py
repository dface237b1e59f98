"""User text is text: queries, class names and video names holding Rich markup, terminal escape sequences
or `$...$` (mathtext) are printed and drawn as typed, through real `bike` processes."""

from __future__ import annotations

import io
import os
import shutil
import subprocess
import sys

import pytest

from bike_cli.cli.core import LiteralConsole, visible

BIKE = [sys.executable, "-m", "bike_cli"]
LINK = "[link=file:///etc/passwd]x[/link]"
TITLE, CLEAR = "\x1b]0;title\x07", "\x1b[2J"
MATH = "$\\frac{a}{b}$"
HOSTILE = f"{LINK} [bold]b {TITLE}{CLEAR} {MATH}"  # a query or a class name
FILE_NAME = f"[bold]v {TITLE}{CLEAR} {MATH}"  # a video file name (no '/')
SHOWN = (LINK, "[bold]b", "\\x1b]0;title\\x07", "\\x1b[2J", MATH)  # how HOSTILE reads on the terminal
PNG = b"\x89PNG\r\n\x1a\n"


def test_visible_writes_every_control_character_as_its_escape():
    assert visible(f"a{TITLE}b\tc\nd\x9b") == "a\\x1b]0;title\\x07b\\x09c\\x0ad\\x9b"
    assert visible("café [bold] $x$") == "café [bold] $x$"


def test_a_literal_console_prints_markup_and_escapes_as_text():
    from rich.table import Table

    buffer = io.StringIO()
    console = LiteralConsole(file=buffer, width=400)
    table = Table(title=HOSTILE)
    table.add_column(HOSTILE)
    table.add_row(HOSTILE)
    console.print(HOSTILE, ":smile:")
    console.print(table)
    text = buffer.getvalue()
    assert "\x1b" not in text and "\x07" not in text and ":smile:" in text
    assert text.count(LINK) == 4 and text.count("\\x1b[2J") == 4


@pytest.fixture(scope="module")
def hostile(tmp_path_factory, sample_data):
    """Two readable videos and a corrupt one under hostile names, classes with hostile names, and the
    feature cache `bike extract-features` made of them (its stderr kept)."""
    root = tmp_path_factory.mktemp("hostile")
    videos = sorted((sample_data.root / "videos").glob("*.mp4"))[:2]
    names = [f"{FILE_NAME} {i}.mp4" for i in range(3)]
    for video, name in zip(videos, names):
        shutil.copy(video, root / name)
    (root / names[2]).write_bytes(b"not a video" * 50)
    (root / "classes.txt").write_text(f"{HOSTILE} one\n{HOSTILE} two\n")
    (root / "list.csv").write_text("path,label\n" + "".join(f'"{n}",{i % 2}\n' for i, n in enumerate(names)))
    done = _bike("extract-features", "--list", root / "list.csv", "--classes", root / "classes.txt",
                 "--out", root / "c.h5", "--model", "bike-tiny", "--pretrained", "none", "--frames", "4",
                 "--workers", "0")
    return root, names, done


def _bike(*args) -> subprocess.CompletedProcess:
    env = {**os.environ, "COLUMNS": "400"}
    return subprocess.run([*BIKE, *map(str, args)], capture_output=True, text=True, env=env, timeout=300)


def _literal(text: str, count_of: str = LINK) -> None:
    assert "\x1b" not in text and "\x07" not in text, text
    assert count_of in text, text


def test_extract_summary_shows_a_failed_video_id_as_typed(hostile):
    root, names, done = hostile
    assert done.returncode == 0, done.stderr
    _literal(done.stderr, "[bold]v \\x1b]0;title\\x07\\x1b[2J $\\frac{a}{b}$ 2.mp4")


def test_search_prints_and_draws_a_hostile_query_literally(hostile, tmp_path):
    root, _, _ = hostile
    done = _bike("search", HOSTILE, "--features", root / "c.h5", "--root", root, "--top", "2",
                 "--sheet", tmp_path / "s.png")
    assert done.returncode == 0, done.stderr
    assert all(s in done.stdout for s in SHOWN), done.stdout
    _literal(done.stdout + done.stderr)
    assert "[bold]v \\x1b]0;title" in done.stdout  # the video ids too
    assert (tmp_path / "s.png").read_bytes()[:8] == PNG


def test_predict_explains_a_video_with_a_hostile_name(hostile, tmp_path):
    root, names, _ = hostile
    done = _bike("predict", root / names[0], "--model", "bike-tiny", "--pretrained", "none", "--class-names",
                 "a $x$ [bold]b,c", "--lexicon", "none", "--frames", "4", "--explain", tmp_path / "x.png")
    assert done.returncode == 0, done.stderr
    _literal(done.stdout + done.stderr, "[bold]v \\x1b]0;title\\x07\\x1b[2J $\\frac{a}{b}$ 0.mp4")
    assert (tmp_path / "x.png").read_bytes()[:8] == PNG


def test_eval_plots_hostile_class_names_and_writes_its_metrics(hostile, tmp_path):
    root, _, _ = hostile
    done = _bike("eval", "--features", root / "c.h5", "--out", tmp_path / "e", "--plots", tmp_path / "e" / "plots")
    assert done.returncode == 0, done.stderr
    _literal(done.stdout + done.stderr, "scores and metrics.json")
    assert (tmp_path / "e" / "metrics.json").is_file()
    assert all(p.read_bytes()[:8] == PNG for p in (tmp_path / "e" / "plots").glob("*.png"))
    assert len(list((tmp_path / "e" / "plots").glob("*.png"))) >= 1


def test_csv_cells_that_look_like_formulas_are_kept_exact(tmp_path):
    import numpy as np

    from bike_cli.io.score_csv import read_score_csv, write_score_csv

    names, ids = ["=cmd|' /C calc'!A0", "+1", "-2", "@SUM(A1)"], ["=HYPERLINK(\"x\")", "-v"]
    path = write_score_csv(tmp_path / "s.csv", ids, np.array([0, 3]), np.array([[-0.5, 1, 2, 3], [4, 5, 6, -7]]),
                           names)
    table = read_score_csv(path)
    assert table.class_names == names and table.video_ids == ids and table.scores[0, 0] == -0.5
