"""AdamW parameter groups: CLIP layers at a lower learning rate; the rule of weight decay and of the
logit scale's group is one of these functions (`bike_cli.engine.training_loop.PARAM_GROUPS` names them)."""

from __future__ import annotations

from collections.abc import Callable

from torch import nn

# (module, CLIP layers' prefix, logit scale's prefix, lr, clip_lr_ratio, weight_decay) -> AdamW groups
GroupRule = Callable[[nn.Module, str, str, float, float, float], list[dict]]


def decay_exempt_groups(module: nn.Module, clip_prefix: str, scale_prefix: str, lr: float, clip_lr_ratio: float,
                        weight_decay: float) -> list[dict]:
    """The paper reading's groups of `module`'s trainable parameters.

    Parameters whose name starts with `clip_prefix` (pretrained CLIP layers) get `lr * clip_lr_ratio`,
    the others (new layers, the logit scale under `scale_prefix` among them) `lr`. Weight decay applies
    to matrices only: not to biases, norms, embeddings, position tables or the logit scale.
    """
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
