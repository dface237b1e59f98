"""Built-in lexicons and user phrase files (bike_cli.data.lexicons)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from open_clip.zero_shot_metadata import IMAGENET_CLASSNAMES

from bike_cli.data.class_names import read_class_names
from bike_cli.data.lexicons import (
    LEXICON_DIR,
    LEXICONS,
    lexicon_sha256,
    load_lexicon,
    normalise_name,
)
from bike_cli.errors import InputError

# class counts of the datasets (public facts)
SIZES = {"k400": 400, "k600": 600, "k700": 700, "ssv2": 174, "k600_split1": 160, "k600_split2": 160, "k600_split3": 160, "ucf101": 101,
         "hmdb51": 51, "anet": 200, "charades": 157}


def test_lexicon_dir_is_the_repository_folder():
    assert LEXICON_DIR == Path(__file__).resolve().parents[1] / "lexicons"


@pytest.mark.parametrize("name", sorted(SIZES))
def test_builtin_lexicon_has_the_dataset_class_count_without_repeats(name):
    phrases = load_lexicon(name)
    assert len(phrases) == SIZES[name]
    assert len({normalise_name(p) for p in phrases}) == len(phrases)
    assert all(p == p.strip() and p and not p.startswith("#") for p in phrases)


def test_every_lexicon_file_is_registered_and_documented():
    files = {p.stem for p in LEXICON_DIR.glob("*.txt")}
    assert files == set(LEXICONS) - {"imagenet1k"}
    readme = (LEXICON_DIR / "README.md").read_text(encoding="utf-8")
    assert all(f"`{name}`" in readme for name in LEXICONS)


def test_ucf101_names_are_split_into_lower_case_words():
    phrases = load_lexicon("ucf101")
    assert {"apply eye makeup", "playing daf", "yo-yo", "clean and jerk", "rock climbing indoor"} <= set(phrases)
    assert not any(re.search(r"[A-Z]", p) for p in phrases)


def test_charades_phrases_have_no_class_ids():
    phrases = load_lexicon("charades")
    assert phrases[0] == "Holding some clothes"
    assert not any(re.match(r"c\d{3}\b", p) for p in phrases)


@pytest.mark.parametrize("split", [1, 2, 3])
def test_k600_split_lexicon_doubles_as_a_class_list(split):
    path = LEXICON_DIR / f"k600_split{split}.txt"
    assert read_class_names(path) == load_lexicon(f"k600_split{split}")


def test_k600_splits_avoid_kinetics400_classes():
    k400 = {normalise_name(p) for p in load_lexicon("k400")}
    for split in (1, 2, 3):
        assert not k400 & {normalise_name(p) for p in load_lexicon(f"k600_split{split}")}


def test_imagenet1k_is_open_clips_class_names_each_once():
    phrases = load_lexicon("imagenet1k")
    assert set(phrases) == set(IMAGENET_CLASSNAMES)
    assert len({normalise_name(p) for p in phrases}) == len(phrases)
    assert phrases[:3] == list(IMAGENET_CLASSNAMES[:3])


def test_phrase_file_skips_comments_blank_lines_and_surrounding_space(tmp_path):
    path = tmp_path / "mine.txt"
    path.write_text("\ufeff# my phrases\n\n  riding a bike  \r\nswimming\n#not a phrase\n\nsky diving\n",
                    encoding="utf-8")
    assert load_lexicon(path) == ["riding a bike", "swimming", "sky diving"]
    assert load_lexicon(str(path)) == ["riding a bike", "swimming", "sky diving"]


def test_empty_phrase_file_is_an_error(tmp_path):
    path = tmp_path / "empty.txt"
    path.write_text("# only a comment\n\n", encoding="utf-8")
    with pytest.raises(InputError, match=rf"{re.escape(str(path))}.*no phrases"):
        load_lexicon(path)


def test_repeated_phrase_names_both_lines(tmp_path):
    path = tmp_path / "dup.txt"
    path.write_text("swimming\nRiding a bike\n# x\nriding_a  bike\n", encoding="utf-8")
    with pytest.raises(InputError, match=rf"{re.escape(str(path))}:4: .*'riding_a  bike'.*line 2"):
        load_lexicon(path)


def test_unknown_name_lists_the_builtin_lexicons(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(InputError, match="unknown lexicon 'k900'") as err:
        load_lexicon("k900")
    assert all(name in str(err.value) for name in LEXICONS)


def test_missing_file_and_folder_are_errors(tmp_path):
    with pytest.raises(InputError, match="lexicon file not found: .*nope.txt"):
        load_lexicon(tmp_path / "nope.txt")
    with pytest.raises(InputError, match="is not a file"):
        load_lexicon(tmp_path)


def test_not_utf8_is_an_error(tmp_path):
    path = tmp_path / "latin1.txt"
    path.write_bytes("caf\xe9\n".encode("latin-1"))
    with pytest.raises(InputError, match="not UTF-8"):
        load_lexicon(path)


def test_builtin_name_wins_over_a_file_of_that_name(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "k400").write_text("only me\n", encoding="utf-8")
    assert len(load_lexicon("k400")) == 400
    assert load_lexicon("./k400") == ["only me"]


def test_lexicon_sha256_follows_content_and_order():
    assert lexicon_sha256(["a", "b"]) == lexicon_sha256(["a", "b"])
    assert lexicon_sha256(["a", "b"]) != lexicon_sha256(["b", "a"])
    assert lexicon_sha256(["a", "b"]) != lexicon_sha256(["a", "b", "c"])


def test_video_lists_lexicons_and_class_subsets_match_names_in_one_form(tmp_path):
    from bike_cli.data.video_lists import read_video_list
    from bike_cli.eval.protocols import match_class_names
    from bike_cli.models.attributes import own_class_phrases

    spelled = ["Playing_Guitar", "  playing   GUITAR ", "playing_guitar"]
    assert {normalise_name(s) for s in spelled} == {"playing guitar"}
    listing = tmp_path / "list.txt"
    listing.write_text("".join(f"v{i}.mp4 {s.strip().replace(' ', '_')}\n" for i, s in enumerate(spelled)))
    assert [e.labels for e in read_video_list(listing, class_names=["dancing", "playing guitar"])] == [(1,)] * 3
    assert own_class_phrases(spelled, ["dancing", "playing guitar"]).tolist() == [1, 1, 1]
    assert match_class_names(spelled, ["dancing", "playing guitar"], "the subset", "here").tolist() == [1, 1, 1]
    lexicon = tmp_path / "phrases.txt"
    lexicon.write_text("playing guitar\nPlaying_Guitar\n")
    with pytest.raises(InputError, match="repeats the phrase of line 1"):
        load_lexicon(lexicon)
