"""`train-video`: learning, resume, few-shot, end-to-end mode, initialisation from checkpoints."""

from __future__ import annotations

import json

import pytest
import torch

from bike_cli.config.stages import TrainVideoConfig
from bike_cli.engine.training_loop import EpochBatches, Trainer
from bike_cli.errors import InputError
from bike_cli.io.checkpoints import load_video_checkpoint
from bike_cli.models.heads import TemporalTransformer
from bike_cli.stages.train_video import run_train_video

# bike-tiny's text tower is random: with the paper's prompt prefix every class embedding is nearly the
# same vector, so the tests prompt with the bare class name (real CLIP does not need this).
BARE = ["{}"]


def fast_config(train, val, out, **overrides) -> TrainVideoConfig:
    values = dict(features=train, val_features=val, out=out, epochs=4, batch_size=8, lr=2e-3,
                  warmup_epochs=1, workers=0, templates=BARE, temporal_layers=2)
    values.update(overrides)
    return TrainVideoConfig(**values)


def test_learns_motion_classes_well_above_chance(tmp_path, motion_caches):
    _, train, val = motion_caches
    summary = run_train_video(fast_config(train, val, tmp_path / "run", epochs=20, temporal_layers=6, val_every=5))
    assert summary.best_metrics["val_top1"] >= 50.0  # 4 classes: chance is 25 %
    lines = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert [line["epoch"] for line in lines] == list(range(1, 21))
    assert lines[-1]["train_loss"] < lines[0]["train_loss"]


def test_resume_equals_uninterrupted_run(tmp_path, motion_caches, monkeypatch):
    _, train, val = motion_caches
    straight = run_train_video(fast_config(train, None, tmp_path / "a", epochs=4))
    finish_epoch = Trainer._end_epoch

    def interrupted(self, model, state, line, *args):  # Ctrl-C right after epoch 2 is saved
        finish_epoch(self, model, state, line, *args)
        if line["epoch"] == 2:
            raise KeyboardInterrupt

    monkeypatch.setattr(Trainer, "_end_epoch", interrupted)
    with pytest.raises(KeyboardInterrupt):
        run_train_video(fast_config(train, None, tmp_path / "b", epochs=4))
    monkeypatch.undo()
    resumed = run_train_video(fast_config(train, None, tmp_path / "b", epochs=4, resume=True))
    a = load_video_checkpoint(tmp_path / "a" / "last.pt")
    b = load_video_checkpoint(tmp_path / "b" / "last.pt")
    assert a.epoch == b.epoch == 4 and straight.steps == resumed.steps
    for key, value in a.state_dict.items():
        torch.testing.assert_close(b.state_dict[key], value, rtol=0, atol=0, msg=key)


def test_checkpoint_records_settings_and_classes(tmp_path, motion_caches):
    data, train, val = motion_caches
    run_train_video(fast_config(train, val, tmp_path / "run", epochs=1, head="vcs", temporal="none"))
    ckpt = load_video_checkpoint(tmp_path / "run")
    assert ckpt.config["head"] == "vcs" and ckpt.clip["model_name"] == "bike-tiny"
    assert ckpt.class_names[0] == "square moving right" and len(ckpt.class_names) == 4
    assert set(ckpt.state_dict) == {"logit_scale.log_scale"}  # no transformer: only the scale learns
    assert (tmp_path / "run" / "config.yaml").read_text().startswith("#")


def test_few_shot_trains_on_k_per_class(tmp_path, motion_caches):
    _, train, _ = motion_caches
    summary = run_train_video(fast_config(train, None, tmp_path / "run", epochs=1, shots=2, batch_size=4))
    assert summary.steps == 2  # 4 classes x 2 shots = 8 videos in batches of 4


def test_epoch_batches_are_seeded_equal_sized_and_split_over_processes():
    one = EpochBatches(10, 4, rank=0, world=1, seed=3)
    assert [len(b) for b in one] == [4, 4, 2]
    two = [EpochBatches(10, 4, rank=r, world=2, seed=3) for r in (0, 1)]
    for full, b0, b1 in zip(one, *two):
        assert sorted(b0 + b1) == sorted(full) and len(b0) == len(b1)
    one.set_epoch(1)
    assert list(one) != list(EpochBatches(10, 4, rank=0, world=1, seed=3))
    assert [len(b) for b in EpochBatches(11, 4, rank=0, world=2, seed=0)] == [2, 2, 1]  # 11 = 4+4+2 (+1 dropped)


def test_cache_of_another_model_is_a_clear_error(tmp_path, motion_caches):
    _, train, _ = motion_caches
    with pytest.raises(InputError, match="ViT-B-32 differs from bike-tiny"):
        run_train_video(fast_config(train, None, tmp_path / "run", model="ViT-B-32"))
    with pytest.raises(InputError, match="exactly one of --features"):
        run_train_video(fast_config(None, None, tmp_path / "run"))


def test_end_to_end_from_videos_updates_the_visual_encoder(tmp_path, sample_data):
    cfg = TrainVideoConfig(videos=sample_data.train, val_videos=sample_data.val, classes=sample_data.classes,
                           model="bike-tiny", pretrained="none", out=tmp_path / "e2e", epochs=1, batch_size=6,
                           frames=4, lr=1e-3, workers=0, templates=BARE, temporal_layers=1)
    summary = run_train_video(cfg)
    ckpt = load_video_checkpoint(tmp_path / "e2e" / "last.pt")
    from bike_cli.models.clip import load_clip

    start, _ = load_clip("bike-tiny", "none")
    before = start.visual.state_dict()
    changed = [k for k, v in before.items() if not torch.equal(ckpt.state_dict[f"visual.{k}"], v)]
    assert changed, "the visual encoder was fine-tuned"
    assert "val_top1" in summary.best_metrics


def test_init_from_the_authors_checkpoint_layout(tmp_path, motion_caches):
    _, train, _ = motion_caches
    from bike_cli.models.clip import load_clip

    clip, _ = load_clip("bike-tiny", "none")
    fusion = TemporalTransformer(64, layers=2, heads=1)
    torch.manual_seed(11)
    for p in fusion.parameters():
        torch.nn.init.normal_(p, std=0.5)
    path = tmp_path / "bike_authors.pt"
    torch.save({"epoch": 29, "model_state_dict": {f"module.{k}": v for k, v in clip.state_dict().items()},
                "fusion_model_state_dict": {f"module.{k}": v for k, v in fusion.state_dict().items()}}, path)
    run_train_video(fast_config(train, None, tmp_path / "run", epochs=1, lr=1e-12, init_from=path,
                                warmup_epochs=0))
    trained = load_video_checkpoint(tmp_path / "run").state_dict
    for key, value in fusion.state_dict().items():
        torch.testing.assert_close(trained[f"head.temporal.{key}"], value, atol=1e-6, rtol=0)
    with pytest.raises(InputError, match="does not fit"):
        run_train_video(fast_config(train, None, tmp_path / "run2", epochs=1, init_from=path, temporal_layers=3))


def test_samples_per_epoch_cycles_a_few_shot_set(tmp_path, motion_caches):
    _, train, _ = motion_caches
    summary = run_train_video(fast_config(train, None, tmp_path / "run", epochs=1, shots=1, batch_size=4,
                                          samples_per_epoch=24))
    assert summary.steps == 6  # 4 one-shot videos cycled to 24 samples, in batches of 4


def test_repeated_dataset_gives_each_pass_its_own_epoch():
    from bike_cli.engine.training_loop import RepeatedDataset

    class Recorder:
        epoch = -1

        def set_epoch(self, epoch):
            self.epoch = epoch

        def __len__(self):
            return 3

        def __getitem__(self, i):
            return i, self.epoch

    data = RepeatedDataset(Recorder(), 7)
    data.set_epoch(2)
    assert len(data) == 7 and data.passes == 3
    assert [data[i] for i in range(7)] == [(0, 6), (1, 6), (2, 6), (0, 7), (1, 7), (2, 7), (0, 8)]
