"""Reliability, classes 1 and 2 of issue 13: an output never destroys an input (the command in
process: the check comes before any work), and one writer per output (real subprocesses: two
writers started together, a killed writer's lock taken over)."""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import h5py
import pytest
from cli_run import BIKE, bike, one_line
from typer.testing import CliRunner

from bike_cli.cli.app import app
from bike_cli.config.stages import ExtractConfig
from bike_cli.data.class_names import read_class_names
from bike_cli.data.video_lists import read_video_list
from bike_cli.io.atomic import temp_path
from bike_cli.io.feature_cache import parts_dir_for
from bike_cli.io.guard import WriterLock, lock_path_for
from bike_cli.stages.extract import run_extraction


def cli(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess:
    """The command in this process (CliRunner), for the checks made before any work."""
    previous = os.getcwd()
    os.chdir(cwd or previous)
    try:
        result = CliRunner().invoke(app, list(args))
    finally:
        os.chdir(previous)
    assert not isinstance(result.exception, Exception) or isinstance(result.exception, SystemExit), result.exception
    return subprocess.CompletedProcess(args, result.exit_code, "", result.output)



def extract_args(data, out: Path, *extra: str) -> list[str]:
    return ["extract-features", "--model", "bike-tiny", "--list", str(data.train), "--classes", str(data.classes), "--out", str(out),
            "--frames", "4", "--workers", "0", *extra]


@pytest.fixture
def cache(tmp_path, sample_data) -> Path:
    out = tmp_path / "c.h5"
    run_extraction(ExtractConfig(list_path=sample_data.train, classes=sample_data.classes, out=out, frames=4,
                                 workers=0))
    return out


# ----------------------------------------------------------------------------- 1. outputs vs inputs


def test_failures_equal_to_the_cache_is_refused_and_the_cache_kept(tmp_path, sample_data, cache):
    before = cache.read_bytes()
    done = cli(*extract_args(sample_data, Path("c.h5"), "--failures", "./sub/../c.h5"), cwd=tmp_path)
    message = one_line(done)
    assert done.returncode != 0
    assert "--failures sub/../c.h5 is the same file as --out c.h5" in message
    assert cache.read_bytes() == before


def test_failures_equal_to_the_list_through_a_symlink_is_refused(tmp_path, sample_data):
    link = tmp_path / "failures.csv"
    link.symlink_to(sample_data.train)
    before = Path(sample_data.train).read_bytes()
    done = cli(*extract_args(sample_data, tmp_path / "d.h5", "--failures", str(link)))
    assert done.returncode != 0 and "is the same file as --list" in one_line(done)
    assert Path(sample_data.train).read_bytes() == before and not (tmp_path / "d.h5").exists()


def test_gen_attributes_outputs_may_not_be_inputs_or_each_other(tmp_path, cache):
    lexicon = tmp_path / "lexicon.txt"
    lexicon.write_text("running\nswimming\nsky\nwater\nroad\nball\n")
    before = cache.read_bytes()
    common = ["gen-attributes", "--features", str(cache), "--lexicon", str(lexicon), "--top-k", "2"]
    done = cli(*common, "--out", str(tmp_path / "a.csv"), "--phrase-cache", str(tmp_path / "." / "c.h5"))
    assert done.returncode != 0 and "--phrase-cache" in one_line(done) and "--features" in one_line(done)
    done = cli(*common, "--out", str(tmp_path / "a.csv"), "--scores", str(tmp_path / "a.csv"))
    assert done.returncode != 0 and "--scores" in one_line(done) and "same file as --out" in one_line(done)
    done = cli(*common, "--out", str(lexicon.with_suffix(".csv")), "--phrase-cache", str(lexicon))
    assert done.returncode != 0 and "same file as --lexicon" in one_line(done)
    assert cache.read_bytes() == before and lexicon.read_text().startswith("running")


def test_out_that_is_an_existing_file_or_folder_is_refused(tmp_path, sample_data, cache):
    done = cli("eval", "--out", str(cache), "--features", str(cache), "--model", "bike-tiny", "--pretrained", "none")
    assert done.returncode != 0 and "is an existing file; give a folder" in one_line(done)
    (tmp_path / "dir.h5").mkdir()
    done = cli(*extract_args(sample_data, tmp_path / "dir.h5"))
    assert done.returncode != 0 and "dir.h5 is a folder; give a file name" in one_line(done)


def test_a_training_input_may_not_be_a_file_of_the_run_folder(tmp_path, motion_caches):
    _, train, _ = motion_caches
    run = tmp_path / "run"
    run.mkdir()
    shutil.copyfile(train, run / "best.pt")
    done = cli("train-video", "--features", str(run / "best.pt"), "--out", str(run), "--epochs", "1")
    assert done.returncode != 0 and "is the same file as --features" in one_line(done)


# ----------------------------------------------------------------------------- 2. one writer per output


def test_a_second_writer_is_told_who_holds_the_cache(tmp_path, sample_data):
    out = tmp_path / "held.h5"
    with WriterLock(out):
        done = cli(*extract_args(sample_data, out))
        assert lock_path_for(out, folder=False).exists()
    assert done.returncode != 0
    assert f"{out} is being written by process {os.getpid()}" in one_line(done) and "(started " in one_line(done)
    assert not out.exists() and not parts_dir_for(out).exists()
    assert not lock_path_for(out, folder=False).exists(), "released locks leave no file behind"


def test_a_second_writer_of_a_run_folder_is_refused(tmp_path, motion_caches):
    _, train, _ = motion_caches
    run = tmp_path / "run"
    with WriterLock(run, folder=True):
        done = cli("train-video", "--features", str(train), "--out", str(run), "--epochs", "1", "--workers", "0")
    assert done.returncode != 0 and f"{run} is being written by process {os.getpid()}" in one_line(done)
    assert not (run / "metrics.jsonl").exists()


HOLD = "import sys; from bike_cli.io.guard import WriterLock; WriterLock(sys.argv[1], folder=True).acquire(); " \
       "print('held', flush=True); sys.stdin.read()"


@contextlib.contextmanager
def held_by_another_process(folder: Path) -> Iterator[int]:
    """The folder lock of `folder` held by a real second process (io.guard, as a running stage holds it)."""
    holder = subprocess.Popen([sys.executable, "-c", HOLD, str(folder)], stdin=subprocess.PIPE,
                              stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        yield holder.pid
    finally:
        holder.stdin.close()  # it ends, and the kernel drops its lock
        holder.wait(timeout=60)


def files_in(folder: Path) -> list[str]:
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*"))


def test_eval_refuses_a_folder_another_process_writes_and_writes_nothing(tmp_path, motion_caches):
    _, _, val = motion_caches
    out = tmp_path / "eval"
    with held_by_another_process(out) as pid:
        done = cli("eval", "--features", str(val), "--model", "bike-tiny", "--pretrained", "none", "--out", str(out))
        assert files_in(out) == [".bike.lock"], "nothing written beside the holder's lock"
    message = one_line(done)
    assert done.returncode == 1 and message.count("error:") == 1
    assert f"{out} is being written by process {pid} on " in message and "(started " in message


def test_train_attrs_refuses_a_folder_another_process_writes_and_writes_nothing(tmp_path, sample_data):
    attributes = tmp_path / "attrs.csv"
    attributes.write_text("video_id,label,attributes,sentence\n")
    out = tmp_path / "run"
    with held_by_another_process(out) as pid:
        done = cli("train-attrs", "--attributes", str(attributes), "--classes", str(sample_data.classes),
                   "--model", "bike-tiny", "--pretrained", "none", "--out", str(out), "--epochs", "1",
                   "--workers", "0")
        assert files_in(out) == [".bike.lock"], "nothing written beside the holder's lock"
    message = one_line(done)
    assert done.returncode == 1 and message.count("error:") == 1
    assert f"{out} is being written by process {pid} on " in message


@pytest.mark.parametrize("command", ["eval", "train-attrs", "train-video"])
def test_a_refused_input_leaves_no_new_output_folder(tmp_path, sample_data, command):
    """The lock creates the run folder first; when an input is then refused, the folder it made goes too
    (a folder that existed before stays)."""
    text = tmp_path / "notes.txt"
    text.write_text("not a checkpoint\n")
    out = tmp_path / "new" / "run"
    args = {"eval": ["eval", "--checkpoint", str(text), "--features", str(text)],
            "train-attrs": ["train-attrs", "--attributes", str(text), "--classes", str(sample_data.classes),
                            "--model", "bike-tiny", "--pretrained", "none", "--epochs", "1", "--workers", "0"],
            "train-video": ["train-video", "--features", str(text), "--classes", str(sample_data.classes),
                            "--model", "bike-tiny", "--pretrained", "none", "--epochs", "1", "--workers", "0"]}
    done = cli(*args[command], "--out", str(out))
    assert done.returncode == 1 and one_line(done).count("error:") == 1
    assert not (tmp_path / "new").exists(), sorted(p.name for p in (tmp_path / "new").rglob("*"))
    kept = tmp_path / "kept"
    kept.mkdir()
    assert cli(*args[command], "--out", str(kept)).returncode == 1
    assert kept.is_dir() and not any(kept.iterdir())


@pytest.mark.slow
def test_two_writers_started_together_lose_nothing(tmp_path, slow_videos):
    out = tmp_path / "both.h5"
    args = extract_args(slow_videos, out, "--frames", "8", "--views", "2x3", "--batch-size", "1")
    procs = [subprocess.Popen([*BIKE, *args], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
             for _ in range(2)]
    results = [(p.wait(timeout=300), p.stderr.read()) for p in procs]
    assert any(code == 0 for code, _ in results)
    for code, err in results:
        assert "Traceback" not in err, err[-3000:]
        if code != 0:
            assert "is being written by process" in " ".join(err.split())
    names = read_class_names(slow_videos.classes)
    listed = [e.video_id for e in read_video_list(slow_videos.train, class_names=names)]
    with h5py.File(out, "r") as h5:
        assert list(h5["video_ids"].asstr()[()]) == listed  # every video once, in list order


@pytest.mark.slow
def test_the_lock_of_a_killed_writer_is_taken_over(tmp_path, slow_videos):
    out = tmp_path / "killed.h5"
    args = extract_args(slow_videos, out, "--frames", "8", "--views", "2x3", "--batch-size", "1")
    proc = subprocess.Popen([*BIKE, "-q", *args], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 120
    while not list(parts_dir_for(out).glob("*.h5")) and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.005)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert lock_path_for(out, folder=False).exists(), "SIGKILL leaves the lock file (the kernel dropped the lock)"
    done = bike(*args)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "already cached" in one_line(done)
    assert not lock_path_for(out, folder=False).exists()


def test_temporary_names_are_unique_per_writer(tmp_path):
    target = tmp_path / "x.csv"
    names = {temp_path(target) for _ in range(50)}
    assert len(names) == 50 and all(n.parent == tmp_path and n.name.endswith(".tmp") for n in names)
