"""Training under `--compat authors`: optimiser groups, scheduler steps, loss, logit scale, and
`train-video --init-from` with an authors' checkpoint on a cache of other visual weights."""

from __future__ import annotations

import math

import open_clip
import pytest
import torch

from bike_cli.config.profile import get_profile
from bike_cli.config.stages import TrainVideoConfig
from bike_cli.engine.training_loop import PARAM_GROUPS, authors_warmup_cosine
from bike_cli.errors import CacheMismatchError
from bike_cli.io.checkpoints import load_video_checkpoint
from bike_cli.models.authors import LOSSES, authors_kl_loss
from bike_cli.models.heads import TemporalTransformer, VideoHead
from bike_cli.models.loss import LogitScale
from bike_cli.models.registry import register_configs
from bike_cli.models.video_branch import VideoBranch
from bike_cli.stages.train_video import run_train_video

register_configs()


def _their_schedule(warmup: float, epochs: int, iters: int) -> list[float]:
    """The lr factor of every iteration as their train.py steps WarmupCosineAnnealingLR(last_epoch)."""
    factors, current = [], 0.0  # constructed with last_epoch 0: factor 0 until the first step
    for epoch in range(epochs):
        for i in range(iters):
            if i == 0 or (i + 1) % 10 == 0:
                x = epoch + i / iters
                if x < warmup:
                    current = x / warmup
                else:
                    p = min(1.0, (x - warmup) / (epochs - warmup))
                    current = (math.cos(math.pi * p) + 1) / 2
            factors.append(current)
    return factors


@pytest.mark.parametrize("warmup,epochs,iters", [(5, 30, 23), (2, 4, 100), (0, 3, 9), (1.5, 3, 10)])
def test_scheduler_steps_as_theirs(warmup, epochs, iters):
    factor = authors_warmup_cosine(warmup, epochs, iters)
    expected = _their_schedule(warmup, epochs, iters)
    got = [factor(step) for step in range(epochs * iters)]
    assert got == pytest.approx(expected, abs=1e-12)


def _groups(compat: str):
    """The AdamW group rule of a profile, as the training stages look it up."""
    return PARAM_GROUPS[get_profile(compat).optimizer_groups]


def _branch(compat: str, log_scale: float) -> VideoBranch:
    """A branch with the loss and logit-scale cap of `compat`, as the training stages put them in its spec."""
    training = get_profile(compat).branch_training(None)
    return VideoBranch(VideoHead(8), LogitScale(log_scale, cap=training["logit_scale_cap"]),
                       loss_fn=LOSSES[training["loss"]])


def test_authors_groups_decay_everything_and_put_the_scale_with_clip():
    visual = open_clip.create_model("bike-tiny", pretrained=None).visual
    branch = VideoBranch(VideoHead(64, temporal="transformer", layers=1), LogitScale(), visual)
    groups = branch.param_groups(1e-3, 0.1, 0.2, _groups("authors"))
    by_name = {g["name"]: g for g in groups}
    assert {g["weight_decay"] for g in groups} == {0.2}
    clip_ids = {id(p) for p in by_name["clip"]["params"]}
    assert id(branch.logit_scale.log_scale) in clip_ids and by_name["clip"]["lr"] == pytest.approx(1e-4)
    assert all(id(p) in clip_ids for p in visual.parameters())
    assert {id(p) for p in by_name["new"]["params"]} == {id(p) for p in branch.head.parameters()}
    bike = branch.param_groups(1e-3, 0.1, 0.2)  # the default rule: bike's
    assert any(g["weight_decay"] == 0.0 for g in bike)  # bike's own: no decay on 1-d parameters


@pytest.mark.parametrize("tune", ["head", "full"])
def test_authors_attributes_groups_decay_everything_and_put_the_scale_with_clip(tune):
    from bike_cli.models.attrs_branch import AttributesBranch, TextTower

    clip = open_clip.create_model("bike-tiny", pretrained=None)
    text = TextTower(clip) if tune == "full" else None
    branch = AttributesBranch(tune, 64, LogitScale(), text)
    groups = branch.param_groups(1e-3, 0.1, 0.2, _groups("authors"))
    by_name = {g["name"]: g for g in groups}
    assert {g["weight_decay"] for g in groups} == {0.2}  # their solver decays every parameter
    clip_ids = {id(p) for p in by_name["clip"]["params"]}
    assert id(branch.logit_scale.log_scale) in clip_ids and by_name["clip"]["lr"] == pytest.approx(1e-4)
    tower = set() if text is None else {id(p) for p in text.parameters() if p.requires_grad}
    assert clip_ids == {id(branch.logit_scale.log_scale)} | tower
    new = {id(p) for p in branch.parameters() if p.requires_grad} - clip_ids  # the MLPs of --tune head
    assert {id(p) for g in groups if g["name"] == "new" for p in g["params"]} == new
    assert all(g["lr"] == pytest.approx(1e-3) for g in groups if g["name"] == "new")
    assert bool(new) == (tune == "head")
    bike = branch.param_groups(1e-3, 0.1, 0.2)  # the default rule: bike's
    assert any(g["weight_decay"] == 0.0 for g in bike)  # bike's own: no decay on 1-d parameters


def test_profile_sets_the_loss_and_lifts_the_scale_cap():
    branch = _branch("authors", math.log(300.0))
    assert branch.loss_fn is authors_kl_loss
    assert float(branch.logit_scale().detach().exp()) == pytest.approx(300.0)
    branch = _branch("bike", math.log(300.0))
    assert float(branch.logit_scale().detach().exp()) == pytest.approx(100.0)


@pytest.mark.parametrize("compat, capped", [("bike", True), ("authors", False)])
def test_the_logit_scale_is_clamped_at_the_profiles_cap_after_a_step_past_it(compat, capped):
    """One optimiser step pushes the log scale 0.5 past CLIP's cap: bike's profile scores with the cap
    (exp = 100), the authors' profile (no cap) with the stepped value."""
    from bike_cli.config.profile import get_profile

    cap = math.log(100.0)
    branch = _branch(compat, cap - 0.5)
    assert branch.logit_scale.cap == get_profile(compat).logit_scale_cap
    optimizer = torch.optim.SGD([branch.logit_scale.log_scale], lr=1.0)
    (-branch.logit_scale()).backward()  # d/d(log scale) = -1 below the cap: the step adds 1.0
    optimizer.step()
    assert float(branch.logit_scale.log_scale.detach()) == pytest.approx(cap + 0.5)
    used = float(branch.logit_scale().detach())
    assert used == pytest.approx(cap if capped else cap + 0.5)


def test_init_from_an_authors_checkpoint_checks_its_visual_weights(tmp_path, motion_caches):
    data, train, _ = motion_caches
    torch.manual_seed(7)
    clip = open_clip.create_model("bike-tiny", pretrained=None)
    temporal = TemporalTransformer(64, layers=1, heads=1)
    ckpt = tmp_path / "authors.pt"
    torch.save({"model_state_dict": {f"module.{k}": v for k, v in clip.state_dict().items()},
                "fusion_model_state_dict": {f"module.{k}": v for k, v in temporal.state_dict().items()},
                "epoch": 0}, ckpt)
    cfg = TrainVideoConfig(features=train, out=tmp_path / "run", epochs=1, batch_size=8, workers=0,
                           temporal_layers=1, init_from=ckpt, templates=["{}"])
    with pytest.raises(CacheMismatchError, match="--ignore-visual-weights") as err:
        run_train_video(cfg)
    assert "sha256" in str(err.value) and not (tmp_path / "run" / "last.pt").exists()
    cfg.ignore_visual_weights, cfg.compat = True, "authors"
    with pytest.raises(CacheMismatchError, match="--compat"):  # a bike-profile cache under the authors' profile
        run_train_video(cfg)
    cfg.compat = "bike"
    cfg.loss = "authors"
    run_train_video(cfg)
    saved = load_video_checkpoint(tmp_path / "run")
    assert saved.config["loss"] == "authors" and saved.config["compat"] == "bike"
    torch.testing.assert_close(saved.state_dict["head.temporal.frame_position_embeddings.weight"],
                               temporal.state_dict()["frame_position_embeddings.weight"], atol=1e-2, rtol=0)
