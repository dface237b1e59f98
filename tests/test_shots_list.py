"""train-video --shots-list: train on exactly the videos a published K-shot list names."""

from __future__ import annotations

import pytest

from bike_cli.config.stages import TrainVideoConfig
from bike_cli.data.class_names import read_class_names
from bike_cli.data.video_lists import read_video_list, video_stem
from bike_cli.errors import InputError
from bike_cli.io.feature_cache import FeatureCache
from bike_cli.stages.train_video import run_train_video, train_dataset


def vifi_shot_list(path, video_ids, per_class=2):
    """A ViFi-CLIP style `train1_few_shot_K.txt`: `name.avi label`, K videos a class (labels: ViFi's own
    numbering, unused by bike). Returns the ids chosen."""
    by_class: dict[str, list[str]] = {}
    for vid in video_ids:
        by_class.setdefault(video_stem(vid).rsplit("_", 1)[0], []).append(vid)
    chosen = [vid for videos in by_class.values() for vid in videos[-per_class:]]
    path.write_text("".join(f"{video_stem(vid)}.avi {i // per_class}\n" for i, vid in enumerate(chosen)))
    return chosen


def test_a_cache_run_trains_on_exactly_the_listed_videos(tmp_path, motion_caches):
    _, train, _ = motion_caches
    cache = FeatureCache(train)
    listed = vifi_shot_list(tmp_path / "train1_few_shot_2.txt", cache.video_ids)
    cfg = TrainVideoConfig(features=train, out=tmp_path / "run", shots_list=tmp_path / "train1_few_shot_2.txt")
    dataset = train_dataset(cfg, cache, list(cache.meta.class_names), 0)
    assert sorted(cache.video_ids[r] for r in dataset.rows) == sorted(listed)
    assert len(dataset) == 2 * len(cache.meta.class_names)


def test_a_video_run_trains_on_exactly_the_listed_videos(tmp_path, sample_data):
    ids = [e.video_id for e in read_video_list(sample_data.train, class_names=read_class_names(sample_data.classes))]
    listed = vifi_shot_list(tmp_path / "shots.txt", ids, per_class=1)
    cfg = TrainVideoConfig(videos=sample_data.train, classes=sample_data.classes, out=tmp_path / "run",
                           shots_list=tmp_path / "shots.txt", frames=4)
    dataset = train_dataset(cfg, None, read_class_names(sample_data.classes), 32)
    assert sorted(entry.video_id for _, entry in dataset.items) == sorted(listed)


def test_a_listed_video_missing_from_the_training_cache_is_one_error_naming_it(tmp_path, motion_caches):
    _, train, _ = motion_caches
    shots = tmp_path / "train1_few_shot_2.txt"
    shots.write_text(f"{video_stem(FeatureCache(train).video_ids[0])}.avi 0\nv_NotExtracted_g01_c01.avi 3\n")
    with pytest.raises(InputError, match=rf"--shots-list {shots}: video 'v_NotExtracted_g01_c01.avi' is not in "
                                         rf"the cache {train}"):
        run_train_video(TrainVideoConfig(features=train, out=tmp_path / "run", shots_list=shots, epochs=1,
                                         workers=0))


def test_shots_and_shots_list_together_are_an_error(tmp_path, motion_caches):
    _, train, _ = motion_caches
    shots = tmp_path / "shots.txt"
    shots.write_text("a.avi 0\n")
    with pytest.raises(InputError, match="at most one of --shots .* and --shots-list"):
        run_train_video(TrainVideoConfig(features=train, out=tmp_path / "run", shots=2, shots_list=shots))


def test_a_shot_list_run_trains_and_records_its_list(tmp_path, motion_caches):
    _, train, _ = motion_caches
    shots = tmp_path / "shots.txt"
    vifi_shot_list(shots, FeatureCache(train).video_ids, per_class=1)
    summary = run_train_video(TrainVideoConfig(features=train, out=tmp_path / "run", shots_list=shots, epochs=1,
                                               batch_size=4, workers=0, templates=["{}"], temporal_layers=1))
    assert summary is not None
    assert str(shots) in (tmp_path / "run" / "config.yaml").read_text()
