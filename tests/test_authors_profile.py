"""The `compat` profile recorded in files and checked where stages meet (fuse, eval)."""

from __future__ import annotations

import json

import numpy as np
import pytest

from bike_cli.config.stages import EvalConfig, FuseConfig
from bike_cli.errors import CacheMismatchError, InputError
from bike_cli.io.csv_meta import read_csv_meta, write_csv_meta
from bike_cli.io.feature_cache import CacheMeta, FeatureCache
from bike_cli.io.score_csv import read_score_csv, write_score_csv
from bike_cli.stages.evaluate import run_eval
from bike_cli.stages.fuse import run_fuse


def _scores(path, seed, compat=None):
    rng = np.random.default_rng(seed)
    probs = rng.random((6, 4))
    probs /= probs.sum(1, keepdims=True)
    write_score_csv(path, [f"v{i}" for i in range(6)], np.array([0, 1, 2, 3, 0, 1]), probs, list("abcd"))
    if compat is not None:
        write_csv_meta(path, compat)
    return probs


def test_fuse_under_authors_uses_their_weights_and_refuses_other_profiles(tmp_path):
    video = _scores(tmp_path / "video.csv", 0, "authors")
    attrs = _scores(tmp_path / "attrs.csv", 1, "authors")
    with pytest.raises(CacheMismatchError, match="--compat authors"):
        run_fuse(FuseConfig(inputs=[tmp_path / "video.csv", tmp_path / "attrs.csv"], out=tmp_path / "f.csv"))
    summary = run_fuse(FuseConfig(inputs=[tmp_path / "video.csv", tmp_path / "attrs.csv"], out=tmp_path / "f.csv",
                                  compat="authors"))
    assert summary.weights == pytest.approx([0.7, 0.3])
    np.testing.assert_allclose(read_score_csv(tmp_path / "f.csv").scores, 0.7 * video + 0.3 * attrs, atol=1e-6)
    assert read_csv_meta(tmp_path / "f.csv").compat == "authors"
    assert json.loads(summary.metrics_json.read_text())["compat"] == "authors"


def test_a_csv_without_sidecar_reads_as_bike(tmp_path):
    _scores(tmp_path / "plain.csv", 0)
    assert read_csv_meta(tmp_path / "plain.csv").compat == "bike"
    (tmp_path / "plain.csv.meta.json").write_text("{}")
    with pytest.raises(InputError, match="sidecar"):
        read_csv_meta(tmp_path / "plain.csv")


def test_old_cache_attributes_read_as_the_bike_profile():
    meta = CacheMeta(model_name="bike-tiny", pretrained="none", checkpoint_sha256=None, quick_gelu=False,
                     image_size=64, embed_dim=64, frames=8, clips=1, crops=1, sampling_mode="test", seed=0,
                     decoder="decord", multilabel=False, num_classes=4)
    attrs = meta.to_attrs()
    del attrs["compat"], attrs["visual_sha256"]
    old = CacheMeta.from_attrs(attrs, "old.h5")
    assert old.compat == "bike" and old.visual_sha256 is None


def test_eval_refuses_a_cache_of_the_other_profile(tmp_path, motion_caches):
    data, _, val = motion_caches
    assert FeatureCache(val).meta.compat == "bike"
    with pytest.raises(CacheMismatchError, match="--compat bike"):
        run_eval(EvalConfig(out=tmp_path, features=val, classes=data.classes, compat="authors", workers=0))
    assert not (tmp_path / "video_scores.csv").exists()


def test_authors_checkpoint_settings_come_from_keys_and_options(tmp_path):
    import open_clip
    import torch

    from bike_cli.models.factory import load_video_branch
    from bike_cli.models.heads import TemporalTransformer
    from bike_cli.models.registry import register_configs

    register_configs()
    clip = open_clip.create_model("bike-tiny", pretrained=None, quick_gelu=True)
    plain = tmp_path / "dp.pt"  # sim_header None: an empty fusion model
    torch.save({"model_state_dict": clip.state_dict(), "fusion_model_state_dict": {}}, plain)
    names = ["a", "b"]
    ab = load_video_branch(plain, class_names=names, model="bike-tiny", frames=8)
    assert ab.branch_spec.temporal == "none" and ab.branch_spec.vcs_tokens == "all" and ab.description["epoch"] is None
    assert ab.spec.quick_gelu
    deep = tmp_path / "transf.pt"
    temporal = TemporalTransformer(64, layers=3, heads=1)
    torch.save({"model_state_dict": {f"module.{k}": v for k, v in clip.state_dict().items()},
                "fusion_model_state_dict": {f"module.{k}": v for k, v in temporal.state_dict().items()},
                "epoch": 29}, deep)
    ab = load_video_branch(deep, class_names=names, model="bike-tiny", frames=16, vcs_tokens="words")
    assert (ab.branch_spec.temporal, ab.branch_spec.temporal_layers, ab.description["epoch"]) == ("transformer", 3, 29)
    assert ab.branch_spec.vcs_tokens == "words" and ab.branch_spec.frames == 16
    for missing, option in (({"frames": None}, "--frames"), ({"model": None}, "--model")):
        kwargs = {"model": "bike-tiny", "frames": 8, **missing}
        with pytest.raises(InputError, match=option):
            load_video_branch(deep, class_names=names, **kwargs)


def test_predict_under_the_authors_profile_scores_any_model_their_way(sample_data):
    import torch

    from bike_cli.config.stages import PredictConfig
    from bike_cli.data.class_names import read_class_names
    from bike_cli.data.video_lists import read_video_list
    from bike_cli.models.authors import authors_view_scores
    from bike_cli.stages.predict import load_predictor

    video = read_video_list(sample_data.val, class_names=read_class_names(sample_data.classes)).entries[0].path
    cfg = PredictConfig(videos=[video], model="bike-tiny", pretrained="none", class_names=["a", "b", "c"],
                        lexicon="none", compat="authors")
    predictor = load_predictor(cfg)
    assert predictor.compat == "authors" and predictor.description["compat"] == "authors"
    prediction = predictor.predict(video, top=3, top_k=1)
    encoded = predictor.encode_video(video)
    with torch.no_grad():
        logits = predictor.branch.head(encoded.embeddings.unsqueeze(0), predictor.class_texts)  # [1, K]
    expected = authors_view_scores(logits.unsqueeze(1))[0]
    torch.testing.assert_close(torch.from_numpy(prediction.probabilities), expected, atol=1e-5, rtol=0)
    assert encoded.frame_indices[0] == 0  # the authors' single clip starts at the segment start
