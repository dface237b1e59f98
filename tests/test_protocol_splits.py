"""`bike eval --protocol splits`: each official test split scored over all classes, then mean and std."""

from __future__ import annotations

import json

import numpy as np
import pytest
from typer.testing import CliRunner

from bike_cli.cli.app import app
from bike_cli.cli.core import spread_variadic
from bike_cli.config.stages import EvalConfig
from bike_cli.data.video_lists import SplitList, match_videos, read_split_lists, video_stem
from bike_cli.errors import InputError
from bike_cli.eval.protocols import full_metrics, official_splits, run_protocol
from bike_cli.io.feature_cache import FeatureCache
from bike_cli.io.score_csv import ScoreTable, read_score_csv
from bike_cli.stages.evaluate import run_eval


def by_hand_top1(scores: np.ndarray, labels: np.ndarray, rows: list[int]) -> float:
    """Top-1 (%) of `rows`, counted one video at a time."""
    return 100.0 * sum(int(np.argmax(scores[r]) == labels[r]) for r in rows) / len(rows)


def test_each_split_is_scored_over_all_classes_then_averaged():
    rng = np.random.default_rng(3)
    ids = [f"Class{i % 5}/v_Class{i % 5}_g{i:02d}_c01.avi" for i in range(40)]
    scores, labels = rng.random((40, 5)).astype(np.float32), rng.integers(0, 5, 40)
    chosen = [[0, 3, 5, 9, 10, 22], list(range(10, 30)), [1, 2, 39, 38]]
    splits = [SplitList(f"split{i}", [ids[r] for r in rows]) for i, rows in enumerate(chosen)]
    result = official_splits(scores, labels, ids, splits)
    top1 = [by_hand_top1(scores, labels, rows) for rows in chosen]
    assert [s["top1"] for s in result["splits"]] == pytest.approx(top1, rel=1e-6)
    assert [s["videos"] for s in result["splits"]] == [6, 20, 4]
    assert result["top1_mean"] == pytest.approx(np.mean(top1), rel=1e-6)
    assert result["top1_std"] == pytest.approx(np.std(top1, ddof=0), rel=1e-6)  # population std, documented
    for split, rows in zip(result["splits"], chosen):  # every metric is full_metrics of the split's rows
        expected = full_metrics(scores[rows], labels[rows])
        assert {k: split[k] for k in expected} == pytest.approx(expected, rel=1e-6, nan_ok=True)


def test_listed_videos_match_by_id_then_by_file_stem():
    ids = ["UCF-101/Drum/v_Drum_g01_c01.mp4", "UCF-101/Drum/v_Drum_g01_c02.mp4", "xyz_000010_000020"]
    split = SplitList("val1.txt", ["v_Drum_g01_c02.avi", "Drum/v_Drum_g01_c01.avi", "xyz_000010_000020"])
    assert match_videos(split.video_ids, ids, "split list val1.txt", "the cache").tolist() == [1, 0, 2]
    assert video_stem("a/b/v_X_g01_c01.avi") == "v_X_g01_c01" and video_stem("abc") == "abc"


def test_a_listed_video_missing_from_the_cache_is_one_error_naming_list_and_video():
    split = SplitList("testlist02.txt", ["Drum/v_Drum_g01_c01.avi", "Drum/v_Drum_g09_c01.avi"])
    with pytest.raises(InputError, match=r"split list testlist02.txt: video 'Drum/v_Drum_g09_c01.avi' is not in "
                                         r"the cache c.h5 \(1 of its 2 videos are missing"):
        match_videos(split.video_ids, ["Drum/v_Drum_g01_c01.avi"], "split list testlist02.txt", "the cache c.h5")


def test_an_ambiguous_stem_and_a_video_named_twice_are_errors():
    ids = ["a/v_X.mp4", "b/v_X.mp4", "c/v_Y.mp4"]
    with pytest.raises(InputError, match="matches 2 videos of the cache by its file stem"):
        match_videos(["v_X.avi"], ids, "L", "the cache")
    with pytest.raises(InputError, match="'c/v_Y.mp4' and 'v_Y.avi' are the same video"):
        match_videos(["c/v_Y.mp4", "v_Y.avi"], ids, "L", "the cache")


def write_hmdb_split_files(folder, classes, videos_by_class, split, test_every=2):
    """HMDB-51 style files `<class>_test_split<N>.txt`: `video.avi 2` for test videos, `1` for train ones."""
    folder.mkdir(parents=True, exist_ok=True)
    test = []
    for cls in classes:
        lines = []
        for i, video in enumerate(videos_by_class[cls]):
            tag = "2" if (i + split) % test_every == 0 else "1"
            lines.append(f"{video} {tag} ")  # the official files end lines with a space
            test += [video] if tag == "2" else []
        (folder / f"{cls}_test_split{split}.txt").write_text("\n".join(lines) + "\n")
    return test


def test_split_list_formats(tmp_path):
    ucf = tmp_path / "testlist01.txt"
    ucf.write_text("Drum/v_Drum_g01_c01.avi\r\nDrum/v_Drum_g01_c02.avi\r\n")  # official: CR/LF, no labels
    vifi = tmp_path / "val1.txt"
    vifi.write_text("v_Drum_g01_c01.avi 0\nv_Drum_g01_c02.avi 0\n")
    videos = {"brush_hair": ["bh_a.avi", "bh_b.avi"], "cartwheel": ["cw_a.avi", "cw_b.avi", "cw_c.avi"]}
    hmdb = tmp_path / "testTrainMulti_7030_splits"
    tests = {n: write_hmdb_split_files(hmdb, list(videos), videos, n) for n in (1, 2, 3)}
    lists = read_split_lists([ucf, vifi, hmdb])
    assert [s.video_ids for s in lists] == [["Drum/v_Drum_g01_c01.avi", "Drum/v_Drum_g01_c02.avi"],
                                            ["v_Drum_g01_c01.avi", "v_Drum_g01_c02.avi"],
                                            tests[1], tests[2], tests[3]]
    assert lists[2].name == f"{hmdb} split 1"
    by_glob = read_split_lists([str(hmdb / "*_test_split2.txt")])  # a quoted glob: one list
    assert [s.video_ids for s in by_glob] == [tests[2]]
    files = sorted(hmdb.glob("*_test_split[13].txt"))  # the shell's expansion: grouped by split number
    assert [s.video_ids for s in read_split_lists(files)] == [tests[1], tests[3]]


def test_bad_hmdb_split_files_are_errors(tmp_path):
    folder = tmp_path / "hmdb"
    folder.mkdir()
    (folder / "run_test_split1.txt").write_text("a.avi 1\nb.avi 7\n")
    with pytest.raises(InputError, match=r"run_test_split1.txt:2: expected 'video.avi 0\|1\|2'"):
        read_split_lists([folder])
    with pytest.raises(InputError, match="holds no HMDB-51 split files"):
        read_split_lists([tmp_path])
    with pytest.raises(InputError, match="matches no file"):
        read_split_lists([str(folder / "*_test_split9.txt")])
    with pytest.raises(InputError, match="needs at least one"):
        read_split_lists([])


def test_run_protocol_reads_the_lists_and_rejects_a_missing_option(tmp_path):
    ids = ["a.mp4", "b.mp4", "c.mp4"]
    table = ScoreTable(ids, np.array([0, 1, 1]), np.eye(3, 2, dtype=np.float32), ["x", "y"])
    listed = tmp_path / "l.txt"
    listed.write_text("a.avi\nc.avi\n")
    result = run_protocol("splits", table, split_lists=[str(listed)])
    assert result["splits"][0]["top1"] == pytest.approx(50.0) and result["top1_std"] == 0.0
    with pytest.raises(InputError, match="needs at least one"):
        run_protocol("splits", table)


@pytest.fixture(scope="module")
def split_files(tmp_path_factory, motion_caches):
    """Three split lists of the generated val cache, in three formats: UCF-style ids as the cache writes
    them, ViFi-CLIP-style `name.avi label` stems, HMDB-51 per-class files."""
    data, _, val = motion_caches
    root = tmp_path_factory.mktemp("splits")
    ids = FeatureCache(val).video_ids
    a = root / "testlist01.txt"
    a.write_text("".join(f"{vid}\n" for vid in ids[::2]))
    b = root / "val2.txt"
    b.write_text("".join(f"{video_stem(vid)}.avi 0\n" for vid in ids[1::3]))
    by_class = {}
    for vid in ids:  # `videos/<class words>_<n>.mp4`: the class is the stem without its number
        by_class.setdefault(video_stem(vid).rsplit("_", 1)[0], []).append(video_stem(vid) + ".avi")
    hmdb = root / "hmdb"
    write_hmdb_split_files(hmdb, list(by_class), by_class, 3, test_every=3)
    rows = {vid: i for i, vid in enumerate(ids)}
    stem_rows = {video_stem(vid): i for i, vid in enumerate(ids)}
    expected_rows = [[rows[v] for v in ids[::2]], [rows[v] for v in ids[1::3]],
                     [stem_rows[video_stem(v)] for v in read_split_lists([hmdb])[0].video_ids]]
    return val, [a, b, hmdb], expected_rows


def test_eval_splits_equal_each_list_scored_by_hand(tmp_path, split_files):
    val, lists, expected_rows = split_files
    summary = run_eval(EvalConfig(out=tmp_path, features=val, templates=["{}"], protocol="splits",
                                  split_lists=[str(p) for p in lists], workers=0))
    table = read_score_csv(summary.files["video"])
    top1 = [by_hand_top1(table.scores, table.labels, rows) for rows in expected_rows]
    result = summary.metrics["video"]
    assert [s["top1"] for s in result["splits"]] == pytest.approx(top1, rel=1e-5)
    assert [s["videos"] for s in result["splits"]] == [len(r) for r in expected_rows]
    assert result["top1_mean"] == pytest.approx(np.mean(top1), rel=1e-5)
    assert result["top1_std"] == pytest.approx(np.std(top1), rel=1e-5, abs=1e-9)
    document = json.loads((tmp_path / "metrics.json").read_text())
    saved = document["metrics"]["video"]
    assert document["protocol"] == "splits" and saved["top1_mean"] == pytest.approx(result["top1_mean"])
    assert [s["split"] for s in saved["splits"]] == [str(lists[0]), str(lists[1]), f"{lists[2]} split 3"]
    assert set(saved["splits"][0]) >= {"split", "videos", "top1", "top5", "mean_class_acc", "mAP"}


def test_eval_refuses_a_split_video_missing_from_the_cache_before_scoring(tmp_path, split_files):
    val, lists, _ = split_files
    bad = tmp_path / "testlist03.txt"
    bad.write_text(lists[0].read_text() + "videos/never_extracted_9.mp4\n")
    with pytest.raises(InputError, match=rf"split list {bad}: video 'videos/never_extracted_9.mp4' is not in the "
                                         rf"cache {val}"):
        run_eval(EvalConfig(out=tmp_path / "out", features=val, templates=["{}"], protocol="splits",
                            split_lists=[str(bad)], workers=0))
    assert not (tmp_path / "out" / "metrics.json").exists()
    with pytest.raises(InputError, match="--protocol splits needs --split-lists"):
        run_eval(EvalConfig(out=tmp_path / "out", features=val, protocol="splits"))
    with pytest.raises(InputError, match="--split-lists is for --protocol splits"):
        run_eval(EvalConfig(out=tmp_path / "out", features=val, split_lists=[str(bad)]))


def test_cli_takes_several_lists_after_one_flag_and_prints_each_split(tmp_path, split_files):
    val, lists, _ = split_files
    result = CliRunner().invoke(app, ["eval", "--features", str(val), "--template", "{}", "--protocol", "splits",
                                      "--split-lists", *map(str, lists), "--out", str(tmp_path), "--workers", "0"],
                                env={"COLUMNS": "200"})
    assert result.exit_code == 0, result.output
    assert "±" in result.output and "testlist01.txt" in result.output and "val2.txt" in result.output
    saved = json.loads((tmp_path / "metrics.json").read_text())["metrics"]["video"]
    assert len(saved["splits"]) == 3


def test_variadic_flag_values_each_get_the_flag():
    flags = ("--split-lists",)
    assert spread_variadic(["--split-lists", "a", "b", "c", "--out", "o"], flags) == \
        ["--split-lists", "a", "--split-lists", "b", "--split-lists", "c", "--out", "o"]
    assert spread_variadic(["--split-lists", "a", "--split-lists", "b"], flags) == \
        ["--split-lists", "a", "--split-lists", "b"]
    assert spread_variadic(["--out", "o", "x"], flags) == ["--out", "o", "x"]  # other options untouched
