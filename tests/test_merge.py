"""`bike merge` (issue 29, item 5): a run's fine-tuned visual encoder interpolated with the CLIP it
started from (WiSE-FT, Open-VCLIP); alpha 0 and 1 give the two exactly, 0.5 their mean; the rest of
the branch is the run's; the output is a checkpoint eval and predict read; one-line errors."""

from __future__ import annotations

import json

import pytest
import torch
from cli_run import bike, one_line
from typer.testing import CliRunner

from bike_cli.cli.app import app
from bike_cli.config.stages import MergeConfig, PredictConfig, TrainVideoConfig
from bike_cli.data.class_names import read_class_names
from bike_cli.data.video_lists import read_video_list
from bike_cli.errors import InputError, ModelLoadError
from bike_cli.io.checkpoints import load_video_checkpoint
from bike_cli.io.identity import file_sha256
from bike_cli.models.clip import load_clip
from bike_cli.models.factory import load_video_branch
from bike_cli.stages.merge import run_merge
from bike_cli.stages.predict import run_predict
from bike_cli.stages.train_video import run_train_video

VISUAL = "visual."




@pytest.fixture(scope="module")
def tuned(tmp_path_factory, sample_data):
    """A 1-epoch end-to-end run (bike-tiny) trained from a CLIP weights FILE, and that file."""
    root = tmp_path_factory.mktemp("merge")
    weights = root / "tiny.pt"
    torch.save(load_clip("bike-tiny", "none")[0].state_dict(), weights)
    run = root / "run"
    run_train_video(TrainVideoConfig(videos=sample_data.train, classes=sample_data.classes, model="bike-tiny",
                                     pretrained=str(weights), out=run, epochs=1, batch_size=6, frames=4, lr=1e-2,
                                     warmup_epochs=0, workers=0, templates=["{}"], temporal_layers=1))
    return run, weights


def visual(state: dict) -> dict:
    return {k: v for k, v in state.items() if k.startswith(VISUAL)}


def test_alpha_0_and_1_give_the_original_and_the_fine_tuned_visual_weights_and_half_their_mean(tmp_path, tuned):
    run, weights = tuned
    trained = load_video_checkpoint(run)
    fine = visual(trained.state_dict)
    original = visual(load_clip("bike-tiny", str(weights))[0].state_dict())
    assert fine.keys() == original.keys()
    assert any(not torch.equal(fine[k], original[k]) for k in fine), "the run fine-tuned its visual encoder"
    merged = {}
    for alpha in (0.0, 0.5, 1.0):
        run_merge(MergeConfig(run=run, out=tmp_path / f"m{alpha}.pt", alpha=alpha))
        merged[alpha] = load_video_checkpoint(tmp_path / f"m{alpha}.pt")
    for key in fine:
        assert torch.equal(merged[0.0].state_dict[key], original[key]), key
        assert torch.equal(merged[1.0].state_dict[key], fine[key]), key
        torch.testing.assert_close(merged[0.5].state_dict[key], (original[key] + fine[key]) / 2, rtol=1e-5,
                                   atol=1e-7, msg=key)
    for ckpt in merged.values():  # temporal transformer, head, logit scale: the run's
        for key, value in trained.state_dict.items():
            if not key.startswith(VISUAL):
                assert torch.equal(ckpt.state_dict[key], value), key
        assert ckpt.class_names == trained.class_names and ckpt.model_args == trained.model_args
    origin = merged[0.5].origin
    assert origin["method"] == "interpolation" and origin["alpha"] == 0.5
    assert origin["source_sha256"] == file_sha256(run / "best.pt") and origin["source_epoch"] == trained.epoch
    assert origin["clip_sha256"] == file_sha256(weights)
    assert trained.origin is None  # an epoch's own weights record no origin


@pytest.mark.slow
def test_eval_and_predict_read_the_merged_checkpoint(tmp_path, tuned, sample_data):
    run, _ = tuned
    merged = tmp_path / "merged.pt"
    run_merge(MergeConfig(run=run, out=merged, alpha=0.5))
    loaded = load_video_branch(merged)
    own = loaded.branch.state_dict()
    for key, value in load_video_checkpoint(merged).state_dict.items():
        assert torch.equal(own[key], value), key

    done = bike("eval", "--checkpoint", str(merged), "--videos", str(sample_data.val), "--classes",
                str(sample_data.classes), "--views", "1x1", "--out", str(tmp_path / "eval"), "--workers", "0")
    assert done.returncode == 0, one_line(done)
    metrics = json.loads((tmp_path / "eval" / "metrics.json").read_text())
    assert metrics  # the branch was scored

    video = read_video_list(sample_data.val, class_names=read_class_names(sample_data.classes)).entries[0].path
    done = bike("predict", str(video), "--checkpoint", str(merged), "--lexicon", "none", "--json")
    assert done.returncode == 0, one_line(done)
    assert json.loads(done.stdout)["videos"][0]["top5"]
    (p,) = run_predict(PredictConfig(videos=[video], checkpoint=merged, lexicon="none")).predictions
    assert p.probabilities.sum() == pytest.approx(1.0, abs=1e-5)


@pytest.mark.slow
def test_alpha_outside_0_1_is_one_line(tmp_path, tuned):
    run, _ = tuned
    done = bike("merge", str(run), "--alpha", "1.5", "--out", str(tmp_path / "m.pt"))
    assert done.returncode == 1 and "--alpha must be in [0, 1], not 1.5" in one_line(done)
    assert not (tmp_path / "m.pt").exists()
    for alpha in (-0.1, float("nan")):
        with pytest.raises(InputError, match="--alpha must be"):
            run_merge(MergeConfig(run=run, out=tmp_path / "m.pt", alpha=alpha))


def test_a_run_with_a_frozen_visual_encoder_has_nothing_to_interpolate(tmp_path, tiny_cache):
    run = tmp_path / "frozen"
    run_train_video(TrainVideoConfig(features=tiny_cache, out=run, epochs=1, batch_size=4, frames=4, workers=0,
                                     templates=["{}"], temporal_layers=1))
    with pytest.raises(InputError, match="visual encoder frozen.*nothing to interpolate"):
        run_merge(MergeConfig(run=run, out=tmp_path / "m.pt", alpha=0.5))


def test_an_existing_out_needs_overwrite(tmp_path, tuned):
    run, _ = tuned
    out = tmp_path / "m.pt"
    out.write_text("mine")
    cfg = MergeConfig(run=run, out=out, alpha=0.5)
    with pytest.raises(InputError, match="exists; pass --overwrite"):
        run_merge(cfg)
    assert out.read_text() == "mine"
    done = CliRunner().invoke(app, ["merge", str(run), "--alpha", "0.5", "--out", str(out), "--overwrite"],
                              env={"COLUMNS": "300"})
    assert done.exit_code == 0, done.output
    assert f"merge: wrote {out}" in " ".join(done.output.split()) and "at alpha 0.5" in done.output
    assert load_video_checkpoint(out).origin["alpha"] == 0.5


def test_a_moved_clip_weights_file_is_given_with_pretrained_and_must_be_the_same_file(tmp_path, tuned):
    run, weights = tuned
    moved = tmp_path / "moved.pt"
    moved.write_bytes(weights.read_bytes())
    other = tmp_path / "other.pt"
    torch.save({"x": torch.zeros(1)}, other)
    with pytest.raises(ModelLoadError, match="sha256 differs"):
        run_merge(MergeConfig(run=run, out=tmp_path / "m.pt", alpha=0.5, pretrained=str(other)))
    assert not (tmp_path / "m.pt").exists()
    run_merge(MergeConfig(run=run, out=tmp_path / "m.pt", alpha=0.0, pretrained=str(moved)))
    merged = load_video_checkpoint(tmp_path / "m.pt")
    assert merged.clip["pretrained"] == str(moved.resolve())  # eval finds the weights where they are now
    original = visual(load_clip("bike-tiny", str(weights))[0].state_dict())
    for key, value in original.items():
        assert torch.equal(merged.state_dict[key], value), key
