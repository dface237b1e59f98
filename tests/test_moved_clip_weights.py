"""`bike eval` and `bike predict` agree on a checkpoint whose CLIP weights file has moved (issue 27):
both load it through `models.factory.load_video_branch`, so both refuse it without `--pretrained` with
the same message, both take `--pretrained NEW` when NEW is the same file (sha256), and both refuse
another file. The real command, in subprocesses."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
import torch
from cli_run import bike, one_line

from bike_cli.config.stages import TrainVideoConfig
from bike_cli.data.class_names import read_class_names
from bike_cli.data.video_lists import read_video_list
from bike_cli.io.score_csv import read_score_csv
from bike_cli.models.clip import load_clip
from bike_cli.stages.extract import ExtractConfig, run_extraction
from bike_cli.stages.train_video import run_train_video


@pytest.fixture(scope="module")
def moved(tmp_path_factory, sample_data):
    """A run trained 1 epoch from a CLIP weights FILE (bike-tiny), its cache, a video, and where the file went."""
    root = tmp_path_factory.mktemp("moved")
    weights = root / "tiny.pt"
    torch.save(load_clip("bike-tiny", "none")[0].state_dict(), weights)
    cache = root / "train.h5"
    run_extraction(ExtractConfig(list_path=sample_data.train, classes=sample_data.classes, out=cache, frames=4,
                                 workers=0, model="bike-tiny", pretrained=str(weights)))
    run = root / "run"
    run_train_video(TrainVideoConfig(features=cache, out=run, epochs=1, batch_size=4, templates=["{}"],
                                     temporal_layers=1, frames=4, workers=0, lr=2e-3, warmup_epochs=0))
    video = read_video_list(sample_data.val, class_names=read_class_names(sample_data.classes)).entries[0].path
    (root / "elsewhere").mkdir()
    new = weights.rename(root / "elsewhere" / "tiny.pt")  # the same file, somewhere else
    other = root / "other.pt"
    torch.save({"x": torch.zeros(1)}, other)
    return run, cache, video, weights, new, other


def _eval(run: Path, cache: Path, out: Path, *extra: str) -> subprocess.CompletedProcess:
    return bike("eval", "--checkpoint", str(run), "--features", str(cache), "--out", str(out), "--workers", "0",
                *extra)


def _predict(run: Path, video: Path, *extra: str) -> subprocess.CompletedProcess:
    return bike("predict", str(video), "--checkpoint", str(run), "--lexicon", "none", "--json", *extra)


@pytest.mark.slow
def test_eval_and_predict_refuse_relocate_and_check_a_moved_clip_weights_file_alike(tmp_path, moved):
    run, cache, video, weights, new, other = moved
    refused = [_eval(run, cache, tmp_path / "a"), _predict(run, video)]
    for done in refused:
        assert done.returncode == 1
    messages = [one_line(done) for done in refused]
    assert messages[0] == messages[1]
    assert f"{weights}, which no longer exists" in messages[0] and "--pretrained" in messages[0]

    evaluated, predicted = _eval(run, cache, tmp_path / "b", "--pretrained", str(new)), \
        _predict(run, video, "--pretrained", str(new))
    assert evaluated.returncode == 0, one_line(evaluated)
    assert predicted.returncode == 0, one_line(predicted)
    assert read_score_csv(tmp_path / "b" / "video_scores.csv").scores.shape[0] > 0

    wrong = [_eval(run, cache, tmp_path / "c", "--pretrained", str(other)),
             _predict(run, video, "--pretrained", str(other))]
    messages = [one_line(done) for done in wrong]
    assert all(done.returncode == 1 for done in wrong)
    assert messages[0] == messages[1] and "sha256 differs" in messages[0]
