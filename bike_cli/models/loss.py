"""BIKE's symmetric video-category contrastive loss (Eq. 7) with every positive pair a target.

Training scores each video against the batch's own prompts (C = B classes, duplicates kept), with
targets[i, j] = [y_i == y_j] (`same_label_targets`) or, for multi-label data, 1 where videos i and j
share a label (`shared_label_targets`). `paper_contrastive_loss` is Eq. 7 for that matrix: each
row's / column's cross-entropy against its positives, uniformly weighted (the 1/|K(i)| terms).
"""

from __future__ import annotations

import math

import torch
from torch import nn

MAX_LOG_SCALE = math.log(100.0)  # CLIP's cap on the logit scale (exp(scale) <= 100), as CLIP trains it


def paper_contrastive_loss(logits: torch.Tensor, targets: torch.Tensor, logit_scale: torch.Tensor) -> torch.Tensor:
    """Symmetric multi-positive cross-entropy of cosine logits [B, C] against 0/1 targets [B, C].

    video->text: per row, log-softmax over C of exp(logit_scale) * logits, against the row of
    targets normalised to sum 1; text->video: likewise per column, softmax over B. The result is
    the mean of the two directions, each the mean over its rows (columns) that have at least one
    positive; rows (columns) without a positive are skipped (with none at all, that term is 0).
    `logit_scale` is log-space (a 0-d or [1] tensor, e.g. `LogitScale()()`).
    """
    if logits.ndim != 2 or logits.shape != targets.shape:
        raise ValueError(f"logits {tuple(logits.shape)} and targets {tuple(targets.shape)} "
                         "must both be [B, C]")
    scaled = logit_scale.exp() * logits  # [B, C]
    targets = targets.to(scaled.dtype)
    video_to_text = _soft_cross_entropy(scaled.log_softmax(1), targets, dim=1)  # rows: softmax over C
    text_to_video = _soft_cross_entropy(scaled.log_softmax(0), targets, dim=0)  # columns: softmax over B
    return (video_to_text + text_to_video) / 2


def _soft_cross_entropy(log_probs: torch.Tensor, targets: torch.Tensor, dim: int) -> torch.Tensor:
    """Mean over the slices along `dim` with a positive of -sum(normalised targets * log_probs)."""
    counts = targets.sum(dim)  # positives per slice
    per_slice = -(targets * log_probs).sum(dim) / counts.clamp(min=1)  # = -1/|K| sum_{k in K} log p_k
    has_positive = (counts > 0).to(log_probs.dtype)
    return (per_slice * has_positive).sum() / has_positive.sum().clamp(min=1)


def same_label_targets(labels: torch.Tensor) -> torch.Tensor:
    """Targets [B, B] for single-label `labels` [B]: 1 where y_i == y_j (the diagonal included)."""
    return (labels.unsqueeze(1) == labels.unsqueeze(0)).float()


def shared_label_targets(multi_hot: torch.Tensor) -> torch.Tensor:
    """Targets [B, B] for multi-hot labels [B, K]: 1 where videos i and j share at least one label."""
    m = multi_hot.float()
    return (m @ m.T > 0).float()


class LogitScale(nn.Module):
    """A learnable log-space logit scale; the forward returns it clamped at `cap` (log(100)).

    `cap=None` leaves it as it is: zero-shot scoring uses the model's own scale, which for SigLIP
    models is above CLIP's cap (their sigmoid loss has no such limit); `--compat authors` training
    sets it to None too (the authors' code never clamps the scale).
    """

    def __init__(self, init: float | torch.Tensor = math.log(1 / 0.07), cap: float | None = MAX_LOG_SCALE) -> None:
        super().__init__()
        self.log_scale = nn.Parameter(torch.as_tensor(init, dtype=torch.float32).detach().clone().reshape(()))
        self.cap = cap

    @classmethod
    def from_clip(cls, model: nn.Module, cap: float | None = MAX_LOG_SCALE) -> LogitScale:
        """Initialised from CLIP's own (log-space) `model.logit_scale`."""
        return cls(model.logit_scale, cap)

    def forward(self) -> torch.Tensor:
        """The 0-d log-space scale, at most `cap` (no gradient while above the cap)."""
        return self.log_scale if self.cap is None else self.log_scale.clamp(max=self.cap)
