"""The rules in which the two readings differ: scores, losses, AdamW groups. The authors' (github whwu95/BIKE,
`--compat authors`) are named `authors_*`; bike's score rules take the cosine logits and exp(logit scale)."""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn

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


# (module, CLIP layers' prefix, logit scale's prefix, lr, clip_lr_ratio, weight_decay) -> AdamW groups
GroupRule = Callable[[nn.Module, str, str, float, float, float], list[dict]]


def decay_exempt_groups(module: nn.Module, clip_prefix: str, scale_prefix: str, lr: float, clip_lr_ratio: float,
                        weight_decay: float) -> list[dict]:
    """The paper reading's groups of `module`'s trainable parameters: CLIP's (`clip_prefix`) at `lr * clip_lr_ratio`,
    the others (the logit scale among them) at `lr`; weight decay on matrices only (not embeddings, positions)."""
    groups: dict[tuple[bool, bool], list[nn.Parameter]] = {}
    for name, param in module.named_parameters():
        if not param.requires_grad:
            continue
        is_clip = name.startswith(clip_prefix)
        decay = param.ndim >= 2 and "position" not in name and "embedding" not in name
        groups.setdefault((is_clip, decay), []).append(param)
    return [
        {"params": params, "lr": lr * (clip_lr_ratio if is_clip else 1.0),
         "weight_decay": weight_decay if decay else 0.0,
         "name": f"{'clip' if is_clip else 'new'}{'' if decay else '_no_decay'}"}
        for (is_clip, decay), params in sorted(groups.items())
    ]


def decay_all_groups(module: nn.Module, clip_prefix: str, scale_prefix: str, lr: float, clip_lr_ratio: float,
                     weight_decay: float) -> list[dict]:
    """The authors' groups (utils/solver.py): every CLIP parameter, the logit scale (`scale_prefix`)
    included, at `lr * clip_lr_ratio`, the new layers at `lr`; weight decay on every parameter."""
    clip, new = [], []
    for name, param in module.named_parameters():
        if param.requires_grad:
            (clip if name.startswith((clip_prefix, scale_prefix)) else new).append(param)
    groups = [("clip", clip, lr * clip_lr_ratio), ("new", new, lr)]
    return [{"params": p, "lr": group_lr, "weight_decay": weight_decay, "name": name}
            for name, p, group_lr in groups if p]
