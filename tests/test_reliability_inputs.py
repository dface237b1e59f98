"""Reliability, class 5 of issue 13: bad input is one clear line, never a traceback nor a silent drop;
a full disk stops cleanly with the previous state intact; SIGTERM stops like Ctrl-C (real subprocesses
where the process itself is what is tested)."""

from __future__ import annotations

import csv
import os
import resource
import shutil
import signal
import subprocess
import time
from pathlib import Path

import h5py
import pytest
from cli_run import BIKE, one_line
from typer.testing import CliRunner

from bike_cli.cli.app import app
from bike_cli.data.class_names import read_class_names
from bike_cli.data.video_lists import read_video_list
from bike_cli.io.feature_cache import parts_dir_for
from bike_cli.io.guard import lock_path_for


def extract_args(list_path: Path, out: Path, classes: Path, *extra: str) -> list[str]:
    return ["extract-features", "--model", "bike-tiny", "--list", str(list_path), "--classes", str(classes), "--out", str(out),
            "--frames", "4", "--workers", "0", *extra]


def cli(*args: str):
    result = CliRunner().invoke(app, list(args))
    assert result.exception is None or isinstance(result.exception, SystemExit), repr(result.exception)
    return result.exit_code, " ".join(result.output.split())



def first_video(data) -> str:
    """The path column of the first row of a sample list (relative to the list's folder)."""
    with open(data.train, newline="") as fh:
        return next(csv.DictReader(fh))["path"]


# ----------------------------------------------------------------------------- lists


def test_an_unbalanced_quote_names_its_line(tmp_path, sample_data):
    listing = tmp_path / "list.csv"
    video = Path(sample_data.train).parent / first_video(sample_data)
    listing.write_text(f'path,label\n{video},0\n"{video},1\n{video}x,2\n')
    code, message = cli(*extract_args(listing, tmp_path / "c.h5", sample_data.classes))
    assert code != 0 and f"{listing}:3: a quoted field opened on this line is never closed" in message
    assert not (tmp_path / "c.h5").exists()


def test_quoted_line_breaks_stay_in_the_path(tmp_path, sample_data):
    listing = tmp_path / "list.csv"
    video = Path(sample_data.train).parent / first_video(sample_data)
    listing.write_text(f'path,label\n{video},0\n"odd\nname.mp4",1\n')
    code, message = cli(*extract_args(listing, tmp_path / "c.h5", sample_data.classes))
    assert code == 0, message
    with open(tmp_path / "c.failures.csv", newline="") as fh:
        rows = list(csv.DictReader(fh))
    assert [r["video_id"] for r in rows] == ["odd\nname.mp4"] and rows[0]["reason"].startswith("file not found")


@pytest.mark.parametrize("name,message", [
    ("a" * 300 + ".mp4", "the path component 'aaaa"),
    ("x/" * 2100 + "v.mp4", "the path is longer than 4096 bytes"),
    ("bad\0name.mp4", "holds a NUL byte"),
])
def test_paths_the_file_system_cannot_take_are_a_file_line_error(tmp_path, sample_data, name, message):
    listing = tmp_path / "list.txt"
    listing.write_text(f"fine.mp4 0\n{name} 1\n")
    code, output = cli(*extract_args(listing, tmp_path / "c.h5", sample_data.classes))
    assert code != 0 and f"{listing}:2: " in output and message in output


def test_a_folder_named_like_a_video_is_a_recorded_skip(tmp_path, sample_data):
    (tmp_path / "folder.mp4").mkdir()
    video = Path(sample_data.train).parent / first_video(sample_data)
    listing = tmp_path / "list.txt"
    listing.write_text(f"{video} 0\nfolder.mp4 1\n")
    code, output = cli(*extract_args(listing, tmp_path / "c.h5", sample_data.classes))
    assert code == 0, output
    with open(tmp_path / "c.failures.csv", newline="") as fh:
        rows = list(csv.DictReader(fh))
    assert [r["video_id"] for r in rows] == ["folder.mp4"] and "is a folder" in rows[0]["reason"]


# ----------------------------------------------------------------------------- malformed files


def test_malformed_caches_are_one_line(tmp_path, motion_caches):
    _, train, _ = motion_caches
    missing = tmp_path / "missing.h5"
    shutil.copyfile(train, missing)
    with h5py.File(missing, "a") as h5:
        del h5["num_frames"]
    short = tmp_path / "short.h5"
    shutil.copyfile(train, short)
    with h5py.File(short, "a") as h5:
        ids = h5["video_ids"][()][:3]
        del h5["video_ids"]
        h5.create_dataset("video_ids", data=ids)
    no_attrs = tmp_path / "noattrs.h5"
    shutil.copyfile(train, no_attrs)
    with h5py.File(no_attrs, "a") as h5:
        del h5.attrs["frames"]
    for cache, message in ((missing, "num_frames missing"), (short, "dataset /video_ids has 3 rows"),
                           (no_attrs, "malformed feature cache")):
        code, output = cli("eval", "--features", str(cache), "--out", str(tmp_path / "e"),
                           "--model", "bike-tiny", "--pretrained", "none")
        assert code != 0 and str(cache) in output and message in output, output


def test_a_corrupt_parts_meta_file_is_one_line(tmp_path, sample_data):
    out = tmp_path / "c.h5"
    parts_dir_for(out).mkdir()
    (parts_dir_for(out) / "meta.json").write_text('{"model_name": "bike-ti')
    code, output = cli(*extract_args(sample_data.train, out, sample_data.classes))
    assert code != 0 and "is corrupt (JSONDecodeError" in output and "--overwrite" in output


# ----------------------------------------------------------------------------- a full disk


@pytest.fixture(params=["tmpfs", "rlimit"])
def small_disk(request, tmp_path):
    """(folder, limit): a 8 MB tmpfs (as root) filled but for 256 kB, or a 16 kB file-size limit."""
    folder = tmp_path / "disk"
    folder.mkdir()
    if request.param == "tmpfs":
        if os.geteuid() != 0 or subprocess.run(["mount", "-t", "tmpfs", "-o", "size=8m", "tmpfs", str(folder)],
                                               capture_output=True).returncode != 0:
            pytest.skip("mounting a tmpfs needs root")
        request.addfinalizer(lambda: subprocess.run(["umount", "-l", str(folder)], check=False))
    yield folder, request.param


def limited(kind: str, folder: Path):
    """Context: the disk is (nearly) full while inside."""
    class Limit:
        def __enter__(self):
            self.filler = folder / "filler"
            if kind == "tmpfs":
                free = shutil.disk_usage(folder).free
                self.filler.write_bytes(b"\0" * max(0, free - (256 << 10)))
            return (lambda: resource.setrlimit(resource.RLIMIT_FSIZE, (16 << 10, 16 << 10))) if kind == "rlimit" \
                else None

        def __exit__(self, *exc):
            self.filler.unlink(missing_ok=True)
    return Limit()


@pytest.mark.slow
def test_a_full_disk_stops_cleanly_and_keeps_the_previous_state(small_disk, sample_data, motion_caches):
    folder, kind = small_disk
    out = folder / "c.h5"
    first = subprocess.run([*BIKE, *extract_args(sample_data.train, out, sample_data.classes)],
                           capture_output=True, text=True)
    assert first.returncode == 0, first.stderr[-2000:]
    before = out.read_bytes()
    both = folder.parent / "both.csv"
    train, val = Path(sample_data.train).read_text(), Path(sample_data.val).read_text().split("\n", 1)[1]
    both.write_text(train.replace("videos/", f"{Path(sample_data.train).parent}/videos/")
                    + val.replace("videos/", f"{Path(sample_data.val).parent}/videos/"))
    args = extract_args(both, out, sample_data.classes)  # the same settings: the val videos are new
    with limited(kind, folder) as preexec:
        full = subprocess.run([*BIKE, *args], capture_output=True, text=True, preexec_fn=preexec)
        _, train_cache, _ = motion_caches
        run = folder / "run"
        trained = subprocess.run([*BIKE, "train-video", "--features", str(train_cache), "--out", str(run),
                                  "--epochs", "1", "--workers", "0"], capture_output=True, text=True,
                                 preexec_fn=preexec)
    message = one_line(full)
    assert full.returncode != 0 and "no space left on" in message
    assert "finished work is kept, free space and run the same command" in message
    assert out.read_bytes() == before, "the previous cache is intact"
    assert trained.returncode != 0 and "no space left on" in one_line(trained)
    assert not list(folder.glob(".*.tmp")) and not list(run.glob(".*.tmp"))
    done = subprocess.run([*BIKE, *args], capture_output=True, text=True)  # the same command, space freed
    assert done.returncode == 0, done.stderr[-2000:]
    wanted = {e.video_id for e in read_video_list(both, class_names=read_class_names(sample_data.classes))}
    with h5py.File(out, "r") as h5:
        assert wanted <= set(h5["video_ids"].asstr()[()])  # the first cache's rows, then every listed video


# ----------------------------------------------------------------------------- SIGTERM


@pytest.mark.slow
def test_sigterm_stops_like_ctrl_c_and_the_run_resumes(tmp_path, slow_videos):
    out = tmp_path / "c.h5"
    args = extract_args(slow_videos.train, out, slow_videos.classes, "--frames", "8", "--views", "2x3",
                        "--batch-size", "1")
    proc = subprocess.Popen([*BIKE, *args], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 120
    while not list(parts_dir_for(out).glob("*.h5")) and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.005)
    proc.send_signal(signal.SIGTERM)
    err = proc.stderr.read()
    assert proc.wait() == 128 + signal.SIGTERM
    assert "Traceback" not in err and "terminated: finished work is kept; run the same command to resume" in " ".join(
        err.split())
    assert not lock_path_for(out, folder=False).exists(), "the lock was released on the way out"
    done = subprocess.run([*BIKE, *args], capture_output=True, text=True)
    assert done.returncode == 0 and "already cached" in one_line(done)


def test_resume_advice_only_from_stages_that_resume(capsys):
    import typer

    from bike_cli.cli.core import run_guarded

    def run_extraction():
        raise KeyboardInterrupt

    def run_eval():
        raise KeyboardInterrupt

    for func, advice in ((run_extraction, "run the same command to resume"), (run_eval, "run it again")):
        with pytest.raises(typer.Exit):
            run_guarded(func)
        message = " ".join(capsys.readouterr().err.split())
        assert advice in message and ("resume" in message) == (func is run_extraction)
