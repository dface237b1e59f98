"""The `--compat` profile as one object (issue 18): its fields per profile, the error for an unknown
name, that the library asks the fields (a third profile is honoured) and never tests the name."""

from __future__ import annotations

import ast
import dataclasses
import math
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from torch import nn
from training_rig import Rows, fit_rig

from bike_cli.config import profile as pf
from bike_cli.config.profile import PROFILES, Profile, check_fusable, get_profile
from bike_cli.errors import InputError

REPO = Path(__file__).resolve().parents[1]


def video_score_rule(profile: str, fusing: bool) -> str:
    """The Video branch's score rule under the profile called `profile` (a test helper)."""
    return get_profile(profile).video_score_rule(fusing)

# docs/reproducing.md, "The authors' released code: --compat authors": bike's default | the authors' code
EXPECTED = {
    "bike": {
        "test_indices": "segment-centres",  # test frame indices: segment centres, clip c at (c + 0.5)/C
        "train_indices": "segment-uniform",  # training frame indices: a uniform position in each n/T segment
        "test_transform": "decode-resize",  # short side resized while decoding, centre crop
        "crops": (1, 3),  # three crops (no 5 or 10)
        "video_scores": "bike-softmax",  # multi-view scores: softmax(logit scale x cosine) per view, mean
        "fused_video_scores": "bike-softmax",
        "attrs_scores": "bike-softmax",  # Attributes-branch scores: softmax(logit scale x cosine)
        "fuse_weight": None,  # fusion weight: --fuse
        "zero_shot": "branch-scores",  # zero-shot half-class protocol: the branch's scores
        "loss": "bike",  # loss: Eq. 7
        "optimizer_groups": "decay-exempt",  # no decay on biases, norms, embeddings, logit scale
        "logit_scale_cap": math.log(100.0),  # logit-scale cap: exp(scale) <= 100
        "lr_cadence": "optimizer-step",  # lr schedule: every optimiser step; accumulation across the run
        "drop_last": False,  # last partial batch: kept
        "auto_precision": "bf16-else-fp16",  # --precision auto: bf16 on a GPU with bf16, else fp16
        "authors_init_all_tokens": False,  # VCS queries: the class name's words
    },
    "authors": {
        "test_indices": "tick-starts",  # _get_test_indices
        "train_indices": "rounded-segments",  # _sample_indices
        "test_transform": "pil-scale",  # PIL bicubic to 256 for 224 px, then their crops
        "crops": (1, 3, 5, 10),  # test.py --test_crops
        "video_scores": "authors-test",  # test.py: softmax, view mean, softmax again
        "fused_video_scores": "authors-validate",  # validate(): no second softmax (what fusion_acc takes)
        "attrs_scores": "authors-validate",  # softmax of the unscaled cosine
        "fuse_weight": 0.7,  # utils.fusion_acc: 0.7 video + 0.3 attributes
        "zero_shot": "frame-softmax",  # test_zeroshot.py
        "loss": "authors",  # --loss authors, the profile's default
        "optimizer_groups": "decay-all",  # decay on every parameter, logit scale with CLIP's at 0.1 x lr
        "logit_scale_cap": None,  # not clamped
        "lr_cadence": "batch",  # WarmupCosineAnnealingLR per batch (every 10th); accumulation per epoch
        "drop_last": True,  # DataLoader(drop_last=True)
        "auto_precision": "fp16",  # amp: fp16 autocast with a GradScaler
        "authors_init_all_tokens": True,  # all 77 positions with an authors' --init-from under the profile
    },
}


def test_the_registry_holds_bike_and_authors_in_that_order():
    assert list(PROFILES) == ["bike", "authors"]
    assert all(isinstance(p, Profile) for p in PROFILES.values())


@pytest.mark.parametrize("name", ["bike", "authors"])
def test_every_field_has_the_documented_value(name):
    got = dataclasses.asdict(get_profile(name))
    assert set(got) == set(EXPECTED[name])  # a new field is added here, with its documented value
    for field, value in EXPECTED[name].items():
        assert got[field] == (pytest.approx(value) if isinstance(value, float) else value), field


def test_profiles_are_frozen():
    with pytest.raises(dataclasses.FrozenInstanceError):
        get_profile("authors").drop_last = False  # type: ignore[misc]


def test_the_constants_other_layers_read_are_the_profiles_values():
    from bike_cli.data.sampling import AUTHORS_CROPS
    from bike_cli.models.loss import MAX_LOG_SCALE

    assert get_profile("authors").crops == AUTHORS_CROPS
    assert get_profile("bike").logit_scale_cap == MAX_LOG_SCALE
    assert get_profile("authors").fuse_weight == pf.AUTHORS_FUSE


def test_every_rule_name_of_a_profile_has_its_implementation():
    from bike_cli.data.sampling import TEST_INDICES, TRAIN_INDICES
    from bike_cli.engine.evaluation import ATTRS_SCORES, VIDEO_SCORES
    from bike_cli.engine.training_loop import PARAM_GROUPS
    from bike_cli.models.authors import LOSSES

    for profile in PROFILES.values():
        assert profile.test_indices in TEST_INDICES and profile.train_indices in TRAIN_INDICES
        assert profile.attrs_scores in ATTRS_SCORES and profile.loss in LOSSES
        assert profile.optimizer_groups in PARAM_GROUPS
        for rule in (profile.video_scores, profile.fused_video_scores):
            assert rule in VIDEO_SCORES
        assert profile.test_transform in (pf.DECODE_RESIZE, pf.PIL_SCALE)
        assert profile.optimizer_groups in (pf.DECAY_EXEMPT, pf.DECAY_ALL)
        assert profile.lr_cadence in (pf.PER_OPTIMIZER_STEP, pf.PER_BATCH)
        assert profile.auto_precision in (pf.BF16_ELSE_FP16, pf.FP16)
        assert profile.zero_shot in (pf.BRANCH_SCORES, pf.FRAME_SOFTMAX)


@pytest.mark.parametrize("field", sorted(pf.RULE_NAMES))
def test_a_profile_with_a_rule_value_nothing_implements_fails_when_it_is_made(field):
    with pytest.raises(ValueError, match=f"Profile.{field} 'paper' has no rule"):
        dataclasses.replace(get_profile("bike"), **{field: "paper"})


@pytest.mark.parametrize("call", [get_profile])
def test_an_unknown_name_is_the_one_line_input_error(call):
    with pytest.raises(InputError) as err:
        call("paper")
    assert str(err.value) == "--compat 'paper' is not one of bike, authors"


def test_video_score_rule_and_check_fusable_read_the_fields():
    assert video_score_rule("authors", fusing=True) == "authors-validate"
    assert video_score_rule("authors", fusing=False) == "authors-test"
    assert video_score_rule("bike", fusing=True) == video_score_rule("bike", fusing=False) == "bike-softmax"
    with pytest.raises(InputError, match="test.py scores"):
        check_fusable("authors", "authors-test", "v.csv")
    for profile, rule in [("authors", "authors-validate"), ("authors", None), ("bike", "authors-test"),
                          ("bike", "bike-softmax"), ("authors", "cosine")]:
        check_fusable(profile, rule, "v.csv")


# ----------------------------------------------------------------------------- a third profile
# Each rule is checked from both sides: bike's profile with the authors' value of one field, and the
# authors' with bike's. Code that still tested the name (`== "authors"` or `!= "bike"`) would treat
# `third` as one of the two whole profiles and fail one of the pair.


@pytest.fixture
def third(monkeypatch):
    """Register `third`: profile `base` with the given fields changed; returns its name."""

    def make(base: str, **changes) -> str:
        monkeypatch.setitem(PROFILES, "third", dataclasses.replace(get_profile(base), **changes))
        return "third"

    return make




def _batch_sizes(out: Path, compat: str, n: int = 7, batch: int = 2) -> list[int]:
    """The batch sizes one epoch of Trainer.fit feeds under `compat` (an in-memory loader, CPU)."""
    from bike_cli.engine.training_loop import LoopSettings

    seen: list[int] = []
    rows = Rows(n)

    def loader(sampler):
        class _Batches:
            def __len__(self):
                return len(sampler)

            def __iter__(self):
                for positions in sampler:
                    seen.append(len(positions))
                    yield rows.x[positions]
        return _Batches()

    settings = LoopSettings(out=out, epochs=1, batch_size=batch, grad_accum=1, warmup_epochs=0.0, precision="fp32",
                            seed=0, val_every=1, workers=0, resume=False, device="cpu")
    fit_rig(settings, compat, rows, lr=1e-2, batch_loader=loader)
    return seen


def test_drop_last_of_a_third_profile_is_honoured_by_the_trainer(tmp_path, third):
    assert _batch_sizes(tmp_path / "bike", "bike") == [2, 2, 2, 1]
    assert _batch_sizes(tmp_path / "authors", "authors") == [2, 2, 2]
    assert _batch_sizes(tmp_path / "b", third("bike", drop_last=True)) == [2, 2, 2]
    assert _batch_sizes(tmp_path / "a", third("authors", drop_last=False)) == [2, 2, 2, 1]


def test_the_crops_of_a_third_profile_are_honoured_by_parse_views(third):
    from bike_cli.data.sampling import ViewLayout, parse_views

    with pytest.raises(InputError, match=r"must be 1 or 3, not 5"):
        parse_views("1x5", get_profile("bike"))
    assert parse_views("1x5", get_profile(third("bike", crops=(1, 3, 5, 10)))) == ViewLayout(1, 5)
    assert parse_views("1x5", get_profile("authors")) == ViewLayout(1, 5)
    with pytest.raises(InputError, match=r"spatial crops, not 5"):
        parse_views("1x5", get_profile(third("authors", crops=(1, 3))))


def test_the_fusion_weight_of_a_third_profile_is_honoured_by_fuse(third):
    from bike_cli.eval.fusion import default_weights

    assert default_weights(2, get_profile("bike").fuse_weight) == [0.5, 0.5]
    assert default_weights(2, get_profile(third("bike", fuse_weight=0.7)).fuse_weight) == pytest.approx([0.7, 0.3])
    assert default_weights(2, get_profile("authors").fuse_weight) == pytest.approx([0.7, 0.3])
    assert default_weights(2, get_profile(third("authors", fuse_weight=None)).fuse_weight) == [0.5, 0.5]


def test_the_precision_rule_of_a_third_profile_is_honoured(third):
    from bike_cli.engine.training_loop import accelerate_precision

    assert accelerate_precision("auto", True, get_profile("bike"), True) == "bf16"
    assert accelerate_precision("auto", True, get_profile(third("bike", auto_precision=pf.FP16)), True) == "fp16"
    assert accelerate_precision("auto", True, get_profile("authors"), True) == "fp16"
    assert accelerate_precision("auto", True, get_profile(third("authors", auto_precision=pf.BF16_ELSE_FP16)),
                                True) == "bf16"


def test_the_training_loops_rule_tables_cover_exactly_the_profiles_rule_names(third):
    """A value a Profile may take has its entry; a value it may not take fails when the Profile is made."""
    from bike_cli.data.sampling import CROPS_REFUSED, TEST_TRANSFORMS
    from bike_cli.engine.training_loop import LR_CADENCES, MIXED_PRECISION_AUTO
    from bike_cli.stages.evaluate import ZERO_SHOT_FRAME_SCORERS

    assert set(MIXED_PRECISION_AUTO) == set(pf.RULE_NAMES["auto_precision"])
    assert set(TEST_TRANSFORMS) == set(CROPS_REFUSED) == set(pf.RULE_NAMES["test_transform"])
    assert set(ZERO_SHOT_FRAME_SCORERS) == set(pf.RULE_NAMES["zero_shot"])
    assert set(LR_CADENCES) == set(pf.RULE_NAMES["lr_cadence"])
    with pytest.raises(ValueError, match="Profile.lr_cadence 'per-epoch' has no rule"):
        third("bike", lr_cadence="per-epoch")


def test_the_loss_and_cap_of_a_third_profile_are_honoured_by_the_built_branch(third):
    from bike_cli.models.authors import LOSSES
    from bike_cli.models.build import VideoBranchSpec, build_video_branch

    clip = SimpleNamespace(logit_scale=torch.tensor(math.log(10.0)))  # all the builder reads of CLIP here

    def configured(compat: str, loss: str | None = None):  # as train-video builds its branch
        spec = VideoBranchSpec("m", "none", None, 8, head="mean", temporal_heads=1, **get_profile(compat).branch_training(loss))
        branch = build_video_branch(spec, clip)
        return branch.loss_fn, branch.logit_scale.cap

    assert configured(third("bike", loss="authors")) == (LOSSES["authors"], pytest.approx(math.log(100.0)))
    assert configured(third("bike", logit_scale_cap=None)) == (LOSSES["bike"], None)
    assert configured(third("authors", loss="bike")) == (LOSSES["bike"], None)
    assert configured(third("authors", logit_scale_cap=1.0)) == (LOSSES["authors"], 1.0)
    assert configured("third", "bike")[0] is LOSSES["bike"]  # an explicit --loss wins


def test_an_unknown_loss_is_a_users_one_line_error_from_the_profile_and_a_value_error_in_models():
    from bike_cli.models.authors import LOSSES, training_loss

    assert list(LOSSES) == list(pf.RULE_NAMES["loss"])
    with pytest.raises(InputError) as err:
        get_profile("bike").branch_training("focal")
    assert str(err.value) == "--loss 'focal' is not one of bike, authors"
    assert get_profile("authors").branch_training(None)["loss"] == "authors"
    with pytest.raises(ValueError, match="loss 'focal' is not one of bike, authors") as err:
        training_loss("focal")
    assert not isinstance(err.value, InputError)


def test_the_frame_indices_of_a_third_profile_are_honoured_by_the_datasets(third):
    from bike_cli.data.clip_dataset import MultiViewClips, TrainClips
    from bike_cli.data.sampling import ViewLayout
    from bike_cli.data.video_lists import VideoEntry

    entry = VideoEntry("v", Path("v.mp4"), (0,), 1)

    def indices(compat: str) -> list[list[int]]:
        """Test and training clips of MultiViewClips, and TrainClips' indices, of a 300-frame video."""
        views = [MultiViewClips([(0, entry)], frames=8, layout=ViewLayout(2, 1), size=32, mode=mode,
                                profile=get_profile(compat))._indices(entry, 300).tolist() for mode in ("test", "train")]
        train = TrainClips([(0, entry)], frames=8, size=32, augment=None, num_classes=1, profile=get_profile(compat))
        return [*views, train.frame_indices("v", 300).tolist()]

    bike, authors = indices("bike"), indices("authors")
    assert all(b != a for b, a in zip(bike, authors))
    theirs = {"test_indices": pf.TICK_STARTS, "train_indices": pf.ROUNDED_SEGMENTS}
    ours = {"test_indices": pf.SEGMENT_CENTRES, "train_indices": pf.SEGMENT_UNIFORM}
    assert indices(third("bike", **theirs)) == authors
    assert indices(third("authors", **ours)) == bike
    assert indices(third("bike", test_indices=pf.TICK_STARTS)) == [authors[0], *bike[1:]]


def test_the_test_transform_of_a_third_profile_is_honoured_by_multiview_clips(third, sample_data):
    from bike_cli.data.class_names import read_class_names
    from bike_cli.data.clip_dataset import MultiViewClips
    from bike_cli.data.sampling import ViewLayout
    from bike_cli.data.video_lists import read_video_list

    entry = read_video_list(sample_data.val, class_names=read_class_names(sample_data.classes)).entries[0]

    def pixels(compat: str) -> torch.Tensor:
        item = MultiViewClips([(0, entry)], frames=4, layout=ViewLayout(1, 3), size=48, profile=get_profile(compat))[0]
        assert item.error is None, item.error
        return item.frames

    # the transform alone changed: equal to the other side's profile with the indices alone changed
    theirs_ours = pixels(third("bike", test_transform=pf.PIL_SCALE))
    assert torch.equal(theirs_ours, pixels(third("authors", test_indices=pf.SEGMENT_CENTRES)))
    assert not torch.equal(theirs_ours, pixels("bike"))
    ours_theirs = pixels(third("authors", test_transform=pf.DECODE_RESIZE))
    assert torch.equal(ours_theirs, pixels(third("bike", test_indices=pf.TICK_STARTS)))
    assert not torch.equal(ours_theirs, pixels("authors"))


def test_the_video_score_rules_of_a_third_profile_are_honoured(third):
    name = third("bike", fused_video_scores=pf.AUTHORS_VALIDATE, video_scores=pf.AUTHORS_TEST)
    assert (video_score_rule(name, fusing=True), video_score_rule(name, fusing=False)) == \
        ("authors-validate", "authors-test")
    with pytest.raises(InputError, match="test.py scores"):
        check_fusable(name, "authors-test", "v.csv")
    name = third("authors", fused_video_scores=pf.AUTHORS_TEST)  # a profile that fuses test.py's scores
    assert video_score_rule(name, fusing=True) == "authors-test"
    check_fusable(name, "authors-test", "v.csv")


def test_the_optimiser_groups_of_a_third_profile_are_honoured_by_the_branches(third):
    from bike_cli.engine.training_loop import PARAM_GROUPS
    from bike_cli.models.attrs_branch import AttributesBranch
    from bike_cli.models.video_branch import VideoBranch

    class _Branch(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.visual, self.text, self.head = nn.Linear(2, 2), nn.Linear(2, 2), nn.Linear(2, 2)
            self.logit_scale = nn.Module()
            self.logit_scale.log_scale = nn.Parameter(torch.zeros(()))

    model = _Branch()

    def groups(branch, compat: str) -> list[tuple]:
        return [(g["lr"], g["weight_decay"], [id(p) for p in g["params"]])
                for g in branch.param_groups(model, 1e-3, 0.1, 0.2, PARAM_GROUPS[get_profile(compat).optimizer_groups])]

    for branch in (VideoBranch, AttributesBranch):
        bike, authors = groups(branch, "bike"), groups(branch, "authors")
        assert bike != authors
        assert groups(branch, third("bike", optimizer_groups=pf.DECAY_ALL)) == authors
        assert groups(branch, third("authors", optimizer_groups=pf.DECAY_EXEMPT)) == bike


def test_the_init_from_switch_of_a_third_profile_is_honoured_by_train_video(third, monkeypatch):
    from bike_cli.config.stages import TrainVideoConfig
    from bike_cli.stages import train_video

    monkeypatch.setattr(train_video, "is_authors_checkpoint", lambda path: True)

    def tokens(compat: str) -> str:
        return train_video._vcs_tokens(TrainVideoConfig(init_from=Path("theirs.pt"), compat=compat))

    assert (tokens("bike"), tokens("authors")) == ("words", "all")
    assert tokens(third("bike", authors_init_all_tokens=True)) == "all"
    assert tokens(third("authors", authors_init_all_tokens=False)) == "words"


# ----------------------------------------------------------------------------- no name tests left


def _name_comparisons(path: Path) -> list[str]:
    found = []
    for node in ast.walk(ast.parse(path.read_text())):
        if not isinstance(node, ast.Compare):
            continue
        for sub in ast.walk(node):
            if (isinstance(sub, ast.Constant) and sub.value in PROFILES) or \
                    (isinstance(sub, ast.Name) and sub.id in ("BIKE", "AUTHORS")) or \
                    (isinstance(sub, ast.Attribute) and sub.attr in ("BIKE", "AUTHORS")):
                found.append(f"{path.relative_to(REPO)}:{node.lineno}: {ast.unparse(node)}")
                break
    return found


def test_no_code_outside_the_profile_and_the_cli_compares_a_profile_name():
    package = REPO / "bike_cli"
    files = [f for f in sorted(package.rglob("*.py"))
             if f != package / "config" / "profile.py" and (package / "cli") not in f.parents]
    assert files and not [hit for f in files for hit in _name_comparisons(f)]
    assert not (package / "config" / "compat.py").exists()
