"""`train-video --average-last N` (issue 29, item 5): averaged.pt is the mean of the last N epochs'
weights, a resumed run writes the same file, a longer --epochs moves the window, and eval and predict
read it as an ordinary checkpoint."""

from __future__ import annotations

import json
import subprocess
import sys
from dataclasses import replace

import pytest
import torch

from bike_cli.config.stages import PredictConfig, TrainVideoConfig
from bike_cli.data.class_names import read_class_names
from bike_cli.data.video_lists import read_video_list
from bike_cli.errors import InputError
from bike_cli.io import train_state
from bike_cli.io.checkpoints import load_video_checkpoint
from bike_cli.progress import Progress
from bike_cli.stages.predict import run_predict
from bike_cli.stages.train_video import run_train_video


def config(cache, out, **changes) -> TrainVideoConfig:
    return replace(TrainVideoConfig(features=cache, out=out, epochs=3, batch_size=4, frames=4, lr=2e-2,
                                    warmup_epochs=0, workers=0, templates=["{}"], temporal_layers=1,
                                    average_last=2), **changes)


def averaging_files(run) -> list[str]:
    return sorted(p.name for p in (run / "checkpoints" / "averaging").iterdir())


@pytest.fixture(scope="module")
def straight(tmp_path_factory, tiny_cache):
    """An uninterrupted 3-epoch run with --average-last 2."""
    run = tmp_path_factory.mktemp("average") / "run"
    run_train_video(config(tiny_cache, run))
    return run


def test_averaged_weights_are_the_mean_of_the_last_epochs(straight):
    averaged = load_video_checkpoint(straight / "averaged.pt")
    epochs = [train_state.load_state(straight / "checkpoints" / f"epoch_{e:04d}", 0)["model"] for e in (2, 3)]
    assert averaged.state_dict.keys() == epochs[0].keys()
    changed = [k for k in epochs[0] if not torch.equal(epochs[0][k], epochs[1][k])]
    assert changed, "the two epochs' weights differ, so their mean is a test"
    for key, value in averaged.state_dict.items():
        torch.testing.assert_close(value, (epochs[0][key] + epochs[1][key]) / 2, rtol=1e-5, atol=1e-7, msg=key)
    assert averaged.origin == {"method": "average", "epochs": [2, 3]}
    last = load_video_checkpoint(straight / "last.pt")
    assert (averaged.epoch, averaged.class_names, averaged.model_args) == (3, last.class_names, last.model_args)
    assert averaging_files(straight) == ["epoch_0002.pt", "epoch_0003.pt"]  # epoch 1 was never in the window


class StopAtEpoch3(Progress):
    """The progress of each epoch; the third one's start stops the run, as Ctrl-C would."""

    def start(self, total: int, description: str = "") -> None:
        if description == "epoch 3":
            raise KeyboardInterrupt
        super().start(total, description)


def test_a_resumed_run_writes_the_same_averaged_checkpoint(tmp_path, tiny_cache, straight):
    run = tmp_path / "run"
    with pytest.raises(KeyboardInterrupt):
        run_train_video(config(tiny_cache, run), progress_factory=StopAtEpoch3)
    assert not (run / "averaged.pt").exists() and averaging_files(run) == ["epoch_0002.pt"]
    run_train_video(config(tiny_cache, run, resume=True))
    resumed, uninterrupted = (load_video_checkpoint(r / "averaged.pt") for r in (run, straight))
    assert resumed.origin == uninterrupted.origin
    for key, value in uninterrupted.state_dict.items():
        assert torch.equal(resumed.state_dict[key], value), key


def test_a_longer_epochs_on_resume_averages_the_new_last_epochs(tmp_path, tiny_cache):
    run = tmp_path / "run"
    run_train_video(config(tiny_cache, run, epochs=2))
    assert load_video_checkpoint(run / "averaged.pt").origin["epochs"] == [1, 2]
    run_train_video(config(tiny_cache, run, epochs=3, resume=True))
    assert load_video_checkpoint(run / "averaged.pt").origin["epochs"] == [2, 3]
    assert averaging_files(run) == ["epoch_0002.pt", "epoch_0003.pt"]


@pytest.mark.parametrize("n, message", [(0, "--average-last must be at least 1, not 0"),
                                        (4, "--average-last 4 must be between 1 and --epochs 3")])
def test_average_last_outside_1_to_epochs_is_refused(tmp_path, tiny_cache, n, message):
    with pytest.raises(InputError, match=message):
        run_train_video(config(tiny_cache, tmp_path / "run", average_last=n))
    assert not (tmp_path / "run").exists()


@pytest.mark.slow
def test_eval_and_predict_read_the_averaged_checkpoint(tmp_path, straight, tiny_cache, sample_data):
    averaged = straight / "averaged.pt"
    done = subprocess.run([sys.executable, "-m", "bike_cli", "eval", "--checkpoint", str(averaged), "--features",
                           str(tiny_cache), "--out", str(tmp_path / "eval"), "--workers", "0"],
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    assert json.loads((tmp_path / "eval" / "metrics.json").read_text())
    video = read_video_list(sample_data.train, class_names=read_class_names(sample_data.classes)).entries[0].path
    (p,) = run_predict(PredictConfig(videos=[video], checkpoint=averaged, lexicon="none")).predictions
    assert p.probabilities.sum() == pytest.approx(1.0, abs=1e-5)
