"""A file of another kind given as an attributes CSV is named for what it is (a feature cache, an empty file, a
video list, a score CSV, a folder), by every reader of attributes CSVs, before anything asks for the model
its (absent) sidecar would record; README.md's promise that an HDF5 cache given as a CSV is named as such
holds for every CSV reader."""

from __future__ import annotations

import re
import shutil
from functools import partial
from pathlib import Path

import pytest
from cli_run import bike as run_bike

from bike_cli.errors import InputError
from bike_cli.io.attributes_csv import check_attributes_csv, read_attributes_csv
from bike_cli.io.file_kind import CSV_WORDS, csv_kind

ROOT = Path(__file__).resolve().parents[1]
EXPECTED = "not an attributes CSV (what gen-attributes writes)"


bike = partial(run_bike, timeout=300, columns=400)


def flat(text: str) -> str:
    return " ".join(text.split())


def wrong_files(tmp_path: Path, cache: Path) -> dict[str, tuple[Path, str]]:
    """Files a user may give as --attributes by mistake, each with what its message must call it."""
    copy = tmp_path / "train.h5"
    shutil.copy(cache, copy)
    empty = tmp_path / "attrs.csv"
    empty.touch()
    videos = tmp_path / "train.csv"
    videos.write_text("videos/a.mp4,0\nvideos/b.mp4,1\n")
    scores = tmp_path / "video_scores.csv"
    scores.write_text("video_id,label,run,jump\nvideos/a.mp4,0,0.9,0.1\n")
    folder = tmp_path / "attributes"
    folder.mkdir()
    return {"cache": (copy, "an HDF5 file (such as a feature cache)"), "empty": (empty, "an empty file"),
            "video list": (videos, "a text file starting 'videos/a.mp4,0'"),
            "score CSV": (scores, "a score CSV (what eval and fuse write)"), "folder": (folder, "a folder")}


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["cache", "empty", "video list", "score CSV"])
def test_train_attrs_names_what_the_attributes_file_is(tmp_path, tiny_cache, kind):
    path, words = wrong_files(tmp_path, tiny_cache)[kind]
    done = bike("train-attrs", "--attributes", str(path), "--out", str(tmp_path / "run"))
    assert done.returncode == 1
    assert f"error: {path} is {words}, {EXPECTED}" in flat(done.stderr)
    assert "--model" not in done.stderr and "Traceback" not in done.stderr
    assert not (tmp_path / "run").exists()


@pytest.mark.slow
def test_eval_names_what_its_attributes_file_is(tmp_path, tiny_cache):
    path, words = wrong_files(tmp_path, tiny_cache)["cache"]
    done = bike("eval", "--features", str(tiny_cache), "--attributes", str(path), "--out", str(tmp_path / "e"))
    assert done.returncode == 1
    assert f"error: {path} is {words}, {EXPECTED}" in flat(done.stderr)


@pytest.mark.parametrize("kind", ["cache", "empty", "video list", "score CSV", "folder"])
def test_every_reader_of_attributes_csvs_says_what_the_file_is(tmp_path, tiny_cache, kind):
    path, words = wrong_files(tmp_path, tiny_cache)[kind]
    for read in (check_attributes_csv, read_attributes_csv):
        with pytest.raises(InputError, match="^" + re.escape(f"{path} is {words}, {EXPECTED}")):
            read(path)


def test_a_val_attributes_file_of_another_kind_is_named_too(tmp_path, tiny_cache):
    from bike_cli.config.stages import GenAttributesConfig, TrainAttrsConfig
    from bike_cli.stages.gen_attributes import run_gen_attributes
    from bike_cli.stages.train_attrs import run_train_attrs

    attrs = tmp_path / "a.csv"
    run_gen_attributes(GenAttributesConfig(features=tiny_cache, lexicon="hmdb51", out=attrs))
    path, words = wrong_files(tmp_path, tiny_cache)["cache"]
    with pytest.raises(InputError, match=re.escape(f"{path} is {words}, {EXPECTED}")):
        run_train_attrs(TrainAttrsConfig(attributes=attrs, val_attributes=path, out=tmp_path / "run", epochs=1))


def test_a_damaged_attributes_header_still_names_the_columns(tmp_path):
    path = tmp_path / "a.csv"
    path.write_text("video_id,label,attr_1,sentence\n")
    with pytest.raises(InputError, match=r":1: not an attributes CSV header: expected"):
        read_attributes_csv(path)


def test_bikes_csvs_are_told_by_their_headers():
    assert csv_kind(["video_id", "label", "attr_1", "score_1", "sentence"]) == CSV_WORDS["attributes"]
    assert csv_kind(["video_id", "labels", "run", "jump"]) == CSV_WORDS["score"]
    assert csv_kind(["query", "rank", "video_id", "path", "score", "salient_step", "salient_frame"]) == CSV_WORDS["hits"]
    assert csv_kind(["video_id", "path", "reason"]) == CSV_WORDS["failures"]
    assert csv_kind(["path", "label"]) is None and csv_kind(["video_id", "label"]) is None and csv_kind([]) is None


def test_the_readme_promise_an_hdf5_cache_given_as_a_csv_is_named(tiny_cache):
    from hits_reader import read_hits_csv

    from bike_cli.data.class_names import read_class_names
    from bike_cli.data.video_lists import read_video_list
    from bike_cli.io.score_csv import read_score_csv

    assert "a file of the wrong kind (an HDF5 cache given as a CSV" in flat((ROOT / "README.md").read_text())
    for read in (read_attributes_csv, read_score_csv, read_hits_csv, read_video_list, read_class_names):
        with pytest.raises(InputError, match=f"{tiny_cache} is an HDF5 file"):
            read(tiny_cache)
