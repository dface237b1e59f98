"""Summary tables at 80 columns break a long path between its folders, never inside a name
(`cli.tables.Folded`); only a name wider than the whole column folds."""

from __future__ import annotations

import io
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
from rich.console import Console
from rich.table import Table

from bike_cli.cli.tables import Folded
from bike_cli.io.score_csv import write_score_csv

BIKE = [sys.executable, "-m", "bike_cli"]
LONG = "a_folder_whose_name_is_long_enough_to_reach_the_edge"  # 52 characters


def bike80(*args) -> subprocess.CompletedProcess:
    return subprocess.run([*BIKE, "-q", *map(str, args)], capture_output=True, text=True,
                          env={**os.environ, "COLUMNS": "80"}, timeout=300)


def table_lines(text: str) -> list[str]:
    return [line for line in text.splitlines() if line.startswith("│")]


def split_names(path: Path, below: Path, text: str) -> list[str]:
    """The folder and file names of `path` under `below` that no line of `text` holds whole."""
    return [name for name in path.relative_to(below).parts if not any(name in line for line in text.splitlines())]


def test_the_training_summary_breaks_its_paths_between_folders(tmp_path, motion_caches):
    _, train, _ = motion_caches
    out = tmp_path / LONG / "train_video_run_with_a_long_name_too"
    done = bike80("train-video", "--features", train, "--out", out, "--epochs", "1", "--batch-size", "8",
                  "--workers", "0", "--template", "{}", "--temporal-layers", "1")
    assert done.returncode == 0, done.stderr
    assert all(len(line) <= 80 for line in done.stderr.splitlines())
    rows = "\n".join(table_lines(done.stderr))
    assert "best.pt" in rows and "last.pt" in rows
    assert split_names(out / "best.pt", tmp_path, rows) == []
    cells = "".join(line.split("│")[2].strip() for line in table_lines(done.stderr))
    assert f"{out / 'best.pt'}, {out / 'last.pt'}" in cells.replace(",/", ", /")  # the whole paths, in order


def test_the_fuse_table_breaks_its_input_paths_between_folders(tmp_path):
    # six columns at 80: the path column is about 25 wide; names up to 16 wide never fold
    folder = tmp_path.joinpath("kinetics400", "vit_b16_8x3x4", "test_split_2023", "video_branch", "full_protocol")
    folder.mkdir(parents=True)
    rng = np.random.default_rng(0)
    for name in ("video_scores.csv", "attrs_scores.csv"):
        write_score_csv(folder / name, [f"v{i}" for i in range(6)], np.arange(6) % 3, rng.random((6, 3)),
                        ["a", "b", "c"])
    done = bike80("fuse", folder / "video_scores.csv", folder / "attrs_scores.csv", "--out", tmp_path / "f.csv")
    assert done.returncode == 0, done.stderr
    rows = "\n".join(table_lines(done.stderr))
    assert split_names(folder / "video_scores.csv", tmp_path, rows) == []
    assert split_names(folder / "attrs_scores.csv", tmp_path, rows) == []


def test_folded_text_breaks_after_separators_and_spaces_and_folds_only_a_name_wider_than_the_column():
    text = "/data/runs/kinetics_400_vit_b16/best.pt, /data/runs/kinetics_400_vit_b16/last.pt"
    assert Folded(text).lines(30) == ["/data/runs/", "kinetics_400_vit_b16/best.pt,", "/data/runs/",
                                      "kinetics_400_vit_b16/last.pt"]
    assert Folded(text).lines(200) == [text]
    table = Table(show_header=False)
    table.add_column()
    table.add_row(Folded("/x/" + "n" * 30 + "/y.csv"))
    console = Console(width=20, file=io.StringIO(), record=True)
    console.print(table)
    lines = [line.strip("│ ") for line in console.export_text().splitlines() if line.startswith("│")]
    assert lines[0] == "/x/" and "".join(lines[1:]) == "n" * 30 + "/y.csv"  # the one wide name folds
