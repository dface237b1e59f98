"""The `--compat` profile: bike's own defaults, or the authors' released code's behaviour.

`bike` (the default) computes the paper's formulas with bike's choices where the paper leaves room;
`authors` does what github.com/whwu95/BIKE does (test.py, train.py, datasets/, utils/; the list is in
docs/reproducing.md). Every file bike writes records the profile that made it in a `compat` field
(absent means `bike`), and stages that read such a file check that it matches their own.
"""

from __future__ import annotations

from bike_cli.errors import CacheMismatchError, InputError

BIKE = "bike"
AUTHORS = "authors"
PROFILES = (BIKE, AUTHORS)

# How a score CSV's scores were made from a branch's cosine logits (the "scores" field of its sidecar)
BIKE_SOFTMAX = "bike-softmax"  # softmax over classes of logit_scale x logits per view, mean over views
AUTHORS_TEST = "authors-test"  # their test.py: softmax of the cosines per view, view mean, softmax again
AUTHORS_VALIDATE = "authors-validate"  # their validate(): softmax of the cosines per view, view mean
COSINE = "cosine"  # plain cosine similarities (gen-attributes --scores)
FUSED = "fused"  # a weighted sum of other score files


def check_profile(name: str) -> str:
    """`name` if it is a profile, else InputError listing them."""
    if name not in PROFILES:
        raise InputError(f"--compat {name!r} is not one of {', '.join(PROFILES)}")
    return name


def recorded_profile(value: object) -> str:
    """The profile a file records (`None` or an empty value: a file from before profiles, i.e. `bike`)."""
    return str(value) if value else BIKE


def check_same_profile(own: str, recorded: str, source: object) -> None:
    """CacheMismatchError when `source` was made under another profile than the one in use."""
    if own != recorded:
        raise CacheMismatchError(
            f"{source} was made with --compat {recorded}, but this command runs with --compat {own}: "
            f"pass --compat {recorded}, or remake {source} with --compat {own}"
        )


def video_score_rule(profile: str, fusing: bool) -> str:
    """The Video branch's score rule under `profile`: the authors' fusion (`utils.fusion_acc`) fuses
    `validate()`'s single-softmax scores, their multi-view test (`test.py`) reports the double softmax."""
    if profile != AUTHORS:
        return BIKE_SOFTMAX
    return AUTHORS_VALIDATE if fusing else AUTHORS_TEST


def check_fusable(profile: str, rule: str | None, source: object) -> None:
    """InputError when `source` holds scores that the profile's fusion does not fuse."""
    if profile == AUTHORS and rule == AUTHORS_TEST:
        raise InputError(
            f"{source} holds the authors' test.py scores (softmax of the view mean of softmaxes, nearly flat "
            f"over many classes); their fusion (utils.fusion_acc) fuses validate()'s single-softmax scores: "
            f"rerun bike eval --compat authors with --attributes, whose video_scores.csv holds those"
        )
