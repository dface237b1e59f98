"""The authors' half-classes zero-shot evaluation (`test_zeroshot.py`, `multi_split_test`) of `bike eval
--compat authors --protocol zero-shot-half`: split s takes the first K // 2 classes of `np.random.seed(s)`'s
permutation; its videos are ranked among the split's classes that occur in them."""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from bike_cli.errors import InputError
from bike_cli.eval.protocols import mean_std

ZERO_SHOT_SCALE = 100.0


def authors_frame_scores(frames: torch.Tensor, pooled: torch.Tensor) -> torch.Tensor:
    """Raw frame embeddings [N, M, D] (M = views x frames; NOT normalised) and classes [K, D] -> scores [N, K]:
    per frame softmax over classes of 100 x frame . unit class, averaged over the M frames."""
    logits = ZERO_SHOT_SCALE * frames.float() @ F.normalize(pooled.float(), dim=-1).T  # [N, M, K]
    return logits.softmax(-1).mean(1)


def _topk(scores: torch.Tensor, labels: torch.Tensor) -> tuple[float, float]:
    """Top-1 and top-5 accuracy in % (top-5 over min(5, K) classes)."""
    order = scores.topk(min(5, scores.shape[1]), dim=1).indices  # [n, k]
    hit = order == labels[:, None]
    return float(hit[:, :1].any(1).float().mean() * 100), float(hit.any(1).float().mean() * 100)


def authors_zero_shot_half(frames: torch.Tensor, pooled: torch.Tensor, labels: np.ndarray,
                           repeats: int = 10, seed: int = 0) -> dict:
    """Their full-classes and half-classes accuracies; split s draws with np.random.seed(seed + s)."""
    labels = np.asarray(labels)
    if labels.ndim != 1:
        raise InputError("the authors' half-classes protocol is for single-label sets")
    known = labels >= 0
    frames, labels = frames[torch.from_numpy(known)], labels[known]
    num_classes = pooled.shape[0]
    top1, top5 = _topk(authors_frame_scores(frames, pooled), torch.from_numpy(labels))
    runs = []
    for split in range(repeats):
        np.random.seed(seed + split)
        chosen = np.random.permutation(num_classes)[: num_classes // 2]
        sel = np.isin(labels, chosen)
        sub = np.unique(labels[sel])
        if not sub.size:
            raise InputError(f"split {split}: none of the videos belongs to its {len(chosen)} classes")
        target = torch.from_numpy(np.searchsorted(sub, labels[sel]))
        s1, s5 = _topk(authors_frame_scores(frames[torch.from_numpy(sel)], pooled[torch.from_numpy(sub)]), target)
        runs.append({"run": split, "classes": int(sub.size), "videos": int(sel.sum()), "top1": s1, "top5": s5,
                     "class_indices": sub.tolist()})
    return {"protocol": "zero-shot-half", "scorer": "authors", "videos": int(known.sum()), "repeats": repeats,
            "seed": seed, "full_top1": top1, "full_top5": top5, **mean_std(runs), "runs": runs}
