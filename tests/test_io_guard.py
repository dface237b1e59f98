"""The path guard of issue 18: every path a command reads and writes, resolved, checked and locked
before anything is deleted or written (real subprocesses, as a user runs them)."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest
import torch
from cli_run import bike

from bike_cli.data.class_names import read_class_names
from bike_cli.data.synthetic import make_sample_dataset
from bike_cli.data.video_lists import read_video_list
from bike_cli.errors import InputError
from bike_cli.io.csv_meta import meta_path, write_csv_meta
from bike_cli.io.guard import OutputLockedError, WriterLock
from bike_cli.io.score_csv import write_score_csv
from bike_cli.models.clip import load_clip

RUN_FILES = ("metrics.jsonl", "last.pt", "best.pt", "config.yaml")



def refused(done: subprocess.CompletedProcess) -> str:
    """The one-line message of a refused command (exit 1, no traceback)."""
    assert done.returncode == 1, (done.returncode, done.stderr[-3000:])
    assert "Traceback" not in done.stderr, done.stderr[-3000:]
    message = " ".join(done.stderr.split())  # one message, wrapped by the console to its width
    assert message.count("error:") == 1, done.stderr
    return message[message.index("error:"):]  # after the log lines of what was read (a list of videos)


def snapshot(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.fixture
def own_videos(tmp_path):
    """A private dataset (one video a class): a test that may overwrite a video must not share one."""
    return make_sample_dataset(tmp_path / "data", videos_per_class=1, val_fraction=0.0, num_frames=8, size=(32, 32))


def fake_run(folder: Path) -> dict[str, bytes]:
    """A run folder as training leaves it (contents are not read before the checks under test)."""
    (folder / "checkpoints" / "epoch_0001").mkdir(parents=True)
    for name in RUN_FILES:
        (folder / name).write_bytes(f"the earlier run's {name}\n".encode())
    (folder / "checkpoints" / "epoch_0001" / "trainer_state.json").write_text("{}")
    return snapshot(folder)


# ----------------------------------------------------------------------------- 1. extract --failures


def test_failures_equal_to_a_listed_video_is_refused(tmp_path, own_videos):
    names = read_class_names(own_videos.classes)
    video = read_video_list(own_videos.train, class_names=names).entries[0].path
    before = Path(video).read_bytes()
    done = bike("extract-features", "--model", "bike-tiny", "--list", own_videos.train, "--classes", own_videos.classes, "--out", tmp_path / "c.h5",
                "--frames", "2", "--workers", "0", "--failures", video)
    assert "--failures" in refused(done) and "same file as" in refused(done)
    assert Path(video).read_bytes() == before and not (tmp_path / "c.h5").exists()


def test_failures_equal_to_the_pretrained_file_is_refused(tmp_path, own_videos):
    weights = tmp_path / "tiny.pt"
    torch.save(load_clip("bike-tiny", "none")[0].state_dict(), weights)
    before = weights.read_bytes()
    done = bike("extract-features", "--model", "bike-tiny", "--pretrained", weights, "--list", own_videos.train, "--classes", own_videos.classes,
                "--out", tmp_path / "c.h5", "--frames", "2", "--workers", "0", "--failures", weights)
    assert "--failures" in refused(done) and "--pretrained" in refused(done)
    assert weights.read_bytes() == before and not (tmp_path / "c.h5").exists()


# ----------------------------------------------------------------------------- 2. --init-from inside --out


def test_init_from_the_run_it_would_overwrite_is_refused_before_deleting(tmp_path, tiny_cache):
    run = tmp_path / "run"
    before = fake_run(run)
    done = bike("train-video", "--features", tiny_cache, "--init-from", run, "--out", run, "--overwrite",
                "--epochs", "1", "--workers", "0")
    assert "--init-from" in refused(done)
    assert snapshot(run) == before


# ----------------------------------------------------------------------------- 3. --overwrite under the lock


def test_overwrite_of_a_run_another_process_writes_is_refused_and_deletes_nothing(tmp_path, tiny_cache):
    run = tmp_path / "run"
    before = fake_run(run)
    with WriterLock(run, folder=True):
        done = bike("train-video", "--features", tiny_cache, "--out", run, "--overwrite", "--epochs", "1",
                    "--workers", "0")
        assert f"is being written by process {os.getpid()}" in refused(done)
        assert {k: v for k, v in snapshot(run).items() if k != ".bike.lock"} == before


def test_train_attrs_overwrite_of_a_locked_run_deletes_nothing(tmp_path, sample_data):
    run = tmp_path / "run"
    before = fake_run(run)
    attributes = tmp_path / "attrs.csv"
    attributes.write_text("video_id,label,attributes,sentence\n")
    with WriterLock(run, folder=True):
        done = bike("train-attrs", "--attributes", attributes, "--classes", sample_data.classes, "--model",
                    "bike-tiny", "--pretrained", "none", "--out", run, "--overwrite", "--epochs", "1",
                    "--workers", "0")
        assert f"is being written by process {os.getpid()}" in refused(done)
        assert {k: v for k, v in snapshot(run).items() if k != ".bike.lock"} == before


# ----------------------------------------------------------------------------- 4. the temp sweep


def test_train_video_keeps_the_users_tmp_files_and_sweeps_only_bikes(tmp_path, tiny_cache):
    run = tmp_path / "run"
    run.mkdir()
    (run / "notes.tmp").write_text("mine")
    (run / ".notes.tmp").write_text("mine too")
    stale = run / ".last.pt.4242.0badcafe.tmp"  # of a bike writer that died
    stale.write_text("torn")
    done = bike("train-video", "--features", tiny_cache, "--out", run, "--epochs", "1", "--workers", "0", "--frames", "4",
                "--temporal-layers", "1")
    assert done.returncode == 0, done.stderr[-3000:]
    assert (run / "notes.tmp").read_text() == "mine" and (run / ".notes.tmp").read_text() == "mine too"
    assert not stale.exists() and (run / "last.pt").is_file()


# ----------------------------------------------------------------------------- 5. fuse --out a sidecar


def test_fuse_out_equal_to_an_inputs_sidecar_is_refused(tmp_path):
    import numpy as np

    paths = []
    for name in ("a", "b"):
        path = write_score_csv(tmp_path / f"{name}.csv", ["x", "y"], np.array([0, 1]),
                               np.array([[0.6, 0.4], [0.3, 0.7]]), ["p", "q"])
        write_csv_meta(path, "bike")
        paths.append(path)
    before = snapshot(tmp_path)
    done = bike("fuse", *paths, "--out", meta_path(paths[0]))
    assert "--out" in refused(done) and "a.csv" in refused(done)
    assert snapshot(tmp_path) == before


# ----------------------------------------------------------------------------- 6. one lock through a symlink


def test_the_lock_through_a_symlink_is_the_lock_of_the_real_path(tmp_path):
    real, link = tmp_path / "real.h5", tmp_path / "link.h5"
    real.write_bytes(b"")
    link.symlink_to(real)
    with WriterLock(real), pytest.raises(OutputLockedError):
        WriterLock(link).acquire()
    with WriterLock(link), pytest.raises(OutputLockedError):
        WriterLock(real).acquire()


def test_extract_through_a_symlink_is_refused_while_the_real_cache_is_written(tmp_path, own_videos):
    real, link = tmp_path / "real.h5", tmp_path / "link.h5"
    link.symlink_to(real)
    with WriterLock(real):
        done = bike("extract-features", "--model", "bike-tiny", "--list", own_videos.train, "--classes", own_videos.classes, "--out", link,
                    "--frames", "2", "--workers", "0")
        assert f"is being written by process {os.getpid()}" in refused(done)
    assert not real.exists() and link.is_symlink()


def test_a_folder_whose_name_extends_a_replaced_trees_name_is_not_inside_it(tmp_path):
    """OUT/checkpoints_old is beside OUT/checkpoints, not in it: an input there is not refused, and
    the folder is never deleted as one of the run's."""
    from bike_cli.engine.run_folder import run_guard
    from bike_cli.errors import BikeError

    out = tmp_path / "run"
    (out / "checkpoints_old").mkdir(parents=True)
    kept = out / "checkpoints_old" / "x.pt"
    kept.write_bytes(b"mine")
    guard = run_guard(out, {"--init-from": kept})
    with pytest.raises(BikeError, match="not an output of this command"):
        guard.discard(out / "checkpoints_old")
    assert kept.read_bytes() == b"mine"
    (out / "checkpoints").mkdir()
    inside = out / "checkpoints" / "x.pt"
    inside.write_bytes(b"mine")
    with pytest.raises(InputError, match="inside --out's checkpoints"):
        run_guard(out, {"--init-from": inside})


@pytest.mark.parametrize("name", ["last.pt", "best.pt"])
def test_a_run_folder_given_as_an_input_owns_its_last_and_best_checkpoints(tmp_path, name):
    from bike_cli.io.guard import PathGuard

    run = tmp_path / "run"
    run.mkdir()
    (run / name).write_bytes(b"checkpoint")
    with pytest.raises(InputError) as refused:
        PathGuard({"--checkpoint": run}, {"--out": run / name})
    assert f"is the checkpoint {name} in --checkpoint {run}" in str(refused.value)
    assert (run / name).read_bytes() == b"checkpoint"
