"""`train-video --init-from` a run of another CLIP says the models differ, naming both (the checkpoint's record
and where this run's model came from), instead of guessing at head/temporal settings; a run of the same model
with other branch settings names the settings that differ."""

from __future__ import annotations

from functools import partial

import numpy as np
import pytest
from cli_run import bike as run_bike
from test_stage_gen_attributes import write_cache

from bike_cli.config.stages import TrainVideoConfig
from bike_cli.errors import InputError
from bike_cli.stages.train_video import run_train_video

FAST = dict(epochs=1, batch_size=4, workers=0, frames=4, temporal_layers=1, templates=["{}"])


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory, tiny_cache):
    """A one-epoch bike-tiny run (64-d) of the tiny cache."""
    run = tmp_path_factory.mktemp("tiny_run") / "run"
    run_train_video(TrainVideoConfig(features=tiny_cache, out=run, **FAST))
    return run


bike = partial(run_bike, timeout=300, columns=400)


@pytest.mark.slow
@pytest.mark.parametrize("model, dim, size", [("ViT-S-32-alt", 256, 224), ("bike-tiny-text", 64, 64)])
def test_init_from_a_run_of_another_model_names_both_models(tmp_path, tiny_run, model, dim, size):
    rng = np.random.default_rng(0)
    other = write_cache(tmp_path / "other.h5", rng.standard_normal((4, 1, 4, dim)), np.arange(4), class_names="abcd",
                        model=model, image_size=size)
    done = bike("train-video", "--features", str(other), "--init-from", str(tiny_run), "--out", str(tmp_path / "r"),
                "--epochs", "1", "--batch-size", "4", "--workers", "0", "--frames", "4", "--temporal-layers", "1",
                "--template", "{}")
    text = " ".join(done.stderr.split())
    assert done.returncode == 1, done.stderr[-3000:]
    assert (f"--init-from {tiny_run} is a Video branch of bike-tiny (64-d, as its checkpoint records), and this "
            f"run trains {model} ({dim}-d, the model that made {other}): the models differ") in text
    assert "head/temporal settings differ?" not in text and "Traceback" not in text
    assert not (tmp_path / "r" / "last.pt").exists()


def test_init_from_a_run_with_other_branch_settings_names_them(tmp_path, tiny_cache, tiny_run):
    with pytest.raises(InputError, match=r"does not fit this Video branch \(--temporal-layers 1 in the checkpoint, "
                                         r"2 now\)"):
        run_train_video(TrainVideoConfig(features=tiny_cache, out=tmp_path / "r", init_from=tiny_run,
                                         **{**FAST, "temporal_layers": 2}))


def test_init_from_a_run_of_the_same_model_starts_from_it(tmp_path, tiny_cache, tiny_run):
    summary = run_train_video(TrainVideoConfig(features=tiny_cache, out=tmp_path / "r", init_from=tiny_run, **FAST))
    assert summary.epochs == 1
