"""The code of each profile rule that the models implement, keyed by the rule's name in `config.profile`.

A stage resolves its `Profile` once and hands these functions to the models and loops, which never
see a rule's name: the Video branch's score rules (`VIDEO_SCORES[profile.video_score_rule(fusing)]`:
cosine logits [b, V, K] and exp(logit scale) -> [b, K]), the Attributes branch's
(`ATTRS_SCORES[profile.attrs_scores]`: [R, K] -> [R, K]) and the AdamW groups
(`PARAM_GROUPS[profile.optimizer_groups]`). The losses are named by `--loss` (`models.authors.LOSSES`).
"""

from __future__ import annotations

from bike_cli.config.profile import AUTHORS_TEST, AUTHORS_VALIDATE, BIKE_SOFTMAX, DECAY_ALL, DECAY_EXEMPT
from bike_cli.models.authors import (
    GroupRule,
    authors_attrs_scores,
    authors_validate_scores,
    authors_view_scores,
    decay_all_groups,
    decay_exempt_groups,
    scaled_row_scores,
    scaled_view_scores,
)
from bike_cli.models.video_branch import ViewRule

VIDEO_SCORES: dict[str, ViewRule] = {
    BIKE_SOFTMAX: scaled_view_scores,
    AUTHORS_TEST: lambda logits, scale: authors_view_scores(logits),  # unscaled: their test.py
    AUTHORS_VALIDATE: lambda logits, scale: authors_validate_scores(logits),  # unscaled: their validate()
}
ATTRS_SCORES: dict[str, ViewRule] = {
    BIKE_SOFTMAX: scaled_row_scores,
    AUTHORS_VALIDATE: lambda logits, scale: authors_attrs_scores(logits),
}
PARAM_GROUPS: dict[str, GroupRule] = {DECAY_EXEMPT: decay_exempt_groups, DECAY_ALL: decay_all_groups}
