"""The Video branch as one module: (CLIP image tower, end to end; None on cached features) -> temporal
head -> logits, plus the logit scale."""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

from bike_cli.models.authors import GroupRule, decay_exempt_groups, scaled_view_scores
from bike_cli.models.heads import VideoHead
from bike_cli.models.loss import LogitScale, gather_with_grad, paper_contrastive_loss, same_label_targets
from bike_cli.models.text import ClassTexts

# (cosine logits [b, V, K], exp(logit scale)) -> scores [b, K]: `bike_cli.models.authors` has them
ViewRule = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
# (cosine logits [B, C], 0/1 targets [B, C], log-space logit scale) -> 0-d training loss
Loss = Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]


def image_features(visual: nn.Module, pixels: torch.Tensor) -> torch.Tensor:
    """Image embeddings [N, D] of pixels [N, 3, S, S] from a CLIP image tower (CoCa's tower also
    returns its token embeddings: the pooled latent is the first of the pair)."""
    out = visual(pixels)
    return out[0] if isinstance(out, tuple) else out


class VideoBranch(nn.Module):
    """Trainable parts of the Video branch. Parameter names: `head.*`, `logit_scale.*`, `visual.*`."""

    def __init__(self, head: VideoHead, logit_scale: LogitScale, visual: nn.Module | None = None,
                 loss_fn: Loss = paper_contrastive_loss) -> None:
        super().__init__()
        self.head = head
        self.logit_scale = logit_scale
        self.visual = visual
        self.loss_fn = loss_fn  # Eq. 7 by default; `models.authors.LOSSES` names the others

    def frame_embeddings(self, pixels: torch.Tensor) -> torch.Tensor:
        """Normalised pixels [B, T, 3, S, S] -> frame embeddings [B, T, D] (end-to-end mode)."""
        if self.visual is None:
            raise RuntimeError("this Video branch has no visual encoder (it was built for cached features)")
        b, t = pixels.shape[:2]
        return image_features(self.visual, pixels.flatten(0, 1)).view(b, t, -1)

    def forward(self, inputs: torch.Tensor, targets: torch.Tensor, classes: ClassTexts) -> torch.Tensor:
        """The training loss (Eq. 7) of this process's batch against the whole batch, gathered over processes.
        inputs: frame embeddings [b, T, D] (cached) or pixels [b, T, 3, S, S] (end to end); targets: class indices
        [b] (against the batch's own prompts: [B, B]) or multi-hot [b, K] (all K classes)."""
        frames = self.frame_embeddings(inputs) if self.visual is not None else inputs  # [b, T, D]
        encoded = gather_with_grad(self.head.encode(frames.float()))  # [B, T, D]
        targets = gather_with_grad(targets)  # [B] or [B, K]
        if targets.ndim == 1:  # [B, B]
            logits, positives = self.head.score(encoded, classes.select(targets)), same_label_targets(targets)
        else:  # [B, K]
            logits, positives = self.head.score(encoded, classes), targets
        return self.loss_fn(logits.float(), positives.float(), self.logit_scale())

    @torch.no_grad()
    def class_probabilities(self, frames: torch.Tensor, classes: ClassTexts,
                            rule: ViewRule = scaled_view_scores) -> torch.Tensor:
        """Frame embeddings [b, V, T, D] -> class scores [b, K]: `rule` of the views' cosine logits
        [b, V, K] and exp(logit scale) (default: softmax(scale * logits) averaged over the V views)."""
        b, v = frames.shape[:2]
        logits = self.head(frames.flatten(0, 1).float(), classes)  # [b*V, K]
        return rule(logits.view(b, v, -1), self.logit_scale().exp())

    def param_groups(self, lr: float, clip_lr_ratio: float, weight_decay: float,
                     rule: GroupRule = decay_exempt_groups) -> list[dict]:
        """AdamW groups by `rule`: new layers at `lr`, CLIP's visual encoder at `lr * clip_lr_ratio`
        (`decay_all_groups`: the logit scale with CLIP's layers, decay on every parameter)."""
        return rule(self, "visual.", "logit_scale.", lr, clip_lr_ratio, weight_decay)
