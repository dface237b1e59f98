"""Reliability, classes 3 and 4 of issue 13, with the real command in subprocesses: resume runs no code
from a run folder, kills at the dangerous moments (during the best checkpoint write, between the
metrics append and the state write) resume to the uninterrupted result, --resume refuses changed
settings, files of different models are refused where they meet, eval never mixes two runs' outputs."""

from __future__ import annotations

import json
import pickle
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from cli_run import one_line

from bike_cli.config.stages import ExtractConfig
from bike_cli.io.checkpoints import load_video_checkpoint
from bike_cli.stages.extract import run_extraction


def bike(*args: str, prelude: str = "") -> subprocess.CompletedProcess:
    """`python -m bike_cli ARGS`; `prelude` is Python run first in the same process (to kill it at a moment)."""
    code = f"import sys\n{prelude}\nfrom bike_cli.cli.app import main\nmain(sys.argv[1:])"
    return subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True, timeout=600)



def train_args(train: Path, out: Path, *extra: str) -> list[str]:
    return ["train-video", "--features", str(train), "--out", str(out), "--epochs", "3", "--batch-size", "8",
            "--lr", "2e-3", "--warmup-epochs", "1", "--workers", "0", "--temporal-layers", "1",
            "--template", "{}", *extra]


def metric_epochs(run: Path) -> list[int]:
    return [json.loads(line)["epoch"] for line in (run / "metrics.jsonl").read_text().splitlines()]


def assert_same_weights(a: Path, b: Path) -> None:
    left, right = load_video_checkpoint(a).state_dict, load_video_checkpoint(b).state_dict
    assert left.keys() == right.keys()
    for key, value in left.items():
        torch.testing.assert_close(right[key], value, rtol=0, atol=0, msg=key)


@pytest.fixture(scope="module")
def straight(motion_caches, tmp_path_factory) -> Path:
    """An uninterrupted 3-epoch run."""
    _, train, _ = motion_caches
    run = tmp_path_factory.mktemp("straight") / "run"
    done = bike(*train_args(train, run))
    assert done.returncode == 0, done.stderr[-3000:]
    return run


# ----------------------------------------------------------------------------- kills at the dangerous moments

KILL_AFTER_METRICS_OF_EPOCH_2 = """
import os, signal
from bike_cli.io import metrics_json  # the one writer of metrics.jsonl
_append = metrics_json.append_line
def append_then_die(path, line):
    _append(path, line)
    if '"epoch": 2,' in line:
        os.kill(os.getpid(), signal.SIGKILL)
metrics_json.append_line = append_then_die
"""

KILL_DURING_SECOND_BEST_COPY = """
import os, signal
from bike_cli.io import atomic
_copy, calls = atomic.shutil.copyfileobj, []
def copy_half_then_die(src, dst, length=0):
    calls.append(1)
    if len(calls) == 2:
        dst.write(src.read(1000)); dst.flush()
        os.kill(os.getpid(), signal.SIGKILL)
    _copy(src, dst, length)
atomic.shutil.copyfileobj = copy_half_then_die
"""


@pytest.mark.slow
def test_kill_between_metrics_append_and_state_write_resumes_exactly(tmp_path, motion_caches, straight):
    _, train, _ = motion_caches
    run = tmp_path / "run"
    killed = bike(*train_args(train, run), prelude=KILL_AFTER_METRICS_OF_EPOCH_2)
    assert killed.returncode == -signal.SIGKILL
    assert metric_epochs(run) == [1, 2] and not (run / "checkpoints/epoch_0002/trainer_state.json").exists()
    resumed = bike(*train_args(train, run, "--resume"))
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert metric_epochs(run) == [1, 2, 3], "the line of the epoch trained again is not duplicated"
    assert_same_weights(straight / "last.pt", run / "last.pt")


@pytest.mark.slow
def test_kill_during_the_best_checkpoint_write_keeps_a_loadable_best(tmp_path, motion_caches, straight):
    _, train, _ = motion_caches
    run = tmp_path / "run"
    killed = bike(*train_args(train, run), prelude=KILL_DURING_SECOND_BEST_COPY)
    assert killed.returncode == -signal.SIGKILL
    assert load_video_checkpoint(run / "best.pt").epoch == 1, "best.pt is the previous best, whole"
    assert list(run.glob(".best.pt.*.tmp")), "the torn copy was a temporary file"
    resumed = bike(*train_args(train, run, "--resume"))
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert not list(run.glob(".*.tmp")), "the killed writer's temporary file is swept"
    assert_same_weights(straight / "best.pt", run / "best.pt")
    assert_same_weights(straight / "last.pt", run / "last.pt")


# ----------------------------------------------------------------------------- 3. no code from a run folder


class Payload:
    """Unpickling this creates the marker file: proof that loading ran code."""

    marker = ""

    def __reduce__(self):
        return (open, (self.marker, "w"))


def plant(path: Path, marker: Path) -> None:
    Payload.marker = str(marker)
    if path.suffix == ".pt":
        torch.save({"state": Payload()}, path)  # a torch zip whose data.pkl holds the payload
    else:
        path.write_bytes(pickle.dumps(Payload()))


@pytest.mark.slow
def test_no_file_of_a_run_folder_can_run_code(tmp_path, motion_caches, straight):
    _, train, _ = motion_caches
    marker = tmp_path / "PWNED"
    state = sorted((straight / "checkpoints").glob("epoch_*"))[-1]
    targets = sorted(p.name for p in state.iterdir()) + ["custom_checkpoint_0.pkl", "random_states_0.pkl"]
    assert {"model.pt", "optimizer.pt", "scheduler.json", "rng_0.json", "trainer_state.json"} <= set(targets)
    for name in targets:
        run = tmp_path / f"run_{name}"
        shutil.copytree(straight, run)
        plant(run / "checkpoints" / state.name / name, marker)
        done = bike(*train_args(train, run, "--resume"))
        assert not marker.exists(), f"loading {name} ran code"
        assert done.returncode != 0 and name in one_line(done), (name, done.stderr[-2000:])
    for name in ("best.pt", "last.pt"):
        plant(tmp_path / name, marker)
        done = bike("eval", "--checkpoint", str(tmp_path / name), "--features", str(train), "--out", str(tmp_path / "e"))
        assert done.returncode != 0 and "can read safely" in one_line(done) and not marker.exists()


@pytest.mark.slow
def test_a_state_file_of_the_wrong_kind_is_named_for_what_it_is(tmp_path, motion_caches, straight):
    """A text file where a state file belongs: what it is and what was expected, not torch's unpickler advice."""
    _, train, _ = motion_caches
    run = tmp_path / "run"
    shutil.copytree(straight, run)
    model = sorted((run / "checkpoints").glob("epoch_*"))[-1] / "model.pt"
    model.write_text("epoch,loss\n1,0.5\n")
    message = one_line(bike(*train_args(train, run, "--resume", "--epochs", "4")))
    expected = f"{model} is a text file starting 'epoch,loss', not a training state file"
    assert "".join(expected.split()) in "".join(message.split())  # Rich folds long lines
    assert "weights_only" not in message and message.count("error:") == 1


@pytest.mark.slow
def test_resume_refuses_changed_settings(tmp_path, motion_caches, straight):
    _, train, _ = motion_caches
    run = tmp_path / "run"
    shutil.copytree(straight, run)
    done = bike(*train_args(train, run, "--resume", "--lr", "1e-3", "--temporal-layers", "2"))
    message = one_line(done)
    assert done.returncode != 0 and "--resume would change the run" in message
    assert "lr: 0.002 in the run, 0.001 now" in message and "temporal_layers: 1 in the run, 2 now" in message


# ----------------------------------------------------------------------------- 4. identity where files meet


@pytest.mark.slow
def test_eval_refuses_a_cache_of_another_model(tmp_path, motion_caches, straight):
    data, _, _ = motion_caches
    other = tmp_path / "quick.h5"
    run_extraction(ExtractConfig(list_path=data.val, classes=data.classes, out=other, frames=8, workers=0,
                                 quick_gelu=True))
    done = bike("eval", "--checkpoint", str(straight), "--features", str(other), "--out", str(tmp_path / "e"))
    message = one_line(done)
    assert done.returncode != 0 and "come from different models" in message
    assert f"quick_gelu: False in --checkpoint {straight}, True in {other}" in message
    assert not (tmp_path / "e" / "metrics.json").exists()
    allowed = bike("eval", "--checkpoint", str(straight), "--features", str(other), "--out", str(tmp_path / "e"),
                   "--allow-model-mismatch")
    assert allowed.returncode == 0, allowed.stderr[-2000:]


@pytest.mark.slow
def test_train_video_refuses_pretrained_weights_other_than_the_caches(tmp_path, motion_caches):
    from bike_cli.models.clip import load_clip

    _, train, _ = motion_caches
    model, _ = load_clip("bike-tiny", "none")
    weights = tmp_path / "other.pt"
    torch.save(model.state_dict(), weights)
    done = bike(*train_args(train, tmp_path / "run", "--pretrained", str(weights)))
    assert done.returncode != 0 and f"weights: '{weights}' in this run's bike-tiny (--pretrained {weights} on the command line), 'none' in" in one_line(done)


@pytest.mark.slow
def test_eval_clears_the_outputs_of_an_earlier_eval(tmp_path, motion_caches, straight):
    _, _, val = motion_caches
    out = tmp_path / "e"
    out.mkdir()
    for name in ("fused_scores.csv", "attrs_scores.csv", "metrics.json"):
        (out / name).write_text("from an earlier eval with other options\n")
    done = bike("eval", "--checkpoint", str(straight), "--features", str(val), "--out", str(out))
    assert done.returncode == 0, done.stderr[-2000:]
    assert sorted(p.name for p in out.iterdir()) == ["metrics.json", "video_scores.csv", "video_scores.csv.meta.json"]
    assert json.loads((out / "metrics.json").read_text())["metrics"].keys() == {"video"}
