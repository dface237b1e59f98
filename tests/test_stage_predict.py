"""`predict`: zero-shot and checkpoint inference on single videos, --json, --explain, bad videos."""

from __future__ import annotations

import csv
import json
import os
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch
from matplotlib.image import imread
from typer.testing import CliRunner

from bike_cli.cli.app import app
from bike_cli.config.stages import PredictConfig, TrainVideoConfig, parse_class_names
from bike_cli.data.synthetic import SAMPLE_CLASSES
from bike_cli.errors import DecodeError, InputError, ModelLoadError
from bike_cli.io.checkpoints import VIDEO_KIND, load_video_checkpoint, save_checkpoint
from bike_cli.io.feature_cache import FeatureCache
from bike_cli.io.identity import file_sha256
from bike_cli.models.clip import load_clip
from bike_cli.report.figures import draw_explanation
from bike_cli.stages.predict import check_options, load_predictor, resolve_lexicon, run_predict
from bike_cli.stages.train_video import run_train_video

runner = CliRunner()
PHRASES = ("a red square", "a blue circle", "moving to the left", "moving up", "a grey background", "a person")
REAL_CLASSES = ["arm wrestling", "basketball", "cleaning pool", "flipping pancake", "apply eye makeup", "dancing"]


@pytest.fixture(scope="module")
def lexicon(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("lexicon") / "phrases.txt"
    path.write_text("\n".join(PHRASES) + "\n")
    return path


@pytest.fixture(scope="module")
def trained(tmp_path_factory, motion_caches):
    """A Video-branch run (1 epoch, VCS + 1-layer transformer) and a generated val video with its cache row."""
    data, train, val = motion_caches
    out = tmp_path_factory.mktemp("predict") / "run"
    run_train_video(TrainVideoConfig(features=train, out=out, epochs=1, batch_size=8, templates=["{}"],
                                     temporal_layers=1, workers=0, lr=2e-3, warmup_epochs=0))
    with open(data.val, newline="") as f:
        rel = next(csv.DictReader(f))["path"]
    cache = FeatureCache(val)
    with cache:
        features = cache.embeddings(cache.video_ids.index(rel))  # [V=1, T, D]
    return out, data.root / rel, torch.from_numpy(features[0]).float()


def zero_shot(videos: list[Path], lexicon: Path | str, **overrides) -> PredictConfig:
    values = dict(videos=videos, model="bike-tiny", pretrained="none", class_names=REAL_CLASSES,
                  lexicon=str(lexicon), top_k=3)
    values.update(overrides)
    return PredictConfig(**values)


def test_zero_shot_on_a_real_clip_gives_probabilities_top5_saliency_and_attributes(shared_clips, lexicon):
    video = shared_clips / "arm_wrestling.mp4"  # 280 frames
    (p,) = run_predict(zero_shot([video], lexicon)).predictions
    assert p.probabilities.shape == (len(REAL_CLASSES),)
    assert p.probabilities.sum() == pytest.approx(1.0, abs=1e-5)
    probs = [prob for _, prob in p.top]
    assert len(p.top) == 5 and probs == sorted(probs, reverse=True)
    assert probs == pytest.approx(sorted(p.probabilities.tolist(), reverse=True)[:5])
    assert p.predicted == REAL_CLASSES[int(p.probabilities.argmax())]
    assert p.saliency_method == "vcs" and len(p.saliency) == 8
    assert sum(p.saliency) == pytest.approx(1.0, abs=1e-5) and min(p.saliency) >= 0
    assert len(p.frame_indices) == 8 and p.frame_indices == sorted(set(p.frame_indices))
    assert 0 <= p.frame_indices[0] and p.frame_indices[-1] < 280
    assert len(set(p.attributes)) == 3 and set(p.attributes) <= set(PHRASES)
    assert p.attribute_scores == sorted(p.attribute_scores, reverse=True)
    assert all(a in p.sentence for a in p.attributes)
    assert p.thumbnails.shape == (8, 64, 64, 3) and p.thumbnails.dtype == np.uint8


def test_mean_head_reports_uniform_saliency(trained, lexicon):
    _, video, _ = trained
    (p,) = run_predict(zero_shot([video], "none", head="mean", frames=6)).predictions
    assert p.saliency_method == "uniform" and p.saliency == pytest.approx([1 / 6] * 6)
    assert p.attributes == [] and p.sentence is None


def test_checkpoint_prediction_uses_the_trained_branch_and_the_extracted_features(trained, lexicon):
    run, video, cached = trained
    cfg = PredictConfig(videos=[video], checkpoint=run, lexicon=str(lexicon))
    predictor = load_predictor(cfg)
    ckpt = load_video_checkpoint(run)
    assert predictor.class_names == list(SAMPLE_CLASSES) and predictor.frames == 8
    own = predictor.branch.state_dict()
    for key, value in ckpt.state_dict.items():
        torch.testing.assert_close(own[key], value, rtol=0, atol=0, msg=key)
    # the same frames and embeddings as extract-features stored (fp16 there)
    torch.testing.assert_close(predictor.encode_video(video).embeddings, cached, rtol=1e-2, atol=1e-2)
    (p,) = run_predict(cfg).predictions
    assert p.probabilities.sum() == pytest.approx(1.0, abs=1e-5) and len(p.top) == len(SAMPLE_CLASSES)
    assert sum(p.saliency) == pytest.approx(1.0, abs=1e-5) and len(p.saliency) == 8


def test_checkpoint_whose_clip_weights_file_moved(tmp_path, trained, lexicon):
    run, video, _ = trained
    weights = tmp_path / "tiny.pt"
    torch.save(load_clip("bike-tiny", "none")[0].state_dict(), weights)
    ckpt = load_video_checkpoint(run)
    ckpt.clip = dict(ckpt.clip, pretrained=str(weights), checkpoint_sha256=file_sha256(weights))
    path = save_checkpoint(tmp_path / "moved.pt", ckpt, VIDEO_KIND)
    cfg = PredictConfig(videos=[video], checkpoint=path, lexicon="none")
    before = run_predict(cfg).predictions[0].probabilities
    moved = weights.rename(tmp_path / "elsewhere.pt")
    with pytest.raises(ModelLoadError, match="tiny.pt, which no longer exists"):
        run_predict(cfg)
    after = run_predict(replace(cfg, pretrained=str(moved))).predictions[0].probabilities
    np.testing.assert_allclose(after, before, rtol=0, atol=1e-6)
    other = tmp_path / "other.pt"
    torch.save({"x": torch.zeros(1)}, other)
    with pytest.raises(ModelLoadError, match="sha256 differs"):
        run_predict(replace(cfg, pretrained=str(other)))


def test_cli_json_is_the_only_thing_on_stdout(trained, lexicon):
    run, video, _ = trained
    result = runner.invoke(app, ["predict", str(video), "--checkpoint", str(run), "--lexicon", str(lexicon),
                                 "--top-k", "2", "--json"])
    assert result.exit_code == 0, result.output
    doc = json.loads(result.stdout)
    (record,) = doc["videos"]
    assert set(record) >= {"video", "top5", "attributes", "sentence", "saliency", "frame_indices"}
    assert record["video"] == str(video) and doc["skipped"] == []
    assert [set(t) for t in record["top5"]] == [{"class", "prob"}] * len(SAMPLE_CLASSES)
    assert {t["class"] for t in record["top5"]} == set(SAMPLE_CLASSES)
    assert len(record["attributes"]) == 2 and len(record["saliency"]) == len(record["frame_indices"]) == 8
    assert "INFO" in result.stderr and "INFO" not in result.stdout


def test_cli_table_names_the_prediction(trained, lexicon):
    run, video, _ = trained
    result = runner.invoke(app, ["predict", str(video), "--checkpoint", str(run), "--lexicon", str(lexicon)],
                           env={"COLUMNS": "200"})
    assert result.exit_code == 0, result.output
    assert sum(f"1. {name}" in result.stdout for name in SAMPLE_CLASSES) == 1
    assert "saliency (VCS)" in result.stdout and "attributes" in result.stdout


def test_explain_draws_one_row_per_video_as_a_valid_png(tmp_path, trained, lexicon):
    _, video, _ = trained
    one, two = tmp_path / "one.png", tmp_path / "figs" / "two.png"
    result = run_predict(zero_shot([video], lexicon, explain=one))
    assert result.explain == one
    draw_explanation(result.predictions * 2, two)
    image_one, image_two = imread(one), imread(two)  # imread fails on an invalid PNG
    assert image_one.ndim == 3 and image_one.shape[2] in (3, 4)
    assert image_one.shape[1] >= 600 and image_one.shape[0] >= 200
    assert image_two.shape[0] > 1.8 * image_one.shape[0]  # a second row
    assert image_one.std() > 0.05  # not blank
    assert sorted(p.name for p in tmp_path.rglob("*") if p.is_file()) == ["one.png", "two.png"]


def test_missing_video_exits_1_and_names_it(tmp_path, trained):
    run, video, _ = trained
    missing = tmp_path / "no_such_video.mp4"
    result = runner.invoke(app, ["predict", str(video), str(missing), "--checkpoint", str(run), "--json",
                                 "--lexicon", "none", "--explain", str(tmp_path / "x.png")])
    assert result.exit_code == 1
    assert str(missing) in result.stderr and result.stdout == ""
    assert not (tmp_path / "x.png").exists()


def test_skip_bad_skips_missing_and_corrupt_videos(tmp_path, trained):
    run, video, _ = trained
    missing, corrupt = tmp_path / "gone.mp4", tmp_path / "corrupt.mp4"
    corrupt.write_bytes(b"not a video" * 100)
    args = ["predict", str(missing), str(video), str(corrupt), "--checkpoint", str(run), "--lexicon", "none"]
    result = runner.invoke(app, args + ["--skip-bad", "--json"])
    assert result.exit_code == 0, result.output
    doc = json.loads(result.stdout)
    assert [v["video"] for v in doc["videos"]] == [str(video)]
    assert [s["video"] for s in doc["skipped"]] == [str(missing), str(corrupt)]
    with pytest.raises(DecodeError, match="none of the 2 videos"):
        run_predict(PredictConfig(videos=[missing, corrupt], checkpoint=run, lexicon="none", skip_bad=True))


def test_skip_bad_skips_a_fifo_video_without_opening_it_and_without_it_refuses_in_one_line(tmp_path, trained):
    run, video, _ = trained
    fifo = tmp_path / "pipe.mp4"
    os.mkfifo(fifo)
    args = ["predict", str(video), str(fifo), "--checkpoint", str(run), "--lexicon", "none"]
    result = runner.invoke(app, args + ["--skip-bad", "--json"])
    assert result.exit_code == 0, result.output
    doc = json.loads(result.stdout)
    assert [v["video"] for v in doc["videos"]] == [str(video)]
    [skipped] = doc["skipped"]
    assert skipped["video"] == str(fifo) and "a FIFO (named pipe), not a regular file" in skipped["error"]
    refused = runner.invoke(app, args)
    assert refused.exit_code == 1 and "Traceback" not in refused.output
    assert "".join(f"{fifo} is a FIFO (named pipe), not a regular file".split()) in "".join(refused.output.split())


@pytest.mark.parametrize("overrides, message", [
    (dict(), "--checkpoint RUN_DIR"),
    (dict(model="bike-tiny", pretrained="none"), "exactly one of --classes"),
    (dict(model="bike-tiny", pretrained="none", class_names=["a"], classes=Path("c.txt")), "exactly one of"),
    (dict(checkpoint=Path("run"), model="bike-tiny"), "--model cannot be combined with --checkpoint"),
    (dict(model="bike-tiny", pretrained="none", class_names=["a"], head="max"), "--head 'max'"),
    (dict(model="bike-tiny", pretrained="none", class_names=["a"], top_k=0), "--top-k must be at least 1"),
])
def test_bad_option_combinations_are_input_errors(overrides, message):
    with pytest.raises(InputError, match=message):
        check_options(PredictConfig(videos=[Path("v.mp4")], **overrides))


def test_checkpoint_settings_cannot_be_overridden(trained):
    run, video, _ = trained
    with pytest.raises(InputError, match="--head mean differs"):
        load_predictor(PredictConfig(videos=[video], checkpoint=run, head="mean"))


def test_free_text_class_names():
    assert parse_class_names(" arm wrestling , basketball,dancing") == ["arm wrestling", "basketball", "dancing"]
    for bad, message in (("a,,b", "empty name"), ("a,b,", "empty name"), ("a,b,a", "repeats a")):
        with pytest.raises(InputError, match=message):
            parse_class_names(bad)


def test_default_lexicon_is_k400_and_none_turns_attributes_off():
    name, phrases = resolve_lexicon(None)
    assert name == "k400" and len(phrases) == 400
    assert resolve_lexicon("none") == (None, [])
