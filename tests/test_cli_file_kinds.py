"""A file of the wrong kind is named for what it is: each reader that can be handed the wrong file
(checkpoints, CLIP weights, CSVs, videos) says which file, what it expected and what the file is, in
one `error:` line, never with torch's unpickler advice or a Python internal."""

from __future__ import annotations

import os
import pickle
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from corrupt_video import write_corrupt_video
from typer.testing import CliRunner

from bike_cli.cli.app import app

runner = CliRunner()
FORBIDDEN = ("weights_only", "Traceback", "file an issue", "pop from empty list", "IndexError", "KeyError")


def joined(text: str) -> str:
    return "".join(text.split())


def wrong_kinds(tmp_path: Path, cache: Path) -> dict[str, tuple[Path, str]]:
    """Files of every kind a user may give by mistake, each with the word its message must use."""
    text = tmp_path / "notes.txt"
    text.write_text("video_id,label\nhello,0\n")
    empty = tmp_path / "weights.pt"
    empty.touch()
    folder = tmp_path / "somewhere"
    folder.mkdir()
    hdf5 = tmp_path / "cache.h5"
    shutil.copy(cache, hdf5)
    return {"text": (text, "text"), "hdf5": (hdf5, "HDF5"), "empty": (empty, "empty"), "folder": (folder, "folder")}


def assert_one_error(result, path: Path, *words: str) -> None:
    """Exit 1, one `error:` line naming `path` and every word, nothing of torch's or Python's insides."""
    assert result.exit_code == 1, result.output
    assert result.output.count("error:") == 1, result.output
    flat = joined(result.output)
    message = flat[flat.index("error:"):]
    for word in (str(path), *words):
        assert joined(word) in message, (word, result.output)
    for text in FORBIDDEN:
        assert text not in result.output, result.output


@pytest.mark.parametrize("kind", ["text", "hdf5", "empty", "folder"])
def test_eval_checkpoint_of_the_wrong_kind_says_what_it_is(tmp_path, tiny_cache, kind):
    path, word = wrong_kinds(tmp_path, tiny_cache)[kind]
    result = runner.invoke(app, ["eval", "--checkpoint", str(path), "--features", str(tiny_cache), "--out",
                                 str(tmp_path / "e")])
    assert_one_error(result, path, word, "checkpoint")


@pytest.mark.parametrize("kind", ["text", "empty"])
def test_predict_checkpoint_of_the_wrong_kind_says_what_it_is(tmp_path, tiny_cache, sample_data, kind):
    path, word = wrong_kinds(tmp_path, tiny_cache)[kind]
    video = next((sample_data.root / "videos").glob("*.mp4"))
    result = runner.invoke(app, ["predict", "--checkpoint", str(path), str(video)])
    assert_one_error(result, path, word, "checkpoint")


def test_a_pickle_of_other_objects_is_refused_without_torch_advice(tmp_path, tiny_cache):
    path = tmp_path / "best.pt"
    torch.save({"state": Path("x")}, path)  # a checkpoint holding a class weights_only does not allow
    result = runner.invoke(app, ["eval", "--checkpoint", str(path), "--features", str(tiny_cache), "--out",
                                 str(tmp_path / "e")])
    assert_one_error(result, path, "can read safely", "pathlib")


@pytest.mark.parametrize("kind", ["text", "hdf5", "empty", "folder"])
def test_pretrained_file_of_the_wrong_kind_says_what_it_is(tmp_path, tiny_cache, sample_data, kind):
    path, word = wrong_kinds(tmp_path, tiny_cache)[kind]
    video = next((sample_data.root / "videos").glob("*.mp4"))
    result = runner.invoke(app, ["predict", "--model", "bike-tiny", "--pretrained", str(path), "--class-names",
                                 "a,b", "--lexicon", "none", str(video)])
    assert_one_error(result, path, word, "CLIP weights")


def test_train_attrs_given_a_cache_as_attributes_says_it_is_hdf5(tmp_path, tiny_cache, sample_data):
    result = runner.invoke(app, ["train-attrs", "--attributes", str(tiny_cache), "--classes", str(sample_data.classes),
                                 "--model", "bike-tiny", "--pretrained", "none", "--out", str(tmp_path / "run")])
    assert_one_error(result, tiny_cache, "HDF5", "attributes CSV")


def test_fuse_given_a_cache_says_it_is_hdf5(tmp_path, tiny_cache):
    result = runner.invoke(app, ["fuse", str(tiny_cache), str(tiny_cache), "--out", str(tmp_path / "f.csv")])
    assert_one_error(result, tiny_cache, "HDF5", "score CSV")
    assert not (tmp_path / "f.csv").exists()


def test_search_given_a_cache_as_hits_says_it_is_hdf5(tmp_path, tiny_cache):
    from hits_reader import read_hits_csv

    from bike_cli.errors import InputError

    with pytest.raises(InputError) as error:
        read_hits_csv(tiny_cache)
    assert f"{tiny_cache} is an HDF5 file" in str(error.value) and "hits CSV" in str(error.value)


def test_predict_given_a_folder_says_it_is_a_folder(tmp_path, sample_data):
    folder = sample_data.root / "videos"
    result = runner.invoke(app, ["predict", "--model", "bike-tiny", "--pretrained", "none", "--class-names", "a,b",
                                 "--lexicon", "none", str(folder)])
    assert_one_error(result, folder, "is a folder", "video")
    assert "not found" not in result.output


def test_extract_strict_with_a_broken_video_ends_in_one_error_line(tmp_path, sample_data):
    broken = write_corrupt_video(tmp_path / "broken.mp4")
    listing = tmp_path / "list.csv"
    good = next((sample_data.root / "videos").glob("*.mp4"))
    listing.write_text(f"path,label\n{good},0\n{broken},1\n")
    out = tmp_path / "c.h5"
    result = runner.invoke(app, ["extract-features", "--list", str(listing), "--classes", str(sample_data.classes),
                                 "--model", "bike-tiny", "--pretrained", "none", "--frames", "2", "--workers", "0",
                                 "--out", str(out), "--strict"])
    assert_one_error(result, out, "--strict", "1 of 2 videos", "failures.csv")
    assert out.exists()  # the videos that could be read are kept


KINDS = {
    "empty": (b"", "an empty file"),
    "hdf5": (b"\x89HDF\r\n\x1a\n" + bytes(64), "an HDF5 file"),
    "zip": (b"PK\x03\x04" + bytes(64), "a zip archive"),
    "pickle": (pickle.dumps({"a": 1}), "a Python pickle"),
    "text": (b"hello,world\nsecond line\n", "a text file"),
    "latin-1": ("caf\xe9\n".encode("latin-1"), "text that is not UTF-8"),
    "binary": (bytes(range(256)), "binary data"),
}


@pytest.mark.parametrize("content, words", KINDS.values(), ids=KINDS.keys())
def test_describe_file_names_the_kind_of_content(tmp_path, content, words):
    from bike_cli.io.file_kind import describe_file

    path = tmp_path / "f"
    path.write_bytes(content)
    assert describe_file(path).startswith(words)


def test_describe_file_of_a_folder_and_a_missing_path(tmp_path):
    from bike_cli.io.file_kind import describe_file

    assert describe_file(tmp_path) == "a folder"
    assert describe_file(tmp_path / "nope") == "missing"


def test_describe_file_names_a_fifo_and_a_device_without_opening_them(tmp_path):
    """A FIFO blocks whoever opens it and /dev/zero never ends: the kind comes from os.stat alone
    (run in a subprocess with a timeout, so a regression fails instead of hanging the suite)."""
    fifo = tmp_path / "pipe"
    os.mkfifo(fifo)
    code = ("import sys; from bike_cli.io.file_kind import describe_file, wrong_kind; "
            "print(describe_file(sys.argv[1])); print(describe_file('/dev/zero')); "
            "print(wrong_kind(sys.argv[1], 'a score CSV'))")
    done = subprocess.run([sys.executable, "-c", code, str(fifo)], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines() == ["a FIFO (named pipe)", "a character device",
                                        f"{fifo} is a FIFO (named pipe), not a score CSV"]


@pytest.mark.parametrize("split_after", [1, 2, 3])
def test_utf8_text_whose_sniffing_window_ends_inside_a_character_is_utf8(tmp_path, split_after):
    """The sniffer reads HEAD_BYTES; a character cut at that boundary is not a decoding error."""
    from bike_cli.io.file_kind import HEAD_BYTES, TEXT, sniff

    char = "\U0001f3ac"  # 4 bytes in UTF-8: the window ends after 1, 2 or 3 of them
    text = "a" * (HEAD_BYTES - split_after) + char + " clapper board\n"
    path = tmp_path / "classes.txt"
    path.write_text(text, encoding="utf-8")
    assert len(text.encode("utf-8")) > HEAD_BYTES
    assert sniff(path) == TEXT
    (tmp_path / "cut.txt").write_bytes(b"abc" + char.encode("utf-8")[:split_after])  # a whole file that ends cut
    assert sniff(tmp_path / "cut.txt") != TEXT
