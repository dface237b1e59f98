"""The authors' scoring and loss rules (github whwu95/BIKE), used under `--compat authors`.

- multi-view scores (`test.py`): per view the softmax over classes of the *unscaled* cosine logits,
  the mean over the views, then a softmax again: `authors_view_scores`;
- the scores their fusion (`utils.fusion_acc`) takes, as `train.py: validate()` writes them: the same
  without the second softmax: `authors_validate_scores`;
- Attributes-branch scores (`train_attributes.py` validation): the softmax of the unscaled cosine
  logits, averaged over a video's rows: `authors_attrs_scores`;
- the training loss (`utils/NCELoss.py`, `train.py`): `KLDivLoss(reduction="mean")` between the
  log-softmax of the scaled logits and softmax(10 x ground truth), times the batch size, for the
  logits and their transpose, averaged: `authors_kl_loss`;
- the zero-shot half-class scorer is `bike_cli.eval.authors_zero_shot`.

The paper reading's rules sit beside them (`scaled_view_scores`, `scaled_row_scores`): every score rule takes
the unscaled cosine logits and exp(logit scale); `bike_cli.engine.evaluation` maps the profile's rule
names to these functions.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from bike_cli.models.loss import paper_contrastive_loss


def scaled_view_scores(logits: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    """Cosine logits [b, V, K] -> mean over V of softmax(scale x logits): [b, K] (the paper reading's rule)."""
    return (logits * scale).softmax(-1).mean(1)


def scaled_row_scores(logits: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    """Cosine logits [R, K] -> softmax(scale x logits): [R, K] (the paper reading's rule for attribute sentences)."""
    return (logits * scale).softmax(-1)


def authors_view_scores(logits: torch.Tensor) -> torch.Tensor:
    """Unscaled cosine logits [b, V, K] -> softmax(mean over V of softmax(logits)): [b, K]."""
    return logits.softmax(-1).mean(1).softmax(-1)


def authors_validate_scores(logits: torch.Tensor) -> torch.Tensor:
    """Unscaled cosine logits [b, V, K] -> mean over V of softmax(logits): [b, K] (their validate())."""
    return logits.softmax(-1).mean(1)


def authors_attrs_scores(logits: torch.Tensor) -> torch.Tensor:
    """Unscaled cosine logits [R, K] of attribute sentences -> softmax over K: [R, K]."""
    return logits.softmax(-1)


def _kl_term(scaled: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """KLDivLoss(mean)(log_softmax(scaled), softmax(10 * targets)) * len(scaled), rows over dim 1."""
    probs = F.softmax(targets * 10, 1)
    # reduction="mean" (their KLDivLoss) averages over every element; spelt out so that torch's planned
    # change of "mean" to "batchmean" does not change it
    return F.kl_div(F.log_softmax(scaled, 1), probs, reduction="sum") / probs.numel() * len(scaled)


def authors_kl_loss(logits: torch.Tensor, targets: torch.Tensor, logit_scale: torch.Tensor) -> torch.Tensor:
    """The authors' symmetric loss of cosine logits [B, C] and 0/1 targets [B, C]; log-space `logit_scale`."""
    scaled = logit_scale.exp() * logits  # [B, C]
    targets = targets.to(scaled.dtype)
    return (_kl_term(scaled, targets) + _kl_term(scaled.T, targets.T)) / 2


LOSSES = {"bike": paper_contrastive_loss, "authors": authors_kl_loss}  # --loss


def training_loss(name: str):
    """The loss function called `name`: (cosine logits [B, C], 0/1 targets [B, C], log scale) -> 0-d. A
    user's --loss is checked by `config.profile.Profile.branch_training`."""
    if name not in LOSSES:
        raise ValueError(f"loss {name!r} is not one of {', '.join(LOSSES)}")
    return LOSSES[name]
