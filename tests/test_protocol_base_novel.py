"""Base-to-novel (ViFi-CLIP): training on the base classes only, and `eval --protocol base-novel`'s base and
novel accuracies (each among its own classes) and their harmonic mean, from one cache or two lists."""

from __future__ import annotations

import json
from types import SimpleNamespace

import numpy as np
import pytest
from typer.testing import CliRunner

from bike_cli.cli.app import app
from bike_cli.config.stages import EvalConfig, ExtractConfig, TrainVideoConfig
from bike_cli.data.class_names import read_class_names, restrict_labels
from bike_cli.data.video_lists import read_video_list
from bike_cli.engine.evaluation import val_data
from bike_cli.errors import InputError
from bike_cli.io.checkpoints import load_video_checkpoint
from bike_cli.io.feature_cache import FeatureCache
from bike_cli.io.score_csv import read_score_csv
from bike_cli.stages.evaluate import run_eval
from bike_cli.stages.extract import run_extraction
from bike_cli.stages.train_video import run_train_video, train_dataset

# the generated dataset's classes: 0 square moving right, 1 square moving left, 2 circle moving down, 3 circle moving up
BASE = ["circle moving up", "square_moving_right"]  # another order and spelling than the cache's
NOVEL = ["square moving left", "circle moving down"]


def _class_file(path, names):
    path.write_text("id,name\n" + "".join(f"{i},{n}\n" for i, n in enumerate(names)))
    return path


@pytest.fixture(scope="module")
def split(tmp_path_factory, motion_caches):
    """Class files B and N, and a run trained on the base classes of the full training cache."""
    data, train, val = motion_caches
    root = tmp_path_factory.mktemp("b2n")
    base, novel = _class_file(root / "base.csv", BASE), _class_file(root / "novel.csv", NOVEL)
    run_train_video(TrainVideoConfig(features=train, base_classes=base, out=root / "run", epochs=2, batch_size=8,
                                     lr=2e-3, warmup_epochs=1, workers=0, templates=["{}"], temporal_layers=1))
    return data, train, val, base, novel, root / "run"


def _by_hand(table, names):
    """Top-1 (%) of the videos of `names` ranked among the columns of `names` only."""
    columns = [table.class_names.index(n.replace("_", " ")) for n in names]
    keep = np.isin(table.labels, columns)
    picked = np.array(columns)[table.scores[keep][:, columns].argmax(1)]
    return 100.0 * float(np.mean(picked == table.labels[keep])), int(keep.sum())


def test_training_on_base_classes_sees_only_base_videos_and_records_them(split):
    data, train, _, base, _, run = split
    cache = FeatureCache(train, need_rows=True)
    cfg = TrainVideoConfig(features=train, base_classes=base, workers=0)
    names = list(cache.meta.class_names)
    subset = np.array([names.index(n.replace("_", " ")) for n in BASE])
    dataset = train_dataset(cfg, cache, names, 32, subset)
    base_rows = np.flatnonzero(np.isin(cache.labels, subset))
    assert sorted(dataset.rows.tolist()) == base_rows.tolist()  # every base video, no other
    relabelled = restrict_labels(cache.labels, subset)[dataset.rows]
    assert set(relabelled.tolist()) == {0, 1}
    assert [names[i] for i in cache.labels[dataset.rows]] == [names[subset[j]] for j in relabelled]
    assert load_video_checkpoint(run / "best.pt").class_names == ["circle moving up", "square moving right"]


def test_a_list_labelled_by_the_base_file_and_one_labelled_by_the_full_file_train_on_the_same_videos(tmp_path, split):
    data, _, _, base, _, _ = split
    full = read_video_list(data.train, class_names=read_class_names(data.classes))
    order = [read_class_names(data.classes).index(n.replace("_", " ")) for n in BASE]
    vifi = tmp_path / "fs_base_s1_train.txt"  # ViFi-CLIP's layout: `video label`, labels indexing the base file
    vifi.write_text("".join(f"{e.path} {order.index(e.labels[0])}\n" for e in full.entries if e.labels[0] in order))
    by_base = train_dataset(TrainVideoConfig(videos=vifi, base_classes=base), None,
                            read_class_names(base), 32, np.arange(len(BASE)))
    by_full = train_dataset(TrainVideoConfig(videos=data.train, root=data.root, classes=data.classes,
                                             base_classes=base), None, read_class_names(data.classes), 32,
                            np.array(order))
    assert [(e.path, e.labels) for _, e in by_base.items] == [(e.path, e.labels) for _, e in by_full.items]
    assert len(by_full.items) == sum(e.labels[0] in order for e in full.entries)


def test_hm_is_the_harmonic_mean_of_base_and_novel_accuracy_each_among_its_own_classes(tmp_path, split):
    _, _, val, base, novel, run = split
    summary = run_eval(EvalConfig(out=tmp_path, checkpoint=run, features=val, protocol="base-novel",
                                  base_classes=base, novel_classes=novel, workers=0))
    table = read_score_csv(summary.files["video"])
    assert table.scores.shape[1] == 4  # every class of the cache scored; each split picks its columns
    a, base_videos = _by_hand(table, BASE)
    b, novel_videos = _by_hand(table, NOVEL)
    result = json.loads((tmp_path / "metrics.json").read_text())["metrics"]["video"]
    assert result["base_top1"] == pytest.approx(a, rel=1e-5)
    assert result["novel_top1"] == pytest.approx(b, rel=1e-5)
    assert result["HM"] == pytest.approx(2 * a * b / (a + b), rel=1e-5)
    assert [(s["split"], s["classes"], s["videos"]) for s in result["splits"]] == [
        ("base", 2, base_videos), ("novel", 2, novel_videos)]


def test_vifi_clip_base_val_and_novel_val_lists_give_the_one_cache_figures(tmp_path, split):
    data, _, val, base, novel, run = split
    names = read_class_names(data.classes)
    entries = read_video_list(data.val, class_names=names).entries
    caches = {}
    for which, subset in (("base", BASE), ("novel", NOVEL)):  # `video label`, labels indexing B (or N)
        order = [names.index(n.replace("_", " ")) for n in subset]
        listed = tmp_path / f"{which}_val.txt"
        listed.write_text("".join(f"{e.path} {order.index(e.labels[0])}\n" for e in entries if e.labels[0] in order))
        caches[which] = tmp_path / f"{which}_val.h5"
        run_extraction(ExtractConfig(list_path=listed, classes=base if which == "base" else novel,
                                     out=caches[which], frames=8, workers=0))
    one = run_eval(EvalConfig(out=tmp_path / "one", checkpoint=run, features=val, protocol="base-novel",
                              base_classes=base, novel_classes=novel, workers=0)).metrics["video"]
    two = run_eval(EvalConfig(out=tmp_path / "two", checkpoint=run, features=caches["base"],
                              novel_features=caches["novel"], protocol="base-novel", base_classes=base,
                              novel_classes=novel, workers=0))
    result = two.metrics["video"]
    novel_table = read_score_csv(two.files["novel_video"])
    assert novel_table.scores.shape[1] == 2  # scored among the novel classes only
    assert result["novel_top1"] == pytest.approx(_by_hand(novel_table, NOVEL)[0], rel=1e-5)
    for key in ("base_top1", "novel_top1", "HM"):  # one view: the same ranking as the one-cache columns
        assert result[key] == pytest.approx(one[key], rel=1e-5)


def test_a_base_class_missing_from_the_cache_is_one_line_naming_it(tmp_path, split):
    _, _, val, _, novel, run = split
    wrong = _class_file(tmp_path / "wrong.csv", ["circle moving up", "triangle moving sideways"])
    with pytest.raises(InputError, match="triangle moving sideways"):
        run_eval(EvalConfig(out=tmp_path / "e", checkpoint=run, features=val, protocol="base-novel",
                            base_classes=wrong, novel_classes=novel, workers=0))
    with pytest.raises(InputError, match="--base-classes .*triangle moving sideways"):
        run_train_video(TrainVideoConfig(features=split[1], base_classes=wrong, out=tmp_path / "r", epochs=1,
                                         workers=0, templates=["{}"], temporal_layers=1))


def test_overlapping_base_and_novel_classes_are_one_line_before_anything_loads(tmp_path, split):
    _, _, val, base, _, run = split
    overlap = _class_file(tmp_path / "overlap.csv", ["square moving left", "Circle_Moving_Up"])
    result = CliRunner().invoke(app, ["eval", "--features", str(val), "--checkpoint", str(run), "--out",
                                      str(tmp_path / "e"), "--protocol", "base-novel", "--base-classes", str(base),
                                      "--novel-classes", str(overlap)])
    assert result.exit_code != 0
    message = result.output.strip()
    assert "share 1 classes" in message and "'circle moving up'" in message and len(message.splitlines()) == 1
    assert not (tmp_path / "e").exists()


def test_base_novel_options_are_refused_without_the_protocol(tmp_path, split):
    _, _, val, base, novel, _ = split
    with pytest.raises(InputError, match="--base-classes belongs to --protocol base-novel"):
        run_eval(EvalConfig(out=tmp_path, features=val, base_classes=base, novel_classes=novel))
    with pytest.raises(InputError, match="needs --base-classes B and --novel-classes N"):
        run_eval(EvalConfig(out=tmp_path, features=val, protocol="base-novel", base_classes=base))


def test_run_protocol_base_novel_on_a_score_table_by_hand():
    from bike_cli.eval.protocols import run_protocol
    from bike_cli.io.score_csv import ScoreTable

    scores = np.array([[0.1, 0.5, 0.4, 0.0],  # label 0: among {0, 2} 2 wins (wrong), overall 1 wins
                       [0.1, 0.2, 0.6, 0.1],  # label 2: right
                       [0.7, 0.2, 0.0, 0.1],  # label 1: among {1, 3} 1 wins (right) though 0 is highest
                       [0.2, 0.3, 0.1, 0.4]], dtype=np.float32)  # label 3: right
    table = ScoreTable(["a", "b", "c", "d"], np.array([0, 2, 1, 3]), scores, ["w", "x", "y", "z"])
    result = run_protocol("base-novel", table, base_classes=["w", "y"], novel_classes=["x", "z"])
    assert (result["base_top1"], result["novel_top1"]) == (50.0, 100.0)
    assert result["HM"] == pytest.approx(2 * 50 * 100 / 150)
    with pytest.raises(InputError, match="needs --novel-classes"):
        run_protocol("base-novel", table, base_classes=["w"])


def test_validation_on_a_cache_of_every_class_scores_the_base_videos_among_the_base_classes(tmp_path, split):
    data, train, val, base, novel, _ = split
    run = tmp_path / "run"
    run_train_video(TrainVideoConfig(features=train, val_features=val, base_classes=base, out=run, epochs=1,
                                     batch_size=8, lr=2e-3, warmup_epochs=1, workers=0, templates=["{}"],
                                     temporal_layers=1))
    line = json.loads((run / "metrics.jsonl").read_text().splitlines()[-1])
    cache = FeatureCache(val, need_rows=True)
    names = list(cache.meta.class_names)
    subset = np.array([names.index(n.replace("_", " ")) for n in BASE])
    shares = [val_data(TrainVideoConfig(features=train, val_features=val), names, None, rank, 2, subset)
              for rank in range(2)]
    rows = np.concatenate([share.loader.source.rows for share in shares])
    assert sorted(rows.tolist()) == np.flatnonzero(np.isin(cache.labels, subset)).tolist()  # base videos only
    relabelled = shares[0].loader.source.labels[rows]
    assert [names[subset[j]] for j in relabelled] == [names[i] for i in cache.labels[rows]]
    # one view: the top-1 among the base classes is base-novel's base accuracy of the same weights
    base_top1 = run_eval(EvalConfig(out=tmp_path / "e", checkpoint=run / "last.pt", features=val,
                                    protocol="base-novel", base_classes=base, novel_classes=novel,
                                    workers=0)).metrics["video"]["base_top1"]
    assert line["val_top1"] == pytest.approx(base_top1, rel=1e-5)


def test_validation_on_a_video_list_of_every_class_keeps_the_base_videos_relabelled(split):
    data, _, _, base, _, _ = split
    names = read_class_names(data.classes)
    subset = np.array([names.index(n.replace("_", " ")) for n in BASE])
    spec = SimpleNamespace(image_size=32, resize_mode="shortest")
    cfg = TrainVideoConfig(videos=data.train, val_videos=data.val, val_root=data.root, base_classes=base, workers=0)
    kept = [e for rank in range(2) for _, e in val_data(cfg, names, spec, rank, 2, subset).loader.dataset.items]
    listed = read_video_list(data.val, root=data.root, class_names=names).entries
    assert sorted(e.path for e in kept) == sorted(e.path for e in listed if e.labels[0] in subset)
    by_path = {e.path: e.labels for e in listed}
    assert all(by_path[e.path] == (subset[e.labels[0]],) for e in kept)
