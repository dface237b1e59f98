"""`--resume` with a larger `--epochs` continues a run (finished or not), as the Hugging Face Trainer and
mmaction2 do: the lr schedule is recomputed for the new total, metrics.jsonl goes on, best/last keep
working; a smaller `--epochs` than already trained, and every other changed setting, is refused."""

from __future__ import annotations

import json
import logging
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from torch.optim.optimizer import register_optimizer_step_pre_hook
from training_rig import Rows, fit_rig

from bike_cli.config.stages import TrainVideoConfig
from bike_cli.engine.training_loop import LoopSettings, Trainer
from bike_cli.errors import InputError
from bike_cli.io.checkpoints import load_attrs_checkpoint, load_video_checkpoint
from bike_cli.stages.train_attrs import run_train_attrs
from bike_cli.stages.train_video import run_train_video

N, BATCH = 47, 8  # 6 batches an epoch, the last one partial


def _lrs_of_fit(out: Path, compat: str, epochs: int, resume: bool) -> list[float]:
    """The lr of every optimiser step a Trainer.fit of the tiny rig took."""
    settings = LoopSettings(out=out, epochs=epochs, batch_size=BATCH, grad_accum=1, warmup_epochs=1.0, precision="fp32", seed=0,
                            val_every=1, workers=0, resume=resume, device="cpu")
    lrs: list[float] = []
    handle = register_optimizer_step_pre_hook(lambda opt, args, kwargs: lrs.append(opt.param_groups[0]["lr"]))
    try:
        fit_rig(settings, compat, Rows(N), lr=1e-2)
    finally:
        handle.remove()
    return lrs


@pytest.mark.parametrize("compat", ["bike", "authors"])
def test_more_epochs_on_resume_follow_the_schedule_of_the_new_total(tmp_path, compat):
    straight = _lrs_of_fit(tmp_path / "straight", compat, epochs=4, resume=False)
    first = _lrs_of_fit(tmp_path / "run", compat, epochs=2, resume=False)
    continued = _lrs_of_fit(tmp_path / "run", compat, epochs=4, resume=True)
    assert len(first) + len(continued) == len(straight)
    assert continued == pytest.approx(straight[len(first):], rel=1e-6, abs=1e-12), \
        "every step after the resume, the first included, has the lr of a 4-epoch schedule"
    epochs = [json.loads(line)["epoch"] for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert epochs == [1, 2, 3, 4]


# ----------------------------------------------------------------------------- train-video


def video_config(train: Path, out: Path, **overrides) -> TrainVideoConfig:
    values = dict(features=train, out=out, epochs=2, batch_size=8, lr=2e-3, warmup_epochs=1, workers=0,
                  templates=["{}"], temporal_layers=1)
    values.update(overrides)
    return TrainVideoConfig(**values)


def metrics_lines(run: Path) -> list[dict]:
    return [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]


@pytest.fixture(scope="module")
def two_epochs(motion_caches, tmp_path_factory) -> Path:
    """A finished 2-epoch train-video run."""
    _, train, _ = motion_caches
    run = tmp_path_factory.mktemp("two") / "run"
    run_train_video(video_config(train, run))
    return run


def test_train_video_resume_with_more_epochs_continues_a_finished_run(tmp_path, motion_caches, two_epochs,
                                                                       caplog):
    _, train, _ = motion_caches
    run = tmp_path / "run"
    shutil.copytree(two_epochs, run)
    straight = run_train_video(video_config(train, tmp_path / "straight", epochs=3))
    with caplog.at_level(logging.INFO):
        summary = run_train_video(video_config(train, run, epochs=3, resume=True))
    assert not summary.finished_before and summary.epochs == 3 and summary.steps == straight.steps
    lines = metrics_lines(run)
    assert [line["epoch"] for line in lines] == [1, 2, 3]
    assert lines[:2] == metrics_lines(two_epochs), "the lines of the first run are kept as they were"
    assert lines[2]["lr"] == pytest.approx(metrics_lines(tmp_path / "straight")[2]["lr"], rel=1e-6)
    recomputed = [r.getMessage() for r in caplog.records if "schedule" in r.getMessage()]
    assert len(recomputed) == 1 and "3 epochs" in recomputed[0] and "2" in recomputed[0], recomputed
    assert load_video_checkpoint(run / "last.pt").epoch == 3
    assert load_video_checkpoint(run / "best.pt").epoch == summary.best_epoch
    assert yaml.safe_load((run / "config.yaml").read_text())["epochs"] == 3


def test_train_video_resume_with_more_epochs_continues_an_unfinished_run(tmp_path, motion_caches, monkeypatch):
    _, train, _ = motion_caches
    finish_epoch = Trainer._end_epoch

    def interrupted(self, model, state, line, *args):
        finish_epoch(self, model, state, line, *args)
        if line["epoch"] == 1:
            raise KeyboardInterrupt

    monkeypatch.setattr(Trainer, "_end_epoch", interrupted)
    with pytest.raises(KeyboardInterrupt):
        run_train_video(video_config(train, tmp_path / "run", epochs=2))
    monkeypatch.undo()
    summary = run_train_video(video_config(train, tmp_path / "run", epochs=3, resume=True))
    assert summary.epochs == 3 and [line["epoch"] for line in metrics_lines(tmp_path / "run")] == [1, 2, 3]


def test_resume_with_fewer_epochs_than_trained_is_refused(tmp_path, motion_caches, two_epochs):
    _, train, _ = motion_caches
    run = tmp_path / "run"
    shutil.copytree(two_epochs, run)
    with pytest.raises(InputError) as refused:
        run_train_video(video_config(train, run, epochs=1, resume=True))
    message = str(refused.value)
    assert "--epochs 1" in message and "2 epochs" in message and "\n" not in message
    assert metrics_lines(run) == metrics_lines(two_epochs), "nothing of the run is touched"


@pytest.mark.parametrize("setting, value, shown", [
    ("seed", 1, "seed: 0 in the run, 1 now"),
    ("loss", "authors", "loss: None in the run, 'authors' now"),
    ("compat", "authors", "compat: 'bike' in the run, 'authors' now"),
    ("lr", 1e-3, "lr: 0.002 in the run, 0.001 now"),
    ("batch_size", 4, "batch_size: 8 in the run, 4 now"),
    ("warmup_epochs", 2.0, "warmup_epochs: 1 in the run, 2.0 now"),
    ("temporal_layers", 2, "temporal_layers: 1 in the run, 2 now"),
    ("templates", ["a video of {}"], "templates: ['{}'] in the run, ['a video of {}'] now"),
])
def test_resume_refuses_each_changed_setting_naming_it(tmp_path, motion_caches, two_epochs, setting, value, shown):
    _, train, _ = motion_caches
    run = tmp_path / "run"
    shutil.copytree(two_epochs, run)
    with pytest.raises(InputError) as refused:
        run_train_video(video_config(train, run, epochs=3, resume=True, **{setting: value}))
    message = str(refused.value)
    assert "--resume would change the run" in message and shown in message
    assert "epochs" not in message.replace("warmup_epochs", ""), "a larger --epochs is not a change refused"
    assert metrics_lines(run) == metrics_lines(two_epochs)


# ----------------------------------------------------------------------------- the CLI's advice, train-attrs


def test_the_advice_of_a_finished_run_raise_epochs_works(tmp_path, motion_caches, two_epochs):
    _, train, _ = motion_caches
    run = tmp_path / "run"
    shutil.copytree(two_epochs, run)
    args = [sys.executable, "-m", "bike_cli", "train-video", "--features", str(train), "--out", str(run),
            "--batch-size", "8", "--lr", "2e-3", "--warmup-epochs", "1", "--workers", "0", "--temporal-layers", "1",
            "--template", "{}", "--resume"]
    done = subprocess.run([*args, "--epochs", "2"], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "raise--epochstotrainon" in "".join((done.stdout + done.stderr).split())
    raised = subprocess.run([*args, "--epochs", "3"], capture_output=True, text=True, timeout=300)
    assert raised.returncode == 0, raised.stderr[-2000:]
    assert [line["epoch"] for line in metrics_lines(run)] == [1, 2, 3]


def test_train_attrs_resume_with_more_epochs_continues(tmp_path):
    from test_stage_train_attrs import CLASSES, attributes_file

    classes = tmp_path / "classes.txt"
    classes.write_text("\n".join(CLASSES) + "\n")
    attributes_file(tmp_path / "train.csv", 4, seed=0)
    cfg = dict(attributes=tmp_path / "train.csv", classes=classes, out=tmp_path / "run", model="bike-tiny",
               pretrained="none", batch_size=8, lr=3e-3, warmup_epochs=1, templates=["{}"])
    from bike_cli.config.stages import TrainAttrsConfig

    run_train_attrs(TrainAttrsConfig(**cfg, epochs=1))
    summary = run_train_attrs(TrainAttrsConfig(**cfg, epochs=2, resume=True))
    assert summary.epochs == 2 and not summary.finished_before
    assert [line["epoch"] for line in metrics_lines(tmp_path / "run")] == [1, 2]
    assert load_attrs_checkpoint(tmp_path / "run" / "last.pt").epoch == 2
