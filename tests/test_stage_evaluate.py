"""`eval`: multi-view scoring from caches and from videos, the Attributes branch, fusion, protocols."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
import torch
from typer.testing import CliRunner

from bike_cli.cli.app import app
from bike_cli.config.stages import EvalConfig, ExtractConfig, GenAttributesConfig, TrainVideoConfig
from bike_cli.errors import InputError
from bike_cli.io.feature_cache import FeatureCache
from bike_cli.io.score_csv import read_score_csv
from bike_cli.stages.evaluate import run_eval
from bike_cli.stages.extract import run_extraction
from bike_cli.stages.gen_attributes import run_gen_attributes
from bike_cli.stages.train_video import run_train_video


@pytest.fixture(scope="module")
def trained(tmp_path_factory, motion_caches):
    """A Video-branch run (2 epochs), a 2x3-view val cache and val attributes."""
    data, train, _ = motion_caches
    root = tmp_path_factory.mktemp("eval")
    run_train_video(TrainVideoConfig(features=train, out=root / "run", epochs=2, batch_size=8, lr=2e-3,
                                     warmup_epochs=1, workers=0, templates=["{}"], temporal_layers=1))
    val = root / "val_2x3.h5"
    run_extraction(ExtractConfig(list_path=data.val, classes=data.classes, out=val, frames=8, views="2x3", workers=0))
    lexicon = root / "lexicon.txt"
    lexicon.write_text("red square\nblue circle\nmoving left\nmoving right\nmoving up\nmoving down\n")
    run_gen_attributes(GenAttributesConfig(features=val, lexicon=str(lexicon), out=root / "attrs.csv", top_k=2))
    return data, root / "run", val, root / "attrs.csv"


def test_views_are_softmaxed_then_averaged(tmp_path, trained):
    data, run, val, _ = trained
    summary = run_eval(EvalConfig(out=tmp_path, checkpoint=run, features=val, workers=0))
    scores = read_score_csv(summary.files["video"])
    assert scores.scores.shape == (16, 4)
    np.testing.assert_allclose(scores.scores.sum(1), 1.0, atol=1e-5)
    # by hand for the first video: every view scored on its own, probabilities averaged
    from bike_cli.models.factory import load_video_branch

    vm = load_video_branch(run, cache=FeatureCache(val), device="cpu")
    frames = torch.from_numpy(FeatureCache(val).embeddings(0).astype(np.float32))  # [V, T, D]
    with torch.no_grad():
        per_view = vm.branch.head(frames, vm.texts) * vm.branch.logit_scale().exp()  # [V, K]
    expected = per_view.softmax(-1).mean(0).numpy()
    np.testing.assert_allclose(scores.scores[0], expected, atol=1e-5)
    assert summary.metrics["video"]["top1"] == pytest.approx(
        100 * np.mean(scores.scores.argmax(1) == scores.labels))


def test_scoring_videos_equals_scoring_their_cache(tmp_path, trained):
    data, run, val, _ = trained
    from_cache = run_eval(EvalConfig(out=tmp_path / "a", checkpoint=run, features=val, workers=0))
    from_videos = run_eval(EvalConfig(out=tmp_path / "b", checkpoint=run, videos=data.val, views="2x3", workers=0))
    a, b = read_score_csv(from_cache.files["video"]), read_score_csv(from_videos.files["video"])
    assert a.video_ids == b.video_ids
    np.testing.assert_allclose(a.scores, b.scores, atol=2e-3)  # cache embeddings are float16


def test_attributes_branch_and_fusion(tmp_path, trained):
    _, run, val, attrs = trained
    summary = run_eval(EvalConfig(out=tmp_path, checkpoint=run, features=val, attributes=attrs, fuse=0.6,
                                  workers=0))
    v, a, f = (read_score_csv(summary.files[k]) for k in ("video", "attrs", "fused"))
    np.testing.assert_allclose(f.scores, 0.6 * v.scores + 0.4 * a.scores, atol=1e-6)
    np.testing.assert_allclose(a.scores.sum(1), 1.0, atol=1e-5)
    document = json.loads((tmp_path / "metrics.json").read_text())
    assert set(document["metrics"]) == {"video", "attrs", "fused"} and document["fuse"] == 0.6


def test_zero_shot_clip_and_half_class_protocol(tmp_path, trained):
    _, _, val, _ = trained
    summary = run_eval(EvalConfig(out=tmp_path, features=val, templates=["{}"], protocol="zero-shot-half",
                                  repeats=3, workers=0))
    result = summary.metrics["video"]
    assert result["protocol"] == "zero-shot-half" and len(result["runs"]) == 3


def test_bad_combinations_are_clear_errors(tmp_path, trained):
    _, run, val, _ = trained
    with pytest.raises(InputError, match="--fuse needs the Attributes branch"):
        run_eval(EvalConfig(out=tmp_path, checkpoint=run, features=val, fuse=0.5))
    with pytest.raises(InputError, match="--views 4x3 differs"):
        run_eval(EvalConfig(out=tmp_path, checkpoint=run, features=val, views="4x3"))
    with pytest.raises(InputError, match="in \\[0, 1\\]"):
        run_eval(EvalConfig(out=tmp_path, checkpoint=run, features=val, attributes=val, fuse=1.5))


def test_cli_prints_a_table_per_branch(tmp_path, trained):
    _, run, val, attrs = trained
    result = CliRunner().invoke(app, ["eval", "--checkpoint", str(run), "--features", str(val), "--attributes",
                                      str(attrs), "--fuse", "0.6", "--out", str(tmp_path), "--workers", "0"],
                                env={"COLUMNS": "200"})
    assert result.exit_code == 0, result.output
    for branch in ("video", "attrs", "fused"):
        assert branch in result.output
    assert len(pd.read_csv(tmp_path / "fused_scores.csv")) == 16


def test_end_to_end_checkpoint_refuses_a_feature_cache(tmp_path, sample_data):
    run_train_video(TrainVideoConfig(videos=sample_data.train, classes=sample_data.classes, model="bike-tiny",
                                     pretrained="none", out=tmp_path / "e2e", epochs=1, batch_size=6, frames=4,
                                     workers=0, templates=["{}"], temporal_layers=1))
    cache = tmp_path / "val.h5"
    run_extraction(ExtractConfig(list_path=sample_data.val, classes=sample_data.classes, out=cache, frames=4, workers=0))
    with pytest.raises(InputError, match="evaluate it with --videos"):
        run_eval(EvalConfig(out=tmp_path / "eval", checkpoint=tmp_path / "e2e", features=cache, workers=0))
    scored = run_eval(EvalConfig(out=tmp_path / "eval", checkpoint=tmp_path / "e2e", videos=sample_data.val,
                                 views="1x1", workers=0))
    assert scored.videos == len(pd.read_csv(sample_data.val))


def test_plots_are_written(tmp_path, trained):
    _, run, val, attrs = trained
    summary = run_eval(EvalConfig(out=tmp_path, checkpoint=run, features=val, attributes=attrs, fuse=0.6,
                                  workers=0, plots=tmp_path / "plots"))
    from matplotlib.image import imread

    for name in ("per_class_plot", "fusion_plot"):
        image = imread(summary.files[name])
        assert image.shape[0] > 200 and image.shape[1] > 300  # a real picture, not an empty file


def test_fusion_curve_matches_the_fused_scores(trained, tmp_path):
    from bike_cli.eval.fusion import fusion_curve

    _, run, val, attrs = trained
    summary = run_eval(EvalConfig(out=tmp_path, checkpoint=run, features=val, attributes=attrs, fuse=0.6, workers=0))
    v, a = read_score_csv(summary.files["video"]), read_score_csv(summary.files["attrs"])
    lambdas, top1 = fusion_curve(v.scores, a.scores, v.labels, step=0.2)
    at = int(np.flatnonzero(np.isclose(lambdas, 0.6))[0])
    assert top1[at] == pytest.approx(summary.metrics["fused"]["top1"], abs=1e-6)
    assert top1[-1] == pytest.approx(summary.metrics["video"]["top1"], abs=1e-6)


def test_eval_reaches_the_function_that_scores_a_video_within_five_calls(tmp_path, trained):
    """docs/architecture.md's eval path: run_eval -> ... -> VideoBranch.class_probabilities in at most 5 calls."""
    import sys

    from bike_cli.models.video_branch import VideoBranch

    _, run, val, _ = trained
    target = VideoBranch.class_probabilities.__code__
    entry = run_eval.__code__
    stack: list = []
    depths: list[int] = []

    def profile(frame, event, arg):
        if event == "call":
            stack.append(frame.f_code)
            if frame.f_code is target and entry in stack:
                depths.append(len(stack) - 1 - stack.index(entry))
        elif event == "return" and stack:
            stack.pop()

    sys.setprofile(profile)
    try:
        run_eval(EvalConfig(out=tmp_path, checkpoint=run, features=val, workers=0))
    finally:
        sys.setprofile(None)
    assert depths, "class_probabilities was never called"
    assert min(depths) <= 5
    doc = (__import__("pathlib").Path(__file__).resolve().parents[1] / "docs" / "architecture.md").read_text()
    assert "models/video_branch.py: VideoBranch.class_probabilities" in " ".join(doc.split())


def test_frames_beyond_the_transformers_position_table_are_one_input_error(trained):
    from bike_cli.models.factory import load_video_branch

    _, run, val, _ = trained
    with pytest.raises(InputError, match=r"^78 frames per clip, but the temporal transformer was built for at most "
                                         r"77 \(max_frames\)$"):
        load_video_branch(run, frames=78, cache=FeatureCache(val), device="cpu")
