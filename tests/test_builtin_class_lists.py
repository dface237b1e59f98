"""Built-in class lists k600, k700 and ssv2: the published label maps, usable wherever a class file is."""

from __future__ import annotations

import subprocess
import sys

import pytest

from bike_cli.data.class_names import read_class_names
from bike_cli.data.lexicons import LEXICON_DIR, load_lexicon


@pytest.mark.parametrize(("name", "count", "first", "last"), [
    ("k600", 600, "abseiling", "zumba"),
    ("k700", 700, "abseiling", "zumba"),
    ("ssv2", 174, "Approaching something with your camera", "Wiping something off of something"),
])
def test_builtin_class_list_has_the_published_count_and_order(name, count, first, last):
    names = read_class_names(name)
    assert len(names) == count
    assert (names[0], names[-1]) == (first, last)
    assert names == load_lexicon(name)


def test_kinetics_lists_hold_the_names_each_version_added():
    k400, k600, k700 = (set(read_class_names(n)) for n in ("k400", "k600", "k700"))
    assert {"acting in play", "adjusting glasses", "tie dying"} <= k600 - k400  # new in K600
    assert {"being excited", "moving child", "shooting off fireworks"} <= k700 - k600  # new in K700
    for split in (1, 2, 3):  # the zero-shot splits are K600 classes
        assert set(read_class_names(f"k600_split{split}")) <= k600


def test_ssv2_list_writes_the_placeholder_as_something():
    names = read_class_names("ssv2")
    assert "Pushing something from left to right" in names
    assert not any("[" in n for n in names)


def test_builtin_names_take_their_dataset_spellings():
    assert read_class_names("Kinetics-700") == read_class_names("k700")
    assert read_class_names("something-something-v2") == read_class_names("ssv2")


def test_a_path_still_reads_the_file_of_that_name(tmp_path):
    own = tmp_path / "k700"
    own.write_text("a\nb\n", encoding="utf-8")
    assert read_class_names(own) == ["a", "b"]
    assert read_class_names(LEXICON_DIR / "k700.txt") == read_class_names("k700")


def test_classes_option_takes_a_builtin_list_on_the_command_line(sample_data):
    """`bike predict --classes k700` scores a video among the 700 Kinetics-700 classes (tiny random model)."""
    video = sorted(sample_data.root.rglob("*.mp4"))[0]
    run = subprocess.run([sys.executable, "-m", "bike_cli", "predict", str(video), "--model", "bike-tiny",
                          "--pretrained", "none", "--classes", "k700", "--lexicon", "none", "--frames", "4"],
                         capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr
    assert any(name in run.stdout for name in read_class_names("k700"))
