"""BIKE's symmetric video-category contrastive loss (Eq. 7), its logit scale, and the distributed gather that
makes the batch global over processes (the Distributed InfoNCE of the paper's Appendix A.6)."""

from __future__ import annotations

import math

import torch
import torch.distributed as dist
from torch import nn

MAX_LOG_SCALE = math.log(100.0)  # CLIP's cap on the logit scale (exp(scale) <= 100), as CLIP trains it
_MAX_DIMS = 8  # gather_with_grad exchanges shapes as fixed-size vectors


def paper_contrastive_loss(logits: torch.Tensor, targets: torch.Tensor, logit_scale: torch.Tensor) -> torch.Tensor:
    """Symmetric multi-positive cross-entropy of cosine logits [B, C] against 0/1 targets [B, C], log-space
    `logit_scale`: per row (softmax over C) and column (over B) against the targets normalised to sum 1 (the
    1/|K(i)| of Eq. 7), each direction the mean over its slices with a positive, the result their mean."""
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


class LogitScale(nn.Module):
    """A learnable log-space logit scale; the forward returns it clamped at `cap` (log(100)); `cap=None` leaves it:
    zero-shot scoring (SigLIP's scale is above CLIP's cap) and `--compat authors` training (never clamped)."""

    def __init__(self, init: float | torch.Tensor = math.log(1 / 0.07), cap: float | None = MAX_LOG_SCALE) -> None:
        super().__init__()
        self.log_scale = nn.Parameter(torch.as_tensor(init, dtype=torch.float32).detach().clone().reshape(()))
        self.cap = cap

    def forward(self) -> torch.Tensor:
        """The 0-d log-space scale, at most `cap` (no gradient while above the cap)."""
        return self.log_scale if self.cap is None else self.log_scale.clamp(max=self.cap)


def gather_with_grad(x: torch.Tensor) -> torch.Tensor:
    """x [n, ...] on each of W ranks -> [W * n, ...] (rank order); x itself without a process group. The backward
    sums the gradient over ranks and keeps this rank's slice (with DDP's averaging: the one-process gradient of the
    whole batch). Every rank must pass the same shape: ValueError on every rank otherwise."""
    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return x
    if x.ndim > _MAX_DIMS:
        raise ValueError(f"gather_with_grad takes tensors of at most {_MAX_DIMS} dims, not {x.ndim}")
    shape = torch.full((_MAX_DIMS,), -1, dtype=torch.long, device=x.device)  # fixed size on every rank
    shape[:x.ndim] = torch.tensor(x.shape, dtype=torch.long)
    shapes = [torch.empty_like(shape) for _ in range(dist.get_world_size())]
    dist.all_gather(shapes, shape)
    listed = [tuple(d for d in s.tolist() if d >= 0) for s in shapes]
    if len(set(listed)) > 1:
        raise ValueError(f"gather_with_grad needs the same tensor shape on every rank; got {listed} "
                         "(pad or drop the last, smaller batch)")
    return _GatherWithGrad.apply(x)


class _GatherWithGrad(torch.autograd.Function):
    """Forward: all_gather + concatenate. Backward: all_reduce(SUM) of the gradient, own slice."""

    @staticmethod
    def forward(ctx, x: torch.Tensor) -> torch.Tensor:
        x = x.contiguous()
        parts = [torch.empty_like(x) for _ in range(dist.get_world_size())]
        dist.all_gather(parts, x)
        ctx.rank, ctx.rows = dist.get_rank(), x.shape[0]
        return torch.cat(parts, 0)  # [W * n, ...]

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> torch.Tensor:
        grad = grad.contiguous().clone()  # all_reduce is in place; the incoming gradient is not ours
        dist.all_reduce(grad, op=dist.ReduceOp.SUM)
        return grad[ctx.rank * ctx.rows:(ctx.rank + 1) * ctx.rows]
