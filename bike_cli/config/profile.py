"""The `--compat` profile: the paper reading (`bike`, the default) or the authors' released code (`authors`).
A stage resolves it once (`get_profile`); a layer looks a field's value up in its table, never compares
names (docs/architecture.md, "Words"). Files record it in a `compat` field (absent means `bike`)."""

from __future__ import annotations

import math
from dataclasses import dataclass

from bike_cli.errors import CacheMismatchError, InputError

PAPER_READING = "bike"  # the profile of this project's reading of the paper (`--compat bike`)
AUTHORS = "authors"

# How a score CSV's scores were made from a branch's cosine logits (the "scores" field of its sidecar)
BIKE_SOFTMAX = "bike-softmax"  # softmax over classes of logit_scale x logits per view, mean over views
AUTHORS_TEST = "authors-test"  # their test.py: softmax of the cosines per view, view mean, softmax again
AUTHORS_VALIDATE = "authors-validate"  # their validate(): softmax of the cosines per view, view mean
COSINE = "cosine"  # plain cosine similarities (gen-attributes --scores)
FUSED = "fused"  # a weighted sum of other score files

# Frame indices of test clips (bike_cli.data.sampling.TEST_INDICES)
SEGMENT_CENTRES = "segment-centres"  # clip c of C at offset (c + 0.5) / C of each of the T segments
TICK_STARTS = "tick-starts"  # their _get_test_indices: clip starts linspace(0, n/T - 1, C), steps of n/T
# Frame indices of training clips (bike_cli.data.sampling.TRAIN_INDICES)
SEGMENT_UNIFORM = "segment-uniform"  # a uniform random position in each n/T segment
ROUNDED_SEGMENTS = "rounded-segments"  # their _sample_indices: randint over rounded (n - 1)/T segments
# Test transform (bike_cli.data.clip_dataset, bike_cli.stages.predict)
DECODE_RESIZE = "decode-resize"  # short side resized to the input size while decoding, square crops
PIL_SCALE = "pil-scale"  # their GroupScale (PIL bicubic, 256 for 224 px) of full-size frames, their crops
# The zero-shot half-class scorer (bike_cli.stages.evaluate)
BRANCH_SCORES = "branch-scores"  # the Video branch's scores
FRAME_SOFTMAX = "frame-softmax"  # their test_zeroshot.py: per-frame softmax(100 x frame . class), their draws
# AdamW parameter groups (bike_cli.models.authors)
DECAY_EXEMPT = "decay-exempt"  # no decay on biases, norms, embeddings and the logit scale (at the head's lr)
DECAY_ALL = "decay-all"  # decay on every parameter, the logit scale with CLIP's parameters
# When the lr schedule steps (bike_cli.engine.training_loop.Trainer)
PER_OPTIMIZER_STEP = "optimizer-step"  # warm-up cosine per optimiser step, accumulation across the run
PER_BATCH = "batch"  # their train.py: per batch (every 10th), accumulation counted from each epoch's start
# Mixed precision of `--precision auto` on CUDA (bike_cli.engine.training_loop.accelerate_precision)
BF16_ELSE_FP16 = "bf16-else-fp16"  # bf16 where the GPU has it, else fp16 with a GradScaler
FP16 = "fp16"  # their amp: fp16 autocast with a GradScaler

CLIP_LOGIT_CAP = math.log(100.0)  # CLIP's cap on the log-space logit scale (exp(scale) <= 100)
AUTHORS_FUSE = 0.7  # their utils.fusion_acc: 0.7 x video + 0.3 x attributes
AUTHORS_CROPS = (1, 3, 5, 10)  # their test.py --test_crops


# The rule names each field of a Profile may take: the layer that implements a field has one entry per
# name (tests/test_config_profile.py holds each table against this), and a Profile with any other value
# fails when it is made, so no rule can fall through to another's.
RULE_NAMES: dict[str, tuple[str, ...]] = {
    "test_indices": (SEGMENT_CENTRES, TICK_STARTS),
    "train_indices": (SEGMENT_UNIFORM, ROUNDED_SEGMENTS),
    "test_transform": (DECODE_RESIZE, PIL_SCALE),
    "video_scores": (BIKE_SOFTMAX, AUTHORS_TEST, AUTHORS_VALIDATE),
    "fused_video_scores": (BIKE_SOFTMAX, AUTHORS_TEST, AUTHORS_VALIDATE),
    "attrs_scores": (BIKE_SOFTMAX, AUTHORS_VALIDATE),
    "zero_shot": (BRANCH_SCORES, FRAME_SOFTMAX),
    "loss": ("bike", "authors"),
    "optimizer_groups": (DECAY_EXEMPT, DECAY_ALL),
    "lr_cadence": (PER_OPTIMIZER_STEP, PER_BATCH),
    "auto_precision": (BF16_ELSE_FP16, FP16),
}


@dataclass(frozen=True)
class Profile:
    """The rules of one `--compat` profile (docs/reproducing.md, "The authors' released code")."""

    test_indices: str  # frame indices of test clips: SEGMENT_CENTRES | TICK_STARTS
    train_indices: str  # frame indices of training clips: SEGMENT_UNIFORM | ROUNDED_SEGMENTS
    test_transform: str  # resize and crops of test frames: DECODE_RESIZE | PIL_SCALE
    crops: tuple[int, ...]  # the spatial crop counts `--views CxS` takes
    video_scores: str  # the Video branch's score rule where nothing is fused (score CSV sidecar `scores`)
    fused_video_scores: str  # ... where the video scores are fused with the attributes'
    attrs_scores: str  # the Attributes branch's score rule
    fuse_weight: float | None  # the video weight of a fusion without --fuse / --weights (None: the paper reading's rule: no fusion without --fuse)
    zero_shot: str  # the scorer of --protocol zero-shot-half: BRANCH_SCORES | FRAME_SOFTMAX
    loss: str  # the default --loss (bike_cli.models.authors.LOSSES)
    optimizer_groups: str  # AdamW groups: DECAY_EXEMPT | DECAY_ALL
    logit_scale_cap: float | None  # the cap on the log-space logit scale in training (None: not clamped)
    lr_cadence: str  # when the lr schedule steps and accumulation counts: PER_OPTIMIZER_STEP | PER_BATCH
    drop_last: bool  # whether training drops an epoch's last partial batch
    auto_precision: str  # `--precision auto` on CUDA: BF16_ELSE_FP16 | FP16
    authors_init_all_tokens: bool  # an authors' checkpoint as --init-from makes VCS query all tokens

    def __post_init__(self) -> None:
        for name, known in RULE_NAMES.items():
            if getattr(self, name) not in known:
                raise ValueError(f"Profile.{name} {getattr(self, name)!r} has no rule: one of {', '.join(known)}")

    def video_score_rule(self, fusing: bool) -> str:
        """The Video branch's score rule where it is fused (`fusing`) or not: the authors' fusion
        (`utils.fusion_acc`) fuses `validate()`'s single-softmax scores, their `test.py` reports the double softmax."""
        return self.fused_video_scores if fusing else self.video_scores

    def branch_training(self, loss: str | None) -> dict:
        """The branch spec's training fields: the loss (`loss`, the --loss given, else the profile's) and the
        cap on the log-space logit scale. InputError for a --loss with no rule."""
        if loss and loss not in RULE_NAMES["loss"]:
            raise InputError(f"--loss {loss!r} is not one of {', '.join(RULE_NAMES['loss'])}")
        return {"loss": loss or self.loss, "logit_scale_cap": self.logit_scale_cap}


PROFILES: dict[str, Profile] = {
    PAPER_READING: Profile(
        test_indices=SEGMENT_CENTRES, train_indices=SEGMENT_UNIFORM, test_transform=DECODE_RESIZE, crops=(1, 3),
        video_scores=BIKE_SOFTMAX, fused_video_scores=BIKE_SOFTMAX, attrs_scores=BIKE_SOFTMAX, fuse_weight=None,
        zero_shot=BRANCH_SCORES, loss="bike", optimizer_groups=DECAY_EXEMPT, logit_scale_cap=CLIP_LOGIT_CAP,
        lr_cadence=PER_OPTIMIZER_STEP, drop_last=False, auto_precision=BF16_ELSE_FP16,
        authors_init_all_tokens=False,
    ),
    AUTHORS: Profile(
        test_indices=TICK_STARTS, train_indices=ROUNDED_SEGMENTS, test_transform=PIL_SCALE, crops=AUTHORS_CROPS,
        video_scores=AUTHORS_TEST, fused_video_scores=AUTHORS_VALIDATE, attrs_scores=AUTHORS_VALIDATE,
        fuse_weight=AUTHORS_FUSE, zero_shot=FRAME_SOFTMAX, loss="authors", optimizer_groups=DECAY_ALL,
        logit_scale_cap=None, lr_cadence=PER_BATCH, drop_last=True, auto_precision=FP16,
        authors_init_all_tokens=True,
    ),
}


DEFAULT_PROFILE = PROFILES[PAPER_READING]  # what a library function follows when its caller names no profile


def get_profile(name: str) -> Profile:
    """The profile called `name`, else InputError listing them."""
    if name not in PROFILES:
        raise InputError(f"--compat {name!r} is not one of {', '.join(PROFILES)}")
    return PROFILES[name]


def recorded_profile(value: object) -> str:
    """The profile a file records (`None` or an empty value: a file from before profiles, i.e. `bike`)."""
    return str(value) if value else PAPER_READING


def check_same_profile(own: str, recorded: str, source: object) -> None:
    """CacheMismatchError when `source` was made under another profile than the one in use."""
    if own != recorded:
        raise CacheMismatchError(
            f"{source} was made with --compat {recorded}, but this command runs with --compat {own}: "
            f"pass --compat {recorded}, or remake {source} with --compat {own}"
        )


def check_fusable(profile: str, rule: str | None, source: object) -> None:
    """InputError when `source` holds scores that the profile's fusion does not fuse: its unfused
    video scores where these differ from the ones it fuses (the authors' test.py double softmax)."""
    own = get_profile(profile)
    if rule in {own.video_scores} - {own.fused_video_scores}:  # a rule it reports but does not fuse
        raise InputError(
            f"{source} holds the authors' test.py scores (softmax of the view mean of softmaxes, nearly flat "
            f"over many classes); their fusion (utils.fusion_acc) fuses validate()'s single-softmax scores: "
            f"rerun bike eval --compat authors with --attributes, whose video_scores.csv holds those"
        )
