"""`bike_cli.models.build`: branch specs and the one builder; the specs of checkpoints old (schema 1) and new
(`bike_cli.models.factory`)."""

from __future__ import annotations

import re
from dataclasses import asdict

import pytest
import torch

from bike_cli.errors import InputError, as_user_error
from bike_cli.io.checkpoints import (
    ATTRS_KIND,
    VIDEO_KIND,
    BranchCheckpoint,
    load_attrs_checkpoint,
    load_video_checkpoint,
    save_checkpoint,
)
from bike_cli.models.build import (
    AttrsBranchSpec,
    VideoBranchSpec,
    build_attrs_branch,
    build_video_branch,
    resolve_video_spec,
)
from bike_cli.models.clip import load_clip
from bike_cli.models.factory import load_attrs_branch, spec_of

SETTINGS = {"head": "vcs", "temporal": "transformer", "temporal_layers": 2, "tau": 0.02, "vcs_tokens": "words",
            "templates": ["a video of {}"], "frames": 4}


@pytest.fixture(scope="module")
def tiny():
    return load_clip("bike-tiny", "none")  # (model, ClipSpec)


def _trained_video_branch(tiny):
    clip_model, spec = tiny
    branch_spec = resolve_video_spec(VideoBranchSpec.of(spec, **SETTINGS), clip_model)
    branch = build_video_branch(branch_spec, clip_model)
    with torch.no_grad():
        for p in branch.parameters():
            p.add_(0.1)  # not the init: a load must bring these values back
    return branch_spec, branch


def test_a_new_checkpoint_stores_the_spec_that_rebuilds_its_branch(tmp_path, tiny):
    clip_model, spec = tiny
    branch_spec, branch = _trained_video_branch(tiny)
    assert branch_spec.temporal_heads == 1 and branch_spec.templates == ("a video of {}",)  # 64-wide text / 64
    ckpt = BranchCheckpoint({"compat": "bike", **SETTINGS}, asdict(spec), ["a", "b"], 1, {}, branch.state_dict(),
                            model_args=branch_spec.to_dict())
    loaded = load_video_checkpoint(save_checkpoint(tmp_path / "last.pt", ckpt, VIDEO_KIND))
    assert loaded.model_args == branch_spec.to_dict()
    assert spec_of(VideoBranchSpec, loaded, tmp_path) == branch_spec
    rebuilt = build_video_branch(spec_of(VideoBranchSpec, loaded, tmp_path), clip_model)
    rebuilt.load_state_dict(loaded.state_dict)
    for key, value in branch.state_dict().items():
        torch.testing.assert_close(rebuilt.state_dict()[key], value)


def test_an_old_format_checkpoint_without_model_args_still_loads(tmp_path, tiny):
    """Schema 1 (before `model_args`): the spec is derived from `config` and `clip`."""
    clip_model, spec = tiny
    branch_spec, branch = _trained_video_branch(tiny)
    path = tmp_path / "old.pt"
    torch.save({"kind": VIDEO_KIND, "schema_version": 1, "bike_version": "0.1.0",
                "config": {"compat": "bike", "epochs": 3, **SETTINGS}, "clip": asdict(spec), "class_names": ["a", "b"],
                "epoch": 3, "metrics": {"epoch": 3}, "state_dict": branch.state_dict()}, path)
    loaded = load_video_checkpoint(path)
    assert loaded.model_args is None
    derived = spec_of(VideoBranchSpec, loaded, path)
    assert resolve_video_spec(derived, clip_model) == branch_spec
    rebuilt = build_video_branch(derived, clip_model)
    rebuilt.load_state_dict(loaded.state_dict)
    for key, value in branch.state_dict().items():
        torch.testing.assert_close(rebuilt.state_dict()[key], value)
    from bike_cli.config.stages import PredictConfig
    from bike_cli.stages.predict import load_predictor

    predictor = load_predictor(PredictConfig(videos=[], checkpoint=path, lexicon="none"))  # as a stage loads it
    assert predictor.frames == 4 and predictor.description["temporal"] == "transformer"
    for key, value in branch.state_dict().items():
        torch.testing.assert_close(predictor.branch.state_dict()[key], value)


def test_old_and_new_attributes_checkpoints_rebuild_the_same_branch(tmp_path, tiny):
    clip_model, spec = tiny
    branch_spec = AttrsBranchSpec.of(spec, tune="head", templates=["{}"])
    branch = build_attrs_branch(branch_spec, clip_model)
    config = {"tune": "head", "templates": ["{}"], "compat": "bike"}
    old = tmp_path / "old.pt"
    torch.save({"kind": ATTRS_KIND, "schema_version": 1, "bike_version": "0.1.0", "config": config,
                "clip": asdict(spec), "class_names": ["a"], "epoch": 1, "metrics": {},
                "state_dict": branch.state_dict()}, old)
    new = save_checkpoint(tmp_path / "new.pt", BranchCheckpoint(config, asdict(spec), ["a"], 1, {},
                                                                 branch.state_dict(), branch_spec.to_dict()),
                          ATTRS_KIND)
    for path in (old, new):
        loaded = load_attrs_checkpoint(path)
        assert spec_of(AttrsBranchSpec, loaded, path) == branch_spec
        rebuilt = build_attrs_branch(spec_of(AttrsBranchSpec, loaded, path), clip_model)
        rebuilt.load_state_dict(loaded.state_dict)


def test_model_args_of_another_spec_are_refused(tmp_path, tiny):
    _, spec = tiny
    ckpt = BranchCheckpoint({}, asdict(spec), [], 0, {}, {}, model_args={"model_name": "bike-tiny", "tune": "x"})
    with pytest.raises(InputError, match="model_args do not describe a VideoBranchSpec"):
        spec_of(VideoBranchSpec, ckpt, tmp_path / "x.pt")
    path = tmp_path / "future.pt"
    torch.save({"kind": VIDEO_KIND, "schema_version": 3}, path)
    with pytest.raises(InputError, match="schema 3"):
        load_video_checkpoint(path)


def test_a_spec_the_builder_refuses_is_a_value_error_and_the_loader_names_the_checkpoint(tmp_path, tiny):
    clip_model, spec = tiny
    bad = AttrsBranchSpec.of(spec, tune="lora")
    with pytest.raises(ValueError, match="tune must be one of head, full, not 'lora'"):
        build_attrs_branch(bad, clip_model)
    path = save_checkpoint(tmp_path / "attrs.pt", BranchCheckpoint({}, asdict(spec), ["a"], 1, {}, {}, bad.to_dict()),
                           ATTRS_KIND)
    with pytest.raises(InputError, match=re.escape(f"{path}: tune must be one of head, full, not 'lora'")):
        load_attrs_branch(path, ["a"])


def test_train_video_writes_the_spec_its_old_format_fields_describe(tmp_path, motion_caches, tiny):
    """model_args of a new run = the spec a schema-1 reader derives from the same run's config + clip."""
    from dataclasses import replace

    from bike_cli.config.stages import TrainVideoConfig
    from bike_cli.stages.train_video import run_train_video

    _, train, _ = motion_caches
    run_train_video(TrainVideoConfig(features=train, out=tmp_path / "run", epochs=1, batch_size=8, workers=0,
                                     templates=["{}"], temporal_layers=2, warmup_epochs=0))
    ckpt = load_video_checkpoint(tmp_path / "run")
    assert ckpt.model_args is not None
    legacy = resolve_video_spec(spec_of(VideoBranchSpec, replace(ckpt, model_args=None), "old"), tiny[0])
    assert spec_of(VideoBranchSpec, ckpt, "new") == legacy
    assert legacy.temporal == "transformer" and legacy.temporal_layers == 2 and legacy.frames == 8


@pytest.mark.parametrize(("settings", "message"), [
    ({"head": "max"}, "unknown video head 'max'; choose one of mean, vcs"),
    ({"temporal": "lstm"}, "unknown temporal module 'lstm'; choose one of none, transformer"),
    ({"tau": 0.0}, "VCS temperature tau must be > 0, not 0.0"),
    ({"temporal": "transformer", "temporal_layers": 0}, "needs layers >= 1 and max_frames >= 1, not 0 and 77"),
    ({"temporal": "transformer", "temporal_heads": 5}, "width 64 is not divisible into 5 heads"),
    ({"temporal": "transformer", "frames": 78},
     "78 frames per clip, but the temporal transformer was built for at most 77 (max_frames)"),
])
def test_a_users_bad_head_setting_is_a_value_error_that_the_stage_says_as_one_line(tiny, settings, message):
    clip_model, spec = tiny  # models/ raises ValueError; the stage or loader that took the value says it
    with pytest.raises(ValueError, match=re.escape(message)):
        build_video_branch(VideoBranchSpec.of(spec, **settings), clip_model)
    with pytest.raises(InputError, match=re.escape(message)), as_user_error(ValueError):
        build_video_branch(VideoBranchSpec.of(spec, **settings), clip_model)
