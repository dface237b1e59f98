"""Issue 19, item 3: paths that are not regular files, the OS saying no, one video under several spellings.

A FIFO or a device as an input is refused before it is opened (real CLI runs with a timeout: a hang
fails the test instead of hanging it); a folder bike may not write is one line (a real read-only
folder, and the refusals simulated in process for every errno, also as root); a video listed under
three spellings is read once, with a warning."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
from pathlib import Path

import pytest
from typer.testing import CliRunner

from bike_cli.cli.app import app
from bike_cli.config.files import file_kind
from bike_cli.data.decoding.failures import check_video_file
from bike_cli.errors import DecodeError

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
