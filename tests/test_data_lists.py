"""Video lists (text, CSV, Kinetics: bike_cli.data.video_lists) and class-name files (bike_cli.data.class_names)."""

from __future__ import annotations

import gc
import os
from pathlib import Path

import pytest

from bike_cli.data.class_names import read_class_names
from bike_cli.data.video_lists import VideoEntry, read_video_list
from bike_cli.errors import InputError

SHARED_LABELS = Path(__file__).resolve().parents[2] / "shared" / "data" / "labels"
CLASSES = ["abseiling", "air drumming", "answering questions", "Apply Eye Makeup"]


def write(path: Path, text: str) -> Path:
    """Write `text` to `path` (creating folders) and return the path."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    return path


def error_of(*args: object, **kwargs: object) -> str:
    """The message of the InputError read_video_list raises."""
    with pytest.raises(InputError) as info:
        read_video_list(*args, **kwargs)
    return str(info.value)


# ----------------------------------------------------------------------------- text lists


def test_text_list_reads_indices_and_resolves_against_the_list_folder(tmp_path: Path) -> None:
    source = write(tmp_path / "lists" / "train.txt", "a/x.mp4 3\n\nb/y.mp4 0\n")
    videos = read_video_list(source)
    assert videos.format == "text" and not videos.multilabel and len(videos) == 2
    assert list(videos) == [
        VideoEntry("a/x.mp4", tmp_path / "lists" / "a" / "x.mp4", (3,), 1),
        VideoEntry("b/y.mp4", tmp_path / "lists" / "b" / "y.mp4", (0,), 3),
    ]
    assert videos.source == source


def test_text_list_matches_class_names_exactly_and_normalised(tmp_path: Path) -> None:
    text = "1.mp4 abseiling\n2.mp4 air_drumming\n3.mp4 APPLY_eye__makeup\n4.mp4 2\n"
    videos = read_video_list(write(tmp_path / "l.txt", text), class_names=CLASSES)
    assert [entry.labels for entry in videos] == [(0,), (1,), (3,), (2,)]


def test_text_list_multilabel_unknown_and_repeated_labels(tmp_path: Path) -> None:
    text = "a.mp4 1 3 2\nb.mp4\nc.mp4 2 2\n"
    videos = read_video_list(write(tmp_path / "l.txt", text), class_names=CLASSES)
    assert [entry.labels for entry in videos] == [(1, 3, 2), (), (2,)]
    assert videos.multilabel


def test_text_list_without_class_names_accepts_any_non_negative_index(tmp_path: Path) -> None:
    videos = read_video_list(write(tmp_path / "l.txt", "a.mp4 700\n"))
    assert videos[0].labels == (700,)


def test_explicit_root_and_absolute_paths(tmp_path: Path) -> None:
    absolute = tmp_path / "elsewhere" / "z.mp4"
    source = write(tmp_path / "lists" / "l.txt", f"a.mp4 1\n{absolute} 2\n")
    videos = read_video_list(source, root=tmp_path)
    assert [entry.path for entry in videos] == [tmp_path / "a.mp4", absolute]
    assert videos[1].video_id == str(absolute)


def test_relative_root_is_made_absolute(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "videos").mkdir()
    source = write(tmp_path / "l.txt", "a.mp4 1\n")
    monkeypatch.chdir(tmp_path)
    assert read_video_list(source, root="videos")[0].path == tmp_path / "videos" / "a.mp4"


def test_root_that_is_not_a_folder_is_an_error(tmp_path: Path) -> None:
    source = write(tmp_path / "l.txt", "a.mp4 1\n")
    assert "no_such_root" in error_of(source, root=tmp_path / "no_such_root")


def test_crlf_and_byte_order_mark_are_accepted(tmp_path: Path) -> None:
    source = tmp_path / "l.txt"
    source.write_bytes("\ufeffa.mp4 1\r\nb.mp4 2\r\n".encode())
    videos = read_video_list(source)
    assert [(entry.video_id, entry.labels, entry.line) for entry in videos] == [
        ("a.mp4", (1,), 1),
        ("b.mp4", (2,), 2),
    ]


# ----------------------------------------------------------------------------- CSV lists


def test_csv_list_with_aliases_names_multilabel_and_unknown(tmp_path: Path) -> None:
    text = (
        "duration,video,labels\n"
        "10,a.mp4,air drumming\n"
        "9,b.mp4, 0 ; Apply_Eye_Makeup\n"
        "8,c.mp4,\n"
        "7,d.mp4\n"
    )
    videos = read_video_list(write(tmp_path / "l.csv", text), class_names=CLASSES)
    assert videos.format == "csv" and videos.multilabel
    assert [(entry.video_id, entry.labels, entry.line) for entry in videos] == [
        ("a.mp4", (1,), 2),
        ("b.mp4", (0, 3), 3),
        ("c.mp4", (), 4),
        ("d.mp4", (), 5),
    ]
    assert videos[0].path == tmp_path / "a.mp4"


def test_csv_prefers_the_path_column_and_reads_quoted_cells(tmp_path: Path) -> None:
    text = 'video,path,class\nid1,"dir, with comma/a.mp4",answering questions\n'
    videos = read_video_list(write(tmp_path / "l.txt", text), class_names=CLASSES)
    assert videos.format == "csv"
    assert videos[0].video_id == "dir, with comma/a.mp4" and videos[0].labels == (2,)


def test_csv_without_label_column_has_unknown_labels(tmp_path: Path) -> None:
    videos = read_video_list(write(tmp_path / "l.csv", "filename\na.mp4\nb.mp4\n"))
    assert [entry.labels for entry in videos] == [(), ()]


def test_csv_row_without_path_is_an_error_with_its_line(tmp_path: Path) -> None:
    source = write(tmp_path / "l.csv", "path,label\na.mp4,1\n,2\n")
    assert f"{source}:3" in error_of(source)


def test_csv_row_with_extra_fields_is_an_error_with_its_line(tmp_path: Path) -> None:
    source = write(tmp_path / "l.csv", "path,label\na.mp4,1\nb.mp4,passing, in game\n")
    message = error_of(source, class_names=CLASSES)
    assert f"{source}:3" in message and "quote" in message


def test_csv_file_without_a_path_column_is_an_error(tmp_path: Path) -> None:
    source = write(tmp_path / "l.csv", "name,label\na.mp4,1\n")
    message = error_of(source)
    assert f"{source}:1" in message and "path" in message


# ----------------------------------------------------------------------------- Kinetics lists

KINETICS_HEADER = "label,youtube_id,time_start,time_end,split\n"


def test_kinetics_file_names_are_zero_padded(tmp_path: Path) -> None:
    rows = "air drumming,--07WQ2iBlw,1,11,train\nabseiling,abc,123456,123466,val\n"
    text = KINETICS_HEADER + rows
    videos = read_video_list(write(tmp_path / "k.csv", text), class_names=CLASSES)
    assert videos.format == "kinetics"
    assert [(entry.video_id, entry.labels) for entry in videos] == [
        ("--07WQ2iBlw_000001_000011", (1,)),
        ("abc_123456_123466", (0,)),
    ]
    assert videos[0].path == tmp_path / "--07WQ2iBlw_000001_000011.mp4"


def test_kinetics_finds_files_in_the_root_or_class_folders(tmp_path: Path) -> None:
    root = tmp_path / "videos"
    for relative in ("r_000000_000010.mp4", "air drumming/s_000000_000010.mp4",
                     "answering_questions/u_000000_000010.mp4", "abseiling/r_000000_000010.mp4"):
        write(root / relative, "")
    text = KINETICS_HEADER + "".join(
        f"{label},{youtube_id},0,10,train\n"
        for label, youtube_id in [("abseiling", "r"), ("air drumming", "s"),
                                  ("answering questions", "u"), ("abseiling", "missing")]
    )
    videos = read_video_list(write(tmp_path / "k.csv", text), root=root, class_names=CLASSES)
    assert [entry.path for entry in videos] == [
        root / "r_000000_000010.mp4",
        root / "air drumming" / "s_000000_000010.mp4",
        root / "answering_questions" / "u_000000_000010.mp4",
        root / "missing_000000_000010.mp4",
    ]


def test_kinetics_lists_each_folder_once(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    rows = "".join(f"{CLASSES[i % 3]},v{i},0,10,train\n" for i in range(300))
    source = write(tmp_path / "k.csv", KINETICS_HEADER + rows)
    calls: list[object] = []
    real_listdir, real_stat = os.listdir, os.stat
    monkeypatch.setattr(os, "listdir", lambda p: calls.append(p) or real_listdir(p))
    monkeypatch.setattr(os, "stat", lambda p, **kw: calls.append(p) or real_stat(p, **kw))
    assert len(read_video_list(source, class_names=CLASSES)) == 300
    assert len(calls) <= 2 + 1 + 2 * 3  # list file, root and two spellings of each class


def test_kinetics_test_split_needs_no_labels_or_class_names(tmp_path: Path) -> None:
    text = "youtube_id,time_start,time_end,split\nabc,5,15,test\n"
    videos = read_video_list(write(tmp_path / "k_test.csv", text))
    assert videos.format == "kinetics" and videos[0].labels == ()
    assert videos[0].video_id == "abc_000005_000015"


def test_kinetics_bad_time_is_an_error_with_its_line(tmp_path: Path) -> None:
    rows = "abseiling,a,0,10,train\nabseiling,b,x,10,train\n"
    source = write(tmp_path / "k.csv", KINETICS_HEADER + rows)
    message = error_of(source, class_names=CLASSES)
    assert f"{source}:3" in message and "time_start" in message


# ----------------------------------------------------------------------------- list errors


def test_unknown_class_name_names_line_and_close_matches(tmp_path: Path) -> None:
    source = write(tmp_path / "l.txt", "a.mp4 0\nb.mp4 air_drumin\n")
    message = error_of(source, class_names=CLASSES)
    assert f"{source}:2" in message and "air_drumin" in message and "'air drumming'" in message


def test_out_of_range_index_is_an_error_with_its_line(tmp_path: Path) -> None:
    source = write(tmp_path / "l.csv", "path,label\na.mp4,1\nb.mp4,0;4\n")
    message = error_of(source, class_names=CLASSES)
    assert f"{source}:3" in message and "4" in message and "out of range" in message


def test_negative_index_is_an_error(tmp_path: Path) -> None:
    source = write(tmp_path / "l.txt", "a.mp4 -1\n")
    assert f"{source}:1" in error_of(source)


def test_class_name_without_class_names_asks_for_classes(tmp_path: Path) -> None:
    source = write(tmp_path / "l.txt", "a.mp4 3\nb.mp4 abseiling\n")
    message = error_of(source)
    assert f"{source}:2" in message and "--classes" in message


def test_duplicate_video_names_both_lines(tmp_path: Path) -> None:
    source = write(tmp_path / "l.txt", "a.mp4 1\nb.mp4 2\n\na.mp4 3\n")
    message = error_of(source)
    assert f"{source}:4" in message and "lines 1 and 4" in message and "a.mp4" in message


def test_duplicate_kinetics_video_names_both_lines(tmp_path: Path) -> None:
    text = KINETICS_HEADER + "abseiling,a,0,10,train\nabseiling,a,00,010,train\n"
    source = write(tmp_path / "k.csv", text)
    assert "lines 2 and 3" in error_of(source, class_names=CLASSES)


@pytest.mark.parametrize("text", ["", "\n  \n", "path,label\n"])
def test_list_without_videos_is_an_error(tmp_path: Path, text: str) -> None:
    source = write(tmp_path / "l.csv", text)
    assert str(source) in error_of(source)


def test_missing_list_file_is_an_error(tmp_path: Path) -> None:
    assert "nope.txt" in error_of(tmp_path / "nope.txt")


def test_garbage_collector_is_restored_after_errors(tmp_path: Path) -> None:
    assert gc.isenabled()
    error_of(write(tmp_path / "l.txt", "a.mp4 -1\n"))
    assert gc.isenabled()


# ----------------------------------------------------------------------------- class-name files


def test_class_names_from_id_name_csv(tmp_path: Path) -> None:
    source = tmp_path / "c.csv"
    source.write_bytes(b'\xef\xbb\xbfid,name\r\n0,abseiling\r\n\r\n1,"passing, in game"\r\n')
    assert read_class_names(source) == ["abseiling", "passing, in game"]


def test_class_csv_ids_out_of_order_are_an_error_with_its_line(tmp_path: Path) -> None:
    source = write(tmp_path / "c.csv", "id,name\n0,a\n2,b\n")
    with pytest.raises(InputError, match=f"{source}:3"):
        read_class_names(source)


def test_class_csv_without_header_is_an_error(tmp_path: Path) -> None:
    source = write(tmp_path / "c.csv", "0,a\n1,b\n")
    with pytest.raises(InputError, match="id,name"):
        read_class_names(source)


def test_class_names_charades_style(tmp_path: Path) -> None:
    text = "c000 Holding some clothes\nc001  Putting clothes somewhere \n"
    source = write(tmp_path / "c.txt", text)
    assert read_class_names(source) == ["Holding some clothes", "Putting clothes somewhere"]


def test_one_based_class_ids_are_an_error(tmp_path: Path) -> None:
    source = write(tmp_path / "classInd.txt", "1 ApplyEyeMakeup\n2 ApplyLipstick\n")
    with pytest.raises(InputError, match=f"{source}:1"):
        read_class_names(source)


def test_class_names_one_per_line(tmp_path: Path) -> None:
    text = "abseiling\n\n  air drumming \n42 is not an id line\nzumba\n"
    names = read_class_names(write(tmp_path / "c.txt", text))
    assert names == ["abseiling", "air drumming", "42 is not an id line", "zumba"]


def test_duplicate_class_names_name_both_lines(tmp_path: Path) -> None:
    source = write(tmp_path / "c.txt", "a\nb\na\n")
    with pytest.raises(InputError, match=f"{source}:3.*lines 1 and 3"):
        read_class_names(source)


@pytest.mark.parametrize("text", ["", "\n\n", "id,name\n"])
def test_empty_class_file_is_an_error(tmp_path: Path, text: str) -> None:
    with pytest.raises(InputError):
        read_class_names(write(tmp_path / "c.csv", text))


def test_missing_class_file_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="nope.csv"):
        read_class_names(tmp_path / "nope.csv")


@pytest.mark.parametrize(
    ("name", "count", "first", "last"),
    [
        ("kinetics_400_labels.csv", 400, "abseiling", "zumba"),
        ("Charades_v1_classes.txt", 157, "Holding some clothes", None),
        ("ucf_labels.csv", 101, "ApplyEyeMakeup", "YoYo"),
        ("hmdb51_labels.csv", 51, "brush hair", None),
        ("anet1.3_labels.csv", 200, "Applying sunscreen", None),
        ("k160_labels_split1.csv", 160, "acting in play", None),
    ],
)
def test_real_class_files(name: str, count: int, first: str, last: str | None) -> None:
    path = SHARED_LABELS / name
    if not path.is_file():
        pytest.skip(f"{path} not found")
    names = read_class_names(path)
    assert len(names) == count and names[0] == first
    assert last is None or names[-1] == last
    assert all(name == name.strip() and name for name in names)


@pytest.mark.parametrize("reader, name", [(read_class_names, "names.txt"), (read_video_list, "list.csv")])
def test_a_line_over_the_csv_field_limit_is_one_error_naming_the_line(tmp_path, reader, name):
    path = write(tmp_path / name, "x" * 200_000 + "\nb\n")
    with pytest.raises(InputError, match=rf"{name}:1: malformed CSV line of 200000 characters \(field larger"):
        reader(path)
