"""`bike search` on the command line: JSON, the hits CSV, the sheet, and one-line errors (exit 1)."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest
from hits_reader import read_hits_csv
from test_stage_search import DIM, make_cache
from typer.testing import CliRunner

from bike_cli.cli.app import app
from bike_cli.io.feature_cache import FeatureCache
from bike_cli.io.search_index import index_path

runner = CliRunner()
BIKE = [sys.executable, "-m", "bike_cli"]
PNG = b"\x89PNG\r\n\x1a\n"


@pytest.fixture
def synthetic(tmp_path):
    emb = np.random.default_rng(0).standard_normal((6, 1, 4, DIM)).astype(np.float32)
    return make_cache(tmp_path / "c.h5", emb)


def test_json_lists_the_top_videos_of_each_query(tiny_cache, sample_data):
    result = runner.invoke(app, ["search", "--features", str(tiny_cache), "a red square", "a blue circle", "--top", "3",
                                 "--root", str(sample_data.root), "--json", "-q"])
    assert result.exit_code == 0, result.output
    document = json.loads(result.stdout)
    assert [q["query"] for q in document["queries"]] == ["a red square", "a blue circle"]
    ids = set(FeatureCache(tiny_cache).video_ids)
    for query in document["queries"]:
        assert [h["rank"] for h in query["hits"]] == [1, 2, 3]
        assert all(h["video_id"] in ids and 0 <= h["salient_step"] < 4 for h in query["hits"])
        assert [h["score"] for h in query["hits"]] == sorted((h["score"] for h in query["hits"]), reverse=True)
    assert index_path(tiny_cache).is_file()


def test_csv_sheet_and_table(tiny_cache, sample_data, tmp_path):
    out, sheet = tmp_path / "hits.csv", tmp_path / "hits.png"
    result = runner.invoke(app, ["search", "--features", str(tiny_cache), "a red square", "--top", "2", "--rule", "mean",
                                 "--root", str(sample_data.root), "--out", str(out), "--sheet", str(sheet)],
                           env={"COLUMNS": "200"})
    assert result.exit_code == 0, result.output
    assert "a red square" in result.stdout and "rank" in result.stdout
    table = read_hits_csv(out)
    assert table.rule == "mean" and [h.rank for h in table.hits] == [1, 2]
    assert str(sample_data.root) in table.hits[0].path
    assert sheet.read_bytes()[:8] == PNG


def test_a_video_that_cannot_be_read_is_a_labelled_blank(tiny_cache, tmp_path):
    sheet = tmp_path / "blank.png"
    result = runner.invoke(app, ["search", "--features", str(tiny_cache), "a dog", "--top", "2",
                                 "--root", str(tmp_path / "nowhere"), "--sheet", str(sheet)], env={"COLUMNS": "200"})
    assert result.exit_code == 0, result.output
    assert "drawn blank" in result.output and sheet.read_bytes()[:8] == PNG


def test_eval_table_has_both_rules(tiny_cache):
    result = runner.invoke(app, ["search", "--features", str(tiny_cache), "--eval"], env={"COLUMNS": "200"})
    assert result.exit_code == 0, result.output
    assert "text-to-video retrieval" in result.stdout and "vcs" in result.stdout and "mean" in result.stdout


@pytest.mark.parametrize("args, message", [
    (["", "--features", "{cache}"], "query 1 ('') is empty"),
    (["--features", "{cache}"], "no query given"),
    (["a dog", "--features", "{cache}", "--rule", "max"], "--rule 'max' is not one of vcs, mean"),
    (["a dog", "--features", "{missing}"], "does not exist"),
    (["a dog", "--features", "{text}"], "is not a readable HDF5 file"),
    (["a dog", "--features", "{cache}", "--top", "0"], "--top must be at least 1, not 0"),
    (["a dog", "--features", "{cache}", "--top", "5", "--candidates", "3"], "--candidates (3) must be at least"),
    (["a dog", "--features", "{cache}", "--model", "bike-tiny-text"], "come from different models"),
    (["--features", "{cache}", "--queries", "{fifo}"], "--queries file {fifo} is a FIFO (named pipe), not a regular"),
    (["--features", "{cache}", "--queries", "{latin1}"], "{latin1} is text that is not UTF-8, not a --queries file"),
    (["--features", "{cache}", "--queries", "{cache}"], "{cache} is an HDF5 file (such as a feature cache), not a "
     "--queries file (UTF-8 text)"),
    (["--features", "{cache}", "--queries", "{folder}"], "--queries file {folder} is a folder, not a regular file"),
])
def test_errors_are_one_line_and_exit_1(synthetic, tmp_path, args, message):
    text = tmp_path / "notes.h5"
    text.write_text("not hdf5\n")
    latin1 = tmp_path / "queries.txt"
    latin1.write_bytes("a caf\u00e9 terrace\n".encode("latin-1"))
    os.mkfifo(tmp_path / "fifo")
    (tmp_path / "queries").mkdir()
    paths = {"cache": synthetic, "missing": tmp_path / "missing.h5", "text": text, "fifo": tmp_path / "fifo",
             "latin1": latin1, "folder": tmp_path / "queries"}
    message = message.format(**paths)
    done = subprocess.run([*BIKE, "search", *(a.format(**paths) for a in args)], capture_output=True, text=True,
                          env={"COLUMNS": "400", "PATH": "/usr/bin:/bin", **_pythonpath()})
    assert done.returncode == 1, done.stderr
    lines = [line for line in done.stderr.splitlines() if line.strip() and not line.startswith("INFO")]
    assert len(lines) == 1 and lines[0].startswith("error:") and message in lines[0], done.stderr
    assert "Traceback" not in done.stderr


def _pythonpath() -> dict:
    import os

    return {k: os.environ[k] for k in ("PYTHONPATH", "HOME") if k in os.environ}
