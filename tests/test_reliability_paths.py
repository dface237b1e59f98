"""Issue 19, item 3: paths that are not regular files, the OS saying no, one video under several spellings.

A FIFO or a device as an input is refused before it is opened (real CLI runs with a timeout: a hang
fails the test instead of hanging it); a folder bike may not write is one line (a real read-only
folder, and the refusals simulated in process for every errno, also as root); a video listed under
three spellings is read once, with a warning."""

from __future__ import annotations

import builtins
import errno
import logging
import os
import re
import subprocess
import sys
import threading
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from bike_cli.cli.app import app
from bike_cli.config.files import file_kind
from bike_cli.data.decoding.frames import check_video_file
from bike_cli.data.video_lists import read_video_list
from bike_cli.errors import DecodeError, InputError
from bike_cli.io.atomic import NotWritableError, write_errors_as_bike
from bike_cli.io.score_csv import write_score_csv

BIKE = [sys.executable, "-m", "bike_cli"]
HANG = 240  # seconds: far beyond a refused command's start on a loaded machine; a blocked read never ends


def bike(*args: object) -> subprocess.CompletedProcess:
    try:
        return subprocess.run([*BIKE, *map(str, args)], capture_output=True, text=True, timeout=HANG)
    except subprocess.TimeoutExpired:
        pytest.fail(f"bike {' '.join(map(str, args))} hung (still running after {HANG} s)")


def refused(done: subprocess.CompletedProcess) -> str:
    """The one `error:` line of a refused command (exit 1, no traceback), its folds joined."""
    assert done.returncode == 1, (done.returncode, done.stderr[-3000:])
    assert "Traceback" not in done.stderr, done.stderr[-3000:]
    message = "".join(done.stderr.split())
    assert message.count("error:") == 1, done.stderr
    return message[message.index("error:"):]


def joined(text: str) -> str:
    return "".join(text.split())


@pytest.fixture
def fifo(tmp_path) -> Path:
    path = tmp_path / "pipe.yaml"
    os.mkfifo(path)
    return path


# ----------------------------------------------------------------------------- (a) not a regular file


def test_file_kind_names_what_a_path_is(tmp_path, fifo):
    (tmp_path / "f").write_text("x")
    assert file_kind(tmp_path / "f") == "a regular file" and file_kind(tmp_path) == "a folder"
    assert file_kind(fifo) == "a FIFO (named pipe)" and file_kind("/dev/zero") == "a character device"
    assert file_kind(tmp_path / "missing") is None


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["fifo", "device"])
def test_a_fifo_or_device_recipe_is_refused_without_reading_it(fifo, kind):
    recipe, what = (fifo, "a FIFO (named pipe)") if kind == "fifo" else (Path("/dev/zero"), "a character device")
    message = refused(bike("train-video", "--recipe", recipe))
    assert joined(f"error: recipe {recipe} is {what}, not a regular file") in message


def test_a_recipe_extending_a_fifo_is_refused(tmp_path, fifo):
    recipe = tmp_path / "r.yaml"
    recipe.write_text(f"extends: {fifo.name}\nepochs: 2\n")
    result = CliRunner().invoke(app, ["train-video", "--recipe", str(recipe)])
    assert result.exit_code == 1
    assert joined(f"{recipe}:1: extends: recipe {fifo} is a FIFO (named pipe), not a regular file") in joined(result.output)


@pytest.mark.slow
@pytest.mark.parametrize("option", ["--features", "--checkpoint", "--pretrained"])
def test_a_fifo_or_device_input_of_eval_is_refused_before_it_is_opened(tmp_path, fifo, option):
    """`--features`, `--checkpoint` (the FIFO) and `--pretrained` (/dev/zero) name the path and what it is."""
    given = {"--features": fifo, "--checkpoint": fifo, "--pretrained": Path("/dev/zero")}
    args = {"--features": fifo if option == "--features" else tmp_path / "none.h5", "--model": "bike-tiny",
            "--pretrained": given["--pretrained"] if option == "--pretrained" else "none", "--out": tmp_path / "e"}
    if option == "--checkpoint":
        args["--checkpoint"] = fifo
    what = "a character device" if option == "--pretrained" else "a FIFO (named pipe)"
    message = refused(bike("eval", *[part for pair in args.items() for part in pair]))
    assert joined(f"error: {option} {given[option]} is {what}, not a regular file") in message
    assert not (tmp_path / "e").exists()


def test_a_fifo_as_train_video_features_is_refused(tmp_path, fifo):
    result = CliRunner().invoke(app, ["train-video", "--features", str(fifo), "--out", str(tmp_path / "run")])
    assert result.exit_code == 1
    assert joined(f"--features {fifo} is a FIFO (named pipe), not a regular file") in joined(result.output)
    assert not (tmp_path / "run").exists()


def test_a_fifo_video_is_a_decode_failure_not_a_hang(fifo):
    outcome: list[BaseException | None] = []

    def check() -> None:
        try:
            check_video_file(fifo)
            outcome.append(None)
        except BaseException as err:  # noqa: BLE001 - recorded for the assertion below
            outcome.append(err)

    reader = threading.Thread(target=check, daemon=True)
    reader.start()
    reader.join(60)
    if reader.is_alive():  # blocked opening the FIFO: let it go, then fail
        os.close(os.open(fifo, os.O_WRONLY | os.O_NONBLOCK))
        reader.join(10)
        pytest.fail("check_video_file blocked on a FIFO")
    assert isinstance(outcome[0], DecodeError) and "is a FIFO (named pipe), not a regular file" in str(outcome[0])


# ----------------------------------------------------------------------------- (b) the OS says no


def score_csvs(folder: Path) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    paths = []
    for name in ("a.csv", "b.csv"):
        scores = rng.random((4, 3))
        paths.append(write_score_csv(folder / name, ["v0", "v1", "v2", "v3"], np.array([0, 1, 2, 0]),
                                     scores / scores.sum(1, keepdims=True), ["x", "y", "z"]))
    return paths


@pytest.fixture
def read_only_folder(tmp_path):
    """A real folder bike may not write: mode 0o555 (not as root, whom modes do not stop), or, as root,
    a read-only tmpfs mounted on it (skipped where neither works; the simulated tests below still run)."""
    folder = tmp_path / "ro"
    folder.mkdir()
    if os.geteuid() != 0:
        folder.chmod(0o555)
        yield folder, "Permission denied"
        folder.chmod(0o755)
        return
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m,ro", "tmpfs", str(folder)],
                      capture_output=True).returncode != 0:
        pytest.skip("as root a read-only folder needs a read-only mount, and mounting failed")
    yield folder, "Read-only file system"
    subprocess.run(["umount", "-l", str(folder)], check=False)


@pytest.mark.slow
def test_a_read_only_output_folder_is_one_line(tmp_path, tiny_cache, read_only_folder):
    folder, reason = read_only_folder
    inputs = score_csvs(tmp_path / "in")
    message = refused(bike("fuse", *inputs, "--out", folder / "f.csv"))
    assert joined(f"error: cannot write {folder / 'f.csv'}: {folder} is not writable ({reason})") in message
    message = refused(bike("eval", "--features", tiny_cache, "--model", "bike-tiny", "--pretrained", "none",
                           "--out", folder / "e"))
    assert joined(f"error: cannot write {folder / 'e' / '.bike.lock'}: {folder} is not writable ({reason})") in message
    assert list(folder.iterdir()) == []


DENIED = {errno.EACCES: "Permission denied", errno.EPERM: "Operation not permitted",
          errno.EROFS: "Read-only file system"}


def _refuse_under(monkeypatch, folder: Path, code: int) -> None:
    """Every open for writing under `folder` fails with `code` (os.open and the built-in open)."""
    real_os_open, real_open = os.open, builtins.open

    def denied(path) -> OSError:
        return OSError(code, os.strerror(code), str(path))

    def fake_os_open(path, flags, *args, **kwargs):
        if str(path).startswith(str(folder)) and flags & (os.O_WRONLY | os.O_RDWR | os.O_CREAT):
            raise denied(path)
        return real_os_open(path, flags, *args, **kwargs)

    def fake_open(file, mode="r", *args, **kwargs):
        if isinstance(file, (str, os.PathLike)) and str(file).startswith(str(folder)) and set(mode) & set("wax+"):
            raise denied(file)
        return real_open(file, mode, *args, **kwargs)

    monkeypatch.setattr(os, "open", fake_os_open)
    monkeypatch.setattr(builtins, "open", fake_open)


@pytest.mark.parametrize("code", [errno.ENOSPC, errno.EACCES, errno.EPERM, errno.EROFS])
@pytest.mark.parametrize("stage", ["fuse", "eval"])
def test_the_first_write_refused_by_the_os_is_one_line(tmp_path, monkeypatch, tiny_cache, stage, code):
    """The atomic writer (fuse's score CSV) and the writer lock (eval's folder) map each errno."""
    inputs = score_csvs(tmp_path / "in")
    out = tmp_path / "out"
    out.mkdir()
    target = out / ("f.csv" if stage == "fuse" else "e")
    _refuse_under(monkeypatch, out, code)
    args = ["fuse", *map(str, inputs), "--out", str(target)] if stage == "fuse" else \
        ["eval", "--features", str(tiny_cache), "--model", "bike-tiny", "--pretrained", "none", "--out", str(target)]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 1 and isinstance(result.exception, SystemExit), repr(result.exception)
    message = joined(result.output)
    assert message.count("error:") == 1 and "Traceback" not in result.output, result.output
    written, folder = (target, out) if stage == "fuse" else (target / ".bike.lock", target)  # eval: its lock
    if code == errno.ENOSPC:
        assert "error:nospacelefton" in message
        assert joined(f"while writing {written}; finished work is kept, free space and run the same command") in message
    else:
        assert joined(f"error: cannot write {written}: {folder} is not writable ({DENIED[code]})") in message
    assert [p for p in out.rglob("*") if not p.is_dir()] == [], "nothing written"


def test_a_refused_read_of_another_file_is_not_called_a_write_error(tmp_path):
    """Inside a write, the OS refusing to read the source of a copy is the source's error."""
    target, source = tmp_path / "out" / "x.bin", tmp_path / "in" / "src.bin"
    with pytest.raises(PermissionError), write_errors_as_bike(target):
        raise PermissionError(errno.EACCES, "Permission denied", str(source))
    with pytest.raises(NotWritableError, match=re.escape(f"cannot write {target}: {tmp_path} is not writable")), \
            write_errors_as_bike(target):
        raise PermissionError(errno.EACCES, "Permission denied", str(target.parent))


# ----------------------------------------------------------------------------- (c) one video, three spellings


def test_one_video_under_three_spellings_is_read_once_with_a_warning(tmp_path, caplog):
    (tmp_path / "v").mkdir()
    (tmp_path / "lists").mkdir()
    (tmp_path / "x.mp4").write_bytes(b"")
    (tmp_path / "y.mp4").write_bytes(b"")
    listing = tmp_path / "lists" / "list.txt"
    absolute = tmp_path / "x.mp4"
    listing.write_text(f"../x.mp4 0\n../y.mp4 1\n{absolute} 0\n../v/../x.mp4 0\n")
    with caplog.at_level(logging.WARNING, logger="bike_cli"):
        videos = read_video_list(listing)
    assert [e.video_id for e in videos] == ["../x.mp4", "../y.mp4"] and [e.line for e in videos] == [1, 2]
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1, warnings
    assert all(part in warnings[0] for part in (f"{listing}", "lines 1, 3 and 4", "'../x.mp4'", f"'{absolute}'",
                                                 "'../v/../x.mp4'", "read once"))


def test_one_video_under_two_spellings_with_different_labels_is_an_error(tmp_path):
    (tmp_path / "x.mp4").write_bytes(b"")
    listing = tmp_path / "list.txt"
    listing.write_text("x.mp4 0\n./x.mp4 1\n")
    with pytest.raises(InputError, match=re.escape(f"{listing}:2: 'x.mp4', './x.mp4' are one video")):
        read_video_list(listing)
