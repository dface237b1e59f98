"""`train-attrs`: the Attributes branch learns from attributes that correlate with the class."""

from __future__ import annotations

import re

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from bike_cli.cli.app import app
from bike_cli.config.stages import TrainAttrsConfig
from bike_cli.errors import InputError
from bike_cli.io.attributes_csv import AttributesTable, write_attributes_csv
from bike_cli.io.checkpoints import load_attrs_checkpoint
from bike_cli.stages.train_attrs import run_train_attrs

CLASSES = ["juggling", "swimming", "cooking", "climbing"]
# each class draws most of its attributes from its own pool, plus one shared distractor
POOLS = [["ball", "toss", "catch"], ["water", "pool", "splash"], ["pan", "stove", "knife"],
         ["rock", "rope", "cliff"]]
SHARED = ["person", "outdoor", "indoor", "crowd"]


def attributes_file(path, videos_per_class: int, seed: int, per_view: bool = False) -> AttributesTable:
    rng = np.random.default_rng(seed)
    ids, views, labels, attrs = [], [], [], []
    for c in range(len(CLASSES)):
        for k in range(videos_per_class):
            for view in range(2 if per_view else 1):
                phrases = list(rng.choice(POOLS[c], size=2, replace=False)) + [str(rng.choice(SHARED))]
                rng.shuffle(phrases)
                ids.append(f"{CLASSES[c]}_{k}.mp4")
                views.append(view)
                labels.append((c,))
                attrs.append(phrases)
    table = AttributesTable(
        video_ids=ids, views=views if per_view else None, labels=labels, multilabel=False, attributes=attrs,
        scores=np.tile(np.array([0.3, 0.2, 0.1], dtype=np.float32), (len(ids), 1)),
        sentences=["This is a video about " + ",".join(a) for a in attrs], top_k=3,
    )
    write_attributes_csv(path, table)
    return table


@pytest.fixture
def attrs_files(tmp_path):
    classes = tmp_path / "classes.txt"
    classes.write_text("\n".join(CLASSES) + "\n")
    attributes_file(tmp_path / "train.csv", 10, seed=0)
    attributes_file(tmp_path / "val.csv", 5, seed=1, per_view=True)
    return tmp_path / "train.csv", tmp_path / "val.csv", classes


def config(files, out, **overrides) -> TrainAttrsConfig:
    train, val, classes = files
    values = dict(attributes=train, val_attributes=val, classes=classes, out=out, model="bike-tiny",
                  pretrained="none", epochs=15, batch_size=8, lr=3e-3, warmup_epochs=1, val_every=5,
                  templates=["{}"])  # bike-tiny's random text tower: see tests/test_stage_train_video.py
    values.update(overrides)
    return TrainAttrsConfig(**values)


def test_head_tuning_learns_well_above_chance(tmp_path, attrs_files):
    summary = run_train_attrs(config(attrs_files, tmp_path / "run"))
    assert summary.best_metrics["val_top1"] >= 50.0  # 4 classes: chance 25 %
    assert (tmp_path / "run" / "sentence_embeddings_train.pt").is_file()
    ckpt = load_attrs_checkpoint(tmp_path / "run")
    assert ckpt.class_names == CLASSES and ckpt.config["tune"] == "head"
    assert any(k.startswith("sentence_fc.") for k in ckpt.state_dict)


def test_sentence_embeddings_are_cached_and_reused(tmp_path, attrs_files, monkeypatch):
    from bike_cli.stages import train_attrs as stage

    run_train_attrs(config(attrs_files, tmp_path / "run", epochs=1))
    cached = torch.load(tmp_path / "run" / "sentence_embeddings_train.pt", weights_only=True)
    assert cached["embeddings"].shape == (40, 64)
    monkeypatch.setattr(stage, "SENTENCE_BATCH", 0)  # encoding anything now raises
    run_train_attrs(config(attrs_files, tmp_path / "run", epochs=1, overwrite=True))  # reused: no encoding
    attributes_file(attrs_files[0], 10, seed=7)  # other attributes: the cache no longer matches
    with pytest.raises(ValueError):
        run_train_attrs(config(attrs_files, tmp_path / "run", epochs=1, overwrite=True))


def test_full_tuning_updates_the_text_encoder(tmp_path, attrs_files):
    run_train_attrs(config(attrs_files, tmp_path / "run", tune="full", epochs=1, lr=1e-3, clip_lr_ratio=1.0))
    ckpt = load_attrs_checkpoint(tmp_path / "run" / "last.pt")
    from bike_cli.models.clip import load_clip

    clip, _ = load_clip("bike-tiny", "none")
    original = clip.state_dict()
    changed = [k for k, v in ckpt.state_dict.items() if k.startswith("text.") and not torch.equal(v, original[k[5:]])]
    assert changed, "the attributes text encoder was fine-tuned"


def test_resume_equals_uninterrupted(tmp_path, attrs_files):
    from bike_cli.engine.training_loop import Trainer

    run_train_attrs(config(attrs_files, tmp_path / "a", epochs=3, val_attributes=None))
    finish = Trainer._end_epoch

    def interrupted(self, model, state, line, *args):
        finish(self, model, state, line, *args)
        if line["epoch"] == 1:
            raise KeyboardInterrupt

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(Trainer, "_end_epoch", interrupted)
        with pytest.raises(KeyboardInterrupt):
            run_train_attrs(config(attrs_files, tmp_path / "b", epochs=3, val_attributes=None))
    run_train_attrs(config(attrs_files, tmp_path / "b", epochs=3, val_attributes=None, resume=True))
    a = load_attrs_checkpoint(tmp_path / "a" / "last.pt").state_dict
    b = load_attrs_checkpoint(tmp_path / "b" / "last.pt").state_dict
    for key in a:
        torch.testing.assert_close(b[key], a[key], rtol=0, atol=0, msg=key)


def test_missing_model_and_classes_are_clear_errors(tmp_path, attrs_files):
    with pytest.raises(InputError, match="--model and --pretrained"):
        run_train_attrs(config(attrs_files, tmp_path / "r", model=None))
    with pytest.raises(InputError, match="--classes"):
        run_train_attrs(config(attrs_files, tmp_path / "r", classes=None))
    with pytest.raises(InputError, match="--tune"):
        run_train_attrs(config(attrs_files, tmp_path / "r", tune="lora"))


@pytest.mark.parametrize("setting, message", [
    ({"tune": "lora"}, "--tune must be one of head, full, not 'lora'"),
    ({"templates": ["{}", "no braces"]}, "prompt template 'no braces' must contain exactly one '{}'"),
])
def test_a_setting_the_branch_cannot_take_is_refused_before_anything_is_written(tmp_path, attrs_files, setting,
                                                                                 message):
    with pytest.raises(InputError, match=re.escape(message)):
        run_train_attrs(config(attrs_files, tmp_path / "r", **setting))
    assert not (tmp_path / "r").exists()


def test_cli_trains_and_reports(tmp_path, attrs_files):
    train, val, classes = attrs_files
    result = CliRunner().invoke(app, [
        "train-attrs", "--attributes", str(train), "--val-attributes", str(val), "--classes", str(classes),
        "--model", "bike-tiny", "--pretrained", "none", "--epochs", "2", "--batch-size", "8",
        "--template", "{}", "--out", str(tmp_path / "run"),
    ], env={"COLUMNS": "200"})
    assert result.exit_code == 0, result.output
    assert "best val_top1" in result.output


def test_an_unreadable_sentence_embedding_cache_is_encoded_again(tmp_path, attrs_files, caplog):
    run = tmp_path / "run"
    run.mkdir()
    (run / "sentence_embeddings_train.pt").write_bytes(b"not a torch file")
    with caplog.at_level("WARNING", logger="bike_cli"):
        run_train_attrs(config(attrs_files, run, epochs=1, val_attributes=None))
    assert any(str(run / "sentence_embeddings_train.pt") in r.getMessage() and "made again" in r.getMessage()
               for r in caplog.records)
    stored = torch.load(run / "sentence_embeddings_train.pt", weights_only=True)
    assert stored["kind"] == "bike-sentence-embeddings" and stored["embeddings"].shape == (40, 64)


def test_labels_beyond_the_class_list_are_a_clear_error(tmp_path, attrs_files):
    train, val, classes = attrs_files
    classes.write_text("\n".join(CLASSES[:3]) + "\n")  # class 3 (climbing) is no longer listed
    with pytest.raises(InputError, match=r"train.csv: video 'climbing_0.mp4' has label 3, beyond the 3 classes"):
        run_train_attrs(config(attrs_files, tmp_path / "run", epochs=1))


def _fit_spy(monkeypatch) -> dict:
    """What the real stage hands the training loop (its dataset) and its validation (the targets)."""
    from bike_cli.engine.training_loop import Trainer
    from bike_cli.stages import train_attrs as stage

    seen: dict = {"val_labels": []}
    fit, metrics = Trainer.fit, stage.metrics_over_processes

    def spy_fit(self, branch, settings, dataset, **kwargs):
        seen["dataset"] = dataset
        return fit(self, branch, settings, dataset, **kwargs)

    def spy_metrics(scores, labels):
        seen["val_labels"].append(np.concatenate(labels))
        return metrics(scores, labels)

    monkeypatch.setattr(Trainer, "fit", spy_fit)
    monkeypatch.setattr(stage, "metrics_over_processes", spy_metrics)
    return seen


def test_base_classes_train_on_the_base_class_rows_only_relabelled_by_the_base_file(tmp_path, attrs_files,
                                                                                     monkeypatch):
    from dataclasses import replace

    from bike_cli.io.attributes_csv import read_attributes_csv

    base_names = ["Cooking", "juggling"]  # another order and spelling than --classes
    base = tmp_path / "base.csv"
    base.write_text("id,name\n" + "".join(f"{i},{n}\n" for i, n in enumerate(base_names)))
    order = [CLASSES.index(n.lower()) for n in base_names]  # [2, 0]
    seen = _fit_spy(monkeypatch)
    summary = run_train_attrs(config(attrs_files, tmp_path / "run", epochs=1, val_every=1, base_classes=base))
    inputs, targets = seen["dataset"].tensors
    table = read_attributes_csv(attrs_files[0])
    rows = [r for r, labels in enumerate(table.labels) if labels[0] in order]
    assert len(rows) == 20 < len(table)  # 10 videos of each base class, none of the others
    assert targets.tolist() == [order.index(table.labels[r][0]) for r in rows]
    embeddings = torch.load(tmp_path / "run" / "sentence_embeddings_train.pt", weights_only=True)["embeddings"]
    torch.testing.assert_close(inputs, embeddings[rows])
    assert load_attrs_checkpoint(tmp_path / "run").class_names == ["cooking", "juggling"]
    val_labels = seen["val_labels"][-1]  # the validation scores base videos among the base classes
    assert sorted(set(val_labels.tolist()) - {-1}) == [0, 1] and int((val_labels >= 0).sum()) == 10
    assert "val_top1" in summary.best_metrics

    # ViFi-CLIP's layout: only the base videos, labels indexing the base file, no --classes: the same rows
    vifi = tmp_path / "fs_base_train.csv"
    write_attributes_csv(vifi, replace(table, video_ids=[table.video_ids[r] for r in rows],
                                       labels=[(order.index(table.labels[r][0]),) for r in rows],
                                       attributes=[table.attributes[r] for r in rows], scores=table.scores[rows],
                                       sentences=[table.sentences[r] for r in rows]))
    run_train_attrs(config(attrs_files, tmp_path / "vifi", epochs=1, attributes=vifi, classes=None,
                           val_attributes=None, base_classes=base))
    vifi_inputs, vifi_targets = seen["dataset"].tensors
    assert vifi_targets.tolist() == targets.tolist()
    torch.testing.assert_close(vifi_inputs, inputs, rtol=1e-5, atol=1e-6)
